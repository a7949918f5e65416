"""The packed dataset (python -m jaxsr.data.pack, data.packed) on real photographs: BasicSR's windows, records equal to
the source pixels, bad files reported, resumable packing that never overwrites another dataset, and training from
it: the same stream for any worker count, bitwise resume, 2 processes equal to 1."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from test_data import block_mean, cfg_for, same, take, tiles, write_folder
from test_multihost import env
from test_train import ROOT, TINY, logged

from jaxsr.data import pack as pack_mod
from jaxsr.data import resolve_splits, train_iterator
from jaxsr.data.pack import pack, windows
from jaxsr.data.packed import PackedSet, read_meta
from jaxsr.errors import DataError
from jaxsr.imageio import decode_image, write_image

from conftest import photo


def test_windows_are_basicsr_extract_subimages():
    """DIV2K 2040x1356 at crop 480, step 240: the last window is moved flush with the edge, not dropped."""
    assert windows(1356, 480, 240) == ([0, 240, 480, 720, 876], 480)
    assert windows(2040, 480, 240) == ([0, 240, 480, 720, 960, 1200, 1440, 1560], 480)
    assert windows(1356, 480, 240, thresh=156) == ([0, 240, 480, 720], 480)  # BasicSR's thresh_size
    assert windows(960, 480, 240) == ([0, 240, 480], 480)  # an exact fit adds nothing
    assert windows(300, 480, 240) == ([0], 300)  # a short side is one window of the whole side


def _source_folder(root):
    """Real photographs: 8-bit RGB, 16-bit RGB, gray smaller than the crop, one too small, one corrupt."""
    src = os.path.join(root, "src")
    os.makedirs(os.path.join(src, "sub"))
    write_image(os.path.join(src, "a.png"), photo("astronaut", 100, 140))
    write_image(os.path.join(src, "sub", "b.png"), photo("coffee", 60, 80, top=100, left=100) * 0.7 + 0.001, bits=16)
    write_image(os.path.join(src, "c.png"), photo("camera", 40, 44, top=200, left=200)[..., :1])
    write_image(os.path.join(src, "tiny.png"), photo("chelsea", 20, 20))
    with open(os.path.join(src, "bad.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
    return src


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_records_are_the_source_pixels_and_bad_files_are_reported(tmp_path, caplog, encoding):
    src = _source_folder(str(tmp_path))
    out = str(tmp_path / "out")
    with caplog.at_level(logging.WARNING, "jaxsr.data"):
        meta = pack(src, out, crop=48, step=24, min_size=30, encoding=encoding, files_per_shard=2, progress=False)
    assert meta["complete"] and meta["files"] == 5 and len(meta["shards"]) == 3
    assert sorted(s["file"] for s in meta["skipped"]) == ["bad.png", "tiny.png"]
    assert "bad.png" in caplog.text and "tiny.png" in caplog.text and "--min-size 30" in caplog.text
    # a.png 100x140: rows [0,24,48,52] x cols [0,24,48,72,92]; sub/b.png 60x80: [0,12] x [0,24,32]; c.png: whole
    lines = open(os.path.join(out, "index.tsv")).read().splitlines()
    assert lines[0].split("\t") == ["record", "name", "source", "top", "left", "height", "width", "channels", "bits"]
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == meta["records"] == 20 + 6 + 1
    assert [(r[2], int(r[3]), int(r[4])) for r in rows if r[2] == "a.png"] == [("a.png", t, l) for t in (0, 24, 48, 52)
                                                                                for l in (0, 24, 48, 72, 92)]
    assert rows[0][1] == "a_s001" and rows[21][1:3] == ["b_s001", os.path.join("sub", "b.png")]
    assert rows[20][1:] == ["c_s001", "c.png", "0", "0", "40", "44", "1", "8"]  # smaller than the crop: kept whole
    assert {r[8] for r in rows if r[2].endswith("b.png")} == {"16"}
    records = PackedSet(out)
    assert len(records) == 27 and not records.paired
    for r in rows:
        want = decode_image(os.path.join(src, r[2]))[0]
        top, left, h, w = (int(v) for v in r[3:7])
        (got, bits), = records.read(int(r[0]))
        assert got.dtype == want.dtype and bits == int(r[8])
        np.testing.assert_array_equal(got, want[top:top + h, left:left + w])  # lossless, bit depth kept


def _tree(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


def test_packing_resumes_after_a_kill_and_never_overwrites(tmp_path, monkeypatch):
    src = _source_folder(str(tmp_path))
    whole = str(tmp_path / "whole")
    pack(src, whole, crop=48, step=24, files_per_shard=1, progress=False)

    out = str(tmp_path / "out")
    real_cut, calls = pack_mod.cut, []

    def dies_on_the_fourth_file(task):
        calls.append(task)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the process is stopped while its fourth shard is being written
        return real_cut(task)

    monkeypatch.setattr(pack_mod, "cut", dies_on_the_fourth_file)
    with pytest.raises(KeyboardInterrupt):
        pack(src, out, crop=48, step=24, files_per_shard=1, progress=False)
    monkeypatch.setattr(pack_mod, "cut", real_cut)
    meta = json.load(open(os.path.join(out, "pack.json")))
    assert not meta["complete"] and len(meta["shards"]) == 3
    with pytest.raises(DataError, match="did not finish; rerun the same"):
        read_meta(out)
    pack(src, out, crop=48, step=24, files_per_shard=1, progress=False)  # the same command again continues
    assert _tree(out) == _tree(whole)  # byte for byte what an uninterrupted run wrote
    before = _tree(out)
    assert pack(src, out, crop=48, step=24, files_per_shard=1, progress=False)["complete"]  # nothing to do
    assert _tree(out) == before

    # other images or options into the same OUT: refused, nothing touched
    with pytest.raises(DataError, match="already holds another packed dataset"):
        pack(src, out, crop=64, step=32, progress=False)
    other = write_folder(str(tmp_path / "other"), tiles(2, 64))
    with pytest.raises(DataError, match="already holds another packed dataset"):
        pack(other, out, crop=48, step=24, progress=False)
    assert _tree(out) == before
    # a folder holding anything else is refused, from the command line as one line
    r = subprocess.run([sys.executable, "-m", "jaxsr.data.pack", other, src], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "not empty" in r.stderr
    assert sorted(os.listdir(src)) == ["a.png", "bad.png", "c.png", "sub", "tiny.png"]


def test_packed_stream_workers_resume_hosts_and_pairs(tmp_path):
    src = write_folder(str(tmp_path / "src"), tiles(6, 96))
    out = str(tmp_path / "out")
    pack(src, out, crop=64, step=32, progress=False)
    cfg = cfg_for(packed=out)
    sp = resolve_splits(cfg, None, 0)
    assert sp["source"] == "sources" and sp["train"] == [] and sp["train_lr"] is None
    assert sp["sources"][0]["records"] == 6 * 4 and sp["sources"][0]["id"] == read_meta(out)["id"]
    args = dict(scale=4, seed=5, per_host_batch=4, process_index=0, process_count=1)
    first = take(train_iterator(cfg, sp, **args), 6)
    it = train_iterator(cfg, sp, **args)
    take(it, 3)
    state = it.get_state()
    resumed = train_iterator(cfg, sp, **args)
    resumed.set_state(state)
    assert same(take(resumed, 3), first[3:])  # bitwise resume
    workers = train_iterator(cfg_for(packed=out, num_workers=2, read_threads=2, prefetch=2), sp, **args)
    try:
        assert same(take(workers, 6), first)  # the same stream with worker processes
    finally:
        workers.close()
    halves = [take(train_iterator(cfg, sp, 4, 5, 2, p, 2), 6) for p in range(2)]
    for k in range(6):  # two hosts' slices make the one-host batch
        np.testing.assert_array_equal(np.concatenate([halves[0][k]["gt"], halves[1][k]["gt"]]), first[k]["gt"])

    # paired packing: LR windows cut at the same places on the LR grid, crops aligned after packing
    lr = write_folder(str(tmp_path / "lr"), [block_mean(x, 4) for x in tiles(6, 96)])
    pout = str(tmp_path / "paired")
    pack(src, pout, crop=64, step=32, lr=lr, scale=4, progress=False)
    psp = resolve_splits(cfg_for(packed=pout), None, 0)
    assert psp["train_lr"] == []  # paired: the trainer keeps no queue and passes the LR through
    for b in take(train_iterator(cfg_for(packed=pout), psp, 4, 0, 4, 0, 1), 3):
        assert b["lq"].shape == (4, 8, 8, 3)
        for gt, lq in zip(b["gt"], b["lq"]):
            np.testing.assert_allclose(lq, block_mean(gt, 4), atol=0.6 / 255)
    with pytest.raises(DataError, match="holds x4 pairs but the run is x2"):
        train_iterator(cfg_for(packed=pout), psp, 2, 0, 4, 0, 1)
    # the run's split records the set's id: a repack under the same name is refused
    wd = str(tmp_path / "wd")
    rec = resolve_splits(cfg, wd, 0)
    rec["sources"][0]["id"] = "0" * 64
    json.dump(rec, open(os.path.join(wd, "dataset_splits.json"), "w"))
    with pytest.raises(DataError, match="repacked with other images"):
        train_iterator(cfg, resolve_splits(cfg, wd, 0), **args)


def _train(args, workdir, devices=4, procs=1, timeout=600):
    """run_train.py with 1 process of `devices` CPU devices, or 2 of devices/2 on a localhost coordinator."""
    if procs == 1:
        r = subprocess.run([sys.executable, "run_train.py", *args, "--workdir", str(workdir)], cwd=ROOT,
                           capture_output=True, text=True, env=env(devices), timeout=timeout)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    ps = [subprocess.Popen([sys.executable, "run_train.py", *args, "--workdir", str(workdir), f"--coordinator_address=localhost:{port}",
                            "--num_processes=2", f"--process_id={i}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env(devices // 2)) for i in range(2)]
    outs = [p.communicate(timeout=timeout) for p in ps]
    for p, (_, err) in zip(ps, outs):
        assert p.returncode == 0, err[-3000:]
    return outs[0][0]


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_train_from_packed_resumes_bitwise_and_two_processes_equal_one(tmp_path):
    src = write_folder(str(tmp_path / "src"), tiles(6, 96))
    out = str(tmp_path / "out")
    pack(src, out, crop=64, step=32, progress=False)
    args = [*TINY, f"--config.data.packed={out}", f"--config.data.val_dir={src}", "--config.optim.schedule=constant",
            "--config.train.total_steps=6", "--config.train.ckpt_every=100"]
    _train(args, tmp_path / "ref")
    ref = logged(tmp_path / "ref")
    assert sorted(ref) == list(range(1, 7))
    _train([*args, "--max_steps=3"], tmp_path / "resumed")
    assert "resumed from step 3" in _train(args, tmp_path / "resumed")
    got = logged(tmp_path / "resumed")
    assert all(got[s] == ref[s] for s in range(1, 7))  # bitwise: the same floats
    assert "4 device(s)" in _train(args, tmp_path / "two", procs=2)
    two = logged(tmp_path / "two")
    for s in range(1, 7):  # the same global batches; only the reductions' order differs between 1 and 2 processes
        np.testing.assert_allclose(two[s]["loss"], ref[s]["loss"], rtol=1e-5)
