"""SRFlow against andreas128/SRFlow's own SRFlowNet (tests/golden/srflow, made by its make_golden.py on reduced,
perturbed weights in the released key layout): the encoder's conditioning, encode's z and log-determinant, the NLL
with and without the dequantization term, the samples at heat 0 and at a fixed noise, and invertibility; the file
through load_model, weights.read(arch='auto') and model.arch=auto; the export bit for bit; the three released layouts
(their keys and shapes, recorded from the reference) inferred and rebuilt key for key; refusals by name."""
import gzip
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsr import archs, load_model, weights
from jaxsr.archs import bridge, srflow
from jaxsr.errors import WeightsError

pytestmark = pytest.mark.filterwarnings("ignore:SRFlow. spandrel")  # the export's known gap
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "srflow")
PTH = os.path.join(GOLDEN, "SRFlow_x4_small.pth")
# fp32, max |ours - reference| / max |reference| (measured under jit: conditioning <= 2.2e-7, z 4.2e-7, logdet 5.2e-7,
# eps 4.1e-7, NLL 3.4e-7 (dequantized 1.4e-7), samples <= 1.8e-6 with float32 inverses of the 1x1 convs; eagerly,
# where they are float64 as the reference's, 3.8e-7)
TOL = 1e-5
INVERT_TOL = 1e-4  # max abs |decode(encode(hr)) - hr| on [0, 1] images (measured: 7.9e-6)
SPEC = {"arch": "srflow", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 3, "num_block": 2, "num_grow_ch": 2, "K": 2,
        "L": 3, "noaffine_steps": 1, "hidden_ch": 2, "kernel_hidden": 1, "n_hidden_layers": 1, "stack_blocks": [1, 1],
        "f_ch": 1}
RELEASED = {  # code/confs/SRFlow_*.yml; parameters counted from the reference's modules
    "SRFlow_DF2K_4X": ({"scale": 4, "num_block": 23, "L": 3, "stack_blocks": [1, 8, 15, 22]}, 39_541_811),
    "SRFlow_DF2K_8X": ({"scale": 8, "num_block": 23, "L": 4, "stack_blocks": [1, 3, 5, 7]}, 50_821_891),
    "SRFlow_CelebA_8X": ({"scale": 8, "num_block": 8, "L": 4, "stack_blocks": [1, 3, 5, 7]}, 40_030_531),
}


def rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def io():
    return dict(np.load(os.path.join(GOLDEN, "io.npz")))


@pytest.fixture(scope="module")
def loaded():
    return load_model(PTH)


@pytest.fixture(scope="module")
def ours(loaded, io):
    """Everything the golden file records, from one compiled program of the loaded model: one encoder run; encode and
    nll (quant 32) on HR and dequantized HR in one batch; the forward (archs.forward: the heat-0 sample); one decode of
    the fixed noise and of the encoded latents."""
    gdef, state = nnx.split(loaded[0])

    @jax.jit
    def run(state, lr, hr, hr_deq, noise_eps1, noise_z):
        m = nnx.merge(gdef, state)
        cond = m.conditions(lr)
        two = {level: jnp.concatenate([c, c]) for level, c in cond.items()}
        lr2, hr2 = jnp.concatenate([lr, lr]), jnp.concatenate([hr, hr_deq])
        z, logdet, eps = m.encode(hr2, lr2, return_eps=True, lr_enc=two)
        nll = m.nll(hr2, lr2, quant=32, lr_enc=two)
        decoded = m.decode(lr2, jnp.concatenate([noise_z, z[:2]]), [jnp.concatenate([noise_eps1, eps[0][:2]])],
                           lr_enc=two)
        return dict(cond=cond, z=z[:2], logdet=logdet[:2], eps1=eps[0][:2], nll=nll[:2] - math.log2(32),
                    nll_deq=nll[2:], sr_heat0=archs.forward(m, lr), sr_noise=decoded[:2], back=decoded[2:],
                    rrdb_out=m.RRDB(lr))

    return jax.device_get(run(state, *(jnp.asarray(io[k]) for k in ("lr", "hr", "hr_deq", "noise_eps1", "noise_z"))))


def test_golden_file_loads_through_load_model_and_auto_read(loaded):
    model, info = loaded
    assert isinstance(model, srflow.SRFlowNet) and info["arch"] == "srflow" and info["scale"] == 4
    w = weights.read(PTH, arch="auto")
    assert w.arch is srflow.ARCH and w.spec == SPEC
    assert (model.size_multiple, model.tile_multiple, model.in_ch) == (2, 2, 3)


def test_encoder_conditioning_equals_the_reference(ours, io):
    for level in (1, 2, 3):
        assert rel(ours["cond"][level], io[f"cond{level}"]) <= TOL, level
    assert rel(ours["rrdb_out"], io["rrdb_out"]) <= TOL


def test_encode_z_logdet_and_nll_equal_the_reference(ours, io):
    """encode is normal_flow without noise; nll takes the dequantized HR as given (the reference's add_gt_noise draws
    u ~ U(0, 1), adds (u - 0.5) / quant and -log(quant) per pixel-position: hr_deq and quant=32 here; on the plain HR
    the quant term's log2(32) bits are taken off again to compare with the reference's add_gt_noise=False)."""
    for k in ("z", "logdet", "eps1", "nll", "nll_deq"):
        assert ours[k].shape == io[k].shape and rel(ours[k], io[k]) <= TOL, k
    assert np.allclose(ours["nll_deq"] - ours["nll"], math.log2(32), atol=0.02)  # the bins' share, plus the noise's


def test_samples_at_heat_0_and_at_a_fixed_noise_equal_the_reference(ours, io):
    for k in ("sr_heat0", "sr_noise"):
        assert ours[k].shape == io["hr"].shape and rel(ours[k], io[k]) <= TOL, k


def test_decoding_the_encoded_latents_gives_the_hr_image_back(ours, io):
    assert np.abs(ours["back"] - io["hr"]).max() <= INVERT_TOL


def test_keyed_noise_and_size_refusals(loaded, io):
    """sample(lr, heat, key) decodes draw_noise's latents, N(0, heat^2) in noise_shapes, as the fixed noise above."""
    model, lr = loaded[0], jnp.asarray(io["lr"])
    noise = jax.device_get(model.draw_noise(lr.shape, 0.7, jax.random.key(3)))
    assert [n.shape[1:] for n in noise] == [(12, 20, 6), (3, 5, 96)] == [s[1:] for s in model.noise_shapes(lr.shape)]
    assert all(0.6 < n.std() < 0.8 for n in noise)
    assert not any(np.asarray(n).any() for n in model.draw_noise(lr.shape, 0.0))
    with pytest.raises(ValueError, match="needs a key"):
        model.sample(lr, 0.7)
    with pytest.raises(ValueError, match="multiples of 2"):
        model(jnp.asarray(io["lr"][:1, :5, :6]))
    with pytest.raises(ValueError, match="4 times the LR's sides"):
        model.encode(jnp.asarray(io["hr"][:, :20]), lr)


def test_use_chk_recomputes_trunk_blocks_and_flow_steps_in_the_backward_pass(io):
    """model.use_chk is jaxsr's remat: the gradient's program recomputes each trunk block and FlowStep (numbers unchanged:
    remat only moves the forward's work into the backward pass)."""
    model, _ = weights.read(PTH).build({**SPEC, "use_chk": True})
    gdef, params, rest = nnx.split(model, nnx.Param, ...)
    lr = jnp.asarray(io["lr"])
    loss = lambda p: archs.forward(nnx.merge(gdef, p, rest), lr).mean()
    names = [e.primitive.name for e in jax.make_jaxpr(jax.grad(loss))(params).jaxpr.eqns]
    assert names.count("remat2") >= 2 + 9  # the trunk's 2 blocks, the 3 levels' 3 FlowSteps


def test_export_is_the_committed_file_bit_for_bit(tmp_path, loaded):
    """A plain state dict with the released layout's keys (what SRFlowNet strict-loads), dtypes and bytes."""
    weights.export(loaded[0], SPEC, tmp_path / "out.pth")
    (mine, _), (theirs, _) = weights.read_file(tmp_path / "out.pth"), weights.read_file(PTH)
    assert sorted(mine) == sorted(theirs)
    for k in mine:
        assert mine[k].dtype == theirs[k].dtype and mine[k].tobytes() == theirs[k].tobytes(), k


def _shapes(shapes):
    """A state dict of zero-strided arrays with these shapes: what detection and infer_spec read."""
    return {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}


def _released(name):
    with gzip.open(os.path.join(GOLDEN, "released_shapes.json.gz"), "rt") as f:
        return json.load(f)[name]


def _torch_shapes(model):
    return {bridge.torch_key(p): list(bridge.to_torch_layout(p, np.zeros(v.shape, np.int8)).shape)
            for p, v in bridge.variables(model)}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_layouts_are_detected_and_inferred(name):
    sd = _shapes(_released(name))
    assert archs.detect(sd) is srflow.ARCH
    fields, n_params = RELEASED[name]
    assert srflow.ARCH.full_spec(srflow.infer_spec(sd)) == {**srflow.DEFAULTS, **SPEC, **fields, "K": 16,
                                                            "noaffine_steps": 2, "hidden_ch": 64, "f_ch": 96,
                                                            "num_feat": 64, "num_grow_ch": 32}
    assert sum(math.prod(s.shape) for s in sd.values()) == n_params


def test_released_x8_layout_is_rebuilt_key_for_key():
    """SRFlow_CelebA_8X (L 4, two splits, three upconvs; DF2K_8X has the same flow on 23 blocks): the spec inferred
    from the reference's keys builds exactly those keys and shapes (the x4 layout is the golden file's)."""
    ref = _released("SRFlow_CelebA_8X")
    model = srflow.build(srflow.infer_spec(_shapes(ref)), rngs=nnx.Rngs(0))
    assert _torch_shapes(model) == ref


def test_what_cannot_load_is_refused_in_one_line():
    sd, _ = weights.read_state_dict(PTH)
    cases = [
        ({**sd, "RRDB.upconv3.weight": sd["RRDB.upconv2.weight"], "RRDB.upconv4.weight": sd["RRDB.upconv2.weight"]},
         "4 encoder upconvs"),
        ({k: v for k, v in sd.items() if not k.startswith("flowUpsamplerNet.layers.4.")},  # level 1's split
         "unsupported SRFlow flow layout"),
        ({**sd, "flowUpsamplerNet.layers.1.invconv.lower": sd["flowUpsamplerNet.layers.1.invconv.weight"]},
         "LU-decomposed"),
        ({**sd, "flowUpsamplerNet.layers.2.affine.fFeatures.0.weight": np.zeros((2, 10, 3, 3), np.float32)},
         "no multiple of the encoder's 3 features"),
    ]
    for bad, match in cases:
        assert archs.detect(bad) is srflow.ARCH
        with pytest.raises(WeightsError, match=match) as e:
            srflow.infer_spec(bad)
        assert "\n" not in str(e.value)


def test_stack_blocks_are_the_released_options_and_spread_over_other_trunks():
    assert srflow.stack_blocks_for(4, 23, 4) == (1, 8, 15, 22)
    assert srflow.stack_blocks_for(8, 23, 4) == (1, 3, 5, 7)
    assert srflow.stack_blocks_for(8, 8, 4) == (1, 3, 5, 7)
    assert srflow.stack_blocks_for(4, 2, 2) == (1, 1)
    assert srflow.stack_blocks_for(4, 1, 2) == (0, 0)


def test_auto_arch_from_the_golden_file_resolves_in_print_config():
    r = subprocess.run([sys.executable, "run_train.py", "--config", "configs/x4.py", "--config.model.arch=auto",
                        f"--config.init_weights={PTH}", "--print_config"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == {k: v for k, v in SPEC.items() if k != "scale"}  # the run's scale: 4
