"""BasicSR/traiNNer LMDB datasets as data.hr_dir/lr_dir: built here as BasicSR's make_lmdb_from_imgs writes them (keys
are the names without extension, PNG values, meta_info.txt lines `name.png (h,w,c) level`), read exactly as the
PNG files they came from, and trained from, paired and GT-only."""
import json
import logging
import os

import cv2
import numpy as np
import pytest
from test_data import block_mean, cfg_for, same, take, tiles, write_folder
from test_train import TINY, logged, run

from jaxsr.data import resolve_splits, train_iterator, val_items
from jaxsr.data.sources import read_rgb
from jaxsr.errors import DataError
from jaxsr.imageio import write_image


def make_basicsr_lmdb(folder, out, level=1, damaged=()):
    """BasicSR's layout from a folder of PNGs: data.mdb with key = stem, value = the PNG re-encoded by cv2 at
    `level`, and meta_info.txt lines '0001_s001.png (h,w,c) level' in sorted name order. `damaged`: names whose
    value is garbage."""
    import lmdb

    names = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    env = lmdb.open(out, map_size=1 << 30)
    lines = []
    with env.begin(write=True) as txn:
        for name in names:
            img = cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED)
            h, w = img.shape[:2]
            c = 1 if img.ndim == 2 else img.shape[2]
            value = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, level])[1].tobytes()
            txn.put(os.path.splitext(name)[0].encode("ascii"), b"not a png" if name in damaged else value)
            lines.append(f"{name} ({h},{w},{c}) {level}\n")
    env.close()
    with open(os.path.join(out, "meta_info.txt"), "w") as f:
        f.writelines(lines)
    return out


def _subimages(root, n=10):
    """BasicSR-style sub-images of real photographs (0001_s001.png, ...; one gray, one 16-bit) and their x4 LR."""
    hrs = tiles(n, 48)
    names = [f"{i // 4 + 1:04d}_s{i % 4 + 1:03d}.png" for i in range(n)]
    hr = os.path.join(root, "hr_sub")
    write_folder(hr, hrs, names)
    write_image(os.path.join(hr, names[1]), hrs[1][..., :1])  # gray
    write_image(os.path.join(hr, names[2]), hrs[2] * 0.9 + 0.003, bits=16)
    lr = write_folder(os.path.join(root, "lr_sub"), [block_mean(read_rgb(os.path.join(hr, m)), 4) for m in names], names)
    return hr, lr


def test_lmdb_reads_exactly_as_its_png_files(tmp_path, caplog):
    hr, lr = _subimages(str(tmp_path))
    hr_db = make_basicsr_lmdb(hr, str(tmp_path / "DF2K_HR_sub.lmdb"))
    lr_db = make_basicsr_lmdb(lr, str(tmp_path / "DF2K_LRx4_sub.lmdb"))
    assert open(os.path.join(hr_db, "meta_info.txt")).readline() == "0001_s001.png (48,48,3) 1\n"
    from_db = resolve_splits(cfg_for(hr_dir=hr_db, lr_dir=lr_db), None, 0)
    from_png = resolve_splits(cfg_for(hr_dir=hr, lr_dir=lr), None, 0)
    assert [os.path.relpath(p, hr_db) for p in from_db["train"]] == [os.path.relpath(p, hr) for p in from_png["train"]]
    assert all(os.path.dirname(p) == lr_db for p in from_db["train_lr"])
    for a, b in zip(from_db["train"] + from_db["val"], from_png["train"] + from_png["val"]):
        np.testing.assert_array_equal(read_rgb(a), read_rgb(b))  # 8-bit, gray and 16-bit alike
    assert read_rgb(os.path.join(hr_db, "0001_s003.png")).dtype == np.float32
    args = dict(scale=4, seed=3, per_host_batch=3, process_index=0, process_count=1)
    for paired in (True, False):
        kw = dict(hr_dir=hr_db, lr_dir=lr_db) if paired else dict(hr_dir=hr_db)
        pkw = dict(hr_dir=hr, lr_dir=lr) if paired else dict(hr_dir=hr)
        a = take(train_iterator(cfg_for(**kw), resolve_splits(cfg_for(**kw), None, 0), **args), 4)
        b = take(train_iterator(cfg_for(**pkw), resolve_splits(cfg_for(**pkw), None, 0), **args), 4)
        assert same(a, b) and ("lq" in a[0]) == paired  # the very same batches as from the PNG folders
    va, vb = val_items(cfg_for(hr_dir=hr_db, lr_dir=lr_db), from_db, 4), val_items(cfg_for(hr_dir=hr, lr_dir=lr), from_png, 4)
    assert [v["name"] for v in va] == [v["name"] for v in vb] and all(np.array_equal(x["lr"], y["lr"]) for x, y in zip(va, vb))

    # a damaged value is skipped with one warning, like a corrupt file
    bad_db = make_basicsr_lmdb(hr, str(tmp_path / "bad.lmdb"), damaged={"0001_s001.png"})
    with caplog.at_level(logging.WARNING, "jaxsr.data"):
        take(train_iterator(cfg_for(hr_dir=bad_db), resolve_splits(cfg_for(hr_dir=bad_db), None, 0), **args), 4)
    assert "bad.lmdb/0001_s001.png" in caplog.text and "skipping" in caplog.text

    # what the user must fix, in one line
    os.rename(os.path.join(hr_db, "meta_info.txt"), os.path.join(hr_db, "meta.bak"))
    with pytest.raises(DataError, match="holds data.mdb but no meta_info.txt"):
        resolve_splits(cfg_for(hr_dir=hr_db), None, 0)
    with open(os.path.join(hr_db, "meta_info.txt"), "w") as f:
        f.write("0001_s001.png 48x48\n")
    with pytest.raises(DataError, match="line 1: .* is not 'name.png"):
        resolve_splits(cfg_for(hr_dir=hr_db), None, 0)


def test_train_from_lmdb_paired_and_gt_only(tmp_path):
    hr, lr = _subimages(str(tmp_path))
    hr_db = make_basicsr_lmdb(hr, str(tmp_path / "hr.lmdb"))
    lr_db = make_basicsr_lmdb(lr, str(tmp_path / "lr.lmdb"))
    base = [*TINY, "--config.train.total_steps=3", "--config.val.every=3"]
    for name, extra in (("gt_only", [f"--config.data.hr_dir={hr_db}"]),
                        ("paired", [f"--config.data.hr_dir={hr_db}", f"--config.data.lr_dir={lr_db}"])):
        code, out, err = run([*base, *extra], tmp_path / name)
        assert code == 0, err[-3000:]
        assert sorted(logged(tmp_path / name)) == [1, 2, 3]
        split = json.load(open(tmp_path / name / "dataset_splits.json"))
        assert split["source"] == "hr_dir" and all(p.startswith(hr_db + os.sep) for p in split["train"] + split["val"])
        assert (split["train_lr"] is not None) == (name == "paired")
        rows = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl") if "val_psnr" in line]
        assert rows and np.isfinite(rows[-1]["val_psnr"])  # validated on images read from the LMDB
