"""The training loop. Small builders turn the config into plain values (the objective, optimizers, models,
data, state and compiled steps); `Trainer` resumes if the workdir has a checkpoint, then steps, logs,
validates, checkpoints and exports. `run_train.py` is its command line."""
import json
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.experimental import multihost_utils

from jaxsr import archs, data, evaluate, losses, optim, parallel, weights
from jaxsr.degrade import queue_init, training_pairs
from jaxsr.errors import ConfigError, Diverged, JaxsrError, WeightsError
from jaxsr.files import atomic_write, writable_dir
from jaxsr.imageio import quantize
from jaxsr.infer import upscale
from jaxsr.metrics import mean_over_images
from jaxsr.train import state as state_lib
from jaxsr.train.checkpoint import CheckpointError, Checkpoints
from jaxsr.train.config import flatten, resolve, resume_conflicts
from jaxsr.train.logger import Board, Progress, log, memory_gib, setup
from jaxsr.train.step import make_preview, make_train_step

# ------------------------------------------------------------------------------------------------- builders


def compute_dtype(name):
    if name == "auto":
        return jnp.dtype(jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32)
    if name not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"compute_dtype must be 'auto', 'float32', 'bfloat16' or 'float16' (GPUs without bf16, with loss "
                          f"scaling), got {name!r}")
    return jnp.dtype(name)


def generator_spec(cfg):
    return {**cfg.model.to_dict(), "scale": cfg.scale}


def resolve_model(cfg, workdir):
    """`cfg` with model.arch='auto' replaced by the spec the run will use, so that --print_config and the frozen
    config.json show it: the workdir's config.json on a resume (init_weights is not read again), else the
    init_weights file's hyperparameters."""
    if cfg.model.arch != "auto":
        return cfg
    saved = os.path.join(workdir, "config.json") if workdir else None
    if saved and os.path.exists(saved):
        with open(saved) as f:
            model = json.load(f)["model"]
    elif cfg.init_weights:
        if not os.path.exists(cfg.init_weights):
            raise ConfigError(f"init_weights: no such file or folder: {cfg.init_weights}")
        model = {k: v for k, v in weights.read(cfg.init_weights).spec.items() if k != "scale"}
    else:
        raise ConfigError("model.arch='auto' takes the architecture from init_weights, but init_weights is not set")
    out = ml_collections.ConfigDict(cfg.to_dict(), type_safe=False)
    out.model = ml_collections.ConfigDict(model, type_safe=False)
    return out


def build_generator(cfg, resume_spec=None):
    """(model, spec): from the config, warm-started from init_weights (architecture inferred if arch='auto').

    The file goes through the one load path (`jaxsr.weights.read`): a jaxsr folder loads its own tensors, a
    PyTorch file its renamed ones, with no round trip through the other format. A resumed run passes the spec its
    checkpoint recorded: the weights come from the checkpoint, so init_weights is not read at all.
    """
    dtype, rngs, path = compute_dtype(cfg.compute_dtype), nnx.Rngs(cfg.seed), cfg.init_weights
    if resume_spec is not None:
        return archs.build(resume_spec, rngs=rngs, dtype=dtype), resume_spec
    if not path:
        if cfg.model.arch == "auto":
            raise ConfigError("model.arch='auto' takes the architecture from init_weights, but init_weights is not set")
        spec = generator_spec(cfg)
        return archs.build(spec, rngs=rngs, dtype=dtype), spec
    if not os.path.exists(path):
        raise ConfigError(f"init_weights: no such file or folder: {path}")
    w = weights.read(path, arch=cfg.model.arch)
    spec = {**w.spec, "scale": cfg.scale} if cfg.model.arch == "auto" else generator_spec(cfg)
    if w.spec["scale"] != cfg.scale and cfg.init_strict:
        raise ConfigError(f"init_weights is a x{w.spec['scale']} model but scale={cfg.scale}; set --config.scale={w.spec['scale']}, "
                          f"or --config.init_strict=False to load what fits into a new x{cfg.scale} model")
    model, report = w.build(spec, strict=cfg.init_strict, dtype=dtype, rngs=rngs)
    log.info(f"warm start from {path}: {spec['arch']} x{spec['scale']} ({report.summary()})")
    return model, spec


def build_discriminator(cfg, g_spec):
    """The discriminator of the GAN stage (None without one), from `gan.discriminator`, warm-started from
    `gan.init_weights` (a BasicSR/Real-ESRGAN net_d file) where given."""
    if not cfg.gan.enabled:
        return None
    d = cfg.gan.discriminator
    if d.arch not in archs.names("discriminator"):
        raise ConfigError(f"gan.discriminator.arch must be one of {', '.join(archs.names('discriminator'))}, got {d.arch!r}")
    disc = archs.build({**d.to_dict(), "num_in_ch": g_spec.get("out_ch", 3)}, rngs=nnx.Rngs(cfg.seed + 1))
    if cfg.gan.init_weights:
        if not os.path.exists(cfg.gan.init_weights):
            raise ConfigError(f"gan.init_weights: no such file: {cfg.gan.init_weights}")
        weights.read(cfg.gan.init_weights, arch=d.arch, kind="discriminator").load_into(disc)
    k = cfg.gan.freeze_blocks
    if k:
        n = optim.block_count(d.arch, state_lib.split(disc)[1])
        if not 0 < k < n:
            raise ConfigError(f"gan.freeze_blocks={k}: the {d.arch} discriminator has {n} blocks; freeze 1 to {n - 1} of them")
        log.info(f"FreezeD: the first {k} of {n} discriminator blocks keep their "
                 + ("weights from gan.init_weights" if cfg.gan.init_weights else "initial (random: no gan.init_weights) weights"))
    return disc


def build_objective(cfg):
    """The generator's LossSet, with its adversarial term only when gan.enabled (and then required)."""
    try:
        objective = losses.build_losses(cfg.losses)
    except (ValueError, TypeError) as e:  # the builders name the offending entry
        raise ConfigError(str(e)) from None
    if objective.gan is not None and not cfg.gan.enabled:
        raise ConfigError("losses has a 'gan' term but gan.enabled is False")
    if cfg.gan.enabled and objective.gan is None:
        raise ConfigError("gan.enabled is True but losses has no 'gan' term (add losses.gan=dict(name='gan', weight=0.1))")
    if objective.needs_d_features and objective.gan is None:
        raise ConfigError("loss 'feature_matching' compares the discriminator's features, which only the GAN stage "
                          "trains: add a 'gan' loss entry and set gan.enabled=True")
    if objective.needs_ema and not uses_ema(cfg):
        raise ConfigError("the 'ldl' loss compares with the EMA generator's output: set optim.ema_decay > 0 (e.g. 0.999) "
                          "with a non-schedule-free optimizer")
    return objective.with_gan_ramp(cfg.gan.start_step, cfg.gan.ramp_steps)


def uses_ema(cfg):
    """Whether the run keeps an EMA of G (not under schedule-free, whose eval weights replace it)."""
    return cfg.optim.ema_decay > 0 and not optim.is_schedule_free(cfg.optim)


def d_offset(cfg):
    """D joins at gan.start_step; its schedule runs by train step from 0 (BasicSR steps every scheduler each iteration)."""
    return cfg.gan.start_step // int(cfg.optim_d.accumulate)


def build_optimizers(cfg):
    """(tx for G, tx for D or None): each section with its own schedule; G's with dynamic loss scaling under float16,
    D's with FreezeD's frozen blocks (gan.freeze_blocks)."""
    fp16 = compute_dtype(cfg.compute_dtype) == jnp.float16
    try:
        tx = optim.build_optimizer(cfg.optim, cfg.train.total_steps, loss_scaling=fp16)
        tx_d = None
        if cfg.gan.enabled:
            k = cfg.gan.freeze_blocks
            freeze = optim.frozen_blocks(cfg.gan.discriminator.arch, k) if k else None
            tx_d = optim.build_optimizer(cfg.optim_d, cfg.train.total_steps, freeze=freeze, offset=d_offset(cfg))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return tx, tx_d


@dataclass
class Data:
    splits: dict  # dataset_splits.json: which file went to train/val/test
    train: Any  # the resumable iterator of this host's slices of the global batches
    val: list  # validation images: dict(name, hr, lr)


def build_data(cfg, workdir):
    splits = data.resolve_splits(cfg.data, workdir, cfg.seed)
    per_host = data.host_batch_size(cfg.train.batch_size)
    it = data.train_iterator(cfg.data, splits, cfg.scale, cfg.seed, per_host, jax.process_index(), jax.process_count())
    return Data(splits, it, data.val_items(cfg.data, splits, cfg.scale, "val"))


def build_state(cfg, model, tx, disc=None, tx_d=None, paired=False):
    """A fresh TrainState: models, optimizer states, EMA (not under schedule-free, whose eval weights replace it),
    and Real-ESRGAN's training-pair queue where synthetic pairs use one."""
    queue = None
    if cfg.degrade.mode == "realesrgan" and cfg.degrade.queue_size and not paired:
        queue = queue_init(cfg.degrade, cfg.train.batch_size, (cfg.degrade.gt_size,) * 2 + (3,), cfg.scale)
    return state_lib.create(model, tx, seed=cfg.seed, ema=uses_ema(cfg), disc=disc, tx_d=tx_d, queue=queue)


@dataclass
class Steps:
    g: Callable  # G-only step (the warm-up before gan.start_step, or the whole run without a GAN)
    gan: Callable | None  # G and D step
    preview: Callable  # (state, batch, params) -> training LR, SR, HR of a few samples


def build_steps(cfg, mesh, objective, tx, g_def, eval_def, d_def=None, tx_d=None):
    """The jitted steps: the state is donated and replicated, the batch sharded on the mesh's 'data' axis."""
    repl = parallel.replicated(mesh)
    make_pair = training_pairs(cfg.degrade, cfg.scale)
    total = cfg.train.total_steps
    lr = lambda opt_state: optim.current_lr(cfg.optim, total, opt_state)  # noqa: E731
    lr_d = lambda opt_state: optim.current_lr(cfg.optim_d, total, opt_state, d_offset(cfg))  # noqa: E731
    common = dict(make_pair=make_pair, lr=lr, lr_d=lr_d, ema_def=eval_def,
                  ema_decay=cfg.optim.ema_decay, accumulate=int(cfg.optim.accumulate))

    def jit(step):
        return jax.jit(step, donate_argnums=(0,), out_shardings=(repl, repl))

    g = jit(make_train_step(g_def, objective.without_gan(), tx, **common))
    gan = jit(make_train_step(g_def, objective, tx, d_def=d_def, tx_d=tx_d, **common)) if d_def is not None else None
    preview = jax.jit(make_preview(eval_def, make_pair, d_def=d_def), out_shardings=repl)
    return Steps(g, gan, preview)


def eval_weights(cfg, state):
    """What validation and exports use: schedule-free's x sequence, else the EMA, else the raw params."""
    if optim.is_schedule_free(cfg.optim):
        return optim.eval_params(state.opt_state, state.params)
    return state.ema if state.ema is not None else state.params


# ------------------------------------------------------------------------------------------------- the run


class Trainer:
    def __init__(self, cfg, workdir, resume_from=None):
        """`cfg` as `jaxsr.train.config.resolve` returns it. `resume_from` (a step of this workdir, or a checkpoint
        folder) branches the run there; by default it resumes from the latest checkpoint."""
        self.cfg, self.workdir = cfg, workdir
        self.main = parallel.is_main_process()
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise ConfigError(f"--workdir {workdir} is a file; give a folder (a new one starts a run, an old one resumes it)")
        writable_dir(workdir, ConfigError)
        setup(workdir, self.main)
        n = jax.device_count()
        if cfg.train.batch_size % n:
            raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must be a multiple of the device count ({n})")
        self._check_resume()
        self.mesh = parallel.make_mesh()
        self.stop_requested = False
        # the validation metric that picks the best checkpoints and exports (and drives a plateau schedule)
        self.metric = cfg.val.best_metric
        self.lower_is_better = self.metric in evaluate.LOWER_IS_BETTER
        self.perceptual = evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists)
        self.ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), cfg.train.keep_best, cfg.train.snapshot_every,
                                self.metric, "min" if self.lower_is_better else "max")
        self.branch = None  # (step, folder the later checkpoints, exports and rows moved to) when branching
        # (step, meta) of the checkpoint to continue from: the chosen one, or the newest readable one, or None
        self.resume = self._branch(resume_from) if resume_from is not None else self.ckpt.latest_meta()
        resume_spec = self.resume[1].get("spec") if self.resume else None
        if resume_spec is not None and cfg.init_weights:
            log.info(f"resuming from the checkpoint at step {self.resume[0]}: init_weights ({cfg.init_weights}) is not "
                     "applied, the checkpoint holds the weights")

        objective = build_objective(cfg)
        tx, tx_d = build_optimizers(cfg)
        model, self.spec = build_generator(cfg, resume_spec)
        disc = build_discriminator(cfg, self.spec)
        self.data = build_data(cfg, workdir)

        model.train()  # drop path, batch statistics (DAT); models are built in eval mode
        eval_model = nnx.clone(model)
        eval_model.eval()
        self.eval_def = state_lib.split(eval_model)[0]
        g_def, d_def = state_lib.split(model)[0], (state_lib.split(disc)[0] if disc is not None else None)
        state = build_state(cfg, model, tx, disc, tx_d, paired=self.data.splits.get("train_lr") is not None)
        self.state = parallel.replicate(self.mesh, state)
        self.feature_params = parallel.replicate(self.mesh, objective.feature_params)
        self.steps = build_steps(cfg, self.mesh, objective, tx, g_def, self.eval_def, d_def, tx_d)
        self._feed_plateau = self._plateau_feeder()

        self.board = None  # opened by run(), once it knows where the logs continue
        self.best = None  # the best validation value so far (of self.metric)
        self._bicubic_psnr = None
        self._exported = None  # the step of the last export
        self._write_config()

    def _branch(self, resume_from):
        """Continue from a chosen checkpoint: later checkpoints and the exports are moved aside under the workdir
        (never deleted). A checkpoint folder of another run is copied in first."""
        src = str(resume_from)
        if src.isdigit():
            step = int(src)
        else:
            folder = os.path.abspath(src.rstrip("/"))
            if not (os.path.isdir(folder) and os.path.basename(folder).isdigit()):
                raise ConfigError(f"--resume_from {src}: give a step of this workdir or a checkpoint folder "
                                  "(<workdir>/checkpoints/<step>)")
            step = int(os.path.basename(folder))
            if os.path.dirname(folder) != self.ckpt.directory:
                if self.main:
                    shutil.copytree(folder, os.path.join(self.ckpt.directory, str(step)), dirs_exist_ok=False)
                self.ckpt.manager.reload()
        if step not in self.ckpt.manager.all_steps():
            have = ", ".join(map(str, sorted(self.ckpt.manager.all_steps()))) or "none"
            raise ConfigError(f"--resume_from {src}: no checkpoint at step {step} in {self.ckpt.directory} (there are: {have})")
        meta = self.ckpt.meta(step)
        aside = os.path.join(self.workdir, "branched", f"after-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        later = self.ckpt.move_later(step, os.path.join(aside, "checkpoints"))
        models = os.path.join(self.workdir, "models")
        moved = []
        if self.main and os.path.isdir(models):
            for f in sorted(os.listdir(models)):
                m = re.search(r"_step(\d+)\.", f)
                if m is None or int(m[1]) > step:  # latest/_best exports may hold later weights; later snapshots do
                    os.makedirs(os.path.join(aside, "models"), exist_ok=True)
                    shutil.move(os.path.join(models, f), os.path.join(aside, "models", f))
                    moved.append(f)
        log.info(f"branching at step {step}: {len(later)} later checkpoint(s) and {len(moved)} export file(s) moved to {aside}")
        self.branch = (step, aside)
        return step, meta

    def _check_resume(self):
        """Refuse, before any work, a config that changed a field a resume cannot change."""
        path = os.path.join(self.workdir, "config.json")
        if not os.path.exists(path):
            return
        with open(path) as f:
            saved = json.load(f)
        bad, changed = resume_conflicts(saved, self.cfg)
        if bad:
            before, now = flatten(saved), flatten(json.loads(self.cfg.to_json_best_effort()))
            field = bad[0]
            raise ConfigError(f"this workdir was started with {field}={before.get(field)!r}, now {field}={now.get(field)!r}; "
                              f"that cannot change on resume. Use a new --workdir, or set it back" +
                              (f" (also changed: {', '.join(bad[1:])})" if len(bad) > 1 else ""))
        if changed:
            log.info(f"config changed since the first start (allowed): {', '.join(changed)}")
        if "train.total_steps" in changed and (self.cfg.optim.schedule != "constant" or self.cfg.optim.warmup_steps):
            log.info(f"note: train.total_steps went from {saved['train']['total_steps']} to {self.cfg.train.total_steps}: "
                     f"the {self.cfg.optim.schedule} schedule's horizon moves with it, so the lr changes from here on; "
                     "train.stop_at ends a run early without that")

    def _write_config(self):
        """Freeze the resolved config at the first start that got this far (a failed start writes nothing)."""
        path = os.path.join(self.workdir, "config.json")
        if self.main and not os.path.exists(path):
            atomic_write(path, lambda f: f.write(self.cfg.to_json_best_effort(indent=2)), mode="w")

    def _restore(self):
        """Restore the newest checkpoint that restores, moving damaged ones aside: its step, or None for a fresh start."""
        had = self.resume is not None
        while self.resume is not None:
            step, _ = self.resume
            try:
                self.state, meta = self.ckpt.restore(step, self.state, self.data.train)
            except Exception as e:  # a damaged folder fails in orbax, TensorStore or the pytree structure
                self.ckpt.move_aside(step, e)
                self.resume = self.ckpt.latest_meta()
                continue
            self.best = meta.get("best")
            log.info(f"resumed from step {step} (checkpoint in {self.workdir}/checkpoints)")
            return step
        if had:
            raise ConfigError(f"no checkpoint in {self.workdir}/checkpoints restores (each was moved to "
                              f"{self.workdir}/checkpoints.damaged); rerun the same command to start the run afresh")
        return None

    def run(self):
        cfg = self.cfg
        resumed = self._restore()
        # a killed run logged steps past its checkpoint: they are logged again, so the old rows and events go (a
        # branch keeps the rows of the abandoned steps beside its moved checkpoints)
        self.board = Board(self.workdir, self.main, resumed_at=resumed, aside=self.branch and self.branch[1],
                           wandb_config=cfg if cfg.log.wandb else None)
        if self.branch:
            self.board.event(self.branch[0], {"branched_at": self.branch[0], "moved_to": self.branch[1]})
        step = self._saved = int(parallel.to_host(self.state.step))
        total = cfg.train.total_steps
        end = min(total, cfg.train.stop_at or total)
        log.info(f"{self.spec['arch']} x{cfg.scale}, {sum(x.size for x in jax.tree.leaves(self.state.params)):,} parameters, "
                 f"{jax.device_count()} device(s), global batch {cfg.train.batch_size}; training to step {end}"
                 + (f" of {total}" if end < total else ""))
        if step == 0 and (cfg.init_weights or cfg.val.at_start):
            self.validate(0)
        # Preemption and Ctrl-C: one process sets a flag on SIGTERM/SIGINT (a second Ctrl-C aborts at once); several
        # agree on a step through JAX's coordination service (which watches SIGTERM itself), so that all of them save
        # the same checkpoint.
        multi = jax.process_count() > 1
        previous = {} if multi else {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        progress = Progress(step, end)
        check_every = max(1, min(cfg.train.log_every, cfg.train.max_nonfinite))
        try:
            while step < end and not self.stop_requested:
                if multi and multihost_utils.reached_preemption_sync_point(step):
                    self.stop_requested = "preemption"
                    break
                batch = parallel.global_batch(self.mesh, next(self.data.train))
                if cfg.train.image_every and (step + 1) % cfg.train.image_every == 0:
                    self._log_images(step + 1, batch)
                fn = self.steps.gan if (self.steps.gan and step >= cfg.gan.start_step) else self.steps.g
                self.state, m = fn(self.state, batch, self.feature_params)
                step += 1
                if step % cfg.train.log_every == 0 or step == total:
                    self._log(step, m, progress)
                if step % check_every == 0 and parallel.to_host(self.state.nonfinite) >= cfg.train.max_nonfinite:
                    raise Diverged(f"{int(parallel.to_host(self.state.nonfinite))} steps in a row had NaN/Inf losses or gradients (each was skipped). "
                                   "Lower the learning rate, enable optim.clip_grad_norm, or use compute_dtype='float32'; "
                                   f"the last good checkpoint is in {self.workdir}/checkpoints")
                if cfg.val.every and (step % cfg.val.every == 0 or step == end):
                    value = self.validate(step)
                    if self._feed_plateau is not None:
                        self.state = self._feed_plateau(self.state, value)
                    self._save(step, value)
                elif step % cfg.train.ckpt_every == 0 or step == end or self.ckpt.is_snapshot(step):
                    self._save(step)
            if self.stop_requested and step < end:
                log.info(f"{self.stop_requested}: saving a checkpoint at step {step} and exiting; rerun the same command to resume")
                self._save(step)
            elif step >= end and self._exported != step:
                self._export(self.eval_model(), None, step)  # every finished run ends with its exports
        except BaseException as e:
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
        except CheckpointError:
            if not quiet:
                raise
        finally:
            self.data.train.close()
            try:
                if self.board is not None:
                    self.board.close()
            except OSError:  # a full disk must not bury the message about it
                pass

    def _on_signal(self, signum, _frame):
        self.stop_requested = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts at once

    def _plateau_feeder(self):
        """(state, metric) -> state with each plateau schedule (G's, D's) told one validation value; None without one."""
        sections = [(k, self.cfg[s]) for k, s in (("opt_state", "optim"), ("d_opt_state", "optim_d"))
                    if self.cfg[s].schedule == "plateau" and getattr(self.state, k) is not None]
        if not sections:
            return None

        def feed(state, value):
            return state.replace(**{k: optim.feed_plateau(section, getattr(state, k), value) for k, section in sections})

        return jax.jit(feed, donate_argnums=(0,), out_shardings=parallel.replicated(self.mesh))

    def _save(self, step, value=None):
        meta = {"step": step, "best": self.best, "spec": self.spec}
        self.ckpt.save(step, self.state, self.data.train, meta, value)
        self._saved = step
        if self.ckpt.is_snapshot(step):  # a snapshot to roll back to gets weights-only exports named by its step
            self._export(self.eval_model(), None, step, suffix=f"_step{step}")

    def _log(self, step, m, progress):
        m = {k: float(v) for k, v in parallel.to_host(m).items()}
        text, rate = progress.line(step, m)
        log.info(text)
        self.board.log(step, m)
        self.board.scalars(step, {"it_per_s": rate, **memory_gib()})

    def _log_images(self, step, batch):
        """The training pair this batch makes and the eval weights' output on its LR, as LR|SR|HR rows, with
        histograms of the SR values and of the discriminator's logits."""
        p = parallel.to_host(self.steps.preview(self.state, batch, eval_weights(self.cfg, self.state)))
        self.board.images(step, "train/lr_sr_hr", p["lq"], p["sr"], p["gt"])
        for k in ("sr", "d_fake", "d_real"):
            if k in p:
                self.board.histogram(step, f"train/{k}", p[k])

    # ------------------------------------------------------------------------------------ validation

    def eval_model(self):
        params = parallel.to_host(eval_weights(self.cfg, self.state))
        return nnx.merge(self.eval_def, params, parallel.to_host(self.state.buffers))

    def validate(self, step):
        """PSNR/SSIM (and LPIPS/DISTS where val.lpips/val.dists name their weights) on the val images as
        `jaxsr.evaluate` measures them (8-bit, Y channel, crop = scale), then exports; returns val.best_metric."""
        model, scale = self.eval_model(), self.cfg.scale
        t = time.perf_counter()
        scores, shown = [], []
        for item in self.data.val:
            sr = upscale(model, item["lr"])
            scores.append(evaluate.score({"sr": sr}, item["hr"], scale, perceptual=self.perceptual)["sr"])
            if len(shown) < 4:
                shown.append((item["lr"], quantize(sr), item["hr"]))
        values = {k: mean_over_images([s[k] for s in scores]) for k in ("psnr", "ssim", *self.perceptual)}
        extra = "".join(f", {k.upper()} {values[k]:.4f}" for k in self.perceptual)
        log.info(f"validation at step {step}: PSNR {values['psnr']:.3f} dB, SSIM {values['ssim']:.4f}{extra} on "
                 f"{len(self.data.val)} image(s) (bicubic: PSNR {self.bicubic_psnr():.3f} dB; {time.perf_counter() - t:.1f} s)")
        self.board.log(step, values, prefix="val/")
        if shown:
            self.board.images(step, "val/lr_sr_hr", *zip(*shown))
        self._export(model, values[self.metric], step)
        self.board.flush()
        return values[self.metric]

    def bicubic_psnr(self):
        """The baseline to beat: MATLAB-bicubic upscaling of the same LR, measured the same way (computed once)."""
        if self._bicubic_psnr is None:
            s = self.cfg.scale
            self._bicubic_psnr = mean_over_images(
                [evaluate.score({"b": evaluate.bicubic(it["lr"], s)}, it["hr"], s)["b"]["psnr"] for it in self.data.val])
        return self._bicubic_psnr

    def _export(self, model, value, step, suffix=""):
        """models/<name>_x<s><suffix>.pth/.safetensors (the eval weights), and the _best ones when `value` (of
        val.best_metric) is a new best."""
        if not suffix:
            self._exported = step
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
                for ext in (".pth", ".safetensors"):
                    weights.export(model, self.spec, b + ext)
                if self.cfg.export.onnx:
                    from jaxsr.deploy import export_onnx

                    done = export_onnx(model, self.spec, b + ".onnx", fp16=self.cfg.export.onnx_fp16)
                    log.info(f"{os.path.basename(b)}.onnx: {done.verification.line()}")
        except WeightsError as e:
            log.info(f"warning: export at step {step} failed, training goes on: {e}")


def train(cfg, workdir, resume_from=None):
    """Train (or resume) the run of `cfg` in `workdir`; returns the last step."""
    return Trainer(resolve_model(resolve(cfg), workdir), workdir, resume_from).run()


def fast_dev_run(cfg):
    """Check a recipe end to end before a long run, in a temporary folder that is removed afterwards: two train
    steps, a validation on one image, a checkpoint saved and restored, and the exports loaded back."""
    import tempfile

    from jaxsr.train.logger import peak_memory_gib

    tmp = tempfile.mkdtemp(prefix="jaxsr-fast-dev-run-")
    c = ml_collections.ConfigDict(cfg.to_dict(), type_safe=False)
    c.train.update(stop_at=2, log_every=1, image_every=0, snapshot_every=0)
    c.val.update(every=2, at_start=False)
    c.data.val_max_images = 1
    try:
        first = Trainer(c, tmp)
        first.run()
        rows = [json.loads(line) for line in open(os.path.join(tmp, "metrics.jsonl"))]
        again = Trainer(c, tmp)  # a second start resumes: the checkpoint at step 2 restores
        if again.resume is None or again.run() != 2:
            raise ConfigError("fast dev run: the checkpoint saved at step 2 did not restore")
        exports = sorted(os.listdir(os.path.join(tmp, "models")))
        for f in exports:
            weights.read(os.path.join(tmp, "models", f)).build()
        losses_seen = ", ".join(f"{r['loss']:.4g}" for r in rows if "loss" in r)
        psnr = next(r["val_psnr"] for r in rows if "val_psnr" in r)
        log.info(f"fast dev run passed: 2 train steps (loss {losses_seen}), validation on 1 image (PSNR {psnr:.2f} dB), "
                 f"a checkpoint saved and restored at step 2, exports {', '.join(exports)} loaded back; "
                 f"peak memory {peak_memory_gib():.2f} GiB. Removed {tmp}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
