"""The run config: shared defaults that every recipe in configs/ starts from, and its checks.

A recipe is `get_config()` returning `base_config()` with its own values (big_vision style). The
section defaults come from their owners (`jaxsr.data`, `jaxsr.degrade`), so each knob is defined once.
"""
import json

import ml_collections
from ml_collections import config_dict

from jaxsr import data, degrade

# Changing any of these makes a saved state unusable or the run a different experiment: refused on resume.
INCOMPATIBLE_ON_RESUME = ("seed", "scale", "model", "compute_dtype", "gan.enabled", "gan.discriminator", "optim.name",
                          "optim.accumulate", "optim_d.name", "train.batch_size", "data.gt_size", "data.hr_dir", "data.lr_dir",
                          "data.train_dir", "data.train_lr_dir", "data.split", "degrade.mode", "degrade.gt_size", "degrade.queue_size")


def base_config():
    c = ml_collections.ConfigDict()
    c.name = "model"  # export file names: models/<name>_x<scale>.pth
    c.seed = 0
    c.scale = 4
    # Generator: the spec given to jaxsr.archs.build_model (scale is added). arch='auto' takes the
    # architecture and hyperparameters from init_weights.
    c.model = ml_collections.ConfigDict(dict(arch="esrgan", in_ch=3, out_ch=3, num_feat=64, num_block=23, num_grow_ch=32))
    c.compute_dtype = "auto"  # 'auto': bfloat16 on GPU/TPU, float32 on CPU; params, losses and metrics stay float32
    c.init_weights = config_dict.placeholder(str)  # .pth/.safetensors/jaxsr export to warm-start G from
    c.init_strict = True

    c.data = data.default_config()
    c.degrade = degrade.default_config()
    c.losses = ml_collections.ConfigDict({"l1": dict(name="l1", weight=1.0, target="gt_usm")})

    c.gan = ml_collections.ConfigDict()
    c.gan.enabled = False
    c.gan.start_step = 0  # G-only warm-up steps before D joins
    c.gan.discriminator = ml_collections.ConfigDict(dict(arch="unet", num_feat=64, skip_connection=True))
    c.gan.init_weights = config_dict.placeholder(str)  # a BasicSR/Real-ESRGAN net_d file

    c.optim = ml_collections.ConfigDict(dict(name="adamw", lr=2e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="constant",
                                             warmup_steps=0, min_lr=1e-7, milestones=(), gamma=0.5, clip_grad_norm=0.0,
                                             accumulate=1, ema_decay=0.999, eps=1e-8))
    c.optim_d = ml_collections.ConfigDict(dict(name="adamw", lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="constant",
                                               warmup_steps=0, clip_grad_norm=0.0, eps=1e-8))

    c.train = ml_collections.ConfigDict()
    c.train.total_steps = 100_000
    c.train.batch_size = 16  # global batch, over all devices and hosts
    c.train.log_every = 100
    c.train.image_every = 0  # LR/SR/HR grids to TensorBoard every N steps (0: at validation only)
    c.train.ckpt_every = 5_000
    c.train.keep_best = 3  # checkpoints kept by validation PSNR, besides the latest
    c.train.max_nonfinite = 10  # stop after this many NaN/Inf steps in a row (each one is skipped)

    c.val = ml_collections.ConfigDict()
    c.val.every = 5_000
    c.val.at_start = False  # validate before the first step (always done for a warm start)
    return c


def flatten(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, (dict, ml_collections.ConfigDict)):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resume_conflicts(saved: dict, cfg) -> list:
    """Fields that differ from the frozen config.json and must not change on resume."""
    now = flatten(json.loads(cfg.to_json_best_effort()))
    before = flatten(saved)
    diffs = [k for k in sorted(set(now) | set(before)) if now.get(k) != before.get(k)]
    bad = [k for k in diffs if any(k == f or k.startswith(f + ".") for f in INCOMPATIBLE_ON_RESUME)]
    return bad, [k for k in diffs if k not in bad]
