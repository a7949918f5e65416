"""CycleGAN's ResNet generator: junyanz's `ResnetGenerator` keys (`model.N`, blocks `model.N.conv_block.M`) in and out,
plain state dicts as `latest_net_G_A.pth` / `latest_net_G.pth` are, traiNNer's `upsample_mode='upconv'` included.

From the keys: ngf and in_ch from the first 7x7 conv, n_blocks from the `conv_block` entries, out_ch from the last conv,
the upsampling from the first one after the blocks (a ConvTranspose2d weight, or traiNNer's [Upsample, conv] pair),
the norm from BatchNorm weights or the biases of the convs (pix2pix.norm_from_keys), and dropout and padding from where
a block's second conv sits (dropout shifts it by one; 'zero' padding has no pad modules). The keys cannot tell
'reflect' from 'replicate' padding (both a parameter-free pad module): a file reads as 'reflect', the reference's
default; give padding_type='replicate' in the spec for the other. Old InstanceNorm files (running statistics) load as
junyanz's loader patches them (pix2pix.drop_instance_stats).
"""
import re

from jaxsr.archs.bridge import Arch
from jaxsr.archs.pix2pix import drop_instance_stats, norm_from_keys
from jaxsr.errors import WeightsError

from .model import DEFAULTS, ResnetGenerator, build

_BLOCK = re.compile(r"model\.(\d+)\.conv_block\.(\d+)\.weight")
# where a block's two convs sit: (pad modules?, dropout?) -> padding, use_dropout
_BLOCK_CONVS = {(1, 5): ("reflect", False), (1, 6): ("reflect", True), (0, 3): ("zero", False), (0, 4): ("zero", True)}


def detect(sd):
    return "model.1.weight" in sd and any(_BLOCK.fullmatch(k) for k in sd)


def infer_spec(sd):
    sd = drop_instance_stats(sd)
    first = sd["model.1.weight"]
    ngf, blocks = int(first.shape[0]), {}
    for k in sd:
        if (m := _BLOCK.fullmatch(k)) and sd[k].ndim == 4:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    nb = len(blocks)
    u = 10 + nb
    if sorted(blocks) != list(range(10, u)) or tuple(first.shape[2:]) != (7, 7):
        raise WeightsError(f"unsupported ResnetGenerator: blocks at model.{sorted(blocks)}; jaxsr loads junyanz's layout "
                           "(pad, 7x7 conv, norm, ReLU, two stride-2 convs, then the blocks from model.10)")
    convs = {tuple(sorted(c)) for c in blocks.values()}
    if len(convs) != 1 or (convs := convs.pop()) not in _BLOCK_CONVS:
        raise WeightsError(f"unsupported ResnetGenerator blocks: convs at conv_block.{convs}; jaxsr loads the reference's "
                           "[pad, conv, norm, ReLU, (Dropout), pad, conv, norm] (reflect/replicate/zero padding)")
    padding, use_dropout = _BLOCK_CONVS[convs]
    if f"model.{u}.weight" in sd:
        mode = "deconv"
    elif f"model.{u}.1.weight" in sd:
        mode = "upconv"
    else:
        raise WeightsError(f"unsupported ResnetGenerator: no upsampling conv at model.{u} (a ConvTranspose2d) or "
                           f"model.{u}.1 (traiNNer's upconv)")
    if int(sd[f"model.{u + 7}.weight"].shape[1]) != ngf or int(sd["model.7.weight"].shape[0]) != 4 * ngf:
        raise WeightsError(f"unsupported ResnetGenerator: widths other than the reference's ngf, 2ngf, 4ngf (ngf {ngf})")
    norm = norm_from_keys(sd, ("model.2", "model.5", "model.8"), ("model.1", "model.4", "model.7"))
    return {"arch": "p2p_resnet", "scale": 1, "in_ch": int(first.shape[1]), "out_ch": int(sd[f"model.{u + 7}.weight"].shape[0]),
            "ngf": ngf, "n_blocks": nb, "norm": norm, "use_dropout": use_dropout, "padding_type": padding,
            "upsample_mode": mode}


SPANDREL_GAPS = (
    (lambda s: True,
     lambda s: "spandrel/chaiNNer have no pix2pix/CycleGAN architecture and will not load this export; jaxsr and "
               + ("traiNNer's ResnetGenerator (upsample_mode='upconv')" if s["upsample_mode"] == "upconv"
                  else "junyanz's ResnetGenerator (models/networks.py)") + " (strict) do"),
)

ARCH = Arch(
    name="p2p_resnet",
    what="a pix2pix/CycleGAN ResNet generator (ResnetGenerator)",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=drop_instance_stats,
    scales=(1,),
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "ResnetGenerator", "build"]
