"""SRVGGNetCompact (Compact) against spandrel's module (the same code as Real-ESRGAN's `srvgg_arch.py`) on identical
weights, Real-ESRGAN's own file layout (realesr-general-x4v3, realesr-animevideov3), the activations spandrel cannot
see, refusals by name, bf16, tiling, and the recipe through run_train.py. (Exports that spandrel and Real-ESRGAN's
module load: tests/test_parity.py.)"""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import photo, torch_forward
from flax import nnx

from jaxsr import archs, weights
from jaxsr.archs import compact, esrgan
from jaxsr.archs.bridge import load_state_dict
from jaxsr.errors import WeightsError
from jaxsr.infer import upscale
from jaxsr.weights import export, load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5  # fp32, max abs diff on [0,1] images


def spandrel_compact(scale, nf=16, nc=4, act="prelu", seed=0, spread=0.02):
    """spandrel's Compact with every parameter moved off torch's init (PReLU slopes by +-0.1 around 0.25)."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=nf, num_conv=nc, upscale=scale, act_type=act)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.add_(torch.randn_like(p) * (0.1 if p.ndim == 1 and name.endswith("weight") else spread))
    return net


def numpy_sd(net):
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def save_realesrgan(net, path):
    """As Real-ESRGAN saves its Compact releases: torch.save({'params': state_dict})."""
    torch.save({"params": net.state_dict()}, path)


def cli(*args):
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("scale", [3, 4])
def test_forward_matches_spandrel(tmp_path, scale):
    net = spandrel_compact(scale)
    save_realesrgan(net, tmp_path / "m.pth")
    model, info = load_model(tmp_path / "m.pth")
    assert (info["arch"], info["scale"]) == ("compact", scale)
    assert info["hyperparameters"] == {"in_ch": 3, "out_ch": 3, "num_feat": 16, "num_conv": 4, "act_type": "prelu"}
    x = photo("astronaut", 29, 37, top=100, left=180)[None]  # odd sizes: nothing to pad to
    ours, ref = np.asarray(model(jnp.asarray(x))), torch_forward(net, x)
    assert ours.shape == ref.shape == (1, 29 * scale, 37 * scale, 3)
    diff = np.abs(ours - ref).max()
    assert diff <= TOL, diff


@pytest.mark.parametrize("name,num_conv", [("realesr-general-x4v3", 32), ("realesr-animevideov3", 16)])
def test_realesrgan_release_layouts_load(tmp_path, name, num_conv):
    """Real-ESRGAN's two Compact releases at their exact size (random weights), wrapped in `params`, through
    load_model and `python -m convert.from_pth`."""
    net = spandrel_compact(4, nf=64, nc=num_conv, seed=1, spread=0.0)  # torch's own init keeps the deep one in range
    path = tmp_path / f"{name}.pth"
    save_realesrgan(net, path)
    expected = {"in_ch": 3, "out_ch": 3, "num_feat": 64, "num_conv": num_conv, "act_type": "prelu"}
    model, info = load_model(path)
    assert (info["arch"], info["scale"], info["hyperparameters"]) == ("compact", 4, expected)
    x = photo("coffee", 24, 20, top=150, left=200)[None]
    diff = np.abs(np.asarray(model(jnp.asarray(x))) - torch_forward(net, x)).max()
    assert diff <= TOL, diff

    code, out, err = cli("-m", "convert.from_pth", str(path), str(tmp_path / "native"))
    assert code == 0, err
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert lines["architecture"] == "compact" and lines["scale"] == "4" and json.loads(lines["hyperparameters"]) == expected
    again, info2 = load_model(tmp_path / "native")
    assert info2["hyperparameters"] == expected
    assert np.array_equal(np.asarray(again(jnp.asarray(x))), np.asarray(model(jnp.asarray(x))))


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_round_trip_is_bit_identical(tmp_path, ext):
    sd = numpy_sd(spandrel_compact(4))
    src, dst = tmp_path / f"in{ext}", tmp_path / f"out{ext}"
    if ext == ".pth":
        torch.save({"params": {k: torch.from_numpy(v) for k, v in sd.items()}}, src)
    else:
        from safetensors.numpy import save_file

        save_file(sd, str(src))
    model, info = load_model(src)
    export(model, {"arch": "compact", "scale": 4, **info["hyperparameters"]}, dst)
    back, _ = weights.read_state_dict(dst)
    assert back.keys() == sd.keys()
    for k in sd:
        assert back[k].dtype == sd[k].dtype and back[k].tobytes() == sd[k].tobytes(), k


@pytest.mark.parametrize("act", ["relu", "leakyrelu"])
def test_parameter_free_activations(tmp_path, spandrel, act):
    """ReLU and LeakyReLU (slope 0.1) match the reference; their files hold no activation tensors, so spandrel does
    not recognise them and a foreign one is refused by name, while jaxsr's own exports (act_type in the metadata)
    load back, with a warning at export."""
    net = spandrel_compact(2, act=act)
    sd = numpy_sd(net)
    assert not any(k.startswith("body.1.") for k in sd)
    spec = {"arch": "compact", "scale": 2, "in_ch": 3, "out_ch": 3, "num_feat": 16, "num_conv": 4, "act_type": act}
    model = archs.build(spec)
    load_state_dict(model, sd)
    x = photo("astronaut", 23, 30, top=200, left=150)[None]
    ours = np.asarray(model(jnp.asarray(x)))
    assert np.abs(ours - torch_forward(net, x)).max() <= TOL

    torch.save({"params": net.state_dict()}, tmp_path / "foreign.pth")  # Real-ESRGAN-style, no metadata
    with pytest.raises(WeightsError, match=r"SRVGGNetCompact \(Compact\) model with a parameter-free activation"):
        load_model(tmp_path / "foreign.pth")
    code, _, err = cli("-m", "convert.from_pth", str(tmp_path / "foreign.pth"), str(tmp_path / "o"))
    assert code == 2 and "parameter-free activation" in err and "Traceback" not in err

    for ext in (".pth", ".safetensors"):
        with pytest.warns(UserWarning, match=f"act_type='{act}'.*will not load"):
            export(model, spec, tmp_path / f"ours{ext}")
        back, info = load_model(tmp_path / f"ours{ext}")
        assert info["hyperparameters"]["act_type"] == act
        assert np.array_equal(np.asarray(back(jnp.asarray(x))), ours)
        with pytest.raises(Exception):
            spandrel.ModelLoader().load_from_file(str(tmp_path / f"ours{ext}"))


def test_refusals_and_detection_name_what_was_found(tmp_path):
    sd = numpy_sd(spandrel_compact(4))
    assert not esrgan.detect(sd) and archs.detect(sd) is compact.ARCH  # the RRDB path no longer claims Compact files
    shared = dict(sd)
    for k in [k for k in shared if k.startswith("body.") and int(k.split(".")[1]) % 2]:
        shared[k] = shared[k][:1]  # nn.PReLU() with one shared slope: spandrel's strict load fails on it
    with pytest.raises(WeightsError, match=r"PReLU slopes of shape \(1,\).*\(16,\)"):
        compact.infer_spec(shared)
    torch.save({"params": {k: torch.from_numpy(v) for k, v in sd.items()}}, tmp_path / "c.pth")
    for arch, what in (("esrgan", "an ESRGAN (RRDBNet) model"), ("span", "a SPAN model")):
        code, _, err = cli("-m", "convert.from_pth", str(tmp_path / "c.pth"), str(tmp_path / "o"), "--arch", arch)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and "Traceback" not in err and len(errors) == 1, err
        assert f"expected {what}, but the file is an SRVGGNetCompact (Compact) model" in errors[0]
    with pytest.raises(ValueError, match="act_type"):
        archs.build({"arch": "compact", "scale": 4, "act_type": "gelu"})
    assert archs.build({"arch": "compact", "scale": 4, "num_feat": 8, "num_conv": 1, "act_type": "lrelu"}).body[1].slope == 0.1


def test_bf16_compute_stays_close_to_fp32():
    """bf16 activations (fp32 params) on a real photo: PSNR of the bf16 output against fp32 >= 40 dB (measured 77.5 dB: the
    nearest-upsampled input is added in fp32, only the residual is bf16)."""
    net = spandrel_compact(4, nf=32, nc=8)
    sd = numpy_sd(net)
    x = jnp.asarray(photo("astronaut", 32, 32, top=200, left=200)[None])
    outs = []
    for dtype in (jnp.float32, jnp.bfloat16):
        model, _ = weights.Weights(compact.ARCH, compact.infer_spec(sd), sd, False, "").build(dtype=dtype)
        assert model.body[0].kernel[...].dtype == jnp.float32
        outs.append(np.asarray(model(x)))
    assert outs[1].dtype == np.float32
    psnr = 10 * np.log10(1 / np.mean((outs[0] - outs[1]) ** 2))
    assert psnr >= 40, psnr


def test_tiled_equals_untiled_with_enough_overlap():
    """num_conv=4: 6 convs of 3x3, a receptive radius of 6 LR px; crop seams are exact once overlap/2 >= 6,
    blend seams once overlap/4 >= 6. Within 1e-5 (float rounding only)."""
    model = archs.build({"arch": "compact", "scale": 3, "num_feat": 8, "num_conv": 4}, rngs=nnx.Rngs(4))
    img = photo("coffee", 170, 203, top=60, left=120)
    ref = upscale(model, img)
    for tile, overlap, seam in ((64, 16, "crop"), (96, 32, "blend")):
        out = upscale(model, img, tile=tile, overlap=overlap, seam=seam, tile_batch=4)
        assert out.shape == ref.shape == (510, 609, 3)
        assert np.abs(out - ref).max() <= 1e-5, (tile, overlap, seam)
    assert np.abs(upscale(model, img, tile=64, overlap=2, seam="crop", tile_batch=4) - ref).max() > 1e-4  # not vacuous


def test_recipe_parameter_count():
    """configs/compact_x4.py is realesr-animevideov3's size: 621,424 parameters, as torch counts them."""
    import importlib

    import jax

    from jaxsr.train.config import resolve
    from jaxsr.train.kinds.sr import generator_spec

    cfg = resolve(importlib.import_module("configs.compact_x4").get_config())
    model = nnx.eval_shape(lambda: archs.build(generator_spec(cfg)))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 621_424
