"""Host data loading: decode + crop throughput per core, to set against the train step's img/s (not a test).

    python benchmarks/bench_data.py [--n 24] [--size 2040x1356] [--gt 256] [--batch 16] [--workers 2]
                                    [--step-img-s 200]

Writes --n DIV2K-sized photographs (scikit-image's photos upscaled, with a little noise so that they compress like
camera images) as PNG and as JPEG q95 into a temporary folder, then prints one table:
- decode alone (OpenCV, as jaxsr.imageio does);
- decode, float conversion of the whole image, crop: what the pipeline did before it cropped first;
- decode, crop, float conversion of the crop: what jaxsr's pipeline does;
- the grain training pipeline itself (shuffle, decode, crop, flip/rot, batch) in one process with one read
  thread, and with --workers worker processes.
img/s per core is the one-process figure; "cores for --step-img-s" is how many such cores keep a train step of
that speed fed. The GPU step speeds are in docs/performance.md.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from common import table, timeit  # noqa: E402

from jaxsr.data import default_config, train_iterator  # noqa: E402
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


def rate(fn, files, reps):
    """Images per second of fn(path) over the files (median pass of `reps`, one core)."""
    return len(files) / timeit(lambda: [fn(f) for f in files], warmup=1, repeats=reps)


def pipeline_rate(files, gt, batch, workers, batches):
    cfg = default_config()
    cfg.gt_size, cfg.num_workers, cfg.read_threads, cfg.prefetch = gt, workers, 1, 2
    it = train_iterator(cfg, dict(train=files), 4, seed=0, per_host_batch=batch, process_index=0, process_count=1)
    try:
        next(it)  # start-up (worker processes) is not timed
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches * batch / (time.perf_counter() - t)
    finally:
        it.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--size", default="2040x1356", help="W x H of the photographs (DIV2K's typical size)")
    p.add_argument("--gt", type=int, default=256, help="HR crop side")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="grain worker processes for the last row")
    p.add_argument("--batches", type=int, default=4, help="batches timed per pipeline row")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--step-img-s", type=float, default=200.0, help="train-step speed to feed, img/s")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    rng = np.random.default_rng(1)

    def crop(img):
        top, left = rng.integers(img.shape[0] - a.gt + 1), rng.integers(img.shape[1] - a.gt + 1)
        return img[top:top + a.gt, left:left + a.gt]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ext in (".png", ".jpg"):
            files = write_photos(os.path.join(tmp, ext[1:]), a.n, w, h, ext)
            mb = sum(os.path.getsize(f) for f in files) / len(files) / 1e6
            cases = [
                ("decode only", lambda f: decode_image(f)),
                ("decode, float whole image, crop", lambda f: crop(to_float(decode_image(f)[0]))),
                ("decode, crop, float crop (jaxsr)", lambda f: to_float(crop(decode_image(f)[0]))),
            ]
            for name, fn in cases:
                r = rate(fn, files, a.reps)
                rows.append((f"{ext[1:]} {mb:.1f} MB", name, f"{r:.1f}", f"{a.step_img_s / r:.1f}"))
            for workers in (0, a.workers):
                r = pipeline_rate(files, a.gt, a.batch, workers, a.batches)
                per_core = r / max(1, workers)
                rows.append((f"{ext[1:]} {mb:.1f} MB", f"grain pipeline, {workers} worker processes", f"{r:.1f}",
                             f"{a.step_img_s / per_core:.1f}"))
    print(f"{a.n} photographs of {w}x{h}, crop {a.gt}, batch {a.batch}, {os.cpu_count()} CPUs")
    print(table(rows, ["files", "what", "img/s", f"cores for {a.step_img_s:g} img/s"]))


if __name__ == "__main__":
    main()
