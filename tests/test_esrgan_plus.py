"""ESRGAN+ (RRDB with conv1x1 skips, `plus=True`) against spandrel's ESRGAN(plus=True) on identical perturbed
weights, and its bridge: detection and inference as spandrel's, exports in the original `model.N` layout (that spandrel
loads them as ESRGAN+: tests/test_parity.py).

Tolerance: max abs diff <= 1e-5 (fp32, [0,1] photos).
"""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import photo, torch_forward
from flax import nnx
from test_rrdb import new_to_bsrgan_keys, numpy_sd, old_to_new_keys

from jaxsr import archs, weights
from jaxsr.archs import esrgan
from jaxsr.archs.bridge import load_state_dict, to_torch_layout, torch_key
from jaxsr.weights import export, load_model

TOL = 1e-5
SCALE_ARGS = {4: (4, None), 8: (8, None), 2: (4, 2), 1: (4, 4)}  # our scale -> spandrel's (scale, shuffle_factor)


def spandrel_plus(scale, nf=8, nb=1, seed=0, spread=0.1):
    """spandrel's ESRGAN+ (grow channels 32, as spandrel hard-codes) with every parameter perturbed."""
    from spandrel.architectures.ESRGAN import ESRGAN

    s, shuffle = SCALE_ARGS[scale]
    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3 * (shuffle or 1) ** 2, out_nc=3, num_filters=nf, num_blocks=nb, scale=s, plus=True, shuffle_factor=shuffle)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * spread)
    return net.eval()


@nnx.jit
def forward(model, x):
    return model(x)


def crop():
    return photo("astronaut", 28, 36, top=100, left=150)[None]  # multiples of 4: spandrel pads x1/x2 by reflection


@pytest.mark.parametrize("layout,scale", [("old", 4), ("old", 2), ("new", 4), ("bsrgan", 2)])
def test_forward_matches_spandrel(tmp_path, spandrel, layout, scale):
    """The original ESRGAN+ file (model.N keys, bare state dict) and the same weights under BasicSR/BSRGAN keys."""
    net = spandrel_plus(scale)
    sd = numpy_sd(net)
    if layout != "old":
        sd = old_to_new_keys({k: v for k, v in sd.items() if ".conv1x1." not in k})
        sd.update({f"body.{k.split('.')[3]}.rdb{k.split('.')[4][3]}.conv1x1.weight": v for k, v in numpy_sd(net).items() if ".conv1x1." in k})
    if layout == "bsrgan":
        sd = new_to_bsrgan_keys(sd)
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "m.pth")
    model, info = load_model(tmp_path / "m.pth")
    assert (info["arch"], info["scale"]) == ("esrgan", scale)
    assert info["hyperparameters"] == {"in_ch": 3, "out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 32, "plus": True}
    if layout == "old":  # what spandrel infers from the same file
        desc = spandrel.ModelLoader().load_from_file(str(tmp_path / "m.pth"))
        assert desc.model.hyperparameters["plus"] is True and desc.scale == scale and "ESRGAN+" in desc.tags
    x = crop()
    ours, ref = np.asarray(forward(model, jnp.asarray(x))), torch_forward(net, x)
    assert ours.shape == ref.shape == (1, 28 * scale, 36 * scale, 3)
    diff = float(np.abs(ours - ref).max())
    with torch.no_grad():  # and the skips matter: without them the output moves by far more than TOL
        for name, p in net.named_parameters():
            if ".conv1x1." in name:
                p.zero_()
    skips = float(np.abs(torch_forward(net, x) - ref).max())
    print(f"{layout} x{scale}: max|diff| {diff:.2e} (|out| <= {np.abs(ref).max():.2f}; the skips move it {skips:.2f})")
    assert diff <= TOL and skips > 1e-2


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_round_trip_is_bit_identical(tmp_path, ext):
    sd = numpy_sd(spandrel_plus(4, nb=2, seed=1))
    src, dst = tmp_path / f"in{ext}", tmp_path / f"out{ext}"
    if ext == ".pth":
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, src)
    else:
        from safetensors.numpy import save_file

        save_file(sd, str(src))
    model, info = load_model(src)
    export(model, {"arch": "esrgan", "scale": info["scale"], **info["hyperparameters"]}, dst)
    back, _ = weights.read_state_dict(dst)
    assert back.keys() == sd.keys()
    for k in sd:
        assert back[k].dtype == sd[k].dtype and back[k].tobytes() == sd[k].tobytes(), k


def test_bf16_compute_stays_close_to_fp32():
    """bf16 activations (fp32 params) on a real photo: >= 40 dB against fp32, the peak signal taken as the fp32
    output's range (an untrained RRDB outputs far less than [0, 1], which would flatter a plain PSNR)."""
    sd = esrgan.from_torch(numpy_sd(spandrel_plus(4, nb=2, spread=0.05)))
    model = archs.build(esrgan.infer_spec(sd))
    load_state_dict(model, sd)
    low = archs.build(esrgan.infer_spec(sd), dtype=jnp.bfloat16)
    nnx.update(low, nnx.state(model))
    x = jnp.asarray(photo("astronaut", 32, 32, top=200, left=200)[None])
    a, b = np.asarray(forward(model, x)), np.asarray(forward(low, x))
    psnr = 10 * np.log10((a.max() - a.min()) ** 2 / np.mean((a - b) ** 2))
    print(f"bf16 vs fp32: {psnr:.1f} dB (of the output's range {a.max() - a.min():.2f})")
    assert b.dtype == np.float32 and psnr >= 40


def test_tiled_equals_untiled():
    """1 block: 17 LR convs + the upsampler, a receptive field of ~18 px at x4; crop seams with overlap 40 are exact."""
    from jaxsr import upscale

    model = esrgan.RRDBNet(scale=4, num_feat=8, num_block=1, num_grow_ch=32, plus=True, rngs=nnx.Rngs(1))
    img = photo("coffee", 90, 110, top=60, left=120)
    diff = float(np.abs(upscale(model, img, tile=64, overlap=40, tile_batch=4) - upscale(model, img)).max())
    print(f"tiled vs whole: max|diff| {diff:.2e}")
    assert diff <= 1e-5


def test_no_longer_refused():
    """ESRGAN+ is detected as ESRGAN and no longer named as unsupported. (Growth channels other than 32 warn on
    export whatever `plus` says: test_rrdb.py checks that warning.)"""
    sd = numpy_sd(spandrel_plus(4))
    assert archs.detect(sd) is esrgan.ARCH and esrgan.detect({k: sd[k] for k in ("model.0.weight", "model.1.sub.0.RDB1.conv1x1.weight")})
    assert "ESRGAN+" not in archs.describe({"x.conv1x1.weight": 0})


def test_gradients_match_torch_under_jit():
    """RRDB has no train-only behaviour: model.train() changes nothing; the jitted L1 gradient of every tensor,
    the conv1x1 skips included, equals torch's."""
    net = spandrel_plus(4, seed=4)
    sd = esrgan.from_torch(numpy_sd(net))
    model = archs.build(esrgan.infer_spec(sd))
    load_state_dict(model, sd)
    model.train()
    x, y = crop()[:, :16, :16], photo("astronaut", 64, 64, top=300, left=300)[None]

    @nnx.jit
    def grads(model, x, y):
        return nnx.grad(lambda m: jnp.mean(jnp.abs(m(x) - y)))(model)

    g = {torch_key(p): to_torch_layout(p, np.asarray(v[...]))
         for p, v in nnx.to_flat_state(grads(model, jnp.asarray(x), jnp.asarray(y)))}
    out = net.train()(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    (out - torch.from_numpy(y.transpose(0, 3, 1, 2))).abs().mean().backward()
    ref = esrgan.from_torch({k: p.grad.numpy() for k, p in net.named_parameters()})
    assert g.keys() == ref.keys()
    worst = max(float(np.abs(g[k] - ref[k]).max() / (np.abs(ref[k]).max() + 1e-12)) for k in ref)
    print(f"train-mode grads: worst relative max diff {worst:.2e}")
    assert worst < 1e-4 and any(".conv1x1." in k for k in g)
    assert all(np.isfinite(v).all() for v in g.values())
