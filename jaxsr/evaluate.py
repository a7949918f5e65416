"""`python -m jaxsr.evaluate`: PSNR/SSIM (and LPIPS/DISTS/TOPIQ) of one or more models on HR images, with BasicSR's definitions.

    python -m jaxsr.evaluate --weights A.pth [--weights B_dir ...] --hr DIR [--lr DIR] --scale 4 [--out REPORT_DIR]
    python -m jaxsr.evaluate --hr WORKDIR            # its recorded test split, its latest export

What is measured, as BasicSR's test scripts do it: images are read as RGB (gray repeated, alpha dropped);
without --lr the HR is modcropped to the scale and LR = MATLAB-bicubic downscale stored as 8-bit; with --lr
the HR is cropped to LR x scale. Model outputs are clipped and rounded to 8 bit, then PSNR/SSIM
(`jaxsr.metrics`) on the Y channel with `scale` px cropped at each border (options: --rgb, --crop-border).
Means are over images. A MATLAB-bicubic upscale of the LR is reported as the `bicubic` baseline.
Unreadable or too-small images are listed as failed and the rest are measured.

LPIPS (`--lpips`), DISTS (`--dists`) and TOPIQ-FR (`--topiq`) take user-supplied weight files (`jaxsr.lpips`,
`jaxsr.dists`, `jaxsr.topiq`).
`bicubic`, `score` and `load_perceptual` are the measuring code the trainer's validation uses too.
"""
import argparse
import csv
import json
import os
import sys

import numpy as np

from jaxsr import metrics
from jaxsr.archs import check_branch
from jaxsr.errors import DataError, ImageError, WeightsError, warnings_as_lines
from jaxsr.files import distinct_stems, unique_names, writable_dir
from jaxsr.imageio import load_image, to_u8, write_image
from jaxsr.infer import add_tile_args, check_tiling, tile_kwargs, upscale

SPLITS_FILE = "dataset_splits.json"
SSIM_WINDOW = 11  # BasicSR's SSIM needs at least this many px per side after the border crop
BICUBIC = "bicubic"
METRICS = ("psnr", "ssim", "lpips", "dists", "topiq")
LOWER_IS_BETTER = ("lpips", "dists")  # distances; PSNR and SSIM are similarities, TOPIQ a quality score
PERCEPTUAL = METRICS[2:]  # the ones from user-supplied weight files


# ------------------------------------------------------------------------------------------- measuring


def bicubic(lr, scale):
    """The baseline to beat: MATLAB-bicubic upscaling of the LR."""
    from jaxsr.degrade.ops import imresize

    return np.clip(imresize(lr, scale), 0.0, 1.0)


def load_perceptual(lpips=None, dists=None, topiq=None):
    """{name: fn(sr, hr) -> float} for the perceptual metrics whose weight files are given (LPIPS and DISTS each a pair
    of paths, TOPIQ-FR one path)."""
    out = {}
    if lpips:
        from jaxsr.lpips import load_lpips

        out["lpips"] = load_lpips(*lpips)
    if dists:
        from jaxsr.dists import load_dists

        out["dists"] = load_dists(*dists)
    if topiq:
        from jaxsr.topiq import load_topiq

        out["topiq"] = load_topiq(topiq)
    return out


def score(outs, hr, crop_border, y_channel=True, perceptual=None):
    """{name: {psnr, ssim[, lpips, dists, topiq]}} for each output in `outs` against `hr`, as BasicSR's test scripts
    measure: both as 8-bit images (clipped, rounded), `crop_border` px dropped at each side, on Y or RGB; the
    perceptual metrics (`load_perceptual`) on the whole 8-bit RGB images."""
    hr8 = to_u8(hr)
    res = {}
    for name, sr in outs.items():
        sr8 = to_u8(sr)
        res[name] = {"psnr": metrics.psnr(sr8, hr8, crop_border, y_channel), "ssim": metrics.ssim(sr8, hr8, crop_border, y_channel)}
        for metric, fn in (perceptual or {}).items():
            res[name][metric] = fn(sr8.astype(np.float32) / 255.0, hr8.astype(np.float32) / 255.0)
    return res


# ------------------------------------------------------------------------------------------- inputs


def image_jobs(hr, lr=None, split="test"):
    """[(name, hr_path, lr_path or None)] from a folder (optionally paired with --lr) or a workdir's split."""
    from jaxsr.data.sources import list_folder, match_pairs

    rec_path = os.path.join(hr, SPLITS_FILE)
    if os.path.isfile(rec_path):
        with open(rec_path) as f:
            rec = json.load(f)
        if split not in rec:
            raise DataError(f"{rec_path} has no {split!r} split (it has {', '.join(k for k in ('train', 'val', 'test') if k in rec)})")
        files = [p if os.path.isabs(p) else os.path.join(hr, p) for p in rec[split]]
        if not files:
            raise DataError(f"the {split} split in {rec_path} is empty")
        lrs = rec.get(f"{split}_lr") or [None] * len(files)
        if lr:
            lrs = match_pairs(files, os.path.commonpath([os.path.dirname(f) for f in files]), lr, "--lr")
        names = unique_names([os.path.splitext(os.path.basename(f))[0] for f in files])
        return list(zip(names, files, lrs))
    files = list_folder(hr, "--hr")
    lrs = match_pairs(files, hr, lr, "--lr") if lr else [None] * len(files)
    names = [n.replace(os.sep, "/") for n in distinct_stems([os.path.relpath(f, hr) for f in files])]
    return list(zip(names, files, lrs))


def load_pair(hr_path, lr_path, scale):
    """(hr, lr, notes): RGB float32 in [0,1], HR cropped to match the LR; notes say what was converted."""
    from jaxsr.data import bicubic_lr, to_rgb
    from jaxsr.data.sources import check_pair_size

    hr, _ = load_image(hr_path)
    notes = {1: ["grayscale: measured as RGB"], 4: ["alpha channel dropped"]}.get(hr.shape[2], [])
    hr = to_rgb(hr)
    if lr_path:
        lr = to_rgb(load_image(lr_path)[0])
        check_pair_size(hr.shape, lr.shape, scale, hr_path, lr_path)
    else:
        hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
        if not hr.size:
            raise ImageError(f"{hr_path} is smaller than the scale {scale}")
        lr = bicubic_lr(hr, scale)
    return hr[: lr.shape[0] * scale, : lr.shape[1] * scale], lr, notes


# ------------------------------------------------------------------------------------------- pictures


def _detail_box(hr, side):
    """Top-left corner of the side x side square with the most gradient energy: where models differ most."""
    g = np.abs(np.diff(hr.mean(2), axis=0))[:, :-1] + np.abs(np.diff(hr.mean(2), axis=1))[:-1]
    h, w = g.shape
    step = max(1, side // 2)
    best, where = -1.0, (0, 0)
    for y in range(0, max(1, h - side + 1), step):
        for x in range(0, max(1, w - side + 1), step):
            e = float(g[y : y + side, x : x + side].sum())
            if e > best:
                best, where = e, (y, x)
    return where


def comparison_picture(panels, max_side=1024):
    """[(label, HxWx3)] side by side with labels on top, and below each the same zoomed detail crop."""
    import cv2

    h, w = panels[0][1].shape[:2]
    side = max(8, min(h, w) // 4)
    y0, x0 = _detail_box(panels[-1][1], side)
    f = min(1.0, max_side / max(h, w))
    ph, pw = max(1, round(h * f)), max(1, round(w * f))
    zoom = max(1, min(ph, pw) // side)
    band, white = 32, 255
    cols = []
    for label, img in panels:
        img = to_u8(img)
        top = cv2.resize(img, (pw, ph), interpolation=cv2.INTER_AREA) if f < 1 else img.copy()
        bx0, by0, bs = round(x0 * f), round(y0 * f), max(2, round(side * f))
        cv2.rectangle(top, (bx0, by0), (bx0 + bs - 1, by0 + bs - 1), (255, 40, 40), 1)
        crop = cv2.resize(img[y0 : y0 + side, x0 : x0 + side], (side * zoom, side * zoom), interpolation=cv2.INTER_NEAREST)
        crop = np.pad(crop, ((0, 0), (0, pw - crop.shape[1]), (0, 0)), constant_values=white) if crop.shape[1] < pw else crop[:, :pw]
        head = np.full((band, pw, 3), white, np.uint8)
        for k, line in enumerate(label.split("\n")[:2]):
            cv2.putText(head, line, (3, 13 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        gap = np.full((4, pw, 3), white, np.uint8)
        cols.append(np.concatenate([head, top, gap, crop], 0))
    sep = np.full((cols[0].shape[0], 4, 3), white, np.uint8)
    return np.concatenate([c for col in cols for c in (col, sep)][:-1], 1)  # uint8 RGB


# ------------------------------------------------------------------------------------------- evaluation


def evaluate(models, jobs, scale, crop_border=None, y_channel=True, infer_kwargs=None, out_dir=None, perceptual=None,
             save_images=False, log=print):
    """Measure every model on every (name, hr_path, lr_path) job; returns the report (settings, per image, means,
    failed). With out_dir: compare/<image>.png, and with save_images the measured 8-bit outputs
    (sr/<model>/<image>.png) and the LR that was fed (lr/<image>.png)."""
    crop = scale if crop_border is None else crop_border
    infer_kwargs = infer_kwargs or {}
    names = [BICUBIC, *models]
    rows, failed = [], []
    for name, hr_path, lr_path in jobs:
        try:
            hr, lr, notes = load_pair(hr_path, lr_path, scale)
            if min(hr.shape[:2]) - 2 * crop < SSIM_WINDOW:
                raise ImageError(f"{hr_path} is {hr.shape[1]}x{hr.shape[0]}: too small for SSIM after cropping {crop} px per border")
            outs = {BICUBIC: bicubic(lr, scale), **{m: upscale(model, lr, **infer_kwargs) for m, model in models.items()}}
            res = score(outs, hr, crop, y_channel, perceptual)
        except (ImageError, ValueError) as e:  # DataError, shape and channel errors are ValueErrors
            failed.append({"image": name, "hr": hr_path, "error": str(e)})
            log(f"skipped {name}: {e}")
            continue
        rows.append({"image": name, "hr": hr_path, "lr": lr_path, "notes": notes, "results": res})
        log(_row_text(name, res, names) + ("  (" + "; ".join(notes) + ")" if notes else ""))
        if out_dir:
            panels = [(_label(m, res[m]), outs[m]) for m in names] + [("HR", hr)]
            path = os.path.join(out_dir, "compare", name + ".png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_image(path, comparison_picture(panels).astype(np.float32) / 255.0)
            if save_images:
                for sub, img in [(f"sr/{m}", to_u8(outs[m])) for m in names] + [("lr", to_u8(lr))]:
                    path = os.path.join(out_dir, sub, name + ".png")
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    write_image(path, img.astype(np.float32) / 255.0)
    keys = ["psnr", "ssim", *(perceptual or {})]
    means = {m: {k: metrics.mean_over_images([r["results"][m][k] for r in rows]) if rows else None for k in keys} for m in names}
    return {"settings": {"scale": scale, "crop_border": crop, "channel": "Y" if y_channel else "RGB", "lr": "given" if any(j[2] for j in jobs) else "matlab-bicubic",
                         "metric_input": "8-bit (clipped, rounded)", **{k: v for k, v in infer_kwargs.items() if k != "progress"}},
            "models": names, "mean": means, "images": rows, "failed": failed}


def _label(m, r):
    return f"{m}\n{r['psnr']:.2f} dB / {r['ssim']:.4f}"


def _row_text(name, res, names):
    return f"{name:<24.24}" + "".join(f"  {m}: {res[m]['psnr']:6.2f} / {res[m]['ssim']:.4f}" +
                                      "".join(f" / {res[m][k]:.4f}" for k in PERCEPTUAL if k in res[m]) for m in names)


def write_report(report, out_dir):
    """metrics.json (everything) and metrics.csv (one row per image and model, then a MEAN row per model)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(report, f, indent=1)
    keys = list(next(iter(report["mean"].values())))
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "model", *keys])
        for r in report["images"]:
            for m in report["models"]:
                w.writerow([r["image"], m, *(r["results"][m][k] for k in keys)])
        for m in report["models"]:
            w.writerow(["MEAN", m, *(report["mean"][m][k] for k in keys)])


def _model_names(paths):
    base = [os.path.splitext(os.path.basename(os.path.normpath(p)))[0] for p in paths]
    return unique_names([b if b != BICUBIC else b + "_model" for b in base])


def main(argv=None):
    from jaxsr.weights import load_model

    p = argparse.ArgumentParser(prog="python -m jaxsr.evaluate", description="PSNR/SSIM (BasicSR definitions) of SR models on HR images.")
    p.add_argument("--weights", action="append", help=".pth/.safetensors/jaxsr export/workdir; repeat to compare models "
                   "(default: the --hr workdir's latest export)")
    p.add_argument("--hr", required=True, help="folder of HR images (recursive), or a workdir: its recorded test split")
    p.add_argument("--lr", help="folder of LR images paired by name (default: MATLAB-bicubic downscale of the HR)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="which split of a workdir (default test)")
    p.add_argument("--scale", type=int, help="upscaling factor (default: the model's)")
    p.add_argument("--crop-border", type=int, help="px ignored at each border (default: the scale)")
    p.add_argument("--rgb", action="store_true", help="measure on RGB instead of the Y channel")
    p.add_argument("--out", help="write metrics.json, metrics.csv and compare/<image>.png here")
    p.add_argument("--save-images", action="store_true", help="with --out: also the measured outputs (sr/<model>/) and the LR inputs (lr/)")
    p.add_argument("--lpips", nargs=2, metavar=("BACKBONE", "LINEAR"),
                   help="also LPIPS: torchvision VGG16/AlexNet weights and the lpips package's linear-layer weights (see docs/inference.md)")
    p.add_argument("--dists", nargs=2, metavar=("VGG16", "ALPHA_BETA"),
                   help="also DISTS: torchvision VGG16 weights and DISTS_pytorch's weights.pt (see docs/inference.md)")
    p.add_argument("--topiq", metavar="FILE",
                   help="also TOPIQ-FR (higher is better): pyiqa's cfanet_fr_kadid_res50 weights (see docs/inference.md)")
    add_tile_args(p)
    a = p.parse_args(argv)
    warnings_as_lines()
    weights = a.weights or ([a.hr] if os.path.isfile(os.path.join(a.hr, SPLITS_FILE)) else None)
    if not weights:
        p.error("--weights is required unless --hr names a workdir")
    try:
        import jax.numpy as jnp

        models = {}
        for name, w in zip(_model_names(weights), weights):
            model, info = load_model(w, dtype=jnp.bfloat16 if a.bf16 else jnp.float32)
            print(f"{name}: {info['arch']} x{info['scale']} from {info['source']}", file=sys.stderr)
            if a.scale and info["scale"] != a.scale:
                raise WeightsError(f"{w} is a x{info['scale']} model but --scale is {a.scale}")
            check_tiling(model, a.tile, a.tile_overlap)
            check_branch(model, a.branch)
            models[name] = model
        scale = a.scale or next(iter(models.values())).scale
        others = {n: m.scale for n, m in models.items() if m.scale != scale}
        if others:
            raise WeightsError(f"models of different scales cannot share one table: {others} vs x{scale}")
        perceptual = load_perceptual(a.lpips, a.dists, a.topiq)
        jobs = image_jobs(a.hr, a.lr, a.split)
        if a.out:
            writable_dir(a.out, ImageError)  # before any work: a report that cannot be written loses it
    except (WeightsError, DataError, ImageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = evaluate(models, jobs, scale, a.crop_border, not a.rgb, tile_kwargs(a), a.out, perceptual,
                      a.save_images, log=lambda s: print(s, file=sys.stderr))
    print(f"\nmean over {len(report['images'])} image(s), x{scale}, {report['settings']['channel']}, "
          f"crop {report['settings']['crop_border']}:")
    for m in report["models"]:
        v = report["mean"][m]
        if v["psnr"] is not None:
            print(f"  {m:<24} PSNR {v['psnr']:7.3f} dB  SSIM {v['ssim']:.4f}" +
                  "".join(f"  {k.upper()} {v[k]:.4f}" for k in PERCEPTUAL if k in v))
    for f in report["failed"]:
        print(f"  failed {f['image']}: {f['error']}")
    if a.out:
        write_report(report, a.out)
        print(f"report: {os.path.join(a.out, 'metrics.json')}, metrics.csv, compare/", file=sys.stderr)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
