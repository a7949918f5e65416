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
--config.data.lr_dir (or train_lr_dir) for paired LR. Training, validation and exports all run Conv3XC's
re-parameterised 3x3 convs (torch's eval mode runs them too; its training mode runs the branches they compose, the
same function with about 4.6 times the work); the gradients reach the branches' weights, which the exports hold.
"""
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    return fidelity_stage("span", lq_size=64, batch_size=16, lr=5e-4, milestones=(200_000, 400_000, 600_000, 800_000),
                          total_steps=1_000_000, norm=False)
