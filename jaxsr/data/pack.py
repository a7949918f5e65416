"""Pack a folder of images into sub-images in ArrayRecord files, which training reads ~50x faster than full-size PNGs.

    python -m jaxsr.data.pack SRC_DIR OUT [--crop 480] [--step 240] [--thresh 0] [--min-size 0]
                              [--lr LR_DIR --scale 4] [--encoding raw|png] [--workers 8]
    python run_train.py --config configs/x4.py --config.data.packed=OUT --config.data.val_dir=... --workdir runs/x

The sub-images are cut as BasicSR's `scripts/data_preparation/extract_subimages.py` cuts them (crop 480, step 240 for
DIV2K HR): windows at 0, step, 2*step, ... while they fit, plus one window flush with the far edge when more than
`thresh` pixels (BasicSR's thresh_size, 0) would be left out. So, as in BasicSR, the last partial window is not
dropped but shifted inside the image: every pixel is in some sub-image. A side shorter than `crop` gives one
window of the whole side (BasicSR fails on such images); `--min-size` skips images with a side below it.
With `--lr`, each LR file (matched by name, as data.lr_dir is) is cut at the same windows on its grid (crop/scale,
step/scale), and a record holds the aligned HR/LR pair.

OUT is written shard by shard (64 source files each): a shard appears under its name only when it is whole, and
pack.json records the finished ones, so an interrupted run continues where it stopped when rerun. An OUT that
holds anything else (another packed set, other files) is refused, never overwritten. Unreadable files are skipped,
reported, and listed in pack.json.
"""
import argparse
import hashlib
import json
import logging
import os
import sys
import time

import numpy as np

from jaxsr.errors import DataError, ImageError, JaxsrError, warnings_as_lines
from jaxsr.files import atomic_write
from jaxsr.imageio import decode_image

from . import packed
from .packed import ENCODINGS, FORMAT, INDEX, META, VERSION, WRITER_OPTIONS, shard_name
from .sources import check_pair_size, list_folder, match_pairs

log = logging.getLogger("jaxsr.data")
FILES_PER_SHARD = 64
COLUMNS = ("record", "name", "source", "top", "left", "height", "width", "channels", "bits")


def windows(n, crop, step, thresh=0):
    """(start positions, window length) along an axis of n pixels, as BasicSR's extract_subimages places them."""
    if n <= crop:
        return [0], n
    starts = list(range(0, n - crop + 1, step))
    if n - (starts[-1] + crop) > thresh:
        starts.append(n - crop)
    return starts, crop


def _stored(img):
    """Pixels as a record stores them: uint8 or uint16 (float files become 16-bit)."""
    if img.dtype in (np.uint8, np.uint16):
        return img
    return np.round(np.clip(img, 0, 1) * 65535.0).astype(np.uint16)


def cut(task):
    """One source file -> (rows of the index, records) or (None, reason) for a file that is skipped."""
    hr_path, lr_path, o = task
    try:
        gt, bits = decode_image(hr_path)
        lq = decode_image(lr_path)[0] if lr_path else None
    except ImageError as e:
        return None, str(e)
    s = o["scale"] or 1
    if min(gt.shape[:2]) < o["min_size"]:
        return None, f"{gt.shape[1]}x{gt.shape[0]} has a side below --min-size {o['min_size']}"
    if lq is not None:
        try:
            check_pair_size(gt.shape, lq.shape, s, hr_path, lr_path)
        except DataError as e:
            return None, str(e)
        gt = gt[:lq.shape[0] * s, :lq.shape[1] * s]
    grid = lq if lq is not None else gt
    gt, lq = _stored(gt), (_stored(lq) if lq is not None else None)
    tops, ch = windows(grid.shape[0], o["crop"] // s, o["step"] // s, o["thresh"] // s)
    lefts, cw = windows(grid.shape[1], o["crop"] // s, o["step"] // s, o["thresh"] // s)
    stem = os.path.splitext(os.path.basename(hr_path))[0]
    rows, records = [], []
    for top in tops:
        for left in lefts:
            images = [gt[top * s:(top + ch) * s, left * s:(left + cw) * s]]
            if lq is not None:
                images.append(lq[top:top + ch, left:left + cw])
            rows.append((f"{stem}_s{len(rows) + 1:03d}", top * s, left * s, ch * s, cw * s, gt.shape[2], bits))
            records.append(packed.encode(images, o["encoding"]))
    return rows, records


def _fingerprint(options, files, root, lr_files, lr_root):
    """The dataset's id: the options and every source file's relative path and size (not where SRC lives)."""
    listing = [[os.path.relpath(f, root), os.path.getsize(f)] for f in files]
    if lr_files:
        listing += [[os.path.relpath(f, lr_root), os.path.getsize(f)] for f in lr_files]
    return hashlib.sha256(json.dumps(dict(options=options, files=listing), sort_keys=True).encode()).hexdigest()


def _write_meta(out, meta):
    atomic_write(os.path.join(out, META), lambda f: json.dump(meta, f, indent=1), mode="w", error=DataError)


def _prepare(out, meta):
    """The state to continue from: a new OUT, or one holding an unfinished run of the same dataset. Anything else is
    refused; leftovers of this dataset's own interrupted shard are removed."""
    path = os.path.join(out, META)
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old.get("format") != FORMAT or old.get("id") != meta["id"]:
            raise DataError(f"{out} already holds another packed dataset (from {old.get('source')!r}, options "
                            f"{old.get('options')}); give another OUT, or delete it to repack")
        if old.get("complete"):
            return old
        keep = {sh["file"] for sh in old["shards"]} | {sh["file"] + ".tsv" for sh in old["shards"]}
        for f in os.listdir(out):
            if f.startswith("shard-") and f not in keep:  # the shard being written when the last run stopped
                os.remove(os.path.join(out, f))
        return old
    if os.path.isdir(out) and os.listdir(out):
        raise DataError(f"{out} is not empty and holds no packed dataset ({META}); give a new or empty folder for OUT")
    os.makedirs(out, exist_ok=True)
    _write_meta(out, meta)
    return meta


def pack(src, out, crop=480, step=240, thresh=0, min_size=0, lr=None, scale=None, encoding="raw", workers=0,
         files_per_shard=FILES_PER_SHARD, progress=True):
    """Pack SRC into OUT (see the module docstring); returns OUT's pack.json as a dict. Rerunning it resumes."""
    from array_record.python.array_record_module import ArrayRecordWriter

    if encoding not in ENCODINGS:
        raise DataError(f"--encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    if lr and not scale:
        raise DataError("--lr needs --scale (the LR files are HR / scale)")
    s = int(scale) if lr else None
    if min(crop, step) <= 0 or (s and (crop % s or step % s or thresh % s)):
        raise DataError(f"--crop {crop} and --step {step} must be positive" + (f" multiples of --scale {s}" if s else ""))
    src, out = os.path.abspath(src), os.path.abspath(out)
    files = list_folder(src, "SRC_DIR")
    lr_files = match_pairs(files, src, lr, "--lr") if lr else None
    options = dict(crop=int(crop), step=int(step), thresh=int(thresh), min_size=int(min_size), encoding=encoding, scale=s)
    meta = dict(format=FORMAT, version=VERSION, id=_fingerprint(options, files, src, lr_files, lr), options=options,
                source=src, lr_source=os.path.abspath(lr) if lr else None, paired=bool(lr), files=len(files),
                files_per_shard=int(files_per_shard), shards=[], records=0, skipped=[], complete=False)
    meta = _prepare(out, meta)
    if meta["complete"]:
        log.info("%s already holds this packed set (%d records); nothing to do", out, meta["records"])
        return meta
    start = sum(sh["files"] for sh in meta["shards"])
    tasks = [(f, lr_files[i] if lr_files else None, options) for i, f in enumerate(files)][start:]
    bar = _progress(len(files), start, meta, enabled=progress)
    pool = _pool(workers) if workers > 0 else None
    results = pool.imap(cut, tasks) if pool else map(cut, tasks)
    try:
        k, i = len(meta["shards"]), start
        while i < len(files):
            n = min(meta["files_per_shard"], len(files) - i)  # the first run's shard boundaries, also on a resume
            name, rows, skipped = shard_name(k), [], []
            tmp = os.path.join(out, name + ".partial")
            try:
                writer = ArrayRecordWriter(tmp, WRITER_OPTIONS)
                for j in range(i, i + n):
                    got, records = next(results)
                    rel = os.path.relpath(files[j], src)
                    if got is None:
                        log.warning("pack: skipping %s (%s)", files[j], records)
                        skipped.append(dict(file=rel, reason=records))
                    else:
                        for row, rec in zip(got, records):
                            writer.write(rec)
                            rows.append((row[0], rel, *row[1:]) + ((os.path.relpath(lr_files[j], lr),) if lr_files else ()))
                    bar(j + 1, len(rows), len(skipped))
                writer.close()
            except (OSError, RuntimeError, ValueError) as e:  # ArrayRecord reports a full disk as one of these
                raise DataError(f"cannot write {tmp}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; free "
                                "space and rerun the same command to continue") from None
            atomic_write(os.path.join(out, name + ".tsv"), lambda f: f.writelines("\t".join(map(str, r)) + "\n" for r in rows),
                         mode="w", error=DataError)
            os.replace(tmp, os.path.join(out, name))
            meta["shards"].append(dict(file=name, records=len(rows), files=n))
            meta["records"] += len(rows)
            meta["skipped"] += skipped
            _write_meta(out, meta)
            k, i = k + 1, i + n
    finally:
        if pool:
            pool.terminate()
    _finish(out, meta, bool(lr_files))
    return meta


def _finish(out, meta, paired):
    """index.tsv (records numbered in shard order) from the shards' own lists, then mark the set complete."""
    lines, n = ["\t".join(COLUMNS + (("lr_source",) if paired else ())) + "\n"], 0
    for sh in meta["shards"]:
        with open(os.path.join(out, sh["file"] + ".tsv")) as f:
            for line in f:
                lines.append(f"{n}\t{line}")
                n += 1
    atomic_write(os.path.join(out, INDEX), lambda f: f.writelines(lines), mode="w", error=DataError)
    meta["complete"] = True
    _write_meta(out, meta)
    for sh in meta["shards"]:
        os.remove(os.path.join(out, sh["file"] + ".tsv"))


def _pool(workers):
    import multiprocessing

    return multiprocessing.get_context("spawn").Pool(int(workers))


def _progress(total, start, meta, enabled):
    """bar(files done, sub-images and skips of the shard being written): a progress line on stderr, once a second."""
    t0, last, tty = time.perf_counter(), [0.0], sys.stderr.isatty()

    def bar(done, records, skipped):
        now = time.perf_counter()
        if enabled and (now - last[0] > (1.0 if tty else 30.0) or done == total):
            last[0] = now
            rate = (done - start) / max(now - t0, 1e-9)
            print(f"{chr(13) if tty else ''}pack: {done}/{total} files, {meta['records'] + records} sub-images, "
                  f"{len(meta['skipped']) + skipped} skipped, {rate:.1f} files/s", end="\n" if done == total or not tty else "",
                  file=sys.stderr, flush=True)

    return bar


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m jaxsr.data.pack", description=__doc__.split("\n\n")[0])
    p.add_argument("src", metavar="SRC_DIR", help="folder of HR images (read recursively)")
    p.add_argument("out", metavar="OUT", help="new or empty folder (or an unfinished pack of the same images, to resume)")
    p.add_argument("--crop", type=int, default=480, help="sub-image side in HR pixels (BasicSR: 480)")
    p.add_argument("--step", type=int, default=240, help="distance between sub-images (BasicSR: 240)")
    p.add_argument("--thresh", type=int, default=0, help="BasicSR's thresh_size: add a window flush with the edge when "
                   "more than this many pixels would be left out")
    p.add_argument("--min-size", type=int, default=0, help="skip (and report) images with a side below this")
    p.add_argument("--lr", default=None, help="folder of paired LR images, matched by name")
    p.add_argument("--scale", type=int, default=None, help="with --lr: HR = LR * scale")
    p.add_argument("--encoding", default="raw", choices=ENCODINGS, help="raw: fastest reads; png: about half the disk")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes (0: none)")
    a = p.parse_args(argv)
    warnings_as_lines()
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(message)s", force=True)
    try:
        t = time.perf_counter()
        meta = pack(a.src, a.out, a.crop, a.step, a.thresh, a.min_size, a.lr, a.scale, a.encoding, a.workers)
    except JaxsrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return 130
    size = sum(os.path.getsize(os.path.join(a.out, s["file"])) for s in meta["shards"])
    print(f"packed {meta['files']} files into {meta['records']} sub-images in {a.out}: {size / 1e9:.2f} GB, "
          f"{size / max(1, meta['records']) / 1e3:.0f} KB each, {len(meta['skipped'])} file(s) skipped "
          f"({time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
