"""SPAN x4 perceptual + GAN stage: traiNNer-redux's `options/_templates/train/SPAN/SPAN_gan.yml`, warm-started from
configs/span_x4.py's best export (runs/span_x4/models/span_x4_best.safetensors).

From that template: `norm: false` (the fidelity recipe's network), LR crops 64 (GT 256), batch 16; AdamW 1e-4 for G
and D (the paper's 2.5e-4 is the template's comment); MultiStepLR halving at 100k/200k/300k/400k of 500k. The
objective, the discriminator and what differs from the template: jaxsr/recipes/_gan.py. Needs
--config.losses.perceptual.vgg_weights=/path/to/vgg19-dcbb9e9d.pth.
"""
from jaxsr.recipes import span_x4
from jaxsr.recipes._gan import perceptual_stage


def get_config():
    return perceptual_stage(span_x4, lq_size=64, batch_size=16, lr=1e-4, total_steps=500_000,
                            milestones=(100_000, 200_000, 300_000, 400_000))
