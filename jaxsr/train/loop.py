"""The training loop: build everything from the config, resume if the workdir has a checkpoint, step,
log, validate, checkpoint and export. `run_train.py` is its command line."""
import json
import math
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from convert import pthfile, registry
from convert.mapping import WeightsError, load_state_dict
from jaxsr import data, losses as losses_lib, metrics, optim, parallel
from jaxsr.archs import build_model
from jaxsr.archs.discriminators import UNetDiscriminatorSN, VGGStyleDiscriminator, load_discriminator
from jaxsr.degrade import imresize, queue_init
from jaxsr.infer import upscale
from jaxsr.models import SPEC_FILE, export_torch, load_native
from jaxsr.train import state as state_lib
from jaxsr.train.checkpoint import Checkpoints
from jaxsr.train.config import flatten, resume_conflicts
from jaxsr.train.logger import Board, Progress, log, setup
from jaxsr.train.step import make_train_step


class ConfigError(ValueError):
    """A config that cannot run; the message names the field and what to do."""


class Diverged(RuntimeError):
    """Too many consecutive non-finite steps."""


def _dtype(name):
    if name == "auto":
        return jnp.dtype(jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32)
    if name not in ("float32", "bfloat16"):
        raise ConfigError(f"compute_dtype must be 'auto', 'float32' or 'bfloat16', got {name!r}")
    return jnp.dtype(name)


def generator_spec(cfg):
    spec = {k: v for k, v in cfg.model.to_dict().items()}
    spec["scale"] = cfg.scale
    return spec


def build_generator(cfg):
    """(model, spec): from the config, warm-started from init_weights (architecture inferred if arch='auto')."""
    dtype = _dtype(cfg.compute_dtype)
    path = cfg.init_weights
    if not path:
        if cfg.model.arch == "auto":
            raise ConfigError("model.arch='auto' takes the architecture from init_weights, but init_weights is not set")
        return build_model(generator_spec(cfg), rngs=nnx.Rngs(cfg.seed), dtype=dtype), generator_spec(cfg)
    if not os.path.exists(path):
        raise ConfigError(f"init_weights: no such file or folder: {path}")
    if os.path.isdir(path) and os.path.exists(os.path.join(path, SPEC_FILE)):
        src, file_spec = load_native(path)
        sd = {k: v for k, v in registry.bridge_for_arch(file_spec["arch"]).export(src, file_spec).items()}
    else:
        sd, _ = pthfile.read_state_dict(path)
    bridge = registry.detect(sd, "auto" if cfg.model.arch == "auto" else cfg.model.arch)
    file_spec = bridge.infer_spec(sd)
    spec = file_spec if cfg.model.arch == "auto" else generator_spec(cfg)
    if spec["scale"] != cfg.scale:
        if cfg.init_strict:
            raise ConfigError(f"init_weights is a x{spec['scale']} model but scale={cfg.scale}; set --config.scale={spec['scale']}, "
                              "or --config.init_strict=False to load what fits into a new x{cfg.scale} model")
        spec = {**spec, "scale": cfg.scale}
    model = build_model(spec, rngs=nnx.Rngs(cfg.seed), dtype=dtype)
    report = load_state_dict(model, bridge.to_model_keys(sd), strict=cfg.init_strict)
    log.info(f"warm start from {path}: {spec['arch']} x{spec['scale']} ({report.summary()})")
    return model, spec


def build_discriminator(cfg):
    d = cfg.gan.discriminator
    rngs = nnx.Rngs(cfg.seed + 1)
    if d.arch == "unet":
        disc = UNetDiscriminatorSN(3, d.num_feat, d.get("skip_connection", True), rngs=rngs)
    elif d.arch == "vgg":
        disc = VGGStyleDiscriminator(3, d.num_feat, d.get("input_size", 128), rngs=rngs)
    else:
        raise ConfigError(f"gan.discriminator.arch must be 'unet' or 'vgg', got {d.arch!r}")
    if cfg.gan.init_weights:
        if not os.path.exists(cfg.gan.init_weights):
            raise ConfigError(f"gan.init_weights: no such file: {cfg.gan.init_weights}")
        load_discriminator(disc, cfg.gan.init_weights)
    return disc


def eval_weights(cfg, state):
    """What validation and exports use: schedule-free's x sequence, else the EMA, else the raw params."""
    if cfg.optim.name == "schedule_free_adamw":
        return optim.eval_params(state.opt_state, state.params)
    return state.ema if state.ema is not None else state.params


class Trainer:
    def __init__(self, cfg, workdir):
        self.cfg, self.workdir = cfg, workdir
        self.main = parallel.is_main_process()
        setup(workdir, self.main)
        self._check(cfg)
        self._check_resume()
        self.mesh = parallel.make_mesh()
        self.stop_requested = False

        self.splits = data.resolve_splits(cfg.data, workdir, cfg.seed)
        self.per_host = data.host_batch_size(cfg.train.batch_size)
        self.data_iter = data.train_iterator(cfg.data, self.splits, cfg.scale, cfg.seed, self.per_host,
                                             jax.process_index(), jax.process_count())
        self.val = data.val_items(cfg.data, self.splits, cfg.scale, "val")

        model, self.spec = build_generator(cfg)
        model.train()  # drop path, batch statistics (DAT); models are built in eval mode
        self.g_def = state_lib.split(model)[0]
        eval_model = nnx.clone(model)
        eval_model.eval()
        self.eval_def = state_lib.split(eval_model)[0]
        try:
            self.losses = losses_lib.build_losses(cfg.losses)
            tx = optim.build_optimizer(cfg.optim, cfg.train.total_steps)
            tx_d = optim.build_optimizer(cfg.optim_d, cfg.train.total_steps) if cfg.gan.enabled else None
        except ValueError as e:  # the builders name the offending field
            raise ConfigError(str(e)) from None
        if self.losses.gan is not None and not cfg.gan.enabled:
            raise ConfigError("losses has a 'gan' term but gan.enabled is False")
        if cfg.gan.enabled and self.losses.gan is None:
            raise ConfigError("gan.enabled is True but losses has no 'gan' term (add losses.gan=dict(name='gan', weight=0.1))")
        disc = d_def = None
        if cfg.gan.enabled:
            disc = build_discriminator(cfg)
            d_def = state_lib.split(disc)[0]
        queue = None
        if cfg.degrade.mode == "realesrgan" and cfg.degrade.queue_size and self.splits.get("train_lr") is None:
            queue = queue_init(cfg.degrade, cfg.train.batch_size, (cfg.degrade.gt_size,) * 2 + (3,), cfg.scale)
        state = state_lib.create(model, tx, seed=cfg.seed, ema=optim.ema_decay(cfg.optim) > 0 and cfg.optim.name != "schedule_free_adamw",
                                 disc=disc, tx_d=tx_d, queue=queue)
        self.state = parallel.replicate(self.mesh, state)
        self.frozen = parallel.replicate(self.mesh, self.losses.frozen)

        repl = parallel.replicated(self.mesh)
        jit = lambda f: jax.jit(f, donate_argnums=(0,), out_shardings=(repl, repl))  # noqa: E731
        self.g_step = jit(make_train_step(cfg, self.g_def, self.losses, tx, d_def=d_def, tx_d=tx_d, gan_active=False))
        self.gan_step = jit(make_train_step(cfg, self.g_def, self.losses, tx, d_def=d_def, tx_d=tx_d, gan_active=True)) if disc else None

        self.ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), cfg.train.keep_best)
        self.board = Board(workdir, self.main)
        self.best_psnr = -math.inf
        self._write_config()

    @staticmethod
    def _check(cfg):
        n = jax.device_count()
        if cfg.train.batch_size % n:
            raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must be a multiple of the device count ({n})")
        if cfg.train.total_steps <= 0:
            raise ConfigError("train.total_steps must be positive")

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

    def _write_config(self):
        """Freeze the resolved config at the first start that got this far (a failed start writes nothing)."""
        path = os.path.join(self.workdir, "config.json")
        if self.main and not os.path.exists(path):
            with open(path + ".tmp", "w") as f:
                f.write(self.cfg.to_json_best_effort(indent=2))
            os.replace(path + ".tmp", path)

    # ------------------------------------------------------------------------------------------ run

    def run(self):
        cfg = self.cfg
        latest = self.ckpt.latest_step()
        if latest is not None:
            self.state, meta = self.ckpt.restore(latest, self.state, self.data_iter)
            self.best_psnr = meta.get("best_psnr") or -math.inf
            log.info(f"resumed from step {latest} (checkpoint in {self.workdir}/checkpoints)")
        step = int(parallel.to_host(self.state.step))
        total = cfg.train.total_steps
        log.info(f"{self.spec['arch']} x{cfg.scale}, {sum(x.size for x in jax.tree.leaves(self.state.params)):,} parameters, "
                 f"{jax.device_count()} device(s), global batch {cfg.train.batch_size}; training to step {total}")
        if step == 0 and (cfg.init_weights or cfg.val.at_start):
            self.validate(0)
        # Preemption: one process sets a flag on SIGTERM; several agree on a step through JAX's coordination
        # service (which watches SIGTERM itself), so that all of them save the same checkpoint.
        multi = jax.process_count() > 1
        previous = None if multi else signal.signal(signal.SIGTERM, self._on_sigterm)
        progress = Progress(step, total)
        check_every = max(1, min(cfg.train.log_every, cfg.train.max_nonfinite))
        try:
            while step < total and not self.stop_requested:
                if multi and multihost_utils.reached_preemption_sync_point(step):
                    self.stop_requested = True
                    break
                batch = parallel.global_batch(self.mesh, next(self.data_iter))
                fn = self.gan_step if (self.gan_step and step >= cfg.gan.start_step) else self.g_step
                self.state, m = fn(self.state, batch, self.frozen)
                step += 1
                if step % cfg.train.log_every == 0 or step == total:
                    self._log(step, m, progress)
                if step % check_every == 0 and parallel.to_host(self.state.nonfinite) >= cfg.train.max_nonfinite:
                    raise Diverged(f"{int(parallel.to_host(self.state.nonfinite))} steps in a row had NaN/Inf losses or gradients (each was skipped). "
                                   "Lower the learning rate, enable optim.clip_grad_norm, or use compute_dtype='float32'; "
                                   f"the last good checkpoint is in {self.workdir}/checkpoints")
                if cfg.val.every and (step % cfg.val.every == 0 or step == total):
                    psnr = self.validate(step)
                    self._save(step, psnr)
                elif step % cfg.train.ckpt_every == 0 or step == total:
                    self._save(step)
            if self.stop_requested and step < total:
                log.info(f"SIGTERM: saving a checkpoint at step {step} and exiting; rerun the same command to resume")
                self._save(step)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.ckpt.close()
            self.data_iter.close()
            self.board.close()
        if step >= total:
            log.info(f"done: {total} steps; exports in {self.workdir}/models")
        return step

    def _on_sigterm(self, *_):
        self.stop_requested = True

    def _save(self, step, psnr=None):
        meta = {"step": step, "best_psnr": self.best_psnr if math.isfinite(self.best_psnr) else None}
        self.ckpt.save(step, self.state, self.data_iter, meta, psnr)

    def _log(self, step, m, progress):
        m = {k: float(v) for k, v in parallel.to_host(m).items()}
        text, rate = progress.line(step, m)
        log.info(text)
        self.board.scalars(step, {**m, "it_per_s": rate})
        if self.main:
            with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, **m}) + "\n")

    # ------------------------------------------------------------------------------------ validation

    def eval_model(self):
        params = parallel.to_host(eval_weights(self.cfg, self.state))
        return nnx.merge(self.eval_def, params, parallel.to_host(self.state.rest))

    def validate(self, step):
        """PSNR/SSIM (Y channel, crop border = scale, 8-bit output as BasicSR) on the val images, then exports."""
        model = self.eval_model()
        scale, psnrs, ssims, shown = self.cfg.scale, [], [], []
        t = time.perf_counter()
        for item in self.val:
            sr = np.round(upscale(model, item["lr"]) * 255) / 255
            psnrs.append(metrics.psnr(sr, item["hr"], crop_border=scale, y_channel=True))
            ssims.append(metrics.ssim(sr, item["hr"], crop_border=scale, y_channel=True))
            if len(shown) < 4:
                shown.append((item["lr"], sr, item["hr"]))
        psnr, ssim = float(metrics.mean_over_images(psnrs)), float(metrics.mean_over_images(ssims))
        log.info(f"validation at step {step}: PSNR {psnr:.3f} dB, SSIM {ssim:.4f} on {len(self.val)} image(s) "
                 f"(bicubic: PSNR {self.bicubic_psnr():.3f} dB; {time.perf_counter() - t:.1f} s)")
        self.board.scalars(step, {"psnr": psnr, "ssim": ssim}, prefix="val/")
        if shown:
            self.board.images(step, "val/lr_sr_hr", *zip(*shown))
        if self.main:
            with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, "val_psnr": psnr, "val_ssim": ssim}) + "\n")
            self._export(model, psnr, step)
        self.board.flush()
        return psnr

    def bicubic_psnr(self):
        """The baseline to beat: MATLAB-bicubic upscaling of the same LR, scored the same way (computed once)."""
        if not hasattr(self, "_bicubic"):
            ups = [np.round(np.clip(imresize(it["lr"], self.cfg.scale), 0, 1) * 255) / 255 for it in self.val]
            self._bicubic = float(metrics.mean_over_images(
                [metrics.psnr(u, it["hr"], crop_border=self.cfg.scale, y_channel=True) for u, it in zip(ups, self.val)]))
        return self._bicubic

    def _export(self, model, psnr, step):
        os.makedirs(os.path.join(self.workdir, "models"), exist_ok=True)
        base = os.path.join(self.workdir, "models", f"{self.cfg.name}_x{self.cfg.scale}")
        targets = [base]
        if psnr > self.best_psnr:
            self.best_psnr = psnr
            targets.append(base + "_best")
        try:
            for b in targets:
                for ext in (".pth", ".safetensors"):
                    export_torch(model, self.spec, b + ext)
        except WeightsError as e:
            log.info(f"warning: export at step {step} failed, training goes on: {e}")


def train(cfg, workdir):
    return Trainer(cfg, workdir).run()
