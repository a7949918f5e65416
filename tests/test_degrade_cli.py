"""The preview CLI: python -m jaxsr.degrade --config ... --input ... --output ..."""
import numpy as np
from conftest import photo

from jaxsr.degrade.__main__ import main
from jaxsr.imageio import read_image, write_image

CONFIG = '''
import ml_collections
from jaxsr.degrade import default_config

def get_config():
    c = ml_collections.ConfigDict()
    c.scale = 2
    c.degrade = default_config()
    c.degrade.mode = "bicubic"
    c.degrade.gt_size = 32
    return c
'''


def test_preview_cli_writes_samples_and_contact_sheet(tmp_path):
    (tmp_path / "cfg.py").write_text(CONFIG)
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", photo("astronaut", 60, 70))
    write_image(src / "b.png", photo("coffee", 24, 40))  # smaller than the crop: reflect-padded
    out = tmp_path / "out"
    main(["--config", str(tmp_path / "cfg.py"), "--input", str(src), "--output", str(out), "--n", "3"])
    lqs = sorted(out.glob("lq_*.png"))
    assert len(lqs) == 3 and read_image(lqs[0]).shape == (16, 16, 3)
    sheet = read_image(out / "contact_sheet.png")
    assert sheet.shape == (3 * 32 + 2 * 4, 2 * 32 + 4, 3)
    # right half of a row is the LQ upscaled by nearest neighbour
    np.testing.assert_allclose(sheet[:32:2, 36::2], read_image(lqs[0]), atol=1 / 255)
