"""Several training sources (data.sources: folders, LMDBs, packed sets, each with a weight): the observed source
frequencies match the weights, each source runs through its own seeded epochs, and resume continues the sequence."""
import math
import os
import pickle

import numpy as np
import pytest
from test_data import cfg_for, same, take, tiles, write_folder
from test_data_lmdb import make_basicsr_lmdb

from jaxsr.data import resolve_splits, train_iterator
from jaxsr.data.loader import WeightedChoice
from jaxsr.data.pack import pack
from jaxsr.errors import ConfigError, DataError


def within(counts, probs, sigmas=4.0):
    """Each count within `sigmas` binomial standard deviations of n * p (a false alarm ~1e-4 per source)."""
    n = sum(counts)
    return all(abs(c - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) for c, p in zip(counts, probs))


def test_weighted_choice_frequencies_order_and_resume():
    from scipy import stats

    weights = [3.0, 1.0, 0.5]
    probs = np.array(weights) / sum(weights)
    mix = WeightedChoice(weights, seed=11)
    n = 5 * WeightedChoice.BLOCK + 123
    picks = [mix[i] for i in range(n)]
    sources = np.array([s for s, _ in picks])
    counts = np.bincount(sources, minlength=3)
    assert within(counts, probs)
    assert stats.chisquare(counts, n * probs).pvalue > 1e-3
    for w in range(0, n - 2000, 2000):  # and in every window of 2000 samples, not just on the whole
        assert within(np.bincount(sources[w:w + 2000], minlength=3), probs, sigmas=4.5)
    for s in range(3):  # each source's samples are its records 0, 1, 2, ... in order: none skipped, none repeated
        assert [k for t, k in picks if t == s] == list(range(counts[s]))
    # a pure function of (seed, index): a fresh copy (as a worker process or a resumed run gets) jumping straight to
    # a late index, or another process after pickling, answers the same
    late = pickle.loads(pickle.dumps(WeightedChoice(weights, seed=11)))
    assert [late[i] for i in range(n - 50, n)] == picks[-50:]
    assert [WeightedChoice(weights, seed=12)[i] for i in range(200)] != picks[:200]


def _three_sources(tmp_path):
    """A folder, a packed set and an LMDB of distinct 32x32 real-photo tiles; {tile bytes: source}."""
    imgs = tiles(18, 32)
    folder = write_folder(str(tmp_path / "dir"), imgs[:6])
    src_b = write_folder(str(tmp_path / "b"), imgs[6:12])
    packed = str(tmp_path / "packed")
    pack(src_b, packed, crop=32, step=32, progress=False)  # one record per tile
    db = make_basicsr_lmdb(write_folder(str(tmp_path / "c"), imgs[12:]), str(tmp_path / "c.lmdb"))
    from jaxsr.data.sources import read_rgb

    which = {}
    for s, root in enumerate((folder, src_b, str(tmp_path / "c"))):
        for f in os.listdir(root):
            which[read_rgb(os.path.join(root, f)).tobytes()] = s
    return [dict(dir=folder, weight=2), dict(packed=packed, weight=1), dict(lmdb=db, weight=1)], which


def test_sources_stream_follows_the_weights_and_resumes(tmp_path):
    sources, which = _three_sources(tmp_path)
    cfg = cfg_for(sources=sources, use_hflip=False, use_rot=False)  # 32px crops of 32px tiles: a sample is a tile
    sp = resolve_splits(cfg, str(tmp_path / "wd"), 0)
    assert [s["kind"] for s in sp["sources"]] == ["dir", "packed", "lmdb"] and sp["train_lr"] is None
    args = dict(scale=4, seed=2, per_host_batch=8, process_index=0, process_count=1)
    batches = take(train_iterator(cfg, sp, **args), 60)
    seen = [which[x.tobytes()] for b in batches for x in b["gt"]]
    counts = np.bincount(seen, minlength=3)
    assert within(counts, [0.5, 0.25, 0.25])  # 480 samples, weights 2:1:1
    # every image of a source is seen once per epoch of that source
    per_source = [[x.tobytes() for b in batches for x in b["gt"] if which[x.tobytes()] == s][:6] for s in range(3)]
    assert all(len(set(p)) == 6 for p in per_source)
    it = train_iterator(cfg, sp, **args)
    take(it, 25)
    state = it.get_state()
    again = train_iterator(cfg, sp, **args)
    again.set_state(state)
    assert same(take(again, 10), batches[25:35])
    workers = train_iterator(cfg_for(sources=sources, use_hflip=False, use_rot=False, num_workers=2), sp, **args)
    try:
        assert same(take(workers, 6), batches[:6])
    finally:
        workers.close()
    # the workdir's split names the sources: another mix is refused on resume
    other = cfg_for(sources=[dict(sources[0], weight=1), *sources[1:]])
    with pytest.raises(DataError, match="data.sources is .* but this workdir's split"):
        resolve_splits(other, str(tmp_path / "wd"), 0)


def test_source_entries_are_checked(tmp_path):
    sources, _ = _three_sources(tmp_path)
    lr = write_folder(str(tmp_path / "lr"), [x[::4, ::4] for x in tiles(6, 32)])
    for bad, msg in (
        ([dict(weight=1)], r"data.sources\[0\] must be a dict with one of dir, lmdb, packed"),
        ([dict(dir=sources[0]["dir"], packed=sources[1]["packed"])], r"data.sources\[0\] must be a dict"),
        ([dict(dir=sources[0]["dir"], weights=2)], r"data.sources\[0\] must be a dict"),
        ([sources[0], dict(dir=sources[0]["dir"], weight=0)], r"data.sources\[1\]: weight must be a number > 0"),
        ([dict(lmdb=sources[0]["dir"])], r"data.sources\[0\]: .* is not an LMDB folder"),
        ([dict(packed=sources[1]["packed"], lr=lr)], "a packed set holds its own LR"),
        ([dict(dir=sources[0]["dir"], lr=lr), sources[1]], r"sources \[0\] have paired LR and \[1\] have none"),
        ([dict(dir=sources[1]["packed"])], "is a packed set; give it as data.packed"),
    ):
        with pytest.raises(DataError, match=msg):
            resolve_splits(cfg_for(sources=bad), None, 0)
    with pytest.raises(DataError, match="set data.packed or data.sources, not both"):
        resolve_splits(cfg_for(sources=sources[:1], packed=sources[1]["packed"]), None, 0)
    with pytest.raises(DataError, match="are the training set: unset data.hr_dir"):
        resolve_splits(cfg_for(sources=sources[:1], hr_dir=sources[0]["dir"]), None, 0)
    from jaxsr.train.config import base_config, resolve

    c = base_config()
    c.data.packed, c.data.train_dir = sources[1]["packed"], sources[0]["dir"]
    with pytest.raises(ConfigError, match="are the training set"):
        resolve(c)
