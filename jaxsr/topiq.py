"""TOPIQ-FR (Chen et al., "TOPIQ: A Top-down Approach from Semantics to Distortions for Image Quality Assessment",
IEEE TIP 2024) as an evaluation metric, transcribed from the formulas of pyiqa 0.1.16's `topiq_fr` (CFANet in
pyiqa/archs/topiq_arch.py, with timm's `resnet50` features as the semantic backbone). A quality score: higher is better.

Per image pair (distorted = the SR output, reference = the HR), both ImageNet-normalised:
  1. ResNet50 (BatchNorm with its running statistics) taps after the stem's ReLU and after layer1..layer4: five levels
     of 64, 256, 512, 1024, 2048 channels, strides 2..32.
  2. Per level, diff = sqrt((d - r)^2 + 1e-12); feat = concat(d, r, diff) * sigmoid-gate(diff) (conv1x1 -> 64, GELU,
     conv3x3, GELU, conv3x3 -> 1, sigmoid); adaptive average pooling to the deepest level's size when the level is
     larger in both dimensions; conv1x1 -> 256 and GELU; tokens plus a learnt 32x32 position embedding resized
     (bicubic, align_corners=False) to the level's size; one pre-norm self-attention layer per level (4 heads).
  3. Coarse to fine: the deepest level's tokens query each shallower level in turn (a pre-norm cross-attention layer
     each), one more self-attention layer, the mean over tokens, and an MLP (LayerNorm, Linear, GELU, LayerNorm,
     Linear, GELU, Linear -> 1): the score.
GELU is the exact (erf) one; LayerNorm and BatchNorm eps 1e-5; dropout is off (evaluation).
The weight file comes from the user and is read by the bridge's safe reader; nothing is downloaded, nothing is random.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr.errors import WeightsError
from jaxsr.weights import read_state_dict

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LEVELS = (64, 256, 512, 1024, 2048)  # channels of the five backbone taps (timm's feature_info for resnet50)
_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # ResNet50: (width, blocks, stride of the first block)
DIM, HEADS, FFN = 256, 4, 1024  # topiq_fr's inter_dim, num_heads, min(4 * inter_dim, 2048)
EPS = 1e-5
HIGHEST = jax.lax.Precision.HIGHEST

HOW_TO_GET = (
    "TOPIQ-FR needs one file, never downloaded by jaxsr: pyiqa's cfanet_fr_kadid_res50-2c4cc61d.pth (its `topiq_fr` "
    "metric; cfanet_fr_pipal_res50-69bbe5ba.pth, `topiq_fr-pipal`, fits too), from the IQA-PyTorch-Weights files of "
    "chaofengc/IQA-PyTorch, or ~/.cache/torch/hub/pyiqa/ after pyiqa.create_metric('topiq_fr') used it once."
)


# ------------------------------------------------------------------------------------------- layers


def _conv(x, w, stride=1, pad=0):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _layer_norm(x, p):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + EPS) * p["w"] + p["b"]


def _linear(x, p):
    return jnp.einsum("...i,oi->...o", x, p["w"], precision=HIGHEST) + p["b"]


def _attention(q_in, kv_in, p):
    """torch's nn.MultiheadAttention (packed in-projection, HEADS heads), on (B, L, DIM) tokens."""
    w, b = p["in_w"], p["in_b"]
    q = jnp.einsum("bli,oi->blo", q_in, w[:DIM], precision=HIGHEST) + b[:DIM]
    k = jnp.einsum("bli,oi->blo", kv_in, w[DIM:2 * DIM], precision=HIGHEST) + b[DIM:2 * DIM]
    v = jnp.einsum("bli,oi->blo", kv_in, w[2 * DIM:], precision=HIGHEST) + b[2 * DIM:]
    split = lambda t: t.reshape(*t.shape[:2], HEADS, DIM // HEADS)  # noqa: E731
    q, k, v = split(q) * (DIM // HEADS) ** -0.5, split(k), split(v)
    att = jax.nn.softmax(jnp.einsum("blhd,bmhd->bhlm", q, k, precision=HIGHEST), axis=-1)
    out = jnp.einsum("bhlm,bmhd->blhd", att, v, precision=HIGHEST).reshape(q_in.shape)
    return _linear(out, p["out"])


def _feed_forward(x, p):
    return _linear(_gelu(_linear(x, p["linear1"])), p["linear2"])


def _self_attention_layer(x, p):
    """pyiqa's TransformerEncoderLayer.forward: pre-norm self-attention, then a pre-norm feed-forward."""
    h = _layer_norm(x, p["norm1"])
    x = x + _attention(h, h, p["attn"])
    return x + _feed_forward(_layer_norm(x, p["norm2"]), p)


def _cross_attention_layer(tgt, memory, p):
    """pyiqa's TransformerDecoderLayer.forward: its self-attention is never used; norm2 on the memory, norm1 on the
    queries, cross-attention, then a pre-norm (norm3) feed-forward."""
    tgt = tgt + _attention(_layer_norm(tgt, p["norm1"]), _layer_norm(memory, p["norm2"]), p["attn"])
    return tgt + _feed_forward(_layer_norm(tgt, p["norm3"]), p)


# ------------------------------------------------------------------------------------------- resizing matrices


def _adaptive_pool_matrix(n_in, n_out):
    """torch's adaptive_avg_pool along one axis: output i averages [floor(i n/m), ceil((i+1) n/m))."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _bicubic_matrix(n_in, n_out, a=-0.75):
    """torch's upsample_bicubic2d along one axis (align_corners=False, no antialiasing, edge indices clamped)."""
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        src = n_in / n_out * (i + 0.5) - 0.5
        i0 = int(np.floor(src))
        t = src - i0
        ws = (((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
              ((a + 2) * t - (a + 3)) * t * t + 1,
              ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
              ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a)
        for k, wk in enumerate(ws):
            m[i, min(max(i0 - 1 + k, 0), n_in - 1)] += wk
    return m.astype(np.float32)


def _resize(x, mh, mw):
    """NHWC x resized by per-axis matrices (out, in)."""
    return jnp.einsum("oh,bhwc,pw->bopc", jnp.asarray(mh), x, jnp.asarray(mw), precision=HIGHEST)


# ------------------------------------------------------------------------------------------- the network


def _bn(x, q):
    return x * q["scale"] + q["shift"]  # eval BatchNorm, folded at load time


def _bottleneck(x, q, stride):
    h = jax.nn.relu(_bn(_conv(x, q["conv1"]), q["bn1"]))
    h = jax.nn.relu(_bn(_conv(h, q["conv2"], stride, 1), q["bn2"]))
    h = _bn(_conv(h, q["conv3"]), q["bn3"])
    return jax.nn.relu(h + (_bn(_conv(x, q["down"], stride), q["down_bn"]) if "down" in q else x))


def _resnet50(x, p):
    """The five TOPIQ levels of an NHWC batch (already normalised): stem ReLU, layer1..layer4. Each stage's repeated
    blocks run as one scanned body (their weights stacked at load time): the same arithmetic, a quarter of the code to
    compile."""
    x = jax.nn.relu(_bn(_conv(x, p["conv1"], 2, 3), p["bn1"]))
    feats = [x]
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), [(0, 0), (1, 1), (1, 1), (0, 0)])
    for (_, _, stride), first, rest in zip(_STAGES, p["first"], p["rest"]):
        x = _bottleneck(x, first, stride)
        x, _ = jax.lax.scan(lambda h, q: (_bottleneck(h, q, 1), None), x, rest)
        feats.append(x)
    return feats


def _gate(diff, p):
    h = _gelu(_conv(diff, p[0]["w"]) + p[0]["b"])
    h = _gelu(_conv(h, p[1]["w"], 1, 1) + p[1]["b"])
    # the 64 -> 1 convolution as the first of 8 outputs (7 zero filters): the same numbers, and XLA:CPU compiles it
    # with the sigmoid several times faster than a one-channel convolution
    w = jnp.pad(p[2]["w"], ((0, 0), (0, 0), (0, 0), (0, 7)))
    return jax.nn.sigmoid(_conv(h, w, 1, 1)[..., :1] + p[2]["b"])


def _level_tokens(gate, reduce, pos, d, r, th, tw):
    """One level's (N, h*w, DIM) tokens before its self-attention: gated (dist, ref, diff), pooled to the deepest
    level's th x tw where larger in both dimensions, reduced, plus the resized position embedding."""
    diff = jnp.sqrt((d - r) ** 2 + 1e-12)
    feat = jnp.concatenate([d, r, diff], axis=-1) * _gate(diff, gate)
    h, w = feat.shape[1:3]
    if h > th and w > tw:
        feat = _resize(feat, _adaptive_pool_matrix(h, th), _adaptive_pool_matrix(w, tw))
        h, w = th, tw
    t = _gelu(_conv(feat, reduce["w"]) + reduce["b"]) + _resize(pos, _bicubic_matrix(32, h), _bicubic_matrix(32, w))
    return t.reshape(t.shape[0], h * w, DIM)


@jax.jit
def _levels(p, x):
    """The five backbone levels of an NHWC batch in [0, 1]."""
    return _resnet50((x - jnp.asarray(MEAN)) / jnp.asarray(STD), p)


@jax.jit
def _tokens(p, levels):
    """Every level's tokens, deepest first, from the levels of [distorted images..., reference images...]."""
    n = levels[0].shape[0] // 2
    th, tw = levels[-1].shape[1:3]
    return [_level_tokens(p["gate"][i], p["reduce"][i], p["pos"], levels[i][:n], levels[i][n:], th, tw)
            for i in reversed(range(len(LEVELS)))]


@jax.jit
def _head(p, tokens):
    x = jnp.mean(_self_attention_layer(tokens, p["pool"]), axis=1)
    x = _gelu(_linear(_layer_norm(x, p["norm1"]), p["linear1"]))
    x = _gelu(_linear(_layer_norm(x, p["norm2"]), p["linear2"]))
    return _linear(x, p["linear3"])[:, 0]


_self_attention = jax.jit(_self_attention_layer)
_cross_attention = jax.jit(_cross_attention_layer)


def _score(p, dist, ref):
    """TOPIQ-FR of NHWC batches in [0, 1] (dist: the images judged, ref: their references); shape (N,). Jitted in
    pieces, so that the attention layers, whose token counts mostly agree, share their compilations."""
    levels = _levels(p["backbone"], jnp.concatenate([dist, ref]))  # one backbone pass over both
    tokens = [_self_attention(t, p["self"][i]) for i, t in zip(reversed(range(len(LEVELS))), _tokens(p, levels))]
    query = tokens[0]  # the deepest level asks the shallower ones, coarse to fine
    for i, memory in enumerate(tokens[1:]):
        query = _cross_attention(query, memory, p["cross"][i])
    return _head({**p["head"], "pool": p["pool"]}, query)


# ------------------------------------------------------------------------------------------- the weight file


class _Reader:
    """Takes tensors from pyiqa's CFANet state dict by name, checking each shape; one clear line when one is off."""

    def __init__(self, sd, path):
        self.sd, self.path = sd, path

    def __call__(self, key, shape):
        v = self.sd.get(key)
        if v is None:
            raise WeightsError(f"{self.path}: {key} missing, not pyiqa's TOPIQ-FR (CFANet, ResNet50) weights. {HOW_TO_GET}")
        if tuple(v.shape) != tuple(shape):
            raise WeightsError(f"{self.path}: {key} is {tuple(v.shape)}, TOPIQ-FR has {tuple(shape)}: not pyiqa's "
                               f"topiq_fr (CFANet, ResNet50, 256 dims) weights. {HOW_TO_GET}")
        if not np.issubdtype(v.dtype, np.floating) and v.dtype.name != "bfloat16":
            raise WeightsError(f"{self.path}: {key} holds {v.dtype} values, not weights. {HOW_TO_GET}")
        return np.asarray(v, np.float32)

    def conv(self, key, cout, cin, k, bias=True):
        w = self(f"{key}.weight", (cout, cin, k, k)).transpose(2, 3, 1, 0)  # OIHW -> HWIO
        return {"w": w, "b": self(f"{key}.bias", (cout,))} if bias else w

    def bn(self, key, c):
        w, b = self(f"{key}.weight", (c,)), self(f"{key}.bias", (c,))
        mean, var = self(f"{key}.running_mean", (c,)), self(f"{key}.running_var", (c,))
        scale = w / np.sqrt(var + np.float32(EPS))
        return {"scale": scale, "shift": b - mean * scale}

    def linear(self, key, cout, cin):
        return {"w": self(f"{key}.weight", (cout, cin)), "b": self(f"{key}.bias", (cout,))}

    def norm(self, key):
        return {"w": self(f"{key}.weight", (DIM,)), "b": self(f"{key}.bias", (DIM,))}

    def attention(self, key):
        return {"in_w": self(f"{key}.in_proj_weight", (3 * DIM, DIM)), "in_b": self(f"{key}.in_proj_bias", (3 * DIM,)),
                "out": self.linear(f"{key}.out_proj", DIM, DIM)}

    def layer(self, key, attn, norms):
        return {"attn": self.attention(f"{key}.{attn}"), "linear1": self.linear(f"{key}.linear1", FFN, DIM),
                "linear2": self.linear(f"{key}.linear2", DIM, FFN), **{n: self.norm(f"{key}.{n}") for n in norms}}


def _what_it_is(sd, path):
    """Refuse, by name, the files that are not TOPIQ-FR on ResNet50: other networks, pyiqa's NR/IAA/Swin/CLIP TOPIQs."""
    if "h_emb" not in sd or not any(k.startswith(("dim_reduce.", "weight_pool.")) for k in sd):
        raise WeightsError(f"{path} holds no TOPIQ weights (no h_emb/dim_reduce/weight_pool; keys: "
                           f"{', '.join(list(sd)[:4])}): not pyiqa's CFANet. {HOW_TO_GET}")
    if any(".splitconv." in k for k in sd):
        raise WeightsError(f"{path} is a no-reference TOPIQ (topiq_nr/topiq_iaa, gated pooling on the image alone): jaxsr "
                           f"measures the full-reference TOPIQ-FR. {HOW_TO_GET}")
    if "semantic_model.conv1.weight" not in sd:
        raise WeightsError(f"{path} is a TOPIQ on another backbone than ResNet50 (Swin or CLIP: no "
                           f"semantic_model.conv1.weight); jaxsr measures topiq_fr (ResNet50). {HOW_TO_GET}")


def _params(sd, path):
    sd = {k.removeprefix("net."): v for k, v in sd.items()}  # pyiqa's InferenceModel.state_dict() prefixes its net
    _what_it_is(sd, path)
    r = _Reader(sd, path)
    bb = "semantic_model"
    backbone = {"conv1": r.conv(f"{bb}.conv1", 64, 3, 7, bias=False), "bn1": r.bn(f"{bb}.bn1", 64), "first": [], "rest": []}
    cin = 64
    for s, (width, blocks, _) in enumerate(_STAGES):
        stage = []
        for i in range(blocks):
            key = f"{bb}.layer{s + 1}.{i}"
            q = {"conv1": r.conv(f"{key}.conv1", width, cin, 1, bias=False), "bn1": r.bn(f"{key}.bn1", width),
                 "conv2": r.conv(f"{key}.conv2", width, width, 3, bias=False), "bn2": r.bn(f"{key}.bn2", width),
                 "conv3": r.conv(f"{key}.conv3", 4 * width, width, 1, bias=False), "bn3": r.bn(f"{key}.bn3", 4 * width)}
            if i == 0:
                q["down"] = r.conv(f"{key}.downsample.0", 4 * width, cin, 1, bias=False)
                q["down_bn"] = r.bn(f"{key}.downsample.1", 4 * width)
            stage.append(q)
            cin = 4 * width
        backbone["first"].append(stage[0])
        backbone["rest"].append(jax.tree.map(lambda *a: np.stack(a), *stage[1:]))
    h = r("h_emb", (1, DIM // 2, 32, 1))[0, :, :, 0]  # (128, 32): one vector per row
    w = r("w_emb", (1, DIM // 2, 1, 32))[0, :, 0, :]  # (128, 32): one vector per column
    pos = np.concatenate([np.broadcast_to(h.T[:, None, :], (32, 32, DIM // 2)),
                          np.broadcast_to(w.T[None, :, :], (32, 32, DIM // 2))], axis=-1)[None]  # NHWC (1, 32, 32, 256)
    return jax.device_put({
        "backbone": backbone,
        "pos": np.ascontiguousarray(pos),
        "gate": [[r.conv(f"weight_pool.{i}.0", 64, c, 1), r.conv(f"weight_pool.{i}.2", 64, 64, 3),
                  r.conv(f"weight_pool.{i}.4", 1, 64, 3)] for i, c in enumerate(LEVELS)],
        "reduce": [r.conv(f"dim_reduce.{i}.0", DIM, 3 * c, 1) for i, c in enumerate(LEVELS)],
        "self": [r.layer(f"sa_attn_blks.{i}.layers.0", "self_attn", ("norm1", "norm2")) for i in range(len(LEVELS))],
        "cross": [r.layer(f"attn_blks.{i}.layers.0", "multihead_attn", ("norm1", "norm2", "norm3"))
                  for i in range(len(LEVELS) - 1)],
        "pool": r.layer("attn_pool", "self_attn", ("norm1", "norm2")),
        "head": {"norm1": r.norm("score_linear.0"), "linear1": r.linear("score_linear.1", DIM, DIM),
                 "norm2": r.norm("score_linear.3"), "linear2": r.linear("score_linear.4", DIM, DIM),
                 "linear3": r.linear("score_linear.6", 1, DIM)},
    })


def read_topiq(path):
    """The parameters of a TOPIQ-FR weight file (pyiqa's .pth, wrapped in {'params': ...} or not, or .safetensors)."""
    if not os.path.isfile(path):
        raise WeightsError(f"TOPIQ weights file {path!r} not found. {HOW_TO_GET}")
    sd, _ = read_state_dict(path)
    return _params(sd, path)


def features(params, *images):
    """The five backbone levels (NHWC, one batch entry per image) of HxWx3 images in [0, 1]: what checks look into.
    Given a (distorted, reference) pair, it reuses the scoring's compilation."""
    return _levels(params["backbone"], jnp.stack([jnp.asarray(x, jnp.float32) for x in images]))


def load_topiq(path):
    """A function (sr, hr) -> TOPIQ-FR score (float, higher = better quality) for HxWx3 float images in [0, 1]."""
    params = read_topiq(path)

    def topiq(sr, hr):
        sr, hr = jnp.asarray(sr, jnp.float32), jnp.asarray(hr, jnp.float32)
        if sr.shape != hr.shape:
            raise ValueError(f"TOPIQ-FR compares images of one shape, got {sr.shape} and {hr.shape}")
        return float(_score(params, sr[None], hr[None])[0])

    topiq.net = "topiq_fr"
    return topiq
