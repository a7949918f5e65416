"""The packed dataset format that `python -m jaxsr.data.pack` writes and training reads (`data.packed`).

A folder:
  pack.json                 what it holds: options, the id, shards, record count, skipped files, `complete`
  index.tsv                 one line per record: record, name, source file, top, left, height, width, channels, bits
                            (and the LR file for paired sets); positions in HR pixels of the source
  shard-00000.array_record  the records, ArrayRecord files (group_size 1, uncompressed: random access by index)

A record is one sub-image, or an HR/LR pair of aligned sub-images: a header (magic, image count) and per image
(height, width, channels, bits, encoding, byte count), then the pixels. Encoding 'raw' stores the pixels as they
are (uint8/uint16, RGB(A) or gray): reading is a view into the record, no decode at all. 'png' stores them as
PNG (compression 1, as BasicSR's LMDBs do): 55% of the disk, about 7x slower through the training pipeline
(docs/data.md has the measurements).
"""
import json
import os
import struct

import numpy as np

from jaxsr.errors import DataError, ImageError
from jaxsr.imageio import decode_bytes


META = "pack.json"
INDEX = "index.tsv"
FORMAT = "jaxsr-packed"
VERSION = 1
ENCODINGS = ("raw", "png")
WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk: each read touches only its record
_HEAD = struct.Struct("<4sB")
_IMAGE = struct.Struct("<IIBBBQ")  # height, width, channels, bits, encoding, bytes
_MAGIC = b"JSR1"


def shard_name(k):
    return f"shard-{k:05d}.array_record"


def encode(images, encoding):
    """One record from 1 (HR) or 2 (HR, LR) HxWxC uint8/uint16 arrays (RGB(A) order)."""
    heads, bodies = [], []
    for img in images:
        img = np.ascontiguousarray(img)
        h, w, c = img.shape
        bits = 8 if img.dtype == np.uint8 else 16
        if encoding == "raw":
            body = img.tobytes()
        else:
            import cv2

            bgr = img[..., ::-1] if c == 3 else (img[..., [2, 1, 0, 3]] if c == 4 else img)
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:
                raise ImageError(f"cannot encode a {w}x{h}x{c} sub-image as PNG")
            body = buf.tobytes()
        heads.append(_IMAGE.pack(h, w, c, bits, ENCODINGS.index(encoding), len(body)))
        bodies.append(body)
    return b"".join([_HEAD.pack(_MAGIC, len(images)), *heads, *bodies])


def decode(record, what):
    """[(pixels HxWxC as stored, a view for 'raw'; bits)] of a record; ImageError if it is damaged."""
    try:
        magic, n = _HEAD.unpack_from(record)
        if magic != _MAGIC:
            raise ValueError("bad magic")
        heads = [_IMAGE.unpack_from(record, _HEAD.size + i * _IMAGE.size) for i in range(n)]
        offset, out = _HEAD.size + n * _IMAGE.size, []
        for h, w, c, bits, enc, nbytes in heads:
            body = memoryview(record)[offset:offset + nbytes]
            if len(body) != nbytes:
                raise ValueError("truncated")
            offset += nbytes
            if ENCODINGS[enc] == "raw":
                img = np.frombuffer(body, np.uint8 if bits == 8 else np.uint16).reshape(h, w, c)
            else:
                img, _ = decode_bytes(np.frombuffer(body, np.uint8), what, exif=False)
            out.append((img, bits))
        return out
    except (ValueError, IndexError, struct.error) as e:
        raise ImageError(f"{what} is damaged ({e}); repack it") from None


def is_packed(folder):
    return bool(folder) and os.path.isfile(os.path.join(folder, META))


def read_meta(folder, what="data.packed"):
    """pack.json of a finished packed set; DataError saying what to do otherwise."""
    path = os.path.join(folder or "", META)
    if not folder or not os.path.isdir(folder):
        raise DataError(f"{what}: folder {folder!r} does not exist")
    if not os.path.isfile(path):
        raise DataError(f"{what}: {folder} is not a packed dataset (no {META}); make one with "
                        f"`python -m jaxsr.data.pack SRC_DIR {folder}`")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"{what}: {path} is not a version-{VERSION} jaxsr packed set; repack the images")
    if not meta.get("complete"):
        raise DataError(f"{what}: packing of {folder} did not finish; rerun the same `python -m jaxsr.data.pack` "
                        "command to finish it")
    if not meta["records"]:
        raise DataError(f"{what}: {folder} holds no records (every source file was skipped: see {META})")
    return meta


class PackedSet:
    """Random access to the records of a packed set: `len()`, `read(i)` -> [(pixels, bits)] (HR[, LR]).

    Picklable (grain's worker processes get a copy; ArrayRecord reopens its files there). `expected_id` is the id
    recorded in a run's split file: a set repacked with other images under the same folder is refused.
    """

    def __init__(self, folder, expected_id=None, what="data.packed"):
        import grain

        self.folder = os.path.abspath(folder)
        self.meta = read_meta(self.folder, what)
        if expected_id is not None and self.meta["id"] != expected_id:
            raise DataError(f"{what}: {self.folder} was repacked with other images or options since this run started "
                            f"(id {self.meta['id'][:12]}, the run recorded {expected_id[:12]}); use a new workdir")
        self.paired = bool(self.meta["paired"])
        self.source = grain.sources.ArrayRecordDataSource([os.path.join(self.folder, s["file"]) for s in self.meta["shards"]])
        if len(self.source) != self.meta["records"]:
            raise DataError(f"{what}: {self.folder} has {len(self.source)} records, {META} says {self.meta['records']}; "
                            "a shard is missing or damaged: repack it")

    def __len__(self):
        return self.meta["records"]

    def read(self, i):
        what = f"{self.folder} record {i}"
        try:
            record = self.source[int(i)]
        except Exception as e:  # noqa: BLE001 - ArrayRecord's errors for a damaged shard vary: the record is skipped
            raise ImageError(f"cannot read {what}: {e}") from None
        return decode(record, what)
