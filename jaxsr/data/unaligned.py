"""Unaligned images of two domains for CycleGAN: junyanz's `UnalignedDataset` (data/unaligned_dataset.py), with the
preprocess chain of `jaxsr.data.aligned` drawn for A and B independently (the reference transforms each on its own).

A folder holds the two domains as `trainA/` and `trainB/` (the reference's layout; `testA/`, `testB/` for validation
sets), or `A/` and `B/`. An epoch has max(|A|, |B|) records: record i is A[i mod |A|] with B[i mod |B|] under
`serial` pairing (the reference's --serial_batches, which also leaves A unshuffled), else a B drawn uniformly from
the record's rng (and A shuffled). `direction` 'BtoA' swaps the domains.

Several folders per domain (victorca25/traiNNer's `concat_unaligned`: dataroot_A/dataroot_B lists, paired by
position into sub-datasets, with `sampler_weights`): `concat_sets`, `concat_weights` and `concat_train_iterator`.
As the port's MultiSampler, each global batch comes whole from one sub-dataset, drawn with the weights, and its A
and B from that same sub-dataset (A[i mod |A_k|], B uniform in B_k). Unlike the port, each sub-dataset runs its own
seeded shuffled epochs of max(|A_k|, |B_k|) records, so the weights hold at every step (the port's epoch drops a
sub-dataset once fewer than a batch of its indices are left, and is unseeded).
"""
import numbers
import os
import sys

import grain
import numpy as np

from jaxsr.data import aligned
from jaxsr.data.loader import TrainIterator, WeightedChoice
from jaxsr.data.sources import list_folder, read_rgb
from jaxsr.errors import ConfigError, DataError

TWO_SETS = (4.0, 1.0)  # the port's train_wbc.yml sampler_weights for (scenery, face): the original's 4 of 5 batches


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


def _folders(x):
    """A folder list from a config value: a tuple/list of folders, or one folder as a string."""
    return (x,) if isinstance(x, str) else tuple(x or ())


def concat_weights(n, weights, field):
    """The sampler weights of n sub-datasets as floats: the given ones (n, all > 0), else 1 for one sub-dataset and
    TWO_SETS for two; ConfigError naming `field` otherwise."""
    if weights is None or (not isinstance(weights, numbers.Real) and len(weights) == 0):
        if n <= 2:
            return TWO_SETS if n == 2 else (1.0,)
        raise ConfigError(f"{field}: {n} folders per domain need their weights: give one positive number per folder", field)
    w = (weights,) if isinstance(weights, numbers.Real) else tuple(weights)
    if len(w) != n:
        raise ConfigError(f"{field} has {len(w)} weights for {n} folders per domain: give one per folder", field)
    if not all(isinstance(x, numbers.Real) and not isinstance(x, bool) and np.isfinite(x) and x > 0 for x in w):
        raise ConfigError(f"{field} must be positive numbers (how often each folder's batches are drawn), got {w}", field)
    return tuple(float(x) for x in w)


def concat_folders(a_dirs, b_dirs, field_a, field_b):
    """(A folders, B folders) of the sub-datasets, checked to pair up one to one; ConfigError naming the fields."""
    a, b = _folders(a_dirs), _folders(b_dirs)
    if not a or not b:
        raise ConfigError(f"{field_a} and {field_b} go together: give both (one folder or a list each), or neither", field_a)
    if len(a) != len(b):
        raise ConfigError(f"{field_a} has {len(a)} folders and {field_b} {len(b)}: give one {field_b} folder per "
                          f"{field_a} folder (the k-th of each make sub-dataset k)", field_b)
    return a, b


def concat_sets(a_dirs, b_dirs, field_a, field_b):
    """[(A files, B files)] per sub-dataset; ConfigError for unpaired lists, DataError for a missing or empty folder."""
    a, b = concat_folders(a_dirs, b_dirs, field_a, field_b)
    return [(list_folder(x, f"{field_a}[{k}]"), list_folder(y, f"{field_b}[{k}]")) for k, (x, y) in enumerate(zip(a, b))]


class SetRecords(Records):
    """Records of sub-dataset k: record i -> (k, i)."""

    def __init__(self, n, k):
        super().__init__(n)
        self.k = int(k)

    def __getitem__(self, i):
        return self.k, np.int64(i)


class BatchChoice(grain.transforms.DatasetSelectionMap):
    """Record index -> (sub-dataset, index within it): global batch t (records [tG, (t+1)G)) is drawn whole from one
    sub-dataset with the weights (`WeightedChoice` over batches, a pure function of (seed, t)), as the port's
    MultiSampler draws each batch's dataset; within it, batch t takes the G records after those of its earlier
    batches."""

    def __init__(self, weights, seed, global_batch):
        self.batches, self.g = WeightedChoice(weights, seed), int(global_batch)

    def __len__(self):
        return sys.maxsize

    def __getitem__(self, index):
        t, slot = divmod(int(index), self.g)
        k, before = self.batches[t]
        return k, before * self.g + slot


class SetPair(grain.transforms.RandomMap):
    """(k, i) -> sub-dataset k's `Pair` of record i (A[i mod |A_k|], B drawn in B_k)."""

    def __init__(self, sets, p, alpha="drop"):
        self.pairs = [Pair(a, b, p, False, alpha) for a, b in sets]

    def random_map(self, record, rng):
        k, i = record
        return self.pairs[int(k)].random_map(i, rng)


def concat_train_iterator(sets, weights, p, seed, per_host, process_index=0, process_count=1, alpha="drop",
                          num_workers=0, read_threads=1, prefetch=1):
    """This host's resumable batches dict(a, b) over sub-datasets [(A files, B files)], each global batch from one of
    them drawn with `weights`; one sub-dataset is `train_iterator` with random pairing."""
    if len(sets) == 1:
        return train_iterator(*sets[0], p, False, seed, per_host, process_index, process_count, alpha, num_workers,
                              read_threads, prefetch)
    parts = [grain.MapDataset.source(SetRecords(max(len(a), len(b)), k))
             .seed(int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0])).shuffle().repeat(None)
             for k, (a, b) in enumerate(sets)]
    choice = BatchChoice(weights, seed, per_host * process_count)
    ds = grain.MapDataset.select_from_datasets(parts, choice).seed(int(seed))
    ds = ds.random_map(SetPair(sets, p, alpha)).batch(per_host, drop_remainder=True)
    return TrainIterator(ds[process_index::process_count], num_workers, read_threads, prefetch)


def describe(a_dirs, b_dirs, sets, weights):
    """One log line: each sub-dataset's folders, image counts and share of the batches."""
    share = np.asarray(weights) / np.sum(weights)
    return "; ".join(f"{a} ({len(fa)} images) with {b} ({len(fb)}): {100 * w:.4g}% of the batches"
                     for a, b, (fa, fb), w in zip(_folders(a_dirs), _folders(b_dirs), sets, share))


def val_items(files, p, alpha="drop", limit=0):
    """dict(name, img) of one domain's validation images: the centre crop and resize of `p`, no random crop or flip."""
    fixed = aligned.Preprocess(p.steps - {"crop"}, p.load_size, p.crop_size, p.center_crop_size, False, p.multiple)
    params = dict(crop_pos=(0, 0), flip=False)
    return [dict(name=os.path.splitext(os.path.basename(f))[0], img=aligned.apply(fixed, read_rgb(f, alpha), params, f))
            for f in files[:limit or None]]


__all__ = ["domain_dirs", "list_domains", "train_iterator", "val_items", "concat_weights", "concat_folders", "concat_sets",
           "concat_train_iterator", "describe"]
