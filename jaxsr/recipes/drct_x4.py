"""DRCT x4 from scratch: traiNNer-redux's `options/_templates/train/DRCT/DRCT_fromscratch.yml` (DRCT: Hsu et al.,
"DRCT: Saving Image Super-resolution away from Information Bottleneck", CVPRW 2024, arXiv 2404.00722).

Values from that template unless a comment says why not:
  - network `drct` with its defaults (the paper's DRCT): embed_dim 180, 6 residual dense groups, 6 heads, window 16,
    img_size 64, MLP ratio 2, gc 32, pixelshuffle, 1conv (14,139,579 parameters at x4);
  - LR crops 64 (GT 256), batch 8 (the template's; its note: the paper's is 4 x that through accumulation), hflip +
    rotation;
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 250k/400k/450k/475k of 500k;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart);
  - remat per Swin block (`use_chk`) is jaxsr's, not the template's: the same numbers with less memory, which the
    dense groups (five blocks on up to embed_dim + 4 gc channels each) need most.
DRCT-L (traiNNer-redux's DRCT_L_fromscratch.yml, the same training values): give twelve groups,
--config.model.depths="(6,6,6,6,6,6,6,6,6,6,6,6)" and the same for --config.model.num_heads (27,580,719 parameters;
jaxsr.archs.drct.VARIANTS has DRCT-XL's fourteen too).
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'). Give
--config.data.lr_dir (or train_lr_dir) for paired LR. Exports are {'params_ema': ...}, as the authors' releases, and
load in spandrel/chaiNNer (DRCT, tags s64w16, 180dim, 1conv).
"""
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    return fidelity_stage("drct", lq_size=64, batch_size=8, lr=2e-4, milestones=(250_000, 400_000, 450_000, 475_000),
                          total_steps=500_000, use_chk=True,
                          depths=(6,) * 6, num_heads=(6,) * 6)  # tuples, so that the command line can override them
