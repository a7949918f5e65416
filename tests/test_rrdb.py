"""RRDBNet against spandrel's PyTorch ESRGAN on identical weights, in each key layout, and the RRDB bridge both ways
(exports that spandrel loads: tests/test_parity.py)."""
import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import photo, torch_forward

from jaxsr import weights
from jaxsr.archs.bridge import load_state_dict
from jaxsr.errors import WeightsError
from jaxsr.archs.esrgan import RRDBNet
from jaxsr.weights import export, load_model

TOL = 1e-5  # fp32, max abs diff on [0,1] images


def spandrel_esrgan(scale, nf=16, nb=2, seed=0, spread=0.02):
    """spandrel's ESRGAN module (original `model.N` keys) with random weights; x2/x1 via pixel-unshuffle."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    shuffle = {1: 4, 2: 2}.get(scale)
    net = ESRGAN(in_nc=3 * (shuffle or 1) ** 2, out_nc=3, num_filters=nf, num_blocks=nb, scale=4 if shuffle else scale, shuffle_factor=shuffle)
    with torch.no_grad():  # spread the weights a little so that a wrong wiring cannot hide in tiny outputs
        for p in net.parameters():
            p.add_(torch.randn_like(p) * spread)
    return net


def old_to_new_keys(sd):
    """Independent table: original ESRGAN keys -> BasicSR keys (as spandrel's `architectures/ESRGAN/__init__.py` renames them)."""
    n = 1 + max(int(k.split(".")[1]) for k in sd)
    num_up = (n - 5) // 3
    nb = max(int(m[1]) for k in sd if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k))) + 1
    table = {"model.0": "conv_first", f"model.1.sub.{nb}": "conv_body", f"model.{3 * num_up + 2}": "conv_hr", f"model.{3 * num_up + 4}": "conv_last"}
    table.update({f"model.{3 * i}": f"conv_up{i}" for i in range(1, num_up + 1)})
    out = {}
    for k, v in sd.items():
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", k)
        out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}" if m else table[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]] = v
    return out


def new_to_bsrgan_keys(sd):
    ren = [("body.", "RRDB_trunk."), (".rdb", ".RDB"), ("conv_body.", "trunk_conv."), ("conv_up", "upconv"), ("conv_hr.", "HRconv.")]
    out = {}
    for k, v in sd.items():
        for a, b in ren:
            k = k.replace(a, b) if not (a == "body." and k.startswith("conv_body")) else k
        out[k] = v
    return out


def numpy_sd(net):
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("scale", [4, 8, 2, 1])
@pytest.mark.parametrize("layout", ["old", "new", "bsrgan"])
def test_forward_matches_spandrel(tmp_path, scale, layout):
    net = spandrel_esrgan(scale)
    sd = numpy_sd(net)
    if layout != "old":
        sd = old_to_new_keys(sd)
    if layout == "bsrgan":
        sd = new_to_bsrgan_keys(sd)
    path = tmp_path / "m.pth"
    torch.save({"params_ema": {k: torch.from_numpy(v) for k, v in sd.items()}}, path)
    model, info = load_model(path)
    assert (info["arch"], info["scale"], info["hyperparameters"]["num_block"]) == ("esrgan", scale, 2)
    x = photo("astronaut", 32, 40, top=100, left=180)[None]
    ours = np.asarray(model(jnp.asarray(x)))
    ref = torch_forward(net, x)
    assert ours.shape == ref.shape == (1, 32 * scale, 40 * scale, 3)
    diff = np.abs(ours - ref).max()
    assert diff <= TOL, diff


def test_full_size_realesrgan_x4plus_load_and_forward(tmp_path):
    """The RealESRGAN_x4plus shape (64/23/32) in Real-ESRGAN's own wrapping."""
    net = spandrel_esrgan(4, nf=64, nb=23, seed=1, spread=0.0)  # torch's own init keeps 23 blocks in range
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": {k: torch.from_numpy(v) for k, v in old_to_new_keys(numpy_sd(net)).items()}}, path)
    model, info = load_model(path)
    assert info["hyperparameters"] == {"in_ch": 3, "out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32}
    x = photo("coffee", 24, 24, top=150, left=200)[None]
    diff = np.abs(np.asarray(model(jnp.asarray(x))) - torch_forward(net, x)).max()
    assert diff <= TOL, diff


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_round_trip_is_bit_identical(tmp_path, ext):
    sd = old_to_new_keys(numpy_sd(spandrel_esrgan(4)))
    src, dst = tmp_path / f"in{ext}", tmp_path / f"out{ext}"
    if ext == ".pth":
        torch.save({"params_ema": {k: torch.from_numpy(v) for k, v in sd.items()}}, src)
    else:
        from safetensors.numpy import save_file

        save_file(sd, str(src))
    model, info = load_model(src)
    export(model, {"arch": "esrgan", "scale": 4, **info["hyperparameters"]}, dst)
    back, _ = weights.read_state_dict(dst)
    assert back.keys() == sd.keys()
    for k in sd:
        assert back[k].dtype == sd[k].dtype and np.array_equal(back[k], sd[k]), k


def test_non_strict_reports_missing_and_unexpected():
    sd = old_to_new_keys(numpy_sd(spandrel_esrgan(4)))
    del sd["conv_hr.weight"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    model = RRDBNet(num_feat=16, num_block=2)
    with pytest.raises(WeightsError, match="1 missing: conv_hr.weight; 1 unexpected: extra.weight"):
        load_state_dict(model, sd)
    report = load_state_dict(model, sd, strict=False)
    assert report.missing == ["conv_hr.weight"] and report.unexpected == ["extra.weight"]
    np.testing.assert_array_equal(np.asarray(model.conv_first.kernel[...]), sd["conv_first.weight"].transpose(2, 3, 1, 0))


def test_bf16_compute_stays_close_to_fp32():
    """bf16 activations (fp32 params) on a real photo: PSNR of the bf16 output against fp32 >= 40 dB."""
    net = spandrel_esrgan(4, nf=32, nb=3)
    sd = old_to_new_keys(numpy_sd(net))
    x = jnp.asarray(photo("astronaut", 32, 32, top=200, left=200)[None])
    outs = []
    for dtype in (jnp.float32, jnp.bfloat16):
        model = RRDBNet(num_feat=32, num_block=3, dtype=dtype)
        load_state_dict(model, sd)
        assert model.conv_first.kernel[...].dtype == jnp.float32
        outs.append(np.asarray(model(x)))
    assert outs[1].dtype == np.float32
    mse = np.mean((outs[0] - outs[1]) ** 2)
    assert 10 * np.log10(1 / mse) >= 40, mse


def test_export_warns_where_spandrel_cannot_follow(tmp_path, spandrel):
    """spandrel hard-codes num_grow_ch=32 (ESRGAN) and num_feat=64 (DAT): such exports warn, and indeed fail there."""
    from jaxsr.archs import dat

    model = RRDBNet(num_feat=8, num_block=1, num_grow_ch=8)
    spec = {"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 8}
    with pytest.warns(UserWarning, match="num_grow_ch=8"):
        export(model, spec, tmp_path / "gc8.pth")
    with pytest.raises(Exception):
        spandrel.ModelLoader().load_from_file(str(tmp_path / "gc8.pth"))
    from jaxsr.archs.dat import build, spec_for

    spec = spec_for("dat_light", embed_dim=16, depth=[1], num_heads=[2], split_size=[4, 8], num_feat=16, scale=2,
                    upsampler="pixelshuffle")
    assert dat.ARCH.spandrel_warnings(spec) and not dat.ARCH.spandrel_warnings({**spec, "num_feat": 64})
    with pytest.warns(UserWarning, match="num_feat=64"):
        export(build(spec), spec, tmp_path / "nf16.safetensors")
