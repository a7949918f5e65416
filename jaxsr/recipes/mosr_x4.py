"""MoSR x4 from scratch: traiNNer-redux's `options/_templates/train/MoSR/MoSR_fromscratch.yml` (MoSR: umzi2's
"Mamba Out Super-Resolution", gated CNN blocks after MambaOut).

Values from that template unless a comment says why not:
  - network `mosr` with `upsampler: geoensemblepixelshuffle` (jaxsr and spandrel call it `gps`), drop_path 0; the rest
    traiNNer-redux's `mosr` defaults (spandrel's, jaxsr's `mosr.DEFAULTS`): dim 64, 24 blocks, kernel 7, expansion
    ratio 1.5, conv ratio 1.0 (traiNNer-redux's `mosr_t`: --config.model.n_block=5 --config.model.dim=48);
  - LR crops 64 (GT 256), batch 8, hflip + rotation;
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 250k/400k/450k/475k of 500k; no
    gradient clipping;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart).
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'). Give
--config.data.lr_dir (or train_lr_dir) for paired LR. Exports are traiNNer-redux's layout ({'params_ema': ...}), which
spandrel/chaiNNer load (MoSR).
"""
from ml_collections import ConfigDict

from jaxsr.archs import mosr
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "mosr"
    c.scale = 4
    c.model = ConfigDict(dict(arch="mosr", **{**mosr.DEFAULTS, "upsampler": "gps"}), type_safe=False)
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = 256  # lq_size 64
    c.data.gt_size = 256
    c.losses = {"charbonnier": dict(name="charbonnier", weight=1.0, target="gt")}
    c.optim.update(name="adamw", lr=2e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep", gamma=0.5,
                   milestones=(250_000, 400_000, 450_000, 475_000), ema_decay=0.999)
    c.train.update(total_steps=500_000, batch_size=8)
    c.data.val_max_size = 512
    return c
