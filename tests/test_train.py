"""run_train.py end to end on real photographs: resume after SIGKILL, device-count invariance, warm start
from a spandrel-made .pth, exports that spandrel reproduces, the GAN stage, and bad inputs."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import torch_forward

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [  # a tiny RRDB on 32 px crops of the built-in photographs; a step takes well under a second
    "--config", "configs/demo.py", "--config.model.num_feat=8", "--config.model.num_block=1", "--config.model.num_grow_ch=8",
    "--config.train.batch_size=4", "--config.data.gt_size=32", "--config.degrade.gt_size=32", "--config.data.num_workers=0",
    "--config.train.total_steps=12", "--config.train.log_every=1", "--config.train.ckpt_every=4", "--config.val.every=0",
    "--config.val.at_start=False", "--config.optim.warmup_steps=2", "--config.data.val_max_size=96",
]


def run(args, workdir, env=None, timeout=600):
    e = {**os.environ, **(env or {})}
    r = subprocess.run([sys.executable, "run_train.py", *args, "--workdir", str(workdir)], cwd=ROOT, capture_output=True,
                       text=True, env=e, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def logged(workdir):
    """Last logged record per step (a resumed run logs some steps twice)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                out[rec["step"]] = rec
    return out


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_sigkill_mid_run_and_mid_save_then_resume_exactly(tmp_path):
    ref = tmp_path / "ref"
    code, _, err = run(TINY, ref)
    assert code == 0, err
    expected = logged(ref)
    assert sorted(expected) == list(range(1, 13))

    # 1) SIGKILL mid-run, after the step-4 checkpoint
    wd = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "run_train.py", *TINY, "--workdir", str(wd)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (os.path.exists(wd / "metrics.jsonl") and max(logged(wd), default=0) >= 6):
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert 6 <= max(logged(wd)) < 12
    # 2) SIGKILL right inside the step-8 checkpoint save (the async write has started, not finished)
    killer = (
        "import os, signal, runpy, sys\n"
        "from jaxsr.train import checkpoint\n"
        "orig = checkpoint.Checkpoints.save\n"
        "def save(self, step, *a, **k):\n"
        "    orig(self, step, *a, **k)\n"
        "    if step == 8: os.kill(os.getpid(), signal.SIGKILL)\n"
        "checkpoint.Checkpoints.save = save\n"
        f"sys.argv = ['run_train.py', *{TINY!r}, '--workdir', {str(wd)!r}]\n"
        "runpy.run_path('run_train.py', run_name='__main__')\n"
    )
    r = subprocess.run([sys.executable, "-c", killer], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stderr
    code, out, err = run(TINY, wd)
    assert code == 0, err
    assert "resumed from step" in out
    got = logged(wd)
    assert sorted(got) == list(range(1, 13))
    for step in range(1, 13):
        assert got[step] == expected[step], (step, got[step], expected[step])  # bitwise: same floats, same JSON
    assert not [d for d in os.listdir(wd / "checkpoints") if "tmp" in d]


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_four_devices_give_the_same_losses_as_one(tmp_path):
    args = [*TINY, "--config.train.total_steps=4", "--config.train.ckpt_every=100"]
    results = []
    for n in (1, 4):
        wd = tmp_path / f"d{n}"
        code, out, err = run(args, wd, env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"})
        assert code == 0, err
        assert f"{n} device(s)" in out
        results.append(logged(wd))
    for step in range(1, 5):
        np.testing.assert_allclose(results[1][step]["loss"], results[0][step]["loss"], rtol=1e-5)


def _spandrel_rrdb_file(path):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    torch.save({"params_ema": net.state_dict()}, path)
    return net


def test_warm_start_validation_equals_pytorch_and_exports_reproduce(tmp_path, spandrel):
    from jaxsr import data, metrics
    from jaxsr.train.config import base_config

    net = _spandrel_rrdb_file(tmp_path / "pre.pth")
    wd = tmp_path / "wd"
    args = [*TINY, "--config.model.arch=auto", f"--config.init_weights={tmp_path / 'pre.pth'}", "--config.train.total_steps=2",
            "--config.val.every=2", "--config.optim.schedule=constant"]
    code, out, err = run(args, wd)
    assert code == 0, err
    assert "warm start from" in out and "all tensors matched" in out
    step0 = [json.loads(line) for line in open(wd / "metrics.jsonl") if "val_psnr" in line][0]
    assert step0["step"] == 0
    cfg = base_config()
    cfg.data.val_max_size = 96
    items = data.val_items(cfg.data, json.load(open(wd / "dataset_splits.json")), 4, "val")
    ref = [metrics.psnr(np.round(np.clip(torch_forward(net, it["lr"][None])[0], 0, 1) * 255) / 255, it["hr"], 4, True) for it in items]
    assert abs(step0["val_psnr"] - float(np.mean(ref))) < 1e-3
    # the exports load in spandrel and reproduce jaxsr's outputs
    from jaxsr import load_model, upscale

    for name in ("demo_x4.pth", "demo_x4.safetensors", "demo_x4_best.pth"):
        desc = spandrel.ModelLoader().load_from_file(str(wd / "models" / name))
        assert desc.architecture.id == "ESRGAN" and desc.scale == 4
    model, _ = load_model(wd / "models" / "demo_x4.safetensors")
    desc = spandrel.ModelLoader().load_from_file(str(wd / "models" / "demo_x4.pth"))
    for it in items:
        assert np.abs(upscale(model, it["lr"]) - np.clip(torch_forward(desc.model, it["lr"][None])[0], 0, 1)).max() <= 1e-5


def tensorboard_summaries(workdir):
    """([(step, tag, height, width)] of the images, [(step, tag)] of the histograms) in a run's TensorBoard event
    files (TFRecord framing)."""
    import glob
    import struct

    from tensorboardX.proto import event_pb2

    images, histograms = [], []
    for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
        data, i = open(path, "rb").read(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            images += [(event.step, v.tag, v.image.height, v.image.width) for v in event.summary.value if v.HasField("image")]
            histograms += [(event.step, v.tag) for v in event.summary.value if v.HasField("histo") and v.histo.num > 0]
    return sorted(images), sorted(histograms)


@pytest.mark.slow
@pytest.mark.usefixtures("quick_compiles_one_test")
def test_realesrgan_degradations_and_gan_stage_train(tmp_path):
    """The fused Real-ESRGAN step (second-order degradations, queue, USM) and the GAN stage with a U-Net D;
    training LR|SR|HR grids every train.image_every steps."""
    args = [*TINY, "--config.degrade.mode=realesrgan", "--config.data.gt_size=48", "--config.degrade.gt_size=32",
            "--config.degrade.queue_size=8", "--config.gan.enabled=True", "--config.gan.start_step=2",
            "--config.gan.discriminator.num_feat=8", "--config.train.total_steps=4", "--config.train.image_every=2"]
    losses = "--config.losses={'l1': {'name': 'l1', 'target': 'gt_usm'}, 'gan': {'name': 'gan', 'weight': 0.1}}"
    code, out, err = run([*args, losses], tmp_path / "wd")
    assert code == 0, err
    rec = logged(tmp_path / "wd")
    assert "d_loss" not in rec[2] and "d_loss" in rec[3] and np.isfinite(rec[4]["d_loss"]) and rec[4]["gan"] > 0
    # 4 rows (the first 4 samples) of LR (nearest-upscaled) | SR | HR, each 32 px: 128 x 96
    images, histograms = tensorboard_summaries(tmp_path / "wd")
    assert images == [(2, "train/lr_sr_hr", 128, 96), (4, "train/lr_sr_hr", 128, 96)]
    assert histograms == [(s, f"train/{k}") for s in (2, 4) for k in ("d_fake", "d_real", "sr")]


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_bad_inputs_get_clear_messages(tmp_path):
    cases = []
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append(([f"--config.data.hr_dir={empty}"], "no images"))
    cases.append(([f"--config.data.hr_dir={tmp_path / 'nope'}"], "nope"))
    cases.append((["--config.model.no_such_field=3"], "no_such_field"))
    cases.append(([f"--config.init_weights={tmp_path / 'missing.pth'}"], "init_weights: no such file"))
    cases.append((["--config.degrade.mode=realesrgan", "--config.degrade.queue_size=6"],
                   "degrade.queue_size (6) must be a multiple of train.batch_size (4); set it to 4"))
    cases.append((["--config.optim.name=adan", "--config.optim.betas=(0.9,0.99,0.9,0.9)"], "optim.betas must have 3 values for adan"))
    cases.append((["--config.scale=3", "--config.data.gt_size=33", "--config.degrade.gt_size=33"],
                   "scale=3: an ESRGAN (RRDBNet) model supports scale 1, 2, 4, 8"))
    cases.append((["--config.data.gt_size=30"], "data.gt_size=30 is not a multiple of scale=4; use 28"))
    for i, (extra, needle) in enumerate(cases):
        code, out, err = run([*TINY, *extra], tmp_path / f"case{i}")
        assert code != 0, (extra, out)
        assert needle in (err + out) and "Traceback" not in err, (extra, err)
    # a resume with an incompatible config names the field
    wd = tmp_path / "resume"
    code, _, err = run([*TINY, "--config.train.total_steps=3"], wd)
    assert code == 0, err
    code, _, err = run([*TINY, "--config.model.num_feat=16"], wd)
    assert code == 2 and "model.num_feat" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.usefixtures("quick_compiles_one_test")
def test_dat_recipe_trains_resumes_and_its_export_runs(tmp_path, spandrel):
    """DAT through the trainer: train-mode BatchNorm and drop path, remat, a checkpoint (with the empty
    position-bias tensors a tiny DAT has), resume, and the export through spandrel and jaxsr.infer."""
    wd = tmp_path / "wd"
    args = ["--config", "configs/dat2_x4.py", "--config.model.embed_dim=16", "--config.model.depth=(2,2)", "--config.model.num_heads=(2,2)",
            "--config.model.split_size=(4,8)", "--config.train.batch_size=2", "--config.data.gt_size=64",
            "--config.degrade.gt_size=64", "--config.train.log_every=1", "--config.val.every=2", "--config.data.val_max_size=64",
            "--config.data.num_workers=0"]
    code, _, err = run([*args, "--config.train.total_steps=2"], wd)
    assert code == 0, err
    code, out, err = run([*args, "--config.train.total_steps=3"], wd)
    assert code == 0, err
    assert "resumed from step 2" in out and sorted(logged(wd)) == [1, 2, 3]
    desc = spandrel.ModelLoader().load_from_file(str(wd / "models" / "dat2_x4.pth"))
    assert desc.architecture.id == "DAT" and desc.scale == 4
    r = subprocess.run([sys.executable, "-m", "jaxsr.infer", "--weights", str(wd / "models" / "dat2_x4.pth"), "--input",
                        str(wd / "dataset_splits.json").replace("dataset_splits.json", ""), "--output", str(tmp_path / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no images" in r.stderr  # a folder without images is reported, not a crash
    src = json.load(open(wd / "dataset_splits.json"))["val"][0]
    r = subprocess.run([sys.executable, "-m", "jaxsr.infer", "--weights", str(wd / "models" / "dat2_x4.pth"), "--input", src,
                        "--output", str(tmp_path / "out.png")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(tmp_path / "out.png") > 0


def test_bad_images_in_a_run_are_skipped_or_refused_by_name(tmp_path):
    """A corrupt file and an image smaller than the crop in the data: the run warns by name and trains on;
    paired LR at the wrong scale: refused before training, naming the file and both sizes."""
    from conftest import photo

    from jaxsr.imageio import write_image

    hr = tmp_path / "hr"
    hr.mkdir()
    for i, name in enumerate(["astronaut", "chelsea", "coffee", "rocket", "astronaut", "chelsea", "coffee", "rocket"]):
        write_image(hr / f"{i:02d}.png", photo(name, 64, 64, top=40 * i, left=30 * i))
    (hr / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # corrupt
    write_image(hr / "05.png", photo("chelsea", 20, 24))  # smaller than the 32 px crop: reflect-padded
    args = [*TINY, f"--config.data.hr_dir={hr}", "--config.train.total_steps=6", "--config.data.split=(0.75,0.125,0.125)"]
    code, out, err = run(args, tmp_path / "wd")
    assert code == 0, err
    assert "03.png" in out + err and "Traceback" not in err
    assert sorted(logged(tmp_path / "wd")) == list(range(1, 7))
    lr = tmp_path / "lr"
    lr.mkdir()
    for i in range(8):
        write_image(lr / f"{i:02d}.png", photo("astronaut", 32, 32))  # x2 of the 64 px HR, but the run is x4
    code, out, err = run([*args, f"--config.data.lr_dir={lr}"], tmp_path / "wd2")
    assert code == 2 and "32x32" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_readme_demo_beats_bicubic(tmp_path, spandrel):
    """The README's first command, as written (only the workdir moved): it trains for real on the built-in
    photographs, ends above MATLAB-bicubic upscaling on the held-out ones, and its export opens in chaiNNer."""
    code, out, err = run(["--config", "configs/demo.py"], tmp_path / "demo", timeout=1500)
    assert code == 0, err
    assert "built-in photographs" in out + err
    last = [line for line in out.splitlines() if line.startswith("validation at step 1000")][0]
    psnr = float(last.split("PSNR ")[1].split()[0])
    bicubic = float(last.split("bicubic: PSNR ")[1].split()[0])
    assert psnr > bicubic + 0.3, last  # measured: 29.94 dB against 29.38 dB
    desc = spandrel.ModelLoader().load_from_file(str(tmp_path / "demo" / "models" / "demo_x4_best.pth"))
    assert desc.architecture.id == "ESRGAN" and desc.scale == 4  # chaiNNer's loader
