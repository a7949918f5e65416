"""The grain training pipeline and the validation images.

Training: file list (or packed records) -> seeded shuffle, repeated forever (reshuffled each epoch) -> [several
sources: each sample's source drawn with the weights] -> decode (bad or too-small images replaced by the next usable
one) -> random crop/flip/rot -> float RGB -> batch -> this host's slice -> threads and optional worker processes.
The iterator's get_state/set_state give an exact resume.
"""
import json
import logging
import math
import os
import sys
import threading

import grain
import numpy as np

from jaxsr.errors import DataError, ImageError
from jaxsr.files import unique_names
from jaxsr.imageio import pad_to, quantize

from .packed import PackedSet
from .sources import check_options, check_pair_size, check_pairs, read_rgb, stored
from .transforms import RandomCrop

log = logging.getLogger("jaxsr.data")
_warned = set()  # per process: each bad file is reported once


def _warn_once(path, reason, action="using the next usable file in its place"):
    if path not in _warned:
        _warned.add(path)
        log.warning("data: skipping %s (%s); %s", path, reason, action)


class ImageSource:
    """grain random-access source over image files (or LMDB images): record i -> dict(gt[, lq]) whole images as
    stored (uint8/uint16/float, 1, 3 or 4 channels; RandomCrop converts its crop to float RGB), at least crop-sized.

    A file that cannot be decoded, that breaks the pairing, or (small_images='skip') is smaller than the
    crop is replaced by the next usable file (i+1, i+2, ... wrapping around): deterministic, and one bad
    file never stops a run. It is logged once per process.
    """

    def __init__(self, hr, lr, scale, gt_size, small_images="pad"):
        self.hr, self.lr = list(hr), (list(lr) if lr else None)
        self.scale, self.gt_size, self.small = int(scale), int(gt_size), small_images

    def __len__(self):
        return len(self.hr)

    def name(self, k, lr=False):
        """How messages name record k (or its LR)."""
        return self.lr[k] if lr else self.hr[k]

    def read(self, k):
        """(HR pixels as stored, LR pixels or None); ImageError if unreadable."""
        return stored(self.hr[k])[0], (stored(self.lr[k])[0] if self.lr else None)

    def __getitem__(self, i):
        n = len(self)
        for j in range(n):
            ex = self.load((i + j) % n)
            if ex is not None:
                return ex
        raise DataError(f"none of the {n} training images is usable (all unreadable or smaller than the crop)")

    def load(self, k):
        """Record k, or None (with a warning) if it cannot be used."""
        path = self.name(k)
        try:
            gt, lq = self.read(k)
        except ImageError as e:
            _warn_once(path, str(e))
            return None
        if lq is None:
            return self._fit(dict(gt=gt), gt, self.gt_size, 1, path)
        try:
            check_pair_size(gt.shape, lq.shape, self.scale, path, self.name(k, lr=True))
        except DataError as e:
            _warn_once(path, str(e))
            return None
        s = self.scale
        gt = gt[:lq.shape[0] * s, :lq.shape[1] * s]
        return self._fit(dict(gt=gt, lq=lq), lq, self.gt_size // s, s, path)

    def _fit(self, ex, grid, size, s, path):
        h, w = grid.shape[:2]
        if h >= size and w >= size:
            return ex
        if self.small == "skip":
            _warn_once(path, f"{w * s}x{h * s} is smaller than the {self.gt_size}px crop; data.small_images='skip'")
            return None
        out = dict(gt=pad_to(ex["gt"], size * s, size * s))
        if "lq" in ex:
            out["lq"] = pad_to(ex["lq"], size, size)
        return out


class PackedSource(ImageSource):
    """ImageSource over the records of a packed set (jaxsr.data.pack): record i -> dict(gt[, lq]) as stored."""

    def __init__(self, folder, expected_id, scale, gt_size, small_images="pad"):
        self.records = PackedSet(folder, expected_id)
        self.folder = self.records.folder
        self.scale, self.gt_size, self.small = int(scale), int(gt_size), small_images

    def __len__(self):
        return len(self.records)

    def name(self, k, lr=False):
        return f"{self.folder} record {k}" + (" (LR)" if lr else "")

    def read(self, k):
        images = self.records.read(k)
        return images[0][0], (images[1][0] if len(images) > 1 else None)


class WeightedChoice(grain.transforms.DatasetSelectionMap):
    """Sample index -> (source, index within that source), each sample's source drawn at random with the weights
    (victorca25/traiNNer's MultiSampler idea), a pure function of (seed, index): the same in every worker and host
    and after a resume. Blocks of BLOCK samples are drawn from a generator seeded by (seed, block); a sample's index
    within its source counts the earlier samples that chose it, so each source goes through its own seeded
    shuffled epochs in order. Earlier blocks' counts are computed once per process (a resume at sample 1e7 draws
    2,400 blocks, ~0.3 s)."""

    BLOCK = 4096

    def __init__(self, weights, seed):
        self.p = np.asarray(weights, np.float64) / float(np.sum(weights))
        self.seed = int(seed)
        self._reset()

    def _reset(self):
        self._before = [np.zeros(len(self.p), np.int64)]  # per block: samples of each source in the earlier blocks
        self._cache = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return dict(p=self.p, seed=self.seed)

    def __setstate__(self, state):
        self.p, self.seed = state["p"], state["seed"]
        self._reset()

    def __len__(self):
        return sys.maxsize

    def choices(self, b):
        """The source of each sample of block b."""
        return np.random.default_rng([self.seed, 0x6D6978, b]).choice(len(self.p), self.BLOCK, p=self.p)

    def __getitem__(self, index):
        b, i = divmod(int(index), self.BLOCK)
        with self._lock:
            while len(self._before) <= b:
                self._before.append(self._before[-1] + np.bincount(self.choices(len(self._before) - 1), minlength=len(self.p)))
            if b not in self._cache:
                if len(self._cache) >= 8:
                    self._cache.pop(next(iter(self._cache)))
                choice = self.choices(b)
                onehot = choice[:, None] == np.arange(len(self.p))
                # each sample's rank among the block's earlier samples of its source
                self._cache[b] = choice, (np.cumsum(onehot, 0) - onehot)[np.arange(self.BLOCK), choice]
            choice, rank = self._cache[b]
        s = int(choice[i])
        return s, int(self._before[b][s] + rank[i])


def _sources(splits, scale, gt_size, small_images):
    """[(weight, grain source)] of the training split: one source for folders (and old split files), else data.sources."""
    if not splits.get("sources"):
        hr, lr = splits["train"], splits.get("train_lr")
        if lr:
            check_pairs(hr, lr, scale)
        return [(1.0, ImageSource(hr, lr, scale, gt_size, small_images))]
    out = []
    for s in splits["sources"]:
        if s["kind"] == "packed":
            if s["paired"] and s["scale"] != scale:
                raise DataError(f"the packed set {s['path']} holds x{s['scale']} pairs but the run is x{scale}; "
                                "repack it with --scale, or set the run's scale")
            out.append((s["weight"], PackedSource(s["path"], s["id"], scale, gt_size, small_images)))
        else:
            if s["train_lr"]:
                check_pairs(s["train"], s["train_lr"], scale)
            out.append((s["weight"], ImageSource(s["train"], s["train_lr"], scale, gt_size, small_images)))
    return out


def _process(process_index, process_count):
    if process_index is None or process_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    return int(process_index), int(process_count)


def _limited(source, limit):
    """The grain dataset of a source's first `limit` records (a count), or of that fraction of them; all for 0."""
    ds, n = grain.MapDataset.source(source), len(source)
    if not limit:
        return ds
    keep = min(n, int(limit) if limit >= 1 else max(1, math.ceil(limit * n)))
    log.info("data: data.limit_train_files=%s: training on the first %d of %d records", limit, keep, n)
    return ds[:keep]


def train_dataset(cfg, splits, scale, seed, per_host_batch, process_index=None, process_count=None):
    """The batched, infinite grain.MapDataset of this host (random access: `ds[step]` is batch `step`).

    Every host defines the same global sample stream (seeded shuffle, per-sample random crops); global
    batch k is samples [k*B, (k+1)*B) and host p of n decodes only its slice [k*B + p*b, k*B + (p+1)*b),
    b = per_host_batch, B = b*n. So the global batch, and the training, do not depend on the host count.
    process_index/count default to jax.process_index()/process_count().
    """
    check_options(cfg)
    p, n = _process(process_index, process_count)
    scale, gt_size = int(scale), int(cfg.gt_size)
    if splits.get("train_lr") is not None and gt_size % scale:
        raise DataError(f"data.gt_size={gt_size} must be a multiple of the scale {scale} for paired data")
    sources = [(w, _limited(src, cfg.get("limit_train_files", 0))) for w, src in _sources(splits, scale, gt_size,
                                                                                             cfg.small_images)]
    if len(sources) == 1:
        ds = sources[0][1].seed(int(seed)).shuffle().repeat(None)
    else:  # each source its own seeded epochs; which source each sample comes from: WeightedChoice
        parts = [src.seed(int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0]))
                 .shuffle().repeat(None) for i, (_, src) in enumerate(sources)]
        choice = WeightedChoice([w for w, _ in sources], seed)
        ds = grain.MapDataset.select_from_datasets(parts, choice).seed(int(seed))
    ds = ds.random_map(RandomCrop(gt_size, scale, cfg.use_hflip, cfg.use_rot, cfg.alpha))
    return ds.batch(int(per_host_batch), drop_remainder=True)[p::n]


def train_iterator(cfg, splits, scale, seed, per_host_batch, process_index=None, process_count=None):
    """Infinite TrainIterator of this host's batches: dict(gt=(B, gt, gt, 3)[, lq=(B, gt/s, gt/s, 3)]) float32.

    `lq` is present only for paired data. Batches depend only on the data, cfg crop options, seed and
    host; not on num_workers/read_threads/prefetch, which may change between runs.
    """
    ds = train_dataset(cfg, splits, scale, seed, per_host_batch, process_index, process_count)
    return TrainIterator(ds, cfg.num_workers, cfg.read_threads, cfg.prefetch)


class TrainIterator:
    """Iterator over a batched MapDataset with a resumable position.

    The state is the number of batches consumed, as JSON bytes (b'{"step": 12}'); it does not depend on
    the worker count, so a run may resume with other loader settings. It works with orbax through
    grain.checkpoint.CheckpointSave(it) / CheckpointRestore(it) (the handler's bytes path, as for
    grain.DataLoader). set_state() restarts the pipeline at that batch; workers start on the first next().
    Call close() to stop worker processes.
    """

    def __init__(self, dataset, num_workers=0, read_threads=1, prefetch=1):
        self.dataset = dataset
        self.num_workers, self.read_threads, self.prefetch = int(num_workers), int(read_threads), int(prefetch)
        self.step = 0
        self._it = None

    def _open(self):
        ds = self.dataset[self.step:].to_iter_dataset(grain.ReadOptions(
            num_threads=max(1, self.read_threads), prefetch_buffer_size=max(1, self.prefetch)))
        if self.num_workers > 0:
            absl_flags_ready()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
        return iter(ds)

    def __iter__(self):
        return self

    def __next__(self):
        self.start_prefetch()
        batch = next(self._it)
        self.step += 1
        return {k: _in_process(v) for k, v in batch.items()} if self.num_workers > 0 else batch

    def start_prefetch(self):
        """Start the threads/workers now rather than at the first next() (grain's restore calls this)."""
        if self._it is None:
            self._it = self._open()

    def get_state(self):
        return json.dumps({"step": self.step}).encode()

    def set_state(self, state):
        if isinstance(state, (bytes, str)):
            state = json.loads(state)
        self.close()
        self.step = int(state["step"])

    def close(self):
        if self._it is not None:
            close = getattr(self._it, "close", None)
            if close:
                close()
            self._it = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _in_process(array):
    """A copy in this process's memory of an array that grain's workers handed over in a shared-memory segment.

    Such a segment is unlinked only when its array is freed; the one the loop still holds when Python exits is
    freed too late, and Python's resource_tracker then warns of a leaked shared_memory object (and the segment
    stays in /dev/shm until it cleans up). The copy costs one memcpy of the batch per step."""
    return np.array(array) if isinstance(array, grain.multiprocessing.SharedMemoryArray) else array


def absl_flags_ready():
    """grain's worker processes read absl flags; outside absl.app.run they are unparsed and grain would raise
    UnparsedFlagAccessError. Mark them parsed (defaults) in that case; under app.run this does nothing."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def host_batch_size(global_batch, process_count=None):
    """Per-host batch for a global batch (must divide evenly among hosts)."""
    n = _process(None, None)[1] if process_count is None else int(process_count)
    if global_batch % n:
        raise DataError(f"the batch size {global_batch} is not divisible by the {n} hosts")
    return global_batch // n


# ------------------------------------------------------------------------------------------- validation


def _center_crop(hr, lr, scale, max_size):
    """Centre crop to at most max_size HR pixels per side, on the LR grid so the pair stays aligned."""
    lh, lw = hr.shape[0] // scale, hr.shape[1] // scale
    m = max(1, max_size // scale)
    ch, cw = min(lh, m), min(lw, m)
    top, left = (lh - ch) // 2, (lw - cw) // 2
    hr = hr[top * scale:(top + ch) * scale, left * scale:(left + cw) * scale]
    if lr is not None:
        lr = lr[top:top + ch, left:left + cw]
    return hr, lr


def bicubic_lr(hr, scale):
    """LR as the MATLAB benchmark scripts make it: imresize(hr, 1/scale, 'bicubic') stored as 8-bit."""
    from jaxsr.degrade.ops import imresize

    return quantize(imresize(np.asarray(hr, np.float32), 1.0 / scale))


def val_items(cfg, splits, scale, which="val"):
    """Full validation (or test) images: list of dict(name, hr, lr), HWC float32 RGB in [0,1].

    HR is modcropped to the scale; LR is the paired file or bicubic_lr(hr). cfg.val_max_images keeps the
    first N, cfg.val_max_size centre-crops larger images (0 = no cap). Unreadable files are skipped with
    a warning; an empty list means nothing to validate on. Names are file stems (made unique).
    """
    return list(iter_val_items(cfg, splits, scale, which))


def iter_val_items(cfg, splits, scale, which="val"):
    """val_items one image at a time, for sets too large to hold in memory (e.g. 100 2K images: 3 GB)."""
    check_options(cfg)
    scale = int(scale)
    hr_files, lr_files = splits[which], splits.get(f"{which}_lr")
    if cfg.val_max_images:
        hr_files = hr_files[:cfg.val_max_images]
    names = unique_names([os.path.splitext(os.path.basename(p))[0] for p in hr_files])
    for k, path in enumerate(hr_files):
        try:
            hr = read_rgb(path, cfg.alpha)
            lr = read_rgb(lr_files[k], cfg.alpha) if lr_files else None
        except ImageError as e:
            _warn_once(path, str(e), "left out of validation")
            continue
        if lr is not None:
            check_pair_size(hr.shape, lr.shape, scale, path, lr_files[k])
        hr = hr[:hr.shape[0] // scale * scale, :hr.shape[1] // scale * scale]
        if hr.size == 0:
            _warn_once(path, f"smaller than the scale {scale}", "left out of validation")
            continue
        if cfg.val_max_size:
            hr, lr = _center_crop(hr, lr, scale, int(cfg.val_max_size))
        if lr is None:
            lr = bicubic_lr(hr, scale)
        yield dict(name=names[k], hr=np.ascontiguousarray(hr), lr=np.ascontiguousarray(lr))
