"""Nothing lost, no traceback: each defect found by trying every command as a careful new user would, through the
real command lines (docs/reliability.md lists the promises these tests back)."""
import json
import os
import subprocess

import cv2
import numpy as np
import pytest
import torch
from conftest import cli, photo
from PIL import Image, ImageOps

from jaxsr import weights
from jaxsr.archs import esrgan
from jaxsr.imageio import load_image, write_image

pytestmark = pytest.mark.usefixtures("quick_compiles")  # tiny runs: XLA compiles more than it runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [  # the tiny RRDB run of test_train.py: a step takes well under a second
    "--config", "configs/demo.py", "--config.model.num_feat=8", "--config.model.num_block=1", "--config.model.num_grow_ch=8",
    "--config.train.batch_size=4", "--config.data.gt_size=32", "--config.degrade.gt_size=32", "--config.data.num_workers=0",
    "--config.train.total_steps=12", "--config.train.log_every=1", "--config.train.ckpt_every=4", "--config.val.every=0",
    "--config.val.at_start=False", "--config.optim.warmup_steps=2", "--config.data.val_max_size=96",
]


def train(workdir, *extra):
    return cli("run_train.py", *TINY, *extra, "--workdir", workdir)


def losses(workdir):
    """{step: row} of metrics.jsonl, asserting that each step is logged once."""
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if '"loss"' in line]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"steps logged twice: {sorted(steps)}"
    return {r["step"]: r for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every fault test continues against."""
    wd = tmp_path_factory.mktemp("reference") / "wd"
    code, _, err = train(wd)
    assert code == 0, err
    return losses(wd)


@pytest.fixture
def model_file(tmp_path):
    model = esrgan.build({"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 32})
    path = tmp_path / "m.safetensors"
    weights.export(model, {"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1,
                           "num_grow_ch": 32}, path)
    return path


# ----------------------------------------------------------------------------------------- 1, 10: infer and evaluate outputs


def test_infer_keeps_every_result_and_never_writes_over_an_input(tmp_path, model_file):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "photo.png", photo("chelsea", 20, 24))
    write_image(src / "photo.jpg", photo("coffee", 20, 24))
    write_image(src / "other.png", photo("astronaut", 20, 24))
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    code, _, err = cli("-m", "jaxsr.infer", "--weights", model_file, "--input", src, "--output", tmp_path / "out")
    assert code == 0 and "wrote 3 image(s)" in err, err
    assert sorted(os.listdir(tmp_path / "out")) == ["other.png", "photo.jpg.png", "photo.png.png"]
    # the output is the input: refused before any work, and the inputs are untouched
    code, _, err = cli("-m", "jaxsr.infer", "--weights", model_file, "--input", src, "--output", src)
    assert code == 2 and "is an input and would be replaced" in err
    code, _, err = cli("-m", "jaxsr.infer", "--weights", model_file, "--input", src / "other.png", "--output", src / "other.png")
    assert code == 2 and "is an input and would be replaced" in err
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    # an output folder that cannot be created is refused before any work (10)
    (tmp_path / "a_file").write_text("x")
    code, _, err = cli("-m", "jaxsr.infer", "--weights", model_file, "--input", src, "--output", tmp_path / "a_file" / "out")
    assert code == 2 and "cannot create the folder" in err


def test_evaluate_names_same_stem_images_apart_and_checks_its_output_folder(tmp_path, model_file):
    hr = tmp_path / "hr"
    hr.mkdir()
    write_image(hr / "photo.png", photo("chelsea", 64, 64))
    write_image(hr / "photo.jpg", photo("coffee", 64, 64))
    code, out, err = cli("-m", "jaxsr.evaluate", "--weights", model_file, "--hr", hr, "--out", tmp_path / "report")
    assert code == 0, err
    report = json.load(open(tmp_path / "report" / "metrics.json"))
    assert sorted(r["image"] for r in report["images"]) == ["photo.jpg", "photo.png"]
    assert sorted(os.listdir(tmp_path / "report" / "compare")) == ["photo.jpg.png", "photo.png.png"]
    (tmp_path / "a_file").write_text("x")
    code, _, err = cli("-m", "jaxsr.evaluate", "--weights", model_file, "--hr", hr, "--out", tmp_path / "a_file" / "r")
    assert code == 2 and "cannot create the folder" in err


# ----------------------------------------------------------------------------------------- 2, 3, 5, 12: runs


def test_a_run_without_validation_ends_with_exports_and_a_damaged_checkpoint_is_moved_aside(tmp_path, reference):
    wd = tmp_path / "wd"
    code, out, err = train(wd, "--config.export.onnx=True")
    assert code == 0, err
    assert sorted(os.listdir(wd / "models")) == ["demo_x4.onnx", "demo_x4.pth", "demo_x4.safetensors"]  # 2: val.every=0 exports
    assert "demo_x4.onnx: verify: onnxruntime" in out  # export.onnx: checked in onnxruntime as it is written
    code, _, err = cli("-m", "convert.to_pth", wd, tmp_path / "out.pth")
    assert code == 0, err
    assert sorted(os.listdir(wd / "checkpoints")) == ["12", "8"]  # the latest and the one before, not every save
    # 3: damage the latest checkpoint's array data; the rerun falls back to step 8 and continues as if never stopped
    for f in os.listdir(wd / "checkpoints" / "12" / "state" / "d"):
        with open(wd / "checkpoints" / "12" / "state" / "d" / f, "r+b") as fh:
            fh.truncate(10)
    code, out, err = train(wd, "--config.train.total_steps=12", "--config.export.onnx=True")
    assert code == 0, err
    said = [line for line in (out + err).splitlines() if "does not restore" in line]
    assert len(said) == 1 and "moved it to" in said[0] and "checkpoints.damaged" in said[0], out + err
    assert "resumed from step 8" in out
    assert os.listdir(wd / "checkpoints.damaged") == ["12"]  # moved aside, never deleted
    assert losses(wd) == reference  # bitwise, each step once (12)


def test_a_resume_never_reads_init_weights(tmp_path, model_file):
    init = tmp_path / "init.safetensors"
    init.write_bytes(model_file.read_bytes())
    wd = tmp_path / "wd"
    warm = ["--config.model.arch=auto", f"--config.init_weights={init}", "--config.optim.schedule=constant"]
    code, out, err = train(wd, *warm, "--config.train.total_steps=4")
    assert code == 0 and "warm start from" in out, err
    init.unlink()  # the file may be gone by the time the run resumes
    code, out, err = train(wd, *warm, "--config.train.total_steps=6")
    assert code == 0, err
    assert "warm start from" not in out
    assert sum("init_weights" in line and "is not applied" in line for line in out.splitlines()) == 1
    assert "resumed from step 4" in out


def _mount_tmpfs(path, size):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_a_full_disk_stops_the_run_with_one_line_and_the_rerun_continues_bitwise(tmp_path, reference):
    """On a small tmpfs where this machine lets the test mount one; otherwise with the free space the saver
    sees made small, which is the same check."""
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "2400k")  # checkpoints here take 0.7-0.9 MiB: the saves at 4 and 8 fit, at 12 not
    wd = disk / "wd"
    try:
        if mounted:
            code, out, err = train(wd)
        else:
            script = ("import runpy, shutil, sys\nfrom collections import namedtuple\nreal = shutil.disk_usage\n"
                      "def small(p):\n    u = real(p)\n    return u._replace(free=300 * 1024) if 'checkpoints' in str(p) "
                      "and len(__import__('os').listdir(p)) >= 2 else u\nshutil.disk_usage = small\n"
                      f"sys.argv = ['run_train.py', *{TINY!r}, '--workdir', {str(wd)!r}]\n"
                      "runpy.run_path('run_train.py', run_name='__main__')\n")
            code, out, err = cli("-c", script)
        assert code == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: saving the checkpoint at step") and "MiB" in lines[0], err
        assert "the last complete checkpoint (step 8) is intact" in lines[0]
        log = (wd / "train.log").read_text()
        assert "error: saving the checkpoint" in log and "step 12/12" in log  # the log is whole, with the error in it
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=50m", str(disk)], check=True)
        code, out, err = train(wd)
        assert code == 0 and "resumed from step 8" in out, err
        assert losses(wd) == reference
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)])


# ----------------------------------------------------------------------------------------- 4, 12: decoding


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tif"])
def test_exif_orientation_is_applied_as_viewers_do(tmp_path, ext):
    base = (photo("astronaut", 20, 30) * 255).astype(np.uint8)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.{ext}"
        Image.fromarray(base).save(path, exif=exif, **({"quality": 95} if ext == "jpg" else {}))
        ref = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), np.float32) / 255
        ours, _ = load_image(path)
        assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1.5 / 255, (ext, orientation)


def test_a_rotated_phone_photo_comes_out_upright_in_infer(tmp_path, model_file):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray((photo("coffee", 20, 30) * 255).astype(np.uint8)).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    code, _, err = cli("-m", "jaxsr.infer", "--weights", model_file, "--input", tmp_path / "phone.jpg", "--output", tmp_path / "o.png")
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "o.png")).shape == (120, 80, 3)


def test_odd_files_are_reported_not_dropped(tmp_path, model_file):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", photo("chelsea", 20, 24))
    Image.fromarray((photo("coffee", 20, 24) * 255).astype(np.uint8)).save(src / "anim.gif")
    pages = [Image.fromarray((photo(n, 20, 24) * 255).astype(np.uint8)) for n in ("rocket", "chelsea")]
    pages[0].save(src / "pages.tif", save_all=True, append_images=pages[1:])
    cv2.imwrite(str(src / "hdr.tif"), np.full((20, 24, 3), 1.5, np.float32))
    code, _, err = cli("-m", "jaxsr.infer", "--weights", model_file, "--input", src, "--output", tmp_path / "out")
    assert code == 0, err
    assert "GIF" in err and "anim.gif" in err
    assert "pages.tif: has 2 pages; only the first is used" in err
    assert "hdr.tif: float pixels in [1.5, 1.5] are clipped to [0, 1]" in err


# ----------------------------------------------------------------------------------------- 6: the degradation preview


def test_degrade_preview_reports_an_unreadable_file_and_goes_on(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", photo("chelsea", 80, 80))
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    code, out, err = cli("-m", "jaxsr.degrade", "--config", "configs/demo.py", "--input", src, "--output", tmp_path / "o",
                         "--n", "2", "--crop", "64")
    assert code == 0, err
    assert "skipped" in err and "b.png" in err
    assert (tmp_path / "o" / "contact_sheet.png").exists()


# ----------------------------------------------------------------------------------------- 8, 9, 11: mistakes and limits


@pytest.mark.parametrize("extra,needle", [
    (["--config.train.batch_size=0"], "train.batch_size must be positive, got 0"),
    (["--config.train.batch_size=-4"], "train.batch_size must be positive, got -4"),
    (["--config.optim.lr=-1e-3"], "optim.lr must be positive"),
    (["--config.data.gt_size=32", "--config.degrade.gt_size=64"], "degrade.gt_size (64) is larger than data.gt_size (32)"),
    (["--config.train.nope=1", "--config.optim.lr=1e-3"], "cannot apply --config.train.nope=1: the config has no field train.nope"),
])
def test_config_mistakes_are_one_line_before_any_work(tmp_path, extra, needle):
    code, out, err = train(tmp_path / "wd", *extra)
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert "--config.optim.lr=1e-3" not in err  # only the bad override is named
    assert not (tmp_path / "wd").exists()


def test_config_files_that_do_not_load(tmp_path):
    (tmp_path / "bad.py").write_text("def get_config(:\n")
    code, _, err = cli("run_train.py", "--config", tmp_path / "bad.py")
    assert code == 2 and "cannot load the config" in err and "SyntaxError" in err
    code, _, err = cli("run_train.py", "--config", tmp_path / "missing.py")
    assert code == 2 and "cannot load the config" in err and "No such file" in err


def test_workdirs_that_cannot_be_used(tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = train(tmp_path / "f")
    assert code == 2 and "is a file; give a folder" in err
    code, _, err = train(tmp_path / "f" / "sub")
    assert code == 2 and "cannot create the folder" in err and "checkpoint" not in err


def test_tiles_and_overlaps_that_make_no_sense(tmp_path, model_file):
    write_image(tmp_path / "a.png", photo("chelsea", 20, 24))
    args = ["-m", "jaxsr.infer", "--weights", model_file, "--input", tmp_path / "a.png", "--output", tmp_path / "o.png"]
    code, _, err = cli(*args, "--tile", "8")
    assert code == 2 and "tile 8 is smaller than 32 px" in err
    code, _, err = cli(*args, "--tile-overlap", "-4")
    assert code == 2 and "--tile-overlap must be >= 0" in err


def test_images_too_large_are_refused_before_the_work(tmp_path, model_file):
    big = tmp_path / "big"
    big.mkdir()
    cv2.imwrite(str(big / "huge.png"), np.zeros((16000, 16000), np.uint8))  # x4: 64000^2 x 3 floats, ~49 GiB
    code, _, err = cli("-m", "jaxsr.infer", "--weights", model_file, "--input", big, "--output", tmp_path / "o")
    assert code == 1 and "its output needs" in err and "of memory available" in err
    assert not os.listdir(tmp_path / "o")
    cv2.imwrite(str(big / "huge.png"), np.zeros((4000, 4000), np.uint8))  # its output (4 GiB) fits, one whole forward does not
    code, _, err = cli("-m", "jaxsr.infer", "--weights", model_file, "--input", big / "huge.png", "--output", tmp_path / "o.png",
                       "--tile", "0")
    assert code == 1 and "whole-image inference of 4000x4000 needs about" in err and "--tile auto" in err


def test_weight_files_that_are_not_weights_are_named(tmp_path):
    net = torch.nn.Linear(3, 3)
    opt = torch.optim.Adam(net.parameters())
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [10, 20])
    torch.save({"epoch": 1, "iter": 100, "optimizers": [opt.state_dict()], "schedulers": [sched.state_dict()]}, tmp_path / "100.state")
    code, _, err = cli("-m", "convert.from_pth", tmp_path / "100.state", tmp_path / "o")
    assert code == 2 and "is a BasicSR/traiNNer training state" in err and "net_g_" in err
