"""The `pix2pix` training kind: a conditional GAN on aligned pairs (A, B), as junyanz's `models/pix2pix_model.py`
trains it (docs/translation.md).

Each step, in one compiled program, in the reference's order: G's forward fake_B = G(A) (train mode: batch statistics,
dropout); D's update on cat(A, fake_B) detached (target fake) and cat(A, B) (target real), loss 0.5 (fake + real); then
G's update, with the updated D, on GAN(D(cat(A, fake_B)), real) + lambda_L1 * L1(fake_B, B), back through the same
forward (its vjp). The images are in the generators' [-1, 1] (`value_range`); the batch comes in [0, 1].

GAN modes (`pix2pix.gan_mode`): 'vanilla' (BCE with logits) and 'lsgan' (MSE to 1/0) are jaxsr.losses.gan's, equal to
the reference's GANLoss (a mean over D's patch logits); 'wgangp' is GANLoss's: -mean for real, mean for fake. Like
pix2pix_model.py, no gradient penalty is added (networks.cal_gradient_penalty is not called there). pool_size is 0 for
pix2pix, so no image history. G is `config.model` (p2p_unet / p2p_resnet), D `gan.discriminator` (patchgan), whose
input channels are G's in_ch + out_ch. The optimizers are `optim` / `optim_d` (the recipe: Adam 2e-4, beta1 0.5, the
'linear' schedule).
"""
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxsr import archs, evaluate, optim, parallel, weights
from jaxsr.data import aligned
from jaxsr.data.loader import host_batch_size
from jaxsr.errors import ConfigError
from jaxsr.imageio import quantize
from jaxsr.infer import upscale
from jaxsr.losses.gan import gan_loss
from jaxsr.metrics import mean_over_images
from jaxsr.train import state as state_lib
from jaxsr.train.kind import Scores, refuse_unsupported
from jaxsr.train.kinds.sr import SR, Data, build_generator, eval_weights, resolve_model, uses_ema
from jaxsr.train.logger import log

GAN_MODES = ("vanilla", "lsgan", "wgangp")
GENERATORS = ("p2p_unet", "p2p_resnet")


def default_config():
    """The `pix2pix` section (the reference's option names): data geometry, direction, the objective."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.direction = "AtoB"  # 'BtoA': B is the input, A the target
    c.preprocess = "resize_and_crop"  # jaxsr.data.aligned: steps of center_crop, resize, scale_width, crop joined by _and_; or none
    c.load_size = 286  # the side resize / scale_width gives
    c.crop_size = 256  # the random crop's side (a multiple of the generator's size_multiple: 256 for unet_256)
    c.center_crop_size = 256  # center_crop's side (traiNNer's)
    c.no_flip = False  # True: no random horizontal flip
    c.lambda_L1 = 100.0  # the L1 term's weight
    c.gan_mode = "vanilla"  # vanilla | lsgan | wgangp
    return c


# ------------------------------------------------------------------------------------------------- config


def generator_multiple(spec):
    """The side multiple the generator needs (its size_multiple), from its spec without building a large one."""
    if spec["arch"] == "p2p_unet":
        return 2 ** int(spec.get("num_downs", archs.get("p2p_unet").defaults["num_downs"]))
    if spec["arch"] == "p2p_resnet":
        return 4
    return int(getattr(archs.build({**spec, "scale": 1}), "size_multiple", 1))


def preprocess(cfg):
    return aligned.make(cfg.pix2pix, generator_multiple(cfg.model.to_dict()))


def check_pix2pix(cfg):
    """What kind='pix2pix' refuses, each in one line naming the field."""
    s = cfg.pix2pix
    if cfg.model.arch not in GENERATORS:
        raise ConfigError(f"kind='pix2pix' trains a pix2pix generator: set model.arch to one of {', '.join(GENERATORS)} (or "
                          f"'auto' with such an init_weights), not {cfg.model.arch!r}")
    if int(cfg.scale) != 1:
        raise ConfigError(f"kind='pix2pix' translates at the input's size: set scale=1, not {cfg.scale}")
    if cfg.gan.discriminator.arch != "patchgan":
        raise ConfigError(f"kind='pix2pix' trains a PatchGAN: set gan.discriminator.arch='patchgan', not "
                          f"{cfg.gan.discriminator.arch!r}")
    if s.direction not in aligned.DIRECTIONS:
        raise ConfigError(f"pix2pix.direction must be 'AtoB' or 'BtoA', got {s.direction!r}")
    if s.gan_mode not in GAN_MODES:
        raise ConfigError(f"pix2pix.gan_mode must be one of {', '.join(GAN_MODES)}, got {s.gan_mode!r}")
    if not cfg.data.train_dir or cfg.data.hr_dir or cfg.data.packed or cfg.data.sources:
        raise ConfigError("kind='pix2pix' reads aligned pairs from data.train_dir (A|B images, or A/ and B/ subfolders) and "
                          "data.val_dir; data.hr_dir, data.packed and data.sources are not supported")
    if len(cfg.losses):
        raise ConfigError(f"kind='pix2pix' has its own objective (GAN + pix2pix.lambda_L1 * L1): set losses={{}}, not "
                          f"{', '.join(cfg.losses)}")
    p = preprocess(cfg)
    if not aligned.fixed_size(p) and int(cfg.train.batch_size) != 1:
        raise ConfigError(f"preprocess={s.preprocess!r} leaves each image its own size: set train.batch_size=1 or add a "
                          "crop (e.g. 'scale_width_and_crop')")
    refuse_unsupported(cfg, " (its PatchGAN trains from the first "
                       "step; one G and one D update a step, no accumulation, plateau or schedule-free optimizer, "
                       "float16 loss scaling, per-layer statistics, test split or extra validation sets)",
                       *translation_refusals(cfg))
    return p


def translation_refusals(cfg):
    """What the pix2pix and cyclegan kinds refuse alike ((field, value, bad) for `refuse_unsupported`): their
    PatchGANs train from the first step with one G and one D update a step, and they validate on their own sets."""
    return (("gan.enabled", cfg.gan.enabled, not cfg.gan.enabled),
            ("gan.start_step", cfg.gan.start_step, bool(cfg.gan.start_step)),
            ("gan.ramp_steps", cfg.gan.ramp_steps, bool(cfg.gan.ramp_steps)),
            ("gan.freeze_blocks", cfg.gan.freeze_blocks, bool(cfg.gan.freeze_blocks)),
            ("optim.accumulate", cfg.optim.accumulate, int(cfg.optim.accumulate) != 1),
            ("optim.schedule", cfg.optim.schedule, "plateau" in (cfg.optim.schedule, cfg.optim_d.schedule)),
            ("optim.name", cfg.optim.name, optim.is_schedule_free(cfg.optim) or optim.is_schedule_free(cfg.optim_d)),
            ("val.test_every", cfg.val.test_every, bool(cfg.val.test_every)),
            ("val.extra", "...", bool(cfg.val.extra)))


def resolve_config(cfg, workdir):
    """model.arch='auto' from init_weights (or the workdir's config.json), as the sr kind; scale stays 1."""
    return resolve_model(cfg, workdir)


# ------------------------------------------------------------------------------------------------- the step


def gan_term(pred, target_is_real, mode):
    """The reference's GANLoss(pred, target_is_real) for vanilla, lsgan and wgangp (-mean real, mean fake)."""
    if mode == "wgangp":
        pred = pred.astype(jnp.float32)
        return -jnp.mean(pred) if target_is_real else jnp.mean(pred)
    return gan_loss(pred, target_is_real, mode, True)


class Parts(NamedTuple):
    g_def: Any
    d_def: Any
    tx: optax.GradientTransformation
    tx_d: optax.GradientTransformation
    lambda_l1: float
    gan_mode: str
    value_range: tuple
    ema_decay: float


def to_range(p, x):
    lo, hi = p.value_range
    return x * (hi - lo) + lo


def train_step(p, state, batch):
    """G forward -> D update (fake detached, real) -> G update against the updated D (GAN + lambda_L1 * L1)."""
    real_a, real_b = to_range(p, batch["a"]), to_range(p, batch["b"])

    def generate(params):
        g = state_lib.merge(p.g_def, params, state.buffers)
        fake = g(real_a)
        return fake, state_lib.split(g)[2]

    fake_b, vjp, buffers = jax.vjp(generate, state.params, has_aux=True)

    def d_loss(d_params):
        d = state_lib.merge(p.d_def, d_params, state.d_buffers)
        fake = gan_term(d(jnp.concatenate([real_a, jax.lax.stop_gradient(fake_b)], -1)), False, p.gan_mode)
        real = gan_term(d(jnp.concatenate([real_a, real_b], -1)), True, p.gan_mode)
        return 0.5 * (fake + real), (fake, real, state_lib.split(d)[2])

    (loss_d, (d_fake, d_real, d_buffers)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(state.d_params)
    d_updates, d_opt_state = p.tx_d.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss(fake):
        d = state_lib.merge(p.d_def, d_params, d_buffers)
        g_gan = gan_term(d(jnp.concatenate([real_a, fake], -1)), True, p.gan_mode)
        g_l1 = jnp.mean(jnp.abs(fake - real_b)) * p.lambda_l1
        return g_gan + g_l1, (g_gan, g_l1, state_lib.split(d)[2])

    (loss_g, (g_gan, g_l1, d_buffers)), fake_grad = jax.value_and_grad(g_loss, has_aux=True)(fake_b)
    (grads,) = vjp(fake_grad)
    updates, opt_state = p.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss_g) & jnp.isfinite(loss_d) & jnp.isfinite(grad_norm)
    new = dict(params=params, buffers=buffers, opt_state=opt_state, d_params=d_params, d_buffers=d_buffers,
               d_opt_state=d_opt_state)
    new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, {k: getattr(state, k) for k in new})
    averaged = state.ema
    if averaged is not None:
        averaged = jax.tree.map(lambda a, b: jnp.where(ok, a, b), optim.ema_update(state.ema, new["params"], p.ema_decay),
                                state.ema)
    metrics = {"loss": loss_g, "G_GAN": g_gan, "G_L1": g_l1, "d_loss": loss_d, "D_real": d_real, "D_fake": d_fake,
               "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.float32)}
    rng = jax.random.split(state.rng)[0]
    nonfinite = jnp.where(ok, 0, state.nonfinite + 1)
    return state.replace(step=state.step + 1, rng=rng, ema=averaged, nonfinite=nonfinite, **new), metrics


# ------------------------------------------------------------------------------------------------- the kind


class Pix2Pix(SR):
    """A pix2pix generator against a PatchGAN on aligned pairs; see the module docstring and `jaxsr.train.kind.Kind`."""

    carryable = ("opt_state", "d_opt_state", "ema")
    resolve_config = staticmethod(resolve_config)

    @staticmethod
    def check(cfg):
        check_pix2pix(cfg)
        optim.build_optimizer(cfg.optim, cfg.train.total_steps)
        optim.build_optimizer(cfg.optim_d, cfg.train.total_steps)
        evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        aligned.list_pairs(cfg.data.train_dir, "data.train_dir")
        if cfg.data.val_dir:
            aligned.list_pairs(cfg.data.val_dir, "data.val_dir")

    def __init__(self, cfg, workdir, mesh, meta=None):
        self.p = check_pix2pix(cfg)
        self.cfg = cfg
        resume_spec = meta.get("spec") if meta else None
        if resume_spec is not None and cfg.init_weights:
            log.info(f"resuming from the checkpoint at step {meta['step']}: init_weights ({cfg.init_weights}) is not "
                     "applied, the checkpoint holds the weights")
        try:
            tx = optim.build_optimizer(cfg.optim, cfg.train.total_steps)
            tx_d = optim.build_optimizer(cfg.optim_d, cfg.train.total_steps)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.perceptual = evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        model, self.spec = build_generator(cfg, resume_spec)
        full = {**archs.get(self.spec["arch"]).defaults, **self.spec}
        d_spec = {**cfg.gan.discriminator.to_dict(), "in_ch": int(full["in_ch"]) + int(full["out_ch"])}
        disc = archs.build(d_spec, rngs=nnx.Rngs(cfg.seed + 1))
        if cfg.gan.init_weights and resume_spec is None:
            if not os.path.exists(cfg.gan.init_weights):
                raise ConfigError(f"gan.init_weights: no such file: {cfg.gan.init_weights}")
            weights.read(cfg.gan.init_weights, arch="patchgan", kind="discriminator").load_into(disc)
        self.data = self._data(cfg)
        if not self.data.val and (cfg.val.every or cfg.val.at_start or cfg.init_weights):
            raise ConfigError("no validation pair: give data.val_dir (A|B images, or A/ and B/ subfolders), or set val.every=0 "
                              "and val.at_start=False")
        self.meta = {"spec": self.spec}
        model.train()
        disc.train()
        eval_model = nnx.clone(model)
        eval_model.eval()
        self.eval_def = state_lib.split(eval_model)[0]
        g_def, d_def = state_lib.split(model)[0], state_lib.split(disc)[0]
        state = state_lib.create(model, tx, seed=cfg.seed, ema=uses_ema(cfg), disc=disc, tx_d=tx_d)
        self.state = parallel.replicate(mesh, state)
        self.parts = Parts(g_def, d_def, tx, tx_d, float(cfg.pix2pix.lambda_L1), cfg.pix2pix.gan_mode,
                           tuple(getattr(model, "value_range", (0.0, 1.0))), float(cfg.optim.ema_decay or 0.0))
        total, repl = cfg.train.total_steps, parallel.replicated(mesh)

        def step(state, batch):
            new, metrics = train_step(self.parts, state, batch)
            return new, {**metrics, "lr": optim.current_lr(cfg.optim, total, state.opt_state),
                         "lr_d": optim.current_lr(cfg.optim_d, total, state.d_opt_state)}

        self.step = jax.jit(step, donate_argnums=(0,), out_shardings=(repl,) * 2)
        self._preview = jax.jit(lambda params, buffers, a: state_lib.merge(self.eval_def, params, buffers)(
            to_range(self.parts, a)), out_shardings=repl)
        self._feed_plateau = None
        self._identity_psnr = None

    def _data(self, cfg):
        d, s = cfg.data, cfg.pix2pix
        pairs = aligned.list_pairs(d.train_dir, "data.train_dir")
        it = aligned.train_iterator(pairs, self.p, s.direction, cfg.seed, host_batch_size(cfg.train.batch_size),
                                    jax.process_index(), jax.process_count(), d.alpha, d.num_workers, d.read_threads,
                                    d.prefetch)
        val = []
        if d.val_dir:
            val = aligned.val_items(aligned.list_pairs(d.val_dir, "data.val_dir"), self.p, s.direction, d.alpha,
                                    d.val_max_images)
        return Data({"train": [a for a, _ in pairs]}, it, val)

    def summary(self, state):
        n = sum(x.size for x in jax.tree.leaves(state.params))
        nd = sum(x.size for x in jax.tree.leaves(state.d_params))
        return (f"pix2pix {self.spec['arch']} ({n:,} parameters, {self.cfg.pix2pix.direction}) against a "
                f"{self.cfg.gan.discriminator.get('net', 'n_layers')} PatchGAN ({nd:,}), gan_mode "
                f"{self.cfg.pix2pix.gan_mode}, lambda_L1 {self.cfg.pix2pix.lambda_L1}")

    def train_step(self, state, batch, step):
        return self.step(state, batch)

    def inspect_step(self, state, batch, step):
        raise ConfigError("kind='pix2pix' logs no per-layer statistics: set log.gradients=0 and log.parameters=0")

    def validate(self, model, split="val"):
        """PSNR/SSIM (RGB, no border cropped; LPIPS/DISTS/TOPIQ where configured) of G(A) against B, and the identity
        mapping's PSNR (A against B) as the baseline to beat."""
        scores, shown = [], []
        for item in self.data.val:
            fake = upscale(model, item["a"])
            scores.append(evaluate.score({"fake": fake}, item["b"], 0, y_channel=False, perceptual=self.perceptual)["fake"])
            if len(shown) < 4:
                shown.append((item["a"], quantize(fake), item["b"]))
        values = {k: mean_over_images([s[k] for s in scores]) for k in ("psnr", "ssim", *self.perceptual)}
        if self._identity_psnr is None:
            self._identity_psnr = mean_over_images([evaluate.score({"a": it["a"]}, it["b"], 0, y_channel=False)["a"]["psnr"]
                                                    for it in self.data.val])
        extra = "".join(f", {k.upper()} {values[k]:.4f}" for k in self.perceptual)
        line = (f"PSNR {values['psnr']:.3f} dB, SSIM {values['ssim']:.4f}{extra} of G(A) against B on {len(scores)} pair(s) "
                f"(identity A: PSNR {self._identity_psnr:.3f} dB)")
        return Scores(values, line, shown)

    def log_images(self, state, batch, step, board):
        """The batch's A, the eval weights' G(A) and B, as A|G(A)|B rows."""
        a = batch["a"][:4]
        lo, hi = self.parts.value_range
        fake = parallel.to_host(self._preview(eval_weights(self.cfg, state), state.buffers, a))
        board.images(step, "train/a_fake_b", parallel.to_host(a), (fake - lo) / (hi - lo), parallel.to_host(batch["b"][:4]))


__all__ = ["GAN_MODES", "Pix2Pix", "check_pix2pix", "default_config", "gan_term", "generator_multiple", "train_step"]
