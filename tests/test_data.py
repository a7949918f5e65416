"""Host data pipeline (jaxsr.data) on real photographs: splits, determinism, resume, pairing, bad files, sharding."""
import functools
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxsr.data import (DataError, ImageSource, default_config, host_batch_size, read_rgb, resolve_splits,
                        train_iterator, val_items)
from jaxsr.data.sources import split_counts
from jaxsr.imageio import to_float, write_image

from conftest import photo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


@functools.lru_cache(maxsize=None)
def _photo(name):
    return photo(name)


def tiles(n, size):
    """n different real-photo tiles of size x size (HxWx3 float32)."""
    out = []
    for i in range(n):
        img = _photo(PHOTOS[i % len(PHOTOS)])
        top = (i // len(PHOTOS)) * size
        out.append(np.ascontiguousarray(img[top:top + size, 40:40 + size]))
    return out


def write_folder(folder, imgs, names=None, bits=8):
    os.makedirs(folder, exist_ok=True)
    names = names or [f"img{i:03d}.png" for i in range(len(imgs))]
    for name, img in zip(names, imgs):
        write_image(os.path.join(folder, name), img, bits=bits)
    return folder


def cfg_for(**kw):
    cfg = default_config()
    cfg.num_workers = 0
    cfg.read_threads = 1
    cfg.prefetch = 1
    cfg.gt_size = 32
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def block_mean(x, s):
    h, w, c = x.shape
    return x.reshape(h // s, s, w // s, s, c).mean((1, 3))


def take(it, n):
    return [next(it) for _ in range(n)]


def same(a, b):
    return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------- splits


def test_builtin_photographs_when_no_dataset(tmp_path, caplog):
    with caplog.at_level(logging.INFO, "jaxsr.data"):
        sp = resolve_splits(default_config(), str(tmp_path), seed=0)
    assert sp["source"] == "builtin" and sp["train_lr"] is None
    names = {k: [os.path.basename(p) for p in sp[k]] for k in ("train", "val", "test")}
    assert names["val"] == ["chelsea.png", "coffee.png"] and names["test"] == ["rocket.jpg"]
    assert len(names["train"]) >= 10 and not set(names["train"]) & set(names["val"] + names["test"])
    assert "built-in photographs" in caplog.text and "scikit-image" in caplog.text
    assert (tmp_path / "dataset_splits.json").exists()
    batch = next(train_iterator(cfg_for(), sp, 4, seed=0, per_host_batch=2, process_index=0, process_count=1))
    assert batch["gt"].shape == (2, 32, 32, 3) and batch["gt"].dtype == np.float32 and "lq" not in batch


def test_split_80_10_10_written_once_and_reused(tmp_path):
    assert split_counts(100, (0.8, 0.1, 0.1)) == (80, 10, 10)
    hr = write_folder(str(tmp_path / "hr"), tiles(20, 24))
    cfg = cfg_for(hr_dir=hr)
    sp = resolve_splits(cfg, str(tmp_path / "wd"), seed=1)
    assert [len(sp[k]) for k in ("train", "val", "test")] == [16, 2, 2]
    assert sorted(sp["train"] + sp["val"] + sp["test"]) == sorted(str(p) for p in (tmp_path / "hr").iterdir())
    recorded = (tmp_path / "wd" / "dataset_splits.json").read_text()
    assert json.loads(recorded)["val"] == sp["val"]
    # More files and another seed later: the recorded split is reused, never re-split.
    write_folder(hr, tiles(3, 24), names=["new0.png", "new1.png", "new2.png"])
    again = resolve_splits(cfg, str(tmp_path / "wd"), seed=2)
    assert {k: again[k] for k in ("train", "val", "test")} == {k: sp[k] for k in ("train", "val", "test")}
    assert (tmp_path / "wd" / "dataset_splits.json").read_text() == recorded
    other = resolve_splits(cfg, None, seed=2)  # without the record another seed gives another split
    assert other["val"] + other["test"] != sp["val"] + sp["test"]
    # A workdir split from one dataset refuses a config that names another.
    with pytest.raises(DataError, match="data.hr_dir is None but this workdir's split"):
        resolve_splits(cfg_for(), str(tmp_path / "wd"), seed=1)


def test_explicit_folders(tmp_path):
    imgs = tiles(6, 40)
    cfg = cfg_for(train_dir=write_folder(str(tmp_path / "tr"), imgs[:4]),
                  val_dir=write_folder(str(tmp_path / "va"), imgs[4:5]),
                  test_dir=write_folder(str(tmp_path / "te" / "sub"), imgs[5:]))
    cfg.test_dir = str(tmp_path / "te")  # recursive
    sp = resolve_splits(cfg, str(tmp_path / "wd"), seed=0)
    assert sp["source"] == "folders" and [len(sp[k]) for k in ("train", "val", "test")] == [4, 1, 1]
    assert sp["test"][0].endswith(os.path.join("sub", "img000.png"))
    items = val_items(cfg, sp, 2, which="test")
    np.testing.assert_allclose(items[0]["hr"], imgs[5], atol=0.5 / 255)


def test_missing_empty_and_too_few(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_splits(cfg_for(hr_dir=str(tmp_path / "nope")), None, 0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images"):
        resolve_splits(cfg_for(hr_dir=str(tmp_path / "empty")), None, 0)
    few = write_folder(str(tmp_path / "few"), tiles(2, 16))
    with pytest.raises(DataError, match="has 2 image.*at least 3"):
        resolve_splits(cfg_for(hr_dir=few), None, 0)


# ------------------------------------------------------------------------------------------- the training stream


def test_deterministic_workers_and_resume(tmp_path):
    """Same seed -> same batches; 0 or 2 worker processes -> identical; get_state/set_state resumes exactly."""
    sp = resolve_splits(cfg_for(hr_dir=write_folder(str(tmp_path / "hr"), tiles(10, 48))), None, 0)
    args = dict(scale=4, seed=7, per_host_batch=3, process_index=0, process_count=1)
    it = train_iterator(cfg_for(), sp, **args)
    first = take(it, 4)
    state = it.get_state()
    rest = take(it, 4)
    assert same(first + rest, take(train_iterator(cfg_for(), sp, **args), 8))
    assert not same(first, take(train_iterator(cfg_for(), sp, **{**args, "seed": 8}), 4))
    # every sample is a real crop; flips/rotations vary
    assert all(0 <= b["gt"].min() and b["gt"].max() <= 1 for b in first)

    resumed = train_iterator(cfg_for(), sp, **args)
    resumed.set_state(state)
    assert same(rest, take(resumed, 4))

    workers = train_iterator(cfg_for(num_workers=2, read_threads=2, prefetch=2), sp, **args)
    try:
        assert same(first, take(workers, 4))
        assert workers.get_state() == state  # the state does not depend on the worker count
        workers.set_state(state)
        assert same(rest, take(workers, 4))
    finally:
        workers.close()


def test_per_host_slices_make_the_same_global_batch(tmp_path):
    """Hosts decode disjoint slices of each global batch; together they are exactly the 1-host batch."""
    sp = resolve_splits(cfg_for(hr_dir=write_folder(str(tmp_path / "hr"), tiles(6, 32))), None, 0)
    cfg = cfg_for()
    whole = take(train_iterator(cfg, sp, 4, seed=0, per_host_batch=4, process_index=0, process_count=1), 3)
    parts = [take(train_iterator(cfg, sp, 4, seed=0, per_host_batch=2, process_index=p, process_count=2), 3) for p in range(2)]
    for k in range(3):
        np.testing.assert_array_equal(np.concatenate([parts[0][k]["gt"], parts[1][k]["gt"]]), whole[k]["gt"])

    # the trainer's view: per-host batch -> one global array over the 'data' axis
    from jaxsr import parallel

    assert host_batch_size(8, process_count=2) == 4
    with pytest.raises(DataError, match="not divisible"):
        host_batch_size(6, process_count=4)
    batch = next(train_iterator(cfg, sp, 4, seed=0, per_host_batch=2, process_index=0, process_count=1))
    glob = parallel.global_batch(parallel.make_mesh(), batch)
    assert glob["gt"].shape == (2, 32, 32, 3) and np.array_equal(np.asarray(glob["gt"]), batch["gt"])


# ------------------------------------------------------------------------------------------- pairs


def test_paired_crops_are_aligned(tmp_path):
    """LR made by 4x4 block means: every LR crop must equal the block mean of its GT crop, flips/rot included."""
    hrs = [img[:64, :96] for img in tiles(3, 96)]
    hr = write_folder(str(tmp_path / "hr"), hrs)
    write_folder(str(tmp_path / "lr"), [block_mean(x, 4) for x in hrs], names=[f"img{i:03d}x4.png" for i in range(3)])
    cfg = cfg_for(train_dir=hr, train_lr_dir=str(tmp_path / "lr"))
    sp = resolve_splits(cfg, None, 0)
    assert [os.path.basename(p) for p in sp["train_lr"]] == ["img000x4.png", "img001x4.png", "img002x4.png"]
    it = train_iterator(cfg, sp, 4, seed=3, per_host_batch=4, process_index=0, process_count=1)
    for b in take(it, 3):
        assert b["gt"].shape == (4, 32, 32, 3) and b["lq"].shape == (4, 8, 8, 3)
        for gt, lq in zip(b["gt"], b["lq"]):
            np.testing.assert_allclose(lq, block_mean(gt, 4), atol=0.6 / 255)


def test_paired_wrong_scale_names_the_file(tmp_path):
    hrs = tiles(3, 64)
    hr = write_folder(str(tmp_path / "hr"), hrs)
    lrs = [block_mean(x, 4) for x in hrs]
    lrs[1] = block_mean(hrs[1], 2)  # an x2 file among x4 ones
    write_folder(str(tmp_path / "lr"), lrs)
    cfg = cfg_for(train_dir=hr, train_lr_dir=str(tmp_path / "lr"), val_dir=hr, val_lr_dir=str(tmp_path / "lr"))
    sp = resolve_splits(cfg, None, 0)
    msg = r"lr/img001.png is 32x32 but its HR .*hr/img001.png is 64x64; at scale 4 the LR must be 16x16"
    with pytest.raises(DataError, match=msg):
        train_iterator(cfg, sp, 4, seed=0, per_host_batch=2, process_index=0, process_count=1)
    with pytest.raises(DataError, match=msg):
        val_items(cfg, sp, 4)
    os.remove(tmp_path / "lr" / "img002.png")
    with pytest.raises(DataError, match="no LR file of the same name.*img002"):
        resolve_splits(cfg, None, 0)


# ------------------------------------------------------------------------------------------- bad and odd files


def test_corrupt_file_is_skipped_with_a_warning(tmp_path, caplog):
    hr = write_folder(str(tmp_path / "hr"), tiles(5, 40))
    bad = os.path.join(hr, "img002.png")
    with open(bad, "r+b") as f:  # a truncated download: header kept, data cut
        f.truncate(60)
    sp = dict(train=sorted(os.path.join(hr, f) for f in os.listdir(hr)))
    src = ImageSource(sp["train"], None, 4, 32)
    with caplog.at_level(logging.WARNING, "jaxsr.data"):
        assert np.array_equal(src[2]["gt"], src[3]["gt"])  # replaced by the next readable file
        it = train_iterator(cfg_for(), sp, 4, seed=0, per_host_batch=5, process_index=0, process_count=1)
        take(it, 4)  # 4 epochs over the 5 files: never dies
    warnings = [r.getMessage() for r in caplog.records if "img002.png" in r.getMessage()]
    assert len(warnings) == 1 and "skipping" in warnings[0]


def test_small_images_pad_or_skip(tmp_path, caplog):
    imgs = tiles(3, 40)
    imgs[1] = imgs[1][:20, :24]
    hr = write_folder(str(tmp_path / "hr"), imgs)
    files = sorted(os.path.join(hr, f) for f in os.listdir(hr))
    padded = to_float(ImageSource(files, None, 4, 32, small_images="pad")[1]["gt"])
    assert padded.shape == (32, 32, 3)
    np.testing.assert_allclose(padded[:20, :24], imgs[1], atol=0.5 / 255)
    np.testing.assert_array_equal(padded[20:26, :24], padded[18:12:-1, :24])  # reflected
    with caplog.at_level(logging.WARNING, "jaxsr.data"):
        skipped = to_float(ImageSource(files, None, 4, 32, small_images="skip")[1]["gt"])
    np.testing.assert_allclose(skipped, imgs[2], atol=0.5 / 255)
    assert "img001.png" in caplog.text and "small_images='skip'" in caplog.text
    # paired: both sides padded, LR to gt_size/scale, the original pixels kept in the top-left
    small_hr = imgs[1][:20, :24]
    lr_path = write_folder(str(tmp_path / "lr"), [block_mean(small_hr, 4)])
    ex = ImageSource([files[1]], [os.path.join(lr_path, "img000.png")], 4, 32)[0]
    assert ex["gt"].shape == (32, 32, 3) and ex["lq"].shape == (8, 8, 3)
    np.testing.assert_allclose(to_float(ex["lq"][:5, :6]), block_mean(small_hr, 4), atol=0.5 / 255)
    with pytest.raises(DataError, match="small_images"):
        train_iterator(cfg_for(small_images="crop"), dict(train=files), 4, 0, 1, 0, 1)


def test_16bit_gray_rgba(tmp_path):
    img = photo("coffee", 48, 48)
    ramp = np.linspace(0, 1, 48 * 48, dtype=np.float32).reshape(48, 48, 1)
    write_image(str(tmp_path / "deep.png"), img * 0.5 + ramp * 0.01, bits=16)
    deep = read_rgb(str(tmp_path / "deep.png"))
    np.testing.assert_allclose(deep, img * 0.5 + ramp * 0.01, atol=1 / 65535)
    assert np.any(np.abs(deep * 255 - np.round(deep * 255)) > 0.05)  # finer than 8 bits survives

    write_image(str(tmp_path / "gray.png"), img[..., :1])
    gray = read_rgb(str(tmp_path / "gray.png"))
    assert gray.shape == (48, 48, 3) and np.array_equal(gray[..., 0], gray[..., 2])

    alpha = np.concatenate([img, np.full((48, 48, 1), 0.5, np.float32)], -1)
    alpha[:, :24, 3] = 0.0
    write_image(str(tmp_path / "rgba.png"), alpha)
    dropped = read_rgb(str(tmp_path / "rgba.png"), alpha="drop")
    over_white = read_rgb(str(tmp_path / "rgba.png"), alpha="composite")
    np.testing.assert_allclose(dropped, img, atol=0.5 / 255)
    np.testing.assert_allclose(over_white[:, :24], 1.0)
    np.testing.assert_allclose(over_white[:, 24:], img[:, 24:] * (128 / 255) + 127 / 255, atol=1e-5)

    # all three feed the pipeline as RGB
    sp = dict(train=[str(tmp_path / n) for n in ("deep.png", "gray.png", "rgba.png")])
    b = next(train_iterator(cfg_for(), sp, 4, seed=0, per_host_batch=3, process_index=0, process_count=1))
    assert b["gt"].shape == (3, 32, 32, 3)

    # the pipeline crops the stored pixels and converts the crop: bitwise what converting first gives
    names = ("deep.png", "gray.png", "rgba.png")
    os.makedirs(tmp_path / "exact")
    for name, arr in zip(names, (img * 0.5 + ramp * 0.01, img[..., :1], alpha)):
        write_image(str(tmp_path / "exact" / name), arr[:32, :32], bits=16 if name == "deep.png" else 8)
    files = [str(tmp_path / "exact" / n) for n in names]
    for mode in ("drop", "composite"):
        cfg = cfg_for(use_hflip=False, use_rot=False, alpha=mode)
        b = next(train_iterator(cfg, dict(train=files), 4, seed=0, per_host_batch=3, process_index=0,
                                process_count=1))
        got = sorted(b["gt"], key=lambda a: float(a.sum()))
        want = sorted((read_rgb(f, alpha=mode) for f in files), key=lambda a: float(a.sum()))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------------------------------- validation


def test_val_items_bicubic_and_caps(tmp_path):
    from jaxsr.degrade.ops import imresize

    cfg = cfg_for()
    sp = resolve_splits(cfg, None, 0)
    items = val_items(cfg, sp, 3)
    assert [it["name"] for it in items] == ["chelsea", "coffee"]
    for it in items:
        h, w, _ = it["hr"].shape
        assert h % 3 == 0 and w % 3 == 0 and it["lr"].shape == (h // 3, w // 3, 3)
        assert np.allclose(it["lr"] * 255, np.round(it["lr"] * 255), atol=1e-4)  # stored as 8 bits
        np.testing.assert_allclose(it["lr"], np.clip(imresize(it["hr"], 1 / 3), 0, 1), atol=0.5 / 255 + 1e-6)
    chelsea = read_rgb(sp["val"][0])
    np.testing.assert_array_equal(items[0]["hr"], chelsea[:300, :450])

    capped = val_items(cfg_for(val_max_images=1, val_max_size=64), sp, 4, which="val")
    assert len(capped) == 1 and capped[0]["hr"].shape == (64, 64, 3) and capped[0]["lr"].shape == (16, 16, 3)
    assert val_items(cfg_for(), dict(val=[], val_lr=None), 4) == []


def test_paired_val_uses_the_lr_files(tmp_path):
    hrs = [np.ascontiguousarray(x[:62, :50]) for x in tiles(2, 64)]  # not multiples of 4: HR is modcropped
    lrs = [block_mean(x[:60, :48], 4) for x in hrs]
    cfg = cfg_for(train_dir=write_folder(str(tmp_path / "hr"), hrs), train_lr_dir=write_folder(str(tmp_path / "lr"), lrs),
                  val_dir=str(tmp_path / "hr"), val_lr_dir=str(tmp_path / "lr"), val_max_size=32)
    items = val_items(cfg, resolve_splits(cfg, None, 0), 4)
    assert items[0]["hr"].shape == (32, 32, 3) and items[0]["lr"].shape == (8, 8, 3)
    np.testing.assert_allclose(items[0]["lr"], block_mean(items[0]["hr"], 4), atol=0.6 / 255)


# ------------------------------------------------------------------------------------------- absl + orbax


def test_workers_under_absl_app_run_and_orbax_checkpoint(tmp_path):
    """The trainer's setting: absl app.run main, a worker process, the iterator saved in an orbax Composite."""
    script = textwrap.dedent(f"""
        import sys, numpy as np, grain, orbax.checkpoint as ocp
        from absl import app
        sys.path.insert(0, {REPO!r})
        from jaxsr.data import default_config, resolve_splits, train_iterator

        def main(argv):
            cfg = default_config(); cfg.gt_size = 32; cfg.num_workers = 1; cfg.read_threads = 1
            sp = resolve_splits(cfg, {str(tmp_path / "wd")!r}, 0)
            it = train_iterator(cfg, sp, 4, 0, 2, 0, 1)
            [next(it) for _ in range(3)]
            mngr = ocp.CheckpointManager({str(tmp_path / "ckpt")!r})
            mngr.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
            mngr.wait_until_finished()
            want = [next(it)["gt"] for _ in range(2)]
            it.close()
            it2 = train_iterator(cfg, sp, 4, 0, 2, 0, 1)
            mngr.restore(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(it2)))
            got = [next(it2)["gt"] for _ in range(2)]
            it2.close(); mngr.close()
            assert all(np.array_equal(a, b) for a, b in zip(want, got))
            print("RESUMED", it2.get_state().decode())

        if __name__ == "__main__":
            app.run(main)
    """)
    path = tmp_path / "run.py"
    path.write_text(script)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'RESUMED {"step": 5}' in r.stdout


@pytest.mark.parametrize("limit,kept", [(2, 2), (0.5, 3), (0.01, 1), (0, 6)])
def test_limit_train_files_keeps_the_first_records_of_the_training_split(tmp_path, limit, kept):
    imgs = tiles(6, 40)
    cfg = cfg_for(train_dir=write_folder(str(tmp_path / "tr"), imgs), limit_train_files=float(limit), use_hflip=False,
                  use_rot=False)
    sp = resolve_splits(cfg, None, seed=0)
    seen = set()
    for batch in take(train_iterator(cfg, sp, 2, seed=0, per_host_batch=4), 12):
        for gt in batch["gt"]:  # which file each crop was cut from
            seen |= {i for i, img in enumerate(imgs) if any(np.allclose(gt, img[t:t + 32, l:l + 32], atol=0.5 / 255)
                                                              for t in range(9) for l in range(9))}
    assert seen == set(range(kept))


def test_limit_train_files_refuses_what_is_neither_a_count_nor_a_fraction():
    from jaxsr.data import check_options

    for bad in (-1.0, 2.5):
        with pytest.raises(DataError, match="data.limit_train_files must be a count"):
            check_options(cfg_for(limit_train_files=bad))
