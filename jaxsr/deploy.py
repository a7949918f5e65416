"""ONNX export: a jaxsr generator as one `.onnx` file for onnxruntime, chaiNNer and other ONNX runtimes.

The graph takes `input`, NCHW float32 RGB in [0, 1], and returns `output`, NCHW float32 `scale` times larger and
unclipped: the contract of the model's `.pth` under PyTorch, which chaiNNer feeds the same way. Batch, height and
width are dynamic unless fixed. Like `jaxsr.upscale`, the graph reflect-pads the bottom/right to the model's
`size_multiple` (RRDB x2 and x1 run on pixel-unshuffled inputs) and crops the output back, so any size at least
`size_multiple` runs. fp16/bf16 files compute as jaxsr's own fp16/bf16 models do (weights stored in that type;
the steps the model keeps in float32, such as attention logits, stay float32); their input and output stay float32.
A generator with a condition (`Arch.condition`: SFT-Net's 'seg') takes it as a second input of that name, NCHW float32
`cond_ch` channels at the output size (the class probabilities); `metadata_props` then record `condition`.

The graph is the model's jaxpr lowered by `jaxsr.jaxpr_onnx`; exporting needs `onnx`, verifying `onnxruntime`,
neither torch. `metadata_props` record `arch`, `scale`, `in_ch`, `out_ch`, `precision`, `size_multiple` and
`jaxsr_spec` (the spec as JSON); `read_metadata` reads them back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxsr
from jaxsr import archs
from jaxsr.files import atomic_write
from jaxsr.jaxpr_onnx import ExportError, Graph, lower, lowered, onnx_type, primitives, require_onnx

OPSETS = range(17, 24)  # 17: the oldest onnxruntime/chaiNNer releases still in use read it; 23: ONNX 1.18+
DEFAULT_OPSET, BF16_OPSET = 17, 22  # Conv accepts bfloat16 from opset 22
PRECISIONS = {"fp32": jnp.float32, "fp16": jnp.float16, "bf16": jnp.bfloat16}
# verification bounds against jaxsr's float32 forward: max |diff| for fp32 files, PSNR (dB) for the others
FP32_MAX_DIFF, MIN_PSNR = 1e-3, {"fp16": 40.0, "bf16": 30.0}
VERIFY_SIZE = (61, 83)  # a crop of a real photograph whose sides are multiples of nothing a model pads to
NAMES = ("input", "output")


@dataclass(frozen=True)
class Verification:
    """onnxruntime (CPU) against jaxsr's float32 forward on a real photograph; `skipped` says why it could not run."""

    size: tuple
    max_abs: float | None = None
    psnr: float | None = None
    skipped: str | None = None

    def line(self):
        if self.skipped:
            return f"verify: skipped: {self.skipped}"
        h, w = self.size
        psnr = "inf" if self.psnr == float("inf") else f"{self.psnr:.1f}"
        return (f"verify: onnxruntime {_ort_version()} CPU vs jaxsr float32 on a {h}x{w} crop of a photograph: "
                f"max |diff| {self.max_abs:.2e}, PSNR {psnr} dB")


@dataclass(frozen=True)
class Export:
    """What `export_onnx` wrote."""

    path: str
    spec: dict
    precision: str
    opset: int
    dynamic: tuple  # the input axes left dynamic: of "batch", "height", "width"
    nbytes: int
    verification: Verification | None


def _ort_version():
    import onnxruntime

    return onnxruntime.__version__


def _prepare(model, spec, dtype):
    """A copy of `model` built for `dtype` in eval mode, with XLA's attention and no remat (export traces once,
    forward only; cuDNN attention has no ONNX form)."""
    fresh = archs.build(spec, rngs=nnx.Rngs(0), dtype=dtype)
    nnx.update(fresh, nnx.state(model))
    if hasattr(model, "branch"):  # the output a multi-output model (PPON) exports
        fresh.branch = model.branch
    for _, m in nnx.iter_modules(fresh):
        if hasattr(m, "attn_impl"):
            m.attn_impl = "xla"
        if getattr(m, "use_chk", False):
            m.use_chk = False
    fresh.eval()
    return fresh


def _core(model):
    """NCHW (sides multiples of size_multiple) -> NCHW: the model's forward on jaxsr's NHWC layout (and a conditioned
    generator's NCHW condition)."""
    gdef, state = nnx.split(model)

    def core(x, *cond):
        cond = jnp.transpose(cond[0], (0, 2, 3, 1)) if cond else None
        y = archs.forward(nnx.merge(gdef, state), jnp.transpose(x, (0, 2, 3, 1)), cond=cond)
        return jnp.transpose(y, (0, 3, 1, 2))

    return core


def _trace(core, in_ch, m, batch, static, arch, cond_ch=0, s=1):
    """The jaxpr of `core` at the input size: symbols b, h, w for what is dynamic (sides m*h, m*w); with `cond_ch`, a
    condition of that many channels at s times the input size follows the input."""
    def args(shape):
        cond = [jax.ShapeDtypeStruct((shape[0], cond_ch, s * shape[2], s * shape[3]), jnp.float32)] if cond_ch else []
        return [jax.ShapeDtypeStruct(shape, jnp.float32), *cond]

    if static is None:
        b, hs, ws = jax.export.symbolic_shape(f"b, {m}*h, {m}*w" if m > 1 else "b, h, w")
        shape = (batch or b, in_ch, hs, ws)
    else:
        (b,) = jax.export.symbolic_shape("b")
        shape = (batch or b, in_ch, -(-static[0] // m) * m, -(-static[1] // m) * m)
    try:
        return jax.make_jaxpr(core)(*args(shape))
    except Exception as e:  # what a forward raises on symbolic sizes varies: TypeError, ValueError, JAX's own
        if static is not None:
            raise
        jax.make_jaxpr(core)(*args((1, in_ch, 16 * m, 16 * m)))  # a real bug raises here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{arch} cannot be exported with a dynamic height and width: its forward needs concrete "
                          f"sizes while tracing ({type(e).__name__}: {first[:200]}). Export a fixed size instead "
                          "(--static HxW)") from None


def build_graph(model, spec, *, precision="fp32", static=None, batch=None, opset=None):
    """(onnx.ModelProto, the dynamic axes) for a generator; raises ExportError naming what cannot be exported."""
    onnx = require_onnx()
    record = archs.get(spec.get("arch"))
    if record.kind != "generator":
        raise ExportError(f"{record.what} is a {record.kind}; only generators are exported to ONNX")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    opset = opset or (BF16_OPSET if precision == "bf16" else DEFAULT_OPSET)
    if opset not in OPSETS:
        raise ExportError(f"opset {opset} is not supported; use {OPSETS.start} to {OPSETS.stop - 1}")
    if precision == "bf16" and opset < BF16_OPSET:
        raise ExportError(f"bf16 needs opset {BF16_OPSET} or later (bfloat16 Conv); pass --opset {BF16_OPSET}")
    if batch is not None and batch < 1 or static is not None and min(static) < 1:
        raise ExportError("the batch size and the static height and width must be positive")
    model = _prepare(model, spec, PRECISIONS[precision])
    m, s, in_ch = int(model.size_multiple), int(model.scale), int(model.in_ch)
    if static is not None and m > 1 and min(static) < m:
        raise ExportError(f"{record.name} x{s} needs sides of at least {m} px; got {static[0]}x{static[1]}")
    cond, cond_ch = record.condition, int(getattr(model, "cond_ch", 0))
    if cond and m > 1:
        raise ExportError(f"{record.name}: a conditioned generator whose input is padded (to {m}) has no ONNX form here")
    closed = _trace(_core(model), in_ch, m, batch, static, record.name, cond_ch, s)
    missing = primitives(closed) - lowered()
    if missing:
        raise ExportError(f"cannot export {record.name}: no ONNX lowering for the JAX primitive(s) "
                          f"{', '.join(sorted(missing))} (jaxsr/jaxpr_onnx.py)")
    out_ch = int(closed.out_avals[0].shape[1])

    g = Graph(opset)
    x = NAMES[0]
    dims = {}
    if batch is None:
        dims["b"] = g.node("Shape", [x], start=0, end=1)
    H, W = (g.node("Shape", [x], start=2, end=3), g.node("Shape", [x], start=3, end=4)) if static is None else static
    ph, pw = g.mod(g.sub(0, H), m), g.mod(g.sub(0, W), m)
    if static is None:
        dims["h"], dims["w"] = g.floordiv(g.add(H, ph), m), g.floordiv(g.add(W, pw), m)
    g.dims = dims
    xp = x
    if m > 1 and not (ph == 0 and pw == 0):  # ph, pw are ints when the size is static
        xp = g.node("Pad", [x, g.shape([0, 0, 0, 0, 0, 0, ph, pw])], mode="reflect")
    (y,) = lower(g, closed, [xp, cond] if cond else [xp])
    y = g.value(y, np.float32)
    if m > 1 and not (ph == 0 and pw == 0):
        ends = g.shape([g.mul(H, s), g.mul(W, s)])
        y = g.node("Slice", [y, g.const(np.zeros(2, np.int64)), ends, g.const(np.array([2, 3], np.int64))])
    g.nodes.append(onnx.helper.make_node("Identity", [y], [NAMES[1]]))
    g.prune([NAMES[1]])

    b = batch or "batch"
    in_shape = [b, in_ch, *(("height", "width") if static is None else static)]
    out_shape = [b, out_ch, *(("out_height", "out_width") if static is None else (static[0] * s, static[1] * s))]
    inputs = [onnx.helper.make_tensor_value_info(NAMES[0], onnx_type(np.float32), in_shape)]
    if cond:
        inputs.append(onnx.helper.make_tensor_value_info(cond, onnx_type(np.float32), [b, cond_ch, *out_shape[2:]]))
    graph = onnx.helper.make_graph(
        g.nodes, f"jaxsr_{record.name}_x{s}", inputs,
        [onnx.helper.make_tensor_value_info(NAMES[1], onnx_type(np.float32), out_shape)], g.initializers)
    opsets = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="jaxsr", producer_version=jaxsr.__version__,
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets),
                                   doc_string=f"{record.what}, x{s}: NCHW float32 RGB in [0, 1] -> {s} times larger, unclipped")
    meta = {"arch": record.name, "scale": str(s), "in_ch": str(in_ch), "out_ch": str(out_ch), "precision": precision,
            "size_multiple": str(m), "jaxsr_spec": json.dumps(spec), "jaxsr_version": jaxsr.__version__}
    if cond:
        meta["condition"] = cond
    onnx.helper.set_model_props(proto, meta)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportError(f"the exported {record.name} graph fails onnx.checker ({str(e).splitlines()[0][:300]}); "
                          "this is a bug in jaxsr's lowering") from None
    dynamic = tuple(n for n, d in (("batch", batch), ("height", static), ("width", static)) if d is None)
    return proto, dynamic


def read_metadata(path) -> dict:
    """An exported file's metadata_props, with `jaxsr_spec` parsed and the numbers as ints."""
    onnx = require_onnx()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ExportError(f"cannot read {path} as ONNX: {e}") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    for k in ("scale", "in_ch", "out_ch", "size_multiple"):
        if k in meta:
            meta[k] = int(meta[k])
    if "jaxsr_spec" in meta:
        meta["jaxsr_spec"] = json.loads(meta["jaxsr_spec"])
    return meta


# ------------------------------------------------------------------------------------------------ verifying


def photo(h, w, batch=1):
    """A real photograph (scikit-image's astronaut) cropped, or reflect-padded, to h x w: NCHW float32 in [0, 1]."""
    import skimage.data

    from jaxsr.imageio import pad_to

    img = skimage.data.astronaut()[..., :3].astype(np.float32) / 255.0
    top, left = max(0, min(96, img.shape[0] - h)), max(0, min(160, img.shape[1] - w))
    img = pad_to(img[top:top + h, left:left + w], h, w)
    return np.ascontiguousarray(np.repeat(img.transpose(2, 0, 1)[None], batch, axis=0))


def condition_map(model, h, w, batch=1):
    """A conditioned generator's second input for an h x w image, None for the others: NCHW class probabilities at the
    output size (a softmax of seeded noise, constant on each input pixel's s x s block), as segmentation maps look."""
    ch, s = int(getattr(model, "cond_ch", 0)), int(model.scale)
    if not ch:
        return None
    logits = np.random.default_rng(0).normal(0.0, 2.0, (batch, ch, h, w))
    e = np.exp(np.repeat(np.repeat(logits - logits.max(1, keepdims=True), s, 2), s, 3))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def reference(model, spec, x, cond=None):
    """jaxsr's float32 forward on NCHW `x` (and a conditioned generator's NCHW `cond`), padded and cropped as
    `jaxsr.upscale` pads (unclipped)."""
    from jaxsr.imageio import pad_to

    model = _prepare(model, spec, jnp.float32)
    m, s = model.size_multiple, model.scale
    n, _, h, w = x.shape
    nhwc = np.stack([pad_to(im.transpose(1, 2, 0), -(-h // m) * m, -(-w // m) * m) for im in x])
    cond = None if cond is None else cond.transpose(0, 2, 3, 1)
    y = np.asarray(nnx.jit(archs.forward)(model, nhwc, None, cond))
    return y[:, : h * s, : w * s].transpose(0, 3, 1, 2)


def run_onnx(data, x, threads=None, cond=None):
    """onnxruntime's CPU output for the serialized model `data` on NCHW `x` (and a conditioned generator's `cond`)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("verifying needs onnxruntime: pip install onnxruntime (or skip it: --no-verify)") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    feeds = {NAMES[0]: x}
    if cond is not None:
        feeds[sess.get_inputs()[1].name] = cond
    return sess.run(None, feeds)[0]


def psnr(a, b):
    """PSNR (dB, peak 1) of two images after clipping both to [0, 1], as they are viewed."""
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def compare(data, model, spec, precision, static=None, batch=None):
    """Run the file in onnxruntime on a photograph and compare it with jaxsr's float32 forward; raise ExportError
    when it is off by more than the bounds for its precision."""
    h, w = static or VERIFY_SIZE
    x = photo(h, w, batch or 1)
    cond = condition_map(model, h, w, batch or 1)
    try:
        y = run_onnx(data, x) if cond is None else run_onnx(data, x, cond=cond)
    except ExportError:
        raise
    except Exception as e:
        reason = str(e).strip().splitlines()[0]
        if precision == "bf16" and "NOT_IMPLEMENTED" in reason:
            return Verification((h, w), skipped=f"onnxruntime's CPU provider has no bfloat16 kernel here ({reason[:160]})")
        raise ExportError(f"onnxruntime cannot run the exported file: {reason[:300]}") from None
    ref = reference(model, spec, x, cond)
    if y.shape != ref.shape:
        raise ExportError(f"verification failed: onnxruntime returned {y.shape}, jaxsr {ref.shape}")
    v = Verification((h, w), float(np.max(np.abs(y.astype(np.float64) - ref))), psnr(y, ref))
    if not np.isfinite(v.max_abs) or (v.max_abs > FP32_MAX_DIFF if precision == "fp32" else v.psnr < MIN_PSNR[precision]):
        bound = f"max |diff| {FP32_MAX_DIFF:g}" if precision == "fp32" else f"PSNR {MIN_PSNR[precision]:g} dB"
        raise ExportError(f"verification failed ({v.line().removeprefix('verify: ')}; bound {bound}); nothing written")
    return v


# ------------------------------------------------------------------------------------------------ the API


def export_onnx(model, spec, path, *, fp16=False, bf16=False, static=None, batch=None, opset=None, verify=True) -> Export:
    """Write `model` (a generator built from `spec`) to `path` as ONNX, verified in onnxruntime unless
    `verify=False`. `static=(h, w)` fixes the input size and `batch` the batch size (default: dynamic).
    The file appears whole or not at all."""
    if fp16 and bf16:
        raise ExportError("choose one of fp16 and bf16")
    precision = "fp16" if fp16 else "bf16" if bf16 else "fp32"
    proto, dynamic = build_graph(model, spec, precision=precision, static=static, batch=batch, opset=opset)
    data = proto.SerializeToString()
    checked = compare(data, model, spec, precision, static, batch) if verify else None
    atomic_write(path, lambda f: f.write(data), error=ExportError)
    return Export(str(path), spec, precision, proto.opset_import[0].version, dynamic, len(data), checked)


__all__ = ["Export", "ExportError", "Verification", "build_graph", "export_onnx", "photo", "psnr", "read_metadata",
           "reference", "run_onnx", "compare", "condition_map"]
