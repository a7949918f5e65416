"""Image files <-> HxWxC float32 RGB(A) arrays in [0,1]. The only place that knows about bit depth, BGR and EXIF.

OpenCV decodes PNG/JPEG/WebP/TIFF/BMP at 8 and 16 bits (Pillow cannot handle 16-bit RGB); Pillow reads the EXIF
orientation, which OpenCV's IMREAD_UNCHANGED ignores, so that phone photos come out upright as viewers show them.
"""
import io
import logging
import os

import cv2
import numpy as np

from jaxsr.errors import ImageError
from jaxsr.files import atomic_write

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
UNSUPPORTED = (".gif",)  # palette/animated images: reported when a folder is listed, never silently dropped
log = logging.getLogger("jaxsr")
_warned = set()  # each file's warning once per process

# EXIF orientation -> the view that shows the image upright (as PIL.ImageOps.exif_transpose does)
_UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.transpose(1, 0, 2),
            6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


def _warn_once(path, message):
    if path not in _warned:
        _warned.add(path)
        log.warning("%s: %s", path, message)


def _orientation_and_pages(data, path):
    """(EXIF orientation 1..8, page count) from the file's header; (1, 1) where it has none."""
    from PIL import Image

    if path.lower().endswith(".png") and data.tobytes().find(b"eXIf") < 0:
        return 1, 1  # a PNG without an EXIF chunk (Pillow would decode the whole file to look for one)
    try:
        with Image.open(io.BytesIO(data)) as im:
            # OpenCV's TIFF decoder applies the orientation tag itself (tests/test_imageio.py checks every format)
            orientation = 1 if im.format == "TIFF" else int(im.getexif().get(0x0112, 1) or 1)
            return orientation, int(getattr(im, "n_frames", 1))
    except Exception:  # Pillow cannot parse every file OpenCV decodes (e.g. 16-bit variants): no orientation then
        return 1, 1


def decode_image(path):
    """(HxWxC pixels as stored: uint8, uint16 or float, C in {1, 3, 4} in RGB(A) order, maybe strided; bits 8 or 16).

    Training crops these before converting (to_float): converting a whole photo costs about as much as decoding it.
    """
    path = os.fspath(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    return decode_bytes(data, path)


def decode_bytes(data, path, exif=True):
    """`decode_image` of an encoded image already in memory (uint8 array); `path` names it in messages. exif=False
    for images jaxsr or BasicSR stored themselves (packed sets, LMDBs), which are upright and carry no EXIF."""
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageError(f"cannot decode {path}: not an image, or a corrupt/truncated file")
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 3:
        img = img[..., ::-1]
    elif img.shape[2] == 4:
        img = img[..., [2, 1, 0, 3]]
    orientation, pages = _orientation_and_pages(data, path) if exif else (1, 1)
    if orientation in _UPRIGHT:
        img = _UPRIGHT[orientation](img)
    if pages > 1:
        _warn_once(path, f"has {pages} pages; only the first is used")
    if img.dtype == np.uint8:
        return img, 8
    if img.dtype in (np.uint16, np.float32, np.float64):
        if img.dtype != np.uint16 and (img.min() < 0 or img.max() > 1):
            _warn_once(path, f"float pixels in [{img.min():.3g}, {img.max():.3g}] are clipped to [0, 1]")
        return img, 16
    raise ImageError(f"{path}: unsupported pixel type {img.dtype}")


def to_float(img):
    """Stored pixels (uint8, uint16 or float) -> contiguous float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img, dtype=np.float32) / 255.0
    if img.dtype == np.uint16:
        return np.ascontiguousarray(img, dtype=np.float32) / 65535.0
    return np.clip(np.ascontiguousarray(img, dtype=np.float32), 0, 1)


def load_image(path):
    """(HxWxC float32 in [0,1] with C in {1, 3, 4}, RGB(A) order; bit depth 8 or 16 of the file)."""
    img, bits = decode_image(path)
    return to_float(img), bits


def read_image(path):
    return load_image(path)[0]


def write_image(path, img, bits=8):
    """Write HxW(xC) float [0,1] as an image (PNG keeps 16 bits); written atomically."""
    path = os.fspath(path)
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[..., ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., [2, 1, 0, 3]]
    ext = os.path.splitext(path)[1].lower() or ".png"
    out = np.round(np.clip(img, 0, 1) * 65535.0).astype(np.uint16) if bits == 16 and ext in (".png", ".tif", ".tiff") else to_u8(img)
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(out))
    if not ok:
        raise ImageError(f"cannot encode {path} as {ext}")
    atomic_write(path, lambda f: f.write(buf.tobytes()), error=ImageError)


def to_u8(img):
    """What an 8-bit file stores, and what BasicSR's tensor2img hands its metrics: clip to [0,1], x255, round."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def quantize(img):
    """float32 in [0,1] as it comes back from an 8-bit file (to_u8, then /255)."""
    return to_u8(img).astype(np.float32) / 255.0


def pad_to(img, h, w):
    """Reflect-pad HWC bottom/right up to at least h x w (edge-pad a 1-pixel axis, which cannot reflect)."""
    ph, pw = max(0, h - img.shape[0]), max(0, w - img.shape[1])
    if not ph and not pw:
        return img
    mode = "reflect" if min(img.shape[:2]) > 1 else "edge"
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode=mode)


def list_images(folder):
    """Image files under `folder`, recursively, sorted; files of unsupported image formats are reported."""
    out, skipped = [], []
    for root, _, files in os.walk(folder):
        out += [os.path.join(root, f) for f in files if f.lower().endswith(EXTENSIONS)]
        skipped += [os.path.join(root, f) for f in files if f.lower().endswith(UNSUPPORTED)]
    if skipped:
        log.warning("skipping %d GIF file(s) under %s (e.g. %s): convert them to PNG to use them", len(skipped), folder,
                    os.path.basename(sorted(skipped)[0]))
    return sorted(out)
