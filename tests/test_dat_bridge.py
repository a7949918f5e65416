"""The DAT bridge: .pth round trips are bit-identical; unsupported variants are refused by name; from_pth/to_pth/infer
handle DAT. (That spandrel loads our exports with the right tags and outputs: tests/test_parity.py.)"""
import numpy as np
import pytest
from conftest import photo, torch_forward
from test_dat import REDUCED, forward, state_dict_np, torch_dat

import jax.numpy as jnp

TOL = 1e-4


def _torch_sd(path):
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj.get("params", obj) if isinstance(obj, dict) and "params" in obj else obj


def _round_trip(tmp_path, tm):
    """torch .pth -> load_model -> export .pth, and .pth -> .safetensors -> .pth; returns the three dicts."""
    import torch

    from jaxsr import load_model
    from jaxsr.weights import export

    src = tmp_path / "in.pth"
    torch.save({"params": tm.state_dict()}, src)
    m, info = load_model(src)
    spec = {"arch": info["arch"], "scale": info["scale"], **info["hyperparameters"]}
    export(m, spec, tmp_path / "out.pth")
    export(m, spec, tmp_path / "mid.safetensors")
    m2, _ = load_model(tmp_path / "mid.safetensors")
    export(m2, spec, tmp_path / "out2.pth")
    return _torch_sd(src), _torch_sd(tmp_path / "out.pth"), _torch_sd(tmp_path / "out2.pth")


def test_pth_round_trip_bit_identical(tmp_path):
    """A spandrel/BasicSR DAT .pth -> jaxsr -> .pth: same keys, shapes, dtypes and bytes (also through .safetensors),
    the 0-d `num_batches_tracked` counters included."""
    a, b, c = _round_trip(tmp_path, torch_dat(seed=5, **REDUCED["dat"]))
    for out in (b, c):
        assert set(a) == set(out), set(a) ^ set(out)
        for k in a:
            assert a[k].dtype == out[k].dtype, k
            assert a[k].shape == out[k].shape and a[k].numpy().tobytes() == out[k].numpy().tobytes(), k


def test_round_trip_keeps_scalar_buffers(tmp_path):
    import torch

    tm = torch_dat(seed=5, **REDUCED["dat_light"])
    for name, buf in tm.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.fill_(1234)
    a, b, _ = _round_trip(tmp_path, tm)
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def test_infer_spec_follows_spandrel(spandrel):
    """Our inferred hyperparameters equal what spandrel's DAT loader infers, for several configurations."""
    from jaxsr.archs import dat as bridge

    for variant in ("dat_s", "dat_light", "dat_2_l"):
        tm = torch_dat(seed=0, **REDUCED[variant])
        sd = state_dict_np(tm)
        spec = bridge.infer_spec(sd)
        desc = spandrel.ModelLoader().load_from_state_dict(tm.state_dict())
        hp = desc.model.hyperparameters
        assert spec["scale"] == desc.scale
        for ours, theirs in (("embed_dim", "embed_dim"), ("depth", "depth"), ("num_heads", "num_heads"),
                             ("split_size", "split_size"), ("expansion_factor", "expansion_factor"),
                             ("qkv_bias", "qkv_bias"), ("upsampler", "upsampler"),
                             ("resi_connection", "resi_connection"), ("img_size", "img_size"), ("in_ch", "in_chans")):
            assert spec[ours] == (list(hp[theirs]) if isinstance(hp[theirs], (list, tuple)) else hp[theirs]), ours
    # depth-1 groups (heads from pos3), no qkv bias, img_size read from a stored mask
    tm = torch_dat(seed=0, img_size=32, embed_dim=16, depth=[3, 1], num_heads=[4, 2], split_size=[4, 8],
                   expansion_factor=1.5, qkv_bias=False, upscale=2)
    spec = bridge.infer_spec(state_dict_np(tm))
    assert spec["num_heads"] == [4, 2] and spec["qkv_bias"] is False and spec["img_size"] == 32
    assert spec["expansion_factor"] == 1.5 and spec["split_size"] == [4, 8]


def test_unshuffle_mod_refused(tmp_path):
    """traiNNer-redux's unshuffle_mod (conv_first.1.*) is refused with a message naming it."""
    import torch

    from jaxsr.errors import WeightsError
    from jaxsr import load_model

    tm = torch_dat(seed=0, **REDUCED["dat_2"])
    sd = dict(tm.state_dict())
    w = sd.pop("conv_first.weight")
    sd["conv_first.1.weight"] = w.repeat(1, 16, 1, 1)
    sd["conv_first.1.bias"] = sd.pop("conv_first.bias")
    path = tmp_path / "unshuffle.pth"
    torch.save({"params_ema": sd}, path)
    with pytest.raises(WeightsError, match="unshuffle_mod"):
        load_model(path)


def test_from_pth_to_pth_cli(tmp_path):
    import torch

    from jaxsr.cli import from_pth, to_pth
    from jaxsr import load_model

    tm = torch_dat(seed=6, **REDUCED["dat_light"])
    src = tmp_path / "light.pth"
    torch.save({"params": tm.state_dict()}, src)
    assert from_pth([str(src), str(tmp_path / "native")]) == 0
    assert to_pth([str(tmp_path / "native"), str(tmp_path / "back.safetensors")]) == 0
    a, b = state_dict_np(tm), _safetensors(tmp_path / "back.safetensors")
    assert set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    m, info = load_model(tmp_path / "native")
    assert info["arch"] == "dat" and info["scale"] == 4
    x = photo("coffee", 21, 30, top=100, left=100)[None]
    assert float(np.abs(np.asarray(forward(m, jnp.asarray(x))) - torch_forward(tm, x)).max()) <= TOL


def test_upscale_and_infer_cli(tmp_path):
    import torch

    from jaxsr import infer, load_model, upscale
    from jaxsr.imageio import write_image

    tm = torch_dat(seed=6, **REDUCED["dat_light"])
    src = tmp_path / "light.pth"
    torch.save({"params": tm.state_dict()}, src)
    m, _ = load_model(src)
    img = photo("coffee", 21, 30, top=100, left=100)
    out = upscale(m, img)
    ref = np.clip(torch_forward(tm, img[None])[0], 0, 1)
    assert out.shape == (84, 120, 3) and float(np.abs(out - ref).max()) <= TOL
    write_image(str(tmp_path / "in.png"), img)
    rc = infer.main(["--weights", str(src), "--input", str(tmp_path / "in.png"), "--output", str(tmp_path / "o.png")])
    assert rc in (0, None) and (tmp_path / "o.png").exists()


def _same(a, b):
    """Equal bytes, dtype and shape (0-d tensors stay 0-d)."""
    if a.ndim == 0:
        b = b.reshape(())
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _safetensors(path):
    from safetensors.numpy import load_file

    return load_file(str(path))
