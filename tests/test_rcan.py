"""RCAN beyond the shared tables (its rows in tests/test_parity.py, SMALL, the ONNX EXTRA row): the options the keys
cannot show (act_mode, rgb_range) against the reference class with the export warnings they raise, the x1 model that
spandrel cannot load, unshuffle_mod ignored above x2 as the reference ignores it, and the refusals."""
import re
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import photo, torch_forward
from parity import perturbed

from jaxsr import archs, weights
from jaxsr.archs import bridge, rcan
from jaxsr.errors import WeightsError

TOL = 1e-5
X = photo("chelsea", 19, 23, top=60, left=200)[None]


def spec_of(**kw):
    return {"arch": "rcan", "scale": 2, "n_resgroups": 1, "n_resblocks": 1, "n_feats": 8, "reduction": 4, **kw}


def reference(**kw):
    from spandrel.architectures.RCAN import RCAN

    return RCAN(**{"scale": 2, "n_resgroups": 1, "n_resblocks": 1, "n_feats": 8, "reduction": 4, **kw})


@pytest.mark.parametrize("kw, gap", [
    (dict(act_mode="leaky_relu"), "act_mode='leaky_relu'"),
    (dict(act_mode="elu"), "act_mode='elu'"),
    (dict(act_mode="silu"), "act_mode='silu'"),
    (dict(act_mode="gelu"), "act_mode='gelu'"),
    (dict(act_mode="none"), "act_mode='none'"),
    (dict(rgb_range=1.0), "rgb_range=1"),
], ids=["leaky_relu", "elu", "silu", "gelu", "none", "rgb_range_1"])
def test_options_the_keys_cannot_show_equal_the_reference_class_and_warn(tmp_path, kw, gap):
    """Our model strict-loads into spandrel's class built with the same options and computes the same; the export warns
    that spandrel's loader (which assumes ReLU and 255) computes otherwise; jaxsr reads the stored spec back."""
    spec = spec_of(**kw)
    model = perturbed(spec, seed=1, spread=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights.export(model, spec, tmp_path / "m.pth")
    said = [str(w.message) for w in caught]
    assert said == rcan.ARCH.spandrel_warnings(spec) and len(said) == 1 and re.search(gap, said[0]), said
    net = reference(**kw)
    net.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True)["params"], strict=True)
    ours = np.asarray(model(jnp.asarray(X)))
    assert np.abs(torch_forward(net, X.copy()) - ours).max() <= TOL  # torch scales its input in place
    back, info = weights.load_model(tmp_path / "m.pth")
    assert {k: info["hyperparameters"][k] for k in kw} == kw
    assert np.array_equal(np.asarray(back(jnp.asarray(X))), ours)


def test_x1_without_unshuffle_loads_here_and_warns_that_spandrel_cannot(tmp_path, spandrel):
    """spandrel reads n_feats from the upsampler, which a plain x1 RCAN lacks, and assumes 64: at 8 features its load
    fails; jaxsr reads n_feats from the head and loads it."""
    spec = spec_of(scale=1)
    model = perturbed(spec, seed=2)
    with pytest.warns(UserWarning, match="assume 64 and will not load"):
        weights.export(model, spec, tmp_path / "m.pth")
    with pytest.raises(RuntimeError, match="size mismatch"):
        spandrel.ModelLoader().load_from_file(str(tmp_path / "m.pth"))
    net = reference(scale=1)
    net.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True)["params"], strict=True)
    ours = np.asarray(model(jnp.asarray(X)))
    assert ours.shape == X.shape and np.abs(torch_forward(net, X.copy()) - ours).max() <= TOL
    back, _ = weights.load_model(tmp_path / "m.pth")
    assert np.array_equal(np.asarray(back(jnp.asarray(X))), ours)


def test_unshuffle_mod_above_x2_is_ignored_as_the_reference_ignores_it():
    plain = bridge.state_dict(archs.build(spec_of(scale=4)))
    asked = archs.build(spec_of(scale=4, unshuffle_mod=True))
    assert asked.size_multiple == 1 and bridge.state_dict(asked).keys() == plain.keys()
    assert plain.keys() == reference(scale=4, unshuffle_mod=True).state_dict().keys()


def test_refusals_name_what_cannot_be_loaded():
    basicsr = {"conv_first.weight": np.zeros((8, 3, 3, 3), np.float32),
               "body.0.residual_group.0.rcab.0.weight": np.zeros((8, 8, 3, 3), np.float32)}
    assert archs.detect(basicsr) is rcan.ARCH
    with pytest.raises(WeightsError, match="BasicSR's RCAN layout"):
        rcan.infer_spec(basicsr)
    for bad, match in ((dict(in_ch=1), "use norm=False"), (dict(kernel_size=4), "odd kernel_size"),
                       (dict(reduction=16), "n_feats >= reduction"), (dict(act_mode="prelu"), "unknown RCAN act_mode"),
                       (dict(scale=5), "scale 2\\^n and 3"), (dict(width=3), "unknown RCAN spec fields: width")):
        with pytest.raises(ValueError, match=match):
            archs.build(spec_of(**bad))
