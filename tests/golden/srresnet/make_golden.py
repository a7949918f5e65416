"""Writes the SRResNet golden data beside this file: the reference modules' outputs on seeded, perturbed weights.

Run by hand, never by the tests or CI, with a Python that has torch (2.13.0 CPU here), numpy and scikit-image, and
the three reference sources (plain checkouts, or the files below extracted with `git show`; nothing is installed):

    python tests/golden/srresnet/make_golden.py --basicsr BASICSR_ROOT --pan PAN_ROOT --trainner TRAINNER_ROOT

What runs, per layout (reduced widths and depths: num_feat 8, 2 blocks, so the files stay small):
  - basicsr x4:  XPixelGroup/BasicSR @ 8d56e3a045f9fb3e1d8872f92ee4a4f07f886b0a, basicsr/archs/srresnet_arch.py
                 MSRResNet (with basicsr/archs/arch_util.py), saved as BasicSR saves it: {'params': state_dict};
  - mmsr x3:     zhaohengyuan1/PAN @ 4d045d18592c5771cd3990da88f292812774e538, codes/models/archs/SRResNet_arch.py
                 MSRResNet (mmsr's, with arch_util.py), a plain state dict;
  - original x4 and x3: victorca25/traiNNer @ 1d25dcdb4c6a3a1f63589bb4f724fa4857009f31,
                 codes/models/modules/architectures/SRResNet_arch.py SRResNet (with block.py) with the released
                 options (norm_type=None, act_type='relu', mode='CNA', upsample_mode='pixelshuffle'), a plain state
                 dict, as SRResNet_bicx4_in3nf64nb16.pth is.
Stubbed because nothing of them runs here: torchvision, BasicSR's registry/logger/DCN ops, traiNNer's partial and
deformable convs and its networks' init functions. Every parameter is moved off its init by N(0, 0.05) (seed 0).

Writes input.npy (skimage's chelsea, a 23x29 crop, NHWC float32 in [0,1]) and, per case, <case>.pth and <case>.npy
(the reference's NHWC float32 output).
"""
import argparse
import importlib.util
import os
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def _stub(name, **attrs):
    m = types.ModuleType(name)
    m.__path__ = []
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _load(name, path):
    """Execute the file at `path` as module `name` (its package taken from the name)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _unused(*args, **kwargs):
    raise RuntimeError("stubbed: SRResNet does not use this")


def basicsr_msrresnet(root):
    _stub("torchvision", __version__="0.0")
    _stub("basicsr")
    _stub("basicsr.ops")
    _stub("basicsr.ops.dcn", ModulatedDeformConvPack=torch.nn.Module, modulated_deform_conv=_unused)
    _stub("basicsr.utils", get_root_logger=_unused)
    _stub("basicsr.utils.registry", ARCH_REGISTRY=types.SimpleNamespace(register=lambda *a, **k: (lambda c: c)))
    _stub("basicsr.archs")
    _load("basicsr.archs.arch_util", os.path.join(root, "basicsr/archs/arch_util.py"))
    return _load("basicsr.archs.srresnet_arch", os.path.join(root, "basicsr/archs/srresnet_arch.py")).MSRResNet


def mmsr_msrresnet(root):
    base = os.path.join(root, "codes/models/archs")
    _stub("models")
    _stub("models.archs")
    sys.modules["models"].archs = sys.modules["models.archs"]
    sys.modules["models.archs"].arch_util = _load("models.archs.arch_util", os.path.join(base, "arch_util.py"))
    return _load("models.archs.SRResNet_arch", os.path.join(base, "SRResNet_arch.py")).MSRResNet


def trainner_srresnet(root):
    base = os.path.join(root, "codes/models/modules/architectures")
    for name in ("models", "models.modules", "models.modules.architectures", "models.modules.architectures.convolutions"):
        _stub(name)
    sys.modules["models.modules.architectures"].__path__ = [base]
    _stub("models.modules.architectures.convolutions.partialconv2d", PartialConv2d=_unused)
    _stub("models.modules.architectures.convolutions.deformconv2d", DeformConv2d=_unused)
    _stub("models.networks", **{f"weights_init_{k}": _unused for k in ("normal", "xavier", "kaiming", "orthogonal")})
    _load("models.modules.architectures.block", os.path.join(base, "block.py"))
    return _load("models.modules.architectures.SRResNet_arch", os.path.join(base, "SRResNet_arch.py")).SRResNet


def perturb(net, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--basicsr", required=True)
    ap.add_argument("--pan", required=True)
    ap.add_argument("--trainner", required=True)
    args = ap.parse_args()
    import skimage.data

    x = np.ascontiguousarray(skimage.data.chelsea()[100:123, 200:229].astype(np.float32) / 255.0)[None]
    np.save(os.path.join(HERE, "input.npy"), x)
    msr_basicsr = basicsr_msrresnet(args.basicsr)
    msr_mmsr = mmsr_msrresnet(args.pan)
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        del sys.modules[name]  # PAN's and traiNNer's packages are both called `models`
    srresnet = trainner_srresnet(args.trainner)
    cases = {
        "msrresnet_basicsr_x4": (msr_basicsr(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=4), "params"),
        "msrresnet_mmsr_x3": (msr_mmsr(in_nc=3, out_nc=3, nf=8, nb=2, upscale=3), None),
        "srresnet_original_x4": (srresnet(3, 3, 8, 2, upscale=4, norm_type=None, act_type="relu", mode="CNA",
                                          upsample_mode="pixelshuffle"), None),
        "srresnet_original_x3": (srresnet(3, 3, 8, 2, upscale=3, norm_type=None, act_type="relu", mode="CNA",
                                          upsample_mode="pixelshuffle"), None),
    }
    for i, (case, (net, wrapper)) in enumerate(cases.items()):
        perturb(net, i)
        sd = net.state_dict()
        torch.save({wrapper: sd} if wrapper else sd, os.path.join(HERE, f"{case}.pth"))
        with torch.no_grad():
            y = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
        np.save(os.path.join(HERE, f"{case}.npy"), np.ascontiguousarray(y, np.float32))
        print(case, tuple(y.shape), f"range [{y.min():.3f}, {y.max():.3f}]", f"{sum(p.numel() for p in net.parameters())} params")


if __name__ == "__main__":
    main()
