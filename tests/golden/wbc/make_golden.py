"""Writes wbcunet.pth and golden.npz beside this file: victorca25/traiNNer's own UnetGeneratorWBC and guided filter.

Run by hand, never by the tests or CI, with a Python that has torch (2.13.0 CPU here), numpy and scikit-image, and a
git directory of victorca25/traiNNer (commit 1d25dcdb4c6a3a1f63589bb4f724fa4857009f31 here):

    WBC_TRAINNER_GIT=/path/to/traiNNer/.git WBC_ORIGINAL_GIT=/path/to/White-box-Cartoonization/.git \
        python tests/golden/wbc/make_golden.py

It extracts, unchanged, codes/models/modules/architectures/WBCNet_arch.py, .../architectures/block.py and
codes/dataops/filters.py into a temporary folder and imports them from there; stubbed, because nothing of them runs
here: block.py's PartialConv2d, DeformConv2d and models.networks' init functions, filters.py's dataops.common.denorm.

From SystemErrorWang/White-box-Cartoonization (commit ee97277d7fd873b89e9b8e1341efe74e10dd4124 here) it extracts
train_code/utils.py unchanged and runs its label2rgb (the adaptive colouring); stubbed, as nothing of them runs here:
tensorflow, joblib, selective_search.util and .structure.

What it makes:
- wbcunet.pth: torch.save(state_dict) of UnetGeneratorWBC(nf=4) (the port's plain layout, its four blocks), seed 0,
  every parameter moved by 0.1 * randn off its initial value;
- golden.npz (NHWC float32): `x`, a 36x44 crop of skimage's astronaut in [-1, 1] (sides multiples of 4, not of 8);
  `y_pt`, `y_tf`: the module's output in mode 'pt' and 'tf' on it (same weights); `g`, a crop of skimage's coffee in
  [-1, 1], and `gf_r1`, `gf_r5`: filters.guided_filter(x=x (the guide), y=g, r, eps) at the original's two settings,
  r=1 eps=5e-3 (cartoonize.py's inference) and r=5 eps=2e-1 (the surface representation, as wbc_model.py's
  GuidedFilter(r=5, eps=2e-1)); the port pads its box filter by reflection; `surface`: that GuidedFilter on g with
  g as its own guide (wbc_model.py's surface representation);
- `cs_weights`, `cs_x`, `cs_g` (and `cs_y_*` with Y=True, alpha 0.8): colors.get_colorshift_weights('uniform') drawn
  after np.random.seed(0), and colors.color_shift with those weights on x and g (one gray channel each), as
  ColorShift.forward applies one draw to both images;
- `sp_labels`: skimage.segmentation.slic(x, n_segments=60, sigma=1, compactness=10, convert2lab=True), as the
  original's simple_superpixel calls it; `sp_mix`, `sp_mix255`: the original's label2rgb(sp_labels, image, 'mix') on x
  and on (x + 1) * 127.5 (whose segments' deviations fall on both sides of 20).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from skimage import data

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = ("codes/models/modules/architectures/WBCNet_arch.py", "codes/models/modules/architectures/block.py",
         "codes/dataops/filters.py", "codes/dataops/colors.py")
STUBS = {
    "models/modules/architectures/convolutions/partialconv2d.py": "PartialConv2d = None\n",
    "models/modules/architectures/convolutions/deformconv2d.py": "DeformConv2d = None\n",
    "models/networks.py": "weights_init_normal = weights_init_xavier = weights_init_kaiming = "
                         "weights_init_orthogonal = None\n",
    "dataops/common.py": "denorm = None\n",
}


def reference(git_dir):
    """The port's modules, imported from a temporary folder holding the extracted files and the stubs."""
    root = tempfile.mkdtemp(prefix="wbc_ref_")
    commit = subprocess.check_output(["git", "--git-dir", git_dir, "rev-parse", "HEAD"], text=True).strip()
    for f in FILES:
        dst = os.path.join(root, f.removeprefix("codes/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w") as fh:
            fh.write(subprocess.check_output(["git", "--git-dir", git_dir, "show", f"HEAD:{f}"], text=True))
    for f, text in STUBS.items():
        os.makedirs(os.path.dirname(os.path.join(root, f)), exist_ok=True)
        with open(os.path.join(root, f), "w") as fh:
            fh.write(text)
    for d, _, names in os.walk(root):
        if "__init__.py" not in names:
            open(os.path.join(d, "__init__.py"), "w").close()
    sys.path.insert(0, root)
    from dataops import colors, filters
    from models.modules.architectures import WBCNet_arch
    print(f"victorca25/traiNNer {commit}: {', '.join(FILES)}")
    return WBCNet_arch, filters, colors


def original(git_dir):
    """The original's train_code/utils.py, imported from a temporary folder with stubs for what it does not run."""
    root = tempfile.mkdtemp(prefix="wbc_orig_")
    commit = subprocess.check_output(["git", "--git-dir", git_dir, "rev-parse", "HEAD"], text=True).strip()
    files = {"utils.py": subprocess.check_output(["git", "--git-dir", git_dir, "show", "HEAD:train_code/utils.py"],
                                                 text=True),
             "tensorflow.py": "", "joblib.py": "Parallel = delayed = None\n", "selective_search/__init__.py": "",
             "selective_search/util.py": "switch_color_space = None\n",
             "selective_search/structure.py": "HierarchicalGrouping = None\n"}
    for f, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, f)), exist_ok=True)
        with open(os.path.join(root, f), "w") as fh:
            fh.write(text)
    sys.path.insert(0, root)
    import utils
    print(f"SystemErrorWang/White-box-Cartoonization {commit}: train_code/utils.py")
    return utils


def crop(img, top, left, h=36, w=44):
    return (img[top : top + h, left : left + w].astype(np.float32) / 127.5 - 1.0)[None]


def main():
    WBCNet_arch, filters, colors = reference(os.environ["WBC_TRAINNER_GIT"])
    torch.manual_seed(0)
    net = WBCNet_arch.UnetGeneratorWBC(nf=4)
    with torch.no_grad():
        for p in net.parameters():
            p += 0.1 * torch.randn_like(p)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(sd, os.path.join(HERE, "wbcunet.pth"))
    x = crop(data.astronaut(), 40, 180)
    g = crop(data.coffee(), 150, 200)
    nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    nhwc = lambda t: t.permute(0, 2, 3, 1).numpy().astype(np.float32)  # noqa: E731
    out = {"x": x, "g": g}
    with torch.no_grad():
        for mode in ("pt", "tf"):
            m = WBCNet_arch.UnetGeneratorWBC(nf=4, mode=mode).eval()
            m.load_state_dict(sd, strict=True)
            out[f"y_{mode}"] = nhwc(m(nchw(x)))
        for r, eps in ((1, 5e-3), (5, 2e-1)):
            out[f"gf_r{r}"] = nhwc(filters.guided_filter(nchw(x), nchw(g), r=r, eps=eps))
        out["surface"] = nhwc(filters.GuidedFilter(r=5, eps=2e-1)(nchw(g), nchw(g)))
        np.random.seed(0)
        for name, y in (("cs", False), ("cs_y", True)):
            w = colors.get_colorshift_weights(mode="uniform", Y=y)
            a, b = (colors.color_shift(i, "uniform", w, 0.8, y) for i in (nchw(x), nchw(g)))  # ColorShift.forward
            out[f"{name}_weights"] = w.numpy().astype(np.float32)
            out[f"{name}_x"], out[f"{name}_g"] = nhwc(a), nhwc(b)
    from skimage import segmentation

    utils = original(os.environ["WBC_ORIGINAL_GIT"])
    labels = segmentation.slic(x[0], n_segments=60, sigma=1, compactness=10, convert2lab=True)
    out["sp_labels"] = labels.astype(np.int32)
    out["sp_mix"] = utils.label2rgb(labels, x[0], kind="mix")[None]
    out["sp_mix255"] = utils.label2rgb(labels, (x[0] + 1) * 127.5, kind="mix")[None]
    np.savez(os.path.join(HERE, "golden.npz"), **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
