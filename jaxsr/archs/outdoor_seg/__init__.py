"""OutdoorSceneSeg (SFTGAN's segmentation network, OutdoorSceneSeg_bic.pth / segmentation_OST_bic.pth): a plain state
dict in and out, record kind 'segmenter' (not a generator: the upscaling paths, ONNX export and the trainer's
generator and discriminator choices skip it; `weights.read(file, kind="segmenter")` and `jaxsr.segment` load it).

Every width and depth comes from the keys: the stem convs (`feature.0/3/6`), the Res131 blocks (`feature.N.res.*`,
N from 10; a block with `proj` starts a stage, and there are four), the head conv after them and the classifier
four entries later, whose outputs are the classes. The stages' strides and dilations (1, 2, 1, 1 / 1, 1, 2, 4) are
the reference's and leave no trace in the keys.
"""
import re

import numpy as np

from jaxsr.archs.bridge import Arch
from jaxsr.errors import WeightsError

from .model import BGR_MEAN, DEFAULTS, STAGES, OutdoorSceneSeg, build

_BLOCK = re.compile(r"feature\.(\d+)\.res\.0\.weight")
FIRST_BLOCK = 10  # after the stem's three conv-BN-ReLU and the max-pool


def detect(sd):
    keys = {"feature.0.weight", "feature.1.running_mean", "deconv.weight"}
    return keys <= set(sd) and any(_BLOCK.fullmatch(k) for k in sd)


def infer_spec(sd):
    idx = sorted(int(m[1]) for k in sd if (m := _BLOCK.fullmatch(k)))
    starts = [i for i in idx if f"feature.{i}.proj.0.weight" in sd]
    if idx != list(range(FIRST_BLOCK, FIRST_BLOCK + len(idx))) or len(starts) != len(STAGES) or starts[0] != FIRST_BLOCK:
        raise WeightsError(f"unsupported OutdoorSceneSeg variant: Res131 blocks at feature.{idx[0]}..{idx[-1]} with "
                           f"{len(starts)} projections; jaxsr loads SFTGAN's layout (blocks from feature.{FIRST_BLOCK}, "
                           f"{len(STAGES)} stages, each opened by a block with `proj`)")
    ends = starts[1:] + [idx[-1] + 1]
    head = idx[-1] + 1
    return {"arch": "outdoor_seg", "in_ch": int(sd["feature.0.weight"].shape[1]),
            "stem": [int(sd[f"feature.{i}.weight"].shape[0]) for i in (0, 3, 6)],
            "blocks": [e - s for s, e in zip(starts, ends)],
            "mid": [int(sd[f"feature.{s}.res.0.weight"].shape[0]) for s in starts],
            "out": [int(sd[f"feature.{s}.res.6.weight"].shape[0]) for s in starts],
            "head": int(sd[f"feature.{head}.weight"].shape[0]),
            "num_classes": int(sd[f"feature.{head + 4}.weight"].shape[0])}


def with_bn_counters(sd):
    """The state dict with BatchNorm's `num_batches_tracked` (0) where it lacks it: files saved before PyTorch 0.4.1, as
    SFTGAN's 2018 releases are, have none, and torch's own load of them counts from 0 too."""
    out = dict(sd)
    for k in sd:
        if k.endswith(".running_mean"):
            out.setdefault(k[: -len("running_mean")] + "num_batches_tracked", np.zeros((), np.int64))
    return out


SPANDREL_GAPS = (
    (lambda s: True,
     "OutdoorSceneSeg (SFTGAN's segmentation network): spandrel/chaiNNer do not know it and will not load the export; "
     "SFTGAN's test_segmentation.py and traiNNer's test_seg.py load it"),
)

ARCH = Arch(name="outdoor_seg", what="an OutdoorSceneSeg segmentation model (SFTGAN)", build=build, detect=detect,
            infer_spec=infer_spec, from_torch=with_bn_counters, pth_wrapper=None, kind="segmenter", defaults=DEFAULTS,
            spandrel_gaps=SPANDREL_GAPS)

__all__ = ["ARCH", "BGR_MEAN", "DEFAULTS", "OutdoorSceneSeg", "build", "with_bn_counters"]
