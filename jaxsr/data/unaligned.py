"""Unaligned images of two domains for CycleGAN: junyanz's `UnalignedDataset` (data/unaligned_dataset.py), with the
preprocess chain of `jaxsr.data.aligned` drawn for A and B independently (the reference transforms each on its own).

A folder holds the two domains as `trainA/` and `trainB/` (the reference's layout; `testA/`, `testB/` for validation
sets), or `A/` and `B/`. An epoch has max(|A|, |B|) records: record i is A[i mod |A|] with B[i mod |B|] under
`serial` pairing (the reference's --serial_batches, which also leaves A unshuffled), else a B drawn uniformly from
the record's rng (and A shuffled). `direction` 'BtoA' swaps the domains.
"""
import os

import grain
import numpy as np

from jaxsr.data import aligned
from jaxsr.data.loader import TrainIterator
from jaxsr.data.sources import list_folder, read_rgb
from jaxsr.errors import DataError


def domain_dirs(folder, phase):
    """(A folder, B folder) under `folder`: <phase>A/<phase>B, else A/B; DataError naming both layouts."""
    for a, b in ((f"{phase}A", f"{phase}B"), ("A", "B")):
        pa, pb = os.path.join(folder or "", a), os.path.join(folder or "", b)
        if os.path.isdir(pa) and os.path.isdir(pb):
            return pa, pb
    raise DataError(f"{folder!r} has neither {phase}A/ and {phase}B/ nor A/ and B/ subfolders (the two domains' images)")


def list_domains(folder, phase, what, direction="AtoB"):
    """(input domain's files, target domain's files) of a folder, swapped for 'BtoA'."""
    pa, pb = domain_dirs(folder, phase)
    a, b = list_folder(pa, f"{what} A"), list_folder(pb, f"{what} B")
    return (b, a) if direction == "BtoA" else (a, b)


class Records:
    """grain random-access source of record indices (the files are read by `Pair`, which also draws B)."""

    def __init__(self, n):
        self.n = int(n)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.int64(i)


class Pair(grain.transforms.RandomMap):
    """record i -> dict(a, b): A[i mod |A|] and a B (serial or drawn), each through its own draw of the preprocess."""

    def __init__(self, a_files, b_files, p, serial, alpha="drop"):
        self.a, self.b, self.p, self.serial, self.alpha = list(a_files), list(b_files), p, bool(serial), alpha

    def random_map(self, i, rng):
        i = int(i)
        j = i % len(self.b) if self.serial else int(rng.integers(len(self.b)))
        out = {}
        for key, path in (("a", self.a[i % len(self.a)]), ("b", self.b[j])):
            img = read_rgb(path, self.alpha)
            img = aligned.apply(self.p, img, aligned.draw(self.p, img.shape[1], img.shape[0], rng), path)
            m = self.p.multiple
            if img.shape[0] % m or img.shape[1] % m:
                raise DataError(f"{path} is {img.shape[1]}x{img.shape[0]} after preprocessing, not a multiple of {m} a side, "
                                "which the generator needs: add '_and_crop' to preprocess (or use 'none')")
            out[key] = img
        return out


def train_iterator(a_files, b_files, p, serial, seed, per_host, process_index=0, process_count=1, alpha="drop",
                   num_workers=0, read_threads=1, prefetch=1):
    """This host's resumable batches dict(a, b) (NHWC float32 in [0, 1]) of unaligned records."""
    ds = grain.MapDataset.source(Records(max(len(a_files), len(b_files)))).seed(int(seed))
    ds = (ds if serial else ds.shuffle()).repeat(None)
    ds = ds.random_map(Pair(a_files, b_files, p, serial, alpha)).batch(per_host, drop_remainder=True)
    return TrainIterator(ds[process_index::process_count], num_workers, read_threads, prefetch)


def val_items(files, p, alpha="drop", limit=0):
    """dict(name, img) of one domain's validation images: the centre crop and resize of `p`, no random crop or flip."""
    fixed = aligned.Preprocess(p.steps - {"crop"}, p.load_size, p.crop_size, p.center_crop_size, False, p.multiple)
    params = dict(crop_pos=(0, 0), flip=False)
    return [dict(name=os.path.splitext(os.path.basename(f))[0], img=aligned.apply(fixed, read_rgb(f, alpha), params, f))
            for f in files[:limit or None]]


__all__ = ["domain_dirs", "list_domains", "train_iterator", "val_items"]
