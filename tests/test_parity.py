"""Every architecture against spandrel's PyTorch module, one row per configuration (tests/parity.py says what each row
checks): our perturbed model and spandrel's, loaded from our .pth and .safetensors exports, give the same output on a
real-photo crop; the reference class built from the row's arguments strict-loads our .pth and agrees too; spandrel
reports the architecture, scale and tags; and the reference's own file loads back through jaxsr. Adding an
architecture's parity test is adding rows here.

Tolerances (max abs difference, fp32, [0, 1] photographs): 1e-5 for the convolutional models, 1e-4 for the window
transformers (the issue's bound for DAT, SwinIR and HAT).
"""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from parity import Row, check
from test_dat import REDUCED as DAT
from test_hat import CASES as HAT
from test_swinir import CASES as SWINIR

from jaxsr.archs.hat import spec_for as hat_spec
from jaxsr.archs.swinir import spec_for as swinir_spec

SR = 1e-5  # convolutional models
TRANSFORMER = 1e-4  # window transformers

# ------------------------------------------------------------------------------------------------------- ESRGAN

ESRGAN_CROP = dict(name="chelsea", h=32, w=36, top=60, left=200)  # multiples of 4: spandrel reflect-pads x1/x2 inputs
PLUS_CROP = dict(name="astronaut", h=20, w=24, top=100, left=150)
SHUFFLE = {4: None, 8: None, 2: 2, 1: 4}  # our scale -> spandrel's shuffle_factor (x2/x1 run x4 on unshuffled input)


def esrgan(scale, *, plus=False):
    shuffle = SHUFFLE[scale]
    nf, nb = (8, 1) if plus else (16, 2)
    spec = {"arch": "esrgan", "scale": scale, "in_ch": 3, "out_ch": 3, "num_feat": nf, "num_block": nb, "num_grow_ch": 32,
            **({"plus": True} if plus else {})}
    kwargs = dict(in_nc=3 * (shuffle or 1) ** 2, out_nc=3, num_filters=nf, num_blocks=nb, scale=4 if shuffle else scale,
                  shuffle_factor=shuffle, **({"plus": True} if plus else {}))
    tags = {"ESRGAN+", "8nf", "1nb"} if plus else set()
    if shuffle:
        tags.add("unshuffle")
    return Row(f"esrgan{'_plus' if plus else ''}_x{scale}", spec, ("ESRGAN.ESRGAN", kwargs), "ESRGAN",
               PLUS_CROP if plus else ESRGAN_CROP, SR, frozenset(tags), exact_tags=plus, seed=scale if plus else 3,
               reference_keys_differ=not plus)  # spandrel's class keeps the original `model.N` keys; ESRGAN+ exports them


# ------------------------------------------------------------------------------------------------------- Compact


def _prelu_slopes_off_025(model):
    """The PReLU slopes moved by +-0.1 around torch's 0.25, as far as the other weights are moved off theirs."""
    rng = np.random.default_rng(1)
    for layer in model.body:
        if hasattr(layer, "weight"):
            w = np.asarray(layer.weight[...])
            layer.weight[...] = jnp.asarray(w + rng.normal(0, 0.1, w.shape), jnp.float32)


def compact(scale):
    spec = {"arch": "compact", "scale": scale, "in_ch": 3, "out_ch": 3, "num_feat": 16, "num_conv": 4, "act_type": "prelu"}
    kwargs = dict(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=scale, act_type="prelu")
    return Row(f"compact_x{scale}", spec, ("Compact.Compact", kwargs), "Compact",
               dict(name="chelsea", h=21, w=26, top=60, left=200), SR, frozenset({"16nf", "4nc"}), exact_tags=True,
               seed=2, prepare=_prelu_slopes_off_025)


# ------------------------------------------------------------------------------------------------------- SPAN


def _upsampler_for_255(model):
    """With norm the input is scaled by 255: the upsampler's weights scaled down as much keep the output near [0, 1],
    as a trained norm model's are."""
    conv = model.upsampler[0]
    conv.kernel[...] = conv.kernel[...] / 255


def _span_check(norm):
    def check(saved, theirs):
        """spandrel runs the norm we export, and our eval_conv is the composition torch makes at its eval forward."""
        assert theirs.is_norm == norm and ("no_norm" in saved) == (not norm)
        after = theirs.state_dict()
        keys = [k for k in saved if "eval_conv" in k]
        assert keys
        for key in keys:
            a, b = saved[key].numpy(), after[key].numpy()
            assert np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(b).max()), key

    return check


def span(scale, norm):
    spec = {"arch": "span", "scale": scale, "in_ch": 3, "out_ch": 3, "feature_channels": 8, "bias": True, "norm": norm,
            "img_range": 255.0, "rgb_mean": [0.4488, 0.4371, 0.404]}
    kwargs = dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=scale, norm=norm)
    return Row(f"span_x{scale}{'_norm' if norm else ''}", spec, ("SPAN.SPAN", kwargs), "SPAN",
               dict(name="chelsea", h=21, w=26, top=60, left=200), SR, frozenset({"8nf"}), exact_tags=True, seed=2,
               spread=0.02, prepare=_upsampler_for_255 if norm else None, check=_span_check(norm))


# ------------------------------------------------------------------------------------------------------- RealPLKSR


def realplksr(scale, upsampler, layer_norm, kernel_size=7):
    """RealPLKSR; at 17 (the released kernel) its large kernel runs as FFTs on the CPU."""
    spec = {"arch": "realplksr", "scale": scale, "dim": 16, "n_blocks": 2, "kernel_size": kernel_size,
            "split_ratio": 0.25, "use_ea": True, "norm_groups": 4, "dropout": 0.0, "upsampler": upsampler,
            "layer_norm": layer_norm}
    kwargs = dict(upscaling_factor=scale, dysample=upsampler == "dysample", use_ea=True, layer_norm=layer_norm, dim=16,
                  n_blocks=2, kernel_size=kernel_size, split_ratio=0.25)
    tags = {"Real", "16dim", "2nb", f"{kernel_size}ks"} | ({"DySample"} if upsampler == "dysample" else set()) | (
        {"LayerNorm"} if layer_norm else set())
    name = f"realplksr_x{scale}_{upsampler}{'_ln' if layer_norm else ''}{'' if kernel_size == 7 else f'_k{kernel_size}'}"
    return Row(name, spec, ("PLKSR.RealPLKSR", kwargs), "PLKSR",
               dict(name="astronaut", h=27, w=35, top=100, left=150), SR, frozenset(tags), exact_tags=True, seed=scale,
               spread=0.05)


# ------------------------------------------------------------------------------------------------------- PLKSR, MoSR

PLKSR_CROP = dict(name="astronaut", h=27, w=35, top=100, left=150)


def plksr(scale, ccm_type, lk_type, use_ea, kernel_size, check=None):
    """The original PLKSR: every mixer, large kernel and EA choice spandrel detects (SparsePLK as spandrel assumes it:
    four 5x5 convs, dilations 1-4; its kernel_size is unused and spandrel reports its default, 17)."""
    spec = {"arch": "plksr", "scale": scale, "dim": 16, "n_blocks": 2, "ccm_type": ccm_type, "kernel_size": kernel_size,
            "split_ratio": 0.25, "lk_type": lk_type, "use_max_kernel": False, "sparse_kernels": [5, 5, 5, 5],
            "sparse_dilations": [1, 2, 3, 4], "with_idt": False, "use_ea": use_ea}
    kwargs = dict(dim=16, n_blocks=2, upscaling_factor=scale, ccm_type=ccm_type, kernel_size=kernel_size,
                  split_ratio=0.25, lk_type=lk_type, use_ea=use_ea)
    return Row(f"plksr_x{scale}_{ccm_type}_{lk_type}{'_ea' if use_ea else ''}", spec, ("PLKSR.PLKSR", kwargs), "PLKSR",
               PLKSR_CROP, SR, frozenset({"16dim", "2nb", f"{kernel_size}ks", ccm_type}), exact_tags=True, seed=scale,
               spread=0.05, check=check)


def mosr(scale, upsampler, out_ch=3, expansion_ratio=1.5, conv_ratio=1.0, drop_path=0.0, check=None):
    """MoSR with each upsampler spandrel detects; drop_path (training only) leaves no trace in the keys."""
    spec = {"arch": "mosr", "scale": scale, "in_ch": 3, "out_ch": out_ch, "n_block": 2, "dim": 16, "upsampler": upsampler,
            "drop_path": drop_path, "kernel_size": 7, "expansion_ratio": expansion_ratio, "conv_ratio": conv_ratio}
    kwargs = dict(in_ch=3, out_ch=out_ch, upscale=scale, n_block=2, dim=16, upsampler=upsampler, drop_path=drop_path,
                  kernel_size=7, expansion_ratio=expansion_ratio, conv_ratio=conv_ratio)
    return Row(f"mosr_x{scale}_{upsampler}", spec, ("MoSR.MoSR", kwargs), "MoSR", PLKSR_CROP, SR, frozenset(),
               exact_tags=True, seed=scale, spread=0.05, unseen=("drop_path",), check=check)


# ------------------------------------------------------------------------------------------------------- RCAN, SAFMN

RCAN_CROP = dict(name="chelsea", h=21, w=27, top=60, left=200)  # odd: the unshuffle variants reflect-pad to 2 or 4


def _released_layouts(saved, theirs):
    """The files users have load through `load_model` and through the trainer's model.arch=auto, tensor for tensor:
    the original release's bare state dict (.pt), traiNNer-redux's flat .safetensors, BasicSR's `params` + `params_ema`."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    from jaxsr import weights
    from jaxsr.archs.bridge import state_dict
    from jaxsr.train.config import base_config
    from jaxsr.train.kinds.sr import build_generator

    with tempfile.TemporaryDirectory() as d:
        for name in ("bare.pt", "flat.safetensors", "ema.pth"):
            path = f"{d}/{name}"
            if name.endswith(".safetensors"):
                save_file(dict(saved), path)
            else:
                torch.save(dict(saved) if name == "bare.pt" else {"params": dict(saved), "params_ema": dict(saved)}, path)
            model, _ = weights.load_model(path)
            cfg = base_config()
            cfg.model.arch, cfg.scale, cfg.init_weights = "auto", weights.read(path).spec["scale"], path
            warm, _ = build_generator(cfg)
            for m in (model, warm):
                got = state_dict(m)
                assert got.keys() == saved.keys(), name
                assert all(np.array_equal(got[k], saved[k].numpy()) for k in saved), name


def rcan(scale, norm=True, unshuffle=False, in_ch=3, kernel_size=3, groups=1, blocks=1, check=None):
    spec = {"arch": "rcan", "scale": scale, "in_ch": in_ch, "n_resgroups": groups, "n_resblocks": blocks, "n_feats": 8,
            "rgb_range": 255.0, "norm": norm, "kernel_size": kernel_size, "reduction": 4, "res_scale": 1.0,
            "act_mode": "relu", "unshuffle_mod": unshuffle}
    kwargs = dict(scale=scale, n_resgroups=groups, n_resblocks=blocks, n_feats=8, n_colors=in_ch, norm=norm,
                  kernel_size=kernel_size, reduction=4, unshuffle_mod=unshuffle)
    tags = {"8nf", f"{groups}nrg", f"{blocks}nrb"} | ({"unshuffle"} if unshuffle else set())
    return Row(f"rcan_x{scale}{'' if norm else '_nonorm'}{'_unshuffle' if unshuffle else ''}", spec, ("RCAN.RCAN", kwargs),
               "RCAN", RCAN_CROP, SR, frozenset(tags), exact_tags=True, seed=scale, spread=0.02, check=check)


def safmn(scale, ffn_scale=2.0, check=None):
    spec = {"arch": "safmn", "scale": scale, "dim": 8, "n_blocks": 2, "ffn_scale": ffn_scale}
    kwargs = dict(dim=8, n_blocks=2, ffn_scale=ffn_scale, upscaling_factor=scale)
    return Row(f"safmn_x{scale}", spec, ("SAFMN.SAFMN", kwargs), "SAFMN",
               dict(RCAN_CROP, h=19), SR, frozenset({"8dim", "2nb"}), exact_tags=True,  # SAFMN pools by 2, 4 and 8
               seed=scale, spread=0.05, check=check)


# ------------------------------------------------------------------------------------------------------- window transformers

TRANSFORMER_CROP = dict(name="astronaut", h=27, w=30, top=100, left=150)  # no multiple of 7, 8 or 16 (window x unshuffle)


def _conv_first_after_unshuffle(sd):
    """spandrel's SwinIR module names the conv after its PixelUnshuffle conv_first; files hold it as conv_first.1."""
    return {(f"conv_first.1.{k.split('.')[-1]}" if k.startswith("conv_first.") else k): v for k, v in sd.items()}


def swinir(case, tags):
    cfg = dict(SWINIR[case])
    up, unshuffle = cfg.pop("upscale"), cfg.get("start_unshuffle", 1)
    spec = swinir_spec("swinir_m", **{("in_ch" if k == "in_chans" else k): v for k, v in cfg.items()}, scale=up // unshuffle)
    shuffled = unshuffle > 1  # then torch also returns the padded size
    return Row(f"swinir_{case}", spec, ("SwinIR.SwinIR", SWINIR[case]), "SwinIR", TRANSFORMER_CROP, TRANSFORMER,
               frozenset(tags), seed=7, reference_keys_differ=shuffled,
               file_keys=_conv_first_after_unshuffle if shuffled else None, crop_torch=shuffled)


def hat(case, tags):
    cfg = dict(HAT[case])
    scale = cfg.pop("upscale")
    return Row(f"hat_{case}", hat_spec("hat_s", **cfg, scale=scale), ("HAT.HAT", HAT[case]), "HAT", TRANSFORMER_CROP,
               TRANSFORMER, frozenset(tags), seed=7, unseen=("img_size",))  # HAT's keys do not store img_size


def _random_bn_statistics(model):
    rng = np.random.default_rng(0)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.BatchStat)):
        shape = var[...].shape
        var[...] = jnp.asarray(rng.uniform(0.5, 1.5, shape) if path[-1] == "var" else rng.normal(0, 0.1, shape), jnp.float32)


def dat(variant, tag):
    cfg = dict(DAT[variant])
    scale = cfg.pop("upscale")
    s0, s1 = cfg["split_size"]
    return Row(f"dat_{variant}", {"arch": "dat", "scale": scale, **cfg}, ("DAT.DAT", DAT[variant]), "DAT",
               dict(name="astronaut", h=40, w=48, top=100, left=190), TRANSFORMER, frozenset({tag, f"s64|{s0}x{s1}"}),
               seed=7, perturb_buffers=False, prepare=_random_bn_statistics)  # rpe_biases: coordinates


# ------------------------------------------------------------------------------------------------------- Real-CUGAN

CUGAN_CROP = dict(name="chelsea", h=33, w=37, top=60, left=180)  # odd: the forward reflect-pads to 2 (x3: 4) itself


def _cugan_call(spec, saved, crop, alpha=1.0, descriptor=False):
    """(ours, spandrel's): our model built from the saved state dict and spandrel's loader of it, called on a real-photo
    crop: the module itself (with an alpha), or the descriptor (which pads to its size requirements, crops back and
    clamps)."""
    import spandrel
    import torch
    from conftest import photo

    from jaxsr import archs
    from jaxsr.archs.bridge import load_state_dict

    ours = archs.build(spec)
    load_state_dict(ours, {k: v.numpy() for k, v in saved.items()})
    x = photo(**crop)[None]
    desc = spandrel.ModelLoader().load_from_state_dict(dict(saved))
    t = torch.from_numpy(x.transpose(0, 3, 1, 2))
    ours = np.asarray(ours(jnp.asarray(x), alpha))
    with torch.no_grad():
        if descriptor:
            return np.clip(ours, 0, 1), desc(t).numpy().transpose(0, 2, 3, 1)
        return ours, (desc.model(t) if spec["fast"] else desc.model(t, alpha)).numpy().transpose(0, 2, 3, 1)


def _cugan_check(spec):
    def check(saved, theirs):
        """The forward's alpha (the denoise strength of the original scripts) as the reference takes it, on a crop below
        spandrel's minimum side that torch's forward still runs; the fast model on sides off its multiple of 4, which
        spandrel's descriptor reflect-pads as we do."""
        if spec["fast"]:
            ours, ref = _cugan_call(spec, saved, dict(CUGAN_CROP, h=45, w=51), descriptor=True)
        else:
            ours, ref = _cugan_call(spec, saved, dict(CUGAN_CROP, h=23, w=27), alpha=0.6)
        assert np.abs(ours - ref).max() <= SR

    return check


def _pro_marker_of_another_shape(sd):
    """A released pro file's `pro` entry is only a marker; spandrel overwrites it with zeros(1), whatever it holds."""
    import torch

    return {**sd, "pro": torch.ones(())}


def realcugan(scale, pro=False, fast=False, check=None):
    spec = {"arch": "realcugan", "scale": scale, "in_ch": 3, "out_ch": 3, "pro": pro, "fast": fast}
    cls, kwargs = ("UpCunet2x_fast", {}) if fast else (f"UpCunet{scale}x", {"pro": pro})
    tags = {"pro"} if pro else {"fast"} if fast else set()
    return Row(f"realcugan_x{scale}{'_pro' if pro else ''}{'_fast' if fast else ''}", spec,
               (f"RealCUGAN.{cls}", dict(in_channels=3, out_channels=3, **kwargs)), "RealCUGAN",
               dict(CUGAN_CROP, h=44, w=52) if fast else CUGAN_CROP,  # the fast forward takes multiples of 4 only
               SR, frozenset(tags), exact_tags=True, seed=scale,
               file_keys=_pro_marker_of_another_shape if pro else None,
               check=check or (_cugan_check(spec) if scale == 2 else None))


# ------------------------------------------------------------------------------------------------------- OmniSR

OMNISR_CROP = dict(name="astronaut", h=27, w=30, top=100, left=150)  # no multiple of the window (4, 8): zero-padded


def _thop_counters(sd):
    """The authors' released files carry thop's profiling buffers (`total_ops`, `total_params`) for every module."""
    import torch

    prefixes = {""} | {k.rsplit(".", 1)[0] + "." for k in sd}  # the modules that hold tensors, and the root
    return {**sd, **{f"{p}{n}": torch.zeros(1, dtype=torch.float64) for p in prefixes for n in ("total_ops", "total_params")}}


def omnisr(scale, num_feat=16, block_num=1, pe=True, window_size=8, res_num=2, bias=True, check=None):
    spec = {"arch": "omnisr", "scale": scale, "in_ch": 3, "out_ch": 3, "num_feat": num_feat, "block_num": block_num,
            "pe": pe, "window_size": window_size, "res_num": res_num, "bias": bias}
    kwargs = dict(num_in_ch=3, num_out_ch=3, num_feat=num_feat, block_num=block_num, pe=pe, window_size=window_size,
                  res_num=res_num, up_scale=scale, bias=bias)
    return Row(f"omnisr_x{scale}{'' if pe else '_nope'}", spec, ("OmniSR.OmniSR", kwargs), "OmniSR", OMNISR_CROP, SR,
               frozenset({f"{num_feat}nf", f"w{window_size}", f"{res_num}nr"}), exact_tags=True, seed=scale,
               file_keys=_thop_counters, check=check)


ROWS = [
    *(esrgan(s) for s in (4, 2, 1, 8)),
    *(esrgan(s, plus=True) for s in (4, 2, 8)),
    *(compact(s) for s in (1, 2, 3, 4, 8)),
    *(span(s, norm) for s, norm in ((1, False), (2, True), (3, False), (4, True), (8, False))),
    realplksr(3, "dysample", False), realplksr(4, "pixelshuffle", True), realplksr(1, "dysample", True),
    realplksr(2, "pixelshuffle", True, kernel_size=17),
    rcan(4, groups=2, blocks=2, check=_released_layouts), rcan(3, norm=False, in_ch=1, kernel_size=5),
    rcan(2, unshuffle=True), rcan(1, unshuffle=True), safmn(4, check=_released_layouts), safmn(3, ffn_scale=1.5), safmn(2),
    plksr(4, "CCM", "PLK", True, 7, check=_released_layouts), plksr(3, "ICCM", "SparsePLK", False, 17),
    plksr(2, "DCCM", "RectSparsePLK", True, 9), plksr(2, "CCM", "PLK", False, 17),
    mosr(4, "ps", drop_path=0.1, check=_released_layouts), mosr(3, "gps", expansion_ratio=2.0, conv_ratio=0.5),
    mosr(2, "dys", out_ch=1),
    swinir("lightweight_x4", {"small", "s32w8", "64nf", "24dim", "1conv", "1unshuf"}),
    swinir("classical_x2_3conv", {"s48w8", "3conv"}),
    swinir("unshuffle_x2", {"2unshuf", "s32w8"}),
    swinir("jpeg_gray_x1", {"s28w7"}),
    hat("x4", {"small", "s64w8", "64nf", "24dim", "1conv"}),
    hat("x3", {"medium", "s64w4"}),
    dat("dat_light", "light"), dat("dat_s", "small"), dat("dat_2_l", "medium"),
    realcugan(2), realcugan(3, pro=True), realcugan(4, pro=True, check=_released_layouts), realcugan(2, fast=True),
    omnisr(4, check=_released_layouts), omnisr(2, num_feat=8, block_num=2, pe=False, res_num=1, bias=False),
    omnisr(3, window_size=4, res_num=1),
]
# ------------------------------------------------------------------------------------------------------- DRCT

DRCT_CROP = dict(name="astronaut", h=32, w=48, top=100, left=150)  # the reference's forward takes window multiples only


def _drct_pads_as_spandrel(spec):
    def check(saved, theirs):
        """spandrel's descriptor (what chaiNNer calls) reflect-pads to 16, runs and crops: on a crop off every grid
        (27x30) ours, which pads the same way, agrees."""
        import spandrel
        import torch
        from conftest import photo

        from jaxsr import archs
        from jaxsr.archs.bridge import load_state_dict

        ours = archs.build(spec)
        load_state_dict(ours, archs.get("drct").from_torch({k: v.numpy() for k, v in saved.items()}))
        x = photo(**TRANSFORMER_CROP)[None]
        x = x.mean(-1, keepdims=True) if spec.get("in_ch", 3) == 1 else x
        desc = spandrel.ModelLoader().load_from_state_dict(dict(saved))
        with torch.no_grad():
            ref = desc(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy().transpose(0, 2, 3, 1)
        out = np.asarray(nnx.jit(lambda m, v: m(v))(ours, jnp.asarray(x)))
        assert np.abs(np.clip(out, 0, 1) - ref).max() <= TRANSFORMER

    return check


def drct(scale, embed_dim=16, num_heads=(4,), gc=6, window_size=8, img_size=32, in_ch=3, mlp_ratio=2.0,
         resi_connection="1conv", qkv_bias=True, patch_norm=True, check=None):
    """Reduced DRCTs: gc 6 with 4 heads gives swin2/swin4 2 heads (the reference's head rule), img_size equal to the
    window a model without shifts (and without stored masks)."""
    cfg = dict(embed_dim=embed_dim, depths=[6] * len(num_heads), num_heads=list(num_heads), window_size=window_size,
               img_size=img_size, mlp_ratio=mlp_ratio, gc=gc, qkv_bias=qkv_bias, resi_connection=resi_connection,
               patch_norm=patch_norm)
    spec = {"arch": "drct", "scale": scale, "in_ch": in_ch, "out_ch": in_ch, **cfg}
    kwargs = dict(upscale=scale, in_chans=in_ch, upsampler="pixelshuffle", **cfg)
    tags = {f"s{img_size}w{window_size}", f"{embed_dim}dim", resi_connection}
    return Row(f"drct_x{scale}{'' if in_ch == 3 else '_gray'}{'' if img_size > window_size else '_noshift'}", spec,
               ("DRCT.DRCT", kwargs), "DRCT", DRCT_CROP, TRANSFORMER, frozenset(tags), exact_tags=True, seed=scale,
               check=check or _drct_pads_as_spandrel(spec))


ROWS += [
    drct(4),
    drct(3, embed_dim=12, num_heads=(2, 2), gc=4, window_size=4, img_size=16, mlp_ratio=1.5,
         resi_connection="identity", qkv_bias=False, patch_norm=False),
    drct(2, gc=8, img_size=8, in_ch=1, check=_released_layouts),
]
# ------------------------------------------------------------------------------------------------------- SRFormer


def srformer(scale, upsampler, tags, check=None, **cfg):
    """A reduced SRFormer (spandrel_extra_arches' class arguments in `cfg`, ours the same under jaxsr's names)."""
    kwargs = dict(upscale=scale, upsampler=upsampler, **cfg)
    spec = {"arch": "srformer", "scale": scale, "upsampler": upsampler,
            **{("in_ch" if k == "in_chans" else k): v for k, v in cfg.items()}}
    return Row(f"srformer_{upsampler.replace('+', '_')}_x{scale}", spec, ("SRFormer.SRFormer", kwargs), "SRFormer",
               TRANSFORMER_CROP, TRANSFORMER, frozenset(tags), exact_tags=True, seed=7, check=check)


ROWS += [
    srformer(4, "pixelshuffledirect", {"small", "s32w8", "12dim", "1conv"}, embed_dim=12, depths=[2, 2],
             num_heads=[2, 3], window_size=8, mlp_ratio=2.0, img_size=32, resi_connection="1conv"),
    srformer(3, "pixelshuffle", {"small", "s24w6", "16dim", "3conv"}, embed_dim=16, depths=[3], num_heads=[2],
             window_size=6, mlp_ratio=1.5, img_size=24, resi_connection="3conv"),  # odd ws/2: the key mask's rounding
    srformer(4, "nearest+conv", {"small", "s16w16", "8dim", "1conv"}, embed_dim=8, depths=[2], num_heads=[2],
             window_size=16, mlp_ratio=2.0, img_size=16, resi_connection="1conv",
             check=_released_layouts),  # img_size == window: no shifts (and no masks, which _released_layouts needs)
]
# ------------------------------------------------------------------------------------------------------- Swin2SR


def swin2sr(case, tags, **cfg):
    """A reduced Swin2SR given by spandrel's constructor arguments `cfg` (every field where its class defaults
    differ from our swin2sr_m)."""
    names = {"in_chans": "in_ch", "upscale": "scale"}
    spec = {"arch": "swin2sr", **{names.get(k, k): v for k, v in cfg.items()}}
    return Row(f"swin2sr_{case}", spec, ("Swin2SR.Swin2SR", cfg), "Swin2SR", TRANSFORMER_CROP, TRANSFORMER,
               frozenset(tags), exact_tags=True, seed=7)


ROWS += [
    swin2sr("x2_3conv", {"small", "s32w8", "16dim", "3conv"}, upscale=2, embed_dim=16, depths=[2, 2],
            num_heads=[2, 4], window_size=8, mlp_ratio=2.0, upsampler="pixelshuffle", resi_connection="3conv",
            img_size=32),
    swin2sr("aux_x4", {"small", "s16w4", "12dim", "1conv"}, upscale=4, embed_dim=12, depths=[2], num_heads=[3],
            window_size=4, mlp_ratio=2.0, upsampler="pixelshuffle_aux", resi_connection="1conv", img_size=16),
    # no stored masks (img_size = window: no shifts), as spandrel builds a file without them; no qkv bias/patch norm
    swin2sr("direct_x3", {"small", "s8w8", "16dim", "1conv"}, upscale=3, embed_dim=16, depths=[1, 2],
            num_heads=[2, 2], window_size=8, mlp_ratio=1.5, upsampler="pixelshuffledirect", resi_connection="1conv",
            img_size=8, qkv_bias=False, patch_norm=False),
]
# ------------------------------------------------------------------------------------------------------- RGT

# 38x45: no multiple of the windows, and RG-SA's two stride-4 reductions leave 2x2 keys (a 27x30 crop leaves one key,
# whose softmax is 1 whatever q and k are)
RGT_CROP = dict(name="astronaut", h=38, w=45, top=100, left=150)


def rgt(case, **cfg):
    """A reduced RGT given by spandrel's constructor arguments; spandrel 0.4.2 reports no tags for RGT."""
    names = {"in_chans": "in_ch", "upscale": "scale"}
    spec = {"arch": "rgt", **{names.get(k, k): v for k, v in cfg.items()}}
    return Row(f"rgt_{case}", spec, ("RGT.RGT", cfg), "RGT", RGT_CROP, TRANSFORMER, frozenset(), exact_tags=True, seed=7)


ROWS += [
    # embed 32: the position-bias MLP keeps a width (C/2/4/4 = 1); group 0 has no RG-SA block, so c_ratio is read
    # from group 1 (shifted windows there)
    rgt("x4", upscale=4, embed_dim=32, depth=[1, 2], num_heads=[4, 4], split_size=[4, 8], mlp_ratio=2.0, c_ratio=0.5),
    rgt("x3_3conv", upscale=3, embed_dim=16, depth=[3], num_heads=[4], split_size=[4, 4], mlp_ratio=1.5, c_ratio=0.25,
        qkv_bias=False, resi_connection="3conv"),  # block 2 shifted; RG-SA 4 channels, 1 per head
    rgt("x2_gray", upscale=2, in_chans=1, embed_dim=16, depth=[2], num_heads=[2], split_size=[8, 8], mlp_ratio=2.0,
        c_ratio=0.5),  # gray (no mean), square windows, no shifts
]

# ATD: the crops pad to at most the category_size spandrel gives (256; ATD-light 128), so that the category attention
# is one group, whatever order torch's unstable sort leaves equal categories in; tests/test_atd.py checks several
# groups (and the mirrored padding of the last) against the reference with a stable sort
def atd(case, crop, tags, **cfg):
    base = dict(embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=8, num_tokens=16, reducted_dim=4,
                convffn_kernel_size=5, mlp_ratio=2.0)
    kw = {**base, **cfg}
    spec = {"arch": "atd", "scale": kw["upscale"], "in_ch": kw.get("in_chans", 3),
            **{k: v for k, v in kw.items() if k not in ("upscale", "in_chans")}}
    spec["category_size"] = 128 if kw["upsampler"] == "pixelshuffledirect" and kw["embed_dim"] == 48 else 256
    return Row(f"atd_{case}", spec, ("ATD.ATD", {**kw, "category_size": spec["category_size"]}), "ATD",
               dict(name="astronaut", top=100, left=150, **crop), TRANSFORMER, frozenset(tags), exact_tags=True, seed=3)


ROWS += [
    atd("x4", dict(h=13, w=14), {"16dim", "8w", "256cat"}, upscale=4, upsampler="pixelshuffle"),  # 256 tokens
    atd("light_x2", dict(h=7, w=9), {"light", "48dim", "4w", "128cat"}, upscale=2, upsampler="pixelshuffledirect",
        embed_dim=48, depths=[2], num_heads=[3], window_size=4, convffn_kernel_size=7, mlp_ratio=1.0),  # 96 < 128
    atd("x3_3conv", dict(h=11, w=15), {"16dim", "4w", "256cat"}, upscale=3, upsampler="pixelshuffle", window_size=4,
        resi_connection="3conv", qkv_bias=False),  # 192 tokens: one group shorter than category_size
]
assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_parity_with_spandrel(tmp_path, row):
    check(row, tmp_path)
