"""SRResNet / MSRResNet against the reference modules' own outputs (tests/golden/srresnet, made by its make_golden.py from
BasicSR's MSRResNet, mmsr's MSRResNet and traiNNer's original SRResNet on perturbed weights), in the three released key
layouts; exports in the layout each came from, bit for bit; the variants refused by name; the warm start with
model.arch=auto; and the SRGAN recipe (configs/srgan_x4.py) training a few steps, shrunk."""
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
from jaxsr.archs import srresnet
from jaxsr.errors import WeightsError

pytestmark = pytest.mark.filterwarnings("ignore:spandrel/chaiNNer have no SRResNet/MSRResNet")  # the export's known gap
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "srresnet")
TOL = 1e-5  # fp32, max abs diff on [0,1] images (measured: <= 2.4e-7)
CASES = {  # file -> (scale, layout, wrapper of the released files)
    "msrresnet_basicsr_x4": (4, "basicsr", "params"),
    "msrresnet_mmsr_x3": (3, "mmsr", None),
    "srresnet_original_x4": (4, "original", None),
    "srresnet_original_x3": (3, "original", None),
}


def golden(case):
    return os.path.join(GOLDEN, f"{case}.pth")


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_file_loads_and_equals_the_reference(case):
    scale, layout, _ = CASES[case]
    x, want = np.load(os.path.join(GOLDEN, "input.npy")), np.load(os.path.join(GOLDEN, f"{case}.npy"))
    model, info = load_model(golden(case))
    assert info["arch"] == "srresnet" and info["scale"] == scale
    assert info["hyperparameters"] == {"in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 2, "layout": layout}
    w = weights.read(golden(case), arch="auto")
    again, report = w.build()
    assert report.ok and w.spec == {"arch": "srresnet", "scale": scale, **info["hyperparameters"]}
    for m in (model, again):
        got = np.asarray(m(jnp.asarray(x)))
        assert got.shape == want.shape == (1, 23 * scale, 29 * scale, 3)
        assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_is_the_released_file_bit_for_bit(tmp_path, case):
    """The loaded model's .pth has the committed file's wrapper, keys, dtypes and bytes, so the reference module (which
    made it) strict-loads it; the .safetensors export reads back to the same spec."""
    _, _, wrapper = CASES[case]
    w = weights.read(golden(case))
    model, _ = w.build()
    weights.export(model, w.spec, tmp_path / "out.pth")
    mine, _ = weights.read_file(tmp_path / "out.pth")
    theirs, _ = weights.read_file(golden(case))
    assert sorted(k for k in mine if k != "metadata") == sorted(theirs) == ([wrapper] if wrapper else sorted(theirs))
    a, b = (weights.canonical_state_dict(o) for o in (mine, theirs))
    assert sorted(a) == sorted(b)  # torch's strict load takes them in any order
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes(), k
    weights.export(model, w.spec, tmp_path / "out.safetensors")
    assert weights.read(tmp_path / "out.safetensors").spec == w.spec


def _original_sd():
    sd, _ = weights.read_state_dict(golden("srresnet_original_x4"))
    return sd


def test_variants_are_refused_by_name():
    sd = _original_sd()
    bn = {**sd, "model.1.sub.0.res.1.running_mean": np.zeros(8, np.float32)}
    nac = {(k.replace(".res.0.", ".res.1.") if ".res.0." in k else k): v for k, v in sd.items()}
    upconv = {k: v for k, v in sd.items() if not k.startswith("model.2.")}
    for bad, message in ((bn, "batch norm"), (nac, "mode NAC"), (upconv, "upsample_mode='upconv'")):
        assert archs.detect(bad) is srresnet.ARCH  # recognised, then refused by name
        with pytest.raises(WeightsError, match=message):
            srresnet.infer_spec(bad)
    msr, _ = weights.read_state_dict(golden("msrresnet_basicsr_x4"))
    with pytest.raises(WeightsError, match="matches no scale"):
        srresnet.infer_spec({k: v for k, v in msr.items() if not k.startswith("upconv2.")} | {"upconv1.weight": np.zeros((40, 8, 3, 3))})
    with pytest.raises(ValueError, match="scale 2, 3 or 4"):
        archs.build({"arch": "srresnet", "scale": 8})  # MSRResNet has no x8; the original network has
    assert archs.build({"arch": "srresnet", "scale": 8, "layout": "original", "num_feat": 4, "num_block": 1}).scale == 8


def test_auto_arch_from_the_golden_file_resolves_in_print_config():
    r = subprocess.run([sys.executable, "run_train.py", "--config", "configs/srresnet_x4.py", "--config.model.arch=auto",
                        f"--config.init_weights={golden('srresnet_original_x4')}", "--print_config"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    model = json.loads(r.stdout)["model"]
    assert model == {"arch": "srresnet", "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 2, "layout": "original"}


def test_recipes_are_basicsrs_and_srgan_refuses_without_vgg_weights():
    from jaxsr.losses import build_losses
    from jaxsr.recipes import srgan_x4, srresnet_x4
    from jaxsr.train.config import resolve
    from jaxsr.train.kinds.sr import generator_spec

    fidelity, gan = resolve(srresnet_x4.get_config()), resolve(srgan_x4.get_config())
    model = archs.build(generator_spec(gan))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 1_517_571  # MSRResNet_x4 64/16
    assert gan.model.to_dict() == fidelity.model.to_dict() and gan.init_weights == "runs/srresnet_x4/models/srresnet_x4_best.safetensors"
    assert gan.gan.discriminator.arch == "vgg" and gan.gan.discriminator.input_size == gan.data.gt_size == 128
    build_losses(fidelity.losses)
    with pytest.raises(WeightsError, match=r"losses\[perceptual\]\.vgg_weights"):
        build_losses(gan.losses)


@pytest.fixture
def quick_compiles():
    """XLA without most of its optimisations, as tests/test_gan_recipes.py runs the GAN recipes: the two steps compile
    far faster than they would run slower. Not part of JAX's cache keys, so what compiled under it is dropped after."""
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)
    jax.clear_caches()


def test_srgan_recipe_trains_a_few_steps(tmp_path, vgg19_file, quick_compiles):
    """configs/srgan_x4.py with G and D at tiny widths, batch 1, two steps from an MSRResNet file: every loss of the
    recipe (L1, VGG54, GAN) and D's update are finite; the export is BasicSR's layout."""
    from conftest import photo

    from jaxsr.imageio import write_image
    from jaxsr.recipes import srgan_x4
    from jaxsr.train.config import resolve
    from jaxsr.train.loop import start

    for split, name in (("train", "astronaut"), ("val", "chelsea")):
        (tmp_path / split).mkdir()
        write_image(str(tmp_path / split / f"{name}.png"), photo(name, 128, 128, top=50, left=100))
    init = tmp_path / "msrresnet.pth"
    spec = {"arch": "srresnet", "scale": 4, "num_feat": 4, "num_block": 1}
    weights.export(archs.build(spec, rngs=nnx.Rngs(1)), spec, init)
    c = srgan_x4.get_config()
    c.model.update(num_feat=4, num_block=1)
    c.init_weights = str(init)
    c.losses.perceptual.vgg_weights = vgg19_file
    c.gan.discriminator.num_feat = 4
    c.data.update(train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), num_workers=0, val_max_size=32)
    c.train.update(batch_size=1, total_steps=2, log_every=1, ckpt_every=100)
    c.val.every = 0
    c.log.tensorboard = False
    wd = tmp_path / "wd"
    assert start(resolve(c), str(wd)).run() == 2
    rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    assert all(np.isfinite(r[k]) for r in train for k in ("l1", "perceptual", "gan", "d_loss")) and train[0]["gan"] > 0
    assert list(weights.read_file(wd / "models" / "srgan_x4.pth")[0]) == ["params", "metadata"]
