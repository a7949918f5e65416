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
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    return fidelity_stage("compact", lq_size=96, batch_size=16, lr=2e-4, milestones=(100_000, 200_000, 300_000, 400_000, 425_000),
                          total_steps=450_000)
