"""Compact x4 perceptual + GAN stage: traiNNer-redux's `options/_templates/train/Compact/Compact_gan.yml`, warm-started
from configs/compact_x4.py's best export (runs/compact_x4/models/compact_x4_best.safetensors).

From that template: LR crops 96 (GT 384), batch 8; AdamW 1e-4 for G and D; MultiStepLR halving at
50k/100k/150k/200k/225k of 250k. The objective, the discriminator and what differs from the template:
jaxsr/recipes/_gan.py. Needs --config.losses.perceptual.vgg_weights=/path/to/vgg19-dcbb9e9d.pth.
"""
from jaxsr.recipes import compact_x4
from jaxsr.recipes._gan import perceptual_stage


def get_config():
    return perceptual_stage(compact_x4, lq_size=96, batch_size=8, lr=1e-4, total_steps=250_000,
                            milestones=(50_000, 100_000, 150_000, 200_000, 225_000))
