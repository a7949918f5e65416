"""CycleGAN on horse2zebra (Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", ICCV 2017), kind='cyclegan' (docs/translation.md), with junyanz/pytorch-CycleGAN-and-pix2pix's defaults for
`python train.py --dataroot ./datasets/horse2zebra --name horse2zebra_cyclegan --model cycle_gan`:

  - G_A (horse -> zebra) and G_B (zebra -> horse): resnet_9blocks (`p2p_resnet`: ngf 64, InstanceNorm, no dropout,
    reflection padding), init normal(0, 0.02);
  - D_A, D_B: the 70x70 PatchGAN (`patchgan`, netD 'basic': n_layers 3, ndf 64, InstanceNorm);
  - data: data.train_dir with trainA/ and trainB/, data.val_dir with testA/ and testB/; random pairing, preprocess
    resize_and_crop (load 286, crop 256), random flips; batch 1;
  - objective: lsgan, lambda_A = lambda_B = 10 on the cycles, lambda_identity 0.5, a 50-image pool per D;
  - Adam lr 2e-4 (G_A + G_B together, D_A + D_B together), beta1 0.5; lr_policy 'linear': 100 epochs at lr then 100
    decaying. An epoch is max(|trainA|, |trainB|) = 1334 records at batch 1: 133.4k + 133.4k steps;
  - validation (the cycle reconstructions' PSNR/SSIM) every 13.34k steps (10 epochs).
Warm starts: cyclegan.pretrain_model_G_A / _G_B / _D_A / _D_B (e.g. junyanz's latest_net_G_A.pth).
"""
from ml_collections import ConfigDict

from jaxsr import archs
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.kind = "cyclegan"
    c.name = "horse2zebra_cyclegan"
    c.scale = 1
    c.model = ConfigDict(dict(arch="p2p_resnet", **archs.get("p2p_resnet").defaults), type_safe=False)  # resnet_9blocks
    c.cyclegan.update(direction="AtoB", preprocess="resize_and_crop", load_size=286, crop_size=256, no_flip=False,
                      lambda_A=10.0, lambda_B=10.0, lambda_identity=0.5, pool_size=50, gan_mode="lsgan")
    c.losses = ConfigDict(type_safe=False)  # the kind's own objective
    c.gan.enabled = True
    c.gan.discriminator = ConfigDict(dict(arch="patchgan", **{**archs.get("patchgan").defaults, "norm": "instance"}),
                                     type_safe=False)
    schedule = dict(name="adam", lr=2e-4, betas=(0.5, 0.999), weight_decay=0.0, schedule="linear",
                    linear_steps=133_400, linear_decay_steps=133_400)
    c.optim.update(**schedule, ema_decay=0.0)
    c.optim_d.update(**schedule)
    c.train.update(total_steps=266_800, batch_size=1, ckpt_every=13_340)
    c.val.every = 13_340
    c.data.train_dir, c.data.val_dir = "datasets/horse2zebra", "datasets/horse2zebra"
    return c
