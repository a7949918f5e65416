"""The `sr` training kind: one generator (super-resolution or restoration), an optional discriminator (the GAN stage),
Real-ESRGAN's degradations or paired LQ, validated by PSNR/SSIM (and LPIPS/DISTS) against MATLAB-bicubic, exported as
.pth/.safetensors (and ONNX). Its builders return plain values; `SR` puts them together for the loop."""
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxsr import archs, data, evaluate, losses, optim, parallel, weights
from jaxsr.data.sources import list_folder, match_pairs
from jaxsr.degrade import is_mono, mono_validation, queue_init, training_pairs
from jaxsr.errors import ConfigError
from jaxsr.imageio import quantize
from jaxsr.infer import upscale
from jaxsr.metrics import mean_over_images
from jaxsr.train import state as state_lib
from jaxsr.train.kind import Scores
from jaxsr.train.kinds.sr.step import Parts, make_preview, make_train_step
from jaxsr.train.logger import log

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


def check_discriminator(cfg):
    d = cfg.gan.discriminator
    if cfg.gan.enabled and d.arch not in archs.names("discriminator"):
        raise ConfigError(f"gan.discriminator.arch must be one of {', '.join(archs.names('discriminator'))}, got {d.arch!r}")
    if cfg.gan.enabled and d.arch == "acd" and cfg.kind != "sftgan":
        raise ConfigError("gan.discriminator.arch='acd' also classifies each image's category, which only kind='sftgan' "
                          "feeds it: use kind='sftgan', or another discriminator")


def build_discriminator(cfg, g_spec):
    """The discriminator of the GAN stage (None without one), from `gan.discriminator`, warm-started from
    `gan.init_weights` (a BasicSR/Real-ESRGAN net_d file) where given."""
    if not cfg.gan.enabled:
        return None
    check_discriminator(cfg)
    d = cfg.gan.discriminator
    disc = archs.build({**d.to_dict(), "num_in_ch": g_spec.get("out_ch", 3)}, rngs=nnx.Rngs(cfg.seed + 1))
    if cfg.gan.init_weights:
        if not os.path.exists(cfg.gan.init_weights):
            raise ConfigError(f"gan.init_weights: no such file: {cfg.gan.init_weights}")
        weights.read(cfg.gan.init_weights, arch=d.arch, kind="discriminator").load_into(disc)
    k = cfg.gan.freeze_blocks
    if k:
        n = optim.block_count(archs.get(d.arch).block_of, state_lib.split(disc)[1])
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
    if "fake_features" in objective.inputs and objective.gan is None:
        raise ConfigError("loss 'feature_matching' compares the discriminator's features, which only the GAN stage "
                          "trains: add a 'gan' loss entry and set gan.enabled=True")
    if "sr_ema" in objective.inputs and not uses_ema(cfg):
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
            freeze = optim.frozen_blocks(archs.get(cfg.gan.discriminator.arch).block_of, k) if k else None
            tx_d = optim.build_optimizer(cfg.optim_d, cfg.train.total_steps, freeze=freeze, offset=d_offset(cfg))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return tx, tx_d


@dataclass
class Data:
    splits: dict  # dataset_splits.json: which file went to train/val/test
    train: Any  # the resumable iterator of this host's slices of the global batches
    val: list  # validation images: dict(name, hr, lr)
    apart: dict = field(default_factory=dict)  # the sets scored apart from validation: 'test' (val.test_every), val.extra's


def extra_sets(cfg):
    """{name: (hr files, lr files or None)} of val.extra's folders (DataError for a missing or empty one)."""
    out = {}
    for name, folders in cfg.val.extra.items():
        hr, lr = (folders, None) if isinstance(folders, str) else (folders["hr"], folders.get("lr"))
        files = list_folder(hr, f"val.extra.{name}")
        out[name] = files, (match_pairs(files, hr, lr, f"val.extra.{name}.lr") if lr else None)
    return out


def check_test_split(cfg, splits):
    if cfg.val.test_every and not splits.get("test"):
        raise ConfigError("val.test_every scores the test split, which is empty: give data.test_dir (or a data.split with a "
                          "test fraction), or set val.test_every=0")


def build_data(cfg, workdir):
    """The splits, the training iterator, and the images that SSIM can measure (as `jaxsr.evaluate`, which leaves out
    images smaller than its window once `scale` px per border are cropped) of validation, the test split (with
    val.test_every) and val.extra's sets. A monochrome run's (`degrade.is_mono`) LR and targets are made as its training
    pairs are (`degrade.mono_validation`)."""
    extra = extra_sets(cfg)
    splits = data.resolve_splits(cfg.data, workdir, cfg.seed)
    check_test_split(cfg, splits)
    per_host = data.host_batch_size(cfg.train.batch_size)
    it = data.train_iterator(cfg.data, splits, cfg.scale, cfg.seed, per_host, jax.process_index(), jax.process_count())
    sets = {"val": splits, **({"test": splits} if cfg.val.test_every else {})}
    sets.update({name: {name: hr, f"{name}_lr": lr} for name, (hr, lr) in extra.items()})
    measured = {}
    for which, rec in sets.items():
        measured[which] = [_monochrome(cfg, item, k) for k, item in enumerate(_measurable(cfg, rec, which))]
        if which != "val" and not measured[which]:
            raise ConfigError(f"{'val.extra.' + which if which != 'test' else 'the test split'} has no image SSIM can measure "
                              f"(larger than {evaluate.SSIM_WINDOW + 2 * cfg.scale} px a side)")
    return Data(splits, it, measured.pop("val"), measured)


def _measurable(cfg, rec, which):
    label = {"val": "validation", "test": "the test split"}.get(which, f"val.extra.{which}")
    for item in data.val_items(cfg.data, rec, cfg.scale, which):
        h, w = item["hr"].shape[:2]
        if min(h, w) - 2 * cfg.scale >= evaluate.SSIM_WINDOW:
            yield item
        else:
            log.info(f"{label}: {item['name']} is {w}x{h}, too small for SSIM after cropping {cfg.scale} px per border "
                     f"(it needs {evaluate.SSIM_WINDOW + 2 * cfg.scale} px); left out of {label}")


def _monochrome(cfg, item, index):
    if not is_mono(cfg.degrade):
        return item
    lr, hr = mono_validation(item["hr"], item["lr"], cfg.degrade, cfg.scale, cfg.seed, index)
    return {**item, "lr": lr, "hr": hr}


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
    g_inspect: Callable | None = None  # the same steps, also returning per-layer statistics (log.gradients/parameters);
    gan_inspect: Callable | None = None  # compiled on their first use, only on the steps that log them


def build_steps(cfg, mesh, objective, tx, g_def, eval_def, d_def=None, tx_d=None):
    """The jitted steps: the state is donated and replicated, the batch sharded on the mesh's 'data' axis."""
    repl = parallel.replicated(mesh)
    make_pair = training_pairs(cfg.degrade, cfg.scale)
    total = cfg.train.total_steps
    parts = Parts(g_def, objective.without_gan(), tx, make_pair, lr=lambda s: optim.current_lr(cfg.optim, total, s),
                  ema_decay=cfg.optim.ema_decay, accumulate=int(cfg.optim.accumulate), ema_def=eval_def)

    def jit(p):
        return jax.jit(make_train_step(p), donate_argnums=(0,), out_shardings=(repl,) * (3 if p.inspect else 2))

    gan_parts = None
    if d_def is not None:
        gan_parts = parts._replace(objective=objective, d_def=d_def, tx_d=tx_d,
                                   lr_d=lambda s: optim.current_lr(cfg.optim_d, total, s, d_offset(cfg)))
    preview = jax.jit(make_preview(eval_def, make_pair, d_def=d_def), out_shardings=repl)
    steps = Steps(jit(parts), jit(gan_parts) if gan_parts else None, preview)
    if cfg.log.gradients or cfg.log.parameters:
        inspecting = dict(inspect=True, histograms=cfg.log.histograms)
        steps.g_inspect = jit(parts._replace(**inspecting))
        steps.gan_inspect = jit(gan_parts._replace(**inspecting)) if gan_parts else None
    return steps


def eval_weights(cfg, state):
    """What validation and exports use: schedule-free's x sequence, else the EMA, else the raw params."""
    if optim.is_schedule_free(cfg.optim):
        return optim.eval_params(state.opt_state, state.params)
    return state.ema if state.ema is not None else state.params


def plateau_feeder(cfg, state, mesh):
    """(state, metric) -> state with each plateau schedule (G's, D's) told one validation value; None without one."""
    sections = [(k, cfg[s]) for k, s in (("opt_state", "optim"), ("d_opt_state", "optim_d"))
                if cfg[s].schedule == "plateau" and getattr(state, k) is not None]
    if not sections:
        return None

    def feed(state, value):
        return state.replace(**{k: optim.feed_plateau(section, getattr(state, k), value) for k, section in sections})

    return jax.jit(feed, donate_argnums=(0,), out_shardings=parallel.replicated(mesh))


# ------------------------------------------------------------------------------------------------- the kind


class SR:
    """Generator (+ discriminator) training; see `jaxsr.train.kind.Kind` for what the loop asks of it."""

    carryable = ("opt_state", "d_opt_state", "ema")  # clip, plateau, FreezeD, EMA on/off reshape these, not the models
    resolve_config = staticmethod(resolve_model)

    @staticmethod
    def check(cfg):
        """What building the kind refuses, without building it (--print_config): the losses and their weight files,
        the optimizers and schedules, the discriminator's name, the perceptual metrics' files, the data folders."""
        build_objective(cfg)
        build_optimizers(cfg)
        check_discriminator(cfg)
        evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        check_test_split(cfg, data.check_folders(cfg.data, cfg.seed))
        extra_sets(cfg)

    def __init__(self, cfg, workdir, mesh, meta=None):
        self.cfg = cfg
        resume_spec = meta.get("spec") if meta else None
        if resume_spec is not None and cfg.init_weights:
            log.info(f"resuming from the checkpoint at step {meta['step']}: init_weights ({cfg.init_weights}) is not "
                     "applied, the checkpoint holds the weights")
        objective = build_objective(cfg)
        tx, tx_d = build_optimizers(cfg)
        self.perceptual = evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        model, self.spec = build_generator(cfg, resume_spec)
        disc = build_discriminator(cfg, self.spec)
        self.data = build_data(cfg, workdir)
        if not self.data.val and (cfg.val.every or cfg.val.at_start or cfg.init_weights):
            raise ConfigError("no validation image to measure: give data.val_dir images larger than "
                              f"{evaluate.SSIM_WINDOW + 2 * cfg.scale} px a side, or set val.every=0 and val.at_start=False")
        self.meta = {"spec": self.spec}

        model.train()  # drop path, batch statistics (DAT); models are built in eval mode
        eval_model = nnx.clone(model)
        eval_model.eval()
        self.eval_def = state_lib.split(eval_model)[0]
        g_def, d_def = state_lib.split(model)[0], (state_lib.split(disc)[0] if disc is not None else None)
        state = build_state(cfg, model, tx, disc, tx_d, paired=self.data.splits.get("train_lr") is not None)
        self.state = parallel.replicate(mesh, state)
        self.feature_params = parallel.replicate(mesh, objective.feature_params)
        self.steps = build_steps(cfg, mesh, objective, tx, g_def, self.eval_def, d_def, tx_d)
        self._feed_plateau = plateau_feeder(cfg, state, mesh)
        self._bicubic_psnr = {}

    def summary(self, state):
        return f"{self.spec['arch']} x{self.cfg.scale}, {sum(x.size for x in jax.tree.leaves(state.params)):,} parameters"

    def train_step(self, state, batch, step):
        fn = self.steps.gan if (self.steps.gan and step >= self.cfg.gan.start_step) else self.steps.g
        return fn(state, batch, self.feature_params)

    def inspect_step(self, state, batch, step):
        """train_step that also returns G's (and, in the GAN stage, D's) per-layer norms and update/weight ratios."""
        gan = self.steps.gan_inspect and step >= self.cfg.gan.start_step
        return (self.steps.gan_inspect if gan else self.steps.g_inspect)(state, batch, self.feature_params)

    def resumed(self, state, carry, saved_config):
        """An EMA that starts on resume starts from the resumed weights; a new optim.lr under a plateau schedule keeps the
        reductions the plateau made (and applies them to the new lr)."""
        if carry is not None and state.ema is not None and any(p.startswith("ema/") for p in carry.fresh):
            state = state.replace(ema=jax.tree.map(jnp.copy, state.params))
            log.info("the EMA starts from the resumed weights (the checkpoint has none: optim.ema_decay was 0)")
        for section, key in (("optim", "opt_state"), ("optim_d", "d_opt_state")):
            before = (saved_config or {}).get(section, {})
            new = float(self.cfg[section].lr)
            if (self.cfg[section].schedule == before.get("schedule") == "plateau" and getattr(state, key) is not None
                    and float(before.get("lr", new)) != new):
                state = state.replace(**{key: optim.rescale_plateau(getattr(state, key), new / float(before["lr"]))})
                log.info(f"{section}.lr went from {before['lr']} to {new}: the plateau schedule keeps the reductions it made "
                         "and applies them to the new lr")
        return state

    def deployable(self, state):
        params = parallel.to_host(eval_weights(self.cfg, state))
        return nnx.merge(self.eval_def, params, parallel.to_host(state.buffers))

    def validate(self, model, split="val"):
        """PSNR/SSIM (and LPIPS/DISTS/TOPIQ where val.lpips/val.dists/val.topiq name their weights) on the val images
        (or on `split`: 'test', or a name of val.extra) as `jaxsr.evaluate` measures them (8-bit, Y channel, crop = scale)."""
        items = self.data.val if split == "val" else self.data.apart[split]
        scale, scores, shown = self.cfg.scale, [], []
        for item in items:
            sr = upscale(model, item["lr"])
            scores.append(evaluate.score({"sr": sr}, item["hr"], scale, perceptual=self.perceptual)["sr"])
            if len(shown) < 4:
                shown.append((item["lr"], quantize(sr), item["hr"]))
        values = {k: mean_over_images([s[k] for s in scores]) for k in ("psnr", "ssim", *self.perceptual)}
        extra = "".join(f", {k.upper()} {values[k]:.4f}" for k in self.perceptual)
        line = (f"PSNR {values['psnr']:.3f} dB, SSIM {values['ssim']:.4f}{extra} on {len(items)} image(s) "
                f"(bicubic: PSNR {self.bicubic_psnr(split):.3f} dB)")
        return Scores(values, line, shown)

    def bicubic_psnr(self, split="val"):
        """The baseline to beat: MATLAB-bicubic upscaling of the same LR, measured the same way (computed once a set)."""
        if split not in self._bicubic_psnr:
            s, items = self.cfg.scale, self.data.val if split == "val" else self.data.apart[split]
            self._bicubic_psnr[split] = mean_over_images(
                [evaluate.score({"b": evaluate.bicubic(it["lr"], s)}, it["hr"], s)["b"]["psnr"] for it in items])
        return self._bicubic_psnr[split]

    def after_validation(self, state, value):
        return state if self._feed_plateau is None else self._feed_plateau(state, value)

    def export(self, model, base):
        """base.pth/.safetensors (and .onnx with export.onnx), the eval weights."""
        for ext in (".pth", ".safetensors"):
            weights.export(model, self.spec, base + ext)
        if self.cfg.export.onnx:
            from jaxsr.deploy import export_onnx

            done = export_onnx(model, self.spec, base + ".onnx", fp16=self.cfg.export.onnx_fp16)
            log.info(f"{os.path.basename(base)}.onnx: {done.verification.line()}")

    def mirror(self, model, base, info):
        weights.export(model, self.spec, base + ".safetensors", info)
        return base + ".safetensors"

    def log_images(self, state, batch, step, board):
        """The training pair this batch makes and the eval weights' output on its LR, as LR|SR|HR rows, with
        histograms of the SR values and of the discriminator's logits."""
        p = parallel.to_host(self.steps.preview(state, batch, eval_weights(self.cfg, state)))
        board.images(step, "train/lr_sr_hr", p["lq"], p["sr"], p["gt"])
        for k in ("sr", "d_fake", "d_real"):
            if k in p:
                board.histogram(step, f"train/{k}", p[k])
