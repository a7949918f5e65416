"""DAT training mode: jit-compiled forward and gradients equal torch's train mode (BatchNorm batch statistics and
running-stat updates), drop path only in training, and remat giving the same gradients as no remat."""
import numpy as np
from conftest import photo
from test_dat import REDUCED, jax_from_torch, torch_dat

import jax
import jax.numpy as jnp
from flax import nnx

# conv biases feeding a BatchNorm
BEFORE_BN_BIAS = ("dwconv.0.bias", "channel_interaction.1.bias", "spatial_interaction.0.bias")
CFG = dict(REDUCED["dat_2"], depth=[3, 1], num_heads=[2, 2])


def _batch(h=20, w=24):
    x = np.stack([photo("astronaut", h, w, top=100, left=190), photo("coffee", h, w, top=150, left=200)])
    y = np.stack([photo("astronaut", 3 * h, 3 * w, top=300, left=400), photo("coffee", 3 * h, 3 * w, top=200, left=300)])
    return x, y


def _split(model):
    return nnx.split(model, nnx.Param, ...)


@jax.jit
def _train_step(gd, params, rest, x, y):
    """L1 loss and its gradient w.r.t. the parameters; also returns the updated non-parameter state."""

    def loss_fn(p):
        # fresh Variables at this trace level (BatchNorm and the drop-path RNG counters are updated in the forward)
        m = nnx.merge(gd, p, jax.tree.map(lambda a: a, rest))
        loss = jnp.mean(jnp.abs(m(x) - y))
        return loss, nnx.state(m, nnx.Not(nnx.Param))

    (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, grads, new_rest


def _flat(state):
    from jaxsr.archs.bridge import EXPORTED, to_torch_layout, torch_key

    return {torch_key(p): to_torch_layout(p, np.asarray(v[...])) for p, v in nnx.to_flat_state(state)
            if isinstance(v, EXPORTED)}


def test_train_mode_forward_and_grads_match_torch():
    """Train mode (drop path 0): loss, every parameter gradient and the BatchNorm running stats equal torch's."""
    import torch

    x, y = _batch()
    tm = torch_dat(seed=11, drop_path_rate=0.0, **CFG)
    m, spec = jax_from_torch(tm, drop_path_rate=0.0)
    tm.train()
    out = tm(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    t_loss = (out - torch.from_numpy(y.transpose(0, 3, 1, 2))).abs().mean()
    t_loss.backward()
    m.train()
    gd, params, rest = _split(m)
    loss, grads, new_rest = _train_step(gd, params, rest, jnp.asarray(x), jnp.asarray(y))
    assert abs(float(loss) - float(t_loss.detach())) < 1e-6
    g = _flat(grads)
    worst = 0.0
    for name, p in tm.named_parameters():
        ref = p.grad.numpy()
        if ref.size == 0:  # embed_dim 24 gives DynamicPosBias a zero-width hidden layer, in torch too
            continue
        if name.endswith(BEFORE_BN_BIAS):  # train-mode BatchNorm removes them: true gradient 0, both ~1e-9 noise
            assert np.abs(g[name]).max() < 1e-6 and np.abs(ref).max() < 1e-6, name
            continue
        worst = max(worst, float(np.abs(g[name] - ref).max() / (np.abs(ref).max() + 1e-8)))
    print(f"train-mode grads: worst relative max diff {worst:.2e} over {len(g)} tensors")
    assert worst < 2e-4  # 1.01-1.03e-4 on some CPUs (float32 accumulation order), with the code of before and after the trainer split
    stats = _flat(new_rest)
    tsd = tm.state_dict()
    for k, v in tsd.items():
        if k.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(stats[k], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
        elif k.endswith("num_batches_tracked"):
            assert int(stats[k]) == int(v) == 1


def test_drop_path_only_in_training():
    x, y = _batch()
    tm = torch_dat(seed=12, **CFG)
    m, spec = jax_from_torch(tm, drop_path_rate=0.5)
    m0, _ = jax_from_torch(tm, drop_path_rate=0.0)

    @nnx.jit
    def fwd(model, x):
        return model(x)

    # eval (the default): drop path is off, outputs do not depend on the rng state and equal the rate-0 model
    a = np.asarray(fwd(m, jnp.asarray(x)))
    b = np.asarray(fwd(m, jnp.asarray(x)))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, np.asarray(fwd(m0, jnp.asarray(x))), atol=1e-6)
    # training: drop path active, one draw per sample, fresh keys per step, gradients finite under jit
    m.train()
    m0.train()
    gd, params, rest = _split(m)
    l1, g1, rest1 = _train_step(gd, params, rest, jnp.asarray(x), jnp.asarray(y))
    l2, g2, _ = _train_step(gd, params, rest1, jnp.asarray(x), jnp.asarray(y))
    l0, _, _ = _train_step(*_split(m0), jnp.asarray(x), jnp.asarray(y))
    assert np.isfinite(float(l1)) and all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(g1))
    assert float(l1) != float(l2) and float(l1) != float(l0)
    m.eval()
    np.testing.assert_array_equal(np.asarray(fwd(m, jnp.asarray(x))), a)


def test_remat_gives_same_gradients():
    x, y = _batch()
    tm = torch_dat(seed=13, **CFG)
    m, spec = jax_from_torch(tm, drop_path_rate=0.3)
    mc, _ = jax_from_torch(tm, drop_path_rate=0.3, use_chk=True)
    for model in (m, mc):
        model.train()
    l, g, r = _train_step(*_split(m), jnp.asarray(x), jnp.asarray(y))
    lc, gc, rc = _train_step(*_split(mc), jnp.asarray(x), jnp.asarray(y))
    assert abs(float(l) - float(lc)) < 1e-7
    top = max(float(np.abs(a).max()) for a in jax.tree.leaves(g) if a.size)
    worst = max(float(np.abs(a - b).max() / (np.abs(a).max() + 1e-4 * top))
                for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(gc)) if a.size)
    print(f"remat vs no remat: loss {float(l):.6f} / {float(lc):.6f}, worst relative grad diff {worst:.2e}")
    assert worst < 5e-5
    sa, sb = ({p: v[...] for p, v in nnx.to_flat_state(s) if isinstance(v, nnx.BatchStat)} for s in (r, rc))
    assert sa.keys() == sb.keys() and len(sa) > 0
    for p in sa:
        np.testing.assert_allclose(np.asarray(sa[p]), np.asarray(sb[p]), rtol=1e-6, atol=1e-7)


def test_cudnn_attention_lowers_for_gpu_without_materialising_attention(monkeypatch):
    """The bf16 GPU path, checked without a GPU: the train-mode gradient lowers for CUDA with every window
    attention in cuDNN's fused kernel (forward and backward, bias gradient included), and no N x N attention
    matrix that grows with the batch (the reference's (B*nW, h, N, N)) appears in the program; only the
    batch-free (1, nW*h, N, N) bias and its gradient do."""
    import re

    import jax._src.cudnn.fused_attention_stablehlo as fused

    from jaxsr.archs.dat import build, spec_for

    # this machine has no cuDNN; jax asks its version only to pick kernels, and lowering needs no device
    monkeypatch.setattr(fused, "check_cudnn_version", lambda: 91000)
    spec = spec_for("dat_2", embed_dim=24, depth=[3, 2], num_heads=[2, 4], attn_impl="cudnn", drop_path_rate=0.1)
    m = build(spec, dtype=jnp.bfloat16)
    m.train()
    B, L = 3, 32  # windows 8x32 and 32x8: nW = 4 per branch, N = 256 tokens, 1 or 2 heads per branch
    x = jax.ShapeDtypeStruct((B, L, L, 3), jnp.float32)
    y = jax.ShapeDtypeStruct((B, 4 * L, 4 * L, 3), jnp.float32)
    text = _train_step.trace(*_split(m), x, y).lower(lowering_platforms=("cuda",)).as_text()
    n_fwd = len(re.findall(r"custom_call @__cudnn\$fmhaScaleBiasSoftmax\(", text))
    n_bwd = len(re.findall(r"custom_call @__cudnn\$fmhaScaleBiasSoftmaxBackward\(", text))
    branches = 2 * (2 + 1)  # two per spatial block: blocks 0 and 2 of group 0, block 0 of group 1
    assert n_fwd == branches and n_bwd == branches
    # the only N x N tensors are masks and biases (at most nW * heads = 8 of them); batch-sized logits would be
    # at least B * nW = 12
    nn_shapes = {s for s in re.findall(r"tensor<((?:\d+x)+)(?:bf16|f32)>", text) if s.endswith("256x256x")}
    for s in nn_shapes:
        lead = int(np.prod([int(d) for d in s.split("x")[:-3]]))
        assert lead <= 4 * 2, f"an attention-sized tensor {s} grows with the batch"
    print(f"cuDNN fused attention: {n_fwd} forward / {n_bwd} backward calls for {branches} branches; "
          f"N x N tensors: {sorted(nn_shapes)}")


REMAT_MEMORY = """
import json
import jax, jax.numpy as jnp
from jaxsr import parallel

assert parallel.use_memory_schedule({"use_chk": True})  # before any jax computation
from jaxsr.archs.dat import build, spec_for
from test_dat_train import _split, _train_step


def temp_mib(use_chk):
    m = build(spec_for("dat_2", embed_dim=16, depth=[2, 2], num_heads=[2, 2], scale=2, use_chk=use_chk))
    m.train()
    x, y = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32), jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    return _train_step.trace(*_split(m), x, y).lower().compile().memory_analysis().temp_size_in_bytes / 2**20


print(json.dumps([temp_mib(False), temp_mib(True)]))
"""


def test_remat_lowers_compiled_memory():
    """remat (use_chk) must lower the train step's peak memory as XLA compiles it. On CPU it does so only under
    XLA:CPU's memory schedule, which run_train picks for remat models (jaxsr.parallel.use_memory_schedule); under
    the default schedule both come out the same. A fresh process, since XLA reads the setting once."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.join(root, "tests")])
    out = subprocess.run([sys.executable, "-c", REMAT_MEMORY], capture_output=True, text=True, cwd=root, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    plain, remat = json.loads(out.stdout.splitlines()[-1])
    print(f"compiled temp memory: {plain:.0f} MiB without remat, {remat:.0f} MiB with remat")
    assert remat < 0.85 * plain
