"""SwinIR-M x4 classical SR on bicubic LR, DF2K settings (Liang et al. 2021, arXiv 2108.10257; KAIR's
options/swinir/train_swinir_sr_classical.json, the file behind 001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth).

SwinIR-M: embed 180, 6x6 blocks, 6 heads, window 8, MLP ratio 2, pixelshuffle, 1conv; img_size 64 (the DF2K LR
patch, "s64w8"). LR 64 (GT 256), batch 32 (4 on each of 8 GPUs), L1, Adam 2e-4 with KAIR's default betas
(0.9, 0.999), MultiStep halving at 250k/400k/450k/475k of 500k iterations, EMA 0.999. The paper fine-tunes x4 from
its x2 model with the learning rate and milestones halved: for that, set init_weights to the x2 export with
init_strict=False, optim.lr=1e-4 and the milestones halved.
"""
from ml_collections import ConfigDict

from jaxsr.archs.swinir import spec_for
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "swinir_m"
    c.scale = 4
    # remat per block (use_chk) is jaxsr's, not the authors': same numbers, less memory, so batch 32 fits one device
    spec = spec_for("swinir_m", img_size=64, use_chk=True)
    c.model = ConfigDict({k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "scale"})
    c.degrade.mode = "bicubic"  # classical SR: bicubic-downsampled DF2K
    c.degrade.gt_size = 256  # H_size 256 = LR patch 64 at x4
    c.data.gt_size = 256
    c.losses = {"l1": dict(name="l1", weight=1.0, target="gt")}  # G_lossfn_type l1
    total = 500_000
    c.optim.update(name="adam", lr=2e-4, betas=(0.9, 0.999), weight_decay=0.0, schedule="multistep", gamma=0.5,
                   milestones=(250_000, 400_000, 450_000, 475_000), ema_decay=0.999)  # G_optimizer_*, E_decay
    c.train.update(total_steps=total, batch_size=32)  # dataloader_batch_size 32 (total over 8 GPUs)
    c.val.update(every=5_000)  # checkpoint_test 5000
    c.data.val_max_size = 512
    return c
