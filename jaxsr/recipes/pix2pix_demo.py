"""A pix2pix demo that trains in minutes on a laptop CPU: colour photograph (A) -> its gray version (B), on the
photographs that ship with scikit-image (kind='pix2pix', docs/translation.md).

The pairs are written once by this module (`python -m jaxsr.recipes.pix2pix_demo datasets/pix2pix_demo`): A/ and B/
folders under train/ (scikit-image's training photographs of jaxsr.data.sources) and val/ (chelsea and coffee, held
out), 128 px wide.
B is the luma (ITU-R BT.601, as cv2/PIL's RGB -> L) repeated on three channels, so G must learn one linear map of the
colours everywhere; validation reports G(A)'s PSNR against B next to the identity mapping's (A against B), the line to
beat. A small U-Net (5 downsamplings, ngf 16, no dropout) and a PatchGAN (ndf 16, 2 layers) on 64 px crops of 96 px wide
resizes; vanilla GAN + 100 x L1 as pix2pix; Adam 1e-3, beta1 0.5; lr_policy 'linear' (half the steps at lr).

    python -m jaxsr.recipes.pix2pix_demo datasets/pix2pix_demo
    python run_train.py --config configs/pix2pix_demo.py --workdir runs/pix2pix_demo
"""
import os
import sys

import numpy as np
from ml_collections import ConfigDict

from jaxsr import archs
from jaxsr.train.config import base_config

ROOT = "datasets/pix2pix_demo"
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def translate(a):
    """B of a colour photograph A (HxWx3 in [0, 1]): its luma on three channels."""
    return np.repeat(a @ LUMA, 3, axis=-1).reshape(a.shape)


def write_pairs(root=ROOT, width=128):
    """train/{A,B}/ and val/{A,B}/ PNG pairs from scikit-image's photographs (as jaxsr.data.sources splits them),
    resized to `width` px wide (bicubic): decoding and resizing 512 px photographs every step would cost more than the
    step."""
    from jaxsr.data.aligned import resize
    from jaxsr.data.sources import builtin_photos, read_rgb
    from jaxsr.imageio import write_image

    photos, _ = builtin_photos()
    for split, files in (("train", photos["train"]), ("val", photos["val"])):
        for f in files:
            a = read_rgb(f)
            a = resize(a, width, max(1, round(a.shape[0] * width / a.shape[1])))
            name = os.path.splitext(os.path.basename(f))[0] + ".png"
            for side, img in (("A", a), ("B", translate(a))):
                os.makedirs(os.path.join(root, split, side), exist_ok=True)
                write_image(os.path.join(root, split, side, name), img, bits=8)
    return root


def get_config():
    c = base_config()
    c.kind = "pix2pix"
    c.name = "pix2pix_demo"
    c.scale = 1
    c.model = ConfigDict(dict(arch="p2p_unet", **{**archs.get("p2p_unet").defaults, "ngf": 16, "num_downs": 5,
                                                   "use_dropout": False}), type_safe=False)
    c.pix2pix.update(direction="AtoB", preprocess="scale_width_and_crop", load_size=96, crop_size=64, no_flip=False,
                     lambda_L1=100.0, gan_mode="vanilla")
    c.losses = ConfigDict(type_safe=False)  # the kind's own objective
    c.gan.enabled = True
    c.gan.discriminator = ConfigDict(dict(arch="patchgan", **{**archs.get("patchgan").defaults, "ndf": 16,
                                                               "n_layers": 2}), type_safe=False)
    schedule = dict(name="adam", lr=1e-3, betas=(0.5, 0.999), weight_decay=0.0, schedule="linear", linear_steps=0,
                    linear_decay_steps=0)  # 0, 0: half of total_steps each
    c.optim.update(**schedule, ema_decay=0.0)
    c.optim_d.update(**schedule)
    c.data.num_workers = 0  # a dozen small photographs: worker processes would take longer to start than to read them
    c.train.update(total_steps=600, batch_size=4, log_every=50, ckpt_every=200)
    c.val.update(every=200, at_start=True)
    c.data.train_dir, c.data.val_dir = f"{ROOT}/train", f"{ROOT}/val"
    return c


if __name__ == "__main__":
    print(f"wrote the pairs under {write_pairs(*sys.argv[1:2])}")
