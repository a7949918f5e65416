"""White-box Cartoonization's image representations that a `wbc` kind trains on, as victorca25/traiNNer's WBCModel
computes them (codes/models/wbc_model.py with dataops/filters.py and dataops/colors.py), on NHWC [-1, 1] batches:

- surface: the guided filter of an image with itself as guide, r=5, eps=2e-1 (the port's GuidedFilter pads by
  reflection; the original's TF code averages over the pixels inside the image: `border='valid'`);
- texture: a random grayscale (colour shift), one draw of (r, g, b) weights for the output and the cartoon of a step.
  'uniform' draws r ~ U(0.199, 0.399), g ~ U(0.487, 0.687), b ~ U(0.014, 0.214), the original's ranges too (it names
  them in BGR order); 'normal' draws N(0.299, 0.1), N(0.587, 0.1), N(0.114, 0.1). With `y=True` the draws are U(-1, 1)
  (or N(0, 1)) and the result is mixed with the luma 0.2989 r + 0.587 g + 0.114 b: (1 - alpha) shift + alpha luma.

- structure (host, numpy): the original's `simple_superpixel` target: skimage's SLIC (sigma 1, compactness 10, Lab)
  on the generator's output, each segment painted by the original's adaptive colouring ('mix': the segment's mean
  where the standard deviation of its values is under 20, the mean of mean and median from 20 to 40, the median
  above; the thresholds are in the image's own units, so on [-1, 1] images, as the original feeds them, every
  segment takes its mean). Where the original differs: its `std > 40` branch calls ndarray.median and raises, and a
  std of exactly 20 or 40 reuses the previous segment's colour; here they take the median and the mix. The port's
  default (felzenszwalb + selective-search reduction + a random gamma) is not built.

Not here (see docs/wbc.md): the losses and the kind itself.
"""
import jax
import jax.numpy as jnp
import numpy as np
from skimage import segmentation

from jaxsr.guided_filter import guided_filter

SURFACE = (5, 2e-1)  # (r, eps) of the surface representation's guided filter
_RANGES = {  # (mode, y) -> per channel (r, g, b): (low, high) for 'uniform', (mean, std) for 'normal'
    ("uniform", False): ((0.199, 0.399), (0.487, 0.687), (0.014, 0.214)),
    ("normal", False): ((0.299, 0.1), (0.587, 0.1), (0.114, 0.1)),
    ("uniform", True): ((-1.0, 1.0),) * 3,
    ("normal", True): ((0.0, 1.0),) * 3,
}


def surface(x, border="reflect"):
    """The surface representation: x guided-filtered with itself as guide (r=5, eps=2e-1)."""
    return guided_filter(x, x, *SURFACE, border=border)


def colorshift_weights(key, mode="uniform", y=False):
    """One draw of the colour shift's (r, g, b) weights, float32 (3,)."""
    if (mode, y) not in _RANGES:
        raise ValueError(f"colour shift mode: 'uniform' or 'normal', not {mode!r}")
    a, b = (jnp.asarray(v, jnp.float32) for v in zip(*_RANGES[mode, y]))
    if mode == "uniform":
        return jax.random.uniform(key, (3,), jnp.float32, a, b)
    return a + b * jax.random.normal(key, (3,), jnp.float32)


def color_shift(x, weights, y=False, alpha=0.8):
    """The texture representation of NHWC RGB `x`: (w_r r + w_g g + w_b b) / (w_r + w_g + w_b), one channel; with
    `y`, mixed with the luma as (1 - alpha) * that + alpha * luma."""
    r, g, b = x[..., 0:1], x[..., 1:2], x[..., 2:3]
    out = (weights[0] * r + weights[1] * g + weights[2] * b) / jnp.sum(weights)
    if y:
        out = (1 - alpha) * out + alpha * (0.2989 * r + 0.587 * g + 0.114 * b)
    return out


def adaptive_colour(labels, image):
    """The original's label2rgb(kind='mix'): HxW integer labels, HxWxC image -> each segment painted one colour."""
    out = np.zeros_like(image)
    flat, img = labels.reshape(-1), image.reshape(-1, image.shape[-1])
    order = np.argsort(flat, kind="stable")
    bounds = np.flatnonzero(np.diff(flat[order])) + 1
    res = out.reshape(-1, image.shape[-1])
    for idx in np.split(order, bounds):
        px = img[idx]
        std = np.std(px)
        if std < 20:
            colour = px.mean(axis=0)
        elif std <= 40:
            colour = 0.5 * px.mean(axis=0) + 0.5 * np.median(px, axis=0)
        else:
            colour = np.median(px, axis=0)
        res[idx] = colour
    return out


def superpixel_target(images, n_segments=200):
    """The structure representation's target for an NHWC float batch (host numpy): SLIC segments of each image painted
    by `adaptive_colour`, as the original's simple_superpixel."""
    images = np.asarray(images, np.float32)
    return np.stack([adaptive_colour(segmentation.slic(im, n_segments=n_segments, sigma=1, compactness=10,
                                                       convert2lab=True), im) for im in images])
