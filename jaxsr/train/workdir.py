"""What the loop does to a workdir before training, each a function it calls (building a run moves no file):
check that it can be used, refuse a resume whose config cannot continue, branch at a chosen checkpoint, and freeze
the resolved config at the first start."""
import json
import os
import re
import shutil
import time
from jaxsr.errors import ConfigError
from jaxsr.files import atomic_write, writable_dir
from jaxsr.train.config import flatten, resume_conflicts
from jaxsr.train.logger import log, setup


def prepare(workdir, main):
    """A usable workdir (created if new), with the console mirrored to its train.log."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir {workdir} is a file; give a folder (a new one starts a run, an old one resumes it)")
    writable_dir(workdir, ConfigError)
    setup(workdir, main)


def check_resume(cfg, workdir):
    """Refuse, before any work, a config that changed a field a resume cannot change; say which others changed."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    saved.setdefault("kind", "sr")  # workdirs from before training kinds
    bad, changed = resume_conflicts(saved, cfg)
    if bad:
        before, now = flatten(saved), flatten(json.loads(cfg.to_json_best_effort()))
        field = bad[0]
        raise ConfigError(f"this workdir was started with {field}={before.get(field)!r}, now {field}={now.get(field)!r}; "
                          f"that cannot change on resume. Use a new --workdir, or set it back" +
                          (f" (also changed: {', '.join(bad[1:])})" if len(bad) > 1 else ""))
    if changed:
        log.info(f"config changed since the first start (allowed): {', '.join(changed)}")
    if "train.total_steps" in changed and (cfg.optim.schedule != "constant" or cfg.optim.warmup_steps):
        log.info(f"note: train.total_steps went from {saved['train']['total_steps']} to {cfg.train.total_steps}: "
                 f"the {cfg.optim.schedule} schedule's horizon moves with it, so the lr changes from here on; "
                 "train.stop_at ends a run early without that")


def resume_point(ckpt, resume_from, main):
    """(step, meta) of the checkpoint `--resume_from` names: a step of this workdir, or a checkpoint folder of another
    run, which is copied in first."""
    src = str(resume_from)
    if src.isdigit():
        step = int(src)
    else:
        folder = os.path.abspath(src.rstrip("/"))
        if not (os.path.isdir(folder) and os.path.basename(folder).isdigit()):
            raise ConfigError(f"--resume_from {src}: give a step of this workdir or a checkpoint folder "
                              "(<workdir>/checkpoints/<step>)")
        step = int(os.path.basename(folder))
        if os.path.dirname(folder) != ckpt.directory:
            if main:
                shutil.copytree(folder, os.path.join(ckpt.directory, str(step)), dirs_exist_ok=False)
            ckpt.manager.reload()
    if step not in ckpt.manager.all_steps():
        have = ", ".join(map(str, sorted(ckpt.manager.all_steps()))) or "none"
        raise ConfigError(f"--resume_from {src}: no checkpoint at step {step} in {ckpt.directory} (there are: {have})")
    return step, ckpt.meta(step)


def branch(workdir, ckpt, step, main):
    """The run continues from the checkpoint at `step`: later checkpoints and the exports that may hold later weights
    move aside under the workdir (never deleted). Returns that folder."""
    aside = os.path.join(workdir, "branched", f"after-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    later = ckpt.move_later(step, os.path.join(aside, "checkpoints"))
    models = os.path.join(workdir, "models")
    moved = []
    if main and os.path.isdir(models):
        for f in sorted(os.listdir(models)):
            m = re.search(r"_step(\d+)\.", f)
            if m is None or int(m[1]) > step:  # latest/_best exports may hold later weights; later snapshots do
                os.makedirs(os.path.join(aside, "models"), exist_ok=True)
                shutil.move(os.path.join(models, f), os.path.join(aside, "models", f))
                moved.append(f)
    log.info(f"branching at step {step}: {len(later)} later checkpoint(s) and {len(moved)} export file(s) moved to {aside}")
    return aside


def freeze_config(cfg, workdir, main):
    """Freeze the resolved config at the first start that got this far (a failed start writes nothing)."""
    path = os.path.join(workdir, "config.json")
    if main and not os.path.exists(path):
        atomic_write(path, lambda f: f.write(cfg.to_json_best_effort(indent=2)), mode="w")
