"""RRDB x4 (64/23/32), Real-ESRGAN second-order degradations, fidelity stage (the RealESRNet recipe).

Values follow Real-ESRGAN's train_realesrnet_x4plus.yml unless a comment says why not:
  - degradations: jaxsr.degrade defaults = that yml (blur/sinc, resize, noise, JPEG, twice, final sinc);
    GT crop 400 on the host then 256 after degrading, as Real-ESRGAN's dataset and feed_data do;
  - L1 on the USM-sharpened GT (l1_gt_usm), Adam lr 2e-4 betas (0.9, 0.99), EMA 0.999, 1M iterations;
  - batch 16 instead of 48 (12 on each of 4 V100s): one GPU; raise it with more devices;
  - the training-pair queue holds 192 pairs (180 in the yml, which must divide by the batch).
Next stage: configs/x4_gan.py warm-starts from this run's export.
"""
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.name = "realesrnet"
    c.scale = 4
    # the model is the base config's RRDB (jaxsr.archs.esrgan.DEFAULTS: 64 features, 23 blocks, growth 32)
    c.data.gt_size = 400
    c.degrade.mode = "realesrgan"
    c.degrade.gt_size = 256
    c.degrade.queue_size = 192
    c.losses = {"l1": dict(name="l1", weight=1.0, target="gt_usm")}
    c.optim.update(name="adam", lr=2e-4, betas=(0.9, 0.99), schedule="constant", ema_decay=0.999)
    c.train.update(total_steps=1_000_000, batch_size=16, log_every=100, ckpt_every=5_000)
    c.val.update(every=5_000)
    c.data.val_max_size = 512  # centre crops keep validation quick on large photographs
    return c
