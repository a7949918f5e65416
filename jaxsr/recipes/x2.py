"""RRDB x2 fidelity pretrain on bicubic LR: the first step of traiNNer-redux's workflow (2x bicubic from
scratch, then 4x, then 4x GAN with degradations).

x2 runs RRDB on a pixel-unshuffled input (Real-ESRGAN's RealESRGAN_x2plus layout: conv_first takes 12
channels). LR is MATLAB-bicubic of the GT crop. AdamW 2e-4 from scratch (traiNNer's guideline), warmup
then cosine, EMA 0.999.
"""
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "rrdb"
    c.scale = 2
    # the model is the base config's RRDB (jaxsr.archs.esrgan.DEFAULTS: 64 features, 23 blocks, growth 32)
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = 128  # LR 64, as the x4 recipes
    c.data.gt_size = 128
    c.losses = {"l1": dict(name="l1", weight=1.0, target="gt")}
    c.optim.update(name="adamw", lr=2e-4, betas=(0.9, 0.99), schedule="cosine", warmup_steps=1_000, min_lr=1e-7)
    c.train.update(total_steps=500_000, batch_size=16)
    c.data.val_max_size = 512
    return c
