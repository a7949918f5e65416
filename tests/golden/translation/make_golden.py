"""Writes the golden data of pix2pix and CycleGAN steps (identity on and off) beside this file: the loss
values junyanz's Pix2PixModel and CycleGANModel log after each of two `optimize_parameters()` on seeded, perturbed tiny weights and
a fixed batch of photo crops.

Run by hand, never by the tests or CI, with a Python that has torch (2.13.0 CPU here), numpy and scikit-image, and the
reference's files (a checkout, or the files extracted from one; nothing is installed):

    python tests/golden/translation/make_golden.py --junyanz JUNYANZ_ROOT

What runs, from JUNYANZ_ROOT (junyanz/pytorch-CycleGAN-and-pix2pix; the stored versions read):
  - models/pix2pix_model.py @ 032e88438b1b2690e538c2cf399ebceb76adbea9 (Pix2PixModel: forward, D's update on the
    detached fake and the real pair, loss 0.5 (fake + real), then G's on GANLoss + lambda_L1 L1 against the updated D);
  - models/cycle_gan_model.py @ 48ced5e8e3af621acca066a70203a196ba571bed (CycleGANModel: the forward, G_A + G_B's
    update, then D_A's and D_B's);
  - models/base_model.py @ 07cff558a43d46a7d5d3617cbfdeed88e208b3ac (BaseModel.__init__, set_requires_grad,
    get_current_losses); util/image_pool.py @ 28330fc2150f7b39c1c79a3d07222f9fdd80b5cf (ImagePool);
  - models/networks.py: the network classes of 78913853ab4a4f5eba717af8433809300c99f0bb (as tests/golden/pix2pix) and
    master's GANLoss(gan_mode) (lsgan MSELoss, vanilla BCEWithLogitsLoss against 1/0 targets; that commit's GANLoss
    still takes use_lsgan: the file must have the gan_mode form).
The models build their networks through networks.define_G / define_D; this script replaces those two with functions
that hand over the networks it built (the classes above with today's get_norm_layer: BatchNorm2d(affine=True),
InstanceNorm2d(affine=False, track_running_stats=False)) and perturbed: every parameter moved by N(0, 0.1), BatchNorm
running means N(0, 0.1), variances U(0.5, 1.5). The options are the references' defaults where they matter: Adam lr 2e-4,
beta1 0.5; pix2pix gan_mode vanilla, lambda_L1 100, norm batch; CycleGAN gan_mode lsgan, lambda_A = lambda_B = 10,
norm instance. Deterministic by construction: no dropout (--no_dropout; pix2pix's U-Net dropout masks and jaxsr's
cannot agree) and pool_size 0 (the history pool draws from Python's random; with 0 it returns the batch's fakes).

Writes p2p_G.pth (UnetGenerator, 5 downsamplings, ngf 4, batch), p2p_D.pth (NLayerDiscriminator basic, 6 channels,
ndf 4, batch), cg_G_A.pth / cg_G_B.pth (ResnetGenerator, ngf 4, one block, instance), cg_D_A.pth / cg_D_B.pth (basic,
ndf 4, instance): plain state dicts as the reference saves them, the weights before the step; batch.npz (NHWC; the
photo crops as uint8, read as float32 x / 255 in [0, 1], the luma float32; the reference gets x * 2 - 1 as its
Normalize((0.5,) * 3, (0.5,) * 3) gives): p2p_A / p2p_B two aligned 32x64 pairs (a colour crop and its luma), cg_A /
cg_B two 64x76 crops of other photographs each; losses.json (per run get_current_losses() after each of two steps on
the same batch); geometry.npz / geometry.json (see `geometry`: data/base_dataset.py @ 03fb2b8d142111faca46fb75a875467ab9bfa5c6,
get_params and get_transform, with torchvision.transforms stubbed by PIL calls where torchvision is not installed).
"""
import argparse
import copy
import functools
import json
import os
import sys
import tempfile
import types

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def perturb(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return net


def options(**kw):
    """The parsed options the models read (train.py's defaults where they matter here)."""
    base = dict(gpu_ids=[], isTrain=True, checkpoints_dir=tempfile.gettempdir(), name="golden", preprocess="crop",
                input_nc=3, output_nc=3, ngf=4, ndf=4, netD="basic", n_layers_D=3, init_type="normal", init_gain=0.02,
                no_dropout=True, pool_size=0, lr=2e-4, beta1=0.5, direction="AtoB")
    return types.SimpleNamespace(**{**base, **kw})


def steps(networks, model_cls, nets, opt, batch, n=2):
    """`n` optimize_parameters() on one batch with `nets` (handed to define_G / define_D in the order the model asks) ->
    each step's losses (the second's show the first's updates: gradients and Adam)."""
    nets = [copy.deepcopy(n) for n in nets]
    networks.define_G = networks.define_D = lambda *args, **kwargs: nets.pop(0)
    model = model_cls(opt)
    assert not nets, "the model built fewer networks than handed over"
    model.set_input({k: torch.from_numpy(v.transpose(0, 3, 1, 2).copy()) * 2 - 1 for k, v in batch.items()}
                    | {"A_paths": [], "B_paths": []})
    out = []
    for _ in range(n):
        model.optimize_parameters()
        out.append({k: float(v) for k, v in model.get_current_losses().items()})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--junyanz", required=True, help="a checkout of junyanz/pytorch-CycleGAN-and-pix2pix (see above)")
    args = ap.parse_args()
    import skimage.data

    sys.path.insert(0, os.path.abspath(args.junyanz))
    from models import networks
    from models.cycle_gan_model import CycleGANModel
    from models.pix2pix_model import Pix2PixModel

    if "gan_mode" not in networks.GANLoss.__init__.__code__.co_varnames:
        sys.exit(f"{args.junyanz}/models/networks.py has the old GANLoss(use_lsgan): use one with GANLoss(gan_mode)")
    torch.manual_seed(0)
    bn = functools.partial(nn.BatchNorm2d, affine=True)
    inorm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)

    def photo(name, top, left, h, w):
        return getattr(skimage.data, name)()[top:top + h, left:left + w]

    stored = {"p2p_A": np.stack([photo("astronaut", 30, 150, 32, 64), photo("coffee", 100, 200, 32, 64)]),
              "cg_A": np.stack([photo("chelsea", 60, 120, 64, 76), photo("rocket", 200, 150, 64, 76)]),
              "cg_B": np.stack([photo("coffee", 250, 300, 64, 76), photo("astronaut", 300, 60, 64, 76)])}
    batch = {k: v.astype(np.float32) / np.float32(255) for k, v in stored.items()}
    a = batch["p2p_A"]
    stored["p2p_B"] = batch["p2p_B"] = np.repeat(a @ np.float32([0.299, 0.587, 0.114]), 3, -1).reshape(a.shape)

    p2p = {"G": perturb(networks.UnetGenerator(3, 3, 5, 4, norm_layer=bn, use_dropout=False), 1),
           "D": perturb(networks.NLayerDiscriminator(6, 4, 3, norm_layer=bn), 2)}
    cg = {"G_A": perturb(networks.ResnetGenerator(3, 3, 4, norm_layer=inorm, n_blocks=1), 3),
          "G_B": perturb(networks.ResnetGenerator(3, 3, 4, norm_layer=inorm, n_blocks=1), 4),
          "D_A": perturb(networks.NLayerDiscriminator(3, 4, 3, norm_layer=inorm), 5),
          "D_B": perturb(networks.NLayerDiscriminator(3, 4, 3, norm_layer=inorm), 6)}
    for prefix, nets in (("p2p", p2p), ("cg", cg)):
        for name, net in nets.items():
            torch.save(net.state_dict(), os.path.join(HERE, f"{prefix}_{name}.pth"))

    p2p_batch = {"A": batch["p2p_A"], "B": batch["p2p_B"]}
    cg_batch = {"A": batch["cg_A"], "B": batch["cg_B"]}
    losses = {"pix2pix": steps(networks, Pix2PixModel, [p2p["G"], p2p["D"]],
                              options(norm="batch", netG="unet_32", gan_mode="vanilla", lambda_L1=100.0), p2p_batch)}
    for run, idt in (("cyclegan_identity", 0.5), ("cyclegan_no_identity", 0.0)):
        opt = options(norm="instance", netG="resnet_1blocks", gan_mode="lsgan", lambda_A=10.0, lambda_B=10.0,
                      lambda_identity=idt)
        losses[run] = steps(networks, CycleGANModel, [cg["G_A"], cg["G_B"], cg["D_A"], cg["D_B"]], opt, cg_batch)
    np.savez(os.path.join(HERE, "batch.npz"), **stored)
    with open(os.path.join(HERE, "losses.json"), "w") as f:
        json.dump(losses, f, indent=1)
    print(json.dumps(losses, indent=1))
    geometry(skimage.data.astronaut())


def torchvision_stub():
    """torchvision.transforms as get_transform uses it on PIL images with given params (convert=False): Resize is PIL's
    resize to (w, h), Lambda applies its function, Compose chains; the random transforms are not reached."""
    from PIL import Image

    class InterpolationMode:
        NEAREST, BILINEAR, BICUBIC, LANCZOS = "nearest", "bilinear", "bicubic", "lanczos"

    pil = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}

    def unused(*args, **kwargs):
        raise RuntimeError("stubbed: not reached with params given and convert=False")

    t = types.ModuleType("torchvision.transforms")
    t.InterpolationMode = InterpolationMode
    t.Resize = lambda size, method: (lambda img: img.resize((size[1], size[0]), pil[method]))
    t.Lambda = lambda fn: fn
    t.Compose = lambda fns: (lambda img: functools.reduce(lambda x, fn: fn(x), fns, img))
    t.RandomCrop = t.RandomHorizontalFlip = t.ToTensor = t.Normalize = unused
    tv = types.ModuleType("torchvision")
    tv.transforms = t
    sys.modules.update({"torchvision": tv, "torchvision.transforms": t})


GEOMETRY_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
GEOMETRY_SIZES = ((70, 50), (50, 70), (100, 40), (45, 38))  # (w, h); 100x40 scales to a height below crop_size


def geometry(photo):
    """geometry.npz / geometry.json: per mode and image size, get_params's bounds (the randint upper limits: the crop
    corner's range) and get_transform's output (convert=False, 8-bit RGB) for the corner at (0, 0) unflipped and at the
    far end flipped; load_size 48, crop_size 32."""
    try:
        import torchvision.transforms  # noqa: F401
    except ImportError:
        torchvision_stub()
    import random

    from data import base_dataset
    from PIL import Image

    images, outputs, cases = {}, {}, []
    for w, h in GEOMETRY_SIZES:
        images[f"{w}x{h}"] = np.ascontiguousarray(photo[100:100 + h, 150:150 + w])
    for mode in GEOMETRY_MODES:
        opt = types.SimpleNamespace(preprocess=mode, load_size=48, crop_size=32, no_flip=False)
        for w, h in GEOMETRY_SIZES:
            bounds = []
            real_randint, real_random = random.randint, random.random
            try:
                for corner, u in (("first", 0.1), ("last", 0.9)):
                    random.randint = lambda lo, hi, corner=corner: bounds.append(int(hi)) or (lo if corner == "first" else int(hi))
                    random.random = lambda u=u: u
                    params = base_dataset.get_params(opt, (w, h))
                    out = base_dataset.get_transform(opt, params, convert=False)(Image.fromarray(images[f"{w}x{h}"]))
                    key = f"{mode}/{w}x{h}/{corner}"
                    outputs[key] = np.asarray(out)
                    cases.append({"mode": mode, "size": [w, h], "crop_pos": list(params["crop_pos"]),
                                  "flip": bool(params["flip"]), "bounds": bounds[-2:], "output": key})
            finally:
                random.randint, random.random = real_randint, real_random
    np.savez(os.path.join(HERE, "geometry.npz"), **images, **outputs)
    with open(os.path.join(HERE, "geometry.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(c) for c in cases) + "\n]\n")
    print(len(cases), "geometry cases")


if __name__ == "__main__":
    main()
