"""Aligned image pairs for image-to-image translation (pix2pix): junyanz's `AlignedDataset` and the preprocess modes of
its `data/base_dataset.py` (with traiNNer's `center_crop`, `codes/dataops/augmentations.py`), in numpy.

A folder holds either A|B images (A the left half, B the right: split at int(w / 2) as the reference does), or two
subfolders `A/` and `B/` with the pairs under the same relative names. `direction` 'BtoA' swaps the two.

`preprocess` is a chain of steps joined by `_and_`, applied in this order whatever the order written:
  center_crop   the centre center_crop_size x center_crop_size (torchvision CenterCrop's rounding)
  resize        a load_size x load_size square (bicubic)
  scale_width   width load_size, height max(load_size * h / w, crop_size) (the reference's __scale_width)
  crop          a random crop_size square, its corner drawn uniformly as get_params draws it
  none          alone: each side rounded to the nearest multiple of the generator's `size_multiple` (bicubic), as
                __make_power_2 does with its base 4; here the base is what the generator needs (2^num_downs for a U-Net)
so 'resize_and_crop' (pix2pix's default), 'crop', 'center_crop', 'scale_width', 'scale_width_and_crop', 'none' are
the reference's modes. Then a horizontal flip with probability 1/2 unless no_flip. A and B get the same geometry,
drawn once from A's size. Resizing is PIL's bicubic on float32 channels (the reference's on 8-bit images rounds).
"""
import os
from dataclasses import dataclass

import grain
import numpy as np
from PIL import Image

from jaxsr.data.loader import TrainIterator
from jaxsr.data.sources import list_folder, read_rgb
from jaxsr.errors import ConfigError, DataError

STEPS = ("center_crop", "resize", "scale_width", "crop")
DIRECTIONS = ("AtoB", "BtoA")


@dataclass(frozen=True)
class Preprocess:
    steps: frozenset
    load_size: int
    crop_size: int
    center_crop_size: int
    flip: bool
    multiple: int  # the generator's size_multiple ('none' rounds to it)


def parse(mode):
    """The steps of a preprocess chain (frozenset; empty for 'none'); ConfigError for an unknown step."""
    if mode == "none":
        return frozenset()
    steps = mode.split("_and_")
    bad = [s for s in steps if s not in STEPS]
    if bad or len(set(steps)) != len(steps) or not steps:
        raise ConfigError(f"preprocess={mode!r}: give 'none' or steps of {', '.join(STEPS)} joined by '_and_' (each once), "
                          "e.g. 'resize_and_crop'")
    if {"resize", "scale_width"} <= set(steps):
        raise ConfigError(f"preprocess={mode!r}: resize and scale_width both set the size; keep one")
    return frozenset(steps)


def make(section, multiple):
    """A checked Preprocess from a config section (preprocess, load_size, crop_size, center_crop_size, no_flip) and the
    generator's size multiple: one-line ConfigErrors for sizes the generator cannot take."""
    p = Preprocess(parse(section.preprocess), int(section.load_size), int(section.crop_size),
                   int(section.center_crop_size), not section.no_flip, int(multiple))
    s = p.steps
    for field, value, used in (("load_size", p.load_size, s & {"resize", "scale_width"}), ("crop_size", p.crop_size, "crop" in s),
                               ("center_crop_size", p.center_crop_size, "center_crop" in s)):
        if used and value <= 0:
            raise ConfigError(f"preprocess={section.preprocess!r} needs {field} > 0, got {value}")
    if "crop" in s and s & {"resize", "scale_width"} and p.load_size < p.crop_size:
        raise ConfigError(f"load_size={p.load_size} < crop_size={p.crop_size}: the crop is cut from the resized image; "
                          "set load_size >= crop_size")
    side = (("crop_size", p.crop_size) if "crop" in s else ("load_size", p.load_size) if s & {"resize", "scale_width"}
            else ("center_crop_size", p.center_crop_size) if "center_crop" in s else None)
    if side and side[1] % p.multiple:
        ok = max(p.multiple, round(side[1] / p.multiple) * p.multiple)
        raise ConfigError(f"{side[0]}={side[1]}: the generator takes sides that are multiples of {p.multiple} (a U-Net with "
                          f"n downsamplings needs 2^n); use {ok}, or a generator with fewer downsamplings")
    return p


def fixed_size(p):
    """Whether every sample comes out the same size (a batch can hold several)."""
    return "crop" in p.steps or "resize" in p.steps or p.steps == frozenset({"center_crop"})


# ------------------------------------------------------------------------------------------------- geometry


def resize(img, w, h):
    """Bicubic (PIL) of an HxWxC float32 image to w x h, clipped to [0, 1]."""
    if img.shape[:2] == (h, w):
        return img
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c]), "F").resize((w, h), Image.BICUBIC))
             for c in range(img.shape[2])]
    return np.clip(np.stack(chans, -1), 0.0, 1.0).astype(np.float32)


def sizes(p, w, h):
    """(w, h) after the centre crop and the resize of `p`, before the random crop."""
    if "center_crop" in p.steps:
        w = h = p.center_crop_size
    if "resize" in p.steps:
        w = h = p.load_size
    elif "scale_width" in p.steps and not (w == p.load_size and h >= p.crop_size):
        w, h = p.load_size, int(max(p.load_size * h / w, p.crop_size))
    return w, h


def draw(p, w, h, rng):
    """The reference's get_params on an image of w x h: the crop corner (x, y) and the flip."""
    nw, nh = sizes(p, w, h)
    x = int(rng.integers(0, max(0, nw - p.crop_size) + 1))
    y = int(rng.integers(0, max(0, nh - p.crop_size) + 1))
    return dict(crop_pos=(x, y), flip=bool(rng.random() > 0.5))


def apply(p, img, params, name="image"):
    """One image through `p` with drawn `params` (crop_pos, flip); DataError for an image the chain cannot cut."""
    h, w = img.shape[:2]
    if "center_crop" in p.steps:
        c = p.center_crop_size
        if min(h, w) < c:
            raise DataError(f"{name} is {w}x{h}, smaller than center_crop_size={c}")
        top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
        img = img[top:top + c, left:left + c]
        h, w = c, c
    nw, nh = sizes(p, w, h) if p.steps & {"resize", "scale_width"} else (w, h)
    img = resize(img, nw, nh)
    if "crop" in p.steps:
        c = p.crop_size
        if min(nh, nw) < c:
            raise DataError(f"{name} is {nw}x{nh} after preprocessing, smaller than crop_size={c}: use larger images or a "
                            "smaller crop_size")
        x, y = params["crop_pos"]
        img = img[y:y + c, x:x + c]
    if not p.steps:
        m = p.multiple
        th, tw = int(round(h / m) * m), int(round(w / m) * m)
        if not th or not tw:
            raise DataError(f"{name} is {w}x{h}: preprocess='none' rounds its sides to multiples of {m}, which gives 0")
        img = resize(img, tw, th)
    if p.flip and params["flip"]:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


# ------------------------------------------------------------------------------------------------- files


def list_pairs(folder, what):
    """[(path, None)] of A|B images, or [(A path, B path)] where `folder` has A/ and B/ subfolders."""
    a_dir, b_dir = os.path.join(folder or "", "A"), os.path.join(folder or "", "B")
    if not (os.path.isdir(a_dir) and os.path.isdir(b_dir)):
        return [(f, None) for f in list_folder(folder, what)]
    a, b = list_folder(a_dir, f"{what} A"), list_folder(b_dir, f"{what} B")
    rel_b = {os.path.relpath(f, b_dir): f for f in b}
    missing = [os.path.relpath(f, a_dir) for f in a if os.path.relpath(f, a_dir) not in rel_b]
    if missing:
        raise DataError(f"{what}: {len(missing)} of the {len(a)} images in {a_dir} have no pair of the same name in {b_dir} "
                        f"(e.g. {missing[0]})")
    return [(f, rel_b[os.path.relpath(f, a_dir)]) for f in a]


def read_pair(pair, direction, alpha="drop"):
    """(input, target) float32 RGB: A and B of an A|B image (split at int(w / 2)) or of two files, swapped for BtoA."""
    path, second = pair
    if second is None:
        ab = read_rgb(path, alpha)
        w2 = int(ab.shape[1] / 2)
        a, b = ab[:, :w2], ab[:, w2:]
    else:
        a, b = read_rgb(path, alpha), read_rgb(second, alpha)
    return (b, a) if direction == "BtoA" else (a, b)


class PairSource:
    """grain random-access source: record i -> dict(a, b) as read (float32 RGB, input and target by `direction`)."""

    def __init__(self, pairs, direction, alpha="drop"):
        self.pairs, self.direction, self.alpha = list(pairs), direction, alpha

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        a, b = read_pair(self.pairs[i], self.direction, self.alpha)
        return dict(a=a, b=b, index=np.int32(i))


class PairTransform(grain.transforms.RandomMap):
    """dict(a, b) -> the same preprocess geometry and flip on both, drawn from A's size and grain's per-record rng."""

    def __init__(self, p):
        self.p = p

    def random_map(self, element, rng):
        a, b = element["a"], element["b"]
        params = draw(self.p, a.shape[1], a.shape[0], rng)
        name = f"training pair {int(element['index'])}"
        out = dict(a=apply(self.p, a, params, name + " (A)"), b=apply(self.p, b, params, name + " (B)"))
        m, (h, w) = self.p.multiple, out["a"].shape[:2]
        if h % m or w % m:
            raise DataError(f"{name} is {w}x{h} after preprocessing, not a multiple of {m} a side, which the generator "
                            "needs: add '_and_crop' to preprocess (or use 'none', which rounds the sides)")
        return out


def train_iterator(pairs, p, direction, seed, per_host, process_index=0, process_count=1, alpha="drop",
                   num_workers=0, read_threads=1, prefetch=1):
    """This host's resumable batches dict(a, b) (NHWC float32 in [0, 1]): shuffled, repeated, preprocessed."""
    ds = grain.MapDataset.source(PairSource(pairs, direction, alpha)).seed(int(seed)).shuffle().repeat(None)
    ds = ds.random_map(PairTransform(p)).batch(per_host, drop_remainder=True)[process_index::process_count]
    return TrainIterator(ds, num_workers, read_threads, prefetch)


def val_items(pairs, p, direction, alpha="drop", limit=0):
    """dict(name, a, b) of each validation pair: the centre crop and resize of `p` (no random crop, no flip), or
    'none''s rounding; the generator pads other sides itself (jaxsr.infer.upscale)."""
    fixed = Preprocess(p.steps - {"crop"}, p.load_size, p.crop_size, p.center_crop_size, False, p.multiple)
    out = []
    for pair in pairs[:limit or None]:
        a, b = read_pair(pair, direction, alpha)
        name = os.path.splitext(os.path.basename(pair[0]))[0]
        params = dict(crop_pos=(0, 0), flip=False)
        out.append(dict(name=name, a=apply(fixed, a, params, name), b=apply(fixed, b, params, name)))
    return out


__all__ = ["DIRECTIONS", "STEPS", "Preprocess", "apply", "draw", "fixed_size", "list_pairs", "make", "parse", "read_pair",
           "sizes", "train_iterator", "val_items"]
