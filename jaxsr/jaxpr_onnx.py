"""A jaxpr as an ONNX graph: the lowering behind `jaxsr.deploy.export_onnx`.

Each JAX primitive becomes a few standard ONNX operators (https://onnx.ai/onnx/operators/). Sizes may be
symbolic (JAX shape polymorphism, https://docs.jax.dev/en/latest/export/shape_poly.html): a dimension
expression such as `mod(- h, 8) + h` is parsed from its printed form and computed in the graph as int64
arithmetic on the input's Shape, so one file runs at any batch, height and width. Subexpressions of constants
alone (dtype casts of the weights, position-bias tables, the masks of a static size) are evaluated by JAX at
export time and stored as initializers, unless that would store a tensor larger than its inputs and 64K
elements (a mask or a broadcast), which the graph then computes.

Why not jax2onnx (0.12.5 and 0.17.1 tried, with jax 0.10.2): it replaces jnp functions and Flax modules by its own
primitives while tracing, and those refuse symbolic sizes (`jnp.concatenate` of symbolic shapes: "all
non-concatenated dimensions must match"; `lax.pad` with a symbolic width: "used in a context that requires a
constant"; `jnp.arange(h)` and DySample's clip: "'_DynamicDimSentinel' object has no attribute 'rmax'");
0.12.5 cannot trace nnx.Conv under jax >= 0.7 (unhashable `padding`), and 0.17.1 pins orbax-checkpoint<0.11.37.
Lowering the plain jaxpr keeps the exported graph the computation jaxsr runs, op for op, with `onnx` alone.
"""
from __future__ import annotations

import ast
import functools

import jax
import ml_dtypes
import numpy as np
from jax import lax
from jax.extend import core as jcore

from jaxsr.errors import WeightsError


class ExportError(WeightsError):
    """A model, option or primitive that cannot be written as ONNX; the message says which and what to do."""


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install onnx") from None
    return onnx


FOLD_LIMIT = 1 << 16  # elements: a constant result larger than this and than its inputs is computed in the graph
_INT64_MIN = np.iinfo(np.int64).min
_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
          "checkpoint": "jaxpr", "remat": "jaxpr"}
_PLATFORM_DEPENDENT = {"platform_index", "cond"}
_IDENTITY = {"stop_gradient", "copy", "copy_p", "optimization_barrier"}
_UNARY = {"neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid", "erf": "Erf",
          "sqrt": "Sqrt", "floor": "Floor", "ceil": "Ceil", "sign": "Sign", "not": "Not", "sin": "Sin", "cos": "Cos"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min", "pow": "Pow",
           "and": "And", "or": "Or", "xor": "Xor", "eq": "Equal", "lt": "Less", "le": "LessOrEqual",
           "gt": "Greater", "ge": "GreaterOrEqual"}


def onnx_type(dtype):
    """The ONNX TensorProto element type of a numpy/JAX dtype."""
    from onnx import TensorProto as T

    dtype = np.dtype(dtype)
    table = {np.dtype(np.float32): T.FLOAT, np.dtype(np.float16): T.FLOAT16, np.dtype(ml_dtypes.bfloat16): T.BFLOAT16,
             np.dtype(np.float64): T.DOUBLE, np.dtype(np.int64): T.INT64, np.dtype(np.int32): T.INT32,
             np.dtype(np.int16): T.INT16, np.dtype(np.int8): T.INT8, np.dtype(np.uint8): T.UINT8,
             np.dtype(np.uint32): T.UINT32, np.dtype(np.bool_): T.BOOL}
    if dtype not in table:
        raise ExportError(f"dtype {dtype} has no ONNX equivalent here")
    return table[dtype]


def _static(d):
    return isinstance(d, (int, np.integer))


def _symbolic(params):
    """Whether equation parameters hold a symbolic size (such an equation cannot be evaluated at export time)."""
    stack = list(params.values())
    while stack:
        x = stack.pop()
        if isinstance(x, (tuple, list)):
            stack.extend(x)
        elif jax.export.is_symbolic_dim(x):
            return True
    return False


class Graph:
    """Nodes and initializers of one ONNX graph, with int64 dimension arithmetic that folds known sizes.

    A dimension is a Python int or the name of a 1-element int64 tensor. `dims` maps the names of JAX's
    dimension variables (the symbols of the traced input shape) to such tensors.
    """

    def __init__(self, opset):
        self.onnx = require_onnx()
        self.opset = opset
        self.nodes, self.initializers, self.dims = [], [], {}
        self.producer, self.constants = {}, {}  # output name -> node, initializer name -> its array
        self._count, self._consts, self._dim_cache = 0, {}, {}

    def fresh(self, stem="v"):
        self._count += 1
        return f"{stem}{self._count}"

    def node(self, op, inputs, n_out=1, **attrs):
        outs = [self.fresh(op.lower() + "_") for _ in range(n_out)]
        node = self.onnx.helper.make_node(op, list(inputs), outs, **attrs)
        self.nodes.append(node)
        self.producer.update((o, node) for o in outs)
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=None):
        """An initializer for a constant (small ones shared by value)."""
        a = np.asarray(value, dtype=dtype)
        key = (a.dtype.str, a.shape, a.tobytes()) if a.size <= 16 else id(value)
        if key not in self._consts:
            name = self.fresh("c")
            t = self.onnx.numpy_helper.from_array(np.array(a, order="C"), name)  # ascontiguousarray makes 0-d 1-d
            self.initializers.append(t)
            self.constants[name] = a
            self._consts[key] = (name, value)  # keeps `value` alive so that its id stays unique
        return self._consts[key][0]

    def constant_of(self, name):
        """The array behind a graph value that is a constant seen through Unsqueeze/Expand, or None.

        Only for operands of broadcasting operators: the unexpanded array broadcasts the same way."""
        if name in self.constants:
            return self.constants[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Expand":
            return self.constant_of(node.input[0])
        if node is not None and node.op_type == "Unsqueeze":
            a, axes = self.constant_of(node.input[0]), self.constants.get(node.input[1])
            if a is not None and axes is not None:
                return np.expand_dims(a, tuple(int(i) for i in axes))
        return None

    def prune(self, outputs):
        """Drop the nodes and initializers that no output depends on (left behind by fused patterns)."""
        needed, keep = set(outputs), []
        for node in reversed(self.nodes):
            if any(o in needed for o in node.output):
                keep.append(node)
                needed.update(node.input)
        self.nodes = keep[::-1]
        self.initializers = [t for t in self.initializers if t.name in needed]

    def value(self, x, dtype=None):
        """The graph name of a value: a name already, or a constant to store (in `dtype`)."""
        return x if isinstance(x, str) else self.const(np.asarray(x, dtype=dtype))

    # --- dimension arithmetic: ints stay ints, anything symbolic is an int64 [1] tensor

    def dim_tensor(self, d):
        return self.const(np.array([d], np.int64)) if _static(d) else d

    def shape(self, dims):
        """A 1-D int64 shape tensor from ints and dimension tensors."""
        dims = [self.dim(d) for d in dims]
        if all(_static(d) for d in dims):
            return self.const(np.array(dims, np.int64))
        return self.node("Concat", [self.dim_tensor(d) for d in dims], axis=0)

    def scalar(self, d):
        """A 0-d int64 tensor for a dimension (Range wants scalars)."""
        return self.const(np.array(d, np.int64)) if _static(d) else self.node("Squeeze", [d, self.const(np.array([0], np.int64))])

    def _arith(self, op, a, b, py):
        if _static(a) and _static(b):
            return int(py(int(a), int(b)))
        return self.node(op, [self.dim_tensor(a), self.dim_tensor(b)])

    def add(self, a, b):
        return a if _static(b) and b == 0 else b if _static(a) and a == 0 else self._arith("Add", a, b, lambda x, y: x + y)

    def sub(self, a, b):
        return a if _static(b) and b == 0 else self._arith("Sub", a, b, lambda x, y: x - y)

    def mul(self, a, b):
        return a if _static(b) and b == 1 else b if _static(a) and a == 1 else self._arith("Mul", a, b, lambda x, y: x * y)

    def mod(self, a, b):
        """Python's a % b (ONNX Mod with fmod=0 takes the divisor's sign for integers, as Python does)."""
        if _static(a) and _static(b) or _static(b) and b in (1, -1):
            return int(a) % int(b) if _static(a) else 0
        return self.node("Mod", [self.dim_tensor(a), self.dim_tensor(b)], fmod=0)

    def floordiv(self, a, b):
        """Python's a // b: integer Div truncates, so divide the exact multiple a - a % b."""
        if _static(a) and _static(b):
            return int(a) // int(b)
        if _static(b) and b == 1:
            return a
        return self.node("Div", [self.dim_tensor(self.sub(a, self.mod(a, b))), self.dim_tensor(b)])

    def minmax(self, op, a, b):
        return self._arith(op, a, b, max if op == "Max" else min)

    def dim(self, d):
        """An int or a dimension tensor for a JAX dimension (an int or a symbolic expression)."""
        if _static(d):
            return int(d)
        if isinstance(d, str):  # already a dimension tensor
            return d
        key = str(d)
        if key not in self._dim_cache:
            self._dim_cache[key] = self._expr(ast.parse(key, mode="eval").body, key)
        return self._dim_cache[key]

    def _expr(self, n, text):
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.Name):
            if n.id not in self.dims:
                raise ExportError(f"the size {text!r} depends on {n.id!r}, which is not a dimension of the input")
            return self.dims[n.id]
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return self.sub(0, self._expr(n.operand, text))
        if isinstance(n, ast.BinOp):
            a, b = self._expr(n.left, text), self._expr(n.right, text)
            if isinstance(n.op, ast.Add):
                return self.add(a, b)
            if isinstance(n.op, ast.Sub):
                return self.sub(a, b)
            if isinstance(n.op, ast.Mult):
                return self.mul(a, b)
            if isinstance(n.op, ast.BitXor) and _static(b):  # JAX prints powers as h^2
                out = 1
                for _ in range(int(b)):
                    out = self.mul(out, a)
                return out
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            args = [self._expr(a, text) for a in n.args]
            fn = n.func.id
            if fn == "mod":
                return self.mod(*args)
            if fn == "floordiv":
                return self.floordiv(*args)
            if fn in ("max", "min"):
                return self.minmax(fn.capitalize(), *args)
            if fn == "non_negative":
                return self.minmax("Max", args[0], 0)
        raise ExportError(f"cannot compute the symbolic size {text!r} in ONNX")


# ------------------------------------------------------------------------------------------------ lowering


def lower(g: Graph, closed: jcore.ClosedJaxpr, args):
    """Lower `closed` applied to `args` (graph names or numpy constants) into `g`; returns its outputs."""
    return _lower(g, closed.jaxpr, closed.consts, args)


def _lower(g, jaxpr, consts, args):
    env = {}

    def read(v):
        if isinstance(v, jcore.Literal):
            return np.asarray(v.val, dtype=v.aval.dtype)
        return env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = np.asarray(c)
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        outs = _equation(g, eqn, [read(v) for v in eqn.invars])
        for v, o in zip(eqn.outvars, outs):
            if not isinstance(v, jcore.DropVar):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def _size(shape):
    return int(np.prod(shape)) if all(_static(d) for d in shape) else None


def _foldable(eqn, ins):
    if not all(isinstance(x, np.ndarray) for x in ins) or eqn.effects or _symbolic(eqn.params):
        return False
    sizes = [_size(v.aval.shape) for v in eqn.outvars]
    if any(s is None for s in sizes):
        return False
    biggest_in = max([x.size for x in ins], default=0)
    return max(sizes, default=0) <= max(FOLD_LIMIT, biggest_in)


def _equation(g, eqn, ins):
    name = eqn.primitive.name
    if name in _CALLS:
        sub = eqn.params[_CALLS[name]]
        if isinstance(sub, jcore.ClosedJaxpr):
            return _lower(g, sub.jaxpr, sub.consts, ins)
        return _lower(g, sub, (), ins)
    if name in _IDENTITY:
        return ins
    if name in _PLATFORM_DEPENDENT:  # lax.platform_dependent: the graph is what runs on platforms other than the CPU
        if name == "platform_index":
            return [None]
        platforms = eqn.params.get("branches_platforms")
        if not platforms or None not in platforms:
            raise ExportError("a data-dependent lax.cond has no ONNX lowering in jaxsr.jaxpr_onnx")
        branch = eqn.params["branches"][platforms.index(None)]
        return _lower(g, branch.jaxpr, branch.consts, ins[1:])
    if _foldable(eqn, ins):
        out = eqn.primitive.bind(*ins, **eqn.params)
        outs = out if eqn.primitive.multiple_results else [out]
        return [np.asarray(o) for o in outs]
    if name in _UNARY:
        return [g.node(_UNARY[name], [g.value(ins[0], eqn.invars[0].aval.dtype)])]
    if name in _BINARY:
        return [g.node(_BINARY[name], [g.value(x, v.aval.dtype) for x, v in zip(ins, eqn.invars)])]
    rule = _RULES.get(name)
    if rule is None:
        raise ExportError(f"the JAX primitive {name!r} has no ONNX lowering in jaxsr.jaxpr_onnx")
    out = rule(g, eqn, *ins)
    return out if isinstance(out, list) else [out]


# Each rule takes (graph, equation, *inputs) and returns the output name (or a list of them).

def _vals(g, eqn, ins):
    return [g.value(x, v.aval.dtype) for x, v in zip(ins, eqn.invars)]


def _axes(g, axes):
    return g.const(np.array(list(axes), np.int64))


def _ne(g, eqn, a, b):
    return g.node("Not", [g.node("Equal", _vals(g, eqn, [a, b]))])


def _rem(g, eqn, a, b):  # lax.rem is C's fmod: the dividend's sign
    return g.node("Mod", _vals(g, eqn, [a, b]), fmod=1)


def _erfc(g, eqn, x):
    x = g.value(x, eqn.invars[0].aval.dtype)
    return g.node("Sub", [g.const(np.array(1, eqn.invars[0].aval.dtype)), g.node("Erf", [x])])


def _log1p(g, eqn, x):
    dt = eqn.invars[0].aval.dtype
    return g.node("Log", [g.node("Add", [g.value(x, dt), g.const(np.array(1, dt))])])


def _expm1(g, eqn, x):
    dt = eqn.invars[0].aval.dtype
    return g.node("Sub", [g.node("Exp", [g.value(x, dt)]), g.const(np.array(1, dt))])


def _rsqrt(g, eqn, x):
    return g.node("Reciprocal", [g.node("Sqrt", [g.value(x, eqn.invars[0].aval.dtype)])])


def _square(g, eqn, x):
    x = g.value(x, eqn.invars[0].aval.dtype)
    return g.node("Mul", [x, x])


def _integer_pow(g, eqn, x):
    dt, y = eqn.invars[0].aval.dtype, eqn.params["y"]
    x = g.value(x, dt)
    if y == 2:
        return g.node("Mul", [x, x])
    if y == -1:
        return g.node("Reciprocal", [x])
    return g.node("Pow", [x, g.const(np.array(y, dt if np.issubdtype(dt, np.floating) else np.int64))])


def _is_finite(g, eqn, x):
    x = g.value(x, eqn.invars[0].aval.dtype)
    return g.node("Not", [g.node("Or", [g.node("IsNaN", [x]), g.node("IsInf", [x])])])


def _round(g, eqn, x):
    x = g.value(x, eqn.invars[0].aval.dtype)
    if eqn.params["rounding_method"] == lax.RoundingMethod.TO_NEAREST_EVEN:
        return g.node("Round", [x])
    half = g.const(np.array(0.5, eqn.invars[0].aval.dtype))  # away from zero
    return g.node("Mul", [g.node("Sign", [x]), g.node("Floor", [g.node("Add", [g.node("Abs", [x]), half])])])


def _select_n(g, eqn, pred, *cases):
    cases = _vals(g, eqn, [pred, *cases])[1:]
    pred_dt = eqn.invars[0].aval.dtype
    p = g.value(pred, pred_dt)
    if len(cases) == 1:
        return g.node("Identity", [cases[0]])
    if pred_dt == np.bool_:
        return _activation(g, p, cases[1], cases[0]) or g.node("Where", [p, cases[1], cases[0]])
    out = cases[0]
    for k in range(1, len(cases)):
        out = g.node("Where", [g.node("Equal", [p, g.const(np.array(k, pred_dt))]), cases[k], out])
    return out


def _activation(g, pred, on_true, on_false):
    """LeakyRelu or PRelu for where(x >= 0, x, a * x), which is how jax.nn.leaky_relu and PReLU modules trace, so
    that runtimes fuse the activation into the convolution before it (onnxruntime's ConvActivationFusion)."""
    test, scaled = g.producer.get(pred), g.producer.get(on_false)
    if test is None or test.op_type not in ("GreaterOrEqual", "Greater") or test.input[0] != on_true:
        return None
    zero = g.constant_of(test.input[1])
    if zero is None or zero.size != 1 or float(zero.reshape(())) != 0.0:
        return None
    if scaled is None or scaled.op_type != "Mul" or on_true not in scaled.input:
        return None
    slope = g.constant_of(scaled.input[1] if scaled.input[0] == on_true else scaled.input[0])
    if slope is None or not np.issubdtype(slope.dtype, np.floating):
        return None
    if slope.size == 1:
        return g.node("LeakyRelu", [on_true], alpha=float(slope.reshape(())))
    return g.node("PRelu", [on_true, g.const(slope)])


def _clamp(g, eqn, lo, x, hi):
    lo, x, hi = _vals(g, eqn, [lo, x, hi])
    return g.node("Min", [g.node("Max", [x, lo]), hi])


def _convert(g, eqn, x):
    return g.node("Cast", [g.value(x, eqn.invars[0].aval.dtype)], to=onnx_type(eqn.params["new_dtype"]))


def _transpose(g, eqn, x):
    return g.node("Transpose", [g.value(x, eqn.invars[0].aval.dtype)], perm=list(eqn.params["permutation"]))


def _reshape(g, eqn, x):
    if eqn.params.get("dimensions") is not None:
        raise ExportError("reshape with a dimension order is not lowered")
    return g.node("Reshape", [g.value(x, eqn.invars[0].aval.dtype), g.shape(eqn.params["new_sizes"])], allowzero=1)


def _broadcast_in_dim(g, eqn, x):
    aval = eqn.invars[0].aval
    shape, bdims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    x = g.value(x, aval.dtype)
    new = [i for i in range(len(shape)) if i not in bdims]
    if new:
        x = g.node("Unsqueeze", [x, _axes(g, new)])
    if [str(d) for d in aval.shape] == [str(shape[i]) for i in bdims] and not new:
        return g.node("Identity", [x])
    return g.node("Expand", [x, g.shape(shape)])


def _squeeze(g, eqn, x):
    return g.node("Squeeze", [g.value(x, eqn.invars[0].aval.dtype), _axes(g, eqn.params["dimensions"])])


def _expand_dims(g, eqn, x):
    return g.node("Unsqueeze", [g.value(x, eqn.invars[0].aval.dtype), _axes(g, eqn.params["dimensions"])])


def _concatenate(g, eqn, *xs):
    return g.node("Concat", _vals(g, eqn, xs), axis=int(eqn.params["dimension"]))


def _pad(g, eqn, x, padval):
    cfg = eqn.params["padding_config"]
    if any(not _static(i) or i != 0 for _, _, i in cfg):
        raise ExportError("lax.pad with interior padding is not lowered")
    if any(_static(p) and p < 0 for lo, hi, _ in cfg for p in (lo, hi)):
        raise ExportError("lax.pad with negative padding is not lowered")
    dt = eqn.invars[0].aval.dtype
    pads = g.shape([lo for lo, _, _ in cfg] + [hi for _, hi, _ in cfg])
    return g.node("Pad", [g.value(x, dt), pads, g.value(padval, dt)], mode="constant")


def _slice(g, eqn, x):
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(starts)
    n = len(starts)
    return g.node("Slice", [g.value(x, eqn.invars[0].aval.dtype), g.shape(starts), g.shape(limits), _axes(g, range(n)),
                            g.const(np.array(strides, np.int64))])


def _dynamic_slice(g, eqn, x, *idx):
    aval = eqn.invars[0].aval
    sizes = eqn.params["slice_sizes"]
    n = aval.ndim
    if len(idx) != n:
        raise ExportError("dynamic_slice with extra operands is not lowered")
    starts = []
    for i, (s, d, k) in enumerate(zip(idx, aval.shape, sizes)):  # JAX clamps starts into [0, dim - size]
        s = g.node("Cast", [g.node("Reshape", [g.value(s, eqn.invars[1 + i].aval.dtype), g.const(np.array([1], np.int64))])],
                   to=onnx_type(np.int64))
        hi = g.dim_tensor(g.sub(g.dim(d), g.dim(k)))
        starts.append(g.node("Min", [g.node("Max", [s, g.const(np.array([0], np.int64))]), hi]))
    start = g.node("Concat", starts, axis=0)
    end = g.node("Add", [start, g.shape(sizes)])
    return g.node("Slice", [g.value(x, aval.dtype), start, end, _axes(g, range(n))])


def _rev(g, eqn, x):
    dims = list(eqn.params["dimensions"])
    k = len(dims)
    return g.node("Slice", [g.value(x, eqn.invars[0].aval.dtype), g.const(np.full(k, -1, np.int64)),
                            g.const(np.full(k, _INT64_MIN, np.int64)), _axes(g, dims), g.const(np.full(k, -1, np.int64))])


def _split(g, eqn, x):
    sizes = eqn.params["sizes"]
    return g.node("Split", [g.value(x, eqn.invars[0].aval.dtype), g.shape(sizes)], n_out=len(sizes),
                  axis=int(eqn.params["axis"]))


def _iota(g, eqn):
    dtype, shape, dim = eqn.params["dtype"], eqn.params["shape"], eqn.params["dimension"]
    r = g.node("Range", [g.scalar(0), g.scalar(g.dim(shape[dim])), g.scalar(1)])
    if np.dtype(dtype) != np.int64:
        r = g.node("Cast", [r], to=onnx_type(dtype))
    others = [i for i in range(len(shape)) if i != dim]
    if not others:
        return r
    return g.node("Expand", [g.node("Unsqueeze", [r, _axes(g, others)]), g.shape(shape)])


def _dim_as_value(g, eqn):
    d = g.scalar(g.dim(eqn.params["dim"]))
    dt = eqn.outvars[0].aval.dtype
    return g.node("Cast", [d], to=onnx_type(dt))


_REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin", "reduce_prod": "ReduceProd"}


def _reduce(g, eqn, x):
    op, axes = _REDUCE[eqn.primitive.name], list(eqn.params["axes"])
    x = g.value(x, eqn.invars[0].aval.dtype)
    if not axes:
        return g.node("Identity", [x])
    if op == "ReduceSum" or g.opset >= 18:  # axes became an input in opset 13 (sum) and 18 (the others)
        return g.node(op, [x, _axes(g, axes)], keepdims=0)
    return g.node(op, [x], axes=axes, keepdims=0)


def _argminmax(g, eqn, x):
    op = "ArgMax" if eqn.primitive.name == "argmax" else "ArgMin"
    (axis,) = eqn.params["axes"]
    out = g.node(op, [g.value(x, eqn.invars[0].aval.dtype)], axis=int(axis), keepdims=0)
    return g.node("Cast", [out], to=onnx_type(eqn.params["index_dtype"]))


def _cumsum(g, eqn, x):
    return g.node("CumSum", [g.value(x, eqn.invars[0].aval.dtype), g.const(np.array(eqn.params["axis"], np.int64))],
                  reverse=int(eqn.params["reverse"]))


def _dot_general(g, eqn, a, b):
    """As MatMul: batch axes first, then the free and contracted axes of each side flattened to one (Einsum would
    be shorter, but ONNX defines it for fewer types: no bfloat16)."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    la, ra = eqn.invars[0].aval, eqn.invars[1].aval
    a, b = g.value(a, la.dtype), g.value(b, ra.dtype)
    want = eqn.outvars[0].aval.dtype
    if np.dtype(la.dtype) != np.dtype(want):  # e.g. fp16 operands accumulated in fp32: compute in fp32
        a, b = (g.node("Cast", [t], to=onnx_type(want)) for t in (a, b))
    lc, rc, lb, rb = (list(t) for t in (lc, rc, lb, rb))
    if not lb and lc == [la.ndim - 1] and rc == [0] and ra.ndim == 2:
        return g.node("MatMul", [a, b])  # x @ W: a Linear layer
    lf = [i for i in range(la.ndim) if i not in lb and i not in lc]
    rf = [j for j in range(ra.ndim) if j not in rb and j not in rc]
    batch = [la.shape[i] for i in lb]

    def side(t, aval, perm, first, second):
        if perm != list(range(aval.ndim)):
            t = g.node("Transpose", [t], perm=perm)
        if len(first) == 1 and len(second) == 1:
            return t
        prod = lambda axes: functools.reduce(g.mul, [g.dim(aval.shape[i]) for i in axes], 1)  # noqa: E731
        return g.node("Reshape", [t, g.shape([*batch, prod(first), prod(second)])], allowzero=1)

    y = g.node("MatMul", [side(a, la, lb + lf + lc, lf, lc), side(b, ra, rb + rc + rf, rc, rf)])
    if len(lf) == 1 and len(rf) == 1:
        return y
    out = [*batch, *(la.shape[i] for i in lf), *(ra.shape[j] for j in rf)]
    return g.node("Reshape", [y, g.shape(out)], allowzero=1)


def _conv_transpose(g, eqn, x, w):
    """A convolution of the stride-dilated input (lhs_dilation: how a transposed convolution traces) as ONNX
    ConvTranspose: its weight is the kernel flipped and with in/out swapped, its pads k - 1 - the dilated conv's."""
    p = eqn.params
    lhs, rhs, out = p["dimension_numbers"]
    if any(d != 1 for d in p["rhs_dilation"]) or p["feature_group_count"] != 1 or not isinstance(w, np.ndarray):
        raise ExportError("transposed convolutions are lowered only ungrouped, undilated and with constant weights")
    k = np.transpose(w, rhs)  # (out, in, kh, kw)
    sizes = k.shape[2:]
    pads = [s - 1 - lo for s, (lo, _) in zip(sizes, p["padding"])] + [s - 1 - hi for s, (_, hi) in zip(sizes, p["padding"])]
    if any(q < 0 for q in pads):
        raise ExportError("transposed convolutions padded wider than their kernel are not lowered")
    xa, wa = eqn.invars[0].aval, eqn.invars[1].aval
    want = eqn.outvars[0].aval.dtype
    x = g.node("Transpose", [g.value(x, xa.dtype)], perm=list(lhs))
    wt = g.const(np.ascontiguousarray(np.flip(k, (2, 3)).transpose(1, 0, 2, 3)).astype(wa.dtype))
    if np.dtype(xa.dtype) != np.dtype(want):
        x, wt = (g.node("Cast", [t], to=onnx_type(want)) for t in (x, wt))
    y = g.node("ConvTranspose", [x, wt], strides=list(p["lhs_dilation"]), pads=pads)
    return g.node("Transpose", [y], perm=[int(i) for i in np.argsort(out)])


def _conv(g, eqn, x, w):
    p = eqn.params
    if any(d != 1 for d in p["lhs_dilation"]) and p["batch_group_count"] == 1:
        return _conv_transpose(g, eqn, x, w)
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise ExportError("transposed or batch-grouped convolutions are not lowered")
    pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
    if any(q < 0 for q in pads):
        raise ExportError("convolutions with negative padding are not lowered")
    lhs, rhs, out = p["dimension_numbers"]
    xa, wa = eqn.invars[0].aval, eqn.invars[1].aval
    want = eqn.outvars[0].aval.dtype
    x = g.node("Transpose", [g.value(x, xa.dtype)], perm=list(lhs))
    if isinstance(w, np.ndarray):
        w = g.const(np.ascontiguousarray(np.transpose(w, rhs)).astype(wa.dtype))
    else:
        w = g.node("Transpose", [w], perm=list(rhs))
    if np.dtype(xa.dtype) != np.dtype(want):
        x, w = (g.node("Cast", [t], to=onnx_type(want)) for t in (x, w))
    y = g.node("Conv", [x, w], strides=list(p["window_strides"]), pads=pads, dilations=list(p["rhs_dilation"]),
               group=int(p["feature_group_count"]))
    return g.node("Transpose", [y], perm=[int(i) for i in np.argsort(out)])


def _max_pool(g, eqn, x):
    """reduce_window_max (a max pool) as ONNX MaxPool: the axes the window leaves alone (size 1, stride 1, no padding) go
    first, as MaxPool's N and C, the pooled ones after them."""
    p = eqn.params
    if any(d != 1 for d in p["base_dilation"]):
        raise ExportError("a max pool over a dilated input is not lowered")
    nd = len(p["window_dimensions"])
    plain = [a for a in range(nd) if p["window_dimensions"][a] == 1 and p["window_strides"][a] == 1
             and tuple(p["padding"][a]) == (0, 0) and p["window_dilation"][a] == 1]
    if len(plain) < 2 or nd < 3:
        raise ExportError("a max pool over all but fewer than two axes is not lowered")
    lead, pooled = plain[:2], [a for a in range(nd) if a not in plain[:2]]
    perm = lead + pooled
    pick = lambda key: [int(p[key][a]) for a in pooled]  # noqa: E731
    y = g.node("Transpose", [g.value(x, eqn.invars[0].aval.dtype)], perm=perm)
    y = g.node("MaxPool", [y], kernel_shape=pick("window_dimensions"), strides=pick("window_strides"),
               dilations=pick("window_dilation"), pads=[int(p["padding"][a][0]) for a in pooled]
               + [int(p["padding"][a][1]) for a in pooled])
    return g.node("Transpose", [y], perm=[int(i) for i in np.argsort(perm)])


def _gather(g, eqn, operand, indices):
    """XLA gather (https://openxla.org/xla/operation_semantics#gather) where each indexed or batching operand
    axis is taken one element at a time and every other axis whole, as ONNX GatherND with batch_dims."""
    dn, sizes, mode = eqn.params["dimension_numbers"], eqn.params["slice_sizes"], eqn.params["mode"]
    oa, ia = eqn.invars[0].aval, eqn.invars[1].aval
    sim, obd, ibd = list(dn.start_index_map), list(dn.operand_batching_dims), list(dn.start_indices_batching_dims)
    collapsed = set(dn.collapsed_slice_dims)
    if ia.ndim == 1 and not obd:  # one start index vector: a dynamic slice (what x[..., :k] becomes on symbolic shapes)
        return _gather_one(g, eqn, operand, indices)
    for d in range(oa.ndim):
        whole = str(sizes[d]) == str(oa.shape[d])
        if (d in sim or d in obd) and not (_static(sizes[d]) and sizes[d] == 1) or (d not in sim and d not in obd and not whole):
            raise ExportError("a gather of windows (slices wider than one element along an indexed axis) is not lowered")
    rest = [d for d in range(oa.ndim) if d not in obd and d not in sim]
    data = g.value(operand, oa.dtype)
    perm = obd + sim + rest
    if perm != list(range(oa.ndim)):
        data = g.node("Transpose", [data], perm=perm)
    nib = ia.ndim - 1
    iother = [d for d in range(nib) if d not in ibd]
    idx = g.value(indices, ia.dtype)
    iperm = ibd + iother + [nib]
    if iperm != list(range(ia.ndim)):
        idx = g.node("Transpose", [idx], perm=iperm)
    idx = g.node("Cast", [idx], to=onnx_type(np.int64))
    bounds = g.shape([oa.shape[d] for d in sim])
    valid = None
    if mode == lax.GatherScatterMode.CLIP:
        idx = g.node("Max", [g.node("Min", [idx, g.node("Sub", [bounds, g.const(np.array([1], np.int64))])]),
                             g.const(np.array([0], np.int64))])
    elif mode == lax.GatherScatterMode.FILL_OR_DROP:
        ok = g.node("And", [g.node("GreaterOrEqual", [idx, g.const(np.array([0], np.int64))]), g.node("Less", [idx, bounds])])
        ok = g.node("ReduceMin", [g.node("Cast", [ok], to=onnx_type(np.int32))], axes=[-1], keepdims=0) if g.opset < 18 else \
            g.node("ReduceMin", [g.node("Cast", [ok], to=onnx_type(np.int32)), _axes(g, [-1])], keepdims=0)
        valid = g.node("Cast", [ok], to=onnx_type(np.bool_))
        idx = g.node("Where", [g.node("Unsqueeze", [valid, _axes(g, [-1])]), idx, g.const(np.array([0], np.int64))])
    out = g.node("GatherND", [data, idx], batch_dims=len(obd))
    labels = [("i", d) for d in ibd + iother] + [("o", d) for d in rest]
    if valid is not None:
        fill = eqn.params.get("fill_value")
        if fill is None:
            dt = np.dtype(oa.dtype)
            fill = np.nan if np.issubdtype(dt, np.inexact) else True if dt == np.bool_ else np.iinfo(dt).min
        mask = g.node("Unsqueeze", [valid, _axes(g, range(len(labels) - len(rest), len(labels)))]) if rest else valid
        out = g.node("Where", [mask, out, g.const(np.array(fill, oa.dtype))])
    kept = [d for d in sim if d not in collapsed]  # indexed axes JAX keeps as size-1 offset axes
    if kept:
        out = g.node("Unsqueeze", [out, _axes(g, range(len(labels), len(labels) + len(kept)))])
        labels += [("o", d) for d in kept]
    offs = sorted(d for d in range(oa.ndim) if d not in collapsed and d not in obd)
    final, it_o, it_i = [], iter(offs), iter(range(nib))
    for pos in range(nib + len(offs)):
        final.append(("o", next(it_o)) if pos in dn.offset_dims else ("i", next(it_i)))
    perm = [labels.index(lab) for lab in final]
    return g.node("Transpose", [out], perm=perm) if perm != list(range(len(perm))) else out


def _gather_one(g, eqn, operand, indices):
    """A gather with a single start vector: the window at the starts, clamped into range as XLA does, with the
    collapsed axes dropped."""
    dn, sizes, mode = eqn.params["dimension_numbers"], eqn.params["slice_sizes"], eqn.params["mode"]
    oa, ia = eqn.invars[0].aval, eqn.invars[1].aval
    if mode == lax.GatherScatterMode.FILL_OR_DROP:
        if not isinstance(indices, np.ndarray):
            raise ExportError("a filling gather of a window at a computed start is not lowered")
        for k, d in enumerate(dn.start_index_map):
            hi = oa.shape[d] - sizes[d] if _static(oa.shape[d]) and _static(sizes[d]) else None
            if indices[k] < 0 or hi is None or indices[k] > hi:
                raise ExportError("a filling gather of a window that may leave the operand is not lowered")
    idx = g.node("Cast", [g.value(indices, ia.dtype)], to=onnx_type(np.int64))
    starts = []
    for d in range(oa.ndim):
        if d in dn.start_index_map:
            k = list(dn.start_index_map).index(d)
            s = g.node("Slice", [idx, g.const(np.array([k], np.int64)), g.const(np.array([k + 1], np.int64))])
            hi = g.dim_tensor(g.sub(g.dim(oa.shape[d]), g.dim(sizes[d])))
            starts.append(g.node("Min", [g.node("Max", [s, g.const(np.array([0], np.int64))]), hi]))
        else:
            starts.append(g.const(np.array([0], np.int64)))
    start = g.node("Concat", starts, axis=0)
    out = g.node("Slice", [g.value(operand, oa.dtype), start, g.node("Add", [start, g.shape(sizes)]), _axes(g, range(oa.ndim))])
    if dn.collapsed_slice_dims:
        out = g.node("Squeeze", [out, _axes(g, sorted(dn.collapsed_slice_dims))])
    return out


def _sort(g, eqn, *operands):
    """lax.sort on one key (what jnp.argsort traces to) as ONNX TopK of all elements, ascending: TopK puts equal
    keys in index order, a stable sort; the other operands follow the key's permutation (GatherElements)."""
    if eqn.params["num_keys"] != 1:
        raise ExportError("lax.sort with more than one key is not lowered")
    axis, aval = int(eqn.params["dimension"]), eqn.invars[0].aval
    k = g.dim_tensor(g.dim(aval.shape[axis]))
    values, idx = g.node("TopK", [g.value(operands[0], aval.dtype), k], n_out=2, axis=axis, largest=0, sorted=1)
    return [values] + [g.node("GatherElements", [g.value(x, v.aval.dtype), idx], axis=axis)
                       for x, v in zip(operands[1:], eqn.invars[1:])]


_RULES = {
    "ne": _ne, "rem": _rem, "erfc": _erfc, "log1p": _log1p, "expm1": _expm1, "rsqrt": _rsqrt, "square": _square,
    "integer_pow": _integer_pow, "is_finite": _is_finite, "round": _round, "select_n": _select_n, "clamp": _clamp,
    "convert_element_type": _convert, "transpose": _transpose, "reshape": _reshape,
    "broadcast_in_dim": _broadcast_in_dim, "squeeze": _squeeze, "expand_dims": _expand_dims,
    "concatenate": _concatenate, "pad": _pad, "slice": _slice, "dynamic_slice": _dynamic_slice, "rev": _rev,
    "split": _split, "iota": _iota, "dim_as_value": _dim_as_value, "reduce_sum": _reduce, "reduce_max": _reduce,
    "reduce_min": _reduce, "reduce_prod": _reduce, "argmax": _argminmax, "argmin": _argminmax, "cumsum": _cumsum,
    "dot_general": _dot_general, "conv_general_dilated": _conv, "gather": _gather,
    "reduce_window_max": _max_pool,
}
_RULES["sort"] = _sort


def primitives(closed) -> set[str]:
    """The primitive names in a jaxpr, nested calls included (what a lowering must cover)."""
    out = set()

    def walk(j):
        for e in j.eqns:
            out.add(e.primitive.name)
            for sub in jcore.jaxprs_in_params(e.params):
                walk(getattr(sub, "jaxpr", sub))

    walk(closed.jaxpr)
    return out


def lowered() -> set[str]:
    """The primitives this module lowers."""
    return set(_RULES) | set(_UNARY) | set(_BINARY) | set(_CALLS) | _IDENTITY | _PLATFORM_DEPENDENT


__all__ = ["ExportError", "Graph", "lower", "lowered", "onnx_type", "primitives", "require_onnx"]
