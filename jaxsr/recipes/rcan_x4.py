"""RCAN x4 from scratch: traiNNer-redux's `options/_templates/train/RCAN/RCAN_fromscratch.yml` (RCAN: Zhang et al.,
"Image Super-Resolution Using Very Deep Residual Channel Attention Networks", ECCV 2018).

Values from that template unless a comment says why not:
  - network `rcan`: traiNNer-redux's (spandrel's, jaxsr's `rcan.DEFAULTS`) defaults, the paper's model: 10 residual
    groups of 20 RCABs, 64 features, reduction 16, 3x3 kernels, the DIV2K mean shift with rgb_range 255, ReLU
    (the template's `RCAN_unshuffle_*` variants are --config.model.unshuffle_mod=True at x1/x2);
  - LR crops 64 (GT 256; the paper's 48), batch 8 (the template's; it recommends 32 or 64, the paper used 16),
    hflip + rotation;
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 100k/200k/300k/400k/450k of 500k;
    no gradient clipping;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart).
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'). Give
--config.data.lr_dir (or train_lr_dir) for paired LR. Exports are traiNNer-redux's layout ({'params': ...}), which
spandrel/chaiNNer load (RCAN).
"""
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    return fidelity_stage("rcan", lq_size=64, batch_size=8, lr=2e-4, milestones=(100_000, 200_000, 300_000, 400_000, 450_000),
                          total_steps=500_000)
