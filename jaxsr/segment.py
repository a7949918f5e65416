"""python -m jaxsr.segment --weights OutdoorSceneSeg_bic.pth --input HR_DIR --output SEG_DIR

The segmentation probability maps SFTGAN trains and tests on: what SFTGAN's `pytorch_test/test_segmentation.py`
(traiNNer's `codes/test_seg.py`) writes into `<folder>_segprob/`, for the same files and under the same names.

For each HR image (recursively under --input): cropped to sides that are multiples of 8 (modcrop), taken to BGR in
0..255, MATLAB-bicubic downscaled x1/4 and upscaled x4 again (the network was trained on such bicubic images:
"_bic"), the BGR mean (103.939, 116.779, 123.68) subtracted; OutdoorSceneSeg's softmax probabilities are saved as
`<name>_bic.pth`, a torch file of one float32 tensor of shape (8, H, W), which `torch.load` reads as the reference's
`torch.save(output)` did. Sub-folders are kept. Grey images are taken as three equal channels and an alpha channel is
dropped (the reference's 3-channel network cannot take either). Only the probability maps are written, not the
reference's byte and colour previews.

Existing maps are never replaced silently: the command refuses before any work, naming them, unless --overwrite.
"""
import argparse
import os
import sys

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr import pth, weights
from jaxsr.archs.outdoor_seg import BGR_MEAN
from jaxsr.degrade.ops import imresize
from jaxsr.errors import JaxsrError, WeightsError
from jaxsr.files import atomic_write, distinct_stems, writable_dir
from jaxsr.imageio import EXTENSIONS, ImageError, list_images, load_image

MODCROP = 8  # the network's output stride: maps then have the image's size
SUFFIX = "_bic.pth"
_forward = nnx.jit(lambda model, x: model(x))


def load_segmenter(path):
    """(OutdoorSceneSeg in eval mode, its spec) from a weights file; another family is refused by name."""
    w = weights.read(path, kind="segmenter")
    model, _ = w.build()
    return model, w.spec


def network_input(img):
    """test_segmentation.py's input for an HxWxC float image in [0, 1] (RGB): modcrop 8, BGR x255, MATLAB bicubic
    x1/4 then x4, less the BGR mean; HxWx3 float32."""
    img = img[..., :3] if img.shape[2] >= 3 else np.repeat(img[..., :1], 3, axis=2)
    h, w = img.shape[0] // MODCROP * MODCROP, img.shape[1] // MODCROP * MODCROP
    if not h or not w:
        raise ImageError(f"a {img.shape[0]}x{img.shape[1]} image is smaller than {MODCROP} px on a side; it has nothing "
                         "to segment")
    bgr = img[:h, :w, ::-1].astype(np.float64)
    bic = imresize(imresize(bgr, 1 / 4), 4) * 255.0
    return (bic - np.asarray(BGR_MEAN)).astype(np.float32)


def probabilities(model, x):
    """The class probabilities (H, W, classes) of one network input (HxWx3)."""
    return np.asarray(_forward(model, jnp.asarray(x[None])))[0]


def save_map(path, prob):
    """`prob` (H, W, classes) as the reference saves it: torch's format, one (classes, H, W) float32 tensor."""
    chw = np.ascontiguousarray(np.asarray(prob, np.float32).transpose(2, 0, 1))
    atomic_write(path, pth.writer(chw), error=ImageError)


def _jobs(inp, out, overwrite):
    if not os.path.isdir(inp):
        raise ImageError(f"--input {inp} is not a folder of images")
    files = list_images(inp)
    if not files:
        raise ImageError(f"no images ({', '.join(EXTENSIONS)}) under {inp}")
    names = distinct_stems([os.path.relpath(f, inp) for f in files])
    jobs = [(f, os.path.join(out, n + SUFFIX)) for f, n in zip(files, names)]
    existing = [d for _, d in jobs if os.path.exists(d)]
    if existing and not overwrite:
        raise ImageError(f"{len(existing)} of the {len(jobs)} maps exist already (e.g. {existing[0]}); pass --overwrite to "
                         "replace them, or choose another --output")
    for folder in sorted({os.path.dirname(d) for _, d in jobs}):
        writable_dir(folder, ImageError)
    return jobs, existing


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m jaxsr.segment", description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="OutdoorSceneSeg_bic.pth (SFTGAN's segmentation network)")
    p.add_argument("--input", required=True, help="a folder of HR images (searched recursively)")
    p.add_argument("--output", required=True, help="the folder for <name>_bic.pth probability maps")
    p.add_argument("--overwrite", action="store_true", help="replace maps that exist already (default: refuse)")
    a = p.parse_args(argv)
    try:
        model, spec = load_segmenter(a.weights)
        jobs, existing = _jobs(a.input, a.output, a.overwrite)
    except (WeightsError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if existing:
        print(f"overwriting {len(existing)} existing map(s) under {a.output}", file=sys.stderr)
    failed = 0
    for src, dst in jobs:
        try:
            save_map(dst, probabilities(model, network_input(load_image(src)[0])))
        except JaxsrError as e:
            print(f"error: {src}: {e}", file=sys.stderr)
            failed += 1
    print(f"{len(jobs) - failed} probability map(s) ({spec['num_classes']} classes) in {a.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
