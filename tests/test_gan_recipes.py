"""Every *_gan recipe trains through the real trainer with its own objective (MS-SSIM, VGG19 perceptual, HSLuv, GAN) and
discriminator, warm-started from a fidelity export of its architecture: shrunk to tiny widths, 32 px crops, batch 2 and
two steps on real photographs, so that the six stay cheap on CPU."""
import importlib
import json
import math

import pytest
from conftest import photo
from flax import nnx

from jaxsr import archs, weights
from jaxsr.imageio import write_image
from jaxsr.train.config import resolve
from jaxsr.train.kinds.sr import generator_spec
from jaxsr.train.loop import start

# the smallest valid model of each recipe's architecture; every other field stays the recipe's
TINY = {
    "compact_x4_gan": dict(num_feat=8, num_conv=2),
    "span_x4_gan": dict(feature_channels=8),
    "realplksr_x4_gan": dict(dim=8, n_blocks=1, kernel_size=5),
    "dat2_x4_gan": dict(embed_dim=16, depth=(2,), num_heads=(2,), split_size=(2, 4)),
    "swinir_x4_gan": dict(embed_dim=8, depths=(2,), num_heads=(2,), window_size=4, img_size=8),
    "hat_x4_gan": dict(embed_dim=8, depths=(2,), num_heads=(2,), window_size=4, img_size=8, compress_ratio=2,
                       squeeze_factor=4, num_feat=8),
}
STEPS = 2
CROP = 32  # LR 8: a multiple of the windows and of the U-Net's 8; VGG19's conv5_4 still sees 2x2, MS-SSIM's 5th scale 2x2


pytestmark = pytest.mark.usefixtures("quick_compiles")  # the six runs take 110 s instead of 190 s


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two photographs to train on, one to validate on."""
    root = tmp_path_factory.mktemp("photos")
    (root / "train").mkdir()
    (root / "val").mkdir()
    for name in ("astronaut", "coffee"):
        write_image(str(root / "train" / f"{name}.png"), photo(name, 64, 64, top=100, left=150))
    write_image(str(root / "val" / "chelsea.png"), photo("chelsea", CROP, CROP, top=100, left=200))
    return root


def tiny(name, photos, vgg19_file, init):
    c = importlib.import_module(f"jaxsr.recipes.{name}").get_config()
    c.model.update(TINY[name])
    c.init_weights = str(init)
    c.losses.perceptual.vgg_weights = vgg19_file
    c.data.update(train_dir=str(photos / "train"), val_dir=str(photos / "val"), gt_size=CROP, num_workers=0,
                  val_max_images=1, val_max_size=CROP)
    c.degrade.gt_size = CROP
    c.train.update(batch_size=2, total_steps=STEPS, log_every=1, ckpt_every=100)
    c.val.every = 0
    c.log.tensorboard = False
    return resolve(c)


@pytest.mark.parametrize("name", sorted(TINY))
def test_gan_recipe_trains_with_its_objective_from_a_fidelity_export(tmp_path, photos, vgg19_file, name):
    init = tmp_path / "fidelity.safetensors"
    cfg = tiny(name, photos, vgg19_file, init)
    spec = generator_spec(cfg)
    weights.export(archs.build(spec, rngs=nnx.Rngs(1)), spec, init)  # not the run's own seed-0 initialisation
    wd = tmp_path / "wd"
    assert start(cfg, str(wd)).run() == STEPS

    log = (wd / "train.log").read_text()
    assert f"warm start from {init}" in log and "all tensors matched" in log, log
    rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
    train = {r["step"]: r for r in rows if "loss" in r}
    assert sorted(train) == list(range(1, STEPS + 1))
    for r in train.values():
        for key in ("ms_ssim", "perceptual", "hsluv", "gan", "d_loss"):
            assert math.isfinite(r[key]), (key, r)
        assert r["gan"] > 0 and r["perceptual"] > 0 and "l1" not in r
    assert any(r["step"] == 0 and "val_psnr" in r for r in rows)  # a warm start validates before its first step
    assert (wd / "models" / f"{cfg.name}_x4.safetensors").exists()
