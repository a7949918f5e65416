"""The mechanical part of the bridge: Flax paths <-> PyTorch state-dict keys, and layouts.

Our modules mirror the torch module trees, so a torch key is the Flax path joined with dots, with
Flax's leaf names renamed (kernel->weight, scale->weight, mean/var->running_mean/running_var), and
conv kernels transposed OIHW <-> HWIO and linear kernels (O,I) <-> (I,O).
"""
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.common import Buffer

_TO_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}
# Variables that travel with the weights: trainable params, BatchNorm statistics and torch buffers.
EXPORTED = (nnx.Param, nnx.BatchStat, Buffer)


class WeightsError(ValueError):
    """A weights file that cannot be used as asked; the message says what was found and what to do."""


def torch_key(path) -> str:
    *mods, leaf = path
    return ".".join(str(p) for p in (*mods, _TO_TORCH_LEAF.get(leaf, leaf)))


def to_torch_layout(path, a):
    a = np.asarray(a)
    if path[-1] == "kernel" and a.ndim == 4:
        return np.ascontiguousarray(a.transpose(3, 2, 0, 1))
    if path[-1] == "kernel" and a.ndim == 2:
        return np.ascontiguousarray(a.T)
    return a


def to_flax_layout(path, a):
    a = np.asarray(a)
    if path[-1] == "kernel" and a.ndim == 4:
        return np.ascontiguousarray(a.transpose(2, 3, 1, 0))
    if path[-1] == "kernel" and a.ndim == 2:
        return np.ascontiguousarray(a.T)
    return a


def _variables(model):
    return nnx.to_flat_state(nnx.state(model, EXPORTED))


def export_state_dict(model, torch_dtypes=None) -> dict:
    """The model's weights and buffers under torch key names and layouts, as numpy arrays.

    `torch_dtypes` maps a key to the dtype torch stores it in (e.g. int64 index buffers).
    """
    torch_dtypes = torch_dtypes or {}
    out = {}
    for path, var in _variables(model):
        key = torch_key(path)
        a = to_torch_layout(path, np.asarray(var[...]))
        out[key] = a.astype(torch_dtypes.get(key, a.dtype))
    return out


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


def load_state_dict(model, state_dict: dict, strict=True) -> LoadReport:
    """Copy torch-named tensors into the model in place (param dtype float32, buffers keep their dtype).

    Strict (the default) refuses any missing, unexpected or mis-shaped tensor and changes nothing.
    Non-strict loads what matches and returns the report of the rest.
    """
    report = LoadReport()
    updates = []
    seen = set()
    for path, var in _variables(model):
        key = torch_key(path)
        if key not in state_dict:
            report.missing.append(key)
            continue
        seen.add(key)
        a = to_flax_layout(path, state_dict[key])
        cur = var[...]
        if a.shape != cur.shape:
            report.mismatched.append(f"{key} (file {tuple(np.shape(state_dict[key]))}, model {tuple(to_torch_layout(path, np.zeros(cur.shape)).shape)})")
            continue
        updates.append((var, a.astype(cur.dtype)))
    report.unexpected = [k for k in state_dict if k not in seen]
    if strict and not report.ok:
        raise WeightsError(
            f"weights do not match the model: {report.summary()}. "
            "Check the architecture options, or load non-strictly (init_strict=False) to keep what matches."
        )
    for var, a in updates:
        var[...] = jnp.asarray(a)
    return report
