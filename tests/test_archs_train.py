"""Every architecture trains through the trainer: a recipe (configs/x4.py, L1 on bicubic pairs) warm-starts any supported
generator from its file with model.arch=auto, trains, resumes bitwise from a chosen checkpoint, and its loss falls.
No discriminator: the GAN step is the same for every generator and its compile is most of a small model's run
(tests/test_gan_recipes.py and test_train.py train the GAN recipes). One validation image (a warm start validates at
step 0): what it compiles is the train step, once, and the forward at one size (the resume reads back from the test
run's compilation cache those that took 0.3 s or more). Compiled without most of XLA's optimisations (they cost more
compile time than four steps save), except Real-CUGAN (fixed widths: its steps cost more than its compile) and SAFMN,
whose gradient comes out NaN without them on these crops.
"""
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import metric_rows, photo, quickly_compiled
from test_layout import SMALL, perturbed

from jaxsr import archs, parallel, weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# RRDB and DAT have their own end-to-end runs in test_train.py, PPON its own kind's in test_ppon.py
GENERATORS = sorted(n for n in SMALL if archs.get(n).kind == "generator" and n not in ("esrgan", "dat", "ppon"))


def l1_run(init, scale, crop):
    """configs/x4.py warm-started from `init`, shrunk: L1 on bicubic pairs, no EMA."""
    return ["--config", "configs/x4.py", "--config.model.arch=auto", f"--config.init_weights={init}", f"--config.scale={scale}",
            "--config.losses={'l1': {'name': 'l1'}}", "--config.degrade.mode=bicubic", "--config.optim.ema_decay=0",
            "--config.train.batch_size=2", f"--config.data.gt_size={crop}", f"--config.degrade.gt_size={crop}",
            "--config.data.num_workers=0", "--config.train.total_steps=4", "--config.train.ckpt_every=2",
            "--config.train.log_every=1", "--config.val.every=0", "--config.data.val_max_size=64",
            "--config.data.val_max_images=1"]


@pytest.mark.parametrize("name", GENERATORS)
def test_any_generator_trains_from_its_file_and_resumes_bitwise(tmp_path, name):
    if archs.get(name).condition:
        pytest.skip(f"{name} takes {archs.get(name).condition!r} maps besides the image: the sr kind's recipe has none "
                    "to give it; tests/test_sftgan_kind.py trains it with kind='sftgan'")
    if name in ("p2p_unet", "p2p_resnet"):
        pytest.skip(f"{name} translates [-1, 1] images at scale 1, not the sr kind's bicubic pairs: the pix2pix/cyclegan "
                    "training kinds (issue #27) train it")
    if name == "srflow":
        pytest.skip("srflow trains by likelihood (encode/nll), not on L1 of its heat-0 sample: kind='srflow' trains it "
                    "(tests/test_srflow_kind.py)")
    if name == "wbcunet":
        pytest.skip("wbcunet cartoonizes [-1, 1] photos at scale 1 from unaligned photo and cartoon sets, not the sr kind's "
                    "bicubic pairs: kind='wbc' trains it (tests/test_wbc_kind.py)")
    # XLA's optimisations cost more compile time than these few steps of a tiny model save; Real-CUGAN's widths are
    # fixed (not tiny), and without them SAFMN's gradient is NaN
    with contextlib.nullcontext() if name in ("safmn", "realcugan") else quickly_compiled():
        _trains_resumes_and_learns(tmp_path, name)


def _trains_resumes_and_learns(tmp_path, name):
    spec = SMALL[name]
    init = tmp_path / f"{name}.safetensors"
    weights.export(perturbed(spec), spec, init)
    crop = 48  # a multiple of every scale here
    wd = tmp_path / "wd"
    r = subprocess.run([sys.executable, "run_train.py", *l1_run(init, spec["scale"], crop), "--workdir", str(wd)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900, env={**os.environ, "JAX_NUM_CPU_DEVICES": "1",
                            # the XLA:CPU kernels this process compiles with (run_train picks others for some
                            # families, parallel.CPU_KERNELS), so that the resume in this process below is bitwise
                            "XLA_FLAGS": parallel.YNNPACK})
    assert r.returncode == 0, r.stderr
    assert "warm start from" in r.stdout and "all tensors matched" in r.stdout
    first = metric_rows(wd)
    assert sorted(first) == [1, 2, 3, 4] and all(np.isfinite(first[s]["l1"]) for s in first)
    assert json.load(open(wd / "config.json"))["model"]["arch"] == spec["arch"]  # the frozen config names the file's spec

    # the same trainer, in this process, branched at step 2: steps 3 and 4 again, bitwise
    from jaxsr.train.config import get_config, resolve
    from jaxsr.train.loop import start

    again = tmp_path / "again"
    shutil.copytree(wd, again)
    cfg = resolve(get_config(str(wd / "config.json")))
    trainer = start(cfg, str(again), resume_from=2)
    assert trainer.run() == 4
    got = metric_rows(again)
    assert got[3] == first[3] and got[4] == first[4]

    # and its L1 falls: the run's compiled step (no new compile), a few times on one fixed batch of real photographs
    gt = np.stack([photo(n, crop, crop, top=40, left=60) for n in ("astronaut", "coffee")])
    batch = parallel.global_batch(trainer.mesh, {"gt": gt})
    state, losses = trainer.state, []
    for _ in range(6):
        state, m = trainer.kind.steps.g(state, batch, trainer.kind.feature_params)
        losses.append(float(m["l1"]))
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


def test_every_new_generator_is_covered():
    assert set(GENERATORS) >= {"compact", "span", "realplksr"}, GENERATORS
    importlib.import_module("configs.x4")
