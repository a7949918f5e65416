"""The one training loop, shared by every training kind (`jaxsr.train.kind`). It owns time: the step counter, run
control (resume, --resume_from, train.stop_at, snapshots, SIGINT/SIGTERM, preemption across hosts, fast-dev-run),
checkpoints and their fallbacks, the NaN guard, logging cadence, validation cadence, best-k and the export names.
`start` does the workdir's side effects and builds the kind; `Loop.run` trains."""
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time

import jax
import ml_collections
from jax.experimental import multihost_utils

from jaxsr import evaluate, hostmem, parallel, weights
from jaxsr.errors import ConfigError, Diverged, JaxsrError, WeightsError
from jaxsr.train import kinds
from jaxsr.train import workdir as workdir_lib
from jaxsr.train.checkpoint import CheckpointError, Checkpoints
from jaxsr.train.logger import Board, Progress, System, log, peak_memory_gib


def start(cfg, workdir, resume_from=None, kind=None, profile=None):
    """The run of `cfg` (as `jaxsr.train.config.resolve` returns it) in `workdir`, ready to `run()`: resuming from the
    latest readable checkpoint, or branching at `resume_from` (a step of this workdir, or a checkpoint folder).
    `kind` (a `jaxsr.train.kind.Kind` class) defaults to the registry's `cfg.kind`; `profile`: (first, last) step to
    trace with jax.profiler (--profile_steps). Every config error comes before any file moves."""
    main = parallel.is_main_process()
    workdir_lib.prepare(workdir, main)
    devices = len(parallel.mesh_devices())
    if cfg.train.batch_size % devices:
        raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must be a multiple of the device count ({devices})")
    lock = workdir_lib.Lock(workdir)
    if main:
        lock.acquire()
    try:
        changed = workdir_lib.check_resume(cfg, workdir)
        mesh = parallel.make_mesh()
        ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), cfg.train.keep_best, cfg.train.snapshot_every,
                           cfg.val.best_metric, "min" if cfg.val.best_metric in evaluate.LOWER_IS_BETTER else "max")
        resume = workdir_lib.resume_point(ckpt, resume_from, main) if resume_from is not None else ckpt.latest_meta()
        built = (kind or kinds.get(cfg.kind))(cfg, workdir, mesh, resume[1] if resume else None)
        carry = workdir_lib.plan_resume(cfg, workdir, ckpt, resume, built) if resume else None
        aside = workdir_lib.branch(workdir, ckpt, resume[0], main) if resume_from is not None else None
        workdir_lib.write_config(cfg, workdir, main, resume[0] if resume else 0, changed)
    except BaseException:
        lock.release()
        raise
    return Loop(cfg, workdir, mesh, built, ckpt, resume, aside, lock, carry, profile)


class Loop:
    def __init__(self, cfg, workdir, mesh, kind, ckpt, resume, branched_to=None, lock=None, carry=None, profile=None):
        """`resume`: (step, meta) of the checkpoint to continue from, or None; `branched_to`: where a branch moved the
        later checkpoints, exports and rows; `lock`: the workdir's trainer lock, released at the end; `carry`: how the
        checkpoint's state maps onto this config's (`plan_resume`); `profile`: (first, last) step to trace."""
        self.cfg, self.workdir, self.mesh, self.kind, self.ckpt = cfg, workdir, mesh, kind, ckpt
        self.resume, self.branched_to, self.lock = resume, branched_to, lock or workdir_lib.Lock(workdir)
        self.carry = carry
        self.main = parallel.is_main_process()
        self.state = kind.state
        self.lower_is_better = cfg.val.best_metric in evaluate.LOWER_IS_BETTER
        self.stop_requested = False
        self.board = None  # opened by run(), once it knows where the logs continue
        self.best = None  # the best validation value so far (of val.best_metric)
        self._saved = None  # the step of the last checkpoint
        self._scores, self._scores_step = {}, None  # the last validation's values, and its step (for the deploy mirror)
        self.system = System()
        self.profile, self._tracing = profile, False

    def run(self):
        """Train to train.stop_at (or total_steps); returns the last step."""
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self):
        cfg, total = self.cfg, self.cfg.train.total_steps
        resumed = self._restore()
        # a killed run logged steps past its checkpoint: they are logged again, so the old rows and events go (a
        # branch keeps the rows of the abandoned steps beside its moved checkpoints)
        self.board = Board(self.workdir, self.main, resumed_at=resumed, aside=self.branched_to,
                           wandb_config=cfg if cfg.log.wandb else None, tensorboard=cfg.log.tensorboard)
        if self.branched_to:
            self.board.event(resumed, {"branched_at": resumed, "moved_to": self.branched_to})
        step = self._saved = int(parallel.to_host(self.state.step))
        end = min(total, cfg.train.stop_at or total)
        if step >= end:
            return self._nothing_to_train(step, end)
        log.info(f"{self.kind.summary(self.state)}, {len(self.mesh.devices.flat)} device(s), global batch {cfg.train.batch_size}; "
                 f"training to step {end}" + (f" of {total}" if end < total else ""))
        if parallel.CPU_CHOICES and jax.default_backend() == "cpu":
            log.info("XLA:CPU: " + "; ".join(parallel.CPU_CHOICES))
        if line := hostmem.chosen():
            log.info(line)
        self.system.start()
        inspecting = self._inspecting()
        if self.profile and not step < self.profile[0] <= end:
            log.info(f"--profile_steps {self.profile[0]}:{self.profile[1]}: this run trains steps {step + 1} to {end}, so "
                     "nothing is traced")
        if step == 0 and (cfg.init_weights or cfg.val.at_start):
            self.validate(0)
        # Preemption and Ctrl-C: one process sets a flag on SIGTERM/SIGINT (a second Ctrl-C aborts at once); several
        # agree on a step through JAX's coordination service (which watches SIGTERM itself), so that all of them save
        # the same checkpoint.
        multi = jax.process_count() > 1
        previous = {} if multi else {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        progress = Progress(step, end)
        try:
            while step < end and not self.stop_requested:
                if multi and multihost_utils.reached_preemption_sync_point(step):
                    self.stop_requested = "preemption"
                    break
                if self.profile and step + 1 == self.profile[0]:
                    self._start_trace()
                t = time.perf_counter()
                batch = parallel.global_batch(self.mesh, next(self.kind.data.train))
                self.system.waited(time.perf_counter() - t)
                if cfg.train.image_every and (step + 1) % cfg.train.image_every == 0:
                    self.kind.log_images(self.state, batch, step + 1, self.board)
                layers = None
                with jax.profiler.StepTraceAnnotation("train", step_num=step + 1) if self._tracing else contextlib.nullcontext():
                    if inspecting and any(n and (step + 1) % n == 0 for n in inspecting):
                        self.state, metrics, layers = self.kind.inspect_step(self.state, batch, step)
                    else:
                        self.state, metrics = self.kind.train_step(self.state, batch, step)
                step += 1
                if self._tracing and step >= self.profile[1]:
                    self._stop_trace()
                self._after_step(step, end, metrics, progress)
                if layers is not None:
                    self._log_layers(step, layers)
            if self._tracing:  # the run ended before the last traced step
                self._stop_trace()
            if self.stop_requested and step < end:
                log.info(f"{self.stop_requested}: saving a checkpoint at step {step} and exiting; rerun the same command to resume")
                if self._saved != step:  # the signal may have come during this step's own save
                    self._save(step)
        except BaseException as e:
            if self._tracing:  # keep what was traced; the error is what the user needs to see
                jax.profiler.stop_trace()
                self._tracing = False
            self._save_after_error(step, e)
            self._shutdown(quiet=True)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._shutdown()
        if step >= total:
            log.info(f"done: {total} steps; exports in {self.workdir}/models")
        elif step >= end:
            log.info(f"stopped at step {step} (train.stop_at); the lr schedule runs to total_steps={total}: rerun with a "
                     f"later train.stop_at, or none, to continue; exports in {self.workdir}/models")
        return step

    def _nothing_to_train(self, step, end):
        """A rerun of a run that already reached its end: say so, and keep its exports (written before its last
        checkpoint; made now only where there are none)."""
        models, base = os.path.join(self.workdir, "models"), f"{self.cfg.name}_x{self.cfg.scale}."
        if not (os.path.isdir(models) and any(f.startswith(base) for f in os.listdir(models))):
            self._export(self.kind.deployable(self.state), None, step)
        limit = f"train.stop_at={self.cfg.train.stop_at}" if end < self.cfg.train.total_steps else \
            f"train.total_steps={self.cfg.train.total_steps}"
        log.info(f"nothing to train: the checkpoint is at step {step} and this run ends at step {end} ({limit}); set "
                 f"{limit.split('=')[0]} above {step} to train on. Exports in {self.workdir}/models")
        self._shutdown()
        return step

    def _after_step(self, step, end, metrics, progress):
        """Log, guard against NaN/Inf, validate and checkpoint on their cadences."""
        cfg = self.cfg
        if step % cfg.train.log_every == 0 or step == cfg.train.total_steps:
            self._log(step, metrics, progress)
        check_every = max(1, min(cfg.train.log_every, cfg.train.max_nonfinite))
        if step % check_every == 0 and (bad := int(parallel.to_host(self.state.nonfinite))) >= cfg.train.max_nonfinite:
            raise Diverged(f"{bad} step{'s' * (bad != 1)} in a row had NaN/Inf losses or gradients (each was skipped). Lower the learning "
                           "rate, enable optim.clip_grad_norm, or use compute_dtype='float32'; the last good checkpoint "
                           f"is in {self.workdir}/checkpoints")
        if cfg.val.every and (step % cfg.val.every == 0 or step == end):
            value = self.validate(step)
            self.state = self.kind.after_validation(self.state, value)
            self._save(step, value)
        elif step % cfg.train.ckpt_every == 0 or step == end or self.ckpt.is_snapshot(step):
            if step == end:  # every finished run ends with its exports, written before its last checkpoint
                self._export(self.kind.deployable(self.state), None, step)
            self._save(step)
        if cfg.val.test_every and (step % cfg.val.test_every == 0 or step == end):
            self._score_apart(step, "test", self.kind.deployable(self.state))

    def _restore(self):
        """Restore the newest checkpoint that restores, moving damaged ones aside: its step, or None for a fresh start."""
        had = self.resume is not None
        while self.resume is not None:
            step, _ = self.resume
            try:
                state, meta = self.ckpt.restore(step, self.state, self.kind.data.train, self.carry)
            except Exception as e:  # a damaged folder fails in orbax or TensorStore
                self.ckpt.move_aside(step, e)
                self.resume = self.ckpt.latest_meta()
                self.carry = self.resume and workdir_lib.plan_resume(self.cfg, self.workdir, self.ckpt, self.resume, self.kind)
                continue
            self.state = self.kind.resumed(state, self.carry, meta.get("config") or workdir_lib.saved_config(self.workdir))
            self.best = meta.get("best")
            log.info(f"resumed from step {step} (checkpoint in {self.workdir}/checkpoints)")
            if self.carry is not None:
                log.info(f"the changed config reshaped the training state: {len(self.carry.mapping)} tensors carried over"
                         + "".join(f", {len(v)} {k} ({_fields(v)})" for k, v in (("started afresh", self.carry.fresh),
                                                                               ("dropped", self.carry.dropped)) if v))
            return step
        if had:
            raise ConfigError(f"no checkpoint in {self.workdir}/checkpoints restores (each was moved to "
                              f"{self.workdir}/checkpoints.damaged); rerun the same command to start the run afresh")
        return None

    def _save(self, step, value=None):
        meta = {"step": step, "best": self.best, "config": json.loads(self.cfg.to_json_best_effort()), **self.kind.meta}
        self.ckpt.save(step, self.state, self.kind.data.train, meta, value)
        self._saved = step
        self.lock.touch()
        self._mirror(step)
        if self.ckpt.is_snapshot(step):  # a snapshot to roll back to gets weights-only exports named by its step
            self._export(self.kind.deployable(self.state), None, step, suffix=f"_step{step}")

    def _mirror(self, step):
        """deploy/<name>_x<s>_step<N>.*: the eval weights of the checkpoint just saved, with its step and validation
        scores, and no optimizer state (what init_weights, load_model, jaxsr.infer and the converters take). A mirror
        lives as long as its checkpoint: those of checkpoints the rotation removed go at the next save and at the end."""
        deployable = self.kind.deployable(self.state)
        if not self.main:
            return
        os.makedirs(os.path.join(self.workdir, workdir_lib.DEPLOY), exist_ok=True)
        info = {"step": step, "metrics": self._scores if self._scores_step == step else {}}
        try:
            self.kind.mirror(deployable, os.path.join(self.workdir, workdir_lib.DEPLOY, f"{self.cfg.name}_x{self.cfg.scale}_step{step}"), info)
        except WeightsError as e:
            log.info(f"warning: the deploy mirror of step {step} failed, training goes on: {e}")
        self._prune_mirrors(keep=step)

    def _prune_mirrors(self, keep=None):
        folder = os.path.join(self.workdir, workdir_lib.DEPLOY)
        if not self.main or not os.path.isdir(folder):
            return
        kept = set(self.ckpt.manager.all_steps()) | {keep}
        for f in os.listdir(folder):
            m = workdir_lib.STEP_IN_NAME.search(f)
            if m and int(m[1]) not in kept:
                os.remove(os.path.join(folder, f))

    def _save_after_error(self, step, error):
        """An unexpected error leaves a checkpoint at its step when the state is still whole (not donated to a step
        that failed), so a rerun resumes there; known failures (a bad config, a full disk, Ctrl-C twice) do not."""
        if isinstance(error, (JaxsrError, KeyboardInterrupt, SystemExit)) or step <= self._saved or jax.process_count() > 1:
            return
        if any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(self.state)):
            return
        try:
            self._save(step)
            self.ckpt.close()
            log.info(f"unexpected error at step {step}: a checkpoint was saved there; rerun the same command to resume")
        except Exception:  # the original error is what the user needs to see
            pass

    def _shutdown(self, quiet=False):
        """Finish the last save (its failure is the run's error, unless another one is on its way) and close."""
        try:
            self.ckpt.close()
            self._prune_mirrors()
        except CheckpointError:
            if not quiet:
                raise
        finally:
            self.kind.data.train.close()
            try:
                if self.board is not None:
                    self.board.close()
            except OSError:  # a full disk must not bury the message about it
                pass

    def _on_signal(self, signum, _frame):
        self.stop_requested = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts at once

    def _log(self, step, metrics, progress):
        metrics = {k: float(v) for k, v in parallel.to_host(metrics).items()}
        text, rate = progress.line(step, metrics)
        system = self.system.scalars()
        log.info(f"{text} | {System.line(system)}")
        self.lock.touch()
        self.board.log(step, metrics)
        self.board.scalars(step, {"it_per_s": rate})
        self.board.scalars(step, system, prefix="system/")

    def _inspecting(self):
        """The cadences of log.gradients and log.parameters, where the kind reports per-layer statistics (else none)."""
        every = (self.cfg.log.gradients, self.cfg.log.parameters)
        if not any(every):
            return ()
        if not hasattr(self.kind, "inspect_step"):
            log.info(f"the {self.cfg.kind} kind reports no per-layer statistics: log.gradients and log.parameters log nothing")
            return ()
        return every

    def _log_layers(self, step, layers):
        """The per-layer statistics due at `step`: gradients' (norms, update/weight ratios) and parameters' (norms) as
        one metrics.jsonl row and TensorBoard scalars, and their histograms where the kind returned them."""
        due = [n and step % n == 0 for n in (self.cfg.log.gradients, self.cfg.log.parameters)]
        wanted = (("grad_norm/", "update_ratio/", "grad_hist/") if due[0] else ()) + (("param_norm/", "param_hist/") if due[1] else ())
        layers = {k: v for k, v in parallel.to_host(layers).items() if k.startswith(wanted)}
        self.board.log(step, {k: v for k, v in layers.items() if "_hist/" not in k}, prefix="")
        for k, v in layers.items():
            if "_hist/" in k:
                self.board.histogram(step, k, v)

    def _start_trace(self):
        self._trace_dir = os.path.join(self.workdir, "profile")
        jax.profiler.start_trace(self._trace_dir, create_perfetto_trace=True)
        self._tracing = True

    def _stop_trace(self):
        """End the trace once the traced steps have finished on the device, and say where it is and how to open it."""
        jax.block_until_ready(self.state)
        jax.profiler.stop_trace()
        self._tracing = False
        first, last = self.profile
        traces = sorted(os.path.join(r, f) for r, _, fs in os.walk(self._trace_dir) for f in fs if f.endswith(".trace.json.gz"))
        log.info(f"profile of steps {first}-{last} written to {self._trace_dir}: open it with `tensorboard --logdir "
                 f"{self._trace_dir}` (the Profile tab, pip install tensorboard-plugin-profile)"
                 + (f", or load {traces[-1]} at https://ui.perfetto.dev" if traces else ""))

    def _score_apart(self, step, split, deployable):
        """Scores on a set that validation does not use for best-k ('test', or a name of val.extra), logged as <split>_*."""
        t = time.perf_counter()
        scores = self.kind.validate(deployable, split)
        log.info(f"{'test split' if split == 'test' else split} at step {step}: {scores.line}; {time.perf_counter() - t:.1f} s")
        self.board.log(step, scores.values, prefix=f"{split}/")
        self.board.flush()

    def validate(self, step):
        """The kind's scores on the validation set, logged, then the exports; returns val.best_metric's value."""
        t = time.perf_counter()
        deployable = self.kind.deployable(self.state)
        scores = self.kind.validate(deployable)
        log.info(f"validation at step {step}: {scores.line}; {time.perf_counter() - t:.1f} s")
        self.board.log(step, scores.values, prefix="val/")
        if scores.images:
            self.board.images(step, "val/lr_sr_hr", *zip(*scores.images))
        value = scores.values[self.cfg.val.best_metric]
        self._scores, self._scores_step = {k: float(v) for k, v in scores.values.items()}, step
        for name in self.cfg.val.extra:
            self._score_apart(step, name, deployable)
        self._export(deployable, value, step)
        self.board.flush()
        return value

    def _export(self, deployable, value, step, suffix=""):
        """models/<name>_x<s><suffix>.* (the kind's eval weights), and the _best ones when `value` (of val.best_metric)
        is a new best. A failed export is reported and training goes on."""
        if not self.main:
            return
        os.makedirs(os.path.join(self.workdir, "models"), exist_ok=True)
        base = os.path.join(self.workdir, "models", f"{self.cfg.name}_x{self.cfg.scale}")
        targets = [base + suffix]
        if value is not None and (self.best is None or (value < self.best if self.lower_is_better else value > self.best)):
            self.best = value
            targets.append(base + "_best")
        try:
            for b in targets:
                self.kind.export(deployable, b)
        except WeightsError as e:
            log.info(f"warning: export at step {step} failed, training goes on: {e}")


def _fields(paths):
    """The state fields and NamedTuple-free prefixes of some leaf paths, in a few words."""
    heads = sorted({"/".join(p.split("/")[:2]) for p in paths})
    return ", ".join(heads[:4]) + (" ..." if len(heads) > 4 else "")


def fast_dev_run(cfg):
    """Check a recipe end to end before a long run, in a temporary folder that is removed afterwards: two train
    steps, a validation on one image, a checkpoint saved and restored, and the exports loaded back."""
    tmp = tempfile.mkdtemp(prefix="jaxsr-fast-dev-run-")
    c = ml_collections.ConfigDict(cfg.to_dict(), type_safe=False)
    c.train.update(stop_at=2, log_every=1, image_every=0, snapshot_every=0)
    c.val.update(every=2, at_start=False)
    c.data.val_max_images = 1
    try:
        start(c, tmp).run()
        rows = [json.loads(line) for line in open(os.path.join(tmp, "metrics.jsonl"))]
        again = start(c, tmp)  # a second start resumes: the checkpoint at step 2 restores
        if again.resume is None or again.run() != 2:
            raise ConfigError("fast dev run: the checkpoint saved at step 2 did not restore")
        exports = sorted(os.listdir(os.path.join(tmp, "models")))
        for f in exports:
            weights.read(os.path.join(tmp, "models", f)).build()
        losses_seen = ", ".join(f"{r['loss']:.4g}" for r in rows if "loss" in r)
        metric = c.val.best_metric
        value = next(r[f"val_{metric}"] for r in rows if f"val_{metric}" in r)
        log.info(f"fast dev run passed: 2 train steps (loss {losses_seen}), validation on 1 image ({metric.upper()} "
                 f"{value:.4g}), a checkpoint saved and restored at step 2, exports {', '.join(exports)} loaded back; "
                 f"peak memory {peak_memory_gib():.2f} GiB. Removed {tmp}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
