"""PPON x4, the three progressive phases (kind='ppon', docs/ppon.md): Hui et al., "Progressive Perception-Oriented
Network for Single Image Super-Resolution" (Information Sciences 2020), trained as Zheng222/PPON's train.py stages
and victorca25/traiNNer's guide (docs/howtotrain.md, the StepLR_Restart options of its templates) set it up.

  - network: the released PPON_G.pth's (64 features, 24 content blocks, 2 structure and 2 perceptual blocks);
  - phase 1 (content), steps [0, 138k) (train.py's 1000 epochs of 138 iterations): L1, weight 1 (`pix`);
  - phase 2 (structure), [138k, 179.4k) (300 epochs): multiscale L1 (weights 1, .5, .25, .125, .125) and 1 - MS-SSIM on RGB, weight
    1 each (`pix-multiscale`, `ms-ssim`; Zheng222's PPON_model adds them unweighted);
  - phase 3 (perceptual), from 179.4k to 220.8k (300 epochs): VGG19 conv5_4 (before its ReLU, the reference's feature_layer=34) L1,
    weight 1 (`fea`), and the relativistic average vanilla GAN, weight 0.005 (`gan`), with a VGG-style discriminator;
  - Adam lr 2e-4 (G and D), betas (0.9, 0.999) as torch's default; StepLR_Restart (schedule 'step_restart'; traiNNer's
    lr_gamma, lr_step_sizes, restarts, restart_weights, clear_state are optim.gamma, step_sizes, restarts,
    restart_weights, clear_state here): each phase restarts at lr 2e-4 (weights [1, 1]) at its start, as each of
    train.py's stages starts a new run, and halves it every 200 epochs in phase 1 and every 100 in phases 2 and 3
    (27600 / 13800 / 13800 iterations; train.py's MultiStepLR halves at [200, 400, 600, 800] and [100, 150, 200, 250]
    epochs, which a step schedule approximates); no EMA (neither reference keeps one), batch 25 as train.py.
  - why not as the paper: GT crops of 128 (LR 32, the guide's example) instead of 192, because jaxsr's VGG-style
    discriminator takes 128 or 256 px (the reference's Discriminator_192 is not ported); bicubic LR made on the fly.

The feature loss needs torchvision's ImageNet VGG19 weights (vgg19-dcbb9e9d.pth), which jaxsr never downloads:
--config.losses.fea.vgg_weights=/path/to/vgg19-dcbb9e9d.pth. Fine-tune the released model with
--config.model.arch=auto --config.init_weights=PPON_G.pth (and --config.ppon.ppon_stages="(0, 0)" for phase 3 only).
"""
from ml_collections import ConfigDict, config_dict

from jaxsr import archs
from jaxsr.train.config import base_config

STAGES = (138_000, 179_400)


def get_config():
    c = base_config()
    c.kind = "ppon"
    c.name = "ppon"
    c.scale = 4
    c.model = ConfigDict(dict(arch="ppon", **archs.get("ppon").defaults), type_safe=False)
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = c.data.gt_size = 128
    c.losses = {
        "pix": dict(name="l1", weight=1.0, target="gt"),
        "pix-multiscale": dict(name="multiscale", weight=1.0, target="gt", criterion="l1", scales=5),
        "ms-ssim": dict(name="ms_ssim", weight=1.0, target="gt", y_channel=False),
        "fea": dict(name="perceptual", weight=1.0, target="gt", vgg_weights=None, criterion="l1",
                    layer_weights={"conv5_4": 1.0}),
        "gan": dict(name="gan", weight=0.005, gan_type="vanilla", relativistic=True),
    }
    c.losses.fea.vgg_weights = config_dict.placeholder(str)  # required: see the docstring
    c.ppon.update(ppon_stages=STAGES, p1_losses=("pix",), p2_losses=("pix-multiscale", "ms-ssim"), p3_losses=("fea",))
    c.gan.enabled = True
    c.gan.discriminator = ConfigDict(dict(arch="vgg", num_feat=64, input_size=128), type_safe=False)
    c.optim.update(name="adam", lr=2e-4, betas=(0.9, 0.999), schedule="step_restart", gamma=0.5,
                   step_sizes=(27_600, 13_800, 13_800), restarts=STAGES, restart_weights=(1.0, 1.0), ema_decay=0.0)
    c.optim_d.update(name="adam", lr=2e-4, betas=(0.9, 0.999))
    c.train.update(total_steps=220_800, batch_size=25)
    c.data.val_max_size = 512
    return c
