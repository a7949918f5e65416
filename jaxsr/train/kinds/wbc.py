"""The `wbc` training kind: White-box Cartoonization (docs/wbc.md), photos (A) to cartoons (B) on unaligned data, as
SystemErrorWang/White-box-Cartoonization's train_code/train.py and victorca25/traiNNer's WBCModel train it.

G is `wbcunet` ([-1, 1]); its output is guided-filtered with the photo as guide (r=1, eps=1e-2) before every loss.
Two discriminators, the original's `disc_sn` (three stages of two 3x3 spectral-norm convs, the first of each with
stride 2, LeakyReLU 0.2, widths nf * 2^i, then a 1x1 spectral-norm conv to one patch logit), or with
wbc.netD='patchgan_sn' the port's spectral-norm PatchGAN (the `patchgan` arch, spectral_norm=True): D_S judges the surface
representation (`wbc_representations.surface` of the cartoon against that of the output), D_T the texture (one colour
shift draw per step, the same for both). LSGAN: G takes mean((D(fake) - 1)^2), D 0.5 (mean((D(real) - 1)^2) +
mean(D(fake)^2)). The port's order: D_S and D_T update first on the current G's fakes, detached, then G against the
updated discriminators (docs/wbc.md).

G's objective, the port's selectors: surface_scale * (GAN_S + surf_losses(fake_blur, real_blur)), texture_scale *
(GAN_T + text_losses(fake_gray, real_gray)), struct_scale * struct_losses(out, superpixel target of out),
content_scale * cont_losses(out, photo), reg_scale * reg_losses(out), and lambda_identity * idt_losses(G(cartoon),
cartoon). Loss names (the port's): 'pix' = L1, 'fea' = L1 of VGG19 conv4_4 features (wbc.vgg_weights, torchvision's
VGG19; inputs mapped from [-1, 1] and ImageNet-normalised, as the port's perceptual loss), 'tv' = the original's
total_variation_loss ((mean dy^2 + mean dx^2) / (3 H W)); others are refused by name. The original's numbers
(train.py): surface 0.1, texture 1, structure = content = 200 on mean|dphi| / (h w c) and tv 1e4; see
jaxsr/recipes/wbc.py.

Phases: steps < wbc.init_steps train G alone on init_losses(out, photo) (the original's pretrain.py: L1 of the raw
output against the photo, no guided filter); D_S, D_T and their optimizer are not touched. Then the adversarial
phase. The structure target (SLIC + adaptive colouring of the filtered output, the original's simple_superpixel) is
computed from a forward of the current G: with wbc.superpixel='device' (the default) inside the compiled step by
`wbc_representations.superpixel_target_device`; with 'host' on the host before each adversarial step by skimage's
slic, images in parallel threads, its time per batch logged (`superpixel_s`), not overlapped (see docs/wbc.md).
"""
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from ml_collections import config_dict

from jaxsr import archs, evaluate, optim, parallel, weights
from jaxsr.archs.common import lrelu
from jaxsr.archs.unet.model import SNConv2d
from jaxsr.data import aligned, unaligned
from jaxsr.data.loader import host_batch_size
from jaxsr.data.sources import list_folder
from jaxsr.errors import ConfigError, DataError
from jaxsr.guided_filter import guided_filter
from jaxsr.imageio import quantize
from jaxsr.infer import upscale
from jaxsr.losses import pixel
from jaxsr.losses.perceptual import PerceptualLoss
from jaxsr.metrics import mean_over_images
from jaxsr.train import state as state_lib
from jaxsr.train.kind import Scores
from jaxsr.train.kinds import wbc_representations as rep
from jaxsr.train.kinds.sr import SR, Data, compute_dtype, resolve_model
from jaxsr.train.logger import log

LISTS = ("surf_losses", "text_losses", "struct_losses", "cont_losses", "reg_losses", "idt_losses", "init_losses")
BUILT = ("pix", "fea", "tv")  # the port's names this kind maps onto jaxsr's losses
OUTPUT_FILTER = (1, 1e-2)  # (r, eps) of the guided filter on G's output, photo as guide


def default_config():
    """The `wbc` section: the port's option names (train_wbc.yml), its defaults."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.preprocess = "crop"  # as pix2pix.preprocess (jaxsr.data.aligned)
    c.load_size = 256
    c.crop_size = 256
    c.center_crop_size = 256
    c.no_flip = False
    c.init_steps = 0  # G alone on init_losses first (the original's pretrain.py: 50k steps)
    c.init_losses = ("pix",)
    c.surf_losses, c.text_losses = (), ()
    c.struct_losses, c.cont_losses, c.reg_losses = ("fea",), ("fea",), ("tv",)
    c.idt_losses = ("pix",)
    c.surface_scale, c.texture_scale, c.struct_scale, c.content_scale, c.reg_scale = 0.1, 1.0, 1.0, 1.0, 1.0
    c.lambda_identity = 0.0  # > 0: idt_losses(G(cartoon), cartoon) times it
    c.gan_weight = 1.0  # on both GAN terms (the port's gan_weight; the original: 1)
    c.ndf = 32  # the discriminators' width (disc_sn's channel)
    c.netD = "disc_sn"  # D_S and D_T: 'disc_sn' (the original's) or 'patchgan_sn' (the port's, train_wbc.yml's)
    c.colorshift = "uniform"  # the texture's weight draws: 'uniform' or 'normal'
    c.border = "reflect"  # the guided filters' border: 'reflect' (the port) or 'valid' (the original)
    c.n_segments = 200  # SLIC segments of the structure target
    c.superpixel = "device"  # its SLIC: 'device' (jax, inside the compiled step) or 'host' (skimage's, threads, exact)
    c.superpixel_threads = 4
    c.vgg_weights = config_dict.placeholder(str)  # torchvision VGG19 for 'fea'
    # the port's concat_unaligned: folder lists (the k-th photo folder with the k-th cartoon folder); when set, they
    # replace data.train_dir's trainA/ and trainB/. Each batch is drawn from one pair with sampler_weights (one per
    # pair; empty: (4, 1) for two pairs, the port's scenery/face template)
    c.dataroot_A, c.dataroot_B, c.sampler_weights = (), (), ()
    return c


class DiscSN(nnx.Module):
    """The original's disc_sn (patch=True) with spectral-norm convs; (N, H/8, W/8, 1) logits. Padding as torch's
    (1 on each side), where TF's 'SAME' pads the stride-2 convs on the bottom/right only."""

    def __init__(self, in_ch, ndf=32, *, rngs):
        convs, ch = [], in_ch
        for i in range(3):
            w = ndf * 2**i
            convs += [SNConv2d(ch, w, 3, 2, 1, rngs=rngs), SNConv2d(w, w, 3, 1, 1, rngs=rngs)]
            ch = w
        self.convs = nnx.List(convs)
        self.conv_out = SNConv2d(ch, 1, 1, rngs=rngs)

    def __call__(self, x):
        for c in self.convs:
            x = lrelu(c(x), 0.2)
        return self.conv_out(x)


NETD = ("disc_sn", "patchgan_sn")


def discriminator(net, in_ch, ndf, seed):
    """D_S (in_ch = G's out_ch) or D_T (1): the original's disc_sn, or 'patchgan_sn', the port's (train_wbc.yml's
    network_D patchgan, spectral_norm, n_layers 3: traiNNer's NLayerDiscriminator(use_spectral_norm=True), the
    `patchgan` arch with spectral_norm=True)."""
    if net == "patchgan_sn":
        spec = {"arch": "patchgan", "net": "n_layers", "in_ch": in_ch, "ndf": ndf, "n_layers": 3, "norm": "none",
                "spectral_norm": True}
        return archs.build(spec, rngs=nnx.Rngs(seed))
    return DiscSN(in_ch, ndf, rngs=nnx.Rngs(seed))


def tv_loss(x):
    """The original's total_variation_loss (k_size 1)."""
    h, w = x.shape[1:3]
    dy = jnp.mean((x[:, 1:] - x[:, :-1]) ** 2)
    dx = jnp.mean((x[:, :, 1:] - x[:, :, :-1]) ** 2)
    return (dy + dx) / (3 * h * w)


def lsgan(pred, real):
    return jnp.mean((pred.astype(jnp.float32) - (1.0 if real else 0.0)) ** 2)


def check_wbc(cfg):
    """What kind='wbc' refuses, one line naming the field each; the checked Preprocess."""
    s = cfg.wbc
    if cfg.model.arch != "wbcunet":
        raise ConfigError(f"kind='wbc' trains the White-box Cartoonization U-Net: set model.arch='wbcunet' (or 'auto' with "
                          f"init_weights), not {cfg.model.arch!r}")
    if int(cfg.scale) != 1:
        raise ConfigError(f"kind='wbc' translates at the input's size: set scale=1, not {cfg.scale}")
    if len(cfg.losses):
        raise ConfigError(f"kind='wbc' has its own objective (wbc.*_losses and scales): set losses={{}}, not {', '.join(cfg.losses)}")
    for field in LISTS:
        for name in s[field]:
            if name not in BUILT:
                raise ConfigError(f"wbc.{field}: {name!r} is not built; use {', '.join(BUILT)} (the original's set)")
            if name == "fea" and field == "text_losses":
                raise ConfigError("wbc.text_losses: 'fea' needs RGB; the texture representation has one channel")
            if name == "fea" and not s.vgg_weights:
                raise ConfigError(f"wbc.{field} has 'fea' (VGG19 conv4_4): set wbc.vgg_weights to torchvision's VGG19 file")
    if s.border not in ("reflect", "valid"):
        raise ConfigError(f"wbc.border must be 'reflect' or 'valid', got {s.border!r}")
    if s.netD not in NETD:
        raise ConfigError(f"wbc.netD must be one of {', '.join(NETD)} (the original's, the port's), got {s.netD!r}")
    if s.colorshift not in ("uniform", "normal"):
        raise ConfigError(f"wbc.colorshift must be 'uniform' or 'normal', got {s.colorshift!r}")
    if s.superpixel not in ("device", "host"):
        raise ConfigError(f"wbc.superpixel must be 'device' (a jax SLIC in the step) or 'host' (skimage's), not "
                          f"{s.superpixel!r}")
    if int(s.init_steps) < 0 or float(s.lambda_identity) < 0:
        raise ConfigError("wbc.init_steps and wbc.lambda_identity must be >= 0")
    if not (cfg.data.train_dir or s.dataroot_A or s.dataroot_B) or cfg.data.hr_dir or cfg.data.packed or cfg.data.sources:
        raise ConfigError("kind='wbc' reads data.train_dir's trainA/ (photos) and trainB/ (cartoons), or A/ and B/, or the "
                          "folder lists wbc.dataroot_A and wbc.dataroot_B; data.hr_dir, data.packed and data.sources are "
                          "not supported")
    if s.dataroot_A or s.dataroot_B:
        a, _ = unaligned.concat_folders(s.dataroot_A, s.dataroot_B, "wbc.dataroot_A", "wbc.dataroot_B")
        unaligned.concat_weights(len(a), s.sampler_weights, "wbc.sampler_weights")
    elif s.sampler_weights:
        raise ConfigError("wbc.sampler_weights weighs the wbc.dataroot_A/dataroot_B folders: set those lists, or leave "
                          "it empty")
    p = aligned.make(s, 4)
    if not aligned.fixed_size(p) and int(cfg.train.batch_size) != 1:
        raise ConfigError(f"wbc.preprocess={s.preprocess!r} leaves each image its own size: set train.batch_size=1 or crop")
    refused = (("optim.accumulate", int(cfg.optim.accumulate) != 1), ("optim.ema_decay", bool(cfg.optim.ema_decay)),
               ("compute_dtype", cfg.compute_dtype == "float16"), ("val.test_every", bool(cfg.val.test_every)),
               ("val.extra", bool(cfg.val.extra)), ("log.gradients", bool(cfg.log.gradients)),
               ("log.parameters", bool(cfg.log.parameters)),
               ("optim.schedule", "plateau" in (cfg.optim.schedule, cfg.optim_d.schedule)),
               ("optim.name", optim.is_schedule_free(cfg.optim) or optim.is_schedule_free(cfg.optim_d)))
    for field, bad in refused:
        if bad:
            raise ConfigError(f"kind='wbc' does not support {field} (no accumulation, EMA, float16 loss scaling, plateau or "
                              "schedule-free optimizer, test split, extra validation sets or per-layer statistics)", field)
    return p


def train_sets(cfg):
    """([(photos, cartoons)] per sub-dataset, their sampler weights): the wbc.dataroot_A/B lists when set, else
    data.train_dir's one pair of folders."""
    s = cfg.wbc
    if s.dataroot_A or s.dataroot_B:
        sets = unaligned.concat_sets(s.dataroot_A, s.dataroot_B, "wbc.dataroot_A", "wbc.dataroot_B")
        return sets, unaligned.concat_weights(len(sets), s.sampler_weights, "wbc.sampler_weights")
    return [unaligned.list_domains(cfg.data.train_dir, "train", "data.train_dir")], (1.0,)


def val_photos(folder):
    """The held-out photos: <folder>/testA/ or <folder>/A/ (no cartoons needed)."""
    for sub in ("testA", "A"):
        if os.path.isdir(os.path.join(folder, sub)):
            return list_folder(os.path.join(folder, sub), "data.val_dir photos")
    raise DataError(f"data.val_dir {folder!r} has neither testA/ nor A/ (the held-out photos); add one or set data.val_dir=None")


class Parts(NamedTuple):
    g_def: Any
    d_defs: Any  # {D_S, D_T}
    tx: optax.GradientTransformation
    tx_d: optax.GradientTransformation
    fns: dict  # wbc.<list> -> [(name, fn(fake, real, vgg_params))]
    scales: dict  # surf, text, struct, cont, reg, idt, gan
    border: str
    colorshift: str
    n_segments: int = 200  # SLIC segments of the device structure target


def _fns(s, vgg):
    out = {}
    for field in LISTS:
        fs = []
        for name in s[field]:
            if name == "pix":
                fs.append((name, lambda a, b, v: pixel.l1(a, b)))
            elif name == "fea":
                fs.append((name, lambda a, b, v: vgg(a, b, v)))
            else:
                fs.append((name, lambda a, b, v: tv_loss(a)))
        out[field] = fs
    return out


def _terms(p, field, fake, real, vgg_params, logs, tag):
    total = 0.0
    for name, fn in p.fns[field]:
        logs[f"{name}_{tag}"] = fn(fake.astype(jnp.float32), real.astype(jnp.float32), vgg_params)
        total = total + logs[f"{name}_{tag}"]
    return total


def filtered(p, g, photo):
    """G's output guided-filtered with the photo as guide (r=1, eps=1e-2)."""
    return guided_filter(g(photo).astype(jnp.float32), photo, *OUTPUT_FILTER, border=p.border)


def init_step(p, state, batch, vgg_params):
    """G alone on init_losses(G(photo), photo); D, its state and optimizer untouched."""
    photo = batch["a"] * 2 - 1

    def loss_fn(params):
        g = state_lib.merge(p.g_def, params, state.buffers)
        logs = {}
        total = _terms(p, "init_losses", g(photo), photo, vgg_params, logs, "init")
        return total, (logs, state_lib.split(g)[2])

    (loss, (logs, buffers)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = p.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = dict(params=params, buffers=buffers, opt_state=opt_state)
    new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, {k: getattr(state, k) for k in new})
    metrics = {"loss": loss, **logs, "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.float32)}
    return state.replace(step=state.step + 1, nonfinite=jnp.where(ok, 0, state.nonfinite + 1), **new), metrics


def adv_step(p, state, batch, target, vgg_params):
    """The port's order: D_S and D_T on the current G's fakes, detached (each on fake, then real), then G against the
    updated discriminators. `target` None: the structure target is computed here from those fakes' output
    (wbc.superpixel='device')."""
    photo, cartoon = batch["a"] * 2 - 1, batch["b"] * 2 - 1
    rng, k_cs = jax.random.split(state.rng)
    cs = rep.colorshift_weights(k_cs, p.colorshift)
    real_blur = rep.surface(cartoon, p.border)
    real_gray = rep.color_shift(cartoon, cs)
    out0 = jax.lax.stop_gradient(filtered(p, state_lib.merge(p.g_def, state.params, state.buffers), photo))
    if target is None:
        target = rep.superpixel_target_device(out0, p.n_segments)
    fakes = {"D_S": (real_blur, rep.surface(out0, p.border)), "D_T": (real_gray, rep.color_shift(out0, cs))}

    def d_loss(d_params):
        d = {n: state_lib.merge(p.d_defs[n], d_params[n], state.d_buffers[n]) for n in fakes}
        out = {n: 0.5 * (lsgan(d[n](fake), False) + lsgan(d[n](real), True)) for n, (real, fake) in fakes.items()}
        return out["D_S"] + out["D_T"], (out, {n: state_lib.split(m)[2] for n, m in d.items()})

    (loss_d, (d_logs, d_buffers)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(state.d_params)
    d_updates, d_opt_state = p.tx_d.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)
    sc = p.scales

    def g_loss(params):
        g = state_lib.merge(p.g_def, params, state.buffers)
        d = {n: state_lib.merge(p.d_defs[n], d_params[n], d_buffers[n]) for n in fakes}
        out = filtered(p, g, photo)
        fake_blur, fake_gray = rep.surface(out, p.border), rep.color_shift(out, cs)
        logs = {"gan_S": sc["gan"] * lsgan(d["D_S"](fake_blur), True), "gan_T": sc["gan"] * lsgan(d["D_T"](fake_gray), True)}
        total = sc["surf"] * (logs["gan_S"] + _terms(p, "surf_losses", fake_blur, real_blur, vgg_params, logs, "surf"))
        total += sc["text"] * (logs["gan_T"] + _terms(p, "text_losses", fake_gray, real_gray, vgg_params, logs, "text"))
        total += sc["struct"] * _terms(p, "struct_losses", out, target, vgg_params, logs, "struct")
        total += sc["cont"] * _terms(p, "cont_losses", out, photo, vgg_params, logs, "cont")
        total += sc["reg"] * _terms(p, "reg_losses", out, cartoon, vgg_params, logs, "reg")
        if sc["idt"] > 0:
            total += sc["idt"] * _terms(p, "idt_losses", g(cartoon), cartoon, vgg_params, logs, "idt")
        return total, (logs, state_lib.split(g)[2], {n: state_lib.split(m)[2] for n, m in d.items()})

    (loss, (logs, buffers, new_d_buffers)), grads = jax.value_and_grad(g_loss, has_aux=True)(state.params)
    updates, opt_state = p.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(loss_d) & jnp.isfinite(grad_norm)
    new = dict(params=params, buffers=buffers, opt_state=opt_state, d_params=d_params, d_buffers=new_d_buffers,
               d_opt_state=d_opt_state)
    new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, {k: getattr(state, k) for k in new})
    metrics = {"loss": loss, **logs, "d_loss": loss_d, **d_logs, "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.float32)}
    return state.replace(step=state.step + 1, rng=rng, nonfinite=jnp.where(ok, 0, state.nonfinite + 1), **new), metrics


class WBC(SR):
    """G (wbcunet), D_S and D_T on photos and cartoons; see the module docstring and `jaxsr.train.kind.Kind`."""

    carryable = ("opt_state", "d_opt_state")
    resolve_config = staticmethod(resolve_model)  # model.arch='auto' as the sr kind resolves it

    @staticmethod
    def check(cfg):
        check_wbc(cfg)
        optim.build_optimizer(cfg.optim, cfg.train.total_steps)
        optim.build_optimizer(cfg.optim_d, cfg.train.total_steps)
        evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        train_sets(cfg)
        if cfg.data.val_dir:
            val_photos(cfg.data.val_dir)

    def __init__(self, cfg, workdir, mesh, meta=None):
        self.p = check_wbc(cfg)
        self.cfg, s = cfg, cfg.wbc
        if jax.process_count() > 1 and s.superpixel == "host":
            raise ConfigError("wbc.superpixel='host' computes the structure target on one host's whole batch: run it on "
                              "one host, or use 'device'")
        try:
            tx = optim.build_optimizer(cfg.optim, cfg.train.total_steps)
            tx_d = optim.build_optimizer(cfg.optim_d, cfg.train.total_steps)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.perceptual = evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        self.spec = (meta or {}).get("spec") or {**archs.get("wbcunet").defaults, **cfg.model.to_dict(), "scale": 1}
        self.meta = {"spec": self.spec}
        g = archs.build(self.spec, rngs=nnx.Rngs(cfg.seed), dtype=compute_dtype(cfg.compute_dtype))
        if cfg.init_weights and meta is None:
            weights.read(cfg.init_weights, arch="wbcunet").load_into(g)
            log.info(f"warm start of G from {cfg.init_weights}")
        out_ch = int(self.spec["out_ch"])
        ds = {"D_S": discriminator(s.netD, out_ch, int(s.ndf), cfg.seed + 1),
              "D_T": discriminator(s.netD, 1, int(s.ndf), cfg.seed + 2)}
        self.data = self._data(cfg)
        if not self.data.val and (cfg.val.every or cfg.val.at_start):
            raise ConfigError("no validation photos: give data.val_dir (testA/, or A/), or set val.every=0 and val.at_start=False")
        g.train()
        e = nnx.clone(g)
        e.eval()
        self.eval_def = state_lib.split(e)[0]
        g_def, params, buffers = state_lib.split(g)
        dsplit = {n: state_lib.split(m) for n, m in ds.items()}
        d_params = {n: v[1] for n, v in dsplit.items()}
        vgg = None
        if any(n == "fea" for f in LISTS for n in s[f]):
            vgg = PerceptualLoss(s.vgg_weights, {"conv4_4": 1.0}, "l1", True, True, "wbc.vgg_weights")
        self.vgg_params = vgg.params if vgg else None
        state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, buffers=buffers, opt_state=tx.init(params),
                                     ema=None, rng=jax.random.PRNGKey(cfg.seed), nonfinite=jnp.zeros((), jnp.int32),
                                     d_params=d_params, d_buffers={n: v[2] for n, v in dsplit.items()},
                                     d_opt_state=tx_d.init(d_params))
        self.state = parallel.replicate(mesh, state)
        scales = dict(surf=float(s.surface_scale), text=float(s.texture_scale), struct=float(s.struct_scale),
                      cont=float(s.content_scale), reg=float(s.reg_scale), idt=float(s.lambda_identity),
                      gan=float(s.gan_weight))
        self.parts = Parts(g_def, {n: v[0] for n, v in dsplit.items()}, tx, tx_d, _fns(s, vgg), scales, s.border, s.colorshift,
                           int(s.n_segments))
        total, repl = cfg.train.total_steps, parallel.replicated(mesh)
        self.mesh = mesh

        def lrs(state):
            return {"lr": optim.current_lr(cfg.optim, total, state.opt_state),
                    "lr_d": optim.current_lr(cfg.optim_d, total, state.d_opt_state)}

        def init(state, batch, vgg_params):
            new, metrics = init_step(self.parts, state, batch, vgg_params)
            return new, {**metrics, **lrs(state)}

        def adv(state, batch, target, vgg_params):
            new, metrics = adv_step(self.parts, state, batch, target, vgg_params)
            return new, {**metrics, **lrs(state)}

        self.init = jax.jit(init, donate_argnums=(0,), out_shardings=(repl,) * 2)
        self.adv = jax.jit(adv, donate_argnums=(0,), out_shardings=(repl,) * 2)
        self.forward = jax.jit(lambda params, buffers, a: filtered(self.parts, state_lib.merge(g_def, params, buffers), a * 2 - 1))
        self.pool = ThreadPoolExecutor(max(1, int(s.superpixel_threads)))
        self._feed_plateau = None

    def _data(self, cfg):
        d = cfg.data
        sets, w = train_sets(cfg)
        if cfg.wbc.dataroot_A:
            log.info(f"wbc data (wbc.dataroot_A/B, data.train_dir unused): "
                     f"{unaligned.describe(cfg.wbc.dataroot_A, cfg.wbc.dataroot_B, sets, w)}")
        it = unaligned.concat_train_iterator(sets, w, self.p, cfg.seed, host_batch_size(cfg.train.batch_size),
                                             jax.process_index(), jax.process_count(), d.alpha, d.num_workers,
                                             d.read_threads, d.prefetch)
        a, b = [f for s in sets for f in s[0]], [f for s in sets for f in s[1]]
        val = None
        if d.val_dir:
            va = val_photos(d.val_dir)
            val = {"A": unaligned.val_items(va, self.p, d.alpha, d.val_max_images)}
        return Data({"train": a, "train_B": b}, it, val)

    def summary(self, state):
        n = {"G": sum(x.size for x in jax.tree.leaves(state.params)),
             **{k: sum(x.size for x in jax.tree.leaves(v)) for k, v in state.d_params.items()}}
        s = self.cfg.wbc
        return (f"wbc {self.spec['arch']}: G {n['G']:,} parameters, D_S {n['D_S']:,} and D_T {n['D_T']:,} ({s.netD}); "
                f"init_steps {s.init_steps}; scales surface {s.surface_scale}, texture {s.texture_scale}, structure "
                f"{s.struct_scale}, content {s.content_scale}, reg {s.reg_scale}")

    def superpixel(self, state, batch):
        """(the structure target of this batch ([-1, 1]) from the current G, the host seconds SLIC took): one image per
        thread."""
        out = np.asarray(jax.device_get(self.forward(state.params, state.buffers, batch["a"])), np.float32)
        n, t0 = self.cfg.wbc.n_segments, time.perf_counter()
        parts = list(self.pool.map(lambda im: rep.superpixel_target(im[None], n)[0], list(out)))
        return np.stack(parts), time.perf_counter() - t0

    def train_step(self, state, batch, step):
        if step < int(self.cfg.wbc.init_steps):
            return self.init(state, batch, self.vgg_params)
        if self.cfg.wbc.superpixel == "device":  # the target inside the compiled step: no host time to log
            return self.adv(state, batch, None, self.vgg_params)
        target, took = self.superpixel(state, batch)
        target = parallel.global_batch(self.mesh, {"t": target})["t"]
        state, metrics = self.adv(state, batch, target, self.vgg_params)
        return state, {**metrics, "superpixel_s": np.float32(took)}

    def inspect_step(self, state, batch, step):
        raise ConfigError("kind='wbc' logs no per-layer statistics: set log.gradients=0 and log.parameters=0")

    def deployable(self, state):
        """The eval-mode generator."""
        return nnx.merge(self.eval_def, parallel.to_host(state.params), parallel.to_host(state.buffers))

    def validate(self, model, split="val"):
        """PSNR / SSIM of the cartoon against its photo (how much content survives; RGB, no border cropped) on the
        held-out photos. Rows: photo, cartoon, cartoon."""
        scores, shown = [], []
        for item in self.data.val["A"]:
            out = upscale(model, item["img"])  # filtered as jaxsr.infer does (the model's guided_filter)
            scores.append(evaluate.score({"out": out}, item["img"], 0, y_channel=False, perceptual=self.perceptual)["out"])
            if len(shown) < 4:
                shown.append((item["img"], quantize(out), quantize(out)))
        values = {k: mean_over_images([s[k] for s in scores]) for k in ("psnr", "ssim", *self.perceptual)}
        line = f"photo-to-cartoon PSNR {values['psnr']:.3f} dB, SSIM {values['ssim']:.4f} on {len(scores)} photo(s)"
        return Scores(values, line, shown)

    def export(self, model, base):
        """base.pth (the port's wbcunet layout) and .safetensors (and .onnx with export.onnx)."""
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
        """The batch's photo | cartoon | a cartoon of B (unaligned)."""
        model = self.deployable(state)
        a, b = parallel.to_host(batch["a"][:4]), parallel.to_host(batch["b"][:4])
        out = np.asarray(filtered(self.parts, model, jnp.asarray(a) * 2 - 1))
        board.images(step, "train/photo_cartoon_b", a, np.clip((out + 1) / 2, 0, 1), b)


__all__ = ["WBC", "DiscSN", "adv_step", "check_wbc", "default_config", "discriminator", "init_step", "tv_loss"]
