"""HAT-S x4 perceptual + GAN stage: traiNNer-redux's `options/_templates/train/HAT/HAT_S_gan.yml`, warm-started from
configs/hat_x4.py's best export (runs/hat_x4/models/hat_s_x4_best.safetensors).

From that template: use_checkpoint on (the fidelity recipe's use_chk), LR crops 64 (GT 256), batch 4 (the paper
accumulates 8); AdamW 1e-4 for G and D; MultiStepLR halving at 125k/200k/225k/237.5k of 250k. The objective, the
discriminator and what differs from the template: jaxsr/recipes/_gan.py. Needs
--config.losses.perceptual.vgg_weights=/path/to/vgg19-dcbb9e9d.pth.
"""
from jaxsr.recipes import hat_x4
from jaxsr.recipes._gan import perceptual_stage


def get_config():
    return perceptual_stage(hat_x4, lq_size=64, batch_size=4, lr=1e-4, total_steps=250_000,
                            milestones=(125_000, 200_000, 225_000, 237_500))
