"""A tiny RRDB x4 that trains for real in a few minutes on a laptop CPU (the README's first command).

Bicubic (MATLAB) LR from the built-in photographs, L1, AdamW with warmup and cosine. Small enough that
2 CPU cores do a few it/s; large enough to beat bicubic upscaling on held-out photographs.
"""
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "demo"
    c.scale = 4
    # 0.45 M params instead of 16.7 M; num_grow_ch keeps its default 32, the value spandrel/chaiNNer assume, so the
    # export opens there
    c.model.update(num_feat=32, num_block=1)
    c.degrade.mode = "bicubic"  # fidelity stage: LR = MATLAB bicubic of the GT crop
    c.degrade.gt_size = 64  # LR crops of 16 px
    c.data.gt_size = 64
    c.losses = {"l1": dict(name="l1", weight=1.0, target="gt")}
    # A high peak lr suits this tiny net; measured on 2 CPU cores: 1000 steps in ~2m25s end at 29.90 dB
    # against 29.38 dB for bicubic on the held-out photographs (README, "What we measured").
    c.optim.update(lr=2e-3, schedule="cosine", warmup_steps=50, min_lr=1e-5, ema_decay=0.99)
    c.data.num_workers = 0  # worker processes take seconds to start; decoding 12 photographs needs none
    c.train.update(total_steps=1000, batch_size=8, log_every=50, ckpt_every=250)
    c.val.update(every=250, at_start=True)
    return c
