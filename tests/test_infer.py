"""load_model/upscale and `python -m jaxsr.infer` on real photographs in every file flavour users have."""
import os
import subprocess
import sys

import cv2
import numpy as np
import torch
from conftest import photo, torch_forward

from jaxsr import load_model, upscale
from jaxsr.imageio import load_image, write_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_model(path, scale=4):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    shuffle = {1: 4, 2: 2}.get(scale)
    net = ESRGAN(in_nc=3 * (shuffle or 1) ** 2, out_nc=3, num_filters=8, num_blocks=1, scale=4 if shuffle else scale, shuffle_factor=shuffle)
    torch.save({"params_ema": net.state_dict()}, path)
    return net


def test_upscale_api_matches_pytorch_and_pads_for_unshuffle(tmp_path):
    for scale in (4, 2):
        net = tiny_model(tmp_path / f"x{scale}.pth", scale)
        model, info = load_model(tmp_path / f"x{scale}.pth")
        img = photo("coffee", 21, 30, top=100, left=300)  # odd height: x2 unshuffle needs a multiple of 2
        out = upscale(model, img)
        assert out.shape == (21 * scale, 30 * scale, 3) and out.dtype == np.float32
        padded = np.pad(img, ((0, 21 % 2), (0, 0), (0, 0)), mode="reflect") if scale == 2 else img
        ref = np.clip(torch_forward(net, padded[None])[0], 0, 1)[: 21 * scale]
        assert np.abs(out - ref).max() <= 1e-5


def test_gray_and_rgba_channels(tmp_path):
    tiny_model(tmp_path / "m.pth")
    model, _ = load_model(tmp_path / "m.pth")
    rgb = photo("astronaut", 16, 16, top=50, left=50)
    gray = rgb.mean(axis=2, keepdims=True)
    out = upscale(model, gray)
    assert out.shape == (64, 64, 1)
    np.testing.assert_allclose(out, upscale(model, np.repeat(gray, 3, 2)).mean(2, keepdims=True), atol=1e-6)
    alpha = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16, 1)
    out = upscale(model, np.concatenate([rgb, alpha], 2))
    assert out.shape == (64, 64, 4)
    np.testing.assert_allclose(out[..., :3], upscale(model, rgb), atol=1e-6)
    np.testing.assert_allclose(out[..., 3:], upscale(model, alpha), atol=1e-6)


def test_infer_cli_on_a_folder_of_mixed_files(tmp_path):
    tiny_model(tmp_path / "m.pth")
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rgb = photo("chelsea", 24, 32, top=50, left=150)
    write_image(src / "rgb8.png", rgb)
    write_image(src / "rgb16.png", rgb, bits=16)
    write_image(src / "sub" / "gray.jpg", rgb.mean(2))
    write_image(src / "rgba.webp", np.concatenate([rgb, np.full((24, 32, 1), 0.5, np.float32)], 2))
    write_image(src / "t16.tif", rgb, bits=16)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    r = subprocess.run(
        [sys.executable, "-m", "jaxsr.infer", "--weights", str(tmp_path / "m.pth"), "--input", str(src), "--output", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 1, r.stderr  # one file failed, the rest were written
    assert "skipped" in r.stderr and "broken.png" in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "out"
    expect = {"rgb8.png": (np.uint8, 3), "rgb16.png": (np.uint16, 3), "sub/gray.png": (np.uint8, 1), "rgba.png": (np.uint8, 4), "t16.png": (np.uint16, 3)}
    for name, (dtype, channels) in expect.items():
        raw = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == dtype and raw.shape[:2] == (96, 128) and (raw.shape[2] if raw.ndim == 3 else 1) == channels, name
    # 16-bit in, 16-bit out, and the values are the model's, not an 8-bit round trip
    img16, bits = load_image(out / "rgb16.png")
    model, _ = load_model(tmp_path / "m.pth")
    assert bits == 16 and np.abs(img16 - upscale(model, load_image(src / "rgb16.png")[0])).max() <= 1 / 65535
