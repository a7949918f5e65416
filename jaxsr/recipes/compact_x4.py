"""Compact (SRVGGNetCompact) x4, fidelity stage: traiNNer-redux's `options/_templates/train/Compact/Compact_fidelity.yml`.

Values from that template unless a comment says why not:
  - network `compact`: num_feat 64, num_conv 16, PReLU (the size of Real-ESRGAN's realesr-animevideov3;
    realesr-general-x4v3 is num_conv 32: --config.model.num_conv=32);
  - LR crops 96 (GT 384), batch 16, hflip + rotation;
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 100k/200k/300k/400k/425k of 450k;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart).
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'). Give
--config.data.lr_dir (or train_lr_dir) for paired LR, or degrade.mode='realesrgan' for its OTF variant.
Exports are Real-ESRGAN's layout ({'params': ...}), which spandrel/chaiNNer and Real-ESRGAN's scripts load.
"""
from ml_collections import ConfigDict

from jaxsr.archs import compact
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "compact"
    c.scale = 4
    c.model = ConfigDict(dict(arch="compact", **compact.DEFAULTS), type_safe=False)  # the template's network is the default
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = 384  # lq_size 96
    c.data.gt_size = 384
    c.losses = {"charbonnier": dict(name="charbonnier", weight=1.0, target="gt")}
    c.optim.update(name="adamw", lr=2e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep", gamma=0.5,
                   milestones=(100_000, 200_000, 300_000, 400_000, 425_000), ema_decay=0.999)
    c.train.update(total_steps=450_000, batch_size=16)
    c.data.val_max_size = 512
    return c
