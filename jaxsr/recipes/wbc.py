"""White-box Cartoonization (Wang and Yu, "Learning to Cartoonize Using White-box Cartoon Representations", CVPR
2020), kind='wbc' (docs/wbc.md), with the original's numbers (SystemErrorWang/White-box-Cartoonization
train_code/pretrain.py and train.py):

  - G: `wbcunet` (unet_generator: channel 32, 4 res blocks), its output guided-filtered with the photo (r=1, eps=1e-2);
  - D_S, D_T: disc_sn, channel 32 (wbc.ndf);
  - data: data.train_dir with trainA/ (photos) and trainB/ (cartoons), random pairing, 256 px crops, flips; batch 16.
    The original draws a face batch every fifth step and scenery otherwise; the port's template (train_wbc.yml,
    concat_unaligned) draws each batch from scenery or faces at 4:1, which wbc.dataroot_A/B give (see below);
  - initialisation (pretrain.py): 50k steps of L1(G(photo), photo), Adam 2e-4, betas (0.5, 0.99);
  - then 100k adversarial steps (train.py): g = 1e4 tv + 1e-1 GAN(blur) + GAN(gray) + 2e2 (photo_loss +
    superpixel_loss), where photo_loss / superpixel_loss are mean|conv4_4(a) - conv4_4(b)| / (h w c) of VGG19.
    Here 'fea' is the mean (not divided again by h w c), so the 200 becomes 200 / (32 * 32 * 512) at 256 px crops
    (conv4_4 of a 256 px crop: 32 x 32 x 512). The original's VGG takes caffe BGR inputs in 0..255; this one takes
    torchvision's ImageNet-normalised RGB, as the port's perceptual loss: the feature scale differs (wbc.vgg_weights
    must be torchvision's VGG19 weights);
  - Adam 2e-4, betas (0.5, 0.99) for G and for D_S + D_T, constant lr.
Give torchvision's VGG19 (the 'fea' terms): --config.wbc.vgg_weights=/path/to/vgg19-dcbb9e9d.pth
"""
from ml_collections import ConfigDict

from jaxsr import archs
from jaxsr.train.config import base_config

INIT_STEPS, ADV_STEPS, CROP = 50_000, 100_000, 256
FEA = 200.0 / ((CROP // 8) ** 2 * 512)  # train.py's 2e2 on mean|dphi| / (h w c) of conv4_4


def get_config():
    c = base_config()
    c.kind = "wbc"
    c.name = "wbc"
    c.scale = 1
    c.model = ConfigDict(dict(arch="wbcunet", **archs.get("wbcunet").defaults), type_safe=False)
    c.losses = ConfigDict(type_safe=False)  # the kind's own objective
    c.wbc.update(preprocess="crop", load_size=CROP, crop_size=CROP, no_flip=False, init_steps=INIT_STEPS,
                 init_losses=("pix",),  # pretrain.py: L1 of G(photo) against the photo
                 surf_losses=(), text_losses=(),  # the representations meet G through the GAN terms only
                 struct_losses=("fea",), cont_losses=("fea",), reg_losses=("tv",),
                 surface_scale=0.1,  # 1e-1 * g_loss_blur
                 texture_scale=1.0,  # g_loss_gray
                 struct_scale=FEA, content_scale=FEA,  # 2e2 * (superpixel_loss + photo_loss)
                 reg_scale=1e4,  # 1e4 * tv_loss
                 gan_weight=1.0, lambda_identity=0.0, ndf=32, colorshift="uniform", n_segments=200)  # wbc.vgg_weights: required, see above
    adam = dict(name="adam", lr=2e-4, betas=(0.5, 0.99), weight_decay=0.0, schedule="constant")
    c.optim.update(**adam, ema_decay=0.0)
    c.optim_d.update(**adam)
    c.train.update(total_steps=INIT_STEPS + ADV_STEPS, batch_size=16, ckpt_every=5_000)
    c.val.every = 5_000
    c.data.train_dir, c.data.val_dir = "datasets/wbc", "datasets/wbc"
    # the port's template: each batch all scenery or all faces, 4:1 (replaces data.train_dir's trainA/ and trainB/):
    # c.wbc.update(dataroot_A=("datasets/wbc/scenery_photo", "datasets/wbc/face_photo"),
    #              dataroot_B=("datasets/wbc/scenery_cartoon", "datasets/wbc/face_cartoon"), sampler_weights=(4, 1))
    return c
