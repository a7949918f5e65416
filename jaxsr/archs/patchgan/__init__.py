"""pix2pix's PatchGAN discriminators: junyanz's `NLayerDiscriminator` (`model.N` keys) and `PixelDiscriminator`
(`net.N`), plain state dicts (`latest_net_D.pth`, `latest_net_D_A.pth`) both ways.

From the keys: net from the prefix, in_ch and ndf from the first conv, n_layers from the number of convs (n_layers + 2),
the norm from BatchNorm weights or the biases of the convs before the norms (pix2pix.norm_from_keys). traiNNer's port
gives its convs no bias under InstanceNorm either, so its instance-norm files have the keys of junyanz's norm 'none'
and read as that: give norm='instance' in the spec (weights.read(...).build(spec={..., 'norm': 'instance'})) for them.
Old InstanceNorm files (running statistics) load as junyanz's loader patches them. FreezeD: the conv stack is one
top-level module (`model` / `net`), the one block `block_of` names.
"""
import re

from jaxsr.archs.bridge import Arch
from jaxsr.archs.pix2pix import drop_instance_stats, norm_from_keys
from jaxsr.errors import WeightsError

from .model import DEFAULTS, NLayerDiscriminator, PixelDiscriminator, build


def _only(sd, prefix):
    pat = re.compile(prefix + r"\.\d+\.(weight|bias|running_mean|running_var|num_batches_tracked)")
    return bool(sd) and all(pat.fullmatch(k) for k in sd)


def _convs(sd, prefix):
    return sorted(int(k.split(".")[1]) for k in sd if k.startswith(prefix + ".") and k.endswith(".weight") and sd[k].ndim == 4)


def detect(sd):
    if _only(sd, "model") and "model.0.weight" in sd:
        return tuple(sd["model.0.weight"].shape[2:]) == (4, 4) and len(_convs(sd, "model")) >= 3
    return _only(sd, "net") and "net.0.weight" in sd and tuple(sd["net.0.weight"].shape[2:]) == (1, 1)


def _refuse(what, got):
    raise WeightsError(f"unsupported {what}: {got}; jaxsr loads junyanz's networks.py layout (netD basic, n_layers, pixel)")


def infer_spec(sd):
    sd = drop_instance_stats(sd)
    if "net.0.weight" in sd:
        convs = _convs(sd, "net")
        ndf = int(sd["net.0.weight"].shape[0])
        if convs != [0, 2, 5] or int(sd["net.2.weight"].shape[0]) != 2 * ndf:
            _refuse("PixelDiscriminator", f"convs at net.{convs}")
        return {"arch": "patchgan", "net": "pixel", "in_ch": int(sd["net.0.weight"].shape[1]), "ndf": ndf,
                "n_layers": DEFAULTS["n_layers"], "norm": norm_from_keys(sd, ["net.3"], ["net.2"])}
    convs = _convs(sd, "model")
    n = len(convs) - 2
    ndf = int(sd["model.0.weight"].shape[0])
    mids = [2 + 3 * j for j in range(n)]
    if convs != [0, *mids, 2 + 3 * n]:
        _refuse("NLayerDiscriminator", f"convs at model.{convs}")
    widths = [int(sd[f"model.{i}.weight"].shape[0]) for i in mids]
    if widths != [ndf * min(2**j, 8) for j in range(1, n + 1)]:
        _refuse("NLayerDiscriminator", f"widths {[ndf, *widths]} (the reference's: ndf * min(2^n, 8))")
    return {"arch": "patchgan", "net": "n_layers", "in_ch": int(sd["model.0.weight"].shape[1]), "ndf": ndf,
            "n_layers": n, "norm": norm_from_keys(sd, [f"model.{i + 1}" for i in mids], [f"model.{i}" for i in mids])}


def block_of(name):
    """The conv stack (`model`, or the pixel one's `net`) is block 0."""
    return 0 if name in ("model", "net") else None


ARCH = Arch(name="patchgan", what="a pix2pix PatchGAN discriminator (NLayerDiscriminator / PixelDiscriminator)",
            build=build, detect=detect, infer_spec=infer_spec, from_torch=drop_instance_stats, pth_wrapper=None,
            kind="discriminator", defaults=DEFAULTS, block_of=block_of,
            spandrel_gaps=((lambda s: True, "spandrel/chaiNNer have no pix2pix/CycleGAN architecture and will not load "
                                            "this export; jaxsr and junyanz's networks.py (strict) do"),))

__all__ = ["ARCH", "DEFAULTS", "NLayerDiscriminator", "PixelDiscriminator", "block_of", "build"]
