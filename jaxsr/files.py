"""What every writer of files shares: atomic writes, writable folders, and distinct names for files that share a stem."""
import collections
import os
import socket

from jaxsr.errors import JaxsrError


def atomic_write(path, write, mode="wb", error=JaxsrError):
    """Write through `write(f)` into a temporary file beside `path`, then rename it over `path`.

    A full disk or a kill never leaves a half-written file, and readers see the old file or the new one.
    The temporary name carries the host and process, since hosts may share a workdir. An OSError becomes
    `error` naming the path.
    """
    path = os.fspath(path)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp.{socket.gethostname()}.{os.getpid()}{ext}"  # keeps the extension: encoders read it
    try:
        with open(tmp, mode) as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise error(f"cannot write {path}: {e.strerror or e}") from None


def unique_names(names):
    """The names in order, a repeated one suffixed _2, _3, ... (photo, photo_2)."""
    taken, out = set(), []
    for n in names:
        name, i = n, 1
        while name in taken:
            i += 1
            name = f"{n}_{i}"
        taken.add(name)
        out.append(name)
    return out


def distinct_stems(relpaths):
    """Output names for input files: the relative path without its extension, or with it where two inputs share
    a stem (photo.png, photo.jpg -> photo.png, photo.jpg), so that no result replaces another."""
    stems = [os.path.splitext(p)[0] for p in relpaths]
    count = collections.Counter(stems)
    return unique_names([p if count[s] > 1 else s for p, s in zip(relpaths, stems)])


def writable_dir(folder, error=JaxsrError):
    """Create `folder` if needed and check that files can be written there, before any work is spent."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create the folder {folder}: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"cannot write to {folder}: permission denied")
