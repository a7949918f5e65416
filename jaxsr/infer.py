"""Upscaling images with a model: the `upscale` API and the `python -m jaxsr.infer` command.

Channels: a grayscale image through an RGB model is run as RGB and averaged back to one channel; an
RGBA image has its RGB upscaled by the model and its alpha upscaled by the model too (as a gray image,
the way chaiNNer does), so edges of cut-outs stay as sharp as the picture.
"""
import argparse
import math
import os
import sys
import weakref

import jax
import jax.extend.core as jax_core
import numpy as np
from flax import nnx

from jaxsr import archs
from jaxsr.errors import ImageError, WeightsError, warnings_as_lines
from jaxsr.files import distinct_stems, writable_dir
from jaxsr.guided_filter import guided_filter
from jaxsr.imageio import EXTENSIONS, list_images, load_image, pad_to, write_image

# Every generator has `scale`, `in_ch`, `size_multiple` (input sides are padded to it) and `tile_multiple` (the
# grid tiles start on and are sized in: the unshuffle factor of RRDB x1/x2, the attention window of DAT, whose
# windows are anchored at the image origin, so tiles equal the whole image only on the window grid).
# A multi-output model (PPON) gives its `branch` output (`archs.forward`); a conditioned one (SFT-Net) takes `cond`,
# its maps at the output size.
_forward = nnx.jit(lambda model, x, branch=None, cond=None: archs.forward(model, x, branch, cond), static_argnames="branch")


def _in_range(forward):
    """The pix2pix/CycleGAN generators work in [-1, 1] (their `value_range`): the [0, 1] images go in mapped to it, and
    the outputs come back mapped from it, before anything clips them."""
    def run(model, x, branch=None, cond=None):
        lo, hi = getattr(model, "value_range", (0.0, 1.0))
        if (lo, hi) == (0.0, 1.0):
            return forward(model, x, branch, cond)
        return (forward(model, x * (hi - lo) + lo, branch, cond) - lo) / (hi - lo)

    return run


def _guided(forward):
    """White-box Cartoonization's inference (cartoonize.py) filters the generator's output with the input as guide: a
    model's `guided_filter` (r, eps), None for none, applied in its own range ([-1, 1]) before anything clips, on the
    padded image (exactly the original's on sides that are multiples of the model's size_multiple)."""
    def run(model, x, branch=None, cond=None):
        y = forward(model, x, branch, cond)
        gf = getattr(model, "guided_filter", None)
        return y if gf is None else guided_filter(y, x, *gf)

    return run


_forward = _guided(_forward)
_forward = _in_range(_forward)


def _round_up(n, m):
    return -(-n // m) * m


def _run(model, img, branch=None, cond=None):
    """HxWxC (C = model input channels) -> (H*s)x(W*s)xC', padding to the model's size multiple (the condition
    map, at the output size, with it)."""
    m = model.size_multiple
    h, w = img.shape[:2]
    img = pad_to(img, _round_up(h, m), _round_up(w, m))
    if cond is not None:
        cond = pad_to(cond, img.shape[0] * model.scale, img.shape[1] * model.scale)[None]
    out = np.asarray(_forward(model, img[None], branch, cond))[0]
    return np.clip(out[: h * model.scale, : w * model.scale], 0.0, 1.0)


# ------------------------------------------------------------------------------------------------ tiling


def _axis_plan(length, t, overlap, align, scale, seam):
    """Tile starts on one axis and each tile's 1-D output weights; the weights sum to exactly 1 everywhere.

    Starts are spread evenly on the `align` grid with at least `overlap` px shared by neighbours. Between two
    tiles the switch happens at the middle of their shared strip: a step ('crop': each output pixel comes
    from one tile and keeps >= overlap/2 px of context) or a linear ramp over the strip's central half
    ('blend': no visible seam even when the overlap is below the receptive field; >= overlap/4 px context).
    """
    n = 1 if length <= t else 1 + -(-(length - t) // (t - overlap))
    starts = [0] if n == 1 else sorted({align * round(i * (length - t) / (n - 1) / align) for i in range(n)})
    ys = np.arange(length * scale, dtype=np.float64) + 0.5  # output pixel centres
    strips = [(b * scale, (a + t) * scale) for a, b in zip(starts, starts[1:])]  # shared strips, output px
    mids = [(lo + hi) // 2 for lo, hi in strips]
    gaps = np.diff([0, *mids, length * scale])
    steps = [np.ones_like(ys)]  # steps[i]: weight owed to tiles i.. ; falls 1 -> 0 across boundary i-1
    for k, ((lo, hi), mid) in enumerate(zip(strips, mids)):
        ramp = min((hi - lo) // 2, gaps[k], gaps[k + 1]) if seam == "blend" else 0  # ramps never overlap
        f = (ys >= mid) if ramp == 0 else np.clip((ys - (mid - ramp / 2)) / ramp, 0.0, 1.0)
        steps.append(f.astype(np.float64))
    steps.append(np.zeros_like(ys))
    weights = []
    for i, s in enumerate(starts):
        w = (steps[i] - steps[i + 1])[s * scale : (s + t) * scale]
        nz = np.flatnonzero(w)
        weights.append((int(nz[0]), int(nz[-1]) + 1, w[nz[0] : nz[-1] + 1].astype(np.float32)))
    return starts, weights


def _tile_side(length, tile, align):
    """The tile side used on an axis: `tile`, less the part of the grid step that the axis overhangs (so that tiles
    starting on the grid end at the edge, with the border the whole-image forward sees), or for a shorter axis a
    bucket above it (few distinct shapes)."""
    if length >= tile:
        return tile - (tile - length) % align
    q = _round_up(max(16, tile // 8), align)
    return min(tile, _round_up(length, q))


def _run_tiled(model, img, tile, overlap, batch, seam, progress, branch=None, cond=None):
    align = model.tile_multiple
    s = model.scale
    h, w, c = img.shape
    tile = max(align, tile // align * align)
    overlap = min(_round_up(overlap, align), tile // 2 // align * align)
    m = model.size_multiple  # padded as the whole-image run pads; a model that pads to its grid itself pads each tile
    hp, wp = _round_up(h, m), _round_up(w, m)
    th, tw = _tile_side(hp, tile, align), _tile_side(wp, tile, align)
    img = pad_to(img, max(hp, th), max(wp, tw))
    hp, wp = img.shape[:2]
    if cond is not None:  # the condition map (at the output size) is tiled with the image: each tile gets its part
        cond = pad_to(cond, hp * s, wp * s)
        xc = np.zeros((batch, th * s, tw * s, cond.shape[2]), np.float32)
    ys, wys = _axis_plan(hp, th, overlap, align, s, seam)
    xs, wxs = _axis_plan(wp, tw, overlap, align, s, seam)
    jobs = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    out = None
    bar = _progress(progress, len(jobs))
    for k in range(0, len(jobs), batch):
        chunk = jobs[k : k + batch]
        x = np.zeros((batch, th, tw, c), np.float32)  # the last batch is padded: one shape, one executable
        for n, (i, j) in enumerate(chunk):
            x[n] = img[ys[i] : ys[i] + th, xs[j] : xs[j] + tw]
            if cond is not None:
                xc[n] = cond[ys[i] * s : (ys[i] + th) * s, xs[j] * s : (xs[j] + tw) * s]
        y = np.asarray(_forward(model, x, branch, None if cond is None else xc))
        if out is None:
            out = np.zeros((hp * s, wp * s, y.shape[-1]), np.float32)
        for n, (i, j) in enumerate(chunk):
            (a0, a1, wy), (b0, b1, wx) = wys[i], wxs[j]
            region = out[ys[i] * s + a0 : ys[i] * s + a1, xs[j] * s + b0 : xs[j] * s + b1]
            region += y[n, a0:a1, b0:b1] * (wy[:, None, None] * wx[None, :, None])
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return np.clip(out[: h * s, : w * s], 0.0, 1.0, out=out[: h * s, : w * s])  # in place: outputs can be GBs


def _progress(enabled, total):
    if not enabled or total < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", leave=False)


# ------------------------------------------------------------------------------------------------ auto tile size

CPU_RAM_FRACTION, DEVICE_FRACTION = 0.25, 0.6  # of available host RAM / free accelerator memory
MIN_TILE = 32  # below this, overlap and padding dominate the work
MAX_TILE = {"cpu": 512, "other": 1024}  # larger tiles buy little speed once overlap waste is small


def _jaxpr_peak_bytes(jaxpr):
    """Largest single operation (inputs + outputs) in a jaxpr, nested calls included: a cheap peak estimate."""
    best = 0
    for eqn in jaxpr.eqns:
        size = sum(v.aval.size * v.aval.dtype.itemsize for v in (*eqn.invars, *eqn.outvars) if hasattr(v.aval, "size"))
        best = max(best, size, *(_jaxpr_peak_bytes(getattr(j, 'jaxpr', j)) for j in jax_core.jaxprs_in_params(eqn.params)))
    return best


def available_ram():
    """Bytes of host memory available to this process (MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _free_bytes(device, ram_fraction=CPU_RAM_FRACTION):
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) * DEVICE_FRACTION
    return available_ram() * ram_fraction


def default_tile_batch():
    return 1 if jax.devices()[0].platform == "cpu" else 4


_PER_PX = weakref.WeakKeyDictionary()  # model -> forward bytes per input pixel, so folders do not re-trace the probe


def forward_bytes_per_pixel(model):
    """Peak bytes per input pixel of a forward: the largest single operation of the model traced at a probe size,
    x2 for what XLA keeps alive besides it."""
    if model not in _PER_PX:
        p = _round_up(64, model.tile_multiple)
        x = jax.ShapeDtypeStruct((1, p, p, getattr(model, "in_ch", 3)), np.float32)
        cond = () if not getattr(model, "condition", None) else (
            jax.ShapeDtypeStruct((1, p * model.scale, p * model.scale, model.cond_ch), np.float32),)
        gdef, state = nnx.split(model)  # trace a merged copy: modules with remat must not be traced by closure
        _PER_PX[model] = 2.0 * _jaxpr_peak_bytes(
            jax.make_jaxpr(lambda s, v, *c: nnx.merge(gdef, s)(v, *c))(state, x, *cond).jaxpr) / (p * p)
    return _PER_PX[model]


def auto_tile(model, batch=None):
    """Tile side that fits the free memory: `forward_bytes_per_pixel` times batch, against free device memory
    (GPU/TPU `memory_stats`) or a quarter of available RAM (CPU). Rounded to the model's tile grid, in [64, 512/1024]."""
    dev = jax.devices()[0]
    batch = batch or default_tile_batch()
    align = model.tile_multiple
    side = int(math.sqrt(_free_bytes(dev) / (batch * forward_bytes_per_pixel(model))))
    cap = MAX_TILE["cpu" if dev.platform == "cpu" else "other"]
    return max(_round_up(64, align), min(cap, side) // align * align)


def _gib(n):
    return f"{n / 2**30:.1f} GiB"


def check_fits(model, shape, tile):
    """Refuse, before any work, an image whose output (float32, plus its encoded copy) or whole-image forward
    (tile=None) cannot fit in memory: ImageError naming the sizes and the memory."""
    h, w, c = shape
    s = model.scale
    out = (h * s) * (w * s) * max(c, 3) * 5  # float32 result and an 8-bit copy to encode (16-bit: 6, close enough)
    avail = available_ram()
    if out > 0.8 * avail:
        raise ImageError(f"a {w}x{h} image becomes {w * s}x{h * s} at x{s}: its output needs {_gib(out)}, more than the "
                         f"{_gib(avail)} of memory available; split the image into parts and upscale those")
    if tile is None:
        need = h * w * forward_bytes_per_pixel(model)
        free = _free_bytes(jax.devices()[0], ram_fraction=0.8)
        if need > free:
            raise ImageError(f"whole-image inference of {w}x{h} needs about {_gib(need)}, more than the {_gib(free)} free; "
                             "use tiles (--tile auto, or --tile 512)")


# ------------------------------------------------------------------------------------------------ public API


def upscale(model, img, tile=None, overlap=32, tile_batch=None, seam="crop", progress=False, branch=None, cond=None):
    """Upscale one HxWxC float32 image in [0,1] (numpy); returns (H*s)x(W*s)xC float32 in [0,1].

    tile=None runs the whole image at once (one compile per image size). tile=N runs NxN tiles with
    `overlap` px shared between neighbours, `tile_batch` tiles per call, all through one compiled shape;
    tile="auto" picks N from free memory and runs whole images that fit in one tile. See docs/inference.md.
    branch: the output of a multi-output model (PPON: content, structure; default its `branch`, perceptual).
    cond: a conditioned model's second input (SFT-Net: the class probabilities, (H*s)x(W*s)xclasses), tiled with the
    image; `condition_map` fits a map to the output size.
    """
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if seam not in ("crop", "blend"):
        raise ValueError(f"seam must be 'crop' or 'blend', not {seam!r}")
    check_tiling(model, tile, overlap)
    archs.check_branch(model, branch, conditioned=cond is not None)
    if cond is not None:
        cond = condition_map(model, cond, img.shape)
    if tile == "auto":
        tile = auto_tile_or_whole(model, img.shape, tile_batch)
    if tile is None:
        def run(model, x):
            return _run(model, x, branch, cond)
    else:
        batch = tile_batch or default_tile_batch()

        def run(model, x):
            return _run_tiled(model, x, int(tile), int(overlap), batch, seam, progress, branch, cond)

    c, want = img.shape[2], getattr(model, "in_ch", 3)
    if c == want:
        out = run(model, img)
    elif c == 1 and want == 3:
        out = run(model, np.repeat(img, 3, axis=2)).mean(axis=2, keepdims=True)
    elif c == 4 and want == 3:
        rgb = run(model, img[..., :3])
        alpha = run(model, np.repeat(img[..., 3:], 3, axis=2)).mean(axis=2, keepdims=True)
        out = np.concatenate([rgb, alpha], axis=2)
    elif c in (3, 4) and want == 1:
        out = run(model, img[..., :3].mean(axis=2, keepdims=True))
    else:
        raise ValueError(f"the image has {c} channels, the model expects {want}")
    return out


def condition_map(model, cond, shape):
    """A conditioned model's map (HxWxC float32) for an image of `shape`, at the output size: SFTGAN's maps cover the
    HR image's modcrop-8 part (test_segmentation.py), so a map up to 7 px short of the output on a side is edge-padded
    to it (a larger one is cropped); ImageError for another size or channel count."""
    cond = np.asarray(cond, np.float32)
    want, s = model.cond_ch, model.scale
    h, w = shape[0] * s, shape[1] * s
    if cond.ndim != 3 or cond.shape[2] != want or cond.shape[0] <= h - 8 or cond.shape[1] <= w - 8:
        raise ImageError(f"the {model.condition!r} map has shape {cond.shape}, but this model needs {want} channels at "
                         f"the output size {w}x{h} (made by python -m jaxsr.segment from the HR image, or --seg-weights)")
    cond = cond[:h, :w]
    return np.pad(cond, ((0, h - cond.shape[0]), (0, w - cond.shape[1]), (0, 0)), mode="edge")


def segmentation_map(segmenter, lr, scale):
    """SFTGAN's probability maps for an LR image (HxWxC in [0, 1]), as test_segmentation.py computes them for the HR
    image it bicubic-downscales: OutdoorSceneSeg on the MATLAB-bicubic x`scale` upscale of the LR (BGR x255, less
    the BGR mean), edge-padded to its output stride (8) and cropped back: (H*scale)x(W*scale)xclasses."""
    from jaxsr import segment
    from jaxsr.archs.outdoor_seg import BGR_MEAN
    from jaxsr.degrade.ops import imresize

    rgb = lr[..., :3] if lr.shape[2] >= 3 else np.repeat(lr[..., :1], 3, axis=2)
    bic = imresize(rgb.astype(np.float64), scale)
    h, w = bic.shape[:2]
    m = segment.MODCROP
    bic = np.pad(bic, ((0, _round_up(h, m) - h), (0, _round_up(w, m) - w), (0, 0)), mode="edge")
    x = (bic[..., ::-1] * 255.0 - np.asarray(BGR_MEAN)).astype(np.float32)
    return segment.probabilities(segmenter, x)[:h, :w]


def read_map(path):
    """A probability map file as HxWxC float32: `<name>_bic.pth` (torch's (C, H, W) tensor, as jaxsr.segment and
    SFTGAN's test_segmentation.py save it) or .npy (HxWxC)."""
    from jaxsr import pth

    try:
        a = np.load(path) if path.endswith(".npy") else pth.load(path)
    except (OSError, ValueError, WeightsError) as e:
        raise ImageError(f"cannot read the map {path}: {e}") from None
    a = np.asarray(a, np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ImageError(f"{path} holds an array of shape {a.shape}, not one probability map")
    return a if path.endswith(".npy") else a.transpose(1, 2, 0)


MAP_SUFFIXES = ("_bic.pth", ".pth", ".npy")  # jaxsr.segment's and test_segmentation.py's names, traiNNer's bicseg/, numpy


def find_map(folder, rel):
    """The map of the image at relative path `rel` in `folder`: <stem><suffix> for MAP_SUFFIXES, the stem with or without
    the image's extension (jaxsr.segment keeps it for files that share a stem); None if there is none."""
    stem = os.path.splitext(rel)[0]
    for name in (stem, rel):
        for suffix in MAP_SUFFIXES:
            path = os.path.join(folder, name + suffix)
            if os.path.isfile(path):
                return path
    return None


def _jobs(inp, out):
    """[(input file, output PNG)]: one output per input, none of them an input; the output folders exist and are
    writable. Files that share a stem keep their extension in the output name (photo.jpg -> photo.jpg.png)."""
    if os.path.isdir(inp):
        files = list_images(inp)
        if not files:
            raise ImageError(f"no images ({', '.join(EXTENSIONS)}) under {inp}")
        names = distinct_stems([os.path.relpath(f, inp) for f in files])
        jobs = [(f, os.path.join(out, n + ".png")) for f, n in zip(files, names)]
    elif not os.path.exists(inp):
        raise ImageError(f"no such file or folder: {inp}")
    else:
        if os.path.isdir(out) or not os.path.splitext(out)[1]:
            out = os.path.join(out, os.path.splitext(os.path.basename(inp))[0] + ".png")
        jobs = [(inp, out)]
    inputs = {os.path.realpath(f) for f, _ in jobs}
    clash = next((d for _, d in jobs if os.path.realpath(d) in inputs), None)
    if clash:
        raise ImageError(f"the output {clash} is an input and would be replaced; choose another --output")
    for folder in sorted({os.path.dirname(d) or "." for _, d in jobs}):
        writable_dir(folder, ImageError)
    return jobs


def _tile_arg(v):
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError("--tile must be 'auto', 0 (whole image) or a positive size")
    return n or None


def _overlap_arg(v):
    n = int(v)
    if n < 0:
        raise argparse.ArgumentTypeError("--tile-overlap must be >= 0")
    return n


def add_tile_args(p):
    """The tiling and precision options shared by `jaxsr.infer` and `jaxsr.evaluate`."""
    p.add_argument("--tile", type=_tile_arg, default="auto",
                   help="tile side in input px; 'auto' (default): from free memory, whole image when it fits; 0: never tile")
    p.add_argument("--tile-overlap", type=_overlap_arg, default=32, help="px shared by neighbouring tiles (default 32)")
    p.add_argument("--tile-batch", type=int, default=None, help="tiles per forward call (default 1 on CPU, 4 on GPU/TPU)")
    p.add_argument("--seam", choices=("crop", "blend"), default="crop",
                   help="crop: each pixel from one tile (exact when overlap/2 >= receptive field); blend: linear ramps")
    p.add_argument("--bf16", action="store_true", help="compute in bfloat16 (parameters stay float32 on disk)")
    p.add_argument("--branch", choices=("content", "structure", "perceptual"), default=None,
                   help="a PPON's output (default perceptual); other models have one")


def untileable(model):
    """Why tiles of this model cannot equal its whole-image output (None where they can, with enough overlap): a U-Net's
    bottleneck sees the whole input, and InstanceNorm or BatchNorm in train mode normalise with statistics of all of
    it, so each tile would be normalised by its own."""
    from jaxsr.archs.common import BatchNorm2d
    from jaxsr.archs.p2p_unet.model import UnetGenerator
    from jaxsr.archs.pix2pix import InstanceNorm2d

    if isinstance(model, UnetGenerator):
        return f"a U-Net's receptive field covers its whole input (its bottleneck is 1/{model.size_multiple} of each side)"
    for _, m in nnx.iter_graph(model):
        if isinstance(m, InstanceNorm2d):
            return "InstanceNorm normalises each channel with the statistics of the whole image"
        if isinstance(m, BatchNorm2d) and not m.use_running_average:
            return "BatchNorm in train mode normalises with the statistics of the whole batch (call model.eval())"
    return None


def check_tiling(model, tile, overlap):
    """A tile side the model can use and a non-negative overlap, checked before any work."""
    reason = untileable(model) if tile not in (None, "auto") else None
    if reason:
        raise ImageError(f"this model cannot run in tiles: {reason}, so tiles would differ from the whole image; use "
                         "--tile 0 (whole images)")
    least = max(MIN_TILE, model.tile_multiple)
    if tile not in (None, "auto") and int(tile) < least:
        raise ImageError(f"tile {tile} is smaller than {least} px (the minimum, and a multiple of this model's "
                         f"{model.tile_multiple} px grid); use a larger tile, or 'auto'")
    if overlap < 0:
        raise ImageError(f"tile overlap {overlap} is negative; neighbouring tiles share >= 0 px (default 32)")


def auto_tile_or_whole(model, shape, tile_batch=None):
    """What tile='auto' runs an image with: None (whole) when it fits in one tile or the model cannot tile
    (`untileable`), else the tile side."""
    if untileable(model):
        return None
    tile, m = auto_tile(model, tile_batch), model.tile_multiple
    return None if _round_up(shape[0], m) <= tile and _round_up(shape[1], m) <= tile else tile


def tile_kwargs(a, progress=False):
    return dict(tile=a.tile, overlap=a.tile_overlap, tile_batch=a.tile_batch, seam=a.seam, progress=progress, branch=a.branch)


def _condition_source(model, info, a):
    """What a conditioned model's maps come from (--seg or --seg-weights, refused for other models): the segmentation
    network for --seg-weights, else None."""
    cond = getattr(model, "condition", None)
    if a.seg and a.seg_weights:
        raise ImageError("give --seg (maps made beforehand) or --seg-weights (maps computed here), not both")
    if not cond:
        if a.seg or a.seg_weights:
            raise ImageError(f"--seg/--seg-weights give segmentation maps to SFT-Net; this {info['arch']} model takes the "
                             "image alone: leave them out")
        return None
    if not (a.seg or a.seg_weights):
        raise ImageError(f"this model takes {cond!r} maps besides the image: give --seg DIR (python -m jaxsr.segment's maps "
                         "of the HR images) or --seg-weights OutdoorSceneSeg_bic.pth (computed from each input)")
    if a.seg:
        if not os.path.isdir(a.seg):
            raise ImageError(f"--seg {a.seg} is not a folder of maps (python -m jaxsr.segment --output)")
        return None
    from jaxsr import segment

    return segment.load_segmenter(a.seg_weights)[0]


def _condition(model, a, segmenter, src, img):
    """The map of one input: --seg's file named as the input (relative to --input), or computed by `segmenter`."""
    if not getattr(model, "condition", None):
        return None
    if segmenter is not None:
        return segmentation_map(segmenter, img, model.scale)
    rel = os.path.relpath(src, a.input) if os.path.isdir(a.input) else os.path.basename(src)
    path = find_map(a.seg, rel)
    if path is None:
        stem = os.path.splitext(rel)[0]
        raise ImageError(f"no map for it in {a.seg} (looked for {stem}{', '.join(MAP_SUFFIXES)}); make the maps with "
                         "python -m jaxsr.segment, or use --seg-weights")
    return read_map(path)


DIRECTIONS = {"AtoB": "G_A", "BtoA": "G_B"}  # CycleGAN's generators, named as junyanz's code


def direction_weights(path, direction):
    """What --direction loads: in a CycleGAN workdir (or its models/ folder) the newest <name>_G_A.safetensors (AtoB) or
    _G_B (BtoA); any other path as given, where --direction must be left out (a single generator has one direction)."""
    folder = os.path.join(path, "models") if os.path.isdir(os.path.join(path, "models")) else path
    found = {}
    if os.path.isdir(folder):
        for net in DIRECTIONS.values():
            files = [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(f"_{net}.safetensors")]
            if files:
                found[net] = max(files, key=os.path.getmtime)
    if not found:
        if direction:
            raise WeightsError(f"--direction picks G_A or G_B of a CycleGAN workdir; {path} holds one generator: leave "
                               "--direction out")
        return path
    if not direction:
        raise WeightsError(f"{path} holds CycleGAN's generators G_A and G_B: give --direction AtoB (G_A) or BtoA (G_B)")
    if DIRECTIONS[direction] not in found:
        raise WeightsError(f"{path} has no *_{DIRECTIONS[direction]}.safetensors for --direction {direction}")
    return found[DIRECTIONS[direction]]


def _guided_filter_arg(v):
    if v == "off":
        return "off"
    try:
        r, eps = v.split(",")
        r, eps = int(r), float(eps)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--guided-filter takes R,EPS (e.g. 1,5e-3) or off, not {v!r}") from None
    if r < 1 or eps <= 0:
        raise argparse.ArgumentTypeError(f"--guided-filter: radius >= 1 and eps > 0, not {v!r}")
    return r, eps


def set_guided_filter(model, value):
    """--guided-filter on a model that has one (`guided_filter` attribute): (r, eps), 'off', or None (its default)."""
    if value is None:
        return
    if not hasattr(model, "guided_filter"):
        raise WeightsError("--guided-filter applies to White-box Cartoonization generators (wbcunet) only; leave it out")
    model.guided_filter = None if value == "off" else value


_decode = nnx.jit(lambda model, lr, noise: model.decode(lr, noise[-1], noise[:-1]))


def check_sampling(model, heat, samples, tile):
    """--heat/--samples for a flow model (SRFlow's `draw_noise`); keyed samples run whole images: each tile would draw
    its own latents, so tiles sampled at one seed would not join seamlessly (heat 0, the mean sample, tiles as any
    generator)."""
    if heat is None:
        if samples != 1:
            raise ImageError("--samples draws samples at a heat: give --heat (e.g. 0.8) with it")
        return
    if not hasattr(model, "draw_noise"):
        raise ImageError(f"--heat samples a flow model (SRFlow); this {type(model).__name__} has one output: leave it out")
    if heat < 0 or samples < 1:
        raise ImageError(f"--heat must be >= 0 and --samples >= 1, got {heat} and {samples}")
    if heat > 0 and tile not in (None, "auto"):
        raise ImageError("sampling at heat > 0 runs whole images: each tile would draw its own latents, so tiles sampled "
                         "at one seed would not join seamlessly; use --tile 0 (or auto, which runs it whole)")


def sample(model, img, heat, key):
    """One SRFlow sample of an HxWxC [0, 1] image at `heat` with `key` (jax.random.key): the latents of the padded
    image (`model.draw_noise`), decoded, cropped and clipped as `upscale` crops; gray runs as RGB and is averaged back,
    an alpha channel is upscaled at heat 0 as `upscale` does it."""
    img = np.asarray(img, np.float32)
    img = img[..., None] if img.ndim == 2 else img
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
    m, s = model.size_multiple, model.scale
    h, w = rgb.shape[:2]
    lr = pad_to(rgb, _round_up(h, m), _round_up(w, m))[None]
    out = np.asarray(_decode(model, lr, model.draw_noise(lr.shape, heat, key)))[0, : h * s, : w * s]
    out = np.clip(out, 0.0, 1.0)
    if img.shape[2] == 1:
        return out.mean(axis=2, keepdims=True)
    if img.shape[2] == 4:
        return np.concatenate([out, upscale(model, img[..., 3], tile=None)], axis=2)
    return out


def sample_path(dst, i, samples):
    """Where sample i of `samples` goes: dst itself for one, <stem>_sample<i><ext> for several."""
    if samples == 1:
        return dst
    stem, ext = os.path.splitext(dst)
    return f"{stem}_sample{i}{ext}"


def main(argv=None):
    from tqdm import tqdm

    from jaxsr.weights import load_model

    p = argparse.ArgumentParser(prog="python -m jaxsr.infer", description="Upscale images with a jaxsr or PyTorch SR model.")
    p.add_argument("--weights", required=True, help=".pth/.safetensors, a jaxsr export folder or a workdir")
    p.add_argument("--input", required=True, help="an image file or a folder (searched recursively)")
    p.add_argument("--output", required=True, help="output file or folder; PNG at the input's bit depth")
    add_tile_args(p)
    p.add_argument("--seg", default=None, help="SFT-Net's segmentation maps: the folder python -m jaxsr.segment wrote "
                   "(<name>_bic.pth per input, at the output size)")
    p.add_argument("--seg-weights", default=None, help="SFT-Net: compute each input's maps with this OutdoorSceneSeg "
                   "file (OutdoorSceneSeg_bic.pth) instead")
    p.add_argument("--direction", choices=tuple(DIRECTIONS), default=None,
                   help="a CycleGAN workdir: run G_A (AtoB) or G_B (BtoA); a single generator file needs none")
    p.add_argument("--guided-filter", type=_guided_filter_arg, default=None, metavar="R,EPS|off",
                   help="a White-box Cartoonization generator: the guided filter on its output with the input as guide "
                   "(default 1,5e-3, the original's inference; off for the raw output)")
    p.add_argument("--heat", type=float, default=None, help="SRFlow: sample at this heat (the latents' standard "
                   "deviation, e.g. 0.8); 0 is the mean sample, what runs without --heat")
    p.add_argument("--samples", type=int, default=1, help="SRFlow with --heat: samples per image, one file each "
                   "(<name>_sample<i>.png)")
    p.add_argument("--seed", type=int, default=0, help="SRFlow with --heat: sample i draws from "
                   "jax.random.fold_in(jax.random.key(seed), i)")
    a = p.parse_args(argv)
    warnings_as_lines()
    try:
        import jax.numpy as jnp

        model, info = load_model(direction_weights(a.weights, a.direction), dtype=jnp.bfloat16 if a.bf16 else jnp.float32)
        set_guided_filter(model, a.guided_filter)
        check_tiling(model, a.tile, a.tile_overlap)
        check_sampling(model, a.heat, a.samples, a.tile)
        segmenter = _condition_source(model, info, a)
        archs.check_branch(model, a.branch, conditioned=bool(a.seg or a.seg_weights))
        jobs = _jobs(a.input, a.output)
    except (WeightsError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{info['arch']} x{info['scale']} from {info['source']}", file=sys.stderr)
    failed = 0
    for src, dst in tqdm(jobs, unit="img", disable=len(jobs) < 2):
        try:
            img, bits = load_image(src)
            check_fits(model, img.shape, a.tile if a.tile != "auto" else auto_tile_or_whole(model, img.shape, a.tile_batch))
            cond = _condition(model, a, segmenter, src, img)
            os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
            if a.heat:
                for i in range(a.samples):
                    key = jax.random.fold_in(jax.random.key(a.seed), i)
                    write_image(sample_path(dst, i, a.samples), sample(model, img, a.heat, key), bits=bits)
                continue
            out = upscale(model, img, **tile_kwargs(a, progress=True), cond=cond)
            for i in range(a.samples):
                write_image(sample_path(dst, i, a.samples), out, bits=bits)
        except (ImageError, ValueError) as e:
            failed += 1
            tqdm.write(f"skipped {src}: {e}", file=sys.stderr)
    print(f"wrote {len(jobs) - failed} image(s) to {a.output}" + (f", {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
