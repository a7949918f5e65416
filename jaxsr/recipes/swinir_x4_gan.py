"""SwinIR-M x4 perceptual + GAN stage: traiNNer-redux's `options/_templates/train/SwinIR/SwinIR_M_gan.yml`,
warm-started from configs/swinir_x4.py's best export (runs/swinir_x4/models/swinir_m_x4_best.safetensors).

From that template: LR crops 64 (GT 256), batch 8; AdamW 2e-4 for G and D with betas (0.9, 0.99) (the fidelity
recipe's KAIR Adam has 0.999); MultiStepLR halving at 125k/200k/225k/237.5k of 250k. The objective, the
discriminator and what differs from the template: jaxsr/recipes/_gan.py. Needs
--config.losses.perceptual.vgg_weights=/path/to/vgg19-dcbb9e9d.pth.
"""
from jaxsr.recipes import swinir_x4
from jaxsr.recipes._gan import perceptual_stage


def get_config():
    return perceptual_stage(swinir_x4, lq_size=64, batch_size=8, lr=2e-4, total_steps=250_000,
                            milestones=(125_000, 200_000, 225_000, 237_500))
