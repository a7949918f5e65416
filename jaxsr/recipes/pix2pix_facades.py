"""pix2pix on facades (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017),
kind='pix2pix' (docs/translation.md), with junyanz/pytorch-CycleGAN-and-pix2pix's defaults for
`python train.py --dataroot ./datasets/facades --name facades_pix2pix --model pix2pix --direction BtoA`:

  - G: unet_256 (`p2p_unet`: 8 downsamplings, ngf 64, BatchNorm, dropout 0.5), init normal(0, 0.02);
  - D: the 70x70 PatchGAN (`patchgan`, netD 'basic': n_layers 3, ndf 64, BatchNorm) on cat(A, B): 6 channels;
  - data: facades' A|B images (256x256 each half) in data.train_dir / data.val_dir, direction BtoA (labels -> photo),
    preprocess resize_and_crop (load 286, crop 256), random flips; batch 1;
  - objective: vanilla GAN + 100 x L1 (lambda_L1); D's loss halved;
  - Adam lr 2e-4 for G and D, beta1 0.5; lr_policy 'linear': 100 epochs at lr, 100 decaying to 0. facades has 400
    training pairs, so at batch 1 an epoch is 400 steps: 40k + 40k steps;
  - validation (PSNR/SSIM of G(A) against B) every 4k steps (10 epochs); no EMA (the reference keeps none).
Set data.train_dir and data.val_dir to your facades/train and facades/val.
"""
from ml_collections import ConfigDict

from jaxsr import archs
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.kind = "pix2pix"
    c.name = "facades_pix2pix"
    c.scale = 1
    c.model = ConfigDict(dict(arch="p2p_unet", **archs.get("p2p_unet").defaults), type_safe=False)  # unet_256
    c.pix2pix.update(direction="BtoA", preprocess="resize_and_crop", load_size=286, crop_size=256, no_flip=False,
                     lambda_L1=100.0, gan_mode="vanilla")
    c.losses = ConfigDict(type_safe=False)  # the kind's own objective: pix2pix.lambda_L1 and gan_mode
    c.gan.enabled = True
    c.gan.discriminator = ConfigDict(dict(arch="patchgan", **archs.get("patchgan").defaults), type_safe=False)  # basic
    schedule = dict(name="adam", lr=2e-4, betas=(0.5, 0.999), weight_decay=0.0, schedule="linear",
                    linear_steps=40_000, linear_decay_steps=40_000)
    c.optim.update(**schedule, ema_decay=0.0)
    c.optim_d.update(**schedule)
    c.train.update(total_steps=80_000, batch_size=1, ckpt_every=4_000)
    c.val.every = 4_000
    c.data.train_dir, c.data.val_dir = "datasets/facades/train", "datasets/facades/val"
    return c
