"""Clean exits and clean messages (issue: clean exits): a run with data workers leaves no shared memory behind and
prints no Python warning however it ends, and a config file that does not load is named with its line and the
parser's reason, never with a path inside the package."""
import json
import os
import re
import signal
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, cli, interrupt, photo

pytestmark = pytest.mark.usefixtures("quick_compiles")  # tiny runs: XLA compiles more than it runs

PACKAGE = os.path.join(ROOT, "jaxsr")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Four photographs to train on (crops of 96 px) and one to validate on."""
    root = tmp_path_factory.mktemp("photos")
    os.makedirs(root / "train")
    os.makedirs(root / "val")
    u8 = lambda a: (a * 255).round().astype(np.uint8)  # noqa: E731
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(u8(photo(name, 96, 96))).save(root / "train" / f"{name}.png")
    Image.fromarray(u8(photo("astronaut", 96, 96, top=200, left=200))).save(root / "val" / "val.png")
    return root


def tiny(folders, *more):
    return ["run_train.py", "--config", "configs/demo.py", "--config.model.num_feat=8", "--config.model.num_block=1",
            "--config.model.num_grow_ch=32", "--config.train.batch_size=2", "--config.data.gt_size=32",
            "--config.degrade.gt_size=32", "--config.data.num_workers=2", "--config.train.log_every=1",
            "--config.train.ckpt_every=100", "--config.val.every=0", "--config.val.at_start=False",
            "--config.optim.warmup_steps=2", f"--config.data.train_dir={folders / 'train'}",
            f"--config.data.val_dir={folders / 'val'}", *more]


def segments():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def assert_clean(out, err, before):
    """No Python warning (resource_tracker's leaked shared_memory among them) and no traceback; no segment that this
    run made is left (other tests' workers may hold segments for a moment, so one that goes away is theirs)."""
    text = out + err
    assert "resource_tracker" not in text and "Traceback" not in text, err
    assert not re.search(r"\b\w*Warning\b", text), err
    deadline = time.time() + 10
    while (left := segments() - before) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"shared memory left behind: {sorted(left)}"


@pytest.mark.parametrize("way", ["end", "max_steps", "SIGINT", "SIGTERM", "error", "refusal"])
def test_a_run_with_workers_leaves_no_shared_memory_and_prints_no_python_warning(folders, tmp_path, way):
    wd = tmp_path / "wd"
    before = segments()
    if way in ("SIGINT", "SIGTERM"):
        code, out, err = interrupt(tiny(folders, "--config.train.total_steps=100000", "--workdir", wd), wd,
                                   sig=getattr(signal, way))
        assert code == (130 if way == "SIGINT" else 0) and f"{way}: saving a checkpoint at step" in out, out + err
    elif way == "refusal":  # refused before training: another trainer holds the workdir
        os.makedirs(wd)
        (wd / "trainer.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "since": "now"}))
        code, out, err = cli(*tiny(folders, "--config.train.total_steps=4", "--workdir", wd))
        assert code == 2 and "another trainer is using this workdir" in err, err
    else:
        more = {"end": ["--config.train.total_steps=4"],
                "max_steps": ["--config.train.total_steps=12", "--max_steps=2"],
                "error": ["--config.train.total_steps=12", "--config.optim.lr=1e30", "--config.train.max_nonfinite=1"]}
        code, out, err = cli(*tiny(folders, *more[way], "--workdir", wd))
        assert code == (2 if way == "error" else 0), err
        assert {"end": "done: 4 steps", "max_steps": "stopped at step 2",
                "error": "1 step in a row had NaN/Inf losses"}[way] in out + err, out + err
    assert_clean(out, err, before)


CORPUS = [  # (file name, content, the parser's reason, its line)
    ("flow.yaml", "model: {arch: esrgan\noptim:\n  lr: 1e-4\n", "expected ',' or '}', but got ':'", 2),
    ("list.yaml", "optim:\n  betas: [0.9, 0.99\n", "expected ',' or ']'", 3),
    ("tab.yaml", "optim:\n\tlr: 1e-4\n", "found character '\\t' that cannot start any token", 2),
    ("indent.yaml", "optim:\n  lr: 1e-4\n name: adamw\n", "expected <block end>, but found '<block mapping start>'", 3),
    ("comma.json", '{"optim": {"lr": 1e-4,}}', "Expecting property name enclosed in double quotes", 1),
    ("quote.json", "{'optim': {}}", "Expecting property name enclosed in double quotes", 1),
    ("unclosed.json", '{"optim": {"lr": 1e-4}\n', "Expecting ',' delimiter", 2),
    ("field.yaml", "optim:\n  lr: 1e-4\n  lrr: 2e-4\n", "unknown config field optim.lrr (did you mean optim.lr?)", 3),
    ("type.yaml", "train:\n  batch_size: many\n", "train.batch_size must be a number, got 'many'", 2),
    ("type.json", '{\n "optim": {\n  "lr": "fast"\n }\n}', "optim.lr must be a number, got 'fast'", 3),
    ("bool.yaml", "name: x\nlog:\n  tensorboard: 1\n", "log.tensorboard must be true or false, got 1", 3),
    ("list.json", '{"train": {"total_steps": [4]}}', "train.total_steps must be a number, got [4]", 1),
    ("base.yaml", "# tiny\nbase: x44\n", "base: no recipe named 'x44' and no file", 2),
    ("loop.yaml", "base: loop.yaml\n", "base: loop.yaml is already being read (the bases form a loop)", 1),
    ("basefield.yaml", "base: demo\ntrain:\n  total_step: 4\n", "unknown config field train.total_step (did you mean "
     "train.total_steps?)", 3),
]


@pytest.mark.parametrize("name,content,reason,line", CORPUS, ids=[c[0] for c in CORPUS])
def test_a_config_file_that_does_not_load_is_named_with_its_line_and_the_parsers_reason(tmp_path, name, content,
                                                                                      reason, line):
    path = tmp_path / name
    path.write_text(content)
    code, out, err = cli("run_train.py", "--config", path, "--workdir", tmp_path / "wd")
    assert code == 2 and not out, err
    (message,) = err.strip().splitlines()
    assert message.startswith(f"error: {path}, line {line}") and reason in message, message
    assert PACKAGE not in message and "config.py" not in message, message
    assert not os.path.exists(tmp_path / "wd")


def test_the_command_lines_print_a_warning_as_one_line_of_ours_and_a_bad_crop_as_an_error(folders, tmp_path):
    import warnings

    from jaxsr.archs.esrgan import RRDBNet
    from jaxsr.weights import export

    spec = {"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 8}
    with warnings.catch_warnings(record=True):  # the same warning the command line is to show as one line
        export(RRDBNet(num_feat=8, num_block=1, num_grow_ch=8), spec, tmp_path / "gc8.safetensors")
    for cmd in (["-m", "convert.to_pth", tmp_path / "gc8.safetensors", tmp_path / "gc8.pth"],
                ["-m", "convert.interpolate", "--alpha", "0.5", tmp_path / "gc8.safetensors", tmp_path / "gc8.pth",
                 tmp_path / "mix.safetensors"]):
        code, out, err = cli(*cmd)
        assert code == 0 and err.splitlines() == [
            "warning: num_grow_ch=8: spandrel/chaiNNer assume 32 for ESRGAN and will not load this export (jaxsr, BasicSR "
            "and Real-ESRGAN's scripts will)"], err
    code, out, err = cli("-m", "jaxsr.degrade", "--config", "configs/x4_gan.py", "--input", folders / "train",
                         "--output", tmp_path / "preview", "--crop", "64")
    assert code == 1 and err.splitlines() == ["error: --crop 64 is smaller than the config's degrade.gt_size 256, the "
                                              "crop the pipeline cuts from it; use --crop 256 or more"], err
    assert not os.path.exists(tmp_path / "preview")
