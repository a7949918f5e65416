"""OmniSR beyond the shared tables (its rows in tests/test_parity.py, SMALL): the window spandrel cannot read back
without the position bias (warned on export, kept by jaxsr's metadata), the variants refused by name, and what the
constructor refuses."""
import warnings

import numpy as np
import pytest
from parity import perturbed

from jaxsr import archs, weights
from jaxsr.archs import omnisr
from jaxsr.errors import WeightsError

SPEC = {"arch": "omnisr", "scale": 2, "num_feat": 8, "block_num": 1, "pe": False, "window_size": 4, "res_num": 1}


def test_a_window_without_the_position_bias_warns_and_jaxsr_keeps_it(tmp_path, spandrel):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights.export(perturbed(SPEC), SPEC, tmp_path / "m.pth")
    assert [str(w.message) for w in caught] == archs.get("omnisr").spandrel_warnings(SPEC) and len(caught) == 1
    assert "w8" in spandrel.ModelLoader().load_from_file(str(tmp_path / "m.pth")).tags  # what the warning says
    assert weights.read(tmp_path / "m.pth").spec["window_size"] == 4  # the wrapped .pth carries the spec


def test_variants_spandrel_cannot_build_are_refused_by_name():
    sd = archs.get("omnisr").to_torch(perturbed({**SPEC, "pe": True}), SPEC)
    table = "residual_layer.0.residual_layer.0.layer.2.fn.rel_pos_bias.weight"
    with pytest.raises(WeightsError, match="relative-position table of 50 rows"):
        omnisr.infer_spec({**sd, table: np.zeros((50, 4), np.float32)})
    with pytest.raises(WeightsError, match="num_feat 10 is no multiple of 4"):
        omnisr.infer_spec({**sd, "input.weight": np.zeros((10, 3, 3, 3), np.float32)})


@pytest.mark.parametrize("kw", [dict(num_feat=10), dict(window_size=0), dict(res_num=0)])
def test_the_constructor_refuses_what_cannot_run(kw):
    with pytest.raises(ValueError):
        omnisr.OmniSR(**kw)
