"""Writes the PAN golden data beside this file: the reference module's outputs on seeded, perturbed weights.

Run by hand, never by the tests or CI, with a Python that has torch (2.13.0 CPU here), numpy and scikit-image, and
zhaohengyuan1/PAN's source (a plain checkout, or its codes/models/archs/PAN_arch.py and arch_util.py extracted with
`git show`; nothing is installed):

    python tests/golden/pan/make_golden.py --pan PAN_ROOT

What runs: zhaohengyuan1/PAN @ 4d045d18592c5771cd3990da88f292812774e538, codes/models/archs/PAN_arch.py, class PAN
(with arch_util.py's make_layer), at reduced width and depth (nf 8, unf 6, nb 2, so the files stay small), scales 4, 3
and 2, every parameter moved off its init by N(0, 0.05) (seed = the case's index), saved as PAN's trainer saves
PANx4_DF2K.pth: a plain state dict. Stubbed: nothing (PAN_arch imports only torch and its arch_util).

Writes input.npy (skimage's coffee, a 21x27 crop, NHWC float32 in [0,1]) and, per case, pan_x<s>.pth and pan_x<s>.npy
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


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def reference_pan(root):
    """PAN_arch.PAN, imported under the package name its own `import models.archs.arch_util` expects."""
    base = os.path.join(root, "codes/models/archs")
    for name in ("models", "models.archs"):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__path__ = []
    sys.modules["models"].archs = sys.modules["models.archs"]
    sys.modules["models.archs"].arch_util = _load("models.archs.arch_util", os.path.join(base, "arch_util.py"))
    return _load("models.archs.PAN_arch", os.path.join(base, "PAN_arch.py")).PAN


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pan", required=True)
    args = ap.parse_args()
    import skimage.data

    x = np.ascontiguousarray(skimage.data.coffee()[150:171, 200:227].astype(np.float32) / 255.0)[None]
    np.save(os.path.join(HERE, "input.npy"), x)
    PAN = reference_pan(args.pan)
    for i, scale in enumerate((4, 3, 2)):
        net = PAN(3, 3, 8, 6, 2, scale=scale)
        torch.manual_seed(i)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.05)
            y = net.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
        torch.save(net.state_dict(), os.path.join(HERE, f"pan_x{scale}.pth"))
        np.save(os.path.join(HERE, f"pan_x{scale}.npy"), np.ascontiguousarray(y, np.float32))
        print(f"pan_x{scale}", tuple(y.shape), f"range [{y.min():.3f}, {y.max():.3f}]",
              f"{sum(p.numel() for p in net.parameters())} params")


if __name__ == "__main__":
    main()
