"""kind='pix2pix' (docs/translation.md): a run through run_train.py on A|B pairs made from real photographs (A the
photo in gray, B the photo), resumed bitwise, its export in junyanz's layout; the preprocess modes on rectangular
images (sizes, the same crop and flip on A and B), the A|B split and the direction; the refusals; the linear schedule
against the reference's lambda_rule. A tiny U-Net (ngf 4, 5 downsamplings) and PatchGAN (ndf 4) on 32 px crops."""
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import metric_rows, photo

from jaxsr import optim, pth, weights
from jaxsr.data import aligned
from jaxsr.errors import ConfigError, DataError
from jaxsr.optim.schedules import learning_rate_schedule
from jaxsr.train.kinds import pix2pix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CROP = 32


def gray(img):
    return np.repeat(img.mean(-1, keepdims=True), 3, -1)


def save_ab(path, a, b):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), (np.concatenate([a, b], 1)[..., ::-1] * 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two training A|B images (sides no multiple of 32) and one validation pair in A/ and B/ subfolders."""
    root = tmp_path_factory.mktemp("pix2pix")
    for name, h, w in (("astronaut", 50, 45), ("coffee", 44, 52)):
        img = photo(name, h, w, top=40, left=60)
        save_ab(root / "train" / f"{name}.png", gray(img), img)
    img = photo("chelsea", 40, 36, top=30, left=80)
    for side, im in (("A", gray(img)), ("B", img)):
        os.makedirs(root / "val" / side)
        cv2.imwrite(str(root / "val" / side / "chelsea.png"), (im[..., ::-1] * 255).round().astype(np.uint8))
    return root



def run_args(root):
    """configs/pix2pix_facades.py shrunk: AtoB (gray -> colour), resize_and_crop 40 -> 32, the linear schedule 2 + 2 steps."""
    sched = [f"--config.{s}.{k}=2" for s in ("optim", "optim_d") for k in ("linear_steps", "linear_decay_steps")]
    return ["--config", "configs/pix2pix_facades.py", "--config.model.ngf=4", "--config.model.num_downs=5",
            "--config.gan.discriminator.ndf=4", "--config.pix2pix.direction=AtoB", "--config.pix2pix.load_size=40",
            f"--config.pix2pix.crop_size={CROP}", f"--config.data.train_dir={root / 'train'}",
            f"--config.data.val_dir={root / 'val'}", "--config.train.batch_size=2", "--config.data.num_workers=0",
            "--config.train.total_steps=4", "--config.train.ckpt_every=2", "--config.train.log_every=1",
            "--config.val.every=4", *sched]



@pytest.mark.usefixtures("quick_compiles_one_test")
@pytest.mark.filterwarnings("ignore:spandrel/chaiNNer have no pix2pix")  # the gap test_pix2pix_nets checks
def test_trains_resumes_bitwise_and_exports_junyanz_layout(dataset, tmp_path):
    wd = tmp_path / "wd"
    r = subprocess.run([sys.executable, "run_train.py", *run_args(dataset), "--workdir", str(wd)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
    assert r.returncode == 0, r.stderr
    assert "pix2pix p2p_unet" in r.stdout and "of G(A) against B on 1 pair(s) (identity A: PSNR" in r.stdout, r.stdout
    first = metric_rows(wd)
    assert sorted(first) == [1, 2, 3, 4]
    for s, row in first.items():
        assert all(np.isfinite(row[k]) for k in ("loss", "G_GAN", "G_L1", "d_loss", "D_real", "D_fake"))
        assert row["loss"] == pytest.approx(row["G_GAN"] + row["G_L1"], rel=1e-5)
        assert row["d_loss"] == pytest.approx(0.5 * (row["D_real"] + row["D_fake"]), rel=1e-5)
    # the lr each update applied: 2 at 2e-4, then 2e-4 * 2/3, 2e-4 * 1/3
    assert [first[s]["lr"] for s in (1, 2, 3, 4)] == pytest.approx([2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3])
    assert [first[s]["lr_d"] for s in (1, 2, 3, 4)] == pytest.approx([2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3])

    # the export: junyanz's UnetGenerator keys, loaded back as the trained generator
    exported = wd / "models" / "facades_pix2pix_x1.pth"
    sd = pth.load(str(exported))
    assert "model.model.0.weight" in sd and "model.model.1.model.1.weight" in sd and "model.model.3.weight" in sd
    spec = weights.read(exported).spec
    assert spec["arch"] == "p2p_unet" and (spec["ngf"], spec["num_downs"], spec["norm"]) == (4, 5, "batch")

    # the same trainer, in this process, branched at step 2: steps 3 and 4 again, bitwise
    from jaxsr.train.config import get_config, resolve
    from jaxsr.train.loop import start

    again = tmp_path / "again"
    shutil.copytree(wd, again)
    trainer = start(resolve(get_config(str(wd / "config.json"))), str(again), resume_from=2)
    assert trainer.run() == 4
    got = metric_rows(again)
    assert got[3] == first[3] and got[4] == first[4]


P = dict(load_size=48, crop_size=32, center_crop_size=48, no_flip=False)
SIZES = {  # preprocess -> (h, w) of a 50x70 image (the generator's multiple 16)
    "resize_and_crop": (32, 32), "crop": (32, 32), "center_crop": (48, 48), "scale_width": (34, 48),
    "scale_width_and_crop": (32, 32), "none": (48, 64), "center_crop_and_resize_and_crop": (32, 32), "resize": (48, 48),
}


def prep(mode, multiple=16, **kw):
    import ml_collections

    return aligned.make(ml_collections.ConfigDict({**P, **kw, "preprocess": mode}), multiple)


@pytest.mark.parametrize("mode", sorted(SIZES))
def test_preprocess_modes_give_the_reference_sizes_and_the_same_crop_and_flip_to_a_and_b(mode):
    b = 0.2 + 0.6 * photo("coffee", 50, 70, top=100, left=150)  # away from 0 and 1: bicubic's overshoot is not clipped
    a = 0.5 * b  # a function of B pixel by pixel: the same geometry on both keeps A = B / 2
    p = prep(mode)
    rng, flips = np.random.default_rng(0), set()
    for _ in range(6):
        params = aligned.draw(p, 70, 50, rng)
        oa, ob = aligned.apply(p, a, params), aligned.apply(p, b, params)
        assert oa.shape[:2] == ob.shape[:2] == SIZES[mode]
        np.testing.assert_allclose(oa, 0.5 * ob, atol=1e-5)
        flips.add(params["flip"])
        if mode == "crop":  # the crop is the one drawn: corner (x, y) of the image, flipped where drawn
            x, y = params["crop_pos"]
            want = b[y:y + 32, x:x + 32]
            np.testing.assert_array_equal(ob, want[:, ::-1] if params["flip"] else want)
    assert flips == {True, False}
    if not aligned.fixed_size(p):
        assert mode in ("scale_width", "none")


def test_a_b_split_direction_and_pairs_in_subfolders(dataset, tmp_path):
    img = photo("astronaut", 20, 31, top=40, left=60)
    save_ab(tmp_path / "ab" / "x.png", gray(img)[:, :15], img[:, 15:])  # 31 px wide: A 15, B 16 as int(w / 2) splits
    (pair,) = aligned.list_pairs(str(tmp_path / "ab"), "test")
    a, b = aligned.read_pair(pair, "AtoB")
    assert a.shape[1] == 15 and b.shape[1] == 16
    b2, a2 = aligned.read_pair(pair, "BtoA")
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    (sub,) = aligned.list_pairs(str(dataset / "val"), "test")
    assert sub[1].endswith(os.path.join("B", "chelsea.png"))
    for side, name in (("A", "x.png"), ("B", "y.png")):
        os.makedirs(tmp_path / "sub" / side)
        cv2.imwrite(str(tmp_path / "sub" / side / name), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="1 of the 1 images .* have no pair of the same name .* x.png"):
        aligned.list_pairs(str(tmp_path / "sub"), "test")


def test_refusals():
    with pytest.raises(ConfigError, match="multiples of 256 .* use 256"):
        prep("resize_and_crop", multiple=256, load_size=286, crop_size=200)
    with pytest.raises(ConfigError, match="load_size=30 < crop_size=32"):
        prep("resize_and_crop", load_size=30)
    with pytest.raises(ConfigError, match="joined by '_and_'"):
        prep("resize_and_flip")
    with pytest.raises(ConfigError, match="keep one"):
        prep("resize_and_scale_width_and_crop")
    p = prep("scale_width")
    with pytest.raises(DataError, match="not a multiple of 16 a side"):
        aligned.PairTransform(p).random_map(dict(a=np.zeros((50, 70, 3), np.float32), b=np.zeros((50, 70, 3), np.float32),
                                                 index=np.int32(0)), np.random.default_rng(0))
    with pytest.raises(DataError, match="smaller than crop_size=32"):
        aligned.apply(prep("crop"), np.zeros((20, 70, 3), np.float32), dict(crop_pos=(0, 0), flip=False))

    from jaxsr.recipes import pix2pix_facades as recipe

    for field, value, message in (("pix2pix.crop_size", 200, "crop_size=200: .* multiples of 256 .* use 256"),
                                  ("pix2pix.preprocess", "none", "set train.batch_size=1"),
                                  ("pix2pix.gan_mode", "hinge", "vanilla, lsgan, wgangp"),
                                  ("pix2pix.direction", "AB", "'AtoB' or 'BtoA'"),
                                  ("scale", 4, "set scale=1"),
                                  ("gan.discriminator.arch", "unet", "gan.discriminator.arch='patchgan'"),
                                  ("losses", {"l1": {"name": "l1"}}, "set losses=\\{\\}")):
        c = recipe.get_config()
        c.train.batch_size = 4
        *section, key = field.split(".")
        node = c
        for k in section:
            node = node[k]
        node[key] = value
        with pytest.raises(ConfigError, match=message):
            pix2pix.check_pix2pix(c)


def test_linear_schedule_is_the_references_lambda_rule():
    def lambda_rule(epoch, n, nd, epoch_count=1):  # models/networks.py get_scheduler, lr_policy 'linear'
        return 1.0 - max(0, epoch + epoch_count - n) / float(nd + 1)

    for n, nd in ((3, 4), (5, 1), (0, 6)):
        c = optim.default_config()
        c.update(schedule="linear", lr=2e-4, linear_steps=n, linear_decay_steps=nd)
        f = learning_rate_schedule(c, 100)
        got = [float(f(k)) for k in range(n + nd)]
        np.testing.assert_allclose(got, [2e-4 * lambda_rule(k, n, nd) for k in range(n + nd)], rtol=1e-6)
        assert float(f(n + nd)) == 0.0 and float(f(n + nd + 10)) == 0.0
    c = optim.default_config()
    c.update(schedule="linear", lr=1.0)
    f = learning_rate_schedule(c, 10)  # both 0: half the run at lr, half decaying
    assert [float(f(k)) for k in (4, 5)] == pytest.approx([1.0, 5 / 6])
    c.linear_steps = -1
    with pytest.raises(ValueError, match="must be >= 0"):
        learning_rate_schedule(c, 10)


def test_recipes_resolve_and_pass_the_kinds_checks():
    """configs/pix2pix_facades.py and configs/cyclegan.py as given (facades, horse2zebra: unet_256 on 256 px crops of 286 px
    resizes, resnet_9blocks); their networks' sizes (54,413,955 / 2,768,705 and 11,378,179 / 2,764,737 parameters, as
    junyanz's print_networks says: 54.414 M, 2.769 M, 11.378 M, 2.765 M) are in docs/translation.md."""
    from jaxsr.recipes import cyclegan as cyclegan_recipe
    from jaxsr.recipes import pix2pix_facades as pix2pix_recipe
    from jaxsr.train.config import resolve
    from jaxsr.train.kinds import cyclegan

    p = pix2pix.check_pix2pix(resolve(pix2pix_recipe.get_config()))
    assert (p.steps, p.load_size, p.crop_size, p.multiple) == (frozenset({"resize", "crop"}), 286, 256, 256)
    c = resolve(cyclegan_recipe.get_config())
    assert cyclegan.check_cyclegan(c).multiple == 4 and c.optim.schedule == c.optim_d.schedule == "linear"
