"""kind='sftgan' (docs/sftgan.md): a run through run_train.py from an MSRResNet file (transfer_params_sft reported), whose
trunk stays bit-identical to the file's tensors until sftgan.trunk_delay and moves after it, resumed bitwise, whose loss
falls on a fixed batch; image and map cut, flipped and rotated alike; the category of a path; and python -m jaxsr.infer
with --seg (maps made beforehand, also tiled) and --seg-weights (OutdoorSceneSeg run on each input). Tiny networks,
real photographs, random softmax maps (the reduced golden OutdoorSceneSeg for --seg-weights)."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import metric_rows, photo
from test_layout import perturbed

import jaxsr
from jaxsr import parallel, pth, segment, weights
from jaxsr.archs.bridge import state_dict
from jaxsr.degrade.ops import imresize
from jaxsr.errors import ConfigError, DataError
from jaxsr.files import atomic_write
from jaxsr.train.kinds import sftgan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "sftgan")
MSR = {"arch": "srresnet", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 2, "layout": "basicsr"}
CROP = 32


def save_image(img, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), (img[..., ::-1] * 255).round().astype(np.uint8))


def save_map(rng, h, w, path):
    """A random softmax map, (8, h, w) float32 in torch's format, as jaxsr.segment writes <name>_bic.pth."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    e = np.exp(rng.normal(size=(8, h, w))).astype(np.float32)
    atomic_write(str(path), pth.writer(np.ascontiguousarray(e / e.sum(0))))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """An MSRResNet file, two training photographs under building/ and sky/ (sides no multiple of 8: the maps cover
    their modcrop-8 part), one validation photograph, one background image."""
    root = tmp_path_factory.mktemp("sftgan")
    with warnings.catch_warnings():  # spandrel's gap for SRResNet, said by test_srresnet
        warnings.simplefilter("ignore")
        weights.export(perturbed(MSR), MSR, root / "msr.pth")
    rng = np.random.default_rng(0)
    for name, cat, h, w in (("astronaut", "building", 70, 60), ("coffee", "sky", 64, 75)):
        save_image(photo(name, h, w, top=40, left=60), root / "train" / cat / f"{name}.png")
        save_map(rng, h // 8 * 8, w // 8 * 8, root / "seg" / cat / f"{name}_bic.pth")
    save_image(photo("chelsea", 48, 48, top=30, left=80), root / "val" / "chelsea.png")
    save_map(rng, 48, 48, root / "valseg" / "chelsea_bic.pth")
    save_image(photo("rocket", 50, 50, top=100, left=100), root / "bg" / "rocket.png")
    return root



def run_args(root):
    """configs/sftgan_x4.py shrunk: L1 + GAN (no VGG file needed), a tiny ACD on 32 px crops, the trunk from step 2."""
    return ["--config", "configs/sftgan_x4.py", "--config.model.arch=auto", f"--config.init_weights={root / 'msr.pth'}",
            "--config.losses={'l1': {'name': 'l1'}, 'gan': {'name': 'gan', 'weight': 0.005}}",
            "--config.gan.discriminator={'arch': 'acd', 'widths': [4, 4, 6, 6], 'hidden': 8, 'num_classes': 8, "
            f"'input_size': {CROP}}}", f"--config.data.gt_size={CROP}", f"--config.degrade.gt_size={CROP}",
            f"--config.data.train_dir={root / 'train'}", f"--config.data.val_dir={root / 'val'}",
            f"--config.sftgan.seg_dir={root / 'seg'}", f"--config.sftgan.val_seg_dir={root / 'valseg'}",
            f"--config.sftgan.bg_dir={root / 'bg'}", "--config.sftgan.bg_ratio=0.3", "--config.sftgan.trunk_delay=2",
            "--config.train.batch_size=2", "--config.data.num_workers=0", "--config.train.total_steps=4",
            "--config.train.ckpt_every=2", "--config.train.log_every=1", "--config.val.every=4", "--config.optim.lr=1e-3"]



def trunk(sd):
    """The SFT-Net tensors transfer_params_sft fills, renamed to the MSRResNet's."""
    return {src + leaf: sd[dst + leaf] for dst, src in sftgan.transfer_pairs("basicsr", MSR["num_block"])
            for leaf in (".weight", ".bias")}


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_trains_from_an_msrresnet_file_with_the_trunk_delayed_and_resumes_bitwise(dataset, tmp_path):
    wd = tmp_path / "wd"
    r = subprocess.run([sys.executable, "run_train.py", *run_args(dataset), "--workdir", str(wd)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
    assert r.returncode == 0, r.stderr
    assert ("transfer_params_sft from" in r.stdout and "18 of 70 tensors copied" in r.stdout
            and "left at their init (kaiming_normal x 0.1, zero bias): CondNet (10), the SFT layers (40), sft_branch.3 (2)"
            in r.stdout), r.stdout
    assert "sftgan: training categories building 1, sky 1" in r.stdout
    model = json.load(open(wd / "config.json"))["model"]
    assert model["arch"] == "sftgan" and (model["num_feat"], model["num_block"]) == (8, 2)
    first = metric_rows(wd)
    assert sorted(first) == [1, 2, 3, 4] and all(np.isfinite(first[s]["d_loss"]) and first[s]["gan"] > 0 for s in first)
    assert first[1]["lr"] == pytest.approx(5e-3) and first[1]["lr_trunk"] == pytest.approx(1e-3)

    # the step-2 mirror still holds the MSRResNet's trunk, bit for bit; the step-4 one has moved it
    msr = state_dict(weights.read(dataset / "msr.pth").build()[0])
    at2, at4 = (state_dict(jaxsr.load_model(wd / "deploy" / f"sftgan_x4_step{s}.safetensors")[0]) for s in (2, 4))
    assert all(v.tobytes() == msr[k].tobytes() for k, v in trunk(at2).items())
    assert all(v.tobytes() != msr[k].tobytes() for k, v in trunk(at4).items() if k.endswith(".weight"))
    assert any(at2[k].tobytes() != at4[k].tobytes() for k in at2 if "SFT" in k)

    # the same trainer, in this process, branched at step 2: steps 3 and 4 again, bitwise
    from jaxsr.train.config import get_config, resolve
    from jaxsr.train.loop import start

    again = tmp_path / "again"
    shutil.copytree(wd, again)
    trainer = start(resolve(get_config(str(wd / "config.json"))), str(again), resume_from=2)
    assert trainer.run() == 4
    got = metric_rows(again)
    assert got[3] == first[3] and got[4] == first[4]

    # a step before the delay (the state's step set back to 0) moves the SFT/Cond parameters only: the trunk and its
    # optimizer state stay bit-identical; and the loss falls: the compiled step, a few times on one fixed batch of real
    # photographs
    gt = np.stack([photo(n, CROP, CROP, top=40, left=60) for n in ("astronaut", "coffee")])
    seg = np.random.default_rng(1).dirichlet(np.ones(8), (2, CROP, CROP)).astype(np.float32)
    batch = parallel.global_batch(trainer.mesh, {"gt": gt, "seg": seg, "category": np.array([1, 5], np.int32)})
    kind, state = trainer.kind, trainer.state.replace(step=jnp.zeros_like(trainer.state.step))
    before = parallel.to_host((state.params, state.opt_state["trunk"]))
    state, _ = kind.step(state, batch, kind.feature_params)
    after = parallel.to_host((state.params, state.opt_state["trunk"]))
    sft = jax.tree.leaves(sftgan.in_sft(before[0]))
    for m, a, b in zip(sft, jax.tree.leaves(before[0]), jax.tree.leaves(after[0])):
        assert (a.tobytes() != b.tobytes()) == m
    assert all(a.tobytes() == b.tobytes() for a, b in zip(jax.tree.leaves(before[1]), jax.tree.leaves(after[1])))
    losses = []
    for _ in range(6):
        state, m = kind.step(state, batch, kind.feature_params)
        losses.append(float(m["loss"]))
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


def test_image_and_map_get_the_same_crop_flip_and_rotation():
    """A map that is the image itself (plus 5 more channels) stays the image under every draw; a background image's map
    is class 0 everywhere."""
    gt = (photo("astronaut", 45, 53, top=100, left=150) * 255).round().astype(np.uint8)
    seg = np.concatenate([gt / 255.0, np.zeros(gt.shape[:2] + (5,))], -1).astype(np.float32)
    crop = sftgan.SegCrop(24, 8, hflip=True, rot=True)
    seen = set()
    for i in range(24):
        out = crop.random_map(dict(gt=gt, seg=seg, category=np.int32(3)), np.random.default_rng(i))
        assert out["gt"].shape == (24, 24, 3) and out["seg"].shape == (24, 24, 8) and out["category"] == 3
        np.testing.assert_array_equal(out["seg"][..., :3], out["gt"])
        seen.add(out["gt"].tobytes())
    assert len(seen) == 24  # the draws do differ
    bg = crop.random_map(dict(gt=gt, seg=None, category=np.int32(0)), np.random.default_rng(0))
    assert (bg["seg"][..., 0] == 1).all() and not bg["seg"][..., 1:].any()


def test_category_map_fit_and_refusals(dataset):
    assert [sftgan.category(p) for p in ("building/a.png", "x/plant_3.png", "sky/water.png", "DIV2K/0001.png")] == [1, 2, 4, 0]
    hr = np.zeros((70, 60, 3), np.uint8)
    assert sftgan.fit_map(hr, np.zeros((64, 56, 8)), "a")[0].shape == (64, 56, 3)
    with pytest.raises(DataError, match=r"^its map is 48x64, not the 60x70 image's"):
        sftgan.fit_map(hr, np.zeros((64, 48, 8)), "a")
    cfg = _recipe()
    cfg.sftgan.seg_dir = None
    with pytest.raises(ConfigError, match=r"^kind='sftgan' needs sftgan.seg_dir"):
        sftgan.check_sftgan(cfg)
    with pytest.raises(DataError, match=r"1 of the 1 training images have no map in .*python -m jaxsr.segment"):
        sftgan._maps([str(dataset / "val" / "chelsea.png")], str(dataset / "val"), str(dataset / "seg"), "training")


def _recipe():
    from jaxsr.recipes import sftgan_x4
    from jaxsr.train.config import resolve

    c = sftgan_x4.get_config()
    c.losses.fea.vgg_weights = "vgg19.pth"
    c.data.train_dir = "train"
    return resolve(c)


@pytest.fixture(scope="module")
def sft_model():
    return jaxsr.load_model(os.path.join(GOLDEN, "sft_net.pth"))[0]


def test_infer_with_maps_made_beforehand_whole_and_tiled(sft_model, tmp_path):
    """--seg DIR: each input's <name>_bic.pth; the output is model(x, seg); tiles cut the map with the image."""
    from jaxsr import infer

    lr = photo("coffee", 40, 36, top=100, left=200)
    save_image(lr, tmp_path / "in" / "cup.png")
    save_map(np.random.default_rng(2), 160, 144, tmp_path / "seg" / "cup_bic.pth")
    lr8 = cv2.imread(str(tmp_path / "in" / "cup.png"))[..., ::-1] / np.float32(255)
    seg = infer.read_map(str(tmp_path / "seg" / "cup_bic.pth"))
    whole = infer.upscale(sft_model, lr8, cond=seg)
    direct = np.clip(np.asarray(sft_model(lr8[None].astype(np.float32), seg[None]))[0], 0, 1)
    np.testing.assert_allclose(whole, direct, atol=1e-6)  # jitted vs eager: summation order only
    tiled = infer.upscale(sft_model, lr8, tile=32, overlap=16, cond=seg)
    assert np.abs(tiled - whole).max() < 1e-5
    rc = infer.main(["--weights", os.path.join(GOLDEN, "sft_net.pth"), "--input", str(tmp_path / "in"), "--output",
                     str(tmp_path / "out"), "--seg", str(tmp_path / "seg"), "--tile", "0"])
    assert rc == 0
    out = cv2.imread(str(tmp_path / "out" / "cup.png"))[..., ::-1]
    np.testing.assert_array_equal(out, (whole * 255).round().astype(np.uint8))


def test_infer_computes_the_maps_with_seg_weights(sft_model, tmp_path, capsys):
    """--seg-weights: OutdoorSceneSeg on the bicubic x4 of each LR input, which for the LR of an HR is exactly
    jaxsr.segment's map of that HR; a non-SFT model refuses the option, and a missing map is named."""
    from jaxsr import infer

    seg_model = segment.load_segmenter(os.path.join(GOLDEN, "outdoor_seg.pth"))[0]
    hr = photo("chelsea", 64, 48, top=20, left=100).astype(np.float64)
    lr = imresize(hr, 1 / 4)
    np.testing.assert_allclose(infer.segmentation_map(seg_model, lr, 4),
                               segment.probabilities(seg_model, segment.network_input(hr)), atol=1e-6)
    save_image(np.clip(lr, 0, 1).astype(np.float32), tmp_path / "in" / "cat.png")
    rc = infer.main(["--weights", os.path.join(GOLDEN, "sft_net.pth"), "--input", str(tmp_path / "in"), "--output",
                     str(tmp_path / "out"), "--seg-weights", os.path.join(GOLDEN, "outdoor_seg.pth")])
    assert rc == 0
    lr8 = cv2.imread(str(tmp_path / "in" / "cat.png"))[..., ::-1] / np.float32(255)
    want = infer.upscale(sft_model, lr8, cond=infer.segmentation_map(seg_model, lr8, 4))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "cat.png"))[..., ::-1],
                                  (want * 255).round().astype(np.uint8))
    capsys.readouterr()
    rc = infer.main(["--weights", os.path.join(GOLDEN, "sft_net.pth"), "--input", str(tmp_path / "in"), "--output",
                     str(tmp_path / "o2"), "--seg", str(tmp_path / "in")])
    assert rc == 1 and "no map for it in" in capsys.readouterr().err


def test_the_acd_discriminator_is_refused_by_the_kinds_that_have_no_categories():
    from jaxsr.recipes import x4_gan
    from jaxsr.train.kinds.sr import check_discriminator

    cfg = x4_gan.get_config()
    cfg.gan.discriminator.arch = "acd"
    for kind in ("sr", "ppon"):
        cfg.kind = kind
        with pytest.raises(ConfigError, match="only kind='sftgan' feeds it"):
            check_discriminator(cfg)
    cfg.kind = "sftgan"
    check_discriminator(cfg)
