"""HAT-S x4 perceptual + GAN stage: traiNNer-redux's `options/_templates/train/HAT/HAT_S_gan.yml`, warm-started from
configs/hat_x4.py's best export (runs/hat_x4/models/hat_s_x4_best.safetensors).

The template's values: AdamW 1e-4 for G and D, MultiStepLR halving at 125k/200k/225k/237.5k of 250k, LR crops 64
(GT 256) and batch 4, which the paper accumulates 8 times; its use_checkpoint is the fidelity recipe's use_chk.
jaxsr/recipes/_gan.py holds the objective and the discriminator, and says where jaxsr differs from the template.
Needs --config.losses.perceptual.vgg_weights=/path/to/vgg19-dcbb9e9d.pth.
"""
from jaxsr.recipes import hat_x4
from jaxsr.recipes._gan import perceptual_stage


def get_config():
    return perceptual_stage(hat_x4, lq_size=64, batch_size=4, lr=1e-4, total_steps=250_000,
                            milestones=(125_000, 200_000, 225_000, 237_500))
