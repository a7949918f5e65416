"""SFTGAN x4 (Wang et al., "Recovering Realistic Texture in Image Super-resolution by Deep Spatial Feature Transform",
CVPR 2018), kind='sftgan' (docs/sftgan.md), as victorca25/traiNNer's codes/options/sr/train_sftgan.json and
SFTGAN_ACD_model.py train it (xinntao's debug_003_SFTGANx4_OST):

  - G: SFT_Net (`sftgan`, version 'pytorch': 64 features, 16 SFT residual blocks, 8 classes), from sft_net_ini.pth,
    i.e. an SRResNet PSNR pretrain put in by transfer_params_sft: --config.init_weights=SRResNet_bicx4_in3nf64nb16.pth
    (or an MSRResNet x4 file) does that step here (model.arch='auto' takes the widths from it);
  - D: ACD_VGG_BN_96 (`acd`: widths 64..512, hidden 100, 8 categories) on the 96 px HR crops;
  - data: OutdoorSceneTraining images (train/img, one sub-folder per category: the path names it) with their maps
    from OutdoorSceneSeg (train/bicseg; `python -m jaxsr.segment` writes them), and DIV2K800 sub-images as background
    (dataroot_HR_bg, 1 sample in 10, category 0); HR crops 96, batch 16, flips on, rotations off (use_rot false);
  - losses: pixel off (pixel_weight 0), VGG feature L1 weight 1 (traiNNer's define_F: VGG19 features up to layer 34,
    conv5_4 before its ReLU), vanilla GAN weight 5e-3 with the category cross-entropy on SR at the same weight;
  - Adam lr_G 1e-4 with the SFT/Cond parameters at 5x and the rest updated from iteration 20000, lr_D 1e-4, beta1 0.9
    (beta2 0.999, weight decay 0); MultiStepLR at 50k/100k/150k/200k, gamma 0.5, for all three; 600k iterations,
    validation every 2k; no EMA (the reference keeps none).
Not as the reference: its random down-scaling of each HR (x1 to x0.5) before the crop is not done, and the LR is
8-bit (jaxsr's MATLAB-bicubic LR, as its validation uses). The feature loss needs torchvision's ImageNet VGG19 weights,
which jaxsr never downloads: --config.losses.fea.vgg_weights=/path/to/vgg19-dcbb9e9d.pth. Set data.train_dir,
data.val_dir, sftgan.seg_dir, sftgan.val_seg_dir and sftgan.bg_dir to your folders.
"""
from ml_collections import ConfigDict, config_dict

from jaxsr import archs
from jaxsr.train.config import base_config


def get_config():
    c = base_config()
    c.kind = "sftgan"
    c.name = "sftgan"
    c.scale = 4
    c.model = ConfigDict(dict(arch="sftgan", **archs.get("sftgan").defaults), type_safe=False)
    c.init_weights = "SRResNet_bicx4_in3nf64nb16.pth"  # transfer_params_sft's PSNR pretrain (a path of yours)
    c.data.gt_size = c.degrade.gt_size = 96  # HR_size
    c.data.use_hflip, c.data.use_rot = True, False  # use_flip, use_rot
    c.degrade.mode = "bicubic"
    c.sftgan.update(bg_ratio=0.1, sft_lr_mult=5.0, trunk_delay=20_000)
    c.losses = {
        "fea": dict(name="perceptual", weight=1.0, target="gt", vgg_weights=None, criterion="l1",
                    layer_weights={"conv5_4": 1.0}),
        "gan": dict(name="gan", weight=5e-3, gan_type="vanilla"),
    }
    c.losses.fea.vgg_weights = config_dict.placeholder(str)  # required: see the docstring
    c.gan.enabled = True
    c.gan.discriminator = ConfigDict(dict(arch="acd", **archs.get("acd").defaults), type_safe=False)
    c.gan.discriminator.input_size = 96
    schedule = dict(name="adam", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0, schedule="multistep", gamma=0.5,
                    milestones=(50_000, 100_000, 150_000, 200_000))
    c.optim.update(**schedule, ema_decay=0.0)
    c.optim_d.update(**schedule)
    c.train.update(total_steps=600_000, batch_size=16, ckpt_every=2_000)
    c.val.every = 2_000
    return c
