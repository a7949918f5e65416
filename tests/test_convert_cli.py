"""The bridge's command lines and its refusals: hostile, foreign, truncated and missing files."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import photo, torch_forward

from jaxsr import weights
from jaxsr.errors import WeightsError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, env=None):
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    return r.returncode, r.stdout, r.stderr


def small_rrdb_file(path):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=4)
    torch.save(net.state_dict(), path)  # bare state dict with the original `model.N` keys
    return net


class Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipped", [True, False])
def test_pickled_code_is_refused_and_never_runs(tmp_path, zipped):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}, "x": Hostile(marker)}, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(WeightsError, match="refusing to (unpickle|load)") as e:
        weights.read_state_dict(path)
    assert "weights_only" not in str(e.value)  # never the advice to load it unsafely
    code, out, err = cli("-m", "convert.from_pth", str(path), str(tmp_path / "out"))
    assert code == 2 and "error:" in err and "Traceback" not in err
    assert not marker.exists()


def test_compact_files_convert_and_a_dat_given_as_esrgan_is_named(tmp_path):
    from spandrel.architectures.Compact import Compact as SRVGGNetCompact
    from spandrel.architectures.DAT import DAT

    torch.save({"params": SRVGGNetCompact(num_feat=8, num_conv=2).state_dict()}, tmp_path / "compact.pth")
    dat = DAT(img_size=16, embed_dim=16, depth=[2], num_heads=[2], split_size=[2, 4], expansion_factor=2, upscale=2)
    torch.save(dat.state_dict(), tmp_path / "dat.pth")
    code, out, err = cli("-m", "convert.from_pth", str(tmp_path / "compact.pth"), str(tmp_path / "o1"))
    assert code == 0 and "architecture: compact" in out and "scale: 4" in out, err  # refused before Compact was added
    code, _, err = cli("-m", "convert.from_pth", str(tmp_path / "dat.pth"), str(tmp_path / "o2"), "--arch", "esrgan")
    assert code == 2 and "expected an ESRGAN (RRDBNet) model, but the file is a DAT model" in err and "dat" in err.lower() and "Traceback" not in err


def test_truncated_and_missing_files(tmp_path):
    small_rrdb_file(tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt|not a PyTorch checkpoint"):
        weights.read_state_dict(tmp_path / "cut.pth")
    from safetensors.numpy import save_file

    save_file({"a": np.zeros((64, 64), np.float32)}, str(tmp_path / "ok.safetensors"))
    st = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(st[: len(st) // 2])
    with pytest.raises(WeightsError, match="cannot read"):
        weights.read_state_dict(tmp_path / "cut.safetensors")
    for name in ("cut.pth", "missing.pth"):
        code, _, err = cli("-m", "convert.from_pth", str(tmp_path / name), str(tmp_path / "o"))
        assert code == 2 and "error:" in err and "Traceback" not in err
    assert "no such file" in err


def test_from_pth_then_to_pth_and_native_load_without_torch(tmp_path, spandrel):
    net = small_rrdb_file(tmp_path / "m.pth")
    code, out, err = cli("-m", "convert.from_pth", str(tmp_path / "m.pth"), str(tmp_path / "native"))
    assert code == 0, err
    assert "architecture: esrgan" in out and "scale: 4" in out and '"num_block": 2' in out
    x = photo("chelsea", 20, 24, top=80, left=220)[None]
    np.save(tmp_path / "x.npy", x)
    # the native folder loads and runs with torch made unimportable
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, jax.numpy as jnp\nfrom jaxsr import load_model\n"
        f"m, info = load_model({str(tmp_path / 'native')!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(m(jnp.asarray(np.load({str(tmp_path / 'x.npy')!r})))))\n"
    )
    code, _, err = cli("-c", script)
    assert code == 0, err
    assert np.abs(np.load(tmp_path / "y.npy") - torch_forward(net, x)).max() <= 1e-5
    code, out, err = cli("-m", "convert.to_pth", str(tmp_path / "native"), str(tmp_path / "back.pth"))
    assert code == 0, err
    desc = spandrel.ModelLoader().load_from_file(str(tmp_path / "back.pth"))
    assert desc.architecture.id == "ESRGAN" and desc.scale == 4
    assert np.abs(torch_forward(desc.model, x) - torch_forward(net, x)).max() <= 1e-5
