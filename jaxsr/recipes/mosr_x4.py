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
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    return fidelity_stage("mosr", lq_size=64, batch_size=8, lr=2e-4, milestones=(250_000, 400_000, 450_000, 475_000),
                          total_steps=500_000, upsampler="gps")
