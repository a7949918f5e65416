"""Writes PPON_G_small.pth and io.npz beside this file: the reference PPON on seeded, perturbed weights.

Run by hand, never by the tests or CI, with a Python that has torch (2.13.0+cpu here), numpy and scikit-image, and two
scratch folders holding the reference files as their repositories lay them out (nothing goes into the project):

    PPON_REF=/tmp/ref_ppon/zheng TRAINNER_REF=/tmp/ref_ppon/trainner python tests/golden/ppon/make_golden.py

- PPON_REF: github.com/Zheng222/PPON at 24b4171596dd6a4cc32a3083593cd2953edb5a43, `models/architecture.py` and
  `models/block.py` (`git show HEAD:models/architecture.py`). Its class `PPON` (the deploy model test_PPON.py builds
  and loads PPON_G.pth into) makes the outputs; torchvision, which it imports for its VGG loss only, is stubbed.
- TRAINNER_REF: github.com/victorca25/traiNNer at 1d25dcdb4c6a3a1f63589bb4f724fa4857009f31,
  `codes/models/modules/architectures/{PPON_arch.py,block.py}` under `models/modules/architectures/`. Its `PPON`
  strict-loads the same file and must give the same three outputs (checked here, not stored); the convolution
  modules and `models.networks` that its block.py imports, and PPON does not use, are stubbed.

Reduced size: nf=6 (the reference's `_ResBlock_32` hard-codes nc=64: its default argument is set to nf here, so its
dilated convs are nf // 2 = 3 wide), nb=1, the released 2 structure and 2 perceptual blocks, scale 4, LeakyReLU,
alpha 1. Every parameter is moved off torch's default init by 0.1 * N(0, 1) (seed 0). The input is a 17x23 crop of
skimage's astronaut (sizes that are multiples of nothing), float32 in [0, 1]. The file is `torch.save(state_dict)`,
a bare state dict as PPON_G.pth is; io.npz holds `input` (1, 17, 23, 3) and `content`, `structure`, `perceptual`
(1, 68, 92, 3), NHWC float32.
"""
import os
import sys
import types

import numpy as np
import torch
from skimage import data

HERE = os.path.dirname(os.path.abspath(__file__))
NF, NB, SCALE, SEED, TOP, LEFT, H, W = 6, 1, 4, 0, 180, 200, 17, 23


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    m.__path__ = []
    sys.modules[name] = m
    return m


def _forget_models():
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        del sys.modules[name]


def zheng222(root):
    """Zheng222's models.architecture and models.block, torchvision stubbed (only its VGG loss uses it)."""
    _module("torchvision")
    sys.path.insert(0, root)
    try:
        from models import architecture, block
    finally:
        sys.path.remove(root)
    _forget_models()
    return architecture, block


def trainner(root):
    """victorca25's PPON_arch and block, with stubs for the modules its block.py imports and PPON never uses."""
    unused = type("Unused", (), {})
    _module("models.networks", **{f"weights_init_{k}": None for k in ("normal", "xavier", "kaiming", "orthogonal")})
    _module("models.modules.architectures.convolutions")
    _module("models.modules.architectures.convolutions.partialconv2d", PartialConv2d=unused)
    _module("models.modules.architectures.convolutions.deformconv2d", DeformConv2d=unused)
    sys.path.insert(0, root)
    try:
        from models.modules.architectures import PPON_arch, block
    finally:
        sys.path.remove(root)
    _forget_models()
    return PPON_arch, block


def main():
    architecture, block = zheng222(os.environ["PPON_REF"])
    block._ResBlock_32.__init__.__defaults__ = (NF,)
    torch.manual_seed(SEED)
    net = architecture.PPON(in_nc=3, nf=NF, nb=NB, out_nc=3, alpha=1.0, upscale=SCALE, act_type="lrelu").eval()
    with torch.no_grad():
        for p in net.parameters():
            p += 0.1 * torch.randn_like(p)
    sd = net.state_dict()
    path = os.path.join(HERE, "PPON_G_small.pth")
    torch.save(sd, path)

    img = data.astronaut()[TOP:TOP + H, LEFT:LEFT + W].astype(np.float32) / 255.0
    x = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        outs = [o.numpy().transpose(0, 2, 3, 1) for o in net(x)]

    ppon_arch, _ = trainner(os.environ["TRAINNER_REF"])
    ppon_arch._ResBlock_32.__init__.__defaults__ = (NF,)  # traiNNer keeps its own copy of the block
    other = ppon_arch.PPON(in_nc=3, nf=NF, nb=NB, out_nc=3, upscale=SCALE, act_type="lrelu").eval()
    other.load_state_dict(torch.load(path, weights_only=True), strict=True)
    with torch.no_grad():
        again = [o.numpy().transpose(0, 2, 3, 1) for o in other(x)]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(outs, again))
    assert diff == 0.0, f"traiNNer's PPON differs from Zheng222's by {diff}"

    np.savez(os.path.join(HERE, "io.npz"), input=img[None], content=outs[0], structure=outs[1], perceptual=outs[2])
    n = sum(p.numel() for p in net.parameters())
    print(f"{n} parameters, {len(sd)} tensors; outputs {outs[2].shape}, range {min(o.min() for o in outs):.3f}.."
          f"{max(o.max() for o in outs):.3f}; traiNNer's PPON strict-loads the file and matches bit for bit")


if __name__ == "__main__":
    main()
