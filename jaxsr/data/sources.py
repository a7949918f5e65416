"""Where the images come from: folders, LMDBs, packed sets, LR/HR pairing, the train/val/test split and the
built-in photographs.

Everything here works on paths (an image inside an LMDB is `<lmdb folder>/<name>`, see lmdb.py); decoding is in
loader.py. The split is decided once and written to <workdir>/dataset_splits.json, so a resumed run (or another
host) trains on exactly the same images.
"""
import json
import logging
import math
import os
import re

import numpy as np

from jaxsr.errors import DataError, ImageError
from jaxsr.files import atomic_write
from jaxsr.imageio import EXTENSIONS, decode_image, list_images, to_float

from . import lmdb, packed

log = logging.getLogger("jaxsr.data")

SPLITS_FILE = "dataset_splits.json"
SPLIT_NAMES = ("train", "val", "test")

# Photographs in scikit-image's package data (no download). Held-out val/test photographs are fixed so
# that validation always runs on images the model never trained on.
BUILTIN_TRAIN = ("astronaut.png", "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg",
                 "retina.jpg", "ihc.png", "camera.png", "moon.png", "coins.png", "brick.png", "grass.png",
                 "gravel.png")
BUILTIN_VAL = ("chelsea.png", "coffee.png")
BUILTIN_TEST = ("rocket.jpg",)


# ------------------------------------------------------------------------------------------- pixels


def to_rgb(img, alpha="drop"):
    """HxWxC (C in 1, 3, 4) -> HxWx3: gray is repeated, alpha dropped or composited over white."""
    c = img.shape[2]
    if c == 1:
        return np.repeat(img, 3, axis=2)
    if c == 3:
        return img
    if c == 4:
        if alpha == "drop":
            return np.ascontiguousarray(img[..., :3])
        if alpha == "composite":
            a = img[..., 3:]
            return img[..., :3] * a + (1.0 - a)
        raise DataError(f"data.alpha must be 'drop' or 'composite', not {alpha!r}")
    raise ImageError(f"unsupported channel count {c}")


def stored(path):
    """(HxWxC pixels as stored, bits) of an image file or of an image inside an LMDB."""
    inside = lmdb.split(path)
    return lmdb.read(*inside) if inside else decode_image(path)


def read_rgb(path, alpha="drop"):
    """HxWx3 float32 RGB in [0,1] from any supported file or LMDB image (8/16-bit, gray, RGBA)."""
    return to_rgb(to_float(stored(path)[0]), alpha).astype(np.float32, copy=False)


def image_size(path):
    """(h, w) from the file header (or an LMDB's meta_info.txt) without decoding the pixels, or None if unreadable."""
    try:
        from PIL import Image

        inside = lmdb.split(path)
        if inside:
            return lmdb.size(*inside)
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except Exception:  # noqa: BLE001 - any unreadable header: the pipeline skips the file later
        return None


# ------------------------------------------------------------------------------------------- folders


def list_folder(folder, what):
    """Image files under `folder` (recursive, sorted), or the images of an LMDB folder; DataError if the folder is
    missing or has none."""
    if not folder or not os.path.isdir(folder):
        raise DataError(f"{what}: folder {folder!r} does not exist")
    if lmdb.is_lmdb(folder):
        return lmdb.list_images(folder)
    if packed.is_packed(folder):
        raise DataError(f"{what}: {folder} is a packed set; give it as data.packed (training only)")
    files = list_images(folder)
    if not files:
        raise DataError(f"{what}: no images ({', '.join(EXTENSIONS)}) under {folder}")
    return [os.path.abspath(f) for f in files]


def _key(path, root):
    return os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")


def match_pairs(hr_files, hr_root, lr_root, what):
    """LR file for each HR file, matched by relative path stem (`sub/0001.png` <-> `sub/0001.*`).

    An LR stem may also carry a DIV2K-style scale suffix (`0001x4.png`). Every HR file needs a partner.
    """
    lr_files = list_folder(lr_root, what + " LR")
    index = {}
    for f in lr_files:
        k = _key(f, lr_root)
        index.setdefault(k, f)
        index.setdefault(re.sub(r"x\d+$", "", k), f)
    missing = [f for f in hr_files if _key(f, hr_root) not in index]
    if missing:
        raise DataError(f"{what}: {len(missing)} HR image(s) have no LR file of the same name in {lr_root}, "
                        f"e.g. {missing[0]} (expected {_key(missing[0], hr_root)}.<ext>)")
    return [index[_key(f, hr_root)] for f in hr_files]


def check_pair_size(hr_shape, lr_shape, scale, hr_path, lr_path):
    """Raise DataError unless LR is HR/scale (HR may be up to scale-1 pixels larger: it gets modcropped)."""
    (H, W), (h, w) = hr_shape[:2], lr_shape[:2]
    if H // scale != h or W // scale != w:
        raise DataError(f"paired data: {lr_path} is {w}x{h} but its HR {hr_path} is {W}x{H}; "
                        f"at scale {scale} the LR must be {W // scale}x{H // scale}")


def check_pairs(hr_files, lr_files, scale):
    """Scale check of every pair from the file headers (fast); files with unreadable headers are left to
    the pipeline, which skips them with a warning."""
    for hp, lp in zip(hr_files, lr_files):
        hs, ls = image_size(hp), image_size(lp)
        if hs and ls:
            check_pair_size(hs, ls, scale, hp, lp)


# ------------------------------------------------------------------------------------------- splits


def split_counts(n, fractions):
    """(train, val, test) counts for n images: val and test rounded, at least 1 where the fraction is > 0."""
    f_train, f_val, f_test = (float(f) for f in fractions)
    if min(f_train, f_val, f_test) < 0 or not math.isclose(f_train + f_val + f_test, 1.0, abs_tol=1e-6):
        raise DataError(f"data.split must be three non-negative fractions summing to 1, not {tuple(fractions)}")
    n_val = max(1, math.floor(n * f_val + 0.5)) if f_val > 0 else 0
    n_test = max(1, math.floor(n * f_test + 0.5)) if f_test > 0 else 0
    return n - n_val - n_test, n_val, n_test


def auto_split(n, fractions, seed, what):
    """Index lists (train, val, test), each sorted, from a seeded permutation of range(n)."""
    n_train, n_val, n_test = split_counts(n, fractions)
    if n_train < 1:
        need = next(m for m in range(1, 1000) if split_counts(m, fractions)[0] >= 1)
        raise DataError(f"{what} has {n} image(s); a {'/'.join(f'{f:g}' for f in fractions)} train/val/test "
                        f"split needs at least {need}")
    perm = np.random.default_rng(seed).permutation(n)
    val, test, train = perm[:n_val], perm[n_val:n_val + n_test], perm[n_val + n_test:]
    return [sorted(int(i) for i in s) for s in (train, val, test)]


def builtin_photos():
    """Splits of the photographs inside scikit-image's package folder (gray ones become RGB when read)."""
    try:
        import skimage
    except ImportError:
        raise DataError("no dataset configured (data.hr_dir or data.train_dir) and scikit-image, whose "
                        "photographs are the built-in fallback, is not installed") from None
    root = os.path.join(os.path.dirname(skimage.__file__), "data")
    pick = lambda names: [os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n))]
    out = dict(train=pick(BUILTIN_TRAIN), val=pick(BUILTIN_VAL), test=pick(BUILTIN_TEST))
    if not out["train"] or not out["val"]:
        raise DataError(f"no dataset configured and scikit-image's photographs are missing from {root}")
    return out, root


DATASET_FIELDS = ("hr_dir", "lr_dir", "train_dir", "val_dir", "test_dir", "train_lr_dir", "val_lr_dir",
                  "test_lr_dir")


def _dataset_fields(cfg):
    """The config fields that decide the split, folders made absolute (recorded to catch a changed dataset)."""
    out = {k: (os.path.abspath(cfg.get(k)) if cfg.get(k) else None) for k in DATASET_FIELDS}
    out["split"] = [float(f) for f in cfg.split] if cfg.hr_dir else None
    if cfg.get("packed") or cfg.get("sources"):  # recorded only when used: older split files stay valid
        out["packed"] = os.path.abspath(cfg.packed) if cfg.get("packed") else None
        out["sources"] = source_entries(cfg)
    return out


SOURCE_KINDS = ("dir", "lmdb", "packed")


def source_entries(cfg):
    """data.sources (or data.packed alone) as [dict(kind, path, lr, weight)], paths absolute; DataError naming the
    entry that is not one of {dir|lmdb|packed: path, lr: path (dir and lmdb), weight: number > 0}."""
    raw = list(cfg.get("sources") or ())
    if cfg.get("packed"):
        if raw:
            raise DataError("set data.packed or data.sources, not both (a packed set is a source too: "
                            f"data.sources=[{{'packed': {cfg.packed!r}, 'weight': 1}}, ...])")
        raw = [dict(packed=cfg.packed)]
    out = []
    for i, e in enumerate(raw):
        what = f"data.sources[{i}]"
        e = dict(e) if hasattr(e, "keys") else None
        kinds = [k for k in SOURCE_KINDS if e and e.get(k)]
        if e is None or len(kinds) != 1 or set(e) - {*SOURCE_KINDS, "lr", "weight"}:
            raise DataError(f"{what} must be a dict with one of {', '.join(SOURCE_KINDS)} (a path), optionally 'lr' "
                            f"(paired LR of a dir or lmdb) and 'weight' (> 0), not {e if e is not None else raw[i]!r}")
        kind = kinds[0]
        try:
            weight = float(e.get("weight", 1.0))
        except (TypeError, ValueError):
            weight = float("nan")
        if not (math.isfinite(weight) and weight > 0):
            raise DataError(f"{what}: weight must be a number > 0, not {e.get('weight')!r}")
        if kind == "packed" and e.get("lr"):
            raise DataError(f"{what}: a packed set holds its own LR (pack it with --lr); remove 'lr'")
        out.append(dict(kind=kind, path=os.path.abspath(e[kind]), lr=os.path.abspath(e["lr"]) if e.get("lr") else None,
                        weight=weight))
    return out


def _training_sources(cfg):
    """The split record's `sources`: per source its kind, weight and images (files, LMDB images) or packed-set id."""
    out = []
    for i, e in enumerate(source_entries(cfg)):
        what = f"data.sources[{i}]" if cfg.get("sources") else "data.packed"
        if e["kind"] == "packed":
            meta = packed.read_meta(e["path"], what)
            out.append(dict(e, id=meta["id"], records=meta["records"], paired=bool(meta["paired"]),
                            scale=meta["options"]["scale"]))
            continue
        if e["kind"] == "lmdb" and not lmdb.is_lmdb(e["path"]):
            raise DataError(f"{what}: {e['path']} is not an LMDB folder (no data.mdb); use 'dir' for a folder of images")
        files = list_folder(e["path"], what)
        lr = match_pairs(files, e["path"], e["lr"], what + " lr") if e["lr"] else None
        out.append(dict(e, train=files, train_lr=lr, paired=lr is not None))
    paired = [s["paired"] for s in out]
    if any(paired) and not all(paired):
        raise DataError(f"data.sources: sources {[i for i, p in enumerate(paired) if p]} have paired LR and "
                        f"{[i for i, p in enumerate(paired) if not p]} have none; give every source its LR, or none")
    return out


def check_options(cfg):
    limit = cfg.get("limit_train_files", 0)
    if limit < 0 or (limit >= 1 and limit != int(limit)):
        raise DataError(f"data.limit_train_files must be a count (1, 2, ...) or a fraction (0 < f < 1) of the training "
                        f"files, or 0 for all; got {limit!r}")
    if cfg.small_images not in ("pad", "skip"):
        raise DataError(f"data.small_images must be 'pad' or 'skip', not {cfg.small_images!r}")
    if cfg.alpha not in ("drop", "composite"):
        raise DataError(f"data.alpha must be 'drop' or 'composite', not {cfg.alpha!r}")


def check_folders(cfg, seed):
    """What `resolve_splits` refuses in this config (missing or empty folders, broken pairing), writing nothing: for
    --print_config. Returns the split it would decide."""
    return _from_config(cfg, seed)


def _from_config(cfg, seed):
    """Build the split record from the config (no file involved)."""
    rec = dict(version=1, seed=int(seed), config=_dataset_fields(cfg))
    lr = {}
    if cfg.get("packed") or cfg.get("sources"):
        if cfg.hr_dir or cfg.lr_dir or cfg.train_dir or cfg.train_lr_dir:
            raise DataError("data.packed/data.sources are the training set: unset data.hr_dir/lr_dir/train_dir/"
                            "train_lr_dir, and give validation images as data.val_dir (+ val_lr_dir)")
        rec["source"] = "sources"
        rec["sources"] = _training_sources(cfg)
        for name in ("val", "test"):
            folder = cfg.get(f"{name}_dir")
            rec[name] = list_folder(folder, f"data.{name}_dir") if folder else []
            if cfg.get(f"{name}_lr_dir") and folder:
                lr[name] = match_pairs(rec[name], folder, cfg.get(f"{name}_lr_dir"), f"data.{name}_lr_dir")
        if not cfg.val_dir:
            log.warning("data.val_dir is not set: there will be no validation images")
        rec["train"] = []
        for name in SPLIT_NAMES:
            rec[f"{name}_lr"] = lr.get(name)
        if rec["sources"][0]["paired"]:
            rec["train_lr"] = []  # paired training (the trainer reads it so): the LR lists are the sources' own
        return rec
    if cfg.train_dir:
        if cfg.hr_dir or cfg.lr_dir:
            raise DataError("set either data.train_dir (+ val_dir/test_dir) or data.hr_dir (+ lr_dir), not both")
        rec["source"] = "folders"
        for name in SPLIT_NAMES:
            folder = cfg.get(f"{name}_dir")
            rec[name] = list_folder(folder, f"data.{name}_dir") if folder else []
            lr_dir = cfg.get(f"{name}_lr_dir")
            if lr_dir and folder:
                lr[name] = match_pairs(rec[name], folder, lr_dir, f"data.{name}_lr_dir")
        if not cfg.val_dir:
            log.warning("data.val_dir is not set: there will be no validation images")
        if lr and "train" not in lr:
            raise DataError("paired validation/test LR folders are set but data.train_lr_dir is not")
    elif cfg.hr_dir:
        rec["source"] = "hr_dir"
        files = list_folder(cfg.hr_dir, "data.hr_dir")
        lr_files = match_pairs(files, cfg.hr_dir, cfg.lr_dir, "data.lr_dir") if cfg.lr_dir else None
        idx = auto_split(len(files), cfg.split, seed, f"data.hr_dir {cfg.hr_dir}")
        for name, ids in zip(SPLIT_NAMES, idx):
            rec[name] = [files[i] for i in ids]
            if lr_files:
                lr[name] = [lr_files[i] for i in ids]
    else:
        if cfg.lr_dir:
            raise DataError("data.lr_dir is set without data.hr_dir")
        photos, root = builtin_photos()
        rec["source"] = "builtin"
        rec.update(photos)
    for name in SPLIT_NAMES:
        rec[f"{name}_lr"] = lr.get(name) if lr else None
    if not rec["train"]:
        raise DataError("the training split is empty")
    return rec


def resolve_splits(cfg, workdir, seed):
    """Which file goes to train/val/test: read from <workdir>/dataset_splits.json, or decided and written there.

    Returns dict(train, val, test: lists of HR paths; train_lr, val_lr, test_lr: parallel LR path lists, or
    None when unpaired; source: 'builtin' | 'hr_dir' | 'folders' | 'sources'). With data.packed/data.sources,
    `sources` lists the training sources (kind, weight, and their images or the packed set's id) and `train` is
    empty (`train_lr` is [] when they are paired). On resume the recorded split is reused
    as is, never re-split, even if the folder gained files; a config naming other folders is refused
    (DataError naming the field). workdir=None: decide without writing.
    Every host computes the same split (sorted listing, seeded permutation), so any host may write it.
    """
    path = os.path.join(workdir, SPLITS_FILE) if workdir else None
    if path and os.path.exists(path):
        with open(path) as f:
            rec = json.load(f)
        now = _dataset_fields(cfg)
        for k, v in rec.get("config", {}).items():
            if now.get(k) != v:
                raise DataError(f"data.{k} is {now.get(k)!r} but this workdir's split ({path}) was made with "
                                f"{v!r}; use a new workdir for another dataset, or delete {SPLITS_FILE} to re-split")
        log.info("data: reusing the split recorded in %s (%s)", path, _counts(rec))
    else:
        rec = _from_config(cfg, seed)
        if path:
            os.makedirs(workdir, exist_ok=True)
            atomic_write(path, lambda f: json.dump(rec, f, indent=1), mode="w", error=DataError)
            log.info("data: split written to %s (%s)", path, _counts(rec))
    if rec["source"] == "builtin":
        log.warning("data: no dataset configured (data.hr_dir / data.train_dir); training on %d built-in "
                    "photographs that ship with scikit-image, validating on %d held-out ones (%s)",
                    len(rec["train"]), len(rec["val"]), ", ".join(os.path.basename(p) for p in rec["val"]))
    return rec


def _counts(rec):
    paired = ", paired" if rec.get("train_lr") is not None else ""
    if rec.get("sources"):
        n = sum(len(s["train"]) if "train" in s else s["records"] for s in rec["sources"])
        return (f"{len(rec['sources'])} source(s){paired}: {n} train / " +
                " / ".join(f"{len(rec[k])} {k}" for k in ("val", "test")))
    return f"{rec['source']}{paired}: " + " / ".join(f"{len(rec[n])} {n}" for n in SPLIT_NAMES)
