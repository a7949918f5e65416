"""Image files <-> HxWxC float32 RGB(A) arrays in [0,1]. The only place that knows about bit depth and BGR.

OpenCV decodes PNG/JPEG/WebP/TIFF/BMP at 8 and 16 bits (Pillow cannot handle 16-bit RGB).
"""
import os

import cv2
import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


class ImageError(ValueError):
    """An image that cannot be read or written; the message names the file and the reason."""


def decode_image(path):
    """(HxWxC pixels as stored: uint8, uint16 or float, C in {1, 3, 4} in RGB(A) order, maybe strided; bits 8 or 16).

    Training crops these before converting (to_float): converting a whole photo costs about as much as decoding it.
    """
    path = os.fspath(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageError(f"cannot decode {path}: not an image, or a corrupt/truncated file")
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 3:
        img = img[..., ::-1]
    elif img.shape[2] == 4:
        img = img[..., [2, 1, 0, 3]]
    if img.dtype == np.uint8:
        return img, 8
    if img.dtype in (np.uint16, np.float32, np.float64):
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
    if bits == 16 and ext in (".png", ".tif", ".tiff"):
        out = np.round(np.clip(img, 0, 1) * 65535.0).astype(np.uint16)
    else:
        out = np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(out))
    if not ok:
        raise ImageError(f"cannot encode {path} as {ext}")
    tmp = f"{path}.tmp{os.getpid()}{ext}"
    try:
        buf.tofile(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ImageError(f"cannot write {path}: {e.strerror or e}") from None


def list_images(folder):
    """Image files under `folder`, recursively, sorted."""
    out = []
    for root, _, files in os.walk(folder):
        out += [os.path.join(root, f) for f in files if f.lower().endswith(EXTENSIONS)]
    return sorted(out)
