"""RealPLKSR x4 perceptual + GAN stage: traiNNer-redux's `options/_templates/train/RealPLKSR/RealPLKSR_gan.yml`,
warm-started from configs/realplksr_x4.py's best export (runs/realplksr_x4/models/realplksr_x4_best.safetensors).

From that template: LR crops 96 (GT 384), batch 16; AdamW 1e-4 for G and D; MultiStepLR halving at 100k of 250k;
no gradient clipping (the fidelity recipe clips at 1.0). Not from it: the upsampler stays DySample, the network of the
fidelity run this starts from (the template's is pixelshuffle; it notes dysample is better on even scales).
The objective, the discriminator and what else differs: jaxsr/recipes/_gan.py. Needs
--config.losses.perceptual.vgg_weights=/path/to/vgg19-dcbb9e9d.pth.
"""
from jaxsr.recipes import realplksr_x4
from jaxsr.recipes._gan import perceptual_stage


def get_config():
    return perceptual_stage(realplksr_x4, lq_size=96, batch_size=16, lr=1e-4, total_steps=250_000, milestones=(100_000,))
