"""RealPLKSR x4 with DySample, from scratch: traiNNer-redux's `options/train/RealPLKSR/RealPLKSR_fromscratch.yml`.

Values from that template unless a comment says why not:
  - network `realplksr` with `upsampler: dysample`; the rest traiNNer-redux's `realplksr` defaults
    (`traiNNer/archs/realplksr_arch.py`): dim 64, 28 blocks, kernel 17, split ratio 0.25, EA on, LayerNorm on
    (the template's later revision: "better quality"), no dropout. dim/blocks/kernel/split are the paper's
    PLKSR values (arXiv 2404.11848);
  - GT crops 192 (LR 48; the paper uses GT 384), batch 6 (the paper 64);
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 100k/200k/300k/400k of 500k;
    gradient clipping (traiNNer-redux clips the global norm at 1.0); EMA 0.999;
  - loss: the template's MSSSIML1Loss (alpha 0.1) is alpha * (1 - MS-SSIM) + (1 - alpha) * Gaussian-weighted L1
    over RGB; jaxsr has no such term, so its closest: 0.9 L1 + 0.1 MS-SSIM on RGB (traiNNer-redux's MS-SSIM).
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'). Give
--config.data.lr_dir (or train_lr_dir) for paired LR, or degrade.mode='realesrgan' for an OTF variant.
Exports are traiNNer-redux's layout ({'params_ema': ...}), which spandrel/chaiNNer load (PLKSR, tags Real/DySample).
"""
from ml_collections import ConfigDict

from jaxsr.archs import realplksr
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "realplksr"
    c.scale = 4
    c.model = ConfigDict(dict(arch="realplksr", **{**realplksr.DEFAULTS, "upsampler": "dysample"}), type_safe=False)
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = 192
    c.data.gt_size = 192
    c.losses = {"l1": dict(name="l1", weight=0.9, target="gt"),
                "ms_ssim": dict(name="ms_ssim", weight=0.1, target="gt", y_channel=False)}
    c.optim.update(name="adamw", lr=2e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep", gamma=0.5,
                   milestones=(100_000, 200_000, 300_000, 400_000), clip_grad_norm=1.0, ema_decay=0.999)
    c.train.update(total_steps=500_000, batch_size=6)
    c.data.val_max_size = 512
    return c
