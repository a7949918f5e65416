"""Per-sample training transforms on host numpy arrays: padding, aligned random crop, flips and rot90.

Randomness comes only from the `rng` grain passes to `random_map` (derived from the seed and the record
index), so a sample is the same whatever the worker count and after a resume.
"""
import grain
import numpy as np

from jaxsr.imageio import to_float

from .sources import to_rgb


def augment(imgs, rng, hflip, rot):
    """The same random horizontal flip and rot90 (k in 0..3) on every array of `imgs` (HWC); returns views."""
    flip = rng.random() < 0.5
    k = int(rng.integers(4))
    out = []
    for x in imgs:
        if hflip and flip:
            x = x[:, ::-1]
        if rot and k:
            x = np.rot90(x, k)
        out.append(x)
    return out


class RandomCrop(grain.transforms.RandomMap):
    """dict(gt[, lq]) whole images as stored -> dict(gt=(gt_size, gt_size, 3)[, lq=(gt_size/scale, ...)]) float32
    RGB crops (alpha 'drop' or 'composite' as in sources.to_rgb).

    Paired crops are drawn on the LR grid and mapped to HR by `scale`, so LR and HR stay aligned. The
    images must already be at least crop-sized (the source pads or skips small ones).
    """

    def __init__(self, gt_size, scale, hflip=True, rot=True, alpha="drop"):
        self.gt_size, self.scale, self.hflip, self.rot = int(gt_size), int(scale), hflip, rot
        self.alpha = alpha

    def random_map(self, element, rng):
        gt, lq = element["gt"], element.get("lq")
        if lq is None:
            size, s, grid = self.gt_size, 1, gt
        else:
            size, s, grid = self.gt_size // self.scale, self.scale, lq
        top = int(rng.integers(grid.shape[0] - size + 1))
        left = int(rng.integers(grid.shape[1] - size + 1))
        crops = [gt[top * s:(top + size) * s, left * s:(left + size) * s]]
        if lq is not None:
            crops.append(lq[top:top + size, left:left + size])
        crops = augment(crops, rng, self.hflip, self.rot)  # views; to_float makes the one contiguous copy
        return dict(zip(("gt", "lq"), (to_rgb(to_float(c), self.alpha) for c in crops)))
