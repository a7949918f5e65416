"""Real-CUGAN beyond the shared tables (its rows in tests/test_parity.py, SMALL): what spandrel cannot follow (the x4
whose shapes read as the fast x2, warned on export; a fast file with a pro marker, refused by name) and what the
constructor refuses."""
import warnings

import numpy as np
import pytest
from parity import perturbed

from jaxsr import archs, weights
from jaxsr.archs import realcugan
from jaxsr.errors import WeightsError


def test_an_x4_with_in_ch_four_times_out_ch_warns_and_spandrel_reads_it_as_the_fast_x2(tmp_path, spandrel):
    spec = {"arch": "realcugan", "scale": 4, "in_ch": 4, "out_ch": 1}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights.export(perturbed(spec), spec, tmp_path / "m.pth")
    assert [str(w.message) for w in caught if "spandrel" in str(w.message)] == archs.get("realcugan").spandrel_warnings(spec)
    assert len(caught) == 1 and "UpCunet2x_fast" in str(caught[0].message)
    desc = spandrel.ModelLoader().load_from_file(str(tmp_path / "m.pth"))  # what the warning says happens
    assert (desc.scale, desc.input_channels, set(desc.tags)) == (2, 1, {"fast"})
    assert weights.read(tmp_path / "m.pth").spec["fast"]  # a bare .pth has no metadata: read back alike


def test_a_fast_file_with_a_pro_marker_is_refused_by_name():
    spec = {"arch": "realcugan", "scale": 2, "fast": True}
    sd = {**archs.get("realcugan").to_torch(perturbed(spec), spec), "pro": np.zeros((1,), np.float32)}
    with pytest.raises(WeightsError, match="fast x2 model .* with a 'pro' tensor"):
        realcugan.infer_spec(sd)


@pytest.mark.parametrize("kw", [dict(scale=8), dict(scale=4, fast=True), dict(scale=2, fast=True, pro=True)])
def test_the_constructor_refuses_what_no_reference_class_builds(kw):
    with pytest.raises(ValueError):
        realcugan.UpCunet(**kw)
