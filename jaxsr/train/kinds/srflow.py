"""The `srflow` training kind: SRFlow trained by maximum likelihood, as andreas128/SRFlow's `SRFlow_model.py`
(`optimize_parameters`) and victorca25/traiNNer's port (`codes/models/SRFlow_model.py`, docs/howtotrain.md "SRFlow
models") train it, on the sr kind's data (HR crops, the LR made from them by `degrade`, bicubic in the recipe).

- Loss: `srflow.nll_weight` x the model's NLL in the reference's bits per dimension (`SRFlowNet.nll`, averaged over the
  batch), plus any registry loss of `config.losses` (not the GAN ones: there is no discriminator) on the heat-0
  reconstruction, the reverse flow with gradients, as traiNNer adds them.
- Dequantization: both references' training call runs the flow with `add_gt_noise=False` (no noise, no -log(quant)
  term), which is the default here; `srflow.add_gt_noise=True` takes the reference's other path: HR + U(-0.5, 0.5) /
  `srflow.quant` and -log(quant) per pixel position in the log-determinant.
- `srflow.train_rrdb_delay` (the reference's `network_G.train_RRDB_delay`): the encoder (`RRDB.*`) is frozen for train
  steps [0, D), D = int(delay x total_steps) (rounded down to a multiple of optim.accumulate), and trains from D on, as
  traiNNer freezes it at the start and unfreezes it once its 1-based step exceeds D (andreas128's public code has the
  same test but never freezes it: its `RRDB_training` starts True). Frozen means no gradient reaches it (its features
  enter the flow through stop_gradient) and it has its own optimizer state, untouched until D, so its parameters (and
  EMA) stay bit-identical and its Adam moments start at D, as torch's param group does when its parameters first get
  gradients; its schedule is read at the global update number (offset D), as the reference's schedulers step every
  iteration.
- ActNorm's data-dependent initialisation (the reference's `_ActNorm.initialize_parameters`, run on the first forward
  in train mode for every ActNorm whose bias is all zero): before the first step of a run whose flow has such
  ActNorms (a flow from scratch; never on a resume or a trained file), each of them is set from what it receives on
  the first batch, in the flow's order: bias = -mean, logs = log(1 / (std + 1e-6)) per channel.
- `srflow.encoder_weights` (the reference's `load_submodule: RRDB`): any ESRGAN .pth/.safetensors (the layouts
  jaxsr's esrgan bridge reads) loaded into `RRDB`, with the widths and depth of model.
- Batch 1 is refused unless optim.accumulate > 1 (traiNNer's guide: it turns NaN; a virtual batch keeps it stable).
- Validation: the sr kind's metrics (PSNR/SSIM, ... as `jaxsr.evaluate` measures them) of the heat-0 sample, the NLL of the validation images, and `srflow.heats` x
  `srflow.n_sample` samples per image (fixed keys from the seed) logged as the grid rows LR | samples | HR, one row per
  heat; samples with NaN/Inf are counted (`val_nan_samples`) and shown black.
"""
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxsr import archs, evaluate, optim, parallel, weights
from jaxsr.archs.bridge import load_state_dict, state_dict
from jaxsr.archs.srflow.model import ActNorm2d
from jaxsr.degrade import training_pairs
from jaxsr.errors import ConfigError
from jaxsr.imageio import pad_to
from jaxsr.metrics import mean_over_images
from jaxsr.train import state as state_lib
from jaxsr.train.kind import Scores, refuse_unsupported
from jaxsr.train.kinds.sr import SR, build_data, build_generator, build_objective, build_state, eval_weights, uses_ema
from jaxsr.train.kinds.sr.step import make_preview, nonfinite_count
from jaxsr.train.logger import log

ENCODER = "RRDB"  # the top-level module train_rrdb_delay freezes and encoder_weights fills
ON_DISCRIMINATOR = ("gan", "feature_matching")
ACTNORM_EPS = 1e-6  # _ActNorm.initialize_parameters: logs = log(scale / (sqrt(var) + 1e-6))


def default_config():
    """The `srflow` section (the reference's option names where it has them)."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.nll_weight = 1.0  # train.weight_fl (traiNNer: fl_weight): the NLL's weight; 0 trains on config.losses alone
    c.train_rrdb_delay = 0.0  # network_G.train_RRDB_delay: the fraction of total_steps with the encoder frozen
    c.add_gt_noise = False  # the references' training path (False); True: uniform dequantization noise and its term
    c.quant = 32  # datasets.train.quant: the dequantization bins with add_gt_noise
    c.encoder_weights = ""  # path.pretrain_model_G with load_submodule RRDB: an ESRGAN file for the encoder
    c.heats = (0.0, 0.5, 0.75, 1.0)  # val.heats: the latents' standard deviations sampled at validation
    c.n_sample = 3  # val.n_sample: samples per heat and validation image
    return c


def delay_steps(cfg):
    """D: the encoder is frozen for train steps [0, D)."""
    acc = int(cfg.optim.accumulate)
    return int(float(cfg.srflow.train_rrdb_delay) * int(cfg.train.total_steps)) // acc * acc


def check_srflow(cfg):
    """What kind='srflow' refuses, each in one line naming the field."""
    s = cfg.srflow
    if cfg.model.arch != "srflow":
        raise ConfigError(f"kind='srflow' trains an SRFlow network: set model.arch='srflow' (or 'auto' with an SRFlow "
                          f"init_weights), not {cfg.model.arch!r}")
    if int(cfg.train.batch_size) == 1 and int(cfg.optim.accumulate) == 1:
        raise ConfigError("kind='srflow' with train.batch_size=1 turns NaN (traiNNer's guide): use a batch of 2 or more, "
                          "or optim.accumulate > 1 for a virtual batch")
    if not 0.0 <= float(s.train_rrdb_delay) <= 1.0:
        raise ConfigError(f"srflow.train_rrdb_delay is the fraction of total_steps with the encoder frozen, in [0, 1]; "
                          f"got {s.train_rrdb_delay}")
    if s.add_gt_noise and not float(s.quant) > 0:
        raise ConfigError(f"srflow.quant must be > 0 (the dequantization bins, 32 in the released options), got {s.quant}")
    heats = [float(h) for h in s.heats]
    if not heats or min(heats) < 0 or int(s.n_sample) < 1:
        raise ConfigError(f"srflow.heats must be standard deviations >= 0 (e.g. (0.0, 0.5, 0.75, 1.0)) and srflow.n_sample "
                          f">= 1; got heats {list(s.heats)}, n_sample {s.n_sample}")
    if float(s.nll_weight) < 0:
        raise ConfigError(f"srflow.nll_weight must be >= 0, got {s.nll_weight}")
    for key, entry in cfg.losses.items():
        if entry["name"] in ON_DISCRIMINATOR:
            raise ConfigError(f"losses.{key} ({entry['name']!r}) needs a discriminator, which kind='srflow' does not "
                              "train (traiNNer's guide: any loss except GAN): remove it")
    if float(s.nll_weight) == 0 and not cfg.losses:
        raise ConfigError("srflow.nll_weight=0 and config.losses is empty: nothing to train on")
    if s.encoder_weights and not os.path.isfile(s.encoder_weights):
        raise ConfigError(f"srflow.encoder_weights: no such file: {s.encoder_weights}")
    refuse_unsupported(cfg, ": the encoder and the flow keep separate "
                       "optimizer states (no plateau or schedule-free optimizer, float16 loss scaling or per-layer "
                       "statistics) and there is no discriminator",
                       ("gan.enabled", cfg.gan.enabled, bool(cfg.gan.enabled)),
                       ("optim.schedule", cfg.optim.schedule, cfg.optim.schedule == "plateau"),
                       ("optim.name", cfg.optim.name, optim.is_schedule_free(cfg.optim)))


def _top(path):
    return str(getattr(path[0], "key", getattr(path[0], "name", "")))


def in_encoder(params):
    """params -> bool tree: the encoder's (`RRDB.*`) leaves."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _top(path) == ENCODER, params)


def split_optimizer(cfg, delay):
    """(init, updating(with_encoder)): one optimizer state for the flow and one for the encoder, whose schedule is
    read at its update count + the updates before D (the global update number)."""
    total, acc = cfg.train.total_steps, int(cfg.optim.accumulate)
    txs = {"flow": optim.build_optimizer(cfg.optim, total),
           "encoder": optim.build_optimizer(cfg.optim, total, offset=delay // acc)}

    def init(params):
        return {k: tx.init(params) for k, tx in txs.items()}

    def updating(with_encoder):
        def update(grads, state, params=None):
            mask = in_encoder(grads)
            flow, flow_state = txs["flow"].update(grads, state["flow"], params)
            if with_encoder:
                enc, enc_state = txs["encoder"].update(grads, state["encoder"], params)
                updates = jax.tree.map(lambda m, e, f: e if m else f, mask, enc, flow)
                return updates, {"flow": flow_state, "encoder": enc_state}
            updates = jax.tree.map(lambda m, f: jnp.zeros_like(f) if m else f, mask, flow)
            return updates, {**state, "flow": flow_state}

        return optax.GradientTransformation(init, update)

    return updating


def training_hr(cfg, key, gt):
    """(the HR the flow encodes, quant or None): the reference's add_gt_noise path or, by default, the HR as is."""
    if not cfg.srflow.add_gt_noise:
        return gt, None
    q = float(cfg.srflow.quant)
    return gt + (jax.random.uniform(jax.random.fold_in(key, 7), gt.shape) - 0.5) / q, q


def make_step(cfg, g_def, ema_def, objective, tx, make_pair, frozen, mask):
    """The jitted-to-be step: (state, batch, feature_params) -> (state, metrics); `frozen`: the encoder's features
    enter through stop_gradient and its parameters and EMA are put back bit for bit."""
    acc, nll_weight, decay = int(cfg.optim.accumulate), float(cfg.srflow.nll_weight), float(cfg.optim.ema_decay)
    total = cfg.train.total_steps

    def keep(new, old):
        return None if new is None else jax.tree.map(lambda m, n, o: o if m else n, mask, new, old)

    def step(state, batch, feature_params):
        rng, key = jax.random.split(state.rng)
        queue, lq, gt, gt_usm = make_pair(key, batch, state.queue)
        hr, quant = training_hr(cfg, key, gt)

        def loss_fn(params):
            model = state_lib.merge(g_def, params, state.buffers)
            cond = model.conditions(lq)
            if frozen:
                cond = jax.lax.stop_gradient(cond)
            nll = jnp.mean(model.nll(hr, lq, quant, lr_enc=cond))
            total_loss, logs = nll_weight * nll, {"nll": nll}
            if objective.terms:
                sr = model.sample(lq, 0.0, lr_enc=cond)
                inputs = {}
                if "sr_ema" in objective.inputs:
                    inputs["sr_ema"] = jax.lax.stop_gradient(state_lib.merge(ema_def, state.ema, state.buffers)(lq))
                extra, more = objective(sr, gt, step=state.step, gt_usm=gt_usm, feature_params=feature_params, **inputs)
                total_loss, logs = total_loss + extra, {**logs, **more}
            return total_loss, logs

        (loss, logs), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if frozen:
            params = keep(params, state.params)
        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        params = jax.tree.map(lambda a, b: jnp.where(ok, a, b), params, state.params)
        opt_state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), opt_state, state.opt_state)
        new_ema = None
        if state.ema is not None:
            real = ok & ((state.step + 1) % acc == 0)
            new_ema = jax.tree.map(lambda a, b: jnp.where(real, a, b), optim.ema_update(state.ema, params, decay), state.ema)
            if frozen:
                new_ema = keep(new_ema, state.ema)
        lr = optim.current_lr(cfg.optim, total, state.opt_state["flow"])
        metrics = {"loss": loss, **logs, "grad_norm": grad_norm, "lr": lr, "encoder_frozen": jnp.float32(frozen),
                   "skipped": (~ok).astype(jnp.float32)}
        state = state.replace(step=state.step + 1, rng=rng, params=params, opt_state=opt_state, ema=new_ema, queue=queue,
                              nonfinite=nonfinite_count(state, ok, jnp.zeros((), bool), None))
        return state, metrics

    return step


class _DataInit(ActNorm2d):
    """An ActNorm2d that first sets bias and logs from its input (the reference's initialize_parameters)."""

    def __call__(self, x, logdet=None, reverse=False):
        mean = jnp.mean(x, axis=(0, 1, 2))
        std = jnp.sqrt(jnp.mean((x - mean) ** 2, axis=(0, 1, 2)))
        self.bias.set_value((-mean).reshape(self.bias.shape))
        self.logs.set_value(jnp.log(1.0 / (std + ACTNORM_EPS)).reshape(self.logs.shape))
        return ActNorm2d.__call__(self, x, logdet, reverse)


_init_forward = nnx.jit(lambda model, hr, lq: model.encode(hr, lq)[1])


def actnorm_init(model, hr, lq):
    """Set every ActNorm of `model` whose bias is all zero from the first batch, in the flow's order (each sees what
    the ones before it, already set, pass on), as the reference's first train-mode forward does: one compiled encode
    in which those layers are `_DataInit`s. Returns how many were set and how many there are."""
    norms = [m for _, m in model.iter_modules() if isinstance(m, ActNorm2d)]
    fresh = [m for m in norms if not np.any(np.asarray(m.bias[...]))]
    for m in fresh:
        m.__class__ = _DataInit
    try:
        if fresh:
            _init_forward(model, hr, lq)
    finally:
        for m in fresh:
            m.__class__ = ActNorm2d
    return len(fresh), len(norms)


def esrgan_pairs(num_block, num_up):
    """[(SRFlow encoder module, BasicSR ESRGAN module)]: the names jaxsr's esrgan bridge gives every ESRGAN layout."""
    pairs = [("RRDB.conv_first", "conv_first"), ("RRDB.trunk_conv", "conv_body"), ("RRDB.HRconv", "conv_hr"),
             ("RRDB.conv_last", "conv_last")]
    pairs += [(f"RRDB.upconv{i}", f"conv_up{i}") for i in range(1, num_up + 1)]
    return pairs + [(f"RRDB.RRDB_trunk.{b}.RDB{r}.conv{c}", f"body.{b}.rdb{r}.conv{c}")
                    for b in range(num_block) for r in (1, 2, 3) for c in range(1, 6)]


def load_encoder(model, spec, path):
    """An ESRGAN file's weights into `model.RRDB` (in place); the log line says what was loaded."""
    w = weights.read(path, arch="esrgan")
    full = {**archs.get("srflow").defaults, **spec}
    want = {"scale": full["scale"], "in_ch": full["in_ch"], "out_ch": full["out_ch"], "num_feat": full["num_feat"],
            "num_block": full["num_block"], "num_grow_ch": full["num_grow_ch"]}
    have = {**archs.get("esrgan").defaults, **w.spec}
    differ = [k for k in want if int(have[k]) != int(want[k])]
    if differ:
        raise ConfigError(f"srflow.encoder_weights is an ESRGAN with {', '.join(f'{k}={have[k]}' for k in differ)} but the "
                          f"SRFlow encoder has {', '.join(f'{k}={want[k]}' for k in differ)}: set model's to the file's")
    src, sd = state_dict(w.build()[0]), state_dict(model)
    copied = 0
    for dst, s in esrgan_pairs(int(want["num_block"]), int(math.log2(want["scale"]))):
        for leaf in ("weight", "bias"):
            sd[f"{dst}.{leaf}"] = src[f"{s}.{leaf}"]
            copied += 1
    load_state_dict(model, sd, strict=True)
    enc = sum(1 for k in sd if k.startswith(ENCODER + "."))
    return (f"encoder_weights from {path} ({w.spec.get('layout', 'basicsr')} ESRGAN x{have['scale']}): {copied} of "
            f"{len(sd)} tensors (all {enc} of RRDB); the flow's {len(sd) - enc} keep their init")


class SRFlow(SR):
    """SRFlow by likelihood; see the module docstring and `jaxsr.train.kind.Kind`."""

    @staticmethod
    def check(cfg):
        check_srflow(cfg)
        SR.check(cfg)

    def __init__(self, cfg, workdir, mesh, meta=None):
        check_srflow(cfg)
        self.cfg, self.mesh = cfg, mesh
        self.delay = delay_steps(cfg)
        resume_spec = meta.get("spec") if meta else None
        if resume_spec is not None and (cfg.init_weights or cfg.srflow.encoder_weights):
            log.info(f"resuming from the checkpoint at step {meta['step']}: init_weights and srflow.encoder_weights are "
                     "not applied, the checkpoint holds the weights")
        objective = build_objective(cfg)
        model, self.spec = build_generator(cfg, resume_spec)
        if resume_spec is None and cfg.srflow.encoder_weights:
            log.info(load_encoder(model, self.spec, cfg.srflow.encoder_weights))
        self.perceptual = evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        self.data = build_data(cfg, workdir)
        if not self.data.val and (cfg.val.every or cfg.val.at_start or cfg.init_weights):
            raise ConfigError("no validation image to measure: give data.val_dir images larger than "
                              f"{evaluate.SSIM_WINDOW + 2 * cfg.scale} px a side, or set val.every=0 and val.at_start=False")
        self.meta = {"spec": self.spec}

        model.train()
        eval_model = nnx.clone(model)
        eval_model.eval()
        self.eval_def = state_lib.split(eval_model)[0]
        self.g_def = state_lib.split(model)[0]
        updating = split_optimizer(cfg, self.delay)
        state = build_state(cfg, model, updating(True))
        self.mask = in_encoder(state.params)
        self.state = parallel.replicate(mesh, state)
        self.feature_params = parallel.replicate(mesh, objective.feature_params)
        make_pair = training_pairs(cfg.degrade, cfg.scale)
        repl = parallel.replicated(mesh)
        ema_def = self.eval_def if uses_ema(cfg) else None
        self.jitted = {frozen: jax.jit(make_step(cfg, self.g_def, ema_def, objective, updating(not frozen), make_pair, frozen,
                                                 self.mask), donate_argnums=(0,), out_shardings=(repl, repl))
                       for frozen in (True, False)}
        self.pair = jax.jit(lambda state, batch: make_pair(jax.random.split(state.rng)[1], batch, state.queue)[1:3])
        self.preview = jax.jit(make_preview(self.eval_def, make_pair), out_shardings=repl)
        self._decode = nnx.jit(lambda m, lr, noise: m.decode(lr, noise[-1], noise[:-1]))
        self._nll = nnx.jit(lambda m, hr, lr: m.nll(hr, lr))
        self._feed_plateau = None  # plateau schedules are refused
        self._bicubic_psnr = {}
        self._phase = None
        self._checked_actnorm = False

    def summary(self, state):
        n = sum(x.size for x in jax.tree.leaves(state.params))
        enc = sum(x.size for m, x in zip(jax.tree.leaves(self.mask), jax.tree.leaves(state.params)) if m)
        frozen = f"; encoder frozen for steps [0, {self.delay})" if self.delay else ""
        return f"srflow x{self.cfg.scale}, {n:,} parameters ({enc:,} in the encoder){frozen}"

    def _actnorm_init(self, state, batch):
        """The data-dependent ActNorm initialisation on this batch, where the flow has ActNorms never initialised."""
        self._checked_actnorm = True
        params, buffers = parallel.to_host(state.params), parallel.to_host(state.buffers)
        model = state_lib.merge(self.g_def, params, buffers)
        lq, gt = parallel.to_host(self.pair(state, batch))
        hr, _ = training_hr(self.cfg, jax.random.split(state.rng)[1], jnp.asarray(gt))
        done, count = actnorm_init(model, hr, jnp.asarray(lq))
        if not done:
            return state
        log.info(f"ActNorm data-dependent initialisation on the first batch: {done} of {count} ActNorms set (bias, logs) "
                 "from their inputs")
        new = state_lib.split(model)[1]
        put = lambda tree: jax.tree.map(lambda n, o: jax.device_put(np.asarray(n), o.sharding), new, tree)  # noqa: E731
        return state.replace(params=put(state.params), ema=None if state.ema is None else put(state.ema))

    def train_step(self, state, batch, step):
        if not self._checked_actnorm:
            state = self._actnorm_init(state, batch)
        frozen = step < self.delay
        if frozen != self._phase:
            log.info(f"step {step}: encoder ({ENCODER}) " + (f"frozen until step {self.delay}" if frozen else "training"))
            self._phase = frozen
        return self.jitted[frozen](state, batch, self.feature_params)

    def inspect_step(self, state, batch, step):
        raise ConfigError("kind='srflow' logs no per-layer statistics: set log.gradients=0 and log.parameters=0")

    def heat_rows(self, model, items):
        """(grid rows (LR, samples side by side, HR), heat-0 samples, NaN/Inf sample count): `srflow.heats` x
        `n_sample` samples per image from keys fixed by the seed, the image index, the heat and the sample; one
        compiled reverse flow per LR size (padded to the size multiple as jaxsr.upscale pads) for all of them."""
        s, m, heats = self.cfg.scale, model.size_multiple, [float(h) for h in self.cfg.srflow.heats]
        rows, mean, bad = [], [], 0
        base = jax.random.key(self.cfg.seed)
        for i, item in enumerate(items):
            h, w = item["lr"].shape[:2]
            lr = pad_to(item["lr"], -(-h // m) * m, -(-w // m) * m)[None]
            decode = lambda noise: np.asarray(self._decode(model, lr, noise))[0, : h * s, : w * s]  # noqa: E731
            mean.append(np.clip(decode(model.draw_noise(lr.shape, 0.0)), 0.0, 1.0))
            for j, heat in enumerate(heats if i < 4 else ()):
                samples = []
                for k in range(int(self.cfg.srflow.n_sample)):
                    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(base, i), j), k)
                    out = decode(model.draw_noise(lr.shape, heat, key))
                    if not np.isfinite(out).all():
                        bad += 1
                        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
                    samples.append(np.clip(out, 0.0, 1.0))
                rows.append((item["lr"], np.concatenate(samples, axis=1), item["hr"]))
        return rows, mean, bad

    def val_nll(self, model, items):
        """The mean NLL (bits per dimension) of the validation pairs, cropped to the model's size multiple."""
        s, m, out = self.cfg.scale, model.size_multiple, []
        for item in items:
            h, w = (d // m * m for d in item["lr"].shape[:2])
            out.append(float(np.mean(self._nll(model, item["hr"][None, : h * s, : w * s], item["lr"][None, :h, :w]))))
        return float(np.mean(out)) if out else float("nan")

    def validate(self, model, split="val"):
        """What the sr kind scores (val.best_metric among them), measured as `jaxsr.evaluate` does on the heat-0 sample
        (the mean of the flow's distribution; a NaN in it scores as black), the NLL (`nll`, bits per dimension) and
        the count of heat samples with NaN/Inf (`nan_samples`); the images are the heat grid of the first four."""
        items = self.data.val if split == "val" else self.data.apart[split]
        rows, mean, bad = self.heat_rows(model, items)
        scores = []
        for item, sr in zip(items, mean):
            scores.append(evaluate.score({"sr": np.nan_to_num(sr)}, item["hr"], self.cfg.scale, perceptual=self.perceptual)["sr"])
        values = {k: mean_over_images([sc[k] for sc in scores]) for k in ("psnr", "ssim", *self.perceptual)}
        values.update(nll=self.val_nll(model, items), nan_samples=float(bad))
        extra = "".join(f", {k.upper()} {values[k]:.4f}" for k in self.perceptual)
        n = len(self.cfg.srflow.heats) * int(self.cfg.srflow.n_sample) * len(items[:4])
        line = (f"heat 0: PSNR {values['psnr']:.3f} dB, SSIM {values['ssim']:.4f}{extra} on {len(items)} image(s) "
                f"(bicubic: PSNR {self.bicubic_psnr(split):.3f} dB); NLL {values['nll']:.4f} bits/dim; {bad} of {n} "
                "heat samples NaN")
        return Scores(values, line, rows)

    def log_images(self, state, batch, step, board):
        """The training pair and the heat-0 sample of the eval weights on its LR, as LR|SR|HR rows."""
        p = parallel.to_host(self.preview(state, batch, eval_weights(self.cfg, state)))
        board.images(step, "train/lr_sr_hr", p["lq"], np.clip(p["sr"], 0.0, 1.0), p["gt"])


__all__ = ["ENCODER", "SRFlow", "actnorm_init", "check_srflow", "default_config", "delay_steps", "esrgan_pairs",
           "in_encoder", "load_encoder"]
