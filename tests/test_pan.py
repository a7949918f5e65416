"""PAN against the reference module's own outputs (tests/golden/pan, made by its make_golden.py from zhaohengyuan1/PAN's
PAN_arch.PAN on perturbed weights) at x4, x3 and x2 in the released key layout; exports bit for bit; what the keys cannot
tell (x2 from x3) and traiNNer's port refused by name; the warm start with model.arch=auto; and the recipe
(configs/pan_x4.py), shrunk, beating bicubic on held-out photographs."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsr import archs, load_model, weights
from jaxsr.archs import pan
from jaxsr.errors import WeightsError

pytestmark = pytest.mark.filterwarnings("ignore:spandrel/chaiNNer have no PAN")  # the export's known gap
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "pan")
TOL = 1e-5  # fp32, max abs diff on [0,1] images (measured: <= 3.6e-7)
HYPER = {"in_ch": 3, "out_ch": 3, "nf": 8, "unf": 6, "nb": 2}


def golden(scale):
    return os.path.join(GOLDEN, f"pan_x{scale}.pth")


@pytest.mark.parametrize("scale", [4, 3, 2])
def test_golden_file_loads_and_equals_the_reference(scale):
    x, want = np.load(os.path.join(GOLDEN, "input.npy")), np.load(os.path.join(GOLDEN, f"pan_x{scale}.npy"))
    model, info = load_model(golden(scale))
    assert info["hyperparameters"] == HYPER
    assert info["scale"] == (2 if scale == 3 else scale)  # a x3 file has the keys of a x2 one
    w = weights.read(golden(scale), arch="auto")
    if scale == 3:
        model, report = w.build({**w.spec, "scale": 3})  # told the scale, as the module docstring says
        assert report.ok
    got = np.asarray(model(jnp.asarray(x)))
    assert got.shape == want.shape == (1, 21 * scale, 27 * scale, 3)
    assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("scale", [4, 3])
def test_export_is_the_released_file_bit_for_bit(tmp_path, scale):
    """A plain state dict with the committed file's keys, dtypes and bytes (what PAN's test script strict-loads); the
    .safetensors export records the scale, x3 included."""
    w = weights.read(golden(scale))
    spec = {**w.spec, "scale": scale}
    model, _ = w.build(spec)
    weights.export(model, spec, tmp_path / "out.pth")
    (mine, _), (theirs, _) = weights.read_file(tmp_path / "out.pth"), weights.read_file(golden(scale))
    assert sorted(mine) == sorted(theirs)  # torch's strict load takes them in any order
    for k in mine:
        assert mine[k].dtype == theirs[k].dtype and mine[k].tobytes() == theirs[k].tobytes(), k
    weights.export(model, spec, tmp_path / "out.safetensors")
    assert weights.read(tmp_path / "out.safetensors").spec["scale"] == scale


def test_traiNNer_port_and_odd_widths_are_refused_by_name():
    sd, _ = weights.read_state_dict(golden(4))
    port = {k.replace(".PAConv.", ".PACnv."): v for k, v in sd.items() if not k.startswith(("upconv", "att", "HRconv"))}
    port["upsample.1.weight"] = sd["upconv1.weight"]
    assert archs.detect(port) is pan.ARCH
    with pytest.raises(WeightsError, match="traiNNer's port of PAN"):
        pan.infer_spec(port)
    with pytest.raises(WeightsError, match="nf // 2"):
        pan.infer_spec({**sd, "SCPA_trunk.0.conv1_a.weight": np.zeros((3, 8, 1, 1), np.float32)})


def test_auto_arch_from_the_golden_file_resolves_in_print_config():
    r = subprocess.run([sys.executable, "run_train.py", "--config", "configs/pan_x4.py", "--config.model.arch=auto",
                        f"--config.init_weights={golden(4)}", "--print_config"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == {"arch": "pan", **HYPER}


def test_recipe_is_the_released_network():
    from jaxsr.recipes import pan_x4
    from jaxsr.train.config import resolve
    from jaxsr.train.kinds.sr import generator_spec

    cfg = resolve(pan_x4.get_config())
    model = archs.build(generator_spec(cfg))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 272_419  # PANx4_DF2K 40/24/16
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.schedule, cfg.losses.l1.name) == ("adam", 7e-4, "cosine_restart", "l1")


def test_recipe_shrunk_beats_bicubic_on_held_out_photographs(tmp_path):
    """configs/pan_x4.py (L1, Adam, cosine) at nf 16 / unf 8 / one block, 32 px crops, batch 4, 300 steps with one cosine
    period at a higher peak lr (2e-3, for the short run) on the built-in photographs: validation on the held-out ones
    ends above MATLAB-bicubic upscaling of the same LR (measured: 31.24 dB against 30.47 dB)."""
    from jaxsr.recipes import pan_x4
    from jaxsr.train.config import resolve
    from jaxsr.train.loop import start

    steps = 300
    c = pan_x4.get_config()
    c.model.update(nf=16, unf=8, nb=1)
    c.data.update(num_workers=0, gt_size=32, val_max_size=96)
    c.degrade.gt_size = 32
    c.optim.update(lr=2e-3, periods=(steps,), period_weights=(1.0,))
    c.train.update(batch_size=4, total_steps=steps, log_every=steps, ckpt_every=10**6)
    c.val.update(every=steps, at_start=False)
    c.log.tensorboard = False
    run = start(resolve(c), str(tmp_path / "wd"))
    assert run.run() == steps
    (val,) = [r for r in map(json.loads, open(tmp_path / "wd" / "metrics.jsonl")) if "val_psnr" in r]
    assert val["val_psnr"] > run.kind.bicubic_psnr() + 0.3, (val, run.kind.bicubic_psnr())
