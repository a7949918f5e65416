"""RRDB x4 perceptual + GAN stage (the RealESRGAN recipe), warm-started from configs/x4.py's export.

Real-ESRGAN's train_realesrgan_x4plus.yml: L1 (1.0) and VGG19 perceptual (1.0, conv1_2..conv5_4 with
weights 0.1/0.1/1/1/1) on the USM-sharpened GT, vanilla GAN (0.1) on the plain GT, U-Net discriminator
with spectral norm, Adam 1e-4 for G and D, 400k iterations, EMA 0.999.

The perceptual loss needs torchvision's ImageNet VGG19 weights (vgg19-dcbb9e9d.pth), which jaxsr never
downloads: --config.losses.perceptual.vgg_weights=/path/to/vgg19-dcbb9e9d.pth
"""
from ml_collections import config_dict

from jaxsr.recipes import x4


def get_config():
    c = x4.get_config()
    c.name = "realesrgan"
    c.init_weights = "runs/x4/models/realesrnet_x4_best.safetensors"  # the fidelity stage's best export
    c.losses = {
        "l1": dict(name="l1", weight=1.0, target="gt_usm"),
        "perceptual": dict(name="perceptual", weight=1.0, target="gt_usm", vgg_weights=None, criterion="l1",
                           layer_weights={"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}),
        "gan": dict(name="gan", weight=0.1, gan_type="vanilla"),
    }
    c.losses.perceptual.vgg_weights = config_dict.placeholder(str)  # required: see the docstring
    c.gan.enabled = True
    c.gan.discriminator.update(arch="unet", num_feat=64, skip_connection=True)
    c.optim.update(lr=1e-4)
    c.optim_d.update(name="adam", lr=1e-4, betas=(0.9, 0.99))
    c.train.total_steps = 400_000
    return c
