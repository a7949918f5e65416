"""One adversarial step of the `wbc` kind against victorca25/traiNNer's WBCModel on the same batch and weights
(tests/golden/wbc_step/make_golden.py says how the reference data was made), with the port's discriminators: the
`patchgan` arch with spectral_norm=True (wbc.netD='patchgan_sn').

adv_step runs the port's order: each D on the current G's detached fakes (fake, then real), one optimizer step of
both, then G against the updated discriminators. Every term of the port's own step is compared. The port's 'tv'
(TVLoss) is another functional than jaxsr's (the original's total_variation_loss): compared through the outputs, and
the port's tv terms are taken out of its total.
"""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jaxsr import archs, weights
from jaxsr.archs.patchgan import NLayerDiscriminator
from jaxsr.archs.unet import SNConv2d
from jaxsr.errors import ConfigError, WeightsError
from jaxsr.train import state as state_lib
from jaxsr.train.kinds import wbc
from jaxsr.train.kinds import wbc_representations as rep

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden", "wbc_step")
G_FILE = os.path.join(HERE, "golden", "wbc", "wbcunet.pth")
LISTS = dict(surf_losses=("pix",), text_losses=("pix",), struct_losses=("pix",), cont_losses=("pix",), reg_losses=(),
             idt_losses=("pix",), init_losses=("pix",))
SCALES = dict(surf=0.2, text=1.0, struct=1.0, cont=1.0, reg=1.0, idt=0.5, gan=0.5)  # make_golden.py's options
RTOL = 1e-5


@pytest.fixture(scope="module")
def gold():
    return dict(np.load(os.path.join(GOLDEN, "golden.npz")))


def rel(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-12)


def parts_and_state():
    """The kind's Parts and TrainState (netD 'patchgan_sn') on the golden G and the port's D_S / D_T files."""
    g, report = weights.read(G_FILE, arch="wbcunet").build()
    assert report.ok
    g.train()
    ds = {}
    for name in ("D_S", "D_T"):
        w = weights.read(os.path.join(GOLDEN, f"{name}.pth"), arch="auto", kind="discriminator")
        ds[name], report = w.build()
        assert report.ok
    g_def, params, buffers = state_lib.split(g)
    dsplit = {n: state_lib.split(m) for n, m in ds.items()}
    d_params = {n: v[1] for n, v in dsplit.items()}
    tx = optax.adam(2e-4, 0.5, 0.999)
    fns = wbc._fns(ml_collections.ConfigDict(dict(LISTS)), None)
    parts = wbc.Parts(g_def, {n: v[0] for n, v in dsplit.items()}, tx, tx, fns, SCALES, "reflect", "uniform")
    state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, buffers=buffers, opt_state=tx.init(params),
                                 ema=None, rng=jax.random.PRNGKey(0), nonfinite=jnp.zeros((), jnp.int32),
                                 d_params=d_params, d_buffers={n: v[2] for n, v in dsplit.items()},
                                 d_opt_state=tx.init(d_params))
    return parts, state


@pytest.fixture(scope="module")
def built():
    return parts_and_state()


@pytest.fixture(scope="module")
def step(gold, built):
    """adv_step's metrics on the golden batch, the colour shift's draw replaced by the port's."""
    parts, state = built
    batch = {"a": jnp.asarray((gold["photo"] + 1) / 2), "b": jnp.asarray((gold["cartoon"] + 1) / 2)}
    mp = pytest.MonkeyPatch()
    mp.setattr(rep, "colorshift_weights", lambda key, mode="uniform", y=False: jnp.asarray(gold["cs_weights"]))
    try:
        _, metrics = jax.jit(lambda s, b, t: wbc.adv_step(parts, s, b, t, None))(state, batch, jnp.asarray(gold["target"]))
    finally:
        mp.undo()
    forward = jax.jit(lambda params, buffers, x: wbc.filtered(parts, nnx.merge(parts.g_def, params, buffers), x))
    out = forward(state.params, state.buffers, jnp.asarray(gold["photo"]))
    return {k: float(v) for k, v in metrics.items()}, np.asarray(out)


def test_the_port_d_files_load_as_the_spectral_norm_patchgan_and_export_bit_identically(tmp_path):
    for name, in_ch in (("D_S", 3), ("D_T", 1)):
        path = os.path.join(GOLDEN, f"{name}.pth")
        w = weights.read(path, arch="auto", kind="discriminator")
        assert w.spec == {"arch": "patchgan", "net": "n_layers", "in_ch": in_ch, "ndf": 4, "n_layers": 3, "norm": "none",
                          "spectral_norm": True}
        model, _ = w.build()
        with pytest.warns(UserWarning, match="use_spectral_norm=True"):
            weights.export(model, w.spec, tmp_path / f"{name}.pth")
        a, b = weights.read_state_dict(path)[0], weights.read_state_dict(tmp_path / f"{name}.pth")[0]
        assert a.keys() == b.keys()
        assert all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def test_spectral_norm_patchgan_refusals():
    sd = weights.read_state_dict(os.path.join(GOLDEN, "D_S.pth"))[0]
    mixed = {("model.2.weight" if k == "model.2.weight_orig" else k): v for k, v in sd.items()
             if k not in ("model.2.weight_u", "model.2.weight_v")}
    with pytest.raises(WeightsError, match="spectral norm on some convs only.*use_spectral_norm=True"):
        archs.get("patchgan").infer_spec(mixed)
    with pytest.raises(WeightsError, match="middle-conv biases"):
        archs.get("patchgan").infer_spec({**sd, "model.2.bias": np.zeros(8, np.float32), "model.5.bias": np.zeros(16, np.float32),
                                          "model.8.bias": np.zeros(32, np.float32)})
    with pytest.raises(ValueError, match="set norm='none'"):
        archs.build({"arch": "patchgan", "ndf": 4, "spectral_norm": True})
    with pytest.raises(ValueError, match="not net='pixel'"):
        archs.build({"arch": "patchgan", "net": "pixel", "ndf": 4, "norm": "none", "spectral_norm": True})


def test_wbc_netd_option():
    cfg = ml_collections.ConfigDict({"wbc": wbc.default_config()})
    assert cfg.wbc.netD == "disc_sn"
    d = wbc.discriminator("patchgan_sn", 1, 4, 0)
    assert isinstance(d, NLayerDiscriminator) and d.model[0].weight_orig.shape == (4, 1, 4, 4)
    assert all(isinstance(d.model[i], SNConv2d) for i in (0, 2, 5, 8, 11))
    assert isinstance(wbc.discriminator("disc_sn", 3, 4, 0), wbc.DiscSN)
    cfg.wbc.netD = "patchgan"
    cfg.wbc.struct_losses = cfg.wbc.cont_losses = ("pix",)
    cfg.model = {"arch": "wbcunet"}
    cfg.scale, cfg.losses = 1, {}
    with pytest.raises(ConfigError, match="wbc.netD must be one of disc_sn, patchgan_sn"):
        wbc.check_wbc(cfg)


def test_filtered_output_is_the_ports(step, gold):
    _, out = step
    assert np.abs(out - gold["fake_B"]).max() <= 1e-5


def test_representation_losses_equal_the_ports_step(step, gold):
    """Surface, texture, structure, content and identity terms: no D involved, so the port's own step's values."""
    metrics, _ = step
    worst = max(rel(metrics[f"pix_{tag}"], gold[f"port_pix-l1_{tag}"]) for tag in ("surf", "text", "struct", "cont", "idt"))
    assert worst <= RTOL, worst


def test_adversarial_terms_and_the_totals_equal_the_ports_step(step, gold):
    """gan_S / gan_T against the D that the step has just updated, D_S / D_T and G's total (the port's less its two
    TVLoss terms: text_losses has [pix, tv] and reg_losses [tv] there, weight 1, scales text 1 and reg 1)."""
    metrics, _ = step
    pairs = {"gan_S": "port_l_g_gan_S", "gan_T": "port_l_g_gan_T", "D_S": "port_loss_D_S", "D_T": "port_loss_D_T"}
    diffs = {k: rel(metrics[k], gold[g]) for k, g in pairs.items()}
    diffs["d_loss"] = rel(metrics["d_loss"], gold["port_loss_D_S"] + gold["port_loss_D_T"])
    diffs["loss"] = rel(metrics["loss"], gold["port_loss_G"] - SCALES["text"] * gold["port_tv-l2_text"]
                        - SCALES["reg"] * gold["port_tv-l2_reg"])
    print("relative to the port's step: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    assert max(diffs.values()) <= RTOL, diffs


def test_tv_is_the_originals_the_ports_tvloss_another_normalisation(step, gold):
    """jaxsr's 'tv' (the original's): (mean dy^2 + mean dx^2) / (3 H W) over the H-1 / W-1 differences; the port's
    TVLoss(p=2): (sum dy^2 + sum dx^2) / (N C H W) (zero-padded gradients). On the same output."""
    _, out = step
    gray = np.asarray(rep.color_shift(jnp.asarray(out), jnp.asarray(gold["cs_weights"])))
    for x, key in ((out, "port_tv-l2_reg"), (gray, "port_tv-l2_text")):
        dy, dx = np.diff(x.astype(np.float64), axis=1), np.diff(x.astype(np.float64), axis=2)
        assert rel((np.sum(dy**2) + np.sum(dx**2)) / x.size, gold[key]) <= RTOL
        h, w = x.shape[1:3]
        assert rel(wbc.tv_loss(jnp.asarray(x)), (np.mean(dy**2) + np.mean(dx**2)) / (3 * h * w)) <= RTOL
