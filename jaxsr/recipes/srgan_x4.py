"""SRGAN x4 (Ledig et al., CVPR 2017) as BasicSR trains it: `options/train/SRResNet_SRGAN/train_MSRGAN_x4.yml`
(004_MSRGAN_x4_f64b16_DIV2K_400k_B16G1), warm-started from configs/srresnet_x4.py's best export (BasicSR starts from
its 001_MSRResNet run's net_g_1000000.pth; a released MSRResNet_x4.pth loads as well with --config.init_weights).

Values from that file:
  - G: MSRResNet 64 features, 16 blocks (`srresnet`, BasicSR layout); D: VGGStyleDiscriminator, num_feat 64, for
    128 px inputs (jaxsr's `vgg` discriminator, input_size 128 = the GT crop);
  - GT crops 128 (LR 32), batch 16, hflip + rotation;
  - L1 weight 1e-2; VGG19 perceptual on conv5_4 before its ReLU (the paper's VGG54), weight 1, L1 criterion, ImageNet
    input normalisation; vanilla GAN weight 5e-3;
  - Adam lr 1e-4, betas (0.9, 0.99), weight decay 0, for G and D; MultiStepLR at 50k/100k/200k/300k, gamma 0.5;
    400k iterations; D one update per G update from the first step (net_d_iters 1, net_d_init_iters 0); EMA 0.999.
The LR is MATLAB bicubic of the GT crop (the yml reads bicubic LR folders; --config.data.lr_dir for paired LR).
The perceptual loss needs torchvision's ImageNet VGG19 weights, which jaxsr never downloads:
--config.losses.perceptual.vgg_weights=/path/to/vgg19-dcbb9e9d.pth
"""
from ml_collections import config_dict

from jaxsr.recipes import srresnet_x4


def get_config():
    c = srresnet_x4.get_config()
    c.init_weights = f"runs/srresnet_x4/models/{c.name}_x4_best.safetensors"  # the fidelity stage's best export
    c.name = "srgan"
    c.losses = {
        "l1": dict(name="l1", weight=1e-2, target="gt"),
        "perceptual": dict(name="perceptual", weight=1.0, target="gt", vgg_weights=None, criterion="l1",
                           layer_weights={"conv5_4": 1.0}),
        "gan": dict(name="gan", weight=5e-3, gan_type="vanilla"),
    }
    c.losses.perceptual.vgg_weights = config_dict.placeholder(str)  # required: see the docstring
    c.gan.enabled = True
    c.gan.discriminator.update(arch="vgg", num_feat=64, input_size=128)
    schedule = dict(name="adam", lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep", gamma=0.5,
                    milestones=(50_000, 100_000, 200_000, 300_000))
    c.optim.update(**schedule, ema_decay=0.999)
    c.optim_d.update(**schedule)
    c.train.total_steps = 400_000
    return c
