"""kind='cyclegan' (docs/translation.md): a run through run_train.py on two unaligned domains of real photographs
(colour and gray), with the history pool filled and then swapping, resumed bitwise (the pool with it), both
generators exported in junyanz's layout; the identity terms on and off; the pool's rules; unaligned pairing; the
refusals. Tiny ResNet generators (ngf 4, one block) and PatchGANs (ndf 4) on 32 px crops."""
import os
import shutil
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import metric_rows, photo

from jaxsr import parallel, pth, weights
from jaxsr.data import unaligned
from jaxsr.errors import ConfigError, DataError
from jaxsr.train.kinds import cyclegan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CROP = 32


def save(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), (img[..., ::-1] * 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """trainA: two colour photographs, trainB: one gray one (sides no multiple of 4); testA / testB one each."""
    root = tmp_path_factory.mktemp("cyclegan")
    gray = lambda x: np.repeat(x.mean(-1, keepdims=True), 3, -1)  # noqa: E731
    save(root / "trainA" / "astronaut.png", photo("astronaut", 44, 50, top=40, left=60))
    save(root / "trainA" / "coffee.png", photo("coffee", 46, 41, top=40, left=60))
    save(root / "trainB" / "chelsea.png", gray(photo("chelsea", 42, 45, top=30, left=80)))
    save(root / "testA" / "rocket.png", photo("rocket", 36, 40, top=100, left=100))
    save(root / "testB" / "camera.png", gray(photo("camera", 40, 36, top=100, left=100)))
    return root



def run_args(root):
    """configs/cyclegan.py shrunk: a pool of 3 (full after two batches of 2), the linear schedule 2 + 2 steps."""
    sched = [f"--config.{s}.{k}=2" for s in ("optim", "optim_d") for k in ("linear_steps", "linear_decay_steps")]
    return ["--config", "configs/cyclegan.py", "--config.model.ngf=4", "--config.model.n_blocks=1",
            "--config.gan.discriminator.ndf=4", "--config.cyclegan.load_size=40", f"--config.cyclegan.crop_size={CROP}",
            "--config.cyclegan.pool_size=3", f"--config.data.train_dir={root}", f"--config.data.val_dir={root}",
            "--config.train.batch_size=2", "--config.data.num_workers=0", "--config.train.total_steps=4",
            "--config.train.ckpt_every=2", "--config.train.log_every=1", "--config.val.every=4", *sched]



@pytest.mark.usefixtures("quick_compiles_one_test")
@pytest.mark.filterwarnings("ignore:spandrel/chaiNNer have no pix2pix")  # the gap test_pix2pix_nets checks
def test_trains_with_the_pool_resumes_bitwise_and_exports_both_generators(dataset, tmp_path):
    wd = tmp_path / "wd"
    r = subprocess.run([sys.executable, "run_train.py", *run_args(dataset), "--workdir", str(wd)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
    assert r.returncode == 0, r.stderr
    assert "cyclegan p2p_resnet: G_A" in r.stdout and "cycle PSNR" in r.stdout and "on 1 + 1 image(s)" in r.stdout
    first = metric_rows(wd)
    assert sorted(first) == [1, 2, 3, 4]
    terms = ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B")
    for row in first.values():
        assert all(np.isfinite(row[k]) for k in (*terms, "D_A", "D_B"))
        assert row["loss"] == pytest.approx(sum(row[k] for k in terms), rel=1e-5)
        assert row["d_loss"] == pytest.approx(row["D_A"] + row["D_B"], rel=1e-5)
    for n, first_key in (("G_A", "model.1.weight"), ("G_B", "model.1.weight")):
        f = wd / "models" / f"horse2zebra_cyclegan_x1_{n}.pth"
        assert first_key in pth.load(str(f)) and weights.read(f).spec["arch"] == "p2p_resnet"

    from jaxsr.train.config import get_config, resolve
    from jaxsr.train.loop import start

    again = tmp_path / "again"
    shutil.copytree(wd, again)
    trainer = start(resolve(get_config(str(wd / "config.json"))), str(again), resume_from=2)
    assert trainer.run() == 4
    got = metric_rows(again)
    assert got[3] == first[3] and got[4] == first[4]  # D's losses on the pool's images: it came back as it was
    assert jax.device_get(trainer.state.queue["num"]).tolist() == [3, 3]

    # identity off: the step has no idt terms (its loss is the sum of the terms it logs, as above); traced, not run
    a = np.zeros((2, CROP, CROP, 3), np.float32)
    batch = parallel.global_batch(trainer.mesh, {"a": a, "b": a})
    for lam, logged in ((0.0, set()), (0.5, {"idt_A", "idt_B"})):
        parts = trainer.kind.parts._replace(lambda_idt=lam)
        _, m = jax.eval_shape(lambda s, b, parts=parts: cyclegan.train_step(parts, s, b), trainer.state, batch)
        assert set(m) & {"idt_A", "idt_B"} == logged


def test_the_pool_fills_then_returns_a_stored_image_half_of_the_time():
    stored, num = jnp.zeros((3, 1, 1, 1)), jnp.int32(0)
    imgs = jnp.arange(1.0, 3.0).reshape(2, 1, 1, 1)
    out, stored, num = cyclegan.pool_query(imgs, stored, num, jax.random.PRNGKey(0))
    assert np.array_equal(out, imgs) and int(num) == 2 and list(np.ravel(stored)) == [1, 2, 0]
    swapped = 0
    key = jax.random.PRNGKey(1)
    for k in range(40):  # full from the third image on: each returned image is the new one or a stored one it replaced
        key, sub = jax.random.split(key)
        new = jnp.full((1, 1, 1, 1), 10.0 + k)
        before = set(np.ravel(stored).tolist())
        out, stored, num = cyclegan.pool_query(new, stored, num, sub)
        got = float(np.ravel(out)[0])
        after = set(np.ravel(stored).tolist())
        if got == 10.0 + k:
            assert after == before or k == 0
        else:
            swapped += 1
            assert got in before and 10.0 + k in after and got not in after
    assert int(num) == 3 and 10 <= swapped <= 30


def test_unaligned_pairing_serial_and_random(dataset):
    a, b = unaligned.list_domains(str(dataset), "train", "test")
    assert [os.path.basename(f) for f in a] == ["astronaut.png", "coffee.png"] and len(b) == 1
    b_first, a_first = unaligned.list_domains(str(dataset), "train", "test", "BtoA")
    assert (a_first, b_first) == (a, b)
    with pytest.raises(DataError, match="neither trainA/ and trainB/ nor A/ and B/"):
        unaligned.domain_dirs(str(dataset / "trainA"), "train")
    import ml_collections

    from jaxsr.data import aligned

    p = aligned.make(ml_collections.ConfigDict(dict(preprocess="resize", load_size=CROP, crop_size=CROP,
                                                    center_crop_size=CROP, no_flip=True)), 4)
    whole = {f: unaligned.val_items([f], p)[0]["img"] for f in a}  # each file resized, as the training pairs are

    def which(img):
        return next(f for f, w in whole.items() if np.array_equal(w, img))

    serial = unaligned.Pair(a, [a[1], a[0]], p, serial=True)
    out = serial.random_map(np.int64(3), np.random.default_rng(0))  # record 3: A[3 mod 2] = a[1], B[3 mod 2] = a[0]
    assert (which(out["a"]), which(out["b"])) == (a[1], a[0])
    drawn = [which(unaligned.Pair(a, a, p, serial=False).random_map(np.int64(0), np.random.default_rng(s))["b"])
             for s in range(12)]
    assert set(drawn) == set(a)  # a random B, whatever the record


def test_refusals(dataset):
    from jaxsr.recipes import cyclegan as recipe

    for field, value, message in (("cyclegan.crop_size", 30, "crop_size=30: .* multiples of 4"),
                                  ("cyclegan.preprocess", "none", "set train.batch_size=1 and cyclegan.pool_size=0"),
                                  ("cyclegan.gan_mode", "hinge", "vanilla, lsgan, wgangp"),
                                  ("cyclegan.lambda_A", -1.0, "must be >= 0"),
                                  ("init_weights", "x.pth", "pretrain_model_G_A / _G_B instead of init_weights"),
                                  ("optim.ema_decay", 0.999, "optim.ema_decay=0.999"),
                                  ("model.out_ch", 1, "needs in_ch == out_ch")):
        c = recipe.get_config()
        c.train.batch_size = 4
        *section, key = field.split(".")
        node = c
        for k in section:
            node = node[k]
        node[key] = value
        with pytest.raises(ConfigError, match=message):
            cyclegan.check_cyclegan(c)


@pytest.mark.filterwarnings("ignore:spandrel/chaiNNer have no pix2pix")
def test_infer_direction_picks_g_a_or_g_b_and_tiles_only_where_the_whole_image_is_not_needed(tmp_path, capsys):
    """`python -m jaxsr.infer --direction` on a CycleGAN workdir's exports (G_A for AtoB, G_B for BtoA); a single
    generator file takes no flag. Tiles equal the whole image for a ResNet generator with BatchNorm in eval mode;
    U-Nets, InstanceNorm and BatchNorm in train mode are refused tiles (auto runs them whole)."""
    from jaxsr import archs, infer
    from jaxsr.imageio import load_image

    spec = {"arch": "p2p_resnet", "scale": 1, "in_ch": 3, "out_ch": 3, "ngf": 4, "n_blocks": 1, "norm": "batch"}
    models = {"G_A": archs.build(spec), "G_B": archs.build({**spec, "ngf": 2})}
    os.makedirs(tmp_path / "wd" / "models")
    for n, m in models.items():
        weights.export(m, {**spec, "ngf": 4 if n == "G_A" else 2}, str(tmp_path / "wd" / "models" / f"run_x1_{n}.safetensors"))
    img = photo("coffee", 90, 130, top=50, left=60)
    save(tmp_path / "in.png", img)
    img = load_image(str(tmp_path / "in.png"))[0]
    for direction, net in (("AtoB", "G_A"), ("BtoA", "G_B")):
        out = tmp_path / f"{direction}.png"
        assert infer.main(["--weights", str(tmp_path / "wd"), "--input", str(tmp_path / "in.png"), "--output", str(out),
                           "--direction", direction, "--tile", "64"]) == 0
        want = np.round(infer.upscale(models[net], img) * 255) / 255
        assert np.abs(load_image(str(out))[0] - want).max() <= 1 / 255 + 1e-6
    tiled = infer.upscale(models["G_A"], img, tile=64, overlap=32)
    assert np.abs(tiled - infer.upscale(models["G_A"], img)).max() < 1e-6
    capsys.readouterr()
    assert infer.main(["--weights", str(tmp_path / "wd"), "--input", str(tmp_path / "in.png"), "--output", str(tmp_path)]) == 2
    assert "give --direction AtoB (G_A) or BtoA (G_B)" in capsys.readouterr().err
    single = str(tmp_path / "wd" / "models" / "run_x1_G_A.safetensors")
    assert infer.main(["--weights", single, "--input", str(tmp_path / "in.png"), "--output", str(tmp_path),
                       "--direction", "AtoB"]) == 2
    assert "holds one generator: leave --direction out" in capsys.readouterr().err

    from jaxsr.errors import ImageError

    unet = archs.build({"arch": "p2p_unet", "scale": 1, "ngf": 2, "num_downs": 5, "norm": "batch"})
    instance = archs.build({**spec, "norm": "instance"})
    train_bn = archs.build(spec)
    train_bn.train()
    for m, why in ((unet, "a U-Net.s receptive field covers its whole input"), (instance, "InstanceNorm"),
                   (train_bn, "BatchNorm in train mode")):
        with pytest.raises(ImageError, match=f"cannot run in tiles: {why}"):
            infer.upscale(m, img, tile=64)
        assert infer.auto_tile_or_whole(m, (4096, 4096, 3)) is None
