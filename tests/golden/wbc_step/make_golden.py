"""Writes D_S.pth, D_T.pth and golden.npz beside this file: one training step of victorca25/traiNNer's own WBCModel
(codes/models/wbc_model.py) with its spectral-norm PatchGAN discriminators, on one batch, and the same pieces driven in
jaxsr's order.

Run by hand, never by the tests or CI, with a Python that has torch (2.13.0 CPU here), numpy, OpenCV and scikit-image,
and a git directory of victorca25/traiNNer (commit 1d25dcdb4c6a3a1f63589bb4f724fa4857009f31 here):

    WBC_TRAINNER_GIT=/path/to/traiNNer/.git python tests/golden/wbc_step/make_golden.py

It extracts, unchanged, into a temporary folder and imports from there: codes/models/{wbc_model,base_model,losses,
networks,optimizers}.py, codes/models/modules/loss.py, codes/models/modules/optimizers/ (adamp, ranger, madgrad),
codes/models/modules/architectures/{WBCNet_arch,discriminators,block}.py, codes/dataops/{filters,colors}.py and
codes/utils/image_pool.py. Stubbed, because nothing of them runs in this configuration: schedulers, SWA, CEM, AdaTarget,
batch augmentations, SSIM, LPIPS, DiffAugment, dataops.debug and dataops.common, the VGG feature extractor (torchvision
is not installed; 'fea' is not used), video warping, augmennt's transforms (the superpixel target is an input here),
options.opt_get, partial/deformable convs, and joblib (a sequential Parallel).

The model: WBCModel(opt) built by its own __init__ (define_G 'wbcunet_net' nf=4, define_D 'patchgan' with
spectral_norm: true as train_wbc.yml, nf=4, n_layers 3; D_T the same with input_nc 1), CPU, fp32 (no AMP), pool_size 0
(train_wbc.yml's pool_size 1 with a batch of 2 would hand D_S/D_T a random mix of this batch's images: see
docs/wbc.md), Adam lr 2e-4, beta1 0.5 for G and D. Losses: pixel_criterion l1 (weight 1), tv_type normal, tv_norm 2
(weight 1), no feature loss; gan lsgan, gan_weight 0.5, form standard; surf_losses [pix], text_losses [pix, tv],
struct_losses [pix], cont_losses [pix], reg_losses [tv], idt_losses [pix], lambda_identity 0.5; scales surface 0.2
(train_wbc.yml), texture 1, structure 1, content 1, reg 1.

Weights: G is ../wbc/wbcunet.pth (UnetGeneratorWBC nf=4, perturbed); D_S, D_T: torch.manual_seed(1), built by
define_D, every parameter moved by 0.1 * randn and the spectral-norm vectors weight_u / weight_v replaced by
normalised randn, saved with torch.save(state_dict) (the port's D_S / D_T files).

Batch (NHWC float32, [-1, 1], two images each, 36x44): `photo` crops of skimage's astronaut and coffee, `cartoon`
crops of chelsea and rocket made cartoon-like (total-variation denoising, then 5 levels per channel). `target`: the
structure target, fixed (an input here): skimage's SLIC (n_segments 40) of the port's filtered output on this batch,
each segment its mean colour. `cs_weights`: the colour shift's (r, g, b) draw, get_colorshift_weights('uniform') after
np.random.seed(3), drawn again by ColorShift.forward after the same seed.

Recorded:
- `port_<name>`: WBCModel.optimize_parameters(step=1) itself: D_T and D_S first (each D sees fake, then real), one
  Adam step of both, then G against the updated discriminators. Its log (`pix-l1_surf`, `pix-l1_text`, `tv-l2_text`,
  `pix-l1_struct`, `pix-l1_cont`, `tv-l2_reg`, `pix-l1_idt`, `l_g_gan_S`, `l_g_gan_T`, `l_d_real_S`, ...), the losses
  it backpropagated (`port_loss_D_T`, `port_loss_D_S`, `port_loss_G`) and the gradients' global norms before each
  optimizer step (`port_grad_norm_D`, `port_grad_norm_G`);
- `fake_B`, `fake_gray`: the filtered output and its colour shift (as the port computes them for the losses).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from skimage import data, restoration, segmentation

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = ["codes/models/wbc_model.py", "codes/models/base_model.py", "codes/models/losses.py", "codes/models/networks.py",
         "codes/models/optimizers.py", "codes/models/modules/loss.py",
         "codes/models/modules/architectures/WBCNet_arch.py", "codes/models/modules/architectures/discriminators.py",
         "codes/models/modules/architectures/block.py", "codes/dataops/filters.py", "codes/dataops/colors.py",
         "codes/utils/image_pool.py"]
OPTIMIZERS = "codes/models/modules/optimizers/"
STUBS = {
    "models/schedulers.py": "def get_schedulers(optimizers=None, train_opt=None):\n    return []\n",
    "models/swa.py": "",
    "models/modules/architectures/CEM/CEMnet.py": "",
    "models/modules/adatarget/atg.py": "AdaTarget = None\n",
    "dataops/batchaug.py": "BatchAugment = None\n",
    "models/modules/ssim.py": "SSIM = MS_SSIM = None\n",
    "models/modules/LPIPS/perceptual_loss.py": "",
    "dataops/diffaug.py": "DiffAugment = None\n",
    "dataops/debug.py": "",
    "dataops/common.py": "norm = denorm = extract_patches_2d = tensor2np = np2tensor = None\n",
    "models/modules/architectures/perceptual.py": "FeatureExtractor = alt_layers_names = None\n",
    "models/modules/architectures/video.py": "optical_flow_warp = None\n",
    "models/modules/architectures/convolutions/partialconv2d.py": "PartialConv2d = None\n",
    "models/modules/architectures/convolutions/deformconv2d.py": "DeformConv2d = None\n",
    "dataops/augmennt/augmennt/transforms.py": "def _none(*a, **k):\n    return None\n\n"
                                               "Compose = Lambda = Superpixels = RandomGamma = _none\n",
    "options/options.py": "opt_get = None\n",
    "torchvision.py": "",
    "joblib.py": "class parallel_backend:\n    def __init__(self, *a, **k):\n        pass\n\n"
                 "    def __enter__(self):\n        return self\n\n    def __exit__(self, *a):\n        return False\n\n\n"
                 "def delayed(f):\n    return lambda *a, **k: (f, a, k)\n\n\n"
                 "class Parallel:\n    def __call__(self, jobs):\n        return [f(*a, **k) for f, a, k in jobs]\n",
}
SIZE = (36, 44)
TRAIN = dict(
    lambda_identity=0.5, gan_type="lsgan", gan_weight=0.5, gan_opt={"form": "standard"},
    optim_G="adam", lr_G=2e-4, beta1_G=0.5, optim_D="adam", lr_D=2e-4, beta1_D=0.5,
    pixel_criterion="l1", pixel_weight=1.0, hfen_criterion=None, tv_type="normal", tv_norm=2, tv_weight=1.0,
    feature_criterion=None, feature_weight=0, lpips_type=None,
    surf_losses=["pix"], text_losses=["pix", "tv"], struct_losses=["pix"], cont_losses=["pix"], reg_losses=["tv"],
    idt_losses=["pix"], surface_scale=0.2, texture_scale=1.0, struct_scale=1.0, content_scale=1.0, reg_scale=1.0,
)


def reference(git_dir):
    """The port's modules, imported from a temporary folder holding the extracted files and the stubs."""
    root = tempfile.mkdtemp(prefix="wbc_step_ref_")
    commit = subprocess.check_output(["git", "--git-dir", git_dir, "rev-parse", "HEAD"], text=True).strip()
    listed = subprocess.check_output(["git", "--git-dir", git_dir, "ls-tree", "-r", "--name-only", "HEAD", OPTIMIZERS],
                                     text=True).split()
    for f in FILES + [f for f in listed if f.endswith(".py")]:
        dst = os.path.join(root, f.removeprefix("codes/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w") as fh:
            fh.write(subprocess.check_output(["git", "--git-dir", git_dir, "show", f"HEAD:{f}"], text=True))
    for f, text in STUBS.items():
        os.makedirs(os.path.dirname(os.path.join(root, f)), exist_ok=True)
        with open(os.path.join(root, f), "w") as fh:
            fh.write(text)
    for d, _, names in os.walk(root):
        if d != root and "__init__.py" not in names:
            open(os.path.join(d, "__init__.py"), "w").close()
    sys.path.insert(0, root)
    from dataops import colors
    from models import wbc_model

    print(f"victorca25/traiNNer {commit}: {', '.join(FILES)}, {OPTIMIZERS}*.py")
    return wbc_model, colors


def options(ndf, **train):
    return {
        "gpu_ids": None, "is_train": True, "scale": 1, "input_nc": 3, "output_nc": 3, "pool_size": 0,
        "use_amp": False, "use_swa": False,
        "datasets": {"train": {"znorm": True, "batch_size": 2, "virtual_batch_size": 2}},
        "path": {"pretrain_model_G": None, "pretrain_model_D_S": None, "pretrain_model_D_T": None},
        "network_G": {"type": "wbcunet_net", "strict": False, "nf": 4},
        "network_D": {"type": "patchgan", "strict": True, "input_nc": 3, "ndf": ndf, "n_layers": 3,
                      "get_feats": False, "patch": True, "use_spectral_norm": True},
        "train": {**TRAIN, **train},
    }


def crop(img, top, left):
    h, w = SIZE
    return img[top : top + h, left : left + w].astype(np.float32) / 255.0


def cartoonish(img):
    """A cartoon-like crop: total-variation denoised, then 5 levels per channel."""
    smooth = restoration.denoise_tv_chambolle(img, weight=0.15, channel_axis=-1)
    return (np.round(smooth * 4) / 4).astype(np.float32)


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy().astype(np.float32)


def global_norm(nets):
    return float(np.sqrt(sum(float(p.grad.double().pow(2).sum()) for n in nets for p in n.parameters()
                             if p.grad is not None)))


def logged(m, prefix, out):
    """The model's log, and the G adversarial terms it keeps in log_dict_S / log_dict_T until the next D step."""
    for k, v in m.get_current_log().items():
        out[f"{prefix}_{k}"] = np.float32(v)
    for rep in ("S", "T"):
        out[f"{prefix}_l_g_gan_{rep}"] = np.float32(getattr(m, f"log_dict_{rep}")["l_g_gan"])


def build(wbc_model, g_sd, d_sds, target, **train):
    """WBCModel(opt) by its own __init__, with these weights and the fixed structure target."""
    m = wbc_model.WBCModel(options(int(d_sds["D_S"]["model.0.weight_orig"].shape[0]), **train))
    m.netG.load_state_dict(g_sd, strict=True)
    m.netD_S.load_state_dict(d_sds["D_S"], strict=True)
    m.netD_T.load_state_dict(d_sds["D_T"], strict=True)
    wbc_model.batch_superpixel = lambda batch, fn, num_job=None: target  # the superpixel target is an input here
    return m


def main():
    wbc_model, colors = reference(os.environ["WBC_TRAINNER_GIT"])
    g_sd = torch.load(os.path.join(HERE, "..", "wbc", "wbcunet.pth"))
    photo = np.stack([crop(data.astronaut(), 40, 180), crop(data.coffee(), 150, 200)]) * 2 - 1
    cartoon = np.stack([cartoonish(crop(data.chelsea(), 60, 120)), cartoonish(crop(data.rocket(), 200, 300))]) * 2 - 1
    batch = {"A": nchw(photo), "B": nchw(cartoon), "A_path": ["astronaut", "coffee"]}

    torch.manual_seed(1)
    m = wbc_model.WBCModel(options(4))
    d_sds = {}
    with torch.no_grad():
        for name in ("D_S", "D_T"):
            net = getattr(m, "net" + name)
            for p in net.parameters():
                p += 0.1 * torch.randn_like(p)
            for k, b in net.named_buffers():
                if k.endswith(("weight_u", "weight_v")):
                    b.copy_(torch.nn.functional.normalize(torch.randn_like(b), dim=0))
            d_sds[name] = {k: v.clone() for k, v in net.state_dict().items()}
            torch.save(d_sds[name], os.path.join(HERE, f"{name}.pth"))
        m.netG.load_state_dict(g_sd, strict=True)
        fake = m.guided_filter(batch["A"], m.netG(batch["A"]))
    target = np.stack([segmentation.slic(im, n_segments=40, sigma=1, compactness=10, convert2lab=True, start_label=0)
                       for im in nhwc(fake)])
    target = np.stack([np.stack([im[lab == i].mean(0) if (lab == i).any() else np.zeros(3, np.float32)
                                 for i in range(lab.max() + 1)])[lab] for im, lab in zip(nhwc(fake), target)])
    target = target.astype(np.float32)
    np.random.seed(3)
    cs_weights = colors.get_colorshift_weights(mode="uniform").numpy().astype(np.float32)
    out = {"photo": photo.astype(np.float32), "cartoon": cartoon.astype(np.float32), "target": target,
           "cs_weights": cs_weights}

    # the port's own step
    m = build(wbc_model, g_sd, d_sds, nchw(target))
    losses, norms = [], {}
    m.calc_gradients = lambda loss: (losses.append(float(loss)), loss.backward())
    step = m.optimizer_step

    def optimizer_step(s, optimizer, flag):
        norms[flag] = global_norm([m.netD_S, m.netD_T] if flag == "D" else [m.netG])
        step(s, optimizer, flag)

    m.optimizer_step = optimizer_step
    m.feed_data(batch)
    np.random.seed(3)
    m.optimize_parameters(1)
    logged(m, "port", out)
    out["port_loss_D_T"], out["port_loss_D_S"], out["port_loss_G"] = (np.float32(v) for v in losses)
    out["port_grad_norm_D"], out["port_grad_norm_G"] = np.float32(norms["D"]), np.float32(norms["G"])
    out["fake_B"], out["fake_gray"] = nhwc(m.fake_B), nhwc(m.fake_gray)

    np.savez(os.path.join(HERE, "golden.npz"), **out)
    print({k: (v.shape if v.ndim else float(v)) for k, v in out.items()})


if __name__ == "__main__":
    main()
