"""The inputs of the TOPIQ-FR golden check, made the same way wherever they are made (numpy only, no torch, no jaxsr):

- `state_dict(seed)`: a full TOPIQ-FR state dict in pyiqa's CFANet layout (timm resnet50 `semantic_model.*`, the
  gates, reductions, attention layers, score MLP, position embeddings), every tensor drawn from
  numpy.random.default_rng(seed) in the order listed here, scaled so that activations stay of order one through the
  50 layers and the score depends on the images; nothing sits at CFANet's initial values (BatchNorm weights are not
  1, biases and running means not 0, LayerNorms perturbed, embeddings ~25x their init scale).
- `pairs()`: (name, distorted, reference) pairs of real photographs (scikit-image's astronaut, coffee, chelsea)
  with numpy-made distortions, as 8-bit values / 255 (what jaxsr.evaluate feeds its perceptual metrics).

make_golden.py ran pyiqa's own module on these; test_topiq.py runs jaxsr on them and compares with expected.json.
"""
import numpy as np

LEVELS = (64, 256, 512, 1024, 2048)
DIM, FFN = 256, 1024


def layout():
    """[(key, shape, kind)] of pyiqa 0.1.16's CFANet(semantic_model_name='resnet50', use_ref=True) state dict."""
    out = [("h_emb", (1, DIM // 2, 32, 1), "emb"), ("w_emb", (1, DIM // 2, 1, 32), "emb")]

    def bn(key, c, last=False):
        out.extend([(f"{key}.weight", (c,), "bn_w_last" if last else "bn_w"), (f"{key}.bias", (c,), "bias"),
                    (f"{key}.running_mean", (c,), "bn_mean"), (f"{key}.running_var", (c,), "bn_var"),
                    (f"{key}.num_batches_tracked", (), "count")])

    out.append(("semantic_model.conv1.weight", (64, 3, 7, 7), "conv"))
    bn("semantic_model.bn1", 64)
    cin = 64
    for s, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for i in range(blocks):
            key = f"semantic_model.layer{s + 1}.{i}"
            out.append((f"{key}.conv1.weight", (width, cin, 1, 1), "conv"))
            bn(f"{key}.bn1", width)
            out.append((f"{key}.conv2.weight", (width, width, 3, 3), "conv"))
            bn(f"{key}.bn2", width)
            out.append((f"{key}.conv3.weight", (4 * width, width, 1, 1), "conv"))
            bn(f"{key}.bn3", 4 * width, last=True)
            if i == 0:
                out.append((f"{key}.downsample.0.weight", (4 * width, cin, 1, 1), "conv"))
                bn(f"{key}.downsample.1", 4 * width, last=True)
            cin = 4 * width

    def attn(key):
        out.extend([(f"{key}.in_proj_weight", (3 * DIM, DIM), "linear"), (f"{key}.in_proj_bias", (3 * DIM,), "bias"),
                    (f"{key}.out_proj.weight", (DIM, DIM), "linear"), (f"{key}.out_proj.bias", (DIM,), "bias")])

    def layer(key, attns, norms):
        for a in attns:
            attn(f"{key}.{a}")
        out.extend([(f"{key}.linear1.weight", (FFN, DIM), "linear"), (f"{key}.linear1.bias", (FFN,), "bias"),
                    (f"{key}.linear2.weight", (DIM, FFN), "linear"), (f"{key}.linear2.bias", (DIM,), "bias")])
        for n in norms:
            out.extend([(f"{key}.{n}.weight", (DIM,), "ln_w"), (f"{key}.{n}.bias", (DIM,), "bias")])

    for i in range(len(LEVELS)):
        layer(f"sa_attn_blks.{i}.layers.0", ("self_attn",), ("norm1", "norm2"))
    for i, c in enumerate(LEVELS):
        out.extend([(f"dim_reduce.{i}.0.weight", (DIM, 3 * c, 1, 1), "conv_lin"), (f"dim_reduce.{i}.0.bias", (DIM,), "bias")])
    for i, c in enumerate(LEVELS):
        out.extend([(f"weight_pool.{i}.0.weight", (64, c, 1, 1), "conv"), (f"weight_pool.{i}.0.bias", (64,), "bias"),
                    (f"weight_pool.{i}.2.weight", (64, 64, 3, 3), "conv"), (f"weight_pool.{i}.2.bias", (64,), "bias"),
                    (f"weight_pool.{i}.4.weight", (1, 64, 3, 3), "conv_lin"), (f"weight_pool.{i}.4.bias", (1,), "bias")])
    for i in range(len(LEVELS) - 1):
        layer(f"attn_blks.{i}.layers.0", ("self_attn", "multihead_attn"), ("norm1", "norm2", "norm3"))
    layer("attn_pool", ("self_attn",), ("norm1", "norm2"))
    out.extend([("score_linear.0.weight", (DIM,), "ln_w"), ("score_linear.0.bias", (DIM,), "bias"),
                ("score_linear.1.weight", (DIM, DIM), "linear"), ("score_linear.1.bias", (DIM,), "bias"),
                ("score_linear.3.weight", (DIM,), "ln_w"), ("score_linear.3.bias", (DIM,), "bias"),
                ("score_linear.4.weight", (DIM, DIM), "linear"), ("score_linear.4.bias", (DIM,), "bias"),
                ("score_linear.6.weight", (1, DIM), "linear"), ("score_linear.6.bias", (1,), "bias")])
    return out


def _draw(rng, shape, kind):
    n = int(np.prod(shape))
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if kind == "count":
        return np.array(1000 + rng.integers(0, 1000), np.int64)
    if kind == "emb":  # CFANet's init: trunc_normal(std 0.02)
        return (rng.standard_normal(n) * 0.5).reshape(shape).astype(np.float32)
    if kind == "conv":  # He: ReLU/GELU follows
        return (rng.standard_normal(n) * np.sqrt(2.0 / fan_in)).reshape(shape).astype(np.float32)
    if kind in ("linear", "conv_lin"):
        return (rng.standard_normal(n) * np.sqrt(1.0 / fan_in)).reshape(shape).astype(np.float32)
    if kind == "bias":
        return (rng.standard_normal(n) * 0.05).reshape(shape).astype(np.float32)
    if kind == "bn_w":
        return rng.uniform(0.6, 1.4, n).reshape(shape).astype(np.float32)
    if kind == "bn_w_last":  # the residual branch's last BatchNorm (and the projection's): keeps 16 blocks of sums tame
        return rng.uniform(0.15, 0.45, n).reshape(shape).astype(np.float32)
    if kind == "bn_mean":
        return (rng.standard_normal(n) * 0.2).reshape(shape).astype(np.float32)
    if kind == "bn_var":
        return rng.uniform(0.5, 2.0, n).reshape(shape).astype(np.float32)
    if kind == "ln_w":
        return rng.uniform(0.8, 1.2, n).reshape(shape).astype(np.float32)
    raise ValueError(kind)


def state_dict(seed=20240601):
    """{key: numpy array} in pyiqa's CFANet layout, every value drawn from the seed (see the module docstring)."""
    rng = np.random.default_rng(seed)
    return {key: _draw(rng, shape, kind) for key, shape, kind in layout()}


# ------------------------------------------------------------------------------------------- images


def _photo(name, h, w, top, left):
    import skimage.data

    img = getattr(skimage.data, name)()[..., :3]
    return np.ascontiguousarray(img[top:top + h, left:left + w]).astype(np.float64) / 255.0


def _box3(img):
    """3x3 box blur, edges replicated, as plain float64 sums (the same bits on every machine)."""
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    return sum(p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0


def _noise(img, seed, sigma):
    return img + np.random.default_rng(seed).standard_normal(img.shape) * sigma


def _pixelate(img):
    h, w = img.shape[:2]
    small = img[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3))
    out = img.copy()
    out[: h // 2 * 2, : w // 2 * 2] = small.repeat(2, 0).repeat(2, 1)
    return out


def to8(img):
    """As 8-bit values / 255, float32: what jaxsr.evaluate gives its perceptual metrics."""
    return (np.clip(np.round(img * 255.0), 0, 255) / 255.0).astype(np.float32)


def pairs():
    """[(name, distorted, reference)], HxWx3 float32 in [0, 1] (8-bit values)."""
    astro = _photo("astronaut", 64, 64, 60, 160)
    coffee = _photo("coffee", 64, 64, 100, 200)
    # odd sizes (ResNet levels 38x7, 19x4, 10x2, 5x1, 3x1): pooling bins that do not divide, and layer3, 1 px wide
    # like layer4, stays unpooled (5 tokens against 3)
    strip = _photo("chelsea", 75, 13, 40, 150)
    astro_d = _noise(_box3(astro), 1, 0.03)
    return [
        ("astronaut_blur_noise", to8(astro_d), to8(astro)),
        ("coffee_noise", to8(_noise(coffee, 2, 0.05)), to8(coffee)),
        ("astronaut_identical", to8(astro), to8(astro)),
        ("astronaut_swapped", to8(astro), to8(astro_d)),
        ("chelsea_75x13_pixelate", to8(_pixelate(strip)), to8(strip)),
        ("chelsea_75x13_blur_noise", to8(_noise(_box3(strip), 3, 0.02)), to8(strip)),
    ]


# the backbone values make_golden.py records for the reference image of the first pair: (level, y, x, channel)
PROBES = [(0, 0, 0, 0), (0, 31, 31, 63), (0, 17, 5, 20), (1, 0, 15, 255), (1, 9, 3, 102), (2, 7, 0, 511), (2, 3, 4, 9),
          (3, 0, 0, 0), (3, 3, 2, 1023), (3, 2, 1, 500), (4, 0, 0, 2046), (4, 1, 1, 0), (4, 1, 0, 1236)]
