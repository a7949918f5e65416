"""SPAN x4, fidelity stage: traiNNer-redux's `options/_templates/train/SPAN/SPAN_fidelity.yml` (SPAN: Wan et al.,
"Swift Parameter-free Attention Network for Efficient Super-Resolution", NTIRE 2024 efficient SR winner).

Values from that template unless a comment says why not:
  - network `span`: feature_channels 48 (spandrel's default, the paper's), `norm: false` (so exports carry the
    `no_norm` buffer; some pretrains use norm=True: --config.model.norm=True, with img_range 255 and the DIV2K mean
    as spandrel assumes);
  - LR crops 64 (GT 256), batch 16 (the paper's 64 needs more memory), hflip + rotation;
  - AdamW lr 5e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 200k/400k/600k/800k of 1M;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart).
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'). Give
--config.data.lr_dir (or train_lr_dir) for paired LR. Training runs Conv3XC's two branches (model.train()); validation
and exports use the re-parameterised 3x3 convs, as torch's eval mode does.
"""
from ml_collections import ConfigDict

from jaxsr.archs import span
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "span"
    c.scale = 4
    c.model = ConfigDict(dict(arch="span", **{**span.DEFAULTS, "norm": False}), type_safe=False)
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = 256  # lq_size 64
    c.data.gt_size = 256
    c.losses = {"charbonnier": dict(name="charbonnier", weight=1.0, target="gt")}
    c.optim.update(name="adamw", lr=5e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep", gamma=0.5,
                   milestones=(200_000, 400_000, 600_000, 800_000), ema_decay=0.999)
    c.train.update(total_steps=1_000_000, batch_size=16)
    c.data.val_max_size = 512
    return c
