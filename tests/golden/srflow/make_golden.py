"""Writes the SRFlow golden data beside this file: andreas128/SRFlow's own SRFlowNet on reduced, perturbed weights.

Run by hand, never by the tests or CI, with the reference's source extracted into a scratch folder (nothing goes into
the project's environment) and a Python that has torch (2.13.0 here), numpy and scikit-image:

    mkdir -p /tmp/ref_srflow && git --git-dir=<andreas128/SRFlow clone>/.git archive \
        5a007ad591c7be8bf32cf23171bfa4473e71683c code/models/modules code/utils/util.py | tar -x -C /tmp/ref_srflow
    python tests/golden/srflow/make_golden.py /tmp/ref_srflow/code

What runs is github.com/andreas128/SRFlow at 5a007ad591c7be8bf32cf23171bfa4473e71683c: code/models/modules/
SRFlowNet_arch.py (SRFlowNet: normal_flow, reverse_flow) with its RRDBNet_arch.py, FlowUpsamplerNet.py, FlowStep.py,
FlowAffineCouplingsAblation.py, Permutations.py, FlowActNorms.py, Split.py, flow.py, thops.py, glow_arch.py and
code/utils/util.py's opt_get, on the options of code/confs/SRFlow_DF2K_4X.yml (L=3, additionalFlowNoAffine 2,
CondAffineSeparatedAndCond, split enabled, fea_up0, stackRRDB concat) with reduced sizes: nf 3, gc 2, nb 2, stackRRDB
blocks [1, 1], K 2, additionalFlowNoAffine 1, the coupling's hidden_channels 2. Stubbed, because util.py imports them
and opt_get uses none: natsort, cv2, torchvision.utils, yaml. Patched at run time, because the reference hard-codes
them for nf=64 and four stacked blocks (the released files): the conditional channels
(FlowUpsamplerNet.get_n_rrdb_channels, get_affineInCh: (len(blocks)+1)*64 -> (len(blocks)+1)*nf;
CondAffineSeparatedAndCond.in_channels_rrdb: 320 -> the same) and the unused `flowUpsamplerNet.f` conv's 96 output
channels (-> 1), so the file stays small; jaxsr infers all of them from the keys.

Every parameter is moved off its initial value (seeded: p += 0.1 * randn, the invertible 1x1 convs' weights by
0.02 * randn so they stay well conditioned); the module runs in eval mode (ActNorm's data-dependent initialisation is
a training-time step). Inputs are two real-photo crops (skimage's astronaut and coffee), HR 24x40, LR their 4x4 box
means (6x10: no multiple of 4, so the lowest level is 3x5).

Files (arrays NHWC, float32, batch 2):
  SRFlow_x4_small.pth  torch.save(state_dict) in the released layout (`RRDB.*`, `flowUpsamplerNet.*`, no wrapper)
  io.npz               lr, hr; cond1..cond3 (the conditioning features of levels 1..3: rrdbPreprocessing's
                       fea_up2, fea_up1, fea_up0, concatenated); encode (forward, add_gt_noise=False): z, logdet, nll,
                       eps1 (the level-1 split's eps); hr_deq, nll_deq (add_gt_noise=True, quant 32, with its uniform
                       noise recorded as hr_deq = hr + (u - 0.5) / 32); sr_heat0 (reverse, z = 0, eps_std 0);
                       noise_eps1, noise_z, sr_noise (reverse with the fixed epses [noise_eps1, noise_z]); rrdb_out
                       (RRDBNet's own output, the x4 image of its HRconv/conv_last head)
  released_shapes.json.gz  {file: {key: shape}} of the reference built with the released options (SRFlow_DF2K_4X,
                       SRFlow_DF2K_8X, SRFlow_CelebA_8X: nf 64, gc 32, K 16, the hard-coded widths unpatched)
"""
import gzip
import json
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTHS = {}  # the patched hard-coded widths of the net being built
CFG = dict(nf=3, gc=2, nb=2, blocks=[1, 1], K=2, L=3, extra=1, hidden=2, f_out=1, scale=4)


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def import_reference(code):
    """SRFlowNet from the reference's `code` folder, with the stubs and the width patches the docstring lists."""
    sys.path.insert(0, code)
    _module("natsort")
    _module("cv2")
    _module("yaml", Loader=object, Dumper=object, CLoader=object, CDumper=object)
    _module("torchvision", __path__=[])
    _module("torchvision.utils", make_grid=None)
    _module("models", __path__=[os.path.join(code, "models")])  # its __init__ imports the training models
    from models.modules import FlowAffineCouplingsAblation as fac
    from models.modules import FlowUpsamplerNet as fun
    from models.modules import SRFlowNet_arch

    fun.FlowUpsamplerNet.get_n_rrdb_channels = lambda self, opt, opt_get: WIDTHS["n_cond"]
    fun.FlowUpsamplerNet.get_affineInCh = lambda self, opt_get: WIDTHS["n_cond"]
    f_conv = fun.f_conv2d_bias
    fun.f_conv2d_bias = lambda i, o: f_conv(i, WIDTHS["f_out"])
    make_f = fac.CondAffineSeparatedAndCond.F
    fac.CondAffineSeparatedAndCond.F = lambda self, in_channels, *a, **k: make_f(
        self, in_channels - 320 + WIDTHS["n_cond"], *a, **k)
    return SRFlowNet_arch.SRFlowNet


def build(SRFlowNet, nf, nb, gc, scale, K, L, extra, blocks, hidden, f_out):
    """The reference's SRFlowNet for these options (the patched widths set to what they stand for)."""
    WIDTHS.update(n_cond=(len(blocks) + 1) * nf, f_out=f_out)
    flow = {"K": K, "L": L, "noInitialInj": True, "coupling": "CondAffineSeparatedAndCond",
            "additionalFlowNoAffine": extra, "split": {"enable": True}, "fea_up0": True,
            "stackRRDB": {"blocks": blocks, "concat": True}}
    if hidden is not None:
        flow["CondAffineSeparatedAndCond"] = {"hidden_channels": hidden}
    opt = {"scale": scale, "datasets": {"train": {"quant": 32}}, "network_G": {"flow": flow}}
    return SRFlowNet(3, 3, nf, nb, gc, scale, K=K, opt=opt)


def released_shapes(SRFlowNet):
    """{file: {key: shape}} of the reference built with the three released options (code/confs/SRFlow_*.yml)."""
    confs = {"SRFlow_DF2K_4X": dict(nb=23, scale=4, L=3, blocks=[1, 8, 15, 22]),
             "SRFlow_DF2K_8X": dict(nb=23, scale=8, L=4, blocks=[1, 3, 5, 7]),
             "SRFlow_CelebA_8X": dict(nb=8, scale=8, L=4, blocks=[1, 3, 5, 7])}
    return {name: {k: list(v.shape) for k, v in build(SRFlowNet, nf=64, gc=32, K=16, extra=2, hidden=None, f_out=96,
                                                       **c).state_dict().items()}
            for name, c in confs.items()}


def crops():
    from skimage import data
    hr = np.stack([data.astronaut()[100:124, 180:220], data.coffee()[150:174, 300:340]]).astype(np.float32) / 255.0
    lr = hr.reshape(2, 6, 4, 10, 4, 3).mean(axis=(2, 4))
    return hr, lr.astype(np.float32)


def main(code):
    import torch

    SRFlowNet = import_reference(code)
    torch.manual_seed(0)
    np.random.seed(0)  # InvertibleConv1x1's QR initialisation draws from numpy
    net = build(SRFlowNet, **CFG).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p += (0.02 if name.endswith("invconv.weight") else 0.1) * torch.randn(p.shape, generator=g)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(sd, os.path.join(HERE, "SRFlow_x4_small.pth"))

    hr, lr = crops()
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1).astype(np.float32)
    out = {"lr": lr, "hr": hr}
    with torch.no_grad():
        t_lr, t_hr = nchw(lr), nchw(hr)
        enc = net.rrdbPreprocessing(t_lr)
        for level, name in ((1, "fea_up2"), (2, "fea_up1"), (3, "fea_up0")):
            out[f"cond{level}"] = nhwc(enc[name])
        out["rrdb_out"] = nhwc(net.RRDB(t_lr))
        epses, nll, logdet = net(gt=t_hr, lr=t_lr, reverse=False, epses=[])
        out.update(eps1=nhwc(epses[0]), z=nhwc(epses[1]), logdet=logdet.numpy(), nll=nll.numpy())
        z_only, nll_again, _ = net(gt=t_hr, lr=t_lr, reverse=False)
        assert torch.equal(z_only, epses[1]) and torch.equal(nll_again, nll)

        torch.manual_seed(7)
        u = torch.rand(t_hr.shape)
        torch.manual_seed(7)  # normal_flow draws its dequantization noise with the same call
        _, nll_deq, _ = net(gt=t_hr, lr=t_lr, reverse=False, add_gt_noise=True)
        out.update(hr_deq=nhwc(t_hr + (u - 0.5) / 32.0), nll_deq=nll_deq.numpy())
        _, nll_check, _ = net(gt=t_hr + (u - 0.5) / 32.0, lr=t_lr, reverse=False)
        assert torch.allclose(nll_deq, nll_check + np.log(32.0) / np.log(2.0), atol=1e-4)

        c = net.flowUpsamplerNet.C
        h, w = hr.shape[1] // 8, hr.shape[2] // 8
        sr0, _ = net(lr=t_lr, z=torch.zeros(2, c, h, w), eps_std=0.0, reverse=True)
        out["sr_heat0"] = nhwc(sr0)
        g = torch.Generator().manual_seed(2)
        e1 = 0.3 * torch.randn(epses[0].shape, generator=g)
        zz = 0.3 * torch.randn(epses[1].shape, generator=g)
        sr_n, _ = net(lr=t_lr, z=None, eps_std=0.3, reverse=True, epses=[e1, zz])
        out.update(noise_eps1=nhwc(e1), noise_z=nhwc(zz), sr_noise=nhwc(sr_n))
    np.savez_compressed(os.path.join(HERE, "io.npz"), **out)
    with gzip.open(os.path.join(HERE, "released_shapes.json.gz"), "wt") as f:
        json.dump(released_shapes(SRFlowNet), f)
    for k, v in out.items():
        print(k, v.shape, float(np.abs(v).max()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_golden.py <the reference's code/ folder> (see the docstring)")
    main(sys.argv[1])
