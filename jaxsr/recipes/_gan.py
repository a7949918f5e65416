"""What the `*_gan` recipes share: traiNNer-redux's GAN-template stage on top of a fidelity recipe.

traiNNer-redux's `options/_templates/train/<ARCH>/<NAME>_gan.yml` (the paired, non-OTF templates, as at commit
686293190aca) all give the same objective: MS-SSIM (0.5, traiNNer-redux's MSSIMLoss defaults: YIQ Y, no luminance
term), VGG19 perceptual (0.01, charbonnier on conv1_2/conv2_2/conv3_4/conv4_4/conv5_4 weighted 0.1/0.1/1/1/1, the
loss's defaults for that criterion), HSLuv (1.0, charbonnier) and vanilla GAN (0.1); no pixel loss. AdamW betas
(0.9, 0.99), weight decay 0 for G and D, one MultiStepLR (gamma 0.5) for both, EMA 0.999, no gradient clipping.
Only lr, milestones, length, crop and batch differ per architecture: the arguments of `perceptual_stage`.

Where jaxsr differs from the templates:
  - discriminator: the templates use `dunet` (Mish, DySample upsampling), which jaxsr does not have; this is their
    listed alternative `unetdiscriminatorsn` (Real-ESRGAN's U-Net with spectral norm, num_feat 64, skip connections);
  - VGG19's first convolution pads with zeros (torchvision's, as BasicSR); traiNNer-redux replicates the edge there;
  - the templates validate with TOPIQ (off by default); best-k here follows PSNR (val.best_metric: set val.topiq, the
    templates' choice, or val.lpips or val.dists, and best_metric for a perceptual choice).
The perceptual loss needs torchvision's ImageNet VGG19 weights, which jaxsr never downloads:
--config.losses.perceptual.vgg_weights=/path/to/vgg19-dcbb9e9d.pth
"""
from ml_collections import config_dict


def perceptual_stage(fidelity, *, lq_size, batch_size, lr, milestones, total_steps):
    """`fidelity.get_config()` turned into its GAN stage, warm-started from that run's best export
    (runs/<fidelity recipe>/models/<name>_x<scale>_best.safetensors, what run_train.py leaves by default)."""
    c = fidelity.get_config()
    stem = fidelity.__name__.rsplit(".", 1)[-1]
    c.init_weights = f"runs/{stem}/models/{c.name}_x{c.scale}_best.safetensors"
    c.name = f"{c.name}_gan"
    c.losses = {
        "ms_ssim": dict(name="ms_ssim", weight=0.5, target="gt"),
        "perceptual": dict(name="perceptual", weight=0.01, target="gt", vgg_weights=None, criterion="charbonnier",
                           layer_weights={"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}),
        "hsluv": dict(name="hsluv", weight=1.0, target="gt", criterion="charbonnier"),
        "gan": dict(name="gan", weight=0.1, gan_type="vanilla"),
    }
    c.losses.perceptual.vgg_weights = config_dict.placeholder(str)  # required: see the module docstring
    c.gan.enabled = True
    c.gan.discriminator.update(arch="unet", num_feat=64, skip_connection=True)  # closest to dunet: see above
    schedule = dict(name="adamw", lr=lr, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep", gamma=0.5,
                    milestones=tuple(milestones), clip_grad_norm=0.0)  # grad_clip: false
    c.optim.update(**schedule, ema_decay=0.999)
    c.optim_d.update(**schedule)
    c.degrade.gt_size = c.data.gt_size = lq_size * c.scale
    c.train.update(total_steps=total_steps, batch_size=batch_size)
    return c
