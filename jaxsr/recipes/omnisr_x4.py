"""OmniSR x4 from scratch: traiNNer-redux's `options/_templates/train/OmniSR/OmniSR_fromscratch.yml` (OmniSR: Wang et
al., "Omni Aggregation Networks for Lightweight Image Super-Resolution", CVPR 2023).

Values from that template unless a comment says why not:
  - network `omnisr` with traiNNer-redux's defaults: num_feat 64 (spandrel's default), res_num 5, block_num 1,
    window_size 8, pe (relative position bias) on, bias on: the paper's OmniSR;
  - LR crops 64 (GT 256), batch 8 (the template's; its note: the paper's 64), hflip + rotation;
  - AdamW lr 5e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 200k/400k/600k of 800k;
  - Charbonnier loss, weight 1; EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart).
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'), as the
paper's DIV2K/DF2K pairs are. Give --config.data.lr_dir (or train_lr_dir) for paired LR. Exports are traiNNer-redux's
layout ({'params_ema': ...}), which spandrel/chaiNNer load (OmniSR, tags 64nf, w8, 5nr).
"""
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    return fidelity_stage("omnisr", lq_size=64, batch_size=8, lr=5e-4, milestones=(200_000, 400_000, 600_000),
                          total_steps=800_000, res_num=5)  # res_num: traiNNer-redux's 5
