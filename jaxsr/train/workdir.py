"""What the loop does to a workdir before training, each a function it calls (building a run moves no file):
check that it can be used and lock it, refuse a resume whose config cannot continue (by field, then by the
checkpoint's state), branch at a chosen checkpoint, and write the config of this start."""
import json
import os
import re
import shutil
import socket
import time

import jax
import jax.numpy as jnp
import numpy as np
from jaxsr import optim
from jaxsr.errors import ConfigError
from jaxsr.files import atomic_write, writable_dir
from jaxsr.train.checkpoint import CheckpointError, carry_plan
from jaxsr.train.config import flatten, resume_conflicts
from jaxsr.train.logger import log, setup


def prepare(workdir, main):
    """A usable workdir (created if new), with the console mirrored to its train.log."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir {workdir} is a file; give a folder (a new one starts a run, an old one resumes it)")
    writable_dir(workdir, ConfigError)
    setup(workdir, main)


LOCK = "trainer.lock"
STALE_AFTER_S = 15 * 60  # a lock from another host whose trainer has not touched it for this long is taken over


class Lock:
    """<workdir>/trainer.lock: which process trains in this workdir (process 0 of a multi-host run holds it). A second
    trainer is refused at start; a lock whose process is gone (this host), or that nobody touched for STALE_AFTER_S
    (another host; `touch` runs at every log line and save), is taken over with a line."""

    def __init__(self, workdir):
        self.path, self.held = os.path.join(workdir, LOCK), False

    def acquire(self):
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder, stale = self._holder()
                if not stale:
                    raise ConfigError(f"another trainer is using this workdir: {holder}. Wait for it to end or stop it, or "
                                      "use another --workdir") from None
                try:  # only one of several starting trainers moves the stale lock away
                    os.rename(self.path, f"{self.path}.stale-{os.getpid()}")
                except FileNotFoundError:
                    continue
                os.remove(f"{self.path}.stale-{os.getpid()}")
                log.info(f"taking over the workdir lock of a trainer that is gone ({holder})")
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            self.held = True
            return
        raise ConfigError(f"could not take the workdir lock {self.path}: other trainers are starting in this workdir")

    def _holder(self):
        """(who holds the lock, in words; whether it is stale)."""
        try:
            with open(self.path) as f:
                h = json.load(f)
            age = time.time() - os.path.getmtime(self.path)
        except (OSError, ValueError):  # being written right now, or left half-written by a kill
            try:
                age = time.time() - os.path.getmtime(self.path)
            except OSError:
                return "a trainer that just ended", True
            return "a trainer that is starting", age > 10
        who = f"process {h['pid']} on {h['host']}, since {h['since']}"
        if h["host"] != socket.gethostname():
            return who + f", last active {age:.0f} s ago", age > STALE_AFTER_S
        if h["pid"] == os.getpid():  # an earlier run of this process that was never run to its end
            return who, True
        try:
            os.kill(h["pid"], 0)
        except ProcessLookupError:
            return who, True
        except PermissionError:  # alive, another user's
            pass
        return who, False

    def touch(self):
        if self.held:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self):
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except OSError:
                pass


def saved_config(workdir):
    """The config of the workdir's last start (None before the first), without its history."""
    saved = _config_file(workdir)
    if saved is None:
        return None
    saved.pop("history", None)
    saved.setdefault("kind", "sr")  # workdirs from before training kinds
    return saved


def _config_file(workdir):
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_resume(cfg, workdir):
    """Refuse, before any work, a config that changed a field a resume cannot change; say which others changed.
    Returns {field: [before, now]} for those (empty on the first start)."""
    saved = saved_config(workdir)
    if saved is None:
        return {}
    bad, changed = resume_conflicts(saved, cfg)
    before, now = flatten(saved), flatten(json.loads(cfg.to_json_best_effort()))
    if bad:
        field = bad[0]
        raise ConfigError(f"this workdir was started with {field}={before.get(field)!r}, now {field}={now.get(field)!r}; "
                          f"that cannot change on resume. Use a new --workdir, or set it back" +
                          (f" (also changed: {', '.join(bad[1:])})" if len(bad) > 1 else ""))
    if changed:
        log.info(f"config changed since the last start (allowed): {', '.join(changed)}")
    total = saved["train"]["total_steps"]
    if "train.total_steps" in changed:
        moved = [s for s in ("optim", "optim_d") if (s == "optim" or cfg.gan.enabled) and
                 _horizon_moves(cfg[s], total, cfg.train.total_steps)]
        if moved:
            log.info(f"note: train.total_steps went from {total} to {cfg.train.total_steps}: "
                     f"{' and '.join(f'{s}.schedule={cfg[s].schedule!r}' for s in moved)} runs to total_steps, so the lr "
                     "changes with it; train.stop_at ends a run early without that")
    return {k: [before.get(k), now.get(k)] for k in changed}


def _horizon_moves(section, old_total, new_total):
    """Whether the section's lr schedule differs between the two horizons at some update up to the later one."""
    last = max(old_total, new_total)
    counts = jnp.arange(0, last + 1, max(1, last // 4096))
    try:
        a, b = (jax.vmap(optim.learning_rate_schedule(section, t))(counts) for t in (old_total, new_total))
    except ValueError:  # no schedule for the old horizon (e.g. cosine shorter than its warm-up)
        return True
    return not np.allclose(a, b, rtol=1e-6, atol=0)


def plan_resume(cfg, workdir, ckpt, resume, kind):
    """How the checkpoint to resume from restores under this config, decided from its state, before any file moves:
    None (the same tree), a `Carry` onto the kind's state (a changed clip, EMA or plateau), or a one-line refusal that
    names the config fields changed since the checkpoint was saved. A checkpoint whose tree does not read is left to
    the restore, which moves it aside as damaged."""
    step, meta = resume
    try:
        saved = ckpt.saved_tree(step)
    except CheckpointError:
        return None
    carry = carry_plan(saved, meta.get("state_types"), kind.state)
    if carry is None:
        return None
    loose = sorted({p.split("/")[0] for p in carry.fresh + carry.dropped} - set(kind.carryable))
    if loose or "state_types" not in meta:
        before = meta.get("config") or saved_config(workdir) or {}
        changed = resume_conflicts(before, cfg)[1] if before else []
        what = (f"its {', '.join(loose)} would start afresh" if loose else
                "it was saved by an older jaxsr, which did not record how to carry its optimizer state over")
        raise ConfigError(f"the checkpoint at step {step} does not continue under this config ({what}); changed since it "
                          f"was saved: {', '.join(changed) or 'nothing in the config'}. Set "
                          f"{'them' if len(changed) > 1 else 'it'} back to resume, or use a new --workdir; nothing was moved")
    return carry


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


DEPLOY = "deploy"  # <workdir>/deploy: a weights-only mirror of each kept checkpoint
STEP_IN_NAME = re.compile(r"_step(\d+)\.")  # snapshot exports and deploy mirrors: <name>_x<s>_step<N>.<ext>


def branch(workdir, ckpt, step, main):
    """The run continues from the checkpoint at `step`: later checkpoints, their deploy mirrors and the exports that may
    hold later weights move aside under the workdir (never deleted). Returns that folder."""
    aside = os.path.join(workdir, "branched", f"after-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    later = ckpt.move_later(step, os.path.join(aside, "checkpoints"))
    moved = []
    for folder in ("models", DEPLOY):
        if not (main and os.path.isdir(os.path.join(workdir, folder))):
            continue
        for f in sorted(os.listdir(os.path.join(workdir, folder))):
            m = STEP_IN_NAME.search(f)
            if (m is None and folder == "models") or (m and int(m[1]) > step):  # latest/_best exports may hold later weights
                os.makedirs(os.path.join(aside, folder), exist_ok=True)
                shutil.move(os.path.join(workdir, folder, f), os.path.join(aside, folder, f))
                moved.append(f)
    log.info(f"branching at step {step}: {len(later)} later checkpoint(s) and {len(moved)} export and mirror file(s) moved to {aside}")
    return aside


def write_config(cfg, workdir, main, step, changed):
    """<workdir>/config.json: the config of this start (what a rerun of the workdir without --config uses) and its
    `history`, one entry per start that got this far: when, at which step, and the fields it changed. A failed start
    writes nothing."""
    if not main:
        return
    history = (_config_file(workdir) or {}).get("history", [])
    if history and not changed:  # a plain resume adds nothing to say
        entry = None
    else:
        entry = {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "step": step, "changed": changed}
    values = {**json.loads(cfg.to_json_best_effort()), "history": history + ([entry] if entry else [])}
    atomic_write(os.path.join(workdir, "config.json"), lambda f: f.write(json.dumps(values, indent=2)), mode="w")
