"""Nothing lost under a second trainer, an "allowed" change, a signal in a save, or a typo: the twelve defects found by
trying run_train.py and the converters as careless and unlucky users would, each through the real command lines
(docs/reliability.md lists the promises). Every test here failed on the trainer before these fixes."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import cli, photo

from jaxsr import weights
from jaxsr.imageio import write_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("quick_compiles")  # tiny runs: XLA compiles more than it runs
TINY = [  # a tiny RRDB on 32 px crops of the built-in photographs (validation, where a test turns it on: one small image)
    "--config", "configs/demo.py", "--config.model.num_feat=8", "--config.model.num_block=1", "--config.model.num_grow_ch=8",
    "--config.train.batch_size=4", "--config.data.gt_size=32", "--config.degrade.gt_size=32", "--config.data.num_workers=0",
    "--config.train.total_steps=8", "--config.train.log_every=1", "--config.train.ckpt_every=4", "--config.val.every=0",
    "--config.val.at_start=False", "--config.optim.warmup_steps=2", "--config.data.val_max_size=48",
    "--config.data.val_max_images=1",
]


def train(workdir, *extra):
    return cli("run_train.py", *TINY, *extra, "--workdir", workdir)


def rows(workdir, key="loss"):
    """{step: row} of metrics.jsonl, asserting that its steps strictly increase (no step logged twice, no restart)."""
    recs = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [r["step"] for r in recs if key in r]
    assert steps == sorted(set(steps)), f"metrics.jsonl steps do not strictly increase: {steps}"
    return {r["step"]: r for r in recs if key in r}


def lines(err):
    return [line for line in err.splitlines() if line.strip()]


# ------------------------------------------------------------------------ 1, 4: changes the trainer allows on resume


@pytest.mark.slow
def test_allowed_changes_carry_the_state_over_and_continue_from_the_checkpoint(tmp_path):
    """One run, resumed three times with a change that reshapes its state: a clip that never clips and no EMA train
    exactly as the uninterrupted run; a switch to a plateau schedule continues with a constant lr."""
    code, _, err = train(tmp_path / "ref")
    assert code == 0, err
    want, wd = rows(tmp_path / "ref"), tmp_path / "wd"
    for stop, change in ((2, []), (4, ["--config.optim.clip_grad_norm=1e9"]), (6, ["--config.optim.ema_decay=0.0"])):
        code, out, err = train(wd, *change, "--max_steps", stop)
        assert code == 0, err
        if change:
            assert f"resumed from step {stop - 2}" in out and "reshaped the training state" in out, out
    plateau = ["--config.optim.schedule=plateau", "--config.optim.plateau_patience=100", "--config.val.every=8"]
    code, out, err = train(wd, "--config.optim.ema_decay=0.0", *plateau)
    assert code == 0 and "resumed from step 6" in out and "reshaped the training state" in out, err
    assert not (wd / "checkpoints.damaged").exists()
    got = rows(wd)
    assert sorted(got) == list(range(1, 9))
    for s in range(1, 7):
        assert got[s]["loss"] == pytest.approx(want[s]["loss"], rel=1e-5), s
    assert [got[s]["lr"] for s in (7, 8)] == pytest.approx([2e-3, 2e-3], rel=1e-6)  # plateau has not reduced it


def test_a_new_lr_under_a_plateau_schedule_is_used(tmp_path):
    plateau = ["--config.optim.schedule=plateau", "--config.optim.plateau_patience=100", "--config.val.every=4"]
    code, _, err = train(tmp_path / "wd", *plateau, "--max_steps", "4")
    assert code == 0, err
    code, out, err = train(tmp_path / "wd", *plateau, "--config.optim.lr=5e-4")
    assert code == 0, err
    assert "optim.lr went from 0.002 to 0.0005" in out
    got = rows(tmp_path / "wd")
    assert [got[s]["lr"] for s in range(5, 9)] == pytest.approx([5e-4] * 4, rel=1e-6)


def test_a_state_that_cannot_be_carried_is_refused_in_one_line_and_nothing_moves(tmp_path):
    wd = tmp_path / "wd"
    code, _, err = train(wd, "--max_steps", "4")
    assert code == 0, err
    meta = wd / "checkpoints" / "4" / "meta" / "metadata"  # as an older jaxsr wrote it: without the state's types
    saved = json.loads(meta.read_text())
    del saved["state_types"]
    meta.write_text(json.dumps(saved))
    before = sorted(os.listdir(wd / "checkpoints")), sorted(os.listdir(wd / "models")), (wd / "metrics.jsonl").read_text()
    code, out, err = train(wd, "--config.optim.clip_grad_norm=1.0")
    assert code == 2 and len(lines(err)) == 1, err
    assert "the checkpoint at step 4 does not continue under this config" in err and "optim.clip_grad_norm" in err
    assert "nothing was moved" in err and "damaged" not in err + out
    assert (sorted(os.listdir(wd / "checkpoints")), sorted(os.listdir(wd / "models")), (wd / "metrics.jsonl").read_text()) == before
    assert not (wd / "checkpoints.damaged").exists()
    code, out, err = train(wd, "--max_steps", "4")  # set back: it resumes (nothing to train)
    assert code == 0 and "resumed from step 4" in out, err


@pytest.mark.slow
def test_every_field_listed_as_changeable_resumes_from_the_checkpoint_or_is_refused_before_anything_moves(tmp_path):
    """A property over the whole config: each field not in INCOMPATIBLE_ON_RESUME, changed on resume, either continues
    from the checkpoint's step or is refused before any file moves, never from step 0 (in process, one start each; a
    change that keeps the checkpoint's tree restores as every resume does, one that reshapes it is restored here)."""
    from jaxsr.errors import JaxsrError
    from jaxsr.train import loop
    from jaxsr.train.config import INCOMPATIBLE_ON_RESUME, flatten, get_config, resolve

    wd = tmp_path / "wd"
    code, _, err = train(wd, "--max_steps", "4")
    assert code == 0, err
    frozen = json.loads((wd / "config.json").read_text())
    frozen.pop("history")
    changeable = [k for k in flatten(frozen) if not any(k == f or k.startswith(f + ".") for f in INCOMPATIBLE_ON_RESUME)]
    assert len(changeable) > 100
    listing = lambda: (sorted(os.listdir(wd / "checkpoints")), sorted(os.listdir(wd)))  # noqa: E731
    outcomes = {}
    for field in changeable:
        cfg = get_config(str(wd / "config.json"))
        *parents, leaf = field.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = _changed(node[leaf])
        before = listing()
        try:
            run = loop.start(resolve(cfg), str(wd))
        except JaxsrError:
            assert listing() == before, field  # refused before anything moved
            outcomes[field] = "refused"
            continue
        assert run.resume[0] == 4, field
        if run.carry is not None:
            assert run._restore() == 4, field
            outcomes[field] = "carried"
        else:
            outcomes[field] = "same state"
        run._shutdown()
        run.lock.release()
        assert not (wd / "checkpoints.damaged").exists(), field
    assert sum(v != "refused" for v in outcomes.values()) > len(outcomes) // 2, outcomes
    assert "carried" in outcomes.values(), outcomes


def _changed(value):
    """Another value of the same kind (a valid one where the kind allows it; an invalid one must be refused)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 if value else 0.1
    if isinstance(value, str):
        return {"constant": "plateau", "cosine": "plateau", "linear": "cosine", "cos": "linear", "rel": "abs", "auto": "min", "l1": "l2",
                "skip": "pad", "pad": "skip", "composite": "drop", "drop": "composite"}.get(value, value + "x")
    if isinstance(value, (list, tuple)):
        return [*value[:-1], _changed(value[-1])] if value else [1]
    return "/nonexistent/file" if value is None else value


# ------------------------------------------------------------------------ 2: two trainers on one workdir


def test_two_trainers_on_one_workdir_exactly_one_trains(tmp_path):
    wd = tmp_path / "wd"
    cmd = [sys.executable, "run_train.py", *TINY, "--workdir", str(wd)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert len(lines(refused)) == 1 and "another trainer is using this workdir: process" in refused, refused
    assert sorted(rows(wd)) == list(range(1, 9))
    assert not (wd / "trainer.lock").exists()  # released at the end


def test_a_lock_whose_trainer_is_gone_is_taken_over(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (wd / "trainer.lock").write_text(json.dumps({"pid": gone.pid, "host": os.uname().nodename, "since": "2026-01-01 00:00:00"}))
    code, out, err = train(wd, "--max_steps", "2")
    assert code == 0, err
    assert f"taking over the workdir lock of a trainer that is gone (process {gone.pid}" in out


def test_a_lock_from_another_host_is_taken_over_only_after_it_went_quiet(tmp_path):
    from jaxsr.errors import ConfigError
    from jaxsr.train.workdir import LOCK, STALE_AFTER_S, Lock

    path = tmp_path / LOCK
    path.write_text(json.dumps({"pid": 1, "host": "another-host", "since": "2026-01-01 00:00:00"}))
    with pytest.raises(ConfigError, match="another trainer is using this workdir: process 1 on another-host"):
        Lock(str(tmp_path)).acquire()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(path, (old, old))
    lock = Lock(str(tmp_path))
    lock.acquire()
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()


# ------------------------------------------------------------------------ 3: a signal during a periodic save


def test_a_signal_during_a_periodic_save_is_a_preemption(tmp_path):
    wd = tmp_path / "wd"
    script = ("import os, signal, runpy, sys\nfrom jaxsr.train import checkpoint\norig = checkpoint.Checkpoints.save\n"
              "def save(self, step, *a, **k):\n    orig(self, step, *a, **k)\n"
              "    if step == 4: os.kill(os.getpid(), signal.SIGTERM)\n"
              "checkpoint.Checkpoints.save = save\n"
              f"sys.argv = ['run_train.py', *{TINY!r}, '--workdir', {str(wd)!r}]\n"
              "runpy.run_path('run_train.py', run_name='__main__')\n")
    code, out, err = cli("-c", script)
    assert code == 0 and not err.strip().startswith("error"), err
    assert "SIGTERM: saving a checkpoint at step 4 and exiting" in out
    code, out, err = train(wd, "--max_steps", "4")
    assert code == 0 and "resumed from step 4" in out, err
    assert sorted(rows(wd)) == list(range(1, 5))


# ------------------------------------------------------------------------ 5, 6, 7: configs and validation images


def test_a_misspelt_field_in_a_recipe_is_refused_with_the_right_name(tmp_path):
    recipe = tmp_path / "mine.py"
    recipe.write_text("from jaxsr.recipes import demo\n\n\ndef get_config():\n    c = demo.get_config()\n"
                      "    c.train.total_step = 4\n    return c\n")
    code, out, err = cli("run_train.py", "--config", recipe, "--workdir", tmp_path / "wd")
    assert code == 2 and lines(err) == ["error: unknown config field train.total_step (did you mean train.total_steps?); "
                                        "run with --print_config to see every field"], err
    assert not (tmp_path / "wd" / "checkpoints").exists()


def test_a_partial_yaml_config_keeps_every_other_default_and_trains(tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text("name: demo\ntrain: {total_steps: 4}\n")
    code, out, err = cli("run_train.py", "--config", partial, "--print_config")
    assert code == 0, err
    cfg = json.loads(out)
    assert cfg["train"]["total_steps"] == 4 and cfg["train"]["batch_size"] == 16 and cfg["optim"]["lr"] == 2e-4
    small = tmp_path / "small.yaml"
    small.write_text("name: small\nmodel: {num_feat: 8, num_block: 1, num_grow_ch: 8}\ntrain: {total_steps: 2, batch_size: 2}\n"
                     "degrade: {mode: bicubic, gt_size: 32}\ndata: {gt_size: 32, num_workers: 0}\nval: {every: 0}\n")
    code, out, err = cli("run_train.py", "--config", small, "--workdir", tmp_path / "wd")
    assert code == 0 and "done: 2 steps" in out, err


def test_a_validation_image_smaller_than_the_ssim_window_is_left_out(tmp_path):
    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    for d in (train_dir, val_dir):
        d.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        write_image(train_dir / f"{name}.png", photo(name, 96, 96))
    write_image(val_dir / "tiny.png", photo("rocket", 16, 16))
    write_image(val_dir / "fine.png", photo("camera", 48, 48))
    code, out, err = train(tmp_path / "wd", f"--config.data.train_dir={train_dir}", f"--config.data.val_dir={val_dir}",
                           "--config.val.every=2", "--max_steps", "2", "--config.data.val_max_images=0")
    assert code == 0, err
    assert "validation: tiny is 16x16, too small for SSIM" in out and "validation at step 2" in out and "on 1 image(s)" in out


# ------------------------------------------------------------------------ 8: the full-disk check


def test_a_save_that_fits_is_not_refused(tmp_path):
    """The saver sees the room the old estimate wanted (1.65 x the state's bytes + 256 KiB; the state is about four
    copies of the weights: params, EMA, Adam's two moments), less one byte: a checkpoint of the arrays' bytes and their
    metadata fits in it."""
    import jax
    from flax import nnx

    from jaxsr import archs

    model = archs.build({"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 8})
    weights_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    free = int(1.5 * 4 * weights_bytes * 1.1 + 256 * 1024) - 1
    wd = tmp_path / "wd"
    script = ("import runpy, shutil, sys\nreal = shutil.disk_usage\n"
              f"shutil.disk_usage = lambda p: real(p)._replace(free={free})\n"
              f"sys.argv = ['run_train.py', *{TINY!r}, '--workdir', {str(wd)!r}]\n"
              "runpy.run_path('run_train.py', run_name='__main__')\n")
    code, out, err = cli("-c", script)
    assert code == 0 and "done: 8 steps" in out, err
    sizes = [sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(wd / "checkpoints" / s) for f in fs)
             for s in os.listdir(wd / "checkpoints")]
    assert max(sizes) < free


# ------------------------------------------------------------------------ 9, 10: the converters


def test_to_pth_never_writes_over_its_source(tmp_path):
    from jaxsr.archs import esrgan

    spec = {"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 32}
    folder = tmp_path / "native"
    weights.save_native(folder, esrgan.build(spec), spec)
    before = {f: (folder / f).read_bytes() for f in os.listdir(folder)}
    code, _, err = cli("-m", "convert.to_pth", folder, folder / "weights.safetensors")
    assert code == 2 and len(lines(err)) == 1 and "would replace what is read" in err, err
    export = tmp_path / "m.safetensors"
    assert cli("-m", "convert.to_pth", folder, export)[0] == 0
    code, _, err = cli("-m", "convert.to_pth", export, export)
    assert code == 2 and "is the source" in err, err
    assert {f: (folder / f).read_bytes() for f in os.listdir(folder)} == before


def test_from_pth_reads_a_trainers_net_g_wrapping(tmp_path):
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    opt = torch.optim.Adam(net.parameters())
    net(torch.rand(1, 3, 8, 8)).mean().backward()
    opt.step()
    torch.save({"net_g": net.state_dict(), "optimizer_g": opt.state_dict(), "iter": 5}, tmp_path / "ckpt.pth")
    code, out, err = cli("-m", "convert.from_pth", tmp_path / "ckpt.pth", tmp_path / "out")
    assert code == 0 and "esrgan" in out.lower(), err
    torch.save({"optimizer_g": opt.state_dict(), "iter": 5, "weights_of": {"a": {"b": torch.zeros(2)}}}, tmp_path / "odd.pth")
    code, _, err = cli("-m", "convert.from_pth", tmp_path / "odd.pth", tmp_path / "out2")
    assert code == 2 and "it holds: optimizer_g" in err and "weights_of (1 tensors)" in err, err


# ------------------------------------------------------------------------ 11, 12: reruns and their messages


def test_a_rerun_with_the_frozen_config_says_there_is_nothing_to_train_and_keeps_the_exports(tmp_path):
    wd = tmp_path / "wd"
    code, _, err = train(wd, "--config.train.total_steps=4")
    assert code == 0, err
    shutil.copy(wd / "config.json", tmp_path / "first.json")  # config.json holds the last start's config
    code, _, err = train(wd, "--config.train.total_steps=8")  # a longer run: allowed
    assert code == 0, err
    exports = {f: (wd / "models" / f).read_bytes() for f in os.listdir(wd / "models")}
    stamps = {f: os.path.getmtime(wd / "models" / f) for f in exports}
    time.sleep(1.1)
    code, out, err = cli("run_train.py", "--config", tmp_path / "first.json", "--workdir", wd)  # total_steps=4
    assert code == 0, err
    assert "done:" not in out and "nothing to train: the checkpoint is at step 8 and this run ends at step 4" in out, out
    assert {f: os.path.getmtime(wd / "models" / f) for f in exports} == stamps
    assert sorted(rows(wd)) == list(range(1, 9))


@pytest.mark.parametrize("schedule,note", [(["--config.optim.schedule=multistep", "--config.optim.milestones=(3,)"], False),
                                           (["--config.optim.schedule=cosine"], True)])
def test_the_horizon_note_only_where_the_schedule_runs_to_total_steps(tmp_path, schedule, note):
    wd = tmp_path / "wd"
    code, _, err = train(wd, *schedule, "--max_steps", "2")
    assert code == 0, err
    code, out, err = train(wd, *schedule, "--config.train.total_steps=12", "--max_steps", "2")
    assert code == 0 and "nothing to train" in out, err
    assert ("runs to total_steps, so the lr changes" in out) == note, out
    assert "horizon moves with it" not in out
