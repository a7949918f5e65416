"""PAN x4 from scratch: zhaohengyuan1/PAN's `codes/options/train/train_PANx4.yml` (PANx4_DF2K, the released
PANx4_DF2K.pth; Zhao et al., "Efficient Image Super-Resolution Using Pixel Attention", ECCVW 2020).

Values from that file unless a comment says why not:
  - network `pan`: nf 40, unf 24, nb 16 (jaxsr's `pan.DEFAULTS`, 272,419 parameters);
  - GT crops 256 (LR 64), batch 32, flips + rotation;
  - L1, weight 1; Adam lr 7e-4, betas (0.9, 0.99), weight decay 0; CosineAnnealingLR_Restart: four periods of 250k
    (restarts at 250k/500k/750k, weights 1), eta_min 1e-7; 1M iterations; seed 10;
  - no EMA: PAN's trainer (mmsr's SR_model) keeps none, so the export is the trained weights themselves.
The yml reads DF2K's paired bicubic LR sub-images; here the LR is MATLAB bicubic of the GT crop
(degrade.mode='bicubic'), or give --config.data.lr_dir (or train_lr_dir). Exports are PAN's plain state dict, which
PAN's test script loads strictly; spandrel/chaiNNer have no PAN.
"""
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    c = fidelity_stage("pan", lq_size=64, batch_size=32, lr=7e-4, milestones=(), total_steps=1_000_000)
    c.seed = 10
    c.losses = {"l1": dict(name="l1", weight=1.0, target="gt")}
    c.optim.update(name="adam", schedule="cosine_restart", periods=(250_000,) * 4, period_weights=(1.0,) * 4, min_lr=1e-7,
                   ema_decay=0.0)
    return c
