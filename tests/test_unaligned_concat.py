"""Several folders per domain (victorca25/traiNNer's `concat_unaligned` with `sampler_weights`, jaxsr.data.unaligned):
each batch drawn whole from one photo/cartoon folder pair with the weights, A and B from the same pair, every image
reachable, a resume giving the same next batches, and the refusals (also through the wbc kind's check). The images
are 8x8 constant colours whose value names the folder and the file, so a batch says where each sample came from."""
import os
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from jaxsr.data import aligned, unaligned
from jaxsr.errors import ConfigError, DataError
from jaxsr.train.kinds import wbc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# folder -> (number of images, value of the first): scenery 6 photos / 3 cartoons, faces 2 photos / 4 cartoons
FOLDERS = {"scenery_photo": (6, 0), "scenery_cartoon": (3, 50), "face_photo": (2, 100), "face_cartoon": (4, 150)}
P = aligned.make(SimpleNamespace(preprocess="crop", load_size=8, crop_size=8, center_crop_size=8, no_flip=True), 4)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("concat")
    for name, (n, first) in FOLDERS.items():
        os.makedirs(root / name)
        for i in range(n):
            cv2.imwrite(str(root / name / f"{i}.png"), np.full((8, 8, 3), first + i, np.uint8))
    os.makedirs(root / "empty")
    return root


def dirs(root, *names):
    return tuple(str(root / n) for n in names)


def ab(root):
    return dirs(root, "scenery_photo", "face_photo"), dirs(root, "scenery_cartoon", "face_cartoon")


def values(batch):
    """(A values, B values) of a batch: each image's constant 0..255."""
    return [np.round(batch[k][:, 0, 0, 0] * 255).astype(int).tolist() for k in ("a", "b")]


@pytest.mark.parametrize("weights, share", [((4, 1), 0.2), ((1, 3), 0.75)])
def test_batch_draws_follow_the_weights(weights, share):
    """The draw of 500 global batches of 3 records: the second pair's batch count ~ Binomial(500, share), sd 8.9
    (share 1/5) or 9.7 (3/4); within 4 sd (seeded: deterministic). Each batch's records are one pair's next ones in
    order, so each pair goes through its own shuffled epochs with no record skipped or repeated."""
    choice = unaligned.BatchChoice(weights, 0, 3)
    records = [choice[r] for r in range(1500)]
    pairs = [{k for k, _ in records[3 * t:3 * t + 3]} for t in range(500)]
    assert all(len(p) == 1 for p in pairs)
    n = sum(p == {1} for p in pairs)
    assert abs(n - 500 * share) <= 4 * np.sqrt(500 * share * (1 - share)), n
    for k in (0, 1):
        assert [i for kk, i in records if kk == k] == list(range(sum(kk == k for kk, _ in records)))
    other = unaligned.BatchChoice(weights, 1, 3)
    assert [other[3 * t][0] for t in range(500)] != [records[3 * t][0] for t in range(500)]


def test_batches_are_whole_paired_and_reach_every_image(root):
    """60 batches of 2 at the default 4:1 through the image pipeline: each batch's photos and cartoons come from one
    pair of folders, and every photo and every cartoon of each folder is drawn."""
    sets = unaligned.concat_sets(*ab(root), "A", "B")
    it = unaligned.concat_train_iterator(sets, unaligned.concat_weights(2, (), "w"), P, 0, 2)
    batches = [values(next(it)) for _ in range(60)]
    for a, b in batches:
        face = a[0] >= 100
        assert all((x >= 100) == face for x in a) and all((x >= 150) == face for x in b), (a, b)
    seen = {v for a, b in batches for v in a + b}
    assert seen == {first + i for n, first in FOLDERS.values() for i in range(n)}


def test_resume_gives_the_same_next_batches(root):
    """A run's batches 6..11, and those of a fresh iterator restored from the state saved after batch 5: bit-equal."""
    sets = unaligned.concat_sets(*ab(root), "A", "B")
    it = unaligned.concat_train_iterator(sets, (4, 1), P, 3, 2)
    first = [next(it) for _ in range(6)]
    state = it.get_state()
    first += [next(it) for _ in range(6)]
    resumed = unaligned.concat_train_iterator(sets, (4, 1), P, 3, 2)
    resumed.set_state(state)
    for k in range(6, 12):
        batch = next(resumed)
        assert all(np.array_equal(batch[key], first[k][key]) for key in ("a", "b")), k
    assert {values(b)[0][0] >= 100 for b in first} == {True, False}  # both pairs in the stretch


def test_one_pair_is_plain_unaligned(root):
    a, b = dirs(root, "scenery_photo"), dirs(root, "scenery_cartoon")
    sets = unaligned.concat_sets(a, b, "A", "B")
    assert unaligned.concat_weights(1, (), "w") == (1.0,)
    got = unaligned.concat_train_iterator(sets, (1.0,), P, 0, 2)
    want = unaligned.train_iterator(*sets[0], P, False, 0, 2)
    for _ in range(4):
        g, w = next(got), next(want)
        assert all(np.array_equal(g[k], w[k]) for k in ("a", "b"))


@pytest.mark.parametrize("n, weights, message", [
    (3, (), "3 folders per domain need their weights"),
    (2, (4, 1, 1), "has 3 weights for 2 folders"),
    (2, (1, 0), "must be positive numbers"),
    (2, (1, -2.0), "must be positive numbers"),
    (2, (1, float("nan")), "must be positive numbers"),
    (2, ("4", 1), "must be positive numbers"),
])
def test_weight_refusals(n, weights, message):
    with pytest.raises(ConfigError, match=message) as e:
        unaligned.concat_weights(n, weights, "wbc.sampler_weights")
    assert e.value.field == "wbc.sampler_weights"


def test_folder_refusals(root):
    with pytest.raises(ConfigError, match="wbc.dataroot_A has 2 folders and wbc.dataroot_B 1"):
        unaligned.concat_sets(dirs(root, "scenery_photo", "face_photo"), dirs(root, "scenery_cartoon"),
                              "wbc.dataroot_A", "wbc.dataroot_B")
    with pytest.raises(ConfigError, match="go together"):
        unaligned.concat_sets(dirs(root, "scenery_photo"), (), "wbc.dataroot_A", "wbc.dataroot_B")
    with pytest.raises(DataError, match=r"wbc.dataroot_B\[1\]: no images"):
        unaligned.concat_sets(dirs(root, "scenery_photo", "face_photo"), dirs(root, "scenery_cartoon", "empty"),
                              "wbc.dataroot_A", "wbc.dataroot_B")
    with pytest.raises(DataError, match=r"wbc.dataroot_A\[0\]: folder .* does not exist"):
        unaligned.concat_sets(dirs(root, "nowhere"), dirs(root, "scenery_cartoon"), "wbc.dataroot_A", "wbc.dataroot_B")


def wbc_cfg(**fields):
    from jaxsr.recipes.wbc import get_config

    c = get_config()
    c.wbc.vgg_weights, c.data.val_dir = "vgg19.pth", None
    c.wbc.update(**fields)
    return c


def test_the_kind_checks_and_reads_the_lists(root):
    a, b = ab(root)
    cfg = wbc_cfg(dataroot_A=a, dataroot_B=b)
    wbc.WBC.check(cfg)  # lists every folder; data.train_dir (the recipe's datasets/wbc, absent) is not read
    sets, w = wbc.train_sets(cfg)
    assert w == (4.0, 1.0) and [(len(x), len(y)) for x, y in sets] == [(6, 3), (2, 4)]
    line = unaligned.describe(a, b, sets, w)
    assert "scenery_photo (6 images) with" in line and "face_cartoon (4): 20% of the batches" in line
    assert wbc.train_sets(wbc_cfg(dataroot_A=a, dataroot_B=b, sampler_weights=(1, 1)))[1] == (1.0, 1.0)
    for fields, message in ((dict(dataroot_A=a, dataroot_B=b[:1]), "wbc.dataroot_A has 2 folders"),
                            (dict(dataroot_A=a, dataroot_B=b, sampler_weights=(1, 0)), "wbc.sampler_weights must be positive"),
                            (dict(dataroot_A=a, dataroot_B=b, sampler_weights=(1,)), "wbc.sampler_weights has 1 weights"),
                            (dict(sampler_weights=(4, 1)), "set those lists")):
        with pytest.raises(ConfigError, match=message):
            wbc.check_wbc(wbc_cfg(**fields))
    with pytest.raises(DataError, match=r"wbc.dataroot_A\[1\]: no images"):
        wbc.WBC.check(wbc_cfg(dataroot_A=dirs(root, "scenery_photo", "empty"), dataroot_B=b))


def test_command_line_lists(root):
    """The lists and weights as run_train.py's command line gives them (config_flags overrides of the recipe, parsed
    in this process: no run_train.py start-up), then the kind's check."""
    from absl import flags
    from ml_collections import config_flags

    a, b = ab(root)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    argv = ["run_train.py", f"--config={ROOT}/configs/wbc.py", "--config.wbc.vgg_weights=vgg19.pth",
            f"--config.wbc.dataroot_A={a!r}", f"--config.wbc.dataroot_B={b!r}", "--config.wbc.sampler_weights=(3, 1)",
            "--config.data.val_dir="]
    saved, sys.argv = sys.argv, argv  # config_flags reads its overrides from sys.argv
    try:
        fv(argv)
        cfg = fv.config
    finally:
        sys.argv = saved
    assert (tuple(cfg.wbc.dataroot_A), tuple(cfg.wbc.dataroot_B), tuple(cfg.wbc.sampler_weights)) == (a, b, (3, 1))
    wbc.WBC.check(cfg)
    assert wbc.train_sets(cfg)[1] == (3.0, 1.0)
