"""The `sftgan` training kind: SFT-Net conditioned on segmentation probability maps, against SFTGAN's ACD discriminator
with its category loss, as victorca25/traiNNer's `SFTGAN_ACD_model.py` and `LRHR_seg_bg_dataset.py` train it
(docs/sftgan.md).

Data: each training image (data.train_dir, or data.hr_dir's split) with its map in `sftgan.seg_dir`, found by the
image's path relative to that folder (`<stem>_bic.pth` as `python -m jaxsr.segment` and SFTGAN's
test_segmentation.py write them, `<stem>.pth` as traiNNer's bicseg/ folders, or `<stem>.npy`, HxWxclasses). The map
covers the HR image's modcrop-8 part, so the HR is cut to the map's size; the crop, flip and rotation are drawn once
and applied to both (`jaxsr.data.transforms.augment`). The category the ACD's classifier learns is the reference's:
the first of building, plant, mountain, water, sky, grass, animal (1..7) that the relative path contains, else 0
(background, which the cross-entropy ignores). `sftgan.bg_dir` holds background images (the reference's DIV2K
`dataroot_HR_bg`): a `bg_ratio` share of the samples (the reference's 1 in 10) comes from it, with a map that is
all class 0 and category 0. The LR is the MATLAB-bicubic x1/4 of the HR crop, made on the device as degrade.mode
'bicubic' makes it.

G: the losses of `config.losses` (pixel, perceptual, the `gan` entry on the ACD's real/fake logit) plus the category
cross-entropy of D's classifier on SR, weighted by the `gan` entry's weight (the reference's l_gan_w). D: GAN real +
fake and the category cross-entropy on real and on fake, each weight 1. G's parameters are two Adam groups as
the reference's two optimizers: those whose torch name holds 'SFT' or 'Cond' at optim.lr x sftgan.sft_lr_mult (5),
the others (the trunk and tail, what transfer_params_sft fills from an SRResNet) at optim.lr, updated only from step
sftgan.trunk_delay on (20000: the reference steps them after its iteration 20000); before that their updates are
exactly zero and their optimizer state untouched. Both groups and D follow their schedules by train step, as
traiNNer steps every scheduler every iteration.

Initialisation: an SFT-Net init_weights loads whole; an SRResNet / MSRResNet one (any jaxsr.archs.srresnet layout)
goes in as traiNNer's scripts/transfer_params_sft.py puts SRGAN_bicx4_noBN_DIV2K.pth into sft_net_ini.pth: every
tensor first kaiming_normal (fan_in) x 0.1 with zero biases, then the first conv, the residual blocks' two convs,
the trunk's closing conv (the original layout has one; MSRResNet has none) and the four tail convs copied in.
"""
import os
from typing import Any, NamedTuple

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from ml_collections import config_dict

from jaxsr import archs, data, evaluate, optim, parallel, weights
from jaxsr.archs.bridge import load_state_dict, state_dict
from jaxsr.data.loader import TrainIterator, WeightedChoice, host_batch_size
from jaxsr.data.sources import list_folder, read_rgb, stored, to_rgb
from jaxsr.data.transforms import augment
from jaxsr.degrade import augment as degrade_augment
from jaxsr.degrade import ops
from jaxsr.errors import ConfigError, DataError, ImageError
from jaxsr.imageio import pad_to, quantize, to_float
from jaxsr.infer import MAP_SUFFIXES, find_map, read_map, upscale
from jaxsr.metrics import mean_over_images
from jaxsr.train import state as state_lib
from jaxsr.train.kind import Scores, refuse_unsupported
from jaxsr.train.kinds.sr import (SR, Data, build_discriminator, build_objective, build_optimizers, compute_dtype,
                                  generator_spec, resolve_model, uses_ema)
from jaxsr.train.kinds.sr import build_generator as sr_generator
from jaxsr.train.kinds.sr.step import apply_updates, ema, nonfinite_count
from jaxsr.train.logger import log

# The reference's categories (LRHR_seg_bg_dataset.py), matched in this order in the image's path; none: 0, background
CATEGORIES = ("building", "plant", "mountain", "water", "sky", "grass", "animal")
GROUPS = ("sft", "trunk")


def default_config():
    """The `sftgan` section: the maps, the background images, and the reference's two G learning rates."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.seg_dir = config_dict.placeholder(str)  # maps of the training images, named by their path relative to the folder
    c.val_seg_dir = config_dict.placeholder(str)  # maps of data.val_dir's images (default: seg_dir)
    c.bg_dir = config_dict.placeholder(str)  # background images (DIV2K): category 0, a map of class 0 everywhere
    c.bg_ratio = 0.1  # the share of samples drawn from bg_dir (the reference: 1 in 10)
    c.sft_lr_mult = 5.0  # lr of the 'SFT' and 'Cond' parameters, times optim.lr
    c.trunk_delay = 20_000  # the other G parameters are updated from this step on
    return c


# ------------------------------------------------------------------------------------------------- config


def check_sftgan(cfg):
    """What kind='sftgan' refuses, each in one line naming the field."""
    s = cfg.sftgan
    if cfg.model.arch != "sftgan":
        raise ConfigError(f"kind='sftgan' trains an SFT-Net: set model.arch='sftgan' (or 'auto' with an SFT-Net or SRResNet "
                          f"init_weights), not {cfg.model.arch!r}")
    if not cfg.gan.enabled or cfg.gan.discriminator.arch != "acd":
        raise ConfigError("kind='sftgan' trains against the ACD discriminator and its category loss: set gan.enabled=True "
                          "and gan.discriminator.arch='acd'")
    acd = {**archs.get("acd").defaults, **cfg.gan.discriminator.to_dict()}
    if int(acd["num_classes"]) <= len(CATEGORIES):
        raise ConfigError(f"gan.discriminator.num_classes={acd['num_classes']}: the ACD classifies the {len(CATEGORIES) + 1} "
                          "categories of the reference's dataset (background and 7 scene classes): set it to 8")
    if int(cfg.gan.discriminator.get("input_size", 0)) != int(cfg.data.gt_size):
        raise ConfigError(f"the ACD discriminator takes {cfg.gan.discriminator.get('input_size')} px crops but "
                          f"data.gt_size={cfg.data.gt_size}: set gan.discriminator.input_size to data.gt_size")
    if not s.seg_dir:
        raise ConfigError("kind='sftgan' needs sftgan.seg_dir, the training images' probability maps (python -m "
                          "jaxsr.segment --weights OutdoorSceneSeg_bic.pth --input TRAIN_DIR --output SEG_DIR)")
    if not (cfg.data.train_dir or cfg.data.hr_dir) or cfg.data.packed or cfg.data.sources:
        raise ConfigError("kind='sftgan' reads its images from data.train_dir (or data.hr_dir), whose paths name their maps "
                          "and categories; data.packed and data.sources are not supported")
    if cfg.data.lr_dir or cfg.data.train_lr_dir or cfg.data.val_lr_dir:
        raise ConfigError("kind='sftgan' makes the LR from the HR (MATLAB bicubic, as SFTGAN's options): unset "
                          "data.lr_dir, data.train_lr_dir and data.val_lr_dir")
    d = cfg.degrade
    if d.mode != "bicubic" or d.gt_size not in (0, cfg.data.gt_size) or d.mono.enabled or (
            d.get("augment") is not None and degrade_augment.enabled(d.augment)):
        raise ConfigError("kind='sftgan' takes the LR as MATLAB bicubic of the HR crop its map is cut with: set "
                          "degrade.mode='bicubic', degrade.gt_size=data.gt_size, no mono step and no degrade.augment")
    if not 0 <= float(s.bg_ratio) < 1 or float(s.sft_lr_mult) <= 0 or int(s.trunk_delay) < 0:
        raise ConfigError(f"sftgan.bg_ratio must be in [0, 1), sftgan.sft_lr_mult > 0 and sftgan.trunk_delay >= 0; got "
                          f"{s.bg_ratio}, {s.sft_lr_mult}, {s.trunk_delay}")
    objective = build_objective(cfg)
    other = [t.key for t in objective.terms if (set(t.inputs) - {"sr", "target", "params", "fake_logits", "real_logits"})
             or t.target != "gt"]
    if other or objective.gan.r1_weight > 0:
        raise ConfigError(f"kind='sftgan' gives its losses SR, the GT and the ACD's logits: losses.{(other or ['gan'])[0]} "
                          "needs more (feature matching, LDL, gt_usm or R1 are not supported)")
    refuse_unsupported(cfg, ": D trains from the first step and G keeps "
                       "two optimizer states (no accumulation, plateau or schedule-free optimizer, float16 loss "
                       "scaling, per-layer statistics), and only validation images have maps",
                       ("gan.start_step", cfg.gan.start_step, cfg.gan.start_step != 0),
                       ("optim.accumulate", cfg.optim.accumulate, int(cfg.optim.accumulate) != 1),
                       ("optim.schedule", cfg.optim.schedule, cfg.optim.schedule == "plateau"),
                       ("optim.name", cfg.optim.name, optim.is_schedule_free(cfg.optim)),
                       ("val.test_every", cfg.val.test_every, bool(cfg.val.test_every)),
                       ("val.extra", "...", bool(cfg.val.extra)))


def resolve_config(cfg, workdir):
    """model.arch='auto' with an SRResNet init_weights: an SFT-Net (SFT_Net, the reference's defaults) with the file's
    trunk widths and depth; otherwise as the sr kind (an SFT-Net file's own spec)."""
    saved = workdir and os.path.exists(os.path.join(workdir, "config.json"))
    if cfg.model.arch != "auto" or saved or not cfg.init_weights or not os.path.exists(cfg.init_weights):
        return resolve_model(cfg, workdir)
    w = weights.read(cfg.init_weights)
    if w.arch.name != "srresnet":
        return resolve_model(cfg, workdir)
    out = ml_collections.ConfigDict(cfg.to_dict(), type_safe=False)
    out.model = ml_collections.ConfigDict({"arch": "sftgan", **archs.get("sftgan").defaults, **_trunk(w.spec)},
                                          type_safe=False)
    return out


def _trunk(spec):
    return {k: int(spec[k]) for k in ("in_ch", "out_ch", "num_feat", "num_block")}


# ------------------------------------------------------------------------------------------------- initialisation


def transfer_pairs(layout, num_block):
    """[(SFT-Net module, SRResNet module)] that transfer_params_sft copies (weight and bias of each)."""
    if layout == "original":
        pairs = [("conv0", "model.0"), (f"sft_branch.{num_block + 1}", f"model.1.sub.{num_block}")]
        pairs += [(f"sft_branch.{i}.conv{j}", f"model.1.sub.{i}.res.{2 * j}") for i in range(num_block) for j in (0, 1)]
        return pairs + [("HR_branch.0", "model.2"), ("HR_branch.3", "model.5"), ("HR_branch.6", "model.8"),
                        ("HR_branch.8", "model.10")]
    pairs = [("conv0", "conv_first")]
    pairs += [(f"sft_branch.{i}.conv{j}", f"body.{i}.conv{j + 1}") for i in range(num_block) for j in (0, 1)]
    return pairs + [("HR_branch.0", "upconv1"), ("HR_branch.3", "upconv2"), ("HR_branch.6", "conv_hr"),
                    ("HR_branch.8", "conv_last")]


def _group(key):
    if key.startswith("CondNet."):
        return "CondNet"
    return "the SFT layers" if ".SFT_" in key else key.rsplit(".", 1)[0]


def transfer(w, spec, seed, dtype):
    """An SFT-Net for `spec` initialised from an SRResNet `Weights` as transfer_params_sft does; (model, log line)."""
    src_spec = w.spec
    if spec.get("version", "pytorch") != "pytorch":
        raise ConfigError("an SRResNet init_weights goes into SFT_Net (model.version='pytorch', whose pixel-shuffle tail its "
                          "upsampling convs fit), not SFT_Net_torch")
    if int(src_spec["scale"]) != 4:
        raise ConfigError(f"init_weights is a x{src_spec['scale']} SRResNet; SFT-Net is x4: give a x4 SRResNet/MSRResNet")
    full = {**archs.get("sftgan").defaults, **spec}
    differ = [k for k, v in _trunk(src_spec).items() if int(full[k]) != v]
    if differ:
        raise ConfigError(f"init_weights' SRResNet has {', '.join(f'{k}={src_spec[k]}' for k in differ)} but model has "
                          f"{', '.join(f'{k}={full[k]}' for k in differ)}: set them as the file's, or model.arch='auto'")
    src = state_dict(w.build()[0])
    model = archs.build(spec, rngs=nnx.Rngs(seed), dtype=dtype)
    sd = state_dict(model)
    rng = np.random.default_rng(seed)
    for k, v in sd.items():  # init.kaiming_normal(a=0, mode='fan_in') * 0.1, biases 0
        sd[k] = (rng.normal(0.0, 0.1 * np.sqrt(2.0 / np.prod(v.shape[1:])), v.shape) if k.endswith(".weight")
                 else np.zeros(v.shape)).astype(v.dtype)
    copied = set()
    for dst, s in transfer_pairs(src_spec.get("layout", "basicsr"), int(full["num_block"])):
        for leaf in ("weight", "bias"):
            sd[f"{dst}.{leaf}"] = src[f"{s}.{leaf}"]
            copied.add(f"{dst}.{leaf}")
    load_state_dict(model, sd, strict=True)
    left = {}
    for k in sd:
        if k not in copied:
            left[_group(k)] = left.get(_group(k), 0) + 1
    line = (f"transfer_params_sft from {w.source} ({src_spec.get('layout', 'basicsr')} SRResNet): {len(copied)} of "
            f"{len(sd)} tensors copied into SFT-Net's trunk and tail; left at their init (kaiming_normal x 0.1, zero bias): "
            + ", ".join(f"{g} ({n})" for g, n in left.items()))
    return model, line


def build_generator(cfg, resume_spec=None):
    """(model, spec): the sr kind's (an SFT-Net init_weights loads whole), or an SRResNet file transferred."""
    path = cfg.init_weights
    if resume_spec is not None or not path:
        return sr_generator(cfg, resume_spec)
    if not os.path.exists(path):
        raise ConfigError(f"init_weights: no such file or folder: {path}")
    w = weights.read(path)
    if w.arch.name != "srresnet":
        return sr_generator(cfg)
    spec = generator_spec(cfg)
    model, line = transfer(w, spec, cfg.seed, compute_dtype(cfg.compute_dtype))
    log.info(line)
    return model, spec


# ------------------------------------------------------------------------------------------------- data


def category(rel):
    """The reference's category of an image from its relative path: 1 + the index of the first of CATEGORIES in it,
    else 0 (background)."""
    return next((i + 1 for i, name in enumerate(CATEGORIES) if name in rel), 0)


def _warn_once(path, reason, seen=set()):  # noqa: B006 - once per process, as jaxsr.data's loader warns
    if path not in seen:
        seen.add(path)
        log.warning(f"data: skipping {path} ({reason}); using the next usable file in its place")


def fit_map(hr, seg, path):
    """(HR cut to the map's size, the map): a map covers the HR's modcrop-8 part; DataError for another size."""
    h, w = seg.shape[:2]
    if not (0 <= hr.shape[0] - h < 8 and 0 <= hr.shape[1] - w < 8):
        raise DataError(f"its map is {w}x{h}, not the {hr.shape[1]}x{hr.shape[0]} image's (or its modcrop-8 part); remake "
                        "it with python -m jaxsr.segment")
    return hr[:h, :w], seg


class SegSource:
    """grain random-access source: record i -> dict(gt as stored, seg (H, W, classes) float32 or None for a background
    image, category int32), at least crop-sized (padded as data.small_images='pad', or the next usable file)."""

    def __init__(self, files, maps, categories, gt_size, num_classes, small_images="pad"):
        self.files, self.maps, self.categories = list(files), maps, categories
        self.gt_size, self.num_classes, self.small = int(gt_size), int(num_classes), small_images

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        n = len(self)
        for j in range(n):
            ex = self.load((i + j) % n)
            if ex is not None:
                return ex
        raise DataError(f"none of the {n} training images is usable (unreadable, smaller than the crop, or maps that do not fit)")

    def load(self, k):
        path = self.files[k]
        try:
            gt = stored(path)[0]
            seg = None
            if self.maps is not None:
                seg = read_map(self.maps[k])
                if seg.shape[2] != self.num_classes:
                    raise DataError(f"its map has {seg.shape[2]} classes, the SFT-Net {self.num_classes}")
                gt, seg = fit_map(gt, seg, path)
        except (ImageError, DataError) as e:
            _warn_once(path, str(e))
            return None
        size = self.gt_size
        if min(gt.shape[:2]) < size:
            if self.small == "skip":
                _warn_once(path, f"smaller than the {size}px crop; data.small_images='skip'")
                return None
            gt = pad_to(gt, size, size)
            seg = None if seg is None else pad_to(seg, size, size)
        return dict(gt=gt, seg=seg, category=np.int32(self.categories[k]))


class SegCrop(grain.transforms.RandomMap):
    """dict(gt, seg, category) -> the same gt_size crop, flip and rotation of the image and its map (the map of a
    background image, None, becomes class 0 everywhere): dict(gt float32 RGB, seg float32, category)."""

    def __init__(self, gt_size, num_classes, hflip=True, rot=True, alpha="drop"):
        self.gt_size, self.num_classes, self.hflip, self.rot, self.alpha = int(gt_size), int(num_classes), hflip, rot, alpha

    def random_map(self, element, rng):
        gt, seg, size = element["gt"], element["seg"], self.gt_size
        top = int(rng.integers(gt.shape[0] - size + 1))
        left = int(rng.integers(gt.shape[1] - size + 1))
        if seg is None:
            seg = np.zeros((size, size, self.num_classes), np.float32)
            seg[..., 0] = 1.0
        else:
            seg = seg[top:top + size, left:left + size]
        gt, seg = augment([gt[top:top + size, left:left + size], seg], rng, self.hflip, self.rot)
        return dict(gt=to_rgb(to_float(gt), self.alpha), seg=np.ascontiguousarray(seg, np.float32),
                    category=element["category"])


def _roots(cfg, splits):
    """(folder the training paths are relative to, the validation's)."""
    d = cfg.data
    if splits["source"] == "hr_dir":
        return d.hr_dir, d.hr_dir
    return d.train_dir, d.val_dir


def _maps(files, root, folder, what):
    maps, missing = [], []
    for f in files:
        rel = os.path.relpath(f, root)
        found = find_map(folder, rel)
        (maps if found else missing).append(found or rel)
    if missing:
        stem = os.path.splitext(missing[0])[0]
        raise DataError(f"{len(missing)} of the {len(files)} {what} images have no map in {folder} (e.g. {stem} + one of "
                        f"{', '.join(MAP_SUFFIXES)}); make them with python -m jaxsr.segment --weights "
                        f"OutdoorSceneSeg_bic.pth --input {root} --output {folder}")
    return maps


def train_sources(cfg, splits, num_classes):
    """[(weight, SegSource)]: the training images with their maps, and sftgan.bg_dir's background images."""
    root = _roots(cfg, splits)[0]
    files = splits["train"]
    if not files:
        raise DataError(f"no training images under {root}")
    rels = [os.path.relpath(f, root) for f in files]
    main = SegSource(files, _maps(files, root, cfg.sftgan.seg_dir, "training"), [category(r) for r in rels],
                     cfg.data.gt_size, num_classes, cfg.data.small_images)
    cats = np.bincount([category(r) for r in rels], minlength=len(CATEGORIES) + 1)
    log.info("sftgan: training categories " + ", ".join(f"{n} {c}" for n, c in zip(("background",) + CATEGORIES, cats) if c))
    if not cfg.sftgan.bg_dir or not cfg.sftgan.bg_ratio:
        return [(1.0, main)]
    bg = list_folder(cfg.sftgan.bg_dir, "sftgan.bg_dir")
    return [(1.0 - float(cfg.sftgan.bg_ratio), main),
            (float(cfg.sftgan.bg_ratio), SegSource(bg, None, [0] * len(bg), cfg.data.gt_size, num_classes, cfg.data.small_images))]


def train_iterator(cfg, splits, num_classes):
    """This host's batches dict(gt, seg, category), resumable (jaxsr.data's TrainIterator), mixed with the background
    images by jaxsr.data's WeightedChoice."""
    sources = train_sources(cfg, splits, num_classes)
    seed, per_host = int(cfg.seed), host_batch_size(cfg.train.batch_size)
    if len(sources) == 1:
        ds = grain.MapDataset.source(sources[0][1]).seed(seed).shuffle().repeat(None)
    else:
        parts = [grain.MapDataset.source(src).seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
                 .shuffle().repeat(None) for i, (_, src) in enumerate(sources)]
        ds = grain.MapDataset.select_from_datasets(parts, WeightedChoice([w for w, _ in sources], seed)).seed(seed)
    d = cfg.data
    ds = ds.random_map(SegCrop(d.gt_size, num_classes, d.use_hflip, d.use_rot, d.alpha))
    ds = ds.batch(per_host, drop_remainder=True)[jax.process_index()::jax.process_count()]
    return TrainIterator(ds, d.num_workers, d.read_threads, d.prefetch)


def val_items(cfg, splits, num_classes, scale):
    """dict(name, hr, lr, seg): each validation HR cut to its map, modcropped to the scale, centre-cropped to
    data.val_max_size (the map with it), its LR MATLAB bicubic (8-bit), as jaxsr.data's validation."""
    root = _roots(cfg, splits)[1]
    files = splits["val"][:cfg.data.val_max_images or None]
    folder = cfg.sftgan.val_seg_dir or cfg.sftgan.seg_dir
    out = []
    for path, mp in zip(files, _maps(files, root, folder, "validation") if files else []):
        try:
            hr, seg = fit_map(read_rgb(path, cfg.data.alpha), read_map(mp), path)
        except (ImageError, DataError) as e:
            log.warning(f"data: {path} left out of validation ({e})")
            continue
        if seg.shape[2] != num_classes:
            raise DataError(f"{mp} has {seg.shape[2]} classes, the SFT-Net {num_classes}")
        lh, lw = hr.shape[0] // scale, hr.shape[1] // scale
        m = max(1, int(cfg.data.val_max_size) // scale) if cfg.data.val_max_size else max(lh, lw)
        ch, cw = min(lh, m), min(lw, m)
        top, left = (lh - ch) // 2 * scale, (lw - cw) // 2 * scale
        hr = np.ascontiguousarray(hr[top:top + ch * scale, left:left + cw * scale])
        seg = np.ascontiguousarray(seg[top:top + ch * scale, left:left + cw * scale])
        if min(ch, cw) * scale - 2 * scale < evaluate.SSIM_WINDOW:
            log.warning(f"data: {path} is too small for SSIM; left out of validation")
            continue
        out.append(dict(name=os.path.splitext(os.path.basename(path))[0], hr=hr, lr=data.bicubic_lr(hr, scale), seg=seg))
    return out


# ------------------------------------------------------------------------------------------------- optimizers


def _name(k):
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", ""))))


def in_sft(params):
    """params -> bool tree: the reference's optim_params_SFT, the parameters whose name holds 'SFT' or 'Cond'."""
    return jax.tree_util.tree_map_with_path(lambda path, _: any("SFT" in _name(k) or "Cond" in _name(k) for k in path), params)


def in_trunk(params):
    return jax.tree.map(lambda m: not m, in_sft(params))


def sft_optim(cfg):
    """The optim section of the SFT/Cond group: optim.lr x sftgan.sft_lr_mult."""
    c = ml_collections.ConfigDict(cfg.optim.to_dict(), type_safe=False)
    c.lr = float(cfg.optim.lr) * float(cfg.sftgan.sft_lr_mult)
    return c


def group_optimizer(cfg):
    """updating(trunk) -> G's optimizer: one state per group (the SFT/Cond group at sft_optim's lr, the trunk's with its
    schedule offset to trunk_delay, where its updates start); where the bool `trunk` (traced: one compiled step) is
    False, the trunk's updates are zero and its state is untouched."""
    total, delay = cfg.train.total_steps, int(cfg.sftgan.trunk_delay)
    txs = {"sft": optax.masked(optim.build_optimizer(sft_optim(cfg), total), in_sft),
           "trunk": optax.masked(optim.build_optimizer(cfg.optim, total, offset=delay), in_trunk)}

    def init(params):
        return {g: txs[g].init(params) for g in GROUPS}

    def updating(trunk):
        def update(grads, state, params=None):
            (u_sft, sft), (u_trunk, moved) = (txs[g].update(grads, state[g], params) for g in GROUPS)
            kept = jax.tree.map(lambda a, b: jnp.where(trunk, a, b), moved, state["trunk"])
            out = jax.tree.map(lambda m, a, b: a if m else jnp.where(trunk, b, jnp.zeros_like(b)), in_sft(grads), u_sft,
                               u_trunk)
            return out, {"sft": sft, "trunk": kept}

        return optax.GradientTransformation(init, update)

    return updating


# ------------------------------------------------------------------------------------------------- the step


class Parts(NamedTuple):
    """What a step is made of: the models' graphdefs, the objective, G's optimizer (`updating(trunk)`; `tx` is the one
    the sr step's helpers apply), D's, the scale, the `gan` entry's weight (the category term's on G), the step the
    trunk starts at, and what the sr step's helpers read."""

    g_def: Any
    d_def: Any
    objective: Any
    updating: Any
    tx_d: optax.GradientTransformation
    scale: int
    gan_weight: float
    delay: int
    ema_decay: float
    accumulate: int = 1
    tx: Any = None


def category_ce(logits, cat):
    """nn.CrossEntropyLoss(ignore_index=0): the mean NLL over the samples whose category is not 0 (background); 0 for a
    batch of background only (torch: NaN)."""
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)), cat[:, None].astype(jnp.int32), 1)[:, 0]
    keep = cat != 0
    return jnp.sum(jnp.where(keep, nll, 0.0)) / jnp.maximum(jnp.sum(keep), 1)


def low_res(gt, scale):
    """The LR of the HR crops: MATLAB bicubic, 8-bit (degrade.mode 'bicubic')."""
    return ops.quantize(ops.imresize(gt, 1.0 / scale))


def g_objective(p, params, state, lq, seg, gt, cat, feature_params):
    """G's loss: config.losses on SR (the `gan` entry on the ACD's logit) + gan weight x category CE on SR."""
    model = state_lib.merge(p.g_def, params, state.buffers)
    sr = model(lq, seg)
    disc = state_lib.merge(p.d_def, state.d_params, state.d_buffers)
    fake_logits, fake_cls = disc(sr)
    inputs = {"fake_logits": fake_logits}
    if "real_logits" in p.objective.inputs:
        inputs["real_logits"] = jax.lax.stop_gradient(disc(gt)[0])
    total, logs = p.objective(sr, gt, step=state.step, feature_params=feature_params, **inputs)
    cls = p.gan_weight * category_ce(fake_cls, cat)
    total = total + cls
    return total, (total, {**logs, "cls": cls}, state_lib.split(model)[2], state_lib.split(disc)[2], sr)


def d_update(p, state, d_buffers, sr, gt, cat):
    """D on the HR then the detached SR: GAN real + fake + category CE on each."""
    sr = jax.lax.stop_gradient(sr)

    def loss(d_params):
        disc = state_lib.merge(p.d_def, d_params, d_buffers)
        (real, real_cls), (fake, fake_cls) = disc(gt), disc(sr)
        total, logs = p.objective.gan.discriminator_loss(real, fake)
        c_real, c_fake = category_ce(real_cls, cat), category_ce(fake_cls, cat)
        return total + c_real + c_fake, ({**logs, "d_cls_real": c_real, "d_cls_fake": c_fake}, state_lib.split(disc)[2])

    (total, (logs, buffers)), grads = jax.value_and_grad(loss, has_aux=True)(state.d_params)
    updates, d_opt_state = p.tx_d.update(grads, state.d_opt_state, state.d_params)
    new = dict(d_params=optax.apply_updates(state.d_params, updates), d_buffers=buffers, d_opt_state=d_opt_state)
    return new, {"d_loss": total, **logs}


def train_step(p, state, batch, feature_params):
    """LR from the HR crop -> G's loss and update (the SFT group; the trunk from trunk_delay) -> D's update."""
    trunk = state.step >= p.delay
    p = p._replace(tx=p.updating(trunk))
    rng, _ = jax.random.split(state.rng)
    gt, seg, cat = batch["gt"], batch["seg"], batch["category"]
    lq = low_res(gt, p.scale)
    grad_fn = jax.value_and_grad(g_objective, argnums=1, has_aux=True)
    (_, (loss, logs, buffers, d_buffers, sr)), grads = grad_fn(p, state.params, state, lq, seg, gt, cat, feature_params)
    params, opt_state, ok, overflow, grad_norm = apply_updates(p, state, grads, loss)
    sft = in_sft(state.params)
    keep = lambda new, old: jax.tree.map(lambda m, a, b: a if m else jnp.where(trunk, a, b), sft, new, old)  # noqa: E731
    params = keep(params, state.params)  # the frozen trunk bit-identical, not merely + 0
    d_new, d_metrics = d_update(p, state, d_buffers, sr, gt, cat)
    ok = ok & jnp.isfinite(d_metrics["d_loss"])
    new = dict(params=params, buffers=buffers, opt_state=opt_state, **d_new)
    new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, {k: getattr(state, k) for k in new})
    averaged = ema(p, state, new["params"], ok)
    if averaged is not None:
        averaged = keep(averaged, state.ema)
    metrics = {"loss": loss, **logs, "grad_norm": grad_norm, **d_metrics, "skipped": (~ok).astype(jnp.float32)}
    state = state.replace(step=state.step + 1, rng=rng, ema=averaged, nonfinite=nonfinite_count(state, ok, overflow, None), **new)
    return state, metrics


# ------------------------------------------------------------------------------------------------- the kind


class SFTGAN(SR):
    """SFT-Net against the ACD discriminator; see the module docstring and `jaxsr.train.kind.Kind`."""

    resolve_config = staticmethod(resolve_config)

    @staticmethod
    def check(cfg):
        check_sftgan(cfg)
        SR.check(cfg)

    def __init__(self, cfg, workdir, mesh, meta=None):
        check_sftgan(cfg)
        self.cfg = cfg
        resume_spec = meta.get("spec") if meta else None
        if resume_spec is not None and cfg.init_weights:
            log.info(f"resuming from the checkpoint at step {meta['step']}: init_weights ({cfg.init_weights}) is not "
                     "applied, the checkpoint holds the weights")
        objective = build_objective(cfg)
        _, tx_d = build_optimizers(cfg)
        updating = group_optimizer(cfg)
        self.perceptual = evaluate.load_perceptual(cfg.val.lpips, cfg.val.dists, cfg.val.topiq)
        model, self.spec = build_generator(cfg, resume_spec)
        disc = build_discriminator(cfg, self.spec)
        num_classes = model.num_classes
        splits = data.resolve_splits(cfg.data, workdir, cfg.seed)
        self.data = Data(splits, train_iterator(cfg, splits, num_classes), val_items(cfg, splits, num_classes, cfg.scale))
        if not self.data.val and (cfg.val.every or cfg.val.at_start or cfg.init_weights):
            raise ConfigError("no validation image to measure: give data.val_dir images (and their maps) larger than "
                              f"{evaluate.SSIM_WINDOW + 2 * cfg.scale} px a side, or set val.every=0 and val.at_start=False")
        self.meta = {"spec": self.spec}
        eval_model = nnx.clone(model)
        eval_model.eval()
        self.eval_def = state_lib.split(eval_model)[0]
        g_def, d_def = state_lib.split(model)[0], state_lib.split(disc)[0]
        state = state_lib.create(model, updating(True), seed=cfg.seed, ema=uses_ema(cfg), disc=disc, tx_d=tx_d)
        self.state = parallel.replicate(mesh, state)
        self.feature_params = parallel.replicate(mesh, objective.feature_params)
        gan_weight = next(t.weight for t in objective.terms if t.name == "gan")
        repl = parallel.replicated(mesh)
        self.delay = int(cfg.sftgan.trunk_delay)
        parts = Parts(g_def, d_def, objective, updating, tx_d, int(cfg.scale), gan_weight, self.delay, cfg.optim.ema_decay)
        self.step = jax.jit(self._step(parts), donate_argnums=(0,), out_shardings=(repl,) * 2)
        self._preview = jax.jit(lambda params, buffers, batch: dict(
            lq=low_res(batch["gt"][:4], cfg.scale), gt=batch["gt"][:4],
            sr=state_lib.merge(self.eval_def, params, buffers)(low_res(batch["gt"][:4], cfg.scale), batch["seg"][:4])),
            out_shardings=repl)
        self._feed_plateau = None
        self._bicubic_psnr = {}
        self._trunk_on = None

    def _step(self, parts):
        """The step with the lr of each group and D logged."""
        cfg, total = self.cfg, self.cfg.train.total_steps
        sft_cfg = sft_optim(cfg)

        def step(state, batch, feature_params):
            new, metrics = train_step(parts, state, batch, feature_params)
            return new, {**metrics, "lr": optim.current_lr(sft_cfg, total, state.opt_state["sft"]),
                         "lr_trunk": optim.current_lr(cfg.optim, total, state.opt_state["trunk"], self.delay),
                         "lr_d": optim.current_lr(cfg.optim_d, total, state.d_opt_state)}

        return step

    def summary(self, state):
        n = sum(x.size for x in jax.tree.leaves(state.params))
        k = sum(x.size for x, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(in_sft(state.params))) if m)
        return (f"sftgan x{self.cfg.scale}, {n:,} parameters ({k:,} SFT/Cond at {self.cfg.sftgan.sft_lr_mult}x lr; the rest "
                f"from step {self.delay}), ACD discriminator")

    def train_step(self, state, batch, step):
        trunk = step >= self.delay
        if trunk != self._trunk_on:
            log.info(f"step {step}: " + ("the SFT/Cond parameters and the trunk train" if trunk else
                                         f"the SFT/Cond parameters train; the trunk is frozen until step {self.delay}"))
            self._trunk_on = trunk
        return self.step(state, batch, self.feature_params)

    def inspect_step(self, state, batch, step):
        raise ConfigError("kind='sftgan' logs no per-layer statistics: set log.gradients=0 and log.parameters=0")

    def validate(self, model, split="val"):
        """PSNR/SSIM (and the perceptual metrics configured) of SR made with each validation image's map."""
        items, scale, scores, shown = self.data.val, self.cfg.scale, [], []
        for item in items:
            sr = upscale(model, item["lr"], cond=item["seg"])
            scores.append(evaluate.score({"sr": sr}, item["hr"], scale, perceptual=self.perceptual)["sr"])
            if len(shown) < 4:
                shown.append((item["lr"], quantize(sr), item["hr"]))
        values = {k: mean_over_images([s[k] for s in scores]) for k in ("psnr", "ssim", *self.perceptual)}
        extra = "".join(f", {k.upper()} {values[k]:.4f}" for k in self.perceptual)
        line = (f"PSNR {values['psnr']:.3f} dB, SSIM {values['ssim']:.4f}{extra} on {len(items)} image(s) "
                f"(bicubic: PSNR {self.bicubic_psnr(split):.3f} dB)")
        return Scores(values, line, shown)

    def log_images(self, state, batch, step, board):
        """The batch's LR, the eval weights' SR made with its maps, and the HR, as LR|SR|HR rows."""
        from jaxsr.train.kinds.sr import eval_weights

        p = parallel.to_host(self._preview(eval_weights(self.cfg, state), state.buffers, batch))
        board.images(step, "train/lr_sr_hr", p["lq"], p["sr"], p["gt"])


__all__ = ["CATEGORIES", "SFTGAN", "category", "category_ce", "check_sftgan", "default_config", "group_optimizer", "in_sft",
           "transfer", "transfer_pairs"]
