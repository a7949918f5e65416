"""Tiled upscaling: equal to the whole-image run given enough overlap, one executable for many image sizes,
and a 4000x3000 input through a small model.

Receptive fields (input px) of the small models used here: RRDB with 1 block is 17 LR convs + the upsampler,
about 18.3 px at x4 and 2*18.3+1 = 38 px at x2 (pixel-unshuffled); the local DAT (below) about 24 px.
Crop seams are exact when overlap/2 covers the receptive field, blend seams when overlap/4 does.
"""
import time

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import photo
from flax import nnx


from jaxsr.archs.esrgan import RRDBNet
from jaxsr import infer
from jaxsr.infer import _axis_plan, auto_tile, upscale  # jaxsr.upscale passes only tile= (see report)


def tiny_rrdb(scale, seed=1):
    return RRDBNet(scale=scale, num_feat=8, num_block=1, num_grow_ch=4, rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("seam", ["crop", "blend"])
def test_axis_plan_is_a_partition_of_unity_on_the_grid(seam):
    for length, t, overlap, align, scale in [(300, 96, 48, 1, 4), (1000, 128, 64, 8, 2), (129, 128, 32, 1, 1), (640, 128, 64, 32, 4)]:
        starts, weights = _axis_plan(length, t, overlap, align, scale, seam)
        acc = np.zeros(length * scale)
        for s, (a, b, w) in zip(starts, weights):
            assert s % align == 0 and s + t <= length and 0 <= a < b <= t * scale and w.min() >= 0
            acc[s * scale + a : s * scale + b] += w
        assert np.abs(acc - 1).max() < 1e-6
        assert all(s1 + t - s2 >= overlap for s1, s2 in zip(starts, starts[1:]))


def test_rrdb_tiled_equals_untiled_with_enough_overlap():
    # larger than the tiles on both axes (a shorter axis is padded up to a bucket: see docs/inference.md);
    # odd width: x2 pads to its unshuffle multiple
    img = photo("coffee", 170, 203, top=60, left=120)
    cases = [(4, 96, 48, "crop"), (4, 160, 80, "blend"), (2, 160, 80, "crop")]  # overlap/2 resp. /4 >= 38 at x2
    for scale, tile, overlap, seam in cases:
        model = tiny_rrdb(scale)
        ref = upscale(model, img)
        out = upscale(model, img, tile=tile, overlap=overlap, seam=seam, tile_batch=4)
        assert out.shape == ref.shape == (170 * scale, 203 * scale, 3)
        assert np.abs(out - ref).max() <= 1e-4, (scale, tile, overlap, seam)
    # and the comparison is not vacuous: a tiny overlap at x2 leaves visible differences at the seams
    model = tiny_rrdb(2)
    assert np.abs(upscale(model, img, tile=64, overlap=4, seam="crop", tile_batch=4) - upscale(model, img)).max() > 1e-4


def local_dat():
    """A small DAT (spatial-window blocks only) whose global paths are switched off.

    DAT's channel attention and the AIM's global average pooling make every output pixel depend on the
    whole image, so no finite overlap is exact for a real DAT (docs/inference.md gives measured gaps). With
    only window blocks and the pooled channel map made constant, the model is local, and tiling must then
    reproduce it exactly: this checks the window-grid alignment and the padding.
    """
    from jaxsr.archs.dat import build

    m = build(dict(embed_dim=16, depth=[1, 1], num_heads=[2, 2], split_size=[4, 8], expansion_factor=2.0, num_feat=8, scale=2),
                  rngs=nnx.Rngs(3))
    for _, node in nnx.iter_graph(m):
        if hasattr(node, "channel_interaction"):
            last = node.channel_interaction[4]
            last.kernel[...] = jnp.zeros_like(last.kernel[...])
    return m


def test_dat_tiled_equals_untiled_on_the_window_grid():
    pytest.importorskip("jaxsr.archs.dat")
    model = local_dat()
    assert model.tile_multiple == 8  # max(split_size): tiles start and end on the window grid
    img = photo("astronaut", 128, 200, top=100, left=100)  # window multiples, so no internal padding differs
    ref = upscale(model, img)
    for seam in ("crop", "blend"):
        out = upscale(model, img, tile=96, overlap=48, seam=seam, tile_batch=4)
        assert out.shape == ref.shape and np.abs(out - ref).max() <= 1e-4, seam


def test_one_compiled_function_serves_many_image_sizes(monkeypatch):
    traces = []

    def forward(model, x, branch=None, cond=None):
        traces.append(x.shape)  # runs at trace time only
        return model(x)

    monkeypatch.setattr(infer, "_forward", nnx.jit(forward, static_argnames="branch"))
    model = tiny_rrdb(4, seed=2)
    sizes = [(150, 200), (200, 130), (97, 301), (64, 64)]
    for h, w in sizes:
        img = photo("chelsea", h, w, top=10, left=20)
        assert upscale(model, img, tile=64, overlap=16, tile_batch=4).shape == (4 * h, 4 * w, 3)
    gray = photo("chelsea", 90, 120).mean(2, keepdims=True)
    rgba = np.concatenate([photo("chelsea", 90, 120), np.ones((90, 120, 1), np.float32)], 2)
    upscale(model, gray, tile=64, overlap=16, tile_batch=4)
    upscale(model, rgba, tile=64, overlap=16, tile_batch=4)
    assert len(traces) == 1  # 6 images, 4 sizes, gray and RGBA: one trace, one executable
    # a second model of the same architecture reuses it too (weights are arguments, not constants)
    upscale(tiny_rrdb(4, seed=3), photo("chelsea", 70, 80), tile=64, overlap=16, tile_batch=4)
    assert len(traces) == 1


def test_auto_tile_and_a_4000x3000_input():
    model = tiny_rrdb(1)  # x1 (pixel-unshuffle 4): a full-size photo in seconds on a CPU
    tile = auto_tile(model)
    assert tile % model.tile_multiple == 0 and 64 <= tile <= 1024
    big = np.tile(photo("coffee"), (8, 7, 1))[:3000, :4000]
    t0 = time.time()
    out = upscale(model, big, tile="auto", overlap=16)
    assert out.shape == (3000, 4000, 3) and 0 <= out.min() and out.max() <= 1
    assert time.time() - t0 < 120


def test_infer_cli_tiles(tmp_path):
    from test_infer import tiny_model

    from jaxsr.imageio import load_image, write_image
    from jaxsr.infer import main
    from jaxsr.weights import load_model

    tiny_model(tmp_path / "m.pth")
    img = photo("coffee", 100, 140, top=80, left=150)
    write_image(tmp_path / "in.png", img, bits=16)
    assert main(["--weights", str(tmp_path / "m.pth"), "--input", str(tmp_path / "in.png"), "--output", str(tmp_path / "out.png"),
                 "--tile", "64", "--tile-overlap", "16", "--seam", "blend", "--tile-batch", "2"]) == 0
    out, bits = load_image(tmp_path / "out.png")
    model, _ = load_model(tmp_path / "m.pth")
    ref = upscale(model, load_image(tmp_path / "in.png")[0], tile=64, overlap=16, seam="blend", tile_batch=2)
    assert bits == 16 and out.shape == (400, 560, 3) and np.abs(out - ref).max() <= 1 / 65535


def test_standard_dat_tiled_within_1e4_with_enough_overlap():
    """A standard DAT (channel attention and global pooling on): not exactly local, but with 48 px of
    overlap tiled equals untiled within 1e-4 (measured 3.9e-5 crop, 3.6e-5 blend)."""
    from jaxsr.archs.dat import build

    model = build(dict(embed_dim=32, depth=[2, 2], num_heads=[2, 2], split_size=[4, 8], expansion_factor=2.0, scale=2),
                      rngs=nnx.Rngs(3))
    img = photo("astronaut", 128, 200, top=100, left=100)
    ref = upscale(model, img)
    for seam in ("crop", "blend"):
        assert np.abs(upscale(model, img, tile=96, overlap=48, seam=seam, tile_batch=4) - ref).max() <= 1e-4, seam


# Each architecture added after the first eight tiles through one table: test_layout's SMALL spec (perturbed), a
# real-photo crop (h, w) that is no multiple of what the model pads to, and (tile, overlap, seam) runs that must equal
# the whole-image output within 1e-5 because overlap/2 (crop) or overlap/4 (blend) covers the receptive field, then
# one run with too little overlap that must not (the test is not vacuous).
TILED = {  # name: ((h, w), [(tile, overlap, seam), ...], (tile, overlap) that must differ)
    # receptive field radius 13 LR px (SparsePLK's dilated 5x5 reaches 8); MoSR's ~12 (DySample samples near its pixel)
    "plksr": ((64, 136), [(48, 32, "crop"), (112, 56, "blend")], (32, 0)),
    "mosr": ((64, 136), [(48, 32, "crop"), (112, 56, "blend")], (32, 0)),
    # SAFMN: ~16 LR px (its coarsest level pools 8 x 8 blocks, then a 3x3 there); tiles on its 8 px grid
    "safmn": ((150, 229), [(96, 48, "crop"), (144, 72, "blend")], (64, 0)),
    # Swin2SR (SMALL: window 4, a shifted block, pixelshuffle_aux's bicubic branch): ~13 LR px; tiles on its window grid
    "swin2sr": ((64, 136), [(64, 32, "crop"), (112, 56, "blend")], (32, 0)),
    # DRCT: windows anchored at the origin (tiles on its 16 px grid, spandrel's pad); 5 Swin blocks of window 4 + convs
    "drct": ((64, 136), [(48, 32, "crop"), (112, 64, "blend")], (32, 0)),
    # SRFormer: windows anchored at the origin (tiles on its 4 px window grid); 2 PSA blocks of window 4 with 5x5
    # depthwise convs + convs, ~15 LR px (exact for windows that are multiples of 4; docs/archs.md)
    "srformer": ((64, 136), [(48, 32, "crop"), (112, 56, "blend")], (32, 0)),
}


@pytest.mark.parametrize("name", sorted(TILED))
def test_tiled_equals_untiled_with_enough_overlap(name):
    from test_layout import SMALL, perturbed

    (h, w), runs, short = TILED[name]
    model = perturbed(SMALL[name])
    img = photo("astronaut", h, w, top=60, left=90)
    ref = upscale(model, img)
    for tile, overlap, seam in runs:
        out = upscale(model, img, tile=tile, overlap=overlap, seam=seam, tile_batch=4)
        assert np.abs(out - ref).max() <= 1e-5, (tile, overlap, seam)
    assert np.abs(upscale(model, img, tile=short[0], overlap=short[1], seam="crop", tile_batch=4) - ref).max() > 1e-4



def _constant_gates(model, kind, conv_of):
    """Zero the last conv of every squeeze gate: the gate is then sigmoid(bias), no longer a function of the image."""
    for _, module in model.iter_modules():
        if type(module).__name__ == kind:
            c = conv_of(module)
            c.kernel[...] = jnp.zeros_like(c.kernel[...])


GATED = {  # name: (spec over SMALL's, the gate module, its last conv, (h, w), tile, overlap)
    # Real-CUGAN x3 reflect-pads to its 4 px grid itself (size_multiple 1, tile_multiple 4): sides 1 and 2 (mod 4)
    "realcugan": ({"scale": 3, "pro": False}, "SEBlock", lambda m: m.conv2, (97, 142), 64, 40),
    # RCAN x2 (2 blocks of 3x3 convs, receptive field ~7 px): its channel attention is its only global path
    "rcan": ({"n_resblocks": 2}, "CALayer", lambda m: m.conv_du[2], (97, 142), 48, 24),
}


@pytest.mark.parametrize("name", sorted(GATED))
def test_tiled_equals_untiled_to_the_border_with_the_global_gates_held_constant(name):
    """Squeeze gates average over the whole image, so these models never tile exactly (docs/archs.md gives the gaps);
    with the gates held constant they must, also at the border of sides off their grid: the tiles start on the grid
    and the last one ends at the image edge, padded as the whole image is."""
    from test_layout import SMALL, perturbed

    over, kind, conv_of, (h, w), tile, overlap = GATED[name]
    model = perturbed({**SMALL[name], **over})
    _constant_gates(model, kind, conv_of)
    img = photo("astronaut", h, w, top=60, left=90)
    ref = upscale(model, img)
    out = upscale(model, img, tile=tile, overlap=overlap, seam="crop", tile_batch=4)
    assert out.shape == ref.shape == (h * model.scale, w * model.scale, 3)
    assert np.abs(out - ref).max() <= 1e-5
