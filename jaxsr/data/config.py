"""The `config.data` block of a training config (ml_collections)."""
import ml_collections
from ml_collections import config_dict


def default_config():
    """Defaults for the host data pipeline; the trainer embeds this as `config.data`.

    Dataset, pick one (checked in this order):
      train_dir (+ val_dir, test_dir)   explicit folders, HR images read recursively;
                                        train_lr_dir/val_lr_dir/test_lr_dir: optional paired LR folders.
      hr_dir (+ lr_dir)                 one folder split automatically by `split` (train, val, test fractions).
      packed (+ val_dir, test_dir)      a packed set (`python -m jaxsr.data.pack`) as the training set.
      sources (+ val_dir, test_dir)     several training sets sampled with weights:
                                        [dict(dir=... | lmdb=... | packed=..., lr=..., weight=1.0), ...]
      neither                           the built-in photographs that ship with scikit-image (logged).
    Any folder may be a BasicSR/traiNNer LMDB (data.mdb + meta_info.txt) instead of image files.
    The split actually used is written to <workdir>/dataset_splits.json and reused on resume.

    Training crops: gt_size is the HR crop side (LR crop = gt_size // scale for paired data); hflip and
    rot90 (with hflip this gives all 8 orientations) are drawn per sample from grain's per-record rng.
    small_images: 'pad' (reflect-pad bottom/right up to the crop) or 'skip' (use the next usable file).
    alpha: 'drop' (keep the stored RGB, like cv2.IMREAD_COLOR in BasicSR) or 'composite' (over white).
    num_workers: grain worker processes (0 = in-process threads only); read_threads: threads per
    process; prefetch: batches buffered per process.
    limit_train_files: train on only the first N records of each training source (a count >= 1), or on that fraction
    of them (0 < f < 1), for quick debugging runs; 0 = all. Validation and test are not limited.
    val_max_images / val_max_size: cap validation to the first N images / a centre crop of at most
    this many HR pixels per side (0 = no cap), to keep validation fast.
    """
    c = ml_collections.ConfigDict()
    c.hr_dir = config_dict.placeholder(str)
    c.lr_dir = config_dict.placeholder(str)
    c.train_dir = config_dict.placeholder(str)
    c.val_dir = config_dict.placeholder(str)
    c.test_dir = config_dict.placeholder(str)
    c.train_lr_dir = config_dict.placeholder(str)
    c.val_lr_dir = config_dict.placeholder(str)
    c.test_lr_dir = config_dict.placeholder(str)
    c.packed = config_dict.placeholder(str)
    c.sources = ()
    c.split = (0.8, 0.1, 0.1)
    c.gt_size = 256
    c.use_hflip = True
    c.use_rot = True
    c.small_images = "pad"
    c.alpha = "drop"
    c.num_workers = 4
    c.read_threads = 2
    c.prefetch = 4
    c.limit_train_files = 0.0
    c.val_max_images = 0
    c.val_max_size = 0
    return c
