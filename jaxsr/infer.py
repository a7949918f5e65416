"""Upscaling images with a model: the `upscale` API and the `python -m jaxsr.infer` command.

Channels: a grayscale image through an RGB model is run as RGB and averaged back to one channel; an
RGBA image has its RGB upscaled by the model and its alpha upscaled by the model too (as a gray image,
the way chaiNNer does), so edges of cut-outs stay as sharp as the picture.
"""
import argparse
import os
import sys

import numpy as np
from flax import nnx

from jaxsr.imageio import EXTENSIONS, ImageError, list_images, load_image, write_image


@nnx.jit
def _forward(model, x):
    return model(x)


def _run(model, img):
    """HxWxC (C = model input channels) -> (H*s)x(W*s)xC', padding to the model's size multiple."""
    m = getattr(model, "size_multiple", 1)
    h, w = img.shape[:2]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    out = np.asarray(_forward(model, img[None]))[0]
    return np.clip(out[: h * model.scale, : w * model.scale], 0.0, 1.0)


def upscale(model, img, tile=None):
    """Upscale one HxWxC float32 image in [0,1] (numpy); returns (H*s)x(W*s)xC float32 in [0,1]."""
    if tile is not None:
        raise NotImplementedError("tiled upscaling is not available yet")
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    c, want = img.shape[2], getattr(model, "in_ch", 3)
    if c == want:
        out = _run(model, img)
    elif c == 1 and want == 3:
        out = _run(model, np.repeat(img, 3, axis=2)).mean(axis=2, keepdims=True)
    elif c == 4 and want == 3:
        rgb = _run(model, img[..., :3])
        alpha = _run(model, np.repeat(img[..., 3:], 3, axis=2)).mean(axis=2, keepdims=True)
        out = np.concatenate([rgb, alpha], axis=2)
    elif c in (3, 4) and want == 1:
        out = _run(model, img[..., :3].mean(axis=2, keepdims=True))
    else:
        raise ValueError(f"the image has {c} channels, the model expects {want}")
    return out


def _jobs(inp, out):
    if os.path.isdir(inp):
        files = list_images(inp)
        if not files:
            raise ImageError(f"no images ({', '.join(EXTENSIONS)}) under {inp}")
        return [(f, os.path.join(out, os.path.splitext(os.path.relpath(f, inp))[0] + ".png")) for f in files]
    if not os.path.exists(inp):
        raise ImageError(f"no such file or folder: {inp}")
    if os.path.isdir(out) or not os.path.splitext(out)[1]:
        out = os.path.join(out, os.path.splitext(os.path.basename(inp))[0] + ".png")
    return [(inp, out)]


def main(argv=None):
    from tqdm import tqdm

    from convert.mapping import WeightsError
    from jaxsr.models import load_model

    p = argparse.ArgumentParser(prog="python -m jaxsr.infer", description="Upscale images with a jaxsr or PyTorch SR model.")
    p.add_argument("--weights", required=True, help=".pth/.safetensors, a jaxsr export folder or a workdir")
    p.add_argument("--input", required=True, help="an image file or a folder (searched recursively)")
    p.add_argument("--output", required=True, help="output file or folder; PNG at the input's bit depth")
    p.add_argument("--bf16", action="store_true", help="compute in bfloat16")
    a = p.parse_args(argv)
    try:
        import jax.numpy as jnp

        model, info = load_model(a.weights, dtype=jnp.bfloat16 if a.bf16 else jnp.float32)
        jobs = _jobs(a.input, a.output)
    except (WeightsError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{info['arch']} x{info['scale']} from {info['source']}", file=sys.stderr)
    failed = 0
    for src, dst in tqdm(jobs, unit="img", disable=len(jobs) < 2):
        try:
            img, bits = load_image(src)
            out = upscale(model, img)
            os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
            write_image(dst, out, bits=bits)
        except (ImageError, ValueError) as e:
            failed += 1
            tqdm.write(f"skipped {src}: {e}", file=sys.stderr)
    print(f"wrote {len(jobs) - failed} image(s) to {a.output}" + (f", {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
