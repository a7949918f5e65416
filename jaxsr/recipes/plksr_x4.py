"""PLKSR x4 from scratch: traiNNer-redux's `options/_templates/train/PLKSR/PLKSR_fromscratch.yml` (PLKSR: Lee et al.,
"Partial Large Kernel CNNs for Efficient Super-Resolution", arXiv 2404.11848; the original network, not RealPLKSR).

Values from that template unless a comment says why not:
  - network `plksr` with traiNNer-redux's defaults (spandrel's, jaxsr's `plksr.DEFAULTS`): dim 64, 28 blocks, CCM
    mixer, PLK kernel 17, split ratio 0.25, EA on. dim/blocks/kernel/split are the paper's; its released x2/x3/x4
    models use the DCCM mixer (--config.model.ccm_type=DCCM);
  - LR crops 96 (GT 384, the paper's x4 GT size), batch 16 (the paper's 64 needs more memory), hflip + rotation;
  - AdamW lr 2e-4, weight decay 0, betas (0.9, 0.99); MultiStepLR, gamma 0.5 at 100k/200k/300k/400k/425k of 450k
    (the paper's x2 schedule, from scratch); no gradient clipping;
  - Charbonnier loss, weight 1 (the paper: L1); EMA 0.999 (the template's ema_power warm-up has no jaxsr counterpart).
The template reads paired LR folders; here the LR is MATLAB bicubic of the GT crop (degrade.mode='bicubic'), as the
paper's DIV2K pairs are. Give --config.data.lr_dir (or train_lr_dir) for paired LR. Exports are traiNNer-redux's layout
({'params_ema': ...}), which spandrel/chaiNNer load (PLKSR, tags 64dim, 28nb, 17ks, CCM).
"""
from jaxsr.recipes._fidelity import fidelity_stage


def get_config():
    return fidelity_stage("plksr", lq_size=96, batch_size=16, lr=2e-4, milestones=(100_000, 200_000, 300_000, 400_000, 425_000),
                          total_steps=450_000)
