"""What every architecture's bridge is made of: the `Arch` record, and the mechanical mapping between a Flax
module and a PyTorch state dict.

Our modules mirror the torch module trees, so a torch key is the Flax path joined with dots, with Flax's
leaf names renamed (kernel->weight, scale->weight, mean/var->running_mean/running_var), and conv kernels
transposed OIHW <-> HWIO and linear kernels (O,I) <-> (I,O). jaxsr's own (native) layout keeps the Flax
path joined with '/' and the Flax layouts.
"""
import re
from dataclasses import dataclass, field
from typing import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.common import Buffer
from jaxsr.errors import WeightsError

_TO_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}
# Variables that travel with the weights: trainable params, BatchNorm statistics and torch buffers.
EXPORTED = (nnx.Param, nnx.BatchStat, Buffer)


def torch_key(path) -> str:
    *mods, leaf = path
    return ".".join(str(p) for p in (*mods, _TO_TORCH_LEAF.get(leaf, leaf)))


def native_key(path) -> str:
    return "/".join(map(str, path))


def _relayout(path, a, conv_axes):
    a = np.asarray(a)
    if path[-1] == "kernel" and a.ndim == 4:
        return np.ascontiguousarray(a.transpose(conv_axes))
    if path[-1] == "kernel" and a.ndim == 2:  # Linear
        return np.ascontiguousarray(a.T)
    return a


def to_torch_layout(path, a):
    return _relayout(path, a, (3, 2, 0, 1))  # HWIO -> OIHW


def to_flax_layout(path, a):
    return _relayout(path, a, (2, 3, 1, 0))  # OIHW -> HWIO


def seq_len(sd, prefix):
    """How many entries an nn.Sequential / ModuleList stored under `prefix` has: 1 + the highest index N of the
    `prefix.N.*` keys (0 if none)."""
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def variables(model):
    """[(Flax path, Variable)] of everything that travels with the weights."""
    return nnx.to_flat_state(nnx.state(model, EXPORTED))


def _torch_dtype(a):
    """torch keeps integer buffers (index tables, num_batches_tracked) as int64; we compute with int32."""
    return a.astype(np.int64) if np.issubdtype(a.dtype, np.integer) else a


def state_dict(model, *, native=False) -> dict:
    """The model's weights and buffers as numpy arrays: torch keys, layouts and dtypes, or jaxsr's native ones."""
    if native:
        return {native_key(p): np.asarray(v[...]) for p, v in variables(model)}
    return {torch_key(p): _torch_dtype(to_torch_layout(p, np.asarray(v[...]))) for p, v in variables(model)}


@dataclass
class LoadReport:
    missing: list = field(default_factory=list)  # in the model, not in the file (left as initialised)
    unexpected: list = field(default_factory=list)  # in the file, not in the model (ignored)
    mismatched: list = field(default_factory=list)  # same key, different shape (left as initialised)

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit=8):
        parts = []
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("shape-mismatched", self.mismatched)):
            if keys:
                more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
                parts.append(f"{len(keys)} {name}: {', '.join(map(str, keys[:limit]))}{more}")
        return "; ".join(parts) or "all tensors matched"


def load_state_dict(model, tensors: dict, *, strict=True, native=False) -> LoadReport:
    """Copy tensors into the model in place: torch keys and layouts, or (native=True) jaxsr's own.

    Each tensor keeps the dtype of the variable it fills (float32 params, int buffers). Strict (the default)
    refuses any missing, unexpected or mis-shaped tensor and changes nothing; non-strict loads what matches
    and returns the report of the rest.
    """
    report, updates, seen = LoadReport(), [], set()
    for path, var in variables(model):
        key = native_key(path) if native else torch_key(path)
        if key not in tensors:
            report.missing.append(key)
            continue
        seen.add(key)
        a = np.asarray(tensors[key]) if native else to_flax_layout(path, tensors[key])
        cur = var[...]
        if a.shape != cur.shape:
            want = cur.shape if native else to_torch_layout(path, np.zeros(cur.shape)).shape
            report.mismatched.append(f"{key} (file {tuple(np.shape(tensors[key]))}, model {tuple(want)})")
            continue
        updates.append((var, a.astype(cur.dtype)))
    report.unexpected = [k for k in tensors if k not in seen]
    if strict and not report.ok:
        raise WeightsError(
            f"weights do not match the model: {report.summary()}. "
            "Check the architecture options, or load non-strictly (init_strict=False) to keep what matches."
        )
    for var, a in updates:
        var[...] = jnp.asarray(a)
    return report


def _plain_export(model, spec):
    return state_dict(model)


@dataclass(frozen=True)
class Arch:
    """One architecture: how to build it from its spec and how its PyTorch files look.

    name:          spec["arch"], the registry key
    what:          how messages name a file of this family ("an ESRGAN (RRDBNet) model")
    build:         (spec, *, rngs, dtype) -> the Flax module
    detect:        canonical torch state dict -> whether it is this family (variants infer_spec refuses included)
    infer_spec:    state dict -> the JSON-able spec; a WeightsError naming any variant we cannot load faithfully
    from_torch:    the file's keys renamed to our module tree's torch keys (older key layouts, dropped buffers)
    to_torch:      (model, spec) -> what PyTorch users load: their key names and dtypes, every buffer
    pth_wrapper:   how a .pth wraps the state dict ('params_ema', 'params' or None), or spec -> that (families whose
                   layouts come from trainers that wrap differently)
    kind:          'generator' or 'discriminator' (or 'segmenter': SFTGAN's OutdoorSceneSeg, which no upscaling path takes)
    scales:        the upscaling factors a generator supports (a config asking for another is refused by name)
    defaults:      the spec fields a spec may leave out, with the values `build` gives them (the folder's DEFAULTS,
                   plus the default variant's fields for the named-variant models)
    spandrel_gaps: ((applies, message), ...): specs whose exports spandrel/chaiNNer cannot follow (will not load, or
                   load and compute otherwise). `applies(spec)` and a callable `message(spec)` see the spec with
                   `defaults` filled in; `weights.export` warns once for each that applies (`spandrel_warnings`)
    block_of:      for a discriminator, top-level parameter name (the first path entry) -> its block number, None
                   outside any block (what FreezeD freezes by); None where the family has no blocks to freeze
    condition:     for a generator that takes an input besides the image (`model(x, cond)`: SFT-Net's segmentation
                   probabilities), its name ('seg'); None for the image-only generators every generic path runs
    """

    name: str
    what: str
    build: Callable
    detect: Callable
    infer_spec: Callable
    from_torch: Callable = dict
    to_torch: Callable = _plain_export
    pth_wrapper: str | None | Callable = None
    kind: str = "generator"
    scales: tuple = ()
    defaults: dict = field(default_factory=dict, hash=False)
    spandrel_gaps: tuple = ()
    block_of: Callable[[str], int | None] | None = None
    condition: str | None = None

    def full_spec(self, spec) -> dict:
        """`spec` with the fields it leaves out taken from `defaults`."""
        return {**self.defaults, **spec}

    def spandrel_warnings(self, spec) -> list:
        """The messages of the `spandrel_gaps` that apply to this spec, in their order."""
        full = self.full_spec(spec)
        return [message(full) if callable(message) else message for applies, message in self.spandrel_gaps
                if applies(full)]
