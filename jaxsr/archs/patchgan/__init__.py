"""pix2pix's PatchGAN discriminators: junyanz's `NLayerDiscriminator` (`model.N` keys) and `PixelDiscriminator`
(`net.N`), plain state dicts (`latest_net_D.pth`, `latest_net_D_A.pth`) both ways.

From the keys: net from the prefix, in_ch and ndf from the first conv, n_layers from the number of convs (n_layers + 2),
the norm from BatchNorm weights or the biases of the convs before the norms (pix2pix.norm_from_keys). traiNNer's port
gives its convs no bias under InstanceNorm either, so its instance-norm files have the keys of junyanz's norm 'none'
and read as that: give norm='instance' in the spec (weights.read(...).build(spec={..., 'norm': 'instance'})) for them.
Old InstanceNorm files (running statistics) load as junyanz's loader patches them. FreezeD: the conv stack is one
top-level module (`model` / `net`), the one block `block_of` names.

traiNNer's spectral-norm NLayerDiscriminator (WBC's D_S / D_T, `latest_D_S.pth`): every conv's `weight_orig`,
`weight_u`, `weight_v` (and the first and last conv's bias) in the same `model.N` slots, read as spectral_norm=True,
norm 'none', widths and depth from the keys like the plain one; exported in that layout (the port's module loads it
strictly). Its get_feats layout (`model0.`, `model1.`, ...) is not read.
"""
import re

from jaxsr.archs.bridge import Arch
from jaxsr.archs.pix2pix import drop_instance_stats, norm_from_keys
from jaxsr.errors import WeightsError

from .model import DEFAULTS, NLayerDiscriminator, PixelDiscriminator, build


def _only(sd, prefix):
    pat = re.compile(prefix + r"\.\d+\.(weight|weight_orig|weight_u|weight_v|bias|running_mean|running_var|num_batches_tracked)")
    return bool(sd) and all(pat.fullmatch(k) for k in sd)


def _convs(sd, prefix):
    return sorted(int(k.split(".")[1]) for k in sd
                  if k.startswith(prefix + ".") and k.endswith((".weight", ".weight_orig")) and sd[k].ndim == 4)


def _weight(sd, prefix):
    return sd[f"{prefix}.weight"] if f"{prefix}.weight" in sd else sd[f"{prefix}.weight_orig"]


def detect(sd):
    if _only(sd, "model") and ("model.0.weight" in sd or "model.0.weight_orig" in sd):
        return tuple(_weight(sd, "model.0").shape[2:]) == (4, 4) and len(_convs(sd, "model")) >= 3
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
    ndf = int(_weight(sd, "model.0").shape[0])
    mids = [2 + 3 * j for j in range(n)]
    if convs != [0, *mids, 2 + 3 * n]:
        _refuse("NLayerDiscriminator", f"convs at model.{convs}")
    widths = [int(_weight(sd, f"model.{i}").shape[0]) for i in mids]
    if widths != [ndf * min(2**j, 8) for j in range(1, n + 1)]:
        _refuse("NLayerDiscriminator", f"widths {[ndf, *widths]} (the reference's: ndf * min(2^n, 8))")
    sn = [f"model.{i}.weight_orig" in sd for i in convs]
    spec = {"arch": "patchgan", "net": "n_layers", "in_ch": int(_weight(sd, "model.0").shape[1]), "ndf": ndf,
            "n_layers": n, "norm": norm_from_keys(sd, [f"model.{i + 1}" for i in mids], [f"model.{i}" for i in mids])}
    if all(sn):
        spec["spectral_norm"] = True  # plain files keep the spec they always had (the default, False)
    if any(sn) and not (all(sn) and spec["norm"] == "none"):
        raise WeightsError("unsupported spectral-norm NLayerDiscriminator: spectral norm on some convs only, or with "
                           "norm layers or middle-conv biases; jaxsr reads traiNNer's (use_spectral_norm=True: every "
                           "conv, no norm, biases on the first and last conv only)")
    return spec


def block_of(name):
    """The conv stack (`model`, or the pixel one's `net`) is block 0."""
    return 0 if name in ("model", "net") else None


ARCH = Arch(name="patchgan", what="a pix2pix PatchGAN discriminator (NLayerDiscriminator / PixelDiscriminator)",
            build=build, detect=detect, infer_spec=infer_spec, from_torch=drop_instance_stats, pth_wrapper=None,
            kind="discriminator", defaults=DEFAULTS, block_of=block_of,
            spandrel_gaps=((lambda s: True, lambda s: "spandrel/chaiNNer have no pix2pix/CycleGAN architecture and will "
                            "not load this export; jaxsr and " + ("traiNNer's NLayerDiscriminator(use_spectral_norm=True)"
                                                                 if s["spectral_norm"] else "junyanz's networks.py")
                            + " (strict) do"),))

__all__ = ["ARCH", "DEFAULTS", "NLayerDiscriminator", "PixelDiscriminator", "block_of", "build"]
