"""SAFMN x4 from scratch: traiNNer-redux's `options/_templates/train/SAFMN/SAFMN_fromscratch.yml` (SAFMN: Sun et al.,
"Spatially-Adaptive Feature Modulation for Efficient Image Super-Resolution", ICCV 2023).

Values from that template unless a comment says why not:
  - network `safmn`: traiNNer-redux's `safmn` defaults (jaxsr's `safmn.DEFAULTS`), the paper's model: dim 36, 8
    blocks, ffn_scale 2 (traiNNer-redux's `safmn_l`: --config.model.dim=128 --config.model.n_blocks=16);
  - LR crops 64 (GT 256), batch 8 (the template's; the authors' 64), hflip + rotation;
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 250k/400k/450k/475k of 500k;
    no gradient clipping;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart).
The authors' own options (sunny2109/SAFMN `options/train/SAFMN/train_DF2K_X4.yml`) differ: batch 64, Adam lr 1e-3
cosine-annealed to 1e-5 over 500k, L1 + 0.05 FFT loss.
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'). Give
--config.data.lr_dir (or train_lr_dir) for paired LR. Exports are traiNNer-redux's layout ({'params': ...}), which
spandrel/chaiNNer load (SAFMN).
"""
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    return fidelity_stage("safmn", lq_size=64, batch_size=8, lr=2e-4, milestones=(250_000, 400_000, 450_000, 475_000),
                          total_steps=500_000)
