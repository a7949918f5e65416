"""The original PLKSR beyond the shared tables (its rows in tests/test_parity.py, SMALL, TILED): detection against
RealPLKSR as spandrel splits the family, the options the keys cannot show (with_idt; SparsePLK's kernels, dilations
and max kernel) against the reference class with the export warnings they raise, the refusals, and the rectangular
kernels in ONNX (SMALL's spec reaches the dilated ones)."""
import re
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import photo, torch_forward
from parity import perturbed

from jaxsr import archs, deploy, weights
from jaxsr.archs import plksr
from jaxsr.errors import WeightsError

TOL = 1e-5
X = photo("astronaut", 19, 23, top=100, left=150)[None]


def spec_of(**kw):
    return {"arch": "plksr", "scale": 2, "dim": 8, "n_blocks": 1, **kw}


def reference(**kw):
    from spandrel.architectures.PLKSR import PLKSR

    return PLKSR(**{"dim": 8, "n_blocks": 1, "upscaling_factor": 2, **kw})


def numpy_sd(net):
    return {k: v.numpy() for k, v in net.state_dict().items()}


def test_detection_splits_the_family_as_spandrel_does(spandrel):
    from spandrel.architectures.PLKSR import RealPLKSR

    real = RealPLKSR(dim=8, n_blocks=1, upscaling_factor=2)
    nets = [reference(ccm_type=c, lk_type=lk, kernel_size=9)
            for c, lk in (("CCM", "PLK"), ("DCCM", "SparsePLK"), ("ICCM", "RectSparsePLK"))]
    for net, name in [(n, "plksr") for n in nets] + [(real, "realplksr")]:
        assert archs.detect(numpy_sd(net)).name == name
        assert type(spandrel.ModelLoader().load_from_state_dict(net.state_dict()).model) is type(net)
    with pytest.raises(WeightsError, match="expected a RealPLKSR model, but the file is a PLKSR model"):
        archs.detect(numpy_sd(nets[0]), arch="realplksr")
    with pytest.raises(WeightsError, match="expected a PLKSR model, but the file is a RealPLKSR model"):
        archs.detect(numpy_sd(real), arch="plksr")


@pytest.mark.parametrize("kw, gap", [
    (dict(lk_type="PLK", kernel_size=7, with_idt=True), "with_idt=True"),
    (dict(lk_type="SparsePLK", kernel_size=7, sparse_kernels=[3, 5], sparse_dilations=[2, 1], use_max_kernel=True,
          with_idt=True), "will not load"),
    (dict(lk_type="SparsePLK", sparse_dilations=[1, 1, 2, 2]), r"sparse_dilations=\[1, 1, 2, 2\]"),
], ids=["plk_idt", "sparse_max_kernel_idt", "sparse_dilations"])
def test_options_the_keys_cannot_show_equal_the_reference_class_and_warn(tmp_path, kw, gap):
    """Our model strict-loads into spandrel's class built with the same options and computes the same; the export warns
    that spandrel's loader (which assumes the defaults) will not follow, and jaxsr reads the stored spec back."""
    spec = spec_of(ccm_type="DCCM", **kw)
    model = perturbed(spec, seed=1, spread=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights.export(model, spec, tmp_path / "m.pth")
    said = [str(w.message) for w in caught]
    assert said == plksr.ARCH.spandrel_warnings(spec) and any(re.search(gap, m) for m in said), said
    net = reference(ccm_type="DCCM", **kw)
    net.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True)["params_ema"], strict=True)
    ours = np.asarray(model(jnp.asarray(X)))
    assert np.abs(torch_forward(net, X) - ours).max() <= TOL
    back, info = weights.load_model(tmp_path / "m.pth")
    assert {k: info["hyperparameters"][k] for k in kw} == kw
    assert np.array_equal(np.asarray(back(jnp.asarray(X))), ours)


def test_refusals_name_what_cannot_be_loaded():
    sparse = numpy_sd(reference(lk_type="SparsePLK", sparse_kernels=[3, 5], sparse_dilations=[2, 1]))
    with pytest.raises(WeightsError, match=r"SparsePLK with large-kernel convs \[\(3, 3\), \(5, 5\)\].*dilations"):
        plksr.infer_spec(sparse)
    sd = numpy_sd(reference(kernel_size=7))
    mixer = "feats.1.channe_mixer.0.weight"
    with pytest.raises(WeightsError, match="1x1 and 1x1 convs: neither CCM, ICCM nor DCCM"):
        plksr.infer_spec({**sd, mixer: sd[mixer][:, :, :1, :1]})
    with pytest.raises(WeightsError, match="1 input channels"):
        plksr.infer_spec({**sd, "feats.0.weight": sd["feats.0.weight"][:, :1]})
    with pytest.raises(WeightsError, match="15 of 22 large-kernel channels"):  # int(22 * 15/22) = 14, as in spandrel
        plksr.infer_spec(numpy_sd(reference(dim=22, split_ratio=0.7)))
    for bad, match in ((dict(kernel_size=8), "must be odd"), (dict(lk_type="RectSparsePLK", kernel_size=13), "must be odd"),
                       (dict(ccm_type="XCCM"), "unknown PLKSR ccm_type"), (dict(lk_type="Big"), "unknown PLKSR lk_type"),
                       (dict(lk_type="SparsePLK", sparse_dilations=[1]), "as long as each other")):
        with pytest.raises(ValueError, match=match):
            archs.build(spec_of(**bad))


def test_rectangular_kernels_run_in_onnxruntime():
    spec = spec_of(ccm_type="ICCM", lk_type="RectSparsePLK", kernel_size=9, use_ea=False)
    model = perturbed(spec)
    proto, _ = deploy.build_graph(model, spec)
    x = deploy.photo(23, 37)
    assert np.abs(deploy.run_onnx(proto.SerializeToString(), x) - deploy.reference(model, spec, x)).max() <= 1e-4
