"""PPON: the network against the reference's outputs (tests/golden/ppon, made by make_golden.py with Zheng222's PPON;
traiNNer's strict-loads the same file and computes the same), its file layout and refusals, the branch that inference
and ONNX take, and the `ppon` training kind's phases (frozen branches bit for bit, D in phase 3 only, bitwise resume)."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import metric_rows

from flax import nnx

from jaxsr import archs, deploy, weights
from jaxsr.errors import ConfigError, WeightsError
from jaxsr.infer import upscale

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "ppon")
FILE = os.path.join(GOLDEN, "PPON_G_small.pth")
TOL = 1e-5
FORWARD = nnx.jit(lambda model, x: model(x))  # all three outputs, compiled once per size
SPEC = {"arch": "ppon", "scale": 4, "in_ch": 3, "out_ch": 3, "nf": 6, "nb": 1, "ssim_blocks": 2, "gan_blocks": 2, "n_rb": 3,
        "n_dil": 8, "dil_nf": 3, "alpha": 1.0, "act_type": "lrelu"}


@pytest.fixture(scope="module")
def golden():
    io = np.load(os.path.join(GOLDEN, "io.npz"))
    model, info = weights.load_model(FILE)
    return io, model, info


def test_the_released_layout_loads_and_equals_the_reference_on_every_branch(golden):
    io, model, info = golden
    assert (info["arch"], info["scale"], info["load_report"].ok) == ("ppon", 4, True)
    w = weights.read(FILE, arch="auto")
    assert w.spec == SPEC
    again, report = w.build()
    assert report.ok
    for m in (model, again):
        outs = FORWARD(m, io["input"])
        diffs = {b: float(np.abs(np.asarray(o) - io[b]).max()) for b, o in zip(m.branches, outs)}
        print("max |jaxsr - reference|:", diffs)
        assert max(diffs.values()) <= TOL, diffs


def test_the_export_is_the_released_file_key_for_key_and_bit_for_bit(golden, tmp_path):
    _, model, info = golden
    with pytest.warns(UserWarning, match="spandrel/chaiNNer do not know PPON .*strict-load it"):
        weights.export(model, {"arch": "ppon", "scale": 4, **info["hyperparameters"]}, tmp_path / "out.pth")
    ours, theirs = weights.read_state_dict(tmp_path / "out.pth")[0], weights.read_state_dict(FILE)[0]
    assert sorted(ours) == sorted(theirs)  # bare, as the release: no params/params_ema wrapper
    for k in theirs:
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape, k
        assert ours[k].tobytes() == theirs[k].tobytes(), k


def test_stage_checkpoints_and_other_families_are_refused_by_name(golden, tmp_path):
    sd = weights.read_state_dict(FILE)[0]
    content = {k: v for k, v in sd.items() if k.split(".")[0] in ("CFEM", "CRM")}
    weights.write_pth(tmp_path / "content.pth", content)
    with pytest.raises(WeightsError, match="PPON content-stage checkpoint .*init_strict=False"):
        weights.load_model(tmp_path / "content.pth")
    broken = dict(sd)
    broken["SFEM.0.RB1.c2.weight"] = np.zeros((6, 20, 1, 1), np.float32)
    weights.write_pth(tmp_path / "broken.pth", broken)
    with pytest.raises(WeightsError, match="1x1 conv takes 20 channels"):
        weights.load_model(tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="expected an ESRGAN .*but the file is a PPON model"):
        weights.read(FILE, arch="esrgan")


def test_inference_takes_the_perceptual_branch_unless_asked(golden, tmp_path):
    io, model, _ = golden
    img = io["input"][0]
    assert np.abs(upscale(model, img) - np.clip(io["perceptual"][0], 0, 1)).max() <= TOL
    assert np.abs(upscale(model, img, branch="content") - np.clip(io["content"][0], 0, 1)).max() <= TOL
    esrgan = archs.build({"arch": "esrgan", "scale": 4, "num_feat": 4, "num_block": 1, "num_grow_ch": 4})
    with pytest.raises(WeightsError, match="one output"):
        upscale(esrgan, img, branch="structure")


def test_the_infer_command_writes_the_branch_asked_for(golden, tmp_path):
    from jaxsr import infer
    from jaxsr.imageio import load_image, to_u8, write_image

    io, _, _ = golden
    write_image(tmp_path / "in.png", io["input"][0], bits=8)
    lr = load_image(tmp_path / "in.png")[0]
    assert infer.main(["--weights", FILE, "--input", str(tmp_path / "in.png"), "--output", str(tmp_path / "out.png"),
                       "--branch", "content", "--tile", "0"]) == 0
    model = weights.load_model(FILE)[0]
    want = to_u8(np.clip(np.asarray(model(lr[None])[0][0]), 0, 1))
    assert np.array_equal(to_u8(load_image(tmp_path / "out.png")[0]), want)


def test_the_onnx_graph_gives_the_models_branch(golden):
    io, _, _ = golden
    model = weights.load_model(FILE)[0]
    model.branch = "structure"
    proto, _ = deploy.build_graph(model, SPEC, static=io["input"].shape[1:3])
    y = deploy.run_onnx(proto.SerializeToString(), io["input"].transpose(0, 3, 1, 2))
    diff = float(np.abs(y.transpose(0, 2, 3, 1) - io["structure"]).max())
    print(f"ONNX structure branch vs the reference: {diff:.1e}")
    assert diff <= 1e-4


# ------------------------------------------------------------------------------------------------ the ppon kind

from jaxsr.train.kinds.ppon import MODULES, check_ppon, phase_at, phase_losses  # noqa: E402

TINY = {"arch": "ppon", "scale": 2, "in_ch": 3, "out_ch": 3, "nf": 8, "nb": 1, "ssim_blocks": 1, "gan_blocks": 2, "n_rb": 1,
        "n_dil": 2, "dil_nf": 4}
LOSSES = ("--config.losses={'pix': {'name': 'l1'}, 'pix-multiscale': {'name': 'multiscale', 'scales': 2}, "
          "'ssim': {'name': 'ssim'}, 'detail': {'name': 'detail'}, 'gan': {'name': 'gan', 'weight': 0.1}}")
PHASES = ["--config.ppon.p1_losses=('pix',)", "--config.ppon.p2_losses=('pix-multiscale', 'ssim')",
          "--config.ppon.p3_losses=('detail',)"]


def tiny_run(init, scale=2):
    """configs/ppon_x4.py shrunk: phases at [2, 4] of 6 steps, small losses (no VGG file), a narrow VGG-style D (its
    input: crops of 128), arch=auto from `init`."""
    return ["--config", "configs/ppon_x4.py", "--config.model.arch=auto", f"--config.init_weights={init}", f"--config.scale={scale}",
            LOSSES, *PHASES, "--config.ppon.ppon_stages=(2, 4)", "--config.optim.restarts=(2, 4)",
            "--config.optim.step_sizes=(2, 2, 2)", "--config.gan.discriminator={'arch': 'vgg', 'num_feat': 8, 'input_size': 128}",
            "--config.train.batch_size=2", "--config.data.gt_size=128", "--config.degrade.gt_size=128", "--config.data.num_workers=0",
            "--config.train.total_steps=6", "--config.train.ckpt_every=3", "--config.train.log_every=1", "--config.val.every=3",
            "--config.data.val_max_size=48"]



def test_the_recipe_builds_the_released_network_and_asks_for_its_vgg_file():
    from jaxsr.losses import build_losses
    from jaxsr.recipes import ppon_x4
    from jaxsr.train.config import resolve
    from jaxsr.train.kinds.sr import generator_spec

    cfg = resolve(ppon_x4.get_config())
    check_ppon(cfg)
    model = archs.build(generator_spec(cfg))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 17_267_657  # PPON_G.pth's
    assert [phase_at(cfg.ppon.ppon_stages, k) for k in (0, 137_999, 138_000, 179_400)] == [1, 1, 2, 3]
    with pytest.raises(WeightsError, match=r"losses\[fea\]\.vgg_weights"):
        build_losses(cfg.losses)


def test_phases_follow_the_guide():
    """[s2, s3]: phase 2 from s2, phase 3 from s3 (0-based steps); [0, 0]: phase 3 at once; [0, N]: phase 2, then 3
    after N iterations; [N, N]: phase 1 for N iterations, then 3 (phase 2 never runs)."""
    assert [phase_at((2, 4), k) for k in range(6)] == [1, 1, 2, 2, 3, 3]
    assert {phase_at((0, 0), k) for k in range(5)} == {3}
    assert [phase_at((0, 3), k) for k in range(5)] == [2, 2, 2, 3, 3]
    assert [phase_at((3, 3), k) for k in range(5)] == [1, 1, 1, 3, 3]


def ppon_config(*overrides):
    import ml_collections

    from jaxsr.recipes import ppon_x4
    from jaxsr.train.config import resolve

    c = ppon_x4.get_config()
    c.model = ml_collections.ConfigDict(TINY, type_safe=False)
    c.losses = {"pix": dict(name="l1"), "fea": dict(name="detail"), "gan": dict(name="gan", weight=0.1)}
    c.ppon.update(p1_losses=("pix",), p2_losses=("pix",), p3_losses=("fea",))
    for field, value in overrides:
        node = c
        *parents, leaf = field.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return resolve(c)


@pytest.mark.parametrize("overrides, message", [
    ((), None),
    ((("ppon.p2_losses", ("pix", "ms-ssim")),), "ppon.p2_losses names 'ms-ssim', which config.losses lacks"),
    ((("ppon.p1_losses", ("pix", "gan")),), "a discriminator loss: the discriminator trains in phase 3 only"),
    ((("ppon.p3_losses", ()),), "losses.fea is in none of ppon.p1_losses"),
    ((("ppon.ppon_stages", (5, 2)),), r"ppon_stages must be \[s2, s3\] with 0 <= s2 <= s3"),
    ((("gan.start_step", 10),), "does not support gan.start_step=10"),
    ((("model.arch", "esrgan"),), "kind='ppon' trains a PPON generator"),
])
def test_the_config_is_checked_in_one_line(overrides, message):
    if overrides and overrides[0][0] == "model.arch":
        cfg = ppon_config()
        cfg.model.arch = "esrgan"
    else:
        cfg = ppon_config(*overrides)
    if message is None:
        check_ppon(cfg)
        assert phase_losses(cfg, 3) == ["fea", "gan"]  # the adversarial term joins phase 3 by itself
        return
    with pytest.raises(ConfigError, match=message):
        check_ppon(cfg)


def test_the_released_file_resolves_with_arch_auto_under_the_ppon_recipe():
    r = subprocess.run([sys.executable, "run_train.py", *tiny_run(FILE, scale=4), "--print_config"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["kind"] == "ppon" and cfg["model"] == {k: v for k, v in SPEC.items() if k != "scale"}


def host(tree):
    """A copy on the host (a CPU array's numpy view would change with the next step, which donates it)."""
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def _under(tree, modules):
    """The bytes of the leaves of `tree` (params) under these top-level modules."""
    return [np.asarray(v).tobytes() for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]
            if str(getattr(path[0], "key", "")) in modules]


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_three_phases_train_their_branch_only_and_resume_mid_phase_bitwise(tmp_path):
    from test_layout import perturbed

    init = tmp_path / "ppon.safetensors"
    weights.export(perturbed(TINY), TINY, init)
    wd = tmp_path / "wd"
    r = subprocess.run([sys.executable, "run_train.py", *tiny_run(init), "--workdir", str(wd)], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
    assert r.returncode == 0, r.stderr
    assert "step 2: phase 2 (structure): training SFEM + SRM on pix-multiscale, ssim" in r.stdout
    first, val = metric_rows(wd), metric_rows(wd, "val_psnr")
    active = {1: ("pix",), 2: ("pix-multiscale", "ssim"), 3: ("detail", "gan")}
    for step, row in first.items():
        phase = 1 + (step > 2) + (step > 4)
        assert row["phase"] == phase
        assert all((row[k] > 0) == (k in active[phase]) for ks in active.values() for k in ks), row
        assert ("d_loss" in row) == (phase == 3)
    # validation scores the current phase's branch and logs all three; the content branch is frozen from step 2 on
    assert val[3]["val_psnr"] == val[3]["val_psnr_structure"] and val[6]["val_psnr"] == val[6]["val_psnr_perceptual"]
    assert val[0]["val_psnr"] == val[0]["val_psnr_content"] and val[3]["val_psnr_content"] == val[6]["val_psnr_content"]

    # the same trainer, in this process, branched at step 3 (mid phase 2): steps 4..6 again, bitwise, every state kept
    from jaxsr.train.config import get_config, resolve
    from jaxsr.train.loop import start

    again = tmp_path / "again"
    shutil.copytree(wd, again)
    trainer = start(resolve(get_config(str(wd / "config.json"))), str(again), resume_from=3)
    seen, step_fn = {}, trainer.kind.train_step

    def recording(state, batch, step):
        seen.setdefault(step, host((state.params, state.opt_state, state.d_params)))  # the restored state at 3
        new, metrics = step_fn(state, batch, step)
        seen[step + 1] = host((new.params, new.opt_state, new.d_params))
        return new, metrics

    trainer.kind.train_step = recording
    assert trainer.run() == 6
    got = metric_rows(again)
    assert all(got[s] == first[s] for s in (4, 5, 6)) and metric_rows(again, "val_psnr")[6] == val[6]

    def same(branch, a, b):
        (pa, oa, _), (pb, ob, _) = seen[a], seen[b]
        return _under(pa, MODULES[branch]) == _under(pb, MODULES[branch]) and \
            [x.tobytes() for x in jax.tree.leaves(oa[branch])] == [x.tobytes() for x in jax.tree.leaves(ob[branch])]

    assert same("content", 3, 4) and same("content", 4, 6)  # frozen in phases 2 and 3: params and optimizer state
    assert not same("structure", 3, 4) and same("structure", 4, 5) and same("structure", 5, 6)
    assert same("perceptual", 3, 4) and not same("perceptual", 4, 5) and not same("perceptual", 5, 6)
    d = {s: [x.tobytes() for x in jax.tree.leaves(seen[s][2])] for s in seen}
    assert d[3] == d[4] and d[4] != d[5] != d[6]  # D trains in phase 3 only
