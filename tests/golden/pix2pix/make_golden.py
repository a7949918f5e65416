"""Writes the pix2pix / CycleGAN golden data beside this file: the reference modules' outputs on seeded, perturbed weights.

Run by hand, never by the tests or CI, with a Python that has torch (2.13.0 CPU here), numpy and scikit-image, and the
two reference sources (plain checkouts, or the files below extracted with `git show`; nothing is installed):

    python tests/golden/pix2pix/make_golden.py --junyanz JUNYANZ_ROOT --trainner TRAINNER_ROOT

What runs (reduced widths and depths so the files stay small; classes built with the arguments the references'
option parsers give them):
  - junyanz/pytorch-CycleGAN-and-pix2pix @ 78913853ab4a4f5eba717af8433809300c99f0bb, models/networks.py:
    UnetGenerator, ResnetGenerator (ConvTranspose2d upsampling), NLayerDiscriminator, PixelDiscriminator. The norm
    layers passed are today's get_norm_layer's: BatchNorm2d(affine=True); InstanceNorm2d(affine=False,
    track_running_stats=False); 'none' an identity module in the norm's slot, so the convs have no bias. That commit's
    own get_norm_layer('instance') (track_running_stats=True) makes the old-InstanceNorm file (`*_pre04`), whose
    running statistics and counters today's loader (__patch_instance_norm_state_dict) drops: its expected output is
    the same weights' without them.
  - victorca25/traiNNer @ 1d25dcdb4c6a3a1f63589bb4f724fa4857009f31, codes/models/modules/architectures/UNet_arch.py and
    ResNet_arch.py (with block.py) with upsample_mode='upconv' (nearest x2 + 3x3 conv, its upconv_block).
Stubbed because nothing of them runs here: traiNNer's partial and deformable convs and its networks' init functions.
Every parameter is moved off its init by N(0, 0.1) (seed per case), BatchNorm running means N(0, 0.1), variances
U(0.5, 1.5), counters 7. Inputs are skimage's astronaut crops mapped to [-1, 1] (the references' range), NHWC float32.

Writes inputs.npz (one input per size), outputs.npz (per case the reference's NHWC float32 output, in eval mode; `*_train`
in training mode, batch statistics, dropout off) and one <case>.pth per case (a plain state dict, as both save them).
"""
import argparse
import copy
import functools
import importlib.util
import os
import sys
import types

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def _stub(name, **attrs):
    m = types.ModuleType(name)
    m.__path__ = []
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _unused(*args, **kwargs):
    raise RuntimeError("stubbed: these networks do not use it")


def trainner(root):
    base = os.path.join(root, "codes/models/modules/architectures")
    for name in ("models", "models.modules", "models.modules.architectures", "models.modules.architectures.convolutions"):
        _stub(name)
    sys.modules["models.modules.architectures"].__path__ = [base]
    _stub("models.modules.architectures.convolutions.partialconv2d", PartialConv2d=_unused)
    _stub("models.modules.architectures.convolutions.deformconv2d", DeformConv2d=_unused)
    _stub("models.networks", **{f"weights_init_{k}": _unused for k in ("normal", "xavier", "kaiming", "orthogonal")})
    _load("models.modules.architectures.block", os.path.join(base, "block.py"))
    unet = _load("models.modules.architectures.UNet_arch", os.path.join(base, "UNet_arch.py"))
    resnet = _load("models.modules.architectures.ResNet_arch", os.path.join(base, "ResNet_arch.py"))
    return unet.UnetGenerator, resnet.ResnetGenerator


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
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)
    return net.eval()


def run(net, x, train=False):
    net = copy.deepcopy(net).train(train)
    if train:  # batch statistics, dropout off (the golden outputs are deterministic)
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--junyanz", required=True, help="a checkout of junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py)")
    ap.add_argument("--trainner", required=True, help="a checkout of victorca25/traiNNer")
    args = ap.parse_args()
    import skimage.data

    J = _load("junyanz_networks", os.path.join(args.junyanz, "models/networks.py"))
    TUnet, TResnet = trainner(args.trainner)
    photo = skimage.data.astronaut().astype(np.float32) / 127.5 - 1.0
    inputs = {"x64x64": photo[40:104, 150:214], "x32x64": photo[200:232, 100:164], "x30x35": photo[250:280, 250:285],
              "x37x45": photo[300:337, 60:105], "x48x56": photo[10:58, 380:436]}
    inputs = {k: np.ascontiguousarray(v[None]) for k, v in inputs.items()}
    bn = functools.partial(nn.BatchNorm2d, affine=True)
    inorm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)

    def identity(_):
        return nn.Identity()

    cases = {  # name -> (network, input, also in training mode)
        "unet_batch": (J.UnetGenerator(3, 3, 6, 3, norm_layer=bn, use_dropout=True), "x64x64", True),
        "unet_instance": (J.UnetGenerator(3, 2, 5, 4, norm_layer=inorm), "x32x64", False),
        "unet_instance_upconv": (TUnet(3, 3, 5, 4, norm_type="instance", upsample_mode="upconv"), "x32x64", False),
        "resnet_instance": (J.ResnetGenerator(3, 3, 4, norm_layer=inorm, n_blocks=2), "x30x35", False),
        "resnet_instance_upconv": (TResnet(3, 3, 4, norm_type="instance", n_blocks=2, upsample_mode="upconv"), "x30x35",
                                   False),
        "resnet_batch_dropout": (J.ResnetGenerator(3, 3, 4, norm_layer=bn, use_dropout=True, n_blocks=1), "x30x35", True),
        "resnet_none_zero": (J.ResnetGenerator(3, 3, 4, norm_layer=identity, n_blocks=1, padding_type="zero"), "x30x35",
                             False),
        "d_basic_batch": (J.NLayerDiscriminator(3, 4, 3, norm_layer=bn), "x37x45", True),
        "d_nlayers4_instance": (J.NLayerDiscriminator(6, 4, 4, norm_layer=inorm), "x48x56", False),
        "d_pixel_batch": (J.PixelDiscriminator(3, 4, norm_layer=bn), "x37x45", True),
        "d_nlayers2_none": (J.NLayerDiscriminator(3, 4, 2, norm_layer=identity), "x37x45", False),
    }
    outputs = {}
    for i, (case, (net, key, train)) in enumerate(cases.items()):
        perturb(net, i)
        x = inputs[key]
        if case == "d_nlayers4_instance":  # a conditional D (pix2pix's): the pair (A, B) stacked on channels
            x = inputs[key] = np.concatenate([x, x[..., ::-1]], axis=-1)
        torch.save(net.state_dict(), os.path.join(HERE, f"{case}.pth"))
        outputs[case] = np.ascontiguousarray(run(net, x), np.float32)
        if train:
            outputs[case + "_train"] = np.ascontiguousarray(run(net, x, train=True), np.float32)
        y = outputs[case]
        print(case, tuple(y.shape), f"range [{y.min():.3f}, {y.max():.3f}]", f"{sum(p.numel() for p in net.parameters())} params")
    old = J.ResnetGenerator(3, 3, 4, norm_layer=J.get_norm_layer("instance"), n_blocks=2)
    new = torch.load(os.path.join(HERE, "resnet_instance.pth"))
    assert old.load_state_dict(new, strict=False).unexpected_keys == []
    perturb_stats = {k: v for k, v in old.state_dict().items() if k not in new}
    g = torch.Generator().manual_seed(99)
    for k, v in perturb_stats.items():
        if k.endswith("num_batches_tracked"):
            v.fill_(7)
        else:
            v.copy_(torch.randn(v.shape, generator=g).abs() * 0.1 + (k.endswith("running_var")))
    torch.save(old.state_dict(), os.path.join(HERE, "resnet_instance_pre04.pth"))
    print("resnet_instance_pre04", len(perturb_stats), "InstanceNorm buffers added")
    np.savez(os.path.join(HERE, "inputs.npz"), **inputs)
    np.savez(os.path.join(HERE, "outputs.npz"), **outputs)


if __name__ == "__main__":
    main()
