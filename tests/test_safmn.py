"""SAFMN beyond the shared tables (its rows in tests/test_parity.py, SMALL, TILED): sides that are no multiple of 8,
where torch's adaptive max pooling windows overlap and its nearest index is a float32 product, against the reference
module; what jaxsr.upscale makes of them (padded to 8, as spandrel's descriptor does); the refusals."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import photo, torch_forward
from flax import nnx
from parity import perturbed

from jaxsr import archs
from jaxsr.archs import bridge, safmn
from jaxsr.errors import WeightsError
from jaxsr.infer import upscale

SPEC = {"arch": "safmn", "scale": 1, "dim": 8, "n_blocks": 1, "ffn_scale": 2.0}


def reference(model):
    from spandrel.architectures.SAFMN import SAFMN

    net = SAFMN(dim=8, n_blocks=1, ffn_scale=2.0, upscaling_factor=1)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in bridge.state_dict(model).items()})
    return net


def test_any_side_of_at_least_8_computes_as_the_torch_module():
    """Sides 9-18 take every case: windows of unequal length (9 -> 4 of 2 or 3 px), a side that the pooled size divides
    without being a multiple of 2^i (18 -> 2 at level 3: nearest repeats by 9), and plain blocks (16)."""
    model = perturbed(SPEC, seed=3, spread=0.05)
    net = reference(model)
    forward = nnx.jit(lambda m, x: m(x))
    for h, w in ((9, 13), (18, 11), (16, 17)):
        x = photo("coffee", h, w, top=100, left=200)[None]
        assert np.abs(np.asarray(forward(model, jnp.asarray(x))) - torch_forward(net, x)).max() <= 1e-5, (h, w)


def test_upscale_pads_to_8_as_spandrels_descriptor_does(spandrel):
    model = perturbed({**SPEC, "scale": 2}, seed=4, spread=0.05)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in bridge.state_dict(model).items()}
    desc = spandrel.ModelLoader().load_from_state_dict(sd)
    assert desc.size_requirements.multiple_of == model.size_multiple == 8
    img = photo("coffee", 21, 30, top=100, left=200)
    with torch.no_grad():
        theirs = desc(torch.from_numpy(img.transpose(2, 0, 1)[None].copy()))[0].numpy().transpose(1, 2, 0)
    assert np.abs(upscale(model, img) - theirs).max() <= 1e-5


def test_refusals_name_what_cannot_be_loaded():
    model = archs.build({**SPEC, "dim": 8})
    with pytest.raises(ValueError, match="at least 8 px"):
        model(jnp.zeros((1, 7, 16, 3)))
    with pytest.raises(ValueError, match="dim must be a multiple of 4"):
        archs.build({**SPEC, "dim": 10})
    sd = bridge.state_dict(model)
    with pytest.raises(WeightsError, match="1 input channels"):
        safmn.infer_spec({**sd, "to_feat.weight": sd["to_feat.weight"][:, :1]})
