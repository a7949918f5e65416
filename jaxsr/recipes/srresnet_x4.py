"""MSRResNet x4 fidelity stage, SRGAN's first step: BasicSR's `options/train/SRResNet_SRGAN/train_MSRResNet_x4.yml`
(experiment 001_MSRResNet_x4_f64b16_DIV2K_1000k_B16G1, the run configs/srgan_x4.py warm-starts from).

Values from that file:
  - network `srresnet` in BasicSR's layout (MSRResNet: 64 features, 16 blocks; jaxsr's `srresnet.DEFAULTS`);
  - GT crops 128 (LR 32), batch 16, hflip + rotation;
  - L1, weight 1; Adam lr 2e-4, betas (0.9, 0.99), weight decay 0; CosineAnnealingRestartLR: four periods of 250k,
    restart weights 1, eta_min 1e-7; 1M iterations; EMA 0.999.
The yml reads paired bicubic LR folders (DIV2K_train_LR_bicubic_X4_sub); here the LR is MATLAB bicubic of the GT crop
(degrade.mode='bicubic'), or give --config.data.lr_dir (or train_lr_dir). Exports are BasicSR's layout under
`params`, which BasicSR's test options (param_key_g: params) load strictly.
"""
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    c = fidelity_stage("srresnet", lq_size=32, batch_size=16, lr=2e-4, milestones=(), total_steps=1_000_000)
    c.losses = {"l1": dict(name="l1", weight=1.0, target="gt")}
    c.optim.update(name="adam", schedule="cosine_restart", periods=(250_000,) * 4, period_weights=(1.0,) * 4, min_lr=1e-7)
    return c
