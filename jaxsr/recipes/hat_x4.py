"""HAT-S x4 classical SR on bicubic LR (Chen et al., CVPR 2023, arXiv 2205.04437; XPixelGroup/HAT's
options/train/train_HAT-S_SRx2_from_scratch.yml and train_HAT-S_SRx4_finetune_from_SRx2.yml).

HAT-S: embed 144, 6x6 blocks, 6 heads, window 16, compress_ratio 24, squeeze_factor 24, conv_scale 0.01,
overlap_ratio 0.5, MLP ratio 2, pixelshuffle, 1conv. Training as the authors' from-scratch run: DF2K, batch 32
(4 on each of 8 GPUs), L1, Adam 2e-4 betas (0.9, 0.99), MultiStep halving at 250k/400k/450k/475k of 500k
iterations, EMA 0.999; LR patch 64 (GT 256 at x4, as their x4 file). The authors train x4 by fine-tuning their x2
model: init_weights=<x2 export>, init_strict=False, optim.lr=1e-4, train.total_steps=250000,
optim.milestones="(125000, 200000, 225000, 240000)". HAT and HAT-L: override the fields with their values in
jaxsr.archs.hat.VARIANTS (embed_dim 180, compress_ratio 3, squeeze_factor 30; 12 groups of 6 for HAT-L).
"""
from ml_collections import ConfigDict

from jaxsr.archs.hat import spec_for
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "hat_s"
    c.scale = 4
    # remat per block (use_chk) is jaxsr's, not the authors': same numbers, less memory, so batch 32 fits one device
    spec = spec_for("hat_s", use_chk=True)
    c.model = ConfigDict({k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "scale"})
    c.degrade.mode = "bicubic"  # DF2K_bicx4_sub
    c.degrade.gt_size = 256  # gt_size 256 (x4 file)
    c.data.gt_size = 256
    c.losses = {"l1": dict(name="l1", weight=1.0, target="gt")}  # pixel_opt L1Loss, weight 1
    total = 500_000
    c.optim.update(name="adam", lr=2e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep", gamma=0.5,
                   milestones=(250_000, 400_000, 450_000, 475_000), ema_decay=0.999)  # optim_g, scheduler, ema_decay
    c.train.update(total_steps=total, batch_size=32)  # batch_size_per_gpu 4 x 8 GPUs
    c.val.update(every=20_000)  # val_freq 2e4
    c.data.val_max_size = 512
    return c
