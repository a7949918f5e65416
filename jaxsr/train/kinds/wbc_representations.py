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
- structure (device, jax.numpy): `superpixel_target_device`, the same target from a SLIC rebuilt on the device (no
  host round trip, jit-able, batched); where it differs from skimage's, see the notes above `SlicGrid`.

Not here (see docs/wbc.md): the losses and the kind itself.
"""
from typing import NamedTuple

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


# ---------------------------------------------------------------------------------------------------------------------
# The structure target on the device: skimage's SLIC (0.26, slic_superpixels.py + _slic.pyx) rebuilt in jax.numpy.
#
# skimage's steps, each reproduced: the image is rescaled to [0, 1] by its own min and max (all channels together);
# converted to Lab (sRGB gamma, its xyz_from_rgb matrix, D65 / 2-degree white 0.95047, 1, 1.08883); smoothed AFTER the
# conversion by scipy's gaussian_filter (sigma 1 on y then x, truncate 4: radius 4, mode 'reflect' = half-sample
# symmetric, each pass rounded to float32); multiplied by 1 / compactness; centres seeded on regular_grid((1, H, W),
# n_segments) with colour 0 (so the first assignment is purely spatial); then max_num_iter rounds of "assign each pixel
# to the centre of least (dy^2 + dx^2) / step^2 + |colour - centre colour|^2 among the centres whose window
# [int(max(c - 2 step_axis, 0)), int(min(c + 2 step_axis + 1, size))) holds it, the lowest index on ties; a pixel in no
# window keeps its label" and "move each centre to its pixels' mean" (a centre left with no pixel drops out for good,
# as skimage's 0/0 NaN centre does). skimage's "stop when nothing changed" never fires (it resets the distances every
# round), so the rounds are always max_num_iter.
#
# Where it differs: (1) the candidate centres of a pixel are those of the (2R+1)^2 grid cells around its own (R = 2
# at the usual steps; the usual GPU formulation takes 3x3), then skimage's window test: the same set as skimage's
# whenever no centre has drifted more than about step / 2 from its seed towards the pixel; (2) no connectivity
# enforcement (skimage's enforce_connectivity relabels components in raster order and merges those under half the
# mean segment size into a neighbour: a sequential pass), so a segment may come in pieces; (3) float32 sums in
# another order (skimage adds pixel by pixel in raster order; scipy filters in float64), so near-ties may go the other
# way. The sums are per grid cell and per candidate slot, then shifted onto the centres: a scatter-add on the CPU, a
# one-hot product per cell elsewhere (no atomics: deterministic on every backend). tests/test_wbc_superpixel.py
# measures the agreement.
# ---------------------------------------------------------------------------------------------------------------------
_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_D65 = (0.95047, 1.0, 1.08883)


class SlicGrid(NamedTuple):
    """skimage's seed grid on an H x W image: centres at start + i * step per axis (y then x), k = iy * nx + ix."""
    start_y: int
    step_y: int
    ny: int
    start_x: int
    step_x: int
    nx: int
    step: float  # skimage's max(steps): the spatial scale of the distance


def slic_grid(h, w, n_segments):
    """regular_grid((1, h, w), n_segments) as skimage's slic seeds it: the depth axis takes step 1, the others
    sqrt(h w / n) (or, when the shorter side cannot hold that, its full length and the longer side length / n);
    starts floor(step / 2), steps rounded half to even."""
    if h * w <= n_segments:
        sy = sx = (0, 1)
    else:
        t = (float(h * w) / n_segments) ** 0.5
        short, long_ = sorted((h, w))
        steps = (t, t) if short >= t else (float(short), long_ / n_segments)
        by_len = steps if h <= w else steps[::-1]  # steps[0] belongs to the shorter side
        sy, sx = ((int(s // 2), int(round(s))) for s in by_len)
    ny, nx = len(range(sy[0], h, sy[1])), len(range(sx[0], w, sx[1]))
    return SlicGrid(sy[0], sy[1], ny, sx[0], sx[1], nx, float(max(1, sy[1], sx[1])))


def _div(x, c):
    """x / c rounded as numpy rounds it: XLA turns a division by a constant into a product with its reciprocal (1 ulp
    off, which the 2.4 power of the sRGB gamma makes 5)."""
    return x / jax.lax.optimization_barrier(jnp.full(x.shape, c, jnp.float32))


def rgb2lab(rgb):
    """skimage.color.rgb2lab (D65, 2-degree observer) in float32 of RGB in [0, 1] on the last axis."""
    rgb = jnp.asarray(rgb, jnp.float32)
    lin = jnp.where(rgb > 0.04045, _div(rgb + 0.055, 1.055) ** 2.4, _div(rgb, 12.92))
    r, g, b = lin[..., 0], lin[..., 1], lin[..., 2]
    x, y, z = ((m[0] * r + m[1] * g) + m[2] * b for m in _XYZ_FROM_RGB)
    xyz = (_div(x, _D65[0]), y, _div(z, _D65[2]))  # y / 1.0 is y
    f = [jnp.where(v > 0.008856, jnp.cbrt(v), 7.787 * v + 16.0 / 116.0) for v in xyz]
    return jnp.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])], axis=-1)


def gaussian_reflect(x, sigma=1.0, truncate=4.0):
    """scipy.ndimage.gaussian_filter of HxWxC `x` over H then W (not C), mode 'reflect', as slic smooths: float32
    passes (scipy accumulates each pass in float64)."""
    radius = int(truncate * sigma + 0.5)
    taps = np.exp(-0.5 * np.arange(-radius, radius + 1) ** 2 / sigma**2)
    taps = (taps / taps.sum()).astype(np.float32)
    for axis in (0, 1):
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        xp = jnp.pad(x, pad, mode="symmetric")
        out = taps[0] * jax.lax.slice_in_dim(xp, 0, n, axis=axis)
        for i in range(1, 2 * radius + 1):
            out = out + taps[i] * jax.lax.slice_in_dim(xp, i, i + n, axis=axis)
        x = out
    return x


def _cells(size, start, step, n):
    """The grid cells along one axis: cell i holds the pixels from start + i step - step // 2 (0 for the first) to the
    next cell's first. (rows (n, B) padded with 0, valid (n, B), cell of each pixel, offset in its cell, R)."""
    edges = [0] + [start + i * step - step // 2 for i in range(1, n)] + [size]
    width = max(b - a for a, b in zip(edges[:-1], edges[1:]))
    rows, valid = np.zeros((n, width), np.int32), np.zeros((n, width), bool)
    cell, offset = np.zeros(size, np.int32), np.zeros(size, np.int32)
    for i in range(n):
        span = np.arange(edges[i], edges[i + 1])
        rows[i, :len(span)], valid[i, :len(span)] = span, True
        cell[span], offset[span] = i, np.arange(len(span))
    # R: a pixel is at most `far` from its cell's seed; a window holds pixels less than 2 step + 1 from its centre,
    # so the seeds R + 1 cells away are out of every pixel's reach until they drift
    far = max(max(abs(y - (start + i * step)) for y in range(edges[i], edges[i + 1])) for i in range(n))
    reach = 2
    while (reach + 1) * step - far < 2 * step + 1:
        reach += 1
    return rows, valid, cell, offset, reach


def _scatter_sums():
    """Scatter-adds run in order on the CPU (deterministic, and the fastest there) but atomically on accelerators (the
    float sums' order, and so near-tie labels, would vary from run to run): there, one-hot products per cell."""
    return jax.default_backend() == "cpu"


def _slic_slots(image, n_segments, compactness, max_num_iter):
    """SLIC of one HxWx3 [-1, 1] image laid out per grid cell: (grid, cell layouts, slot of each pixel among its
    cell's candidate centres, the candidates' centre indices (-1: none)); see the notes above."""
    h, w, _ = image.shape
    grid = slic_grid(h, w, n_segments)
    ry, vy, cy_of, oy_of, rey = _cells(h, grid.start_y, grid.step_y, grid.ny)
    rx, vx, cx_of, ox_of, rex = _cells(w, grid.start_x, grid.step_x, grid.nx)
    ny, nx = grid.ny, grid.nx
    offs = [(dy, dx) for dy in range(2 * rey + 1) for dx in range(2 * rex + 1)]  # raster order: ascending centre index
    k_pad = np.full((ny + 2 * rey, nx + 2 * rex), -1, np.int32)
    k_pad[rey:rey + ny, rex:rex + nx] = np.arange(ny * nx).reshape(ny, nx)
    cand = np.stack([k_pad[dy:dy + ny, dx:dx + nx] for dy, dx in offs], -1)  # (ny, nx, C)

    x = image.astype(jnp.float32)
    lo, hi = jnp.min(x), jnp.max(x)
    x = x - lo
    x = jnp.where(hi != lo, x / jnp.where(hi != lo, hi - lo, 1.0), x)
    feat = gaussian_reflect(rgb2lab(x)) * (1.0 / compactness)

    def blocked(a):  # (H, W, ...) -> (ny, nx, By, Bx, ...)
        return a[ry][:, :, rx].transpose(0, 2, 1, 3, *range(4, a.ndim + 2))

    valid = jnp.asarray(vy[:, None, :, None] & vx[None, :, None, :])  # (ny, nx, By, Bx)
    yy = jnp.asarray(ry, jnp.float32)[:, None, :, None]
    xx = jnp.asarray(rx, jnp.float32)[None, :, None, :]
    f = blocked(feat)  # (ny, nx, By, Bx, 3)
    sw = np.float32(1.0 / np.float32(np.float32(grid.step) * np.float32(grid.step)))
    two_sy, two_sx = 2 * grid.step_y, 2 * grid.step_x

    # centre (a, b) collects slot (dy, dx) of cell (a - dy + R, b - dx + R): static gather indices (invalid: a zero)
    src = np.full((ny, nx, len(offs)), ny * nx * len(offs), np.int32)
    for s, (dy, dx) in enumerate(offs):
        a, b = np.arange(ny)[:, None] - dy + rey, np.arange(nx)[None, :] - dx + rex
        ok = (a >= 0) & (a < ny) & (b >= 0) & (b < nx)
        src[..., s] = np.where(ok, (np.clip(a, 0, ny - 1) * nx + np.clip(b, 0, nx - 1)) * len(offs) + s, src[..., s])

    def sums(slot, vals):
        """Per centre (K, D): the sum of vals (ny, nx, By, Bx, D) over the valid pixels whose slot names it."""
        n_slots, dim = len(offs), vals.shape[-1]
        if _scatter_sums():  # per (cell, slot): one sequential scatter-add
            ids = np.arange(ny * nx).reshape(ny, nx, 1, 1) * n_slots + jnp.where(valid, slot, n_slots * ny * nx)
            part = jax.ops.segment_sum(vals.reshape(-1, dim), ids.reshape(-1), ny * nx * n_slots + 1)[:-1]
        else:  # per cell a one-hot product: exact terms, float32 sums (HIGHEST: no reduced-precision passes)
            hit = ((slot[..., None] == np.arange(n_slots)) & valid[..., None]).astype(jnp.float32)
            part = jnp.einsum("npc,npd->ncd", hit.reshape(ny * nx, -1, n_slots), vals.reshape(ny * nx, -1, dim),
                              precision=jax.lax.Precision.HIGHEST).reshape(-1, dim)
        part = jnp.concatenate([part, jnp.zeros((1, dim), jnp.float32)])
        return jnp.sum(jnp.take(part, src, axis=0), axis=2).reshape(ny * nx, -1)

    ones = jnp.ones(valid.shape + (1,), jnp.float32)
    vals = jnp.concatenate([jnp.broadcast_to(yy[..., None], valid.shape + (1,)),
                            jnp.broadcast_to(xx[..., None], valid.shape + (1,)), f, ones], -1)
    seeds_y = np.repeat(grid.start_y + grid.step_y * np.arange(ny), nx).astype(np.float32)
    seeds_x = np.tile(grid.start_x + grid.step_x * np.arange(nx), ny).astype(np.float32)
    centres = jnp.concatenate([jnp.asarray(np.stack([seeds_y, seeds_x], -1)), jnp.zeros((ny * nx, 3), jnp.float32)], -1)
    alive = jnp.ones(ny * nx, bool)
    own = offs.index((rey, rex))
    slot = jnp.full(valid.shape, own, jnp.int32)

    def assign(centres, alive, slot):
        """Each pixel's slot of least distance among its cell's candidates whose window holds it (the first on ties,
        as skimage's strict comparison in centre order); its old slot where none does."""
        c = jnp.take(centres, np.maximum(cand, 0), axis=0)  # (ny, nx, C, 5)
        ok = jnp.take(alive, np.maximum(cand, 0), axis=0) & (cand >= 0)
        cy, cx = c[..., 0], c[..., 1]
        lo_y, hi_y = jnp.floor(jnp.maximum(cy - two_sy, 0.0)), jnp.floor(jnp.minimum(cy + two_sy + 1, h))
        lo_x, hi_x = jnp.floor(jnp.maximum(cx - two_sx, 0.0)), jnp.floor(jnp.minimum(cx + two_sx + 1, w))

        def one(carry, cs):  # candidate s: elementwise over the pixels, no reduction over a short axis
            best_d, best = carry
            s, ok, lo_y, hi_y, lo_x, hi_x, cy, cx, c0, c1, c2 = (v[:, :, None, None] if v.ndim else v for v in cs)
            inside = ok & (yy >= lo_y) & (yy < hi_y) & (xx >= lo_x) & (xx < hi_x)
            t0, t1, t2 = f[..., 0] - c0, f[..., 1] - c1, f[..., 2] - c2
            d = ((cy - yy) ** 2 + (cx - xx) ** 2) * sw + ((t0 * t0 + t1 * t1) + t2 * t2)
            take = inside & (d < best_d)
            return (jnp.where(take, d, best_d), jnp.where(take, s, best)), None

        per_slot = [jnp.arange(len(offs), dtype=jnp.int32)] + [jnp.moveaxis(v, 2, 0) for v in (
            ok, lo_y, hi_y, lo_x, hi_x, cy, cx, c[..., 2], c[..., 3], c[..., 4])]
        (_, best), _ = jax.lax.scan(one, (jnp.full(valid.shape, jnp.inf, jnp.float32), slot), per_slot)
        return best

    def body(_, carry):
        centres, alive, slot = carry
        slot = assign(centres, alive, slot)
        total = sums(slot, vals)
        n = total[:, -1:]
        alive = alive & (n[:, 0] > 0)
        return jnp.where(n > 0, total[:, :-1] / jnp.maximum(n, 1.0), centres), alive, slot

    centres, alive, slot = jax.lax.fori_loop(0, max_num_iter - 1, body, (centres, alive, slot))
    slot = assign(centres, alive, slot)
    layout = dict(blocked=blocked, sums=sums, valid=valid, cand=cand, cells=(cy_of, oy_of, cx_of, ox_of))
    return grid, layout, slot


def _unblock(a, cells):
    cy_of, oy_of, cx_of, ox_of = cells
    return a[cy_of[:, None], cx_of[None, :], oy_of[:, None], ox_of[None, :]]


def slic_labels(image, n_segments=200, compactness=10.0, max_num_iter=10):
    """HxW int32 SLIC labels (centre indices from 0, raster order of the seeds) of one HxWx3 image: skimage's
    slic(image, n_segments, compactness, max_num_iter, sigma=1, convert2lab=True, enforce_connectivity=False) - 1,
    but for the differences noted above."""
    image = jax.lax.stop_gradient(jnp.asarray(image))
    _, lay, slot = _slic_slots(image, n_segments, compactness, max_num_iter)
    k = jnp.take_along_axis(jnp.asarray(lay["cand"])[:, :, None, None, :], slot[..., None], -1)[..., 0]
    return _unblock(k, lay["cells"])


def superpixel_target_device(images, n_segments=200):
    """`superpixel_target` on the device: NHWC [-1, 1] images -> each pixel the mean of its SLIC segment (the
    adaptive colouring on [-1, 1] images), per channel; jit-able (n_segments static), a constant (stop_gradient).
    SLIC as `slic_labels` (sigma 1, compactness 10, 10 rounds, no connectivity enforcement)."""
    images = jax.lax.stop_gradient(jnp.asarray(images, jnp.float32))

    def one(image):
        _, lay, slot = _slic_slots(image, n_segments, 10.0, 10)
        block = lay["blocked"](image)
        total = lay["sums"](slot, jnp.concatenate([block, jnp.ones(block.shape[:-1] + (1,), jnp.float32)], -1))
        mean = total[:, :-1] / jnp.maximum(total[:, -1:], 1.0)
        k = jnp.take_along_axis(jnp.asarray(lay["cand"])[:, :, None, None, :], slot[..., None], -1)[..., 0]
        return _unblock(jnp.take(mean, k, axis=0), lay["cells"])

    return jax.vmap(one)(images)
