"""BasicSR/traiNNer LMDB datasets, read in place: a folder with `data.mdb` and `meta_info.txt`.

The layout BasicSR's `basicsr/utils/lmdb_util.py` (make_lmdb_from_imgs) writes and traiNNer reads: one key per image,
its name without the extension, holding the encoded file (PNG); `meta_info.txt` has one line per image,
`0001_s001.png (480,480,3) 1` (name, (h,w,c), PNG compression level). Paired sets are two LMDBs with the same names.

An image in an LMDB is named by a path that does not exist on disk, `<lmdb folder>/<name>` (`DF2K.lmdb/0001_s001.png`):
it goes through the split file, the LR/HR pairing and the validation names exactly as a file does, and `read`
tells the two apart (an existing file is a file; otherwise the nearest folder above holding `data.mdb`).
"""
import functools
import os
import re

import numpy as np

from jaxsr.errors import DataError, ImageError
from jaxsr.imageio import decode_bytes

META = "meta_info.txt"
_META_LINE = re.compile(r"^(?P<name>.+?)\s+\((?P<h>\d+),\s*(?P<w>\d+)(?:,\s*(?P<c>\d+))?\)(?:\s+\S+)?\s*$")
_envs = {}  # (pid, root) -> lmdb.Environment: one read-only handle per process (grain workers are new processes)


def is_lmdb(folder):
    """Whether `folder` is an LMDB dataset folder (holds data.mdb)."""
    return bool(folder) and os.path.isfile(os.path.join(folder, "data.mdb"))


def meta(root):
    """{name: (h, w, c)} from <root>/meta_info.txt, in file order (BasicSR's order: sorted names)."""
    path = os.path.join(root, META)
    if not os.path.isfile(path):
        raise DataError(f"{root} holds data.mdb but no {META}; BasicSR/traiNNer LMDBs list their images there "
                        f"(lines like '0001_s001.png (480,480,3) 1'): recreate it, or give a folder of image files")
    st = os.stat(path)
    return _read_meta(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _read_meta(path, _mtime, _size):
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            m = _META_LINE.match(line.strip())
            if m is None:
                raise DataError(f"{path}, line {n}: {line.strip()!r} is not 'name.png (h,w,c) level' as BasicSR writes it")
            out[m["name"]] = (int(m["h"]), int(m["w"]), int(m["c"] or 1))
    if not out:
        raise DataError(f"{path} lists no images")
    return out


def list_images(root):
    """The images of an LMDB as paths `<root>/<name>`, sorted (as a folder listing is)."""
    root = os.path.abspath(root)
    return sorted(os.path.join(root, name) for name in meta(root))


@functools.lru_cache(maxsize=4096)
def _root_of(folder):
    while folder and folder != os.path.dirname(folder):
        if is_lmdb(folder):
            return folder
        folder = os.path.dirname(folder)
    return None


def split(ref):
    """(LMDB root, name) of an image path inside an LMDB, or None for anything else (a file)."""
    if os.path.exists(ref):
        return None
    root = _root_of(os.path.dirname(os.path.abspath(ref)))
    return (root, os.path.relpath(ref, root).replace(os.sep, "/")) if root else None


def _env(root):
    import lmdb

    key = (os.getpid(), root)
    if key not in _envs:
        try:  # BasicSR's reading flags: no locking and no readahead (random access by key)
            _envs[key] = lmdb.open(root, readonly=True, lock=False, readahead=False, meminit=False, max_readers=512)
        except lmdb.Error as e:
            raise DataError(f"cannot open the LMDB {root}: {e}") from None
    return _envs[key]


def read(root, name):
    """(pixels, bits) of the image `name` (as listed in meta_info.txt) of the LMDB at `root`."""
    key = os.path.splitext(name)[0]
    with _env(root).begin(write=False) as txn:
        buf = txn.get(key.encode())
    if buf is None:
        raise ImageError(f"{root}: no key {key!r} (listed in {META} as {name})")
    return decode_bytes(np.frombuffer(buf, np.uint8), f"{root}/{name}", exif=False)


def size(root, name):
    """(h, w) from meta_info.txt, without reading the value."""
    h, w, _ = meta(root)[name]
    return h, w
