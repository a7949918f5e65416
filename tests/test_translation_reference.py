"""jaxsr's pix2pix and CycleGAN steps (`train_step` of jaxsr.train.kinds.pix2pix / cyclegan) give junyanz's loss values:
two steps on one batch of photo crops from the same weights (junyanz-layout files loaded as the kinds load them), each
step's losses equal to what Pix2PixModel / CycleGANModel's get_current_losses() logged (tests/golden/translation,
made by its make_golden.py). The first step checks the forward passes and the objective, the second the first's
gradients and Adam updates (for pix2pix the first's G losses already come after D's update). fp32; relative tolerance
1e-5 (measured: at most 8.4e-7 on the first step, 3.6e-6 on the second, docs/translation.md). Deterministic by
construction on both sides: no dropout, pool_size 0 (the reference's pool draws from Python's random). And the
preprocess modes' geometry against data/base_dataset.py's get_params / get_transform on the same drawn parameters."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr import archs, optim, weights
from jaxsr.train import state as state_lib
from jaxsr.train.kinds import cyclegan, pix2pix

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "translation")
REL = 1e-5


@pytest.fixture(scope="module")
def golden():
    with open(os.path.join(GOLDEN, "losses.json")) as f:
        losses = json.load(f)
    batch = np.load(os.path.join(GOLDEN, "batch.npz"))  # photo crops as uint8 (x / 255 in float32, as make_golden)
    return losses, {k: v.astype(np.float32) / np.float32(255) if v.dtype == np.uint8 else v for k, v in batch.items()}


def adam(cfg):
    """The reference's torch.optim.Adam(lr 2e-4, betas (0.5, 0.999)) as the recipes configure jaxsr's."""
    cfg.update(name="adam", lr=2e-4, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.0, schedule="constant", warmup_steps=0)
    return optim.build_optimizer(cfg, 10)


def check(steps, want, step, state, batch):
    for k, expected in enumerate(want):
        state, metrics = step(state, batch)
        for name, value in expected.items():
            if name.startswith("idt_") and name not in metrics:  # the reference logs 0 for terms it leaves out
                assert value == 0.0
                continue
            got = float(metrics[name])
            assert got == pytest.approx(value, rel=REL), f"{steps} step {k + 1} {name}: {got} vs the reference's {value}"
    return state


def test_pix2pix_steps_losses_equal_the_references(golden):
    losses, data = golden
    from jaxsr.train.config import base_config

    g_file = weights.read(os.path.join(GOLDEN, "p2p_G.pth"))
    assert (g_file.spec["num_downs"], g_file.spec["ngf"], g_file.spec["norm"]) == (5, 4, "batch")
    g = archs.build({**g_file.spec, "use_dropout": False})  # --no_dropout: the keys cannot say so (docs/archs.md)
    g_file.load_into(g)
    d, _ = weights.read(os.path.join(GOLDEN, "p2p_D.pth"), arch="patchgan", kind="discriminator").build()
    g.train()
    d.train()
    cfg = base_config()
    tx, tx_d = adam(cfg.optim), adam(cfg.optim_d)
    state = state_lib.create(g, tx, seed=0, ema=False, disc=d, tx_d=tx_d)
    parts = pix2pix.Parts(state_lib.split(g)[0], state_lib.split(d)[0], tx, tx_d, 100.0, "vanilla", g.value_range, 0.0)
    step = jax.jit(lambda s, b: pix2pix.train_step(parts, s, b))
    check("pix2pix", losses["pix2pix"], step, state, {"a": data["p2p_A"], "b": data["p2p_B"]})


@pytest.mark.parametrize("run,lambda_identity", [("cyclegan_identity", 0.5), ("cyclegan_no_identity", 0.0)])
def test_cyclegan_steps_losses_equal_the_references(golden, run, lambda_identity):
    """The four networks through the kind's warm starts (cyclegan.pretrain_model_*), as configs/cyclegan.py builds them."""
    losses, data = golden
    from jaxsr.recipes import cyclegan as recipe

    cfg = recipe.get_config()
    cfg.model.update(ngf=4, n_blocks=1)
    cfg.gan.discriminator.update(ndf=4)
    for net in cyclegan.NETS:
        cfg.cyclegan[f"pretrain_model_{net}"] = os.path.join(GOLDEN, f"cg_{net}.pth")
    nets, _ = cyclegan.build_nets(cfg)
    for m in nets.values():
        m.train()
    split = {n: state_lib.split(m) for n, m in nets.items()}
    gs, ds = ("G_A", "G_B"), ("D_A", "D_B")
    params, d_params = {n: split[n][1] for n in gs}, {n: split[n][1] for n in ds}
    tx, tx_d = adam(cfg.optim), adam(cfg.optim_d)
    state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, buffers={n: split[n][2] for n in gs},
                                 opt_state=tx.init(params), ema=None, rng=jax.random.PRNGKey(0),
                                 nonfinite=jnp.zeros((), jnp.int32), d_params=d_params,
                                 d_buffers={n: split[n][2] for n in ds}, d_opt_state=tx_d.init(d_params), queue=None)
    parts = cyclegan.Parts({n: split[n][0] for n in gs}, {n: split[n][0] for n in ds}, tx, tx_d, 10.0, 10.0,
                           lambda_identity, "lsgan", nets["G_A"].value_range)
    step = jax.jit(lambda s, b: cyclegan.train_step(parts, s, b))
    check(run, losses[run], step, state, {"a": data["cg_A"], "b": data["cg_B"]})


def test_preprocess_geometry_equals_the_references_get_params_and_get_transform():
    """Each of junyanz's preprocess modes (resize_and_crop, crop, scale_width, scale_width_and_crop, none; load_size 48,
    crop_size 32) on photo crops of four sizes (one that scale_width brings below crop_size): the crop corner's range
    equals get_params's (its randint limits), and jaxsr.data.aligned.apply with the reference's drawn parameters (the
    first corner unflipped, the last flipped) gives get_transform's image: the same size, and the same pixels up to the
    rounding of the reference's 8-bit resizes (measured: at most 2.1/255 where a mode resizes, 0 where it does not).
    'none' rounds to the generator's size multiple; the reference's base is 4, so the generator here takes 4."""
    import ml_collections

    from jaxsr.data import aligned

    with open(os.path.join(GOLDEN, "geometry.json")) as f:
        cases = json.load(f)
    data = np.load(os.path.join(GOLDEN, "geometry.npz"))
    worst = {}
    for c in cases:
        (w, h), mode = c["size"], c["mode"]
        section = ml_collections.ConfigDict(dict(preprocess=mode, load_size=48, crop_size=32, center_crop_size=32,
                                                 no_flip=False))
        p = aligned.make(section, 4)
        if "crop" in p.steps:
            nw, nh = aligned.sizes(p, w, h)
            assert [max(0, nw - 32), max(0, nh - 32)] == c["bounds"], c
        out = aligned.apply(p, data[f"{w}x{h}"].astype(np.float32) / 255, {"crop_pos": tuple(c["crop_pos"]), "flip": c["flip"]})
        want = data[c["output"]].astype(np.float32) / 255
        assert out.shape == want.shape, c
        worst[mode] = max(worst.get(mode, 0.0), float(np.abs(out - want).max()))
    assert worst["crop"] == 0.0
    assert max(worst.values()) <= 3 / 255, worst
