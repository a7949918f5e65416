"""Swin2SR-M x4 from scratch: traiNNer-redux's `options/_templates/train/Swin2SR/Swin2SR_M_fromscratch.yml` (Swin2SR:
Conde et al., "Swin2SR: SwinV2 Transformer for Compressed Image Super-Resolution and Restoration", ECCVW 2022).

Values from that template unless a comment says why not:
  - network `swin2sr_m` (traiNNer-redux's, the authors' classical SR model): embed 180, 6x6 blocks, 6 heads,
    window 8, MLP ratio 2, img_size 64, pixelshuffle, 1conv;
  - LR crops 64 (GT 256), batch 8 (the template's; its note: the paper accumulates 4 of them), hflip + rotation;
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 250k/400k/450k/475k of 500k;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart).
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'), as the
paper's DIV2K/DF2K pairs are. Give --config.data.lr_dir (or train_lr_dir) for paired LR. Exports are KAIR's layout
({'params': ...}), which spandrel/chaiNNer load (Swin2SR, tags medium, s64w8, 180dim, 1conv).
"""
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    # use_chk: remat per block, jaxsr's (traiNNer-redux's use_checkpoint is off): same numbers, less memory.
    # depths/num_heads as tuples, which the command line can override (--config.model.depths='(6, 6)')
    return fidelity_stage("swin2sr", lq_size=64, batch_size=8, lr=2e-4, milestones=(250_000, 400_000, 450_000, 475_000),
                          total_steps=500_000, use_chk=True, depths=(6,) * 6, num_heads=(6,) * 6)
