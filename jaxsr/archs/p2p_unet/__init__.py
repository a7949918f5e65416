"""pix2pix's U-Net generator: junyanz's nested `UnetSkipConnectionBlock` keys (`model.model.1.model.3...`) in and out,
plain state dicts as `latest_net_G.pth` is, traiNNer's `upsample_mode='upconv'` included.

From the keys: num_downs from the nesting depth, ngf and in_ch from the outermost down conv, out_ch and the upsampling
from the outermost up conv (a ConvTranspose2d weight, or traiNNer's [Upsample, conv] pair), the norm from BatchNorm
weights or the down convs' biases (pix2pix.norm_from_keys). Dropout has no tensors, so the keys cannot show it: a file
reads as use_dropout=True, pix2pix's default (it only acts under model.train()); give use_dropout=False in the spec for
a model trained with --no_dropout. Old InstanceNorm files (running statistics) load as junyanz's loader patches them.
"""
from jaxsr.archs.bridge import Arch
from jaxsr.archs.pix2pix import drop_instance_stats, norm_from_keys
from jaxsr.errors import WeightsError

from .model import DEFAULTS, UnetGenerator, build


def detect(sd):
    return "model.model.0.weight" in sd and any(k.startswith("model.model.1.model.") for k in sd)


def _blocks(sd):
    """The prefixes of the blocks inside the outermost one, from the outside in."""
    out, b = [], "model.model.1"
    while any(k.startswith(f"{b}.model.") for k in sd):
        out.append(b)
        b = f"{b}.model.3"
    return out


def infer_spec(sd):
    sd = drop_instance_stats(sd)
    inner = _blocks(sd)
    first = sd["model.model.0.weight"]
    ngf = int(first.shape[0])
    if len(inner) < 4 or f"{inner[-1]}.model.1.weight" not in sd or tuple(first.shape[2:]) != (4, 4):
        raise WeightsError(f"unsupported U-Net generator: {len(inner) + 1} levels; jaxsr loads junyanz's UnetGenerator "
                           "layout (at least five nested UnetSkipConnectionBlocks of 4x4 stride-2 convs)")
    if tuple(sd[f"{inner[-1]}.model.1.weight"].shape[:2]) != (8 * ngf, 8 * ngf):
        raise WeightsError(f"unsupported U-Net generator: widths other than the reference's ngf, 2ngf, 4ngf, 8ngf... "
                           f"(ngf {ngf})")
    if "model.model.3.weight" in sd:
        mode, out_ch = "deconv", int(sd["model.model.3.weight"].shape[1])  # ConvTranspose2d: (in, out, k, k)
    elif "model.model.3.1.weight" in sd:
        mode, out_ch = "upconv", int(sd["model.model.3.1.weight"].shape[0])
    else:
        raise WeightsError("unsupported U-Net generator: no up conv at model.model.3 (ConvTranspose2d) or model.model.3.1 "
                           "(traiNNer's upconv)")
    norm = norm_from_keys(sd, [f"{b}.model.2" for b in inner[:-1]], [f"{b}.model.1" for b in inner])
    return {"arch": "p2p_unet", "scale": 1, "in_ch": int(first.shape[1]), "out_ch": out_ch, "ngf": ngf,
            "num_downs": len(inner) + 1, "norm": norm, "use_dropout": DEFAULTS["use_dropout"], "upsample_mode": mode}


SPANDREL_GAPS = (
    (lambda s: True,
     lambda s: "spandrel/chaiNNer have no pix2pix/CycleGAN architecture and will not load this export; jaxsr and "
               + ("traiNNer's UnetGenerator (upsample_mode='upconv')" if s["upsample_mode"] == "upconv"
                  else "junyanz's UnetGenerator (models/networks.py)") + " (strict) do"),
)

ARCH = Arch(
    name="p2p_unet",
    what="a pix2pix U-Net generator (UnetGenerator)",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=drop_instance_stats,
    scales=(1,),
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "UnetGenerator", "build"]
