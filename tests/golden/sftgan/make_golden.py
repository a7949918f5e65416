"""Writes the SFTGAN golden data beside this file: the reference PyTorch modules, reduced, with perturbed weights.

Run by hand, never by the tests or CI, with a Python that has torch (2.13 here), numpy, scikit-image and OpenCV
(torchvision, which util.py imports for a function not used here, is stubbed when absent):

    python tests/golden/sftgan/make_golden.py --sftgan /tmp/ref_sftgan/sftgan --trainner /tmp/ref_sftgan/trainner

where the two folders hold the reference files, unmodified, as `git show` gives them:
- --sftgan: xinntao/SFTGAN at d98889e9f94e44a788cc0ffeaaca77ca76556638, `pytorch_test/architectures.py`,
  `pytorch_test/block.py` and `pytorch_test/util.py` (SFT_Net, SFT_Net_torch, OutdoorSceneSeg, MATLAB imresize);
- --trainner: victorca25/traiNNer at 1d25dcdb4c6a3a1f63589bb4f724fa4857009f31,
  `codes/models/modules/architectures/sft_arch.py` (ACD_VGG_BN_96, and its own SFT_Net, checked to equal SFTGAN's).

The reference constructors hard-code their widths (64 features, 32 condition channels, 16 blocks, ResNet-101's
stages). To keep the files small they run reduced: the reference modules are built as written, with `nn` in their
namespace a view of torch.nn whose Conv2d/ConvTranspose2d/BatchNorm2d/Linear take every channel count through a map
(64 -> 8, ...), and their nn.Sequential trunks are then cut to a few of their own blocks (SFT_Net: 2 ResBlock_SFT;
OutdoorSceneSeg: 2, 1, 2, 1 Res131 blocks in its four stages). The forward code is the reference's.

Weights: every parameter moved off torch's init (seeded), BatchNorm running statistics taken from one training-mode
pass over the input (so activations stay in range) and then perturbed, num_batches_tracked set; OutdoorSceneSeg's
classifier conv is then scaled by 10, so that its probabilities are far from uniform, as a trained net's. Saved with
torch.save(state_dict): the released files (SFTGAN_noBN_OST_bg.pth, SFTGAN_torch.pth, sft_net_ini.pth,
OutdoorSceneSeg_bic.pth) are plain state dicts, and traiNNer saves its networks (the ACD D) the same way.

Outputs, all float32, NCHW as the references take and give them, in sft.npz, acd.npz and seg.npz:
- sft_lr (1, 3, 11, 13): a crop of skimage's astronaut in [0, 1]; sft_seg (1, 8, 44, 52): probabilities (a softmax of
  smooth random logits) at the output (HR) size, as test_sftgan.py feeds them; sft_net / sft_net_torch: the outputs;
- acd_in (2, 3, 48, 48): two coffee crops in [0, 1]; acd_gan_eval / acd_cls_eval (running statistics),
  acd_gan_train / acd_cls_train (batch statistics: train mode, from the same saved state);
- seg_image: chelsea's 45x51 crop as uint8 RGB (the test writes it as a PNG); seg_pipeline: what
  test_segmentation.py's steps give for that file (cv2.imread's BGR, modcrop 8, MATLAB imresize 1/4 then 4, x255,
  the BGR mean subtracted, the network, softmax) as the 8xHxW map it saves, and seg_pipeline_in the network input
  those steps made (1, 3, 40, 48); seg_in (1, 3, 37, 45): a crop of that network input whose sides are no multiple
  of 8 (the max-pool's ceil_mode), seg_out: the network on it.
"""
import argparse
import importlib.util
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SFT_MAP = {64: 8, 256: 32, 32: 4, 128: 12}  # nf, 4 nf (pixel shuffle), SFT/condition channels, condition features
SEG_MAP = {64: 4, 128: 6, 256: 10, 512: 12, 1024: 14, 2048: 16}
ACD_MAP = {64: 4, 128: 6, 256: 8, 512: 10, 100: 12, 512 * 6 * 6: 10 * 3 * 3}  # a 48 px input: 3x3 after four /2


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _narrow_nn(nn, widths):
    """torch.nn, with the channel counts of Conv2d, ConvTranspose2d, BatchNorm2d and Linear taken through `widths`."""
    w = lambda c: widths.get(c, c)  # noqa: E731
    view = types.ModuleType("nn_reduced")
    view.__dict__.update(nn.__dict__)
    view.Conv2d = lambda i, o, *a, **k: nn.Conv2d(w(i), w(o), *a, **k)
    view.ConvTranspose2d = lambda i, o, *a, **k: nn.ConvTranspose2d(w(i), w(o), *a, **k)
    view.BatchNorm2d = lambda c, *a, **k: nn.BatchNorm2d(w(c), *a, **k)
    view.Linear = lambda i, o, *a, **k: nn.Linear(w(i), w(o), *a, **k)
    return view


def _built(cls, modules, widths):
    """An instance of the reference class `cls` with `nn` in `modules` narrowed by `widths` while it is built."""
    import torch.nn as nn

    for m in modules:
        m.nn = _narrow_nn(nn, widths)
    try:
        return cls()
    finally:
        for m in modules:
            m.nn = nn


def _perturb(net, x, seed):
    """Every parameter off its init; BatchNorm statistics from one train-mode pass over x, then perturbed."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p += 0.05 * torch.randn(p.shape, generator=g)
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        if bns:
            for m in bns:
                m.momentum = None  # cumulative: one pass sets the statistics of this batch
                m.reset_running_stats()
            net.train()
            net(x)
            for m in bns:
                m.momentum = 0.1
                m.running_mean += 0.1 * m.running_var.sqrt() * torch.randn(m.running_mean.shape, generator=g)
                m.running_var *= 0.8 + 0.4 * torch.rand(m.running_var.shape, generator=g)
                m.num_batches_tracked.fill_(7)
    net.eval()
    return net


def _save(net, name):
    import torch

    path = os.path.join(HERE, name)
    torch.save(net.state_dict(), path)
    print(f"{name}: {sum(p.numel() for p in net.state_dict().values())} numbers, {os.path.getsize(path)} bytes")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sftgan", required=True, help="folder with xinntao/SFTGAN's pytorch_test/{architectures,block,util}.py")
    p.add_argument("--trainner", required=True, help="folder with traiNNer's codes/models/modules/architectures/sft_arch.py")
    a = p.parse_args()

    import cv2
    import skimage.data
    import torch

    torch.manual_seed(0)
    sys.path.insert(0, a.sftgan)  # architectures.py does `import block as B`
    block = _load("block", os.path.join(a.sftgan, "block.py"))
    ref = _load("architectures", os.path.join(a.sftgan, "architectures.py"))
    if "torchvision" not in sys.modules:  # util.py imports make_grid for tensor2img, which is not used here
        tv = sys.modules["torchvision"] = types.ModuleType("torchvision")
        tv.utils = sys.modules["torchvision.utils"] = types.ModuleType("torchvision.utils")
        tv.utils.make_grid = None
    util = _load("util", os.path.join(a.sftgan, "util.py"))
    tr = _load("sft_arch", os.path.join(a.trainner, "sft_arch.py"))
    out = {}

    # SFT-Net, both versions: 2 of its 16 ResBlock_SFT, then its SFTLayer and conv
    rng = np.random.default_rng(0)
    lr = skimage.data.astronaut()[100:111, 180:193].astype(np.float32) / 255.0
    out["sft_lr"] = np.ascontiguousarray(lr.transpose(2, 0, 1)[None])
    logits = rng.normal(0, 2.0, (1, 8, 11, 13)).astype(np.float32)
    logits = torch.nn.functional.interpolate(torch.from_numpy(logits), scale_factor=4, mode="bilinear", align_corners=False)
    out["sft_seg"] = torch.softmax(logits, 1).numpy()
    x = (torch.from_numpy(out["sft_lr"]), torch.from_numpy(out["sft_seg"]))
    for name, cls in (("sft_net", ref.SFT_Net), ("sft_net_torch", ref.SFT_Net_torch)):
        net = _built(cls, [ref], SFT_MAP)
        trunk = list(net.sft_branch)
        net.sft_branch = torch.nn.Sequential(*trunk[:2], *trunk[-2:])
        _perturb(net, x, seed=1)
        with torch.no_grad():
            out[name] = net(x).numpy()
        _save(net, f"{name}.pth")
        if name == "sft_net":  # traiNNer's SFT_Net (the layout of sft_net_ini.pth) is the same network
            twin = _built(tr.SFT_Net, [tr], SFT_MAP)
            twin.sft_branch = torch.nn.Sequential(*list(twin.sft_branch)[:2], *list(twin.sft_branch)[-2:])
            twin.load_state_dict(net.state_dict(), strict=True)
            with torch.no_grad():
                assert torch.equal(twin.eval()(x), net(x))
        print(f"{name}: output {out[name].shape}, range {out[name].min():.3f} .. {out[name].max():.3f}")

    # ACD discriminator (traiNNer's ACD_VGG_BN_96), reduced to a 48 px input
    coffee = skimage.data.coffee().astype(np.float32) / 255.0
    out["acd_in"] = np.ascontiguousarray(np.stack([coffee[50:98, 100:148], coffee[200:248, 300:348]]).transpose(0, 3, 1, 2))
    xa = torch.from_numpy(out["acd_in"])
    acd = _perturb(_built(tr.ACD_VGG_BN_96, [tr], ACD_MAP), xa, seed=2)
    state = {k: v.clone() for k, v in acd.state_dict().items()}
    with torch.no_grad():
        out["acd_gan_eval"], out["acd_cls_eval"] = (t.numpy() for t in acd(xa))
        acd.train()
        out["acd_gan_train"], out["acd_cls_train"] = (t.numpy() for t in acd(xa))
    acd.load_state_dict(state)
    print("acd logits:", *(f"{k} {np.abs(v).max():.3f}" for k, v in out.items() if k.startswith("acd_") and k != "acd_in"))
    _save(acd, "acd.pth")

    # OutdoorSceneSeg: stem, Res131 blocks 2, 1, 2, 1 (the first of each stage has the projection), head, deconv
    img = skimage.data.chelsea()[60:105, 120:171]  # 45x51 RGB; modcrop 8 -> 40x48
    out["seg_image"] = np.ascontiguousarray(img)
    path = os.path.join("/tmp", "sftgan_golden_chelsea.png")
    cv2.imwrite(path, np.ascontiguousarray(img[..., ::-1]))  # a PNG file, as the test writes it
    # test_segmentation.py's steps on that file
    bgr = util.modcrop(cv2.imread(path, cv2.IMREAD_UNCHANGED), 8)
    t = torch.from_numpy(np.transpose(bgr, (2, 0, 1))).float()
    t = util.imresize(util.imresize(t / 255, 1 / 4, antialiasing=True), 4, antialiasing=True) * 255
    t[0] -= 103.939
    t[1] -= 116.779
    t[2] -= 123.68
    t = t.unsqueeze(0)
    seg = _built(ref.OutdoorSceneSeg, [ref, block], SEG_MAP)
    f = list(seg.feature)
    stages = [10, 11, 13, 17, 18, 40]  # stage starts: 10, 13, 17, 40
    seg.feature = torch.nn.Sequential(*f[:10], *(f[i] for i in stages), *f[43:])
    _perturb(seg, t, seed=3)
    with torch.no_grad():
        seg.feature[-1].weight *= 10  # logits of a few units: probabilities away from uniform, as a trained net's
    with torch.no_grad():
        out["seg_pipeline"] = seg(t).detach().float().cpu().squeeze().numpy()
        out["seg_pipeline_in"] = t.numpy()
        out["seg_in"] = np.ascontiguousarray(t[:, :, :37, :45].numpy())
        out["seg_out"] = seg(torch.from_numpy(out["seg_in"])).numpy()
    os.remove(path)
    _save(seg, "outdoor_seg.pth")
    for k in ("seg_pipeline", "seg_out"):
        v = out[k]
        print(f"{k}: {v.shape}, max prob {v.max():.3f}, mean max prob {v.max(-3).mean():.3f}")

    for group in ("sft", "acd", "seg"):
        path = os.path.join(HERE, f"{group}.npz")
        np.savez(path, **{k: v for k, v in out.items() if k.startswith(group)})
        print(f"{group}.npz: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
