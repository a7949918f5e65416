"""Shared test fixtures: real photographs and the PyTorch reference (spandrel) behind a torchvision stub."""
import enum
import sys
import types

import numpy as np
import pytest


def _stub_torchvision():
    """spandrel imports torchvision at import time for two archs we never use; no CPU torchvision exists here."""
    if "torchvision" in sys.modules:
        return
    tv, tr, fn = (types.ModuleType(n) for n in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"))

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    def _unavailable(*args, **kwargs):
        raise RuntimeError("torchvision stub: not available in tests")

    fn.InterpolationMode = InterpolationMode
    fn.rotate = fn.normalize = _unavailable
    tv.transforms, tr.functional = tr, fn
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn})


_stub_torchvision()


def photo(name="astronaut", h=None, w=None, top=0, left=0):
    """A real photograph from scikit-image as HxWx3 float32 in [0,1], optionally cropped."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3].astype(np.float32) / 255.0
    h = h or img.shape[0] - top
    w = w or img.shape[1] - left
    return np.ascontiguousarray(img[top : top + h, left : left + w])


@pytest.fixture
def spandrel():
    import spandrel as sp

    return sp


def torch_forward(module, img_nhwc):
    """Run a torch module on an NHWC numpy batch, return NHWC numpy (float32, no grad)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(img_nhwc.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        y = module.eval()(x)
    return y.numpy().transpose(0, 2, 3, 1)


# A recipe shrunk to a few 32 px steps on the built-in photographs: batch 2, a checkpoint every 2 steps, validation
# (and so the exports) at step 3. Add the recipe's own overrides (a smaller model).
SHRUNK = ["--config.train.batch_size=2", "--config.data.gt_size=32", "--config.degrade.gt_size=32", "--config.data.num_workers=0",
          "--config.train.log_every=1", "--config.train.ckpt_every=2", "--config.val.every=3", "--config.data.val_max_size=64"]


def recipe_resumes_bitwise(tmp_path, recipe, *overrides):
    """Train `recipe` (configs/<recipe>.py) three steps straight, and two then a resume to three, through run_train.py;
    check that the losses are finite and the same floats both ways. Returns the resumed run's workdir."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(wd, steps):
        r = subprocess.run([sys.executable, "run_train.py", "--config", f"configs/{recipe}.py", *SHRUNK, *overrides,
                            f"--config.train.total_steps={steps}", "--workdir", str(wd)], cwd=root, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def losses(wd):
        with open(wd / "metrics.jsonl") as f:
            return {rec["step"]: rec["loss"] for rec in map(json.loads, f) if "loss" in rec}

    run(tmp_path / "straight", 3)
    run(tmp_path / "resumed", 2)
    assert "resumed from step 2" in run(tmp_path / "resumed", 3)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(a) == [1, 2, 3] and all(np.isfinite(v) for v in a.values()), a
    assert a == b  # bitwise: the same floats in the same JSON
    return tmp_path / "resumed"
