"""Host data pipeline on grain: folders or built-in photographs -> split -> seeded crops -> batches (docs/data.md).

    from jaxsr.data import default_config, resolve_splits, train_iterator, val_items
    splits = resolve_splits(cfg, workdir, seed)           # <workdir>/dataset_splits.json, reused on resume
    it = train_iterator(cfg, splits, scale, seed, per_host_batch)   # next(it) -> dict(gt[, lq])
    items = val_items(cfg, splits, scale)                 # [dict(name, hr, lr)] full images

Packed sets: `python -m jaxsr.data.pack SRC OUT` (pack.py), read as data.packed (packed.py); BasicSR/traiNNer LMDBs
wherever a folder goes (lmdb.py); several weighted sources as data.sources (loader.WeightedChoice).
"""
from .config import default_config
from .loader import (ImageSource, PackedSource, TrainIterator, WeightedChoice, absl_flags_ready, bicubic_lr,
                     host_batch_size, iter_val_items, train_dataset, train_iterator, val_items)
from .sources import DataError, check_folders, check_options, read_rgb, resolve_splits, to_rgb
from .transforms import RandomCrop

__all__ = ["DataError", "check_folders", "check_options", "ImageSource", "PackedSource", "RandomCrop", "TrainIterator", "absl_flags_ready", "bicubic_lr",
           "default_config", "host_batch_size", "iter_val_items", "read_rgb", "resolve_splits",
           "to_rgb", "train_dataset", "train_iterator", "val_items", "WeightedChoice"]
