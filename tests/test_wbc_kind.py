"""kind='wbc' (docs/wbc.md): a run through run_train.py over both phases (G alone on L1, then G, D_S and D_T on the
representations), resumed bitwise, G exported in the port's layout; the init phase leaves D bit-identical; the losses
active per phase; the refusals; model.arch='auto' from init_weights. Photos from scikit-image, "cartoons" made on the
fly from other photos (edge-preserving filter + colour quantisation). Tiny G (nf 4, one block), D (ndf 4), 32 px."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import metric_rows, photo

from jaxsr import parallel, pth, weights
from jaxsr.errors import ConfigError
from jaxsr.train.kinds import wbc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "wbc", "wbcunet.pth")
CROP = 32


def save(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), (img[..., ::-1] * 255).round().astype(np.uint8))


def cartoon(img):
    """Flat colour regions with kept edges: cv2's edge-preserving filter, then 6 levels per channel."""
    u8 = cv2.edgePreservingFilter((img * 255).round().astype(np.uint8), flags=cv2.RECURS_FILTER, sigma_s=30, sigma_r=0.4)
    return np.floor(u8 / 256.0 * 6).astype(np.float32) / 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("wbc")
    save(root / "trainA" / "astronaut.png", photo("astronaut", 44, 50, top=40, left=60))
    save(root / "trainA" / "coffee.png", photo("coffee", 46, 41, top=40, left=60))
    save(root / "trainB" / "chelsea.png", cartoon(photo("chelsea", 42, 45, top=30, left=80)))
    save(root / "trainB" / "rocket.png", cartoon(photo("rocket", 40, 40, top=100, left=100)))
    save(root / "testA" / "camera.png", photo("immunohistochemistry", 36, 40, top=100, left=100))
    return root



def run_args(root, vgg):
    """configs/wbc.py shrunk: 2 init steps, 2 adversarial steps, checkpoints at 2 and 4; structure and content on
    pixels (the VGG terms compile slowly on a CPU: their trace is checked below); the structure target on the device
    (the default; the host's skimage target is tests/test_wbc.py's, the device's against it tests/test_wbc_superpixel.py's)."""
    return ["--config", "configs/wbc.py", "--config.model.nf=4", "--config.model.num_blocks=1", "--config.wbc.ndf=4",
            f"--config.wbc.crop_size={CROP}", "--config.wbc.init_steps=2", "--config.wbc.n_segments=20",
            f"--config.wbc.vgg_weights={vgg}",
            "--config.wbc.struct_losses=('pix',)", "--config.wbc.cont_losses=('pix',)", f"--config.data.train_dir={root}",
            f"--config.data.val_dir={root}", "--config.train.batch_size=2", "--config.data.num_workers=0",
            "--config.train.total_steps=4", "--config.train.ckpt_every=2", "--config.train.log_every=1",
            "--config.val.every=4"]



INIT = ("pix_init",)
ADV = ("gan_S", "gan_T", "pix_struct", "pix_cont", "tv_reg")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:spandrel")
def test_both_phases_resume_bitwise_and_export_g(dataset, quick_compiles, vgg19_file, tmp_path):
    def train(workdir, *extra):
        """run_train.py on one CPU device, sharing the compilation cache (the resume reads its steps back)."""
        r = subprocess.run([sys.executable, "run_train.py", *run_args(dataset, vgg19_file), "--workdir", str(workdir),
                            *extra], cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
        assert r.returncode == 0, r.stderr
        return r

    wd = tmp_path / "wd"
    r = train(wd)
    assert "wbc wbcunet: G" in r.stdout and "photo-to-cartoon PSNR" in r.stdout
    first = metric_rows(wd)
    assert sorted(first) == [1, 2, 3, 4]
    from jaxsr.recipes.wbc import FEA

    for step in (1, 2):  # the init phase: L1 only
        row = first[step]
        assert row["loss"] == pytest.approx(row["pix_init"], rel=1e-6) and not set(ADV) & set(row) and "d_loss" not in row
    for step in (3, 4):  # adversarial: the recipe's scales on the representations' terms, D's two losses
        row = first[step]
        assert not set(INIT) & set(row) and "superpixel_s" not in row  # no host time: the target is in the step
        want = 0.1 * row["gan_S"] + row["gan_T"] + FEA * (row["pix_struct"] + row["pix_cont"]) + 1e4 * row["tv_reg"]
        assert row["loss"] == pytest.approx(want, rel=1e-5)
        assert row["d_loss"] == pytest.approx(row["D_S"] + row["D_T"], rel=1e-5)
        assert all(np.isfinite(row[k]) for k in (*ADV, "D_S", "D_T"))
    f = wd / "models" / "wbc_x1.pth"
    spec = weights.read(f).spec  # the port's layout: detected and its widths inferred from the keys
    assert (spec["arch"], spec["nf"], spec["num_blocks"]) == ("wbcunet", 4, 1)
    keys = set(pth.load(str(f)))  # the port's key names: the golden file's (four blocks) but block_1..3
    assert keys == {k for k in pth.load(GOLDEN) if not k.startswith(("block_1", "block_2", "block_3"))}

    from jaxsr.train.config import get_config, resolve
    from jaxsr.train.loop import start

    again = tmp_path / "again"
    shutil.copytree(wd, again)
    trainer = start(resolve(get_config(str(wd / "config.json"))), str(tmp_path / "probe"), resume_from=None)

    # the init phase trains G alone: one more init step leaves D_S, D_T and their optimizer bit-identical
    batch = parallel.global_batch(trainer.mesh, next(trainer.kind.data.train))
    before = jax.device_get(trainer.state)
    new, _ = trainer.kind.init(jax.tree.map(jnp.copy, trainer.state), batch, trainer.kind.vgg_params)
    after = jax.device_get(new)
    for field in ("d_params", "d_buffers", "d_opt_state"):
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(getattr(before, field)),
                                                         jax.tree.leaves(getattr(after, field))))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)))

    # training images: photo | cartoon | a cartoon of B, in [0, 1]
    shown = {}
    trainer.kind.log_images(trainer.state, batch, 0, type("Board", (), {"images": lambda self, step, tag, *rows:
                                                                           shown.update({tag: rows})})())
    assert [r.shape for r in shown["train/photo_cartoon_b"]] == [(2, CROP, CROP, 3)] * 3
    assert all(0 <= r.min() and r.max() <= 1 for r in shown["train/photo_cartoon_b"])

    # the recipe's VGG conv4_4 terms ('fea') in the adversarial step, and the identity term when lambda_identity > 0
    target = batch["a"] * 2 - 1
    for lam, idt in ((0.0, set()), (0.5, {"pix_idt"})):
        c = wbc.default_config()
        c.update(lambda_identity=lam)
        vgg = wbc.PerceptualLoss(vgg19_file, {"conv4_4": 1.0}, "l1", True, True)
        parts = trainer.kind.parts._replace(fns=wbc._fns(c, vgg), scales={**trainer.kind.parts.scales, "idt": lam})
        _, m = jax.eval_shape(lambda s, b, t, v, parts=parts: wbc.adv_step(parts, s, b, t, v), trainer.state, batch,
                              target, vgg.params)
        assert {"fea_struct", "fea_cont", "tv_reg", "gan_S", "gan_T", "D_S", "D_T"} <= set(m)
        assert set(m) & {"pix_idt"} == idt

    train(again, "--resume_from=2")
    got = metric_rows(again)
    assert got[3] == first[3] and got[4] == first[4]


def cfg_with(**wbc_fields):
    from jaxsr.recipes.wbc import get_config

    c = get_config()
    c.data.train_dir, c.wbc.vgg_weights = "somewhere", "vgg19.pth"  # check_wbc opens no file
    c.wbc.update(**wbc_fields)
    return c


@pytest.mark.parametrize("fields, message", [
    (dict(struct_losses=("ssim",)), "wbc.struct_losses: 'ssim' is not built"),
    (dict(text_losses=("fea",)), "texture representation has one channel"),
    (dict(vgg_weights=None), "set wbc.vgg_weights"),
    (dict(border="zero"), "wbc.border must be"),
])
def test_refusals(fields, message):
    with pytest.raises(ConfigError, match=message):
        wbc.check_wbc(cfg_with(**fields))


def test_refuses_other_generators_and_losses():
    c = cfg_with()
    c.model = ml_collections.ConfigDict(dict(arch="p2p_unet"))
    with pytest.raises(ConfigError, match="set model.arch='wbcunet'"):
        wbc.check_wbc(c)
    c = cfg_with()
    c.losses = ml_collections.ConfigDict({"l1": dict(name="l1")})
    with pytest.raises(ConfigError, match="set losses"):
        wbc.check_wbc(c)


def test_tv_is_the_originals_and_disc_sn_patches():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 12, 3))
    h, w = 8, 12
    want = (np.mean(np.square(np.diff(x, axis=1))) + np.mean(np.square(np.diff(x, axis=2)))) / (3 * h * w)
    assert float(wbc.tv_loss(x)) == pytest.approx(want, rel=1e-6)
    from flax import nnx

    d = wbc.DiscSN(1, 4, rngs=nnx.Rngs(0))
    assert d(jnp.zeros((1, 32, 40, 1))).shape == (1, 4, 5, 1)


def test_auto_arch_from_the_golden_file(dataset, vgg19_file):
    r = subprocess.run([sys.executable, "run_train.py", *run_args(dataset, vgg19_file), "--config.model.arch=auto",
                        f"--config.init_weights={GOLDEN}", "--print_config"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
    assert r.returncode == 0, r.stderr
    want = {k: v for k, v in weights.read(GOLDEN).spec.items() if k != "scale"}
    assert json.loads(r.stdout)["model"] == want and want["arch"] == "wbcunet"
