"""Host data loading: GT crops per second per core from full-size PNG/JPEG folders, a packed set and an LMDB, with the
disk bytes per image, to set against the train step's img/s (not a test).

    python benchmarks/bench_data.py [--n 24] [--size 2040x1356] [--gt 256] [--batch 16] [--workers 2]
                                    [--step-img-s 900]

Writes --n DIV2K-sized photographs (scikit-image's photos upscaled, with a little noise so that they compress like
camera images: 4.3 MB as PNG, as DIV2K's) as PNG and as JPEG q95 into a temporary folder, packs the PNGs
(`jaxsr.data.pack`, BasicSR's 480/240 sub-images, raw and PNG records) and writes the sub-images as a BasicSR LMDB
(PNG values, compression 1, as make_lmdb_from_imgs writes them). Then three tables:
1. decoding a full-size file: alone (OpenCV, as jaxsr.imageio does), with the float conversion of the whole image
   before the crop (what the pipeline once did), and cropping first (what it does);
2. the training pipeline itself (grain: shuffle, read, decode, crop, flip/rot, batch) from each source in one
   process with one read thread (= per core), and with --workers worker processes; disk bytes per image;
   "cores for --step-img-s" is how many such cores keep a train step of that speed fed (default 900 img/s: an RRDB
   x4 step at 40% of an H100's bf16 peak, 0.4 * 989 TFLOP/s / 440.6 GFLOP per GT-256 image);
3. the record encodings a packed set could use, per 480x480 sub-image: bytes and decodes per second (QOI only if
   the `qoi` package is installed; it is not a dependency).
All files are read from the page cache (just written): the figures are decode and pipeline costs, not the disk's.
"""
import argparse
import logging
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from common import table, timeit  # noqa: E402

from jaxsr.data import default_config, resolve_splits, train_iterator  # noqa: E402
from jaxsr.data import lmdb as lmdb_data  # noqa: E402
from jaxsr.data import packed  # noqa: E402
from jaxsr.data.pack import pack, windows  # noqa: E402
from jaxsr.imageio import decode_image, to_float  # noqa: E402


def write_photos(folder, n, w, h, ext):
    """n camera-like photographs of w x h: scikit-image's photos, upscaled, with +-3 levels of noise."""
    import skimage.data as d

    rng = np.random.default_rng(0)
    srcs = [d.astronaut(), d.coffee(), d.chelsea(), d.rocket()]
    os.makedirs(folder, exist_ok=True)
    files = []
    for i in range(n):
        big = cv2.resize(srcs[i % len(srcs)], (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        big = np.clip(big + rng.integers(-3, 4, big.shape), 0, 255).astype(np.uint8)[..., ::-1]
        path = os.path.join(folder, f"img{i:03d}{ext}")
        cv2.imwrite(path, big, [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
        files.append(path)
    return files


def basicsr_lmdb(files, out, crop=480, step=240):
    """BasicSR's DF2K_HR_sub.lmdb layout from full-size files: extract_subimages' windows, key `<stem>_s001`, PNG values
    at compression 1 (make_lmdb_from_imgs), meta_info.txt `<key>.png (h,w,c) 1`."""
    import lmdb

    env = lmdb.open(out, map_size=1 << 36)
    lines = []
    with env.begin(write=True) as txn:
        for f in files:
            img = cv2.imread(f, cv2.IMREAD_UNCHANGED)
            tops, ch = windows(img.shape[0], crop, step)
            lefts, cw = windows(img.shape[1], crop, step)
            k = 0
            for t in tops:
                for left in lefts:
                    k += 1
                    key = f"{os.path.splitext(os.path.basename(f))[0]}_s{k:03d}"
                    sub = np.ascontiguousarray(img[t:t + ch, left:left + cw])
                    txn.put(key.encode(), cv2.imencode(".png", sub, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes())
                    lines.append(f"{key}.png ({ch},{cw},3) 1\n")
    env.close()
    with open(os.path.join(out, "meta_info.txt"), "w") as fh:
        fh.writelines(lines)
    return out


def rate(fn, items, reps):
    """Items per second of fn(item) (median pass of `reps`, one core)."""
    return len(items) / timeit(lambda: [fn(x) for x in items], warmup=1, repeats=reps)


def pipeline_rate(cfg, splits, batch, workers, seconds=3.0):
    """GT crops per second through train_iterator (one read thread per process); start-up not timed."""
    cfg.num_workers, cfg.read_threads, cfg.prefetch = workers, 1, 2
    it = train_iterator(cfg, splits, 4, seed=0, per_host_batch=batch, process_index=0, process_count=1)
    try:
        next(it)
        t, n = time.perf_counter(), 0
        while n < 4 or time.perf_counter() - t < seconds:
            next(it)
            n += 1
        return n * batch / (time.perf_counter() - t)
    finally:
        it.close()


def du(paths):
    return sum(os.path.getsize(p) for p in paths)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--size", default="2040x1356", help="W x H of the photographs (DIV2K's typical size)")
    p.add_argument("--gt", type=int, default=256, help="HR crop side")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="grain worker processes for the worker rows")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--step-img-s", type=float, default=900.0, help="train-step speed to feed, img/s")
    a = p.parse_args()
    logging.getLogger("jaxsr.data").setLevel(logging.ERROR)  # "no validation images": this is no training run
    w, h = (int(v) for v in a.size.split("x"))
    rng = np.random.default_rng(1)
    need = a.step_img_s

    def crop(img):
        top, left = rng.integers(img.shape[0] - a.gt + 1), rng.integers(img.shape[1] - a.gt + 1)
        return img[top:top + a.gt, left:left + a.gt]

    decode_rows, pipe_rows, enc_rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for ext in (".png", ".jpg"):
            files = write_photos(os.path.join(tmp, ext[1:]), a.n, w, h, ext)
            folders[ext] = files
            mb = du(files) / len(files) / 1e6
            for name, fn in (("decode only", lambda f: decode_image(f)),
                             ("decode, float whole image, crop", lambda f: crop(to_float(decode_image(f)[0]))),
                             ("decode, crop, float crop (jaxsr)", lambda f: to_float(crop(decode_image(f)[0])))):
                r = rate(fn, files, a.reps)
                decode_rows.append((f"{ext[1:]} {mb:.1f} MB", name, f"{r:.1f}"))
        sources = [("PNG folder (full size)", dict(train=folders[".png"]), du(folders[".png"]), a.n),
                   ("JPEG q95 folder (full size)", dict(train=folders[".jpg"]), du(folders[".jpg"]), a.n)]
        for enc in packed.ENCODINGS:
            out = os.path.join(tmp, f"packed_{enc}")
            meta = pack(os.path.join(tmp, "png"), out, encoding=enc, workers=0, progress=False)
            c = default_config()
            c.packed = out
            size = du([os.path.join(out, s["file"]) for s in meta["shards"]])
            sources.append((f"packed, {enc} 480x480 records", resolve_splits(c, None, 0), size, meta["records"]))
        db = basicsr_lmdb(folders[".png"], os.path.join(tmp, "sub.lmdb"))
        sources.append(("BasicSR LMDB, PNG 480x480", dict(train=lmdb_data.list_images(db)), du([os.path.join(db, "data.mdb")]),
                        len(lmdb_data.meta(db))))
        base = None
        for name, splits, size, count in sources:
            c = default_config()
            c.gt_size = a.gt
            one = pipeline_rate(c, splits, a.batch, 0)
            many = pipeline_rate(c, splits, a.batch, a.workers)
            base = base or one
            per_image = size / count
            pipe_rows.append((name, f"{per_image / 1e3:,.0f} KB", f"{size / a.n / 1e6:.1f} MB", f"{one:.0f}", f"{one / base:.1f}x",
                              f"{many:.0f}", f"{need / one:.1f}"))

        # record encodings, per 480x480 sub-image of the same photographs
        subs = [np.ascontiguousarray(decode_image(f)[0][:480, :480]) for f in folders[".png"][:8]]
        codecs = [(e, lambda x, e=e: packed.encode([x], e), lambda b: packed.decode(b, "bench")[0][0]) for e in packed.ENCODINGS]
        try:
            import qoi

            codecs.append(("qoi (not used)", qoi.encode, qoi.decode))
        except ImportError:
            pass
        for name, enc, dec in codecs:
            blobs = [enc(x) for x in subs]
            r = rate(lambda b: to_float(crop(dec(b))), blobs, 5)
            enc_rows.append((name, f"{np.mean([len(b) for b in blobs]) / 1e3:.0f} KB", f"{r:.0f}"))
    print(f"{a.n} photographs of {w}x{h}, crop {a.gt}, batch {a.batch}, {os.cpu_count()} CPUs\n")
    print(table(decode_rows, ["files", "what", "img/s per core"]) + "\n")
    print(table(pipe_rows, ["source", "disk / record", "disk / photo", "crops/s, 1 core", "vs PNG",
                            f"{a.workers} workers", f"cores for {need:g} img/s"]) + "\n")
    print(table(enc_rows, ["record encoding", "disk / 480x480", "decode + crop + float /s"]))


if __name__ == "__main__":
    main()
