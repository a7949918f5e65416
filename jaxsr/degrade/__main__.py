"""Preview the configured degradations before training.

    python -m jaxsr.degrade --config configs/x4.py --input DIR --output DIR [--n 8] [--seed 0] [--crop 400]

Writes lq_000.png ... and contact_sheet.png (one row per sample: GT | LQ upscaled by nearest neighbour).
"""
import argparse
import functools
import importlib.util
import os
import sys

import jax
import numpy as np

from jaxsr.errors import ImageError, warnings_as_lines
from jaxsr.imageio import list_images, pad_to, read_image, write_image

from .pipeline import degrade


def load_config(path):
    spec = importlib.util.spec_from_file_location("preview_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def random_crop(rng, img, size):
    """Real-ESRGAN's dataset step: reflect-pad (edge not repeated) to at least size, then a random crop."""
    img = pad_to(img[..., :3] if img.shape[2] >= 3 else np.repeat(img[..., :1], 3, axis=2), size, size)
    top = rng.integers(0, img.shape[0] - size + 1)
    left = rng.integers(0, img.shape[1] - size + 1)
    return img[top:top + size, left:left + size]


def contact_sheet(gts, lqs, gap=4):
    """Rows of GT | LQ-upscaled with white gaps."""
    h, w = gts.shape[1:3]
    rows = []
    for gt, lq in zip(gts, lqs):
        up = np.repeat(np.repeat(lq, h // lq.shape[0], axis=0), w // lq.shape[1], axis=1)
        rows.append(np.concatenate([gt, np.ones((h, gap, 3), np.float32), up], axis=1))
        rows.append(np.ones((gap, 2 * w + gap, 3), np.float32))
    return np.concatenate(rows[:-1], axis=0)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m jaxsr.degrade", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="Python file whose get_config() has .degrade and .scale")
    ap.add_argument("--input", required=True, help="folder of clean images")
    ap.add_argument("--output", required=True, help="folder for lq_*.png and contact_sheet.png")
    ap.add_argument("--n", type=int, default=8, help="number of samples (one batch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=None,
                    help="HR crop size fed to the pipeline (default: 400 for realesrgan, as Real-ESRGAN, else gt_size)")
    args = ap.parse_args(argv)
    warnings_as_lines()

    try:
        conf = load_config(args.config)
    except Exception as e:  # a missing file, a syntax error or a failing get_config(): say which, no traceback
        sys.exit(f"error: cannot load the config {args.config}: {type(e).__name__}: {e}")
    cfg, scale = conf.degrade, conf.scale
    files = list_images(args.input) if os.path.isdir(args.input) else []
    if not files:
        sys.exit(f"error: no images found in {args.input}")
    crop = args.crop or (max(400, cfg.gt_size) if cfg.mode == "realesrgan" else cfg.gt_size or 256)
    crop -= crop % scale
    if cfg.gt_size and crop < cfg.gt_size:
        sys.exit(f"error: --crop {args.crop} is smaller than the config's degrade.gt_size {cfg.gt_size}, the crop the "
                 f"pipeline cuts from it; use --crop {cfg.gt_size} or more")
    rng = np.random.default_rng(args.seed)
    images = []
    for path in files:  # an unreadable file is reported and the others are used, as training does
        if len(images) == args.n:
            break
        try:
            images.append(read_image(path))
        except ImageError as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
    if not images:
        sys.exit(f"error: none of the {len(files)} image(s) in {args.input} could be read")
    gt = np.stack([random_crop(rng, images[i % len(images)], crop) for i in range(args.n)])

    out = jax.jit(functools.partial(degrade, cfg=cfg, scale=scale))(jax.random.key(args.seed), gt)
    gts, lqs = np.asarray(out["gt"]), np.asarray(out["lq"])
    os.makedirs(args.output, exist_ok=True)
    for i, lq in enumerate(lqs):
        write_image(os.path.join(args.output, f"lq_{i:03d}.png"), lq)
    sheet = os.path.join(args.output, "contact_sheet.png")
    write_image(sheet, contact_sheet(gts, lqs))
    print(f"{args.n} samples ({cfg.mode}, x{scale}, GT {gts.shape[1]}x{gts.shape[2]} -> LQ {lqs.shape[1]}x{lqs.shape[2]}) "
          f"from {len(files)} images: {args.output}/lq_*.png, {sheet}")


if __name__ == "__main__":
    main()
