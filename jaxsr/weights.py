"""Weight files: the one path from a file to a model, and from a model to the files PyTorch users load.

Formats:
- `.pth/.pt/.ckpt/.bin` (torch's zip format) are unpickled by a restricted unpickler that only rebuilds
  tensors as numpy arrays and plain containers: pickled code is refused before it can run, and no torch is
  needed. Legacy (pre-1.6, non-zip) pickles are read only through `torch.load(weights_only=True)`. The reader and
  the writer of torch's format are `jaxsr.pth`.
- `.safetensors` through the safetensors library; jaxsr's exports carry their spec in the metadata.
- jaxsr's own folder: `spec.json` (the architecture spec) and `weights.safetensors` (Flax paths and layouts),
  which loads with no torch-format round trip and no torch installed.
- a training workdir: its newest export in `models/`.

`read(path)` turns any of these into a `Weights` (the architecture record, the spec and the tensors);
`Weights.build()` makes the model. `load_model`, the trainer's warm start, `evaluate`, `infer` and the bridge's
command lines all go through it.
"""
import collections
import json
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from jaxsr import archs, pth
from jaxsr.archs.bridge import Arch, LoadReport, load_state_dict, state_dict
from jaxsr.errors import WeightsError
from jaxsr.files import atomic_write

SPEC_FILE, NATIVE_WEIGHTS = "spec.json", "weights.safetensors"
SPEC_META_KEY = "jaxsr_spec"  # .safetensors (and wrapped .pth) exports carry the spec in their metadata under this key
INFO_META_KEY = "jaxsr_info"  # and a deploy mirror its step and validation metrics under this one
TORCH_EXTENSIONS = (".pth", ".pt", ".ckpt", ".bin", ".state")  # .state: read only to name it as a training state

# ----------------------------------------------------------------------------------------- reading torch files

# Where canonical state dicts hide, in the order spandrel looks (`spandrel/__helpers/canonicalize.py`).
# How trainers wrap a network's state dict, the EMA weights first (BasicSR/Real-ESRGAN, neosr and traiNNer `params_ema`,
# StyleGAN-style `g_ema`, training scripts' `net_g`/`netG`/`generator`/`model`); a discriminator's only after them
WRAPPER_KEYS = ("model_state_dict", "state_dict", "params_ema", "params-ema", "g_ema", "net_g_ema", "params", "net_g",
                "netG", "generator", "model", "net", "G", "net_d", "netD", "discriminator")
PREFIXES = ("module.", "netG.")


def read_file(path):
    """Whole object of a weights file: (object, metadata dict). Never executes pickled code."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsError(f"no such file: {path}")
    if os.path.isdir(path):
        raise WeightsError(f"{path} is a folder, expected a .pth/.safetensors file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".safetensors":
            from safetensors import safe_open

            with safe_open(path, framework="numpy") as f:
                meta = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta
        if ext not in TORCH_EXTENSIONS:
            raise WeightsError(f"{path}: unknown weights extension {ext!r}; use .pth, .pt, .ckpt or .safetensors")
        obj = pth.load(path)
    except WeightsError:
        raise
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError, pickle.UnpicklingError, json.JSONDecodeError) as e:
        raise WeightsError(f"cannot read {path}: the file is truncated or corrupt ({type(e).__name__}: {e})") from None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    meta = {}
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        meta = obj["metadata"]
    return obj, meta


def _count_tensors(obj):
    if isinstance(obj, np.ndarray):
        return 1
    if isinstance(obj, dict):
        return sum(_count_tensors(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_count_tensors(v) for v in obj)
    return 0


def canonical_state_dict(obj):
    """Unwrap the trainers' wrappings (WRAPPER_KEYS) and strip module./netG. prefixes (as spandrel does)."""
    sd = obj
    for _ in range(3):
        if not isinstance(sd, dict):
            break
        inner = next((sd[k] for k in WRAPPER_KEYS if isinstance(sd.get(k), dict)), None)
        if inner is None and len(sd) == 1 and isinstance(next(iter(sd.values())), dict):
            inner = next(iter(sd.values()))
        if inner is None:
            break
        sd = inner
    if not isinstance(sd, dict) or not sd:
        raise WeightsError("the file holds no state dict (no tensors found)")
    tensors = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
    if not tensors:
        held = [f"{k} ({_count_tensors(v)} tensors)" if _count_tensors(v) else str(k) for k in list(sd)[:8] for v in [sd[k]]]
        raise WeightsError(f"the file holds no network weights under a name jaxsr knows ({', '.join(WRAPPER_KEYS[:12])}...); "
                           f"it holds: {', '.join(held)}. Save the network's state_dict on its own")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(path):
    """(canonical state dict of numpy arrays, metadata) from any supported weights file."""
    obj, meta = read_file(path)
    if isinstance(obj, dict) and {"optimizers", "schedulers"} <= set(obj):
        raise WeightsError(f"{path} is a BasicSR/traiNNer training state (optimizer and scheduler state, no network "
                           "weights); use the network file saved beside it, experiments/<name>/models/net_g_<iter>.pth")
    return canonical_state_dict(obj), meta


# ----------------------------------------------------------------------------------------- writing torch files


def write_pth(path, sd, wrapper=None, metadata=None):
    """torch's zip format of plain contiguous tensors, optionally wrapped ({'params_ema': sd}) with metadata, written
    without torch (`jaxsr.pth`): exports need no torch installed, and torch.load(weights_only=True) reads them."""
    obj = collections.OrderedDict((k, _contiguous(v)) for k, v in sd.items())
    obj = {wrapper: obj} if wrapper else obj
    if metadata and wrapper:
        obj["metadata"] = dict(metadata)
    atomic_write(path, pth.writer(obj), error=WeightsError)


def write_safetensors(path, sd, metadata=None):
    from safetensors.numpy import save

    data = save({k: _contiguous(v) for k, v in sd.items()}, metadata={k: str(v) for k, v in (metadata or {}).items()})
    atomic_write(path, lambda f: f.write(data), error=WeightsError)


def _contiguous(a):
    """C-contiguous copy that keeps 0-d arrays 0-d (np.ascontiguousarray makes them shape (1,))."""
    return np.ascontiguousarray(a).reshape(np.shape(a))


# ----------------------------------------------------------------------------------------- the one path


@dataclass(frozen=True)
class Weights:
    """What a weights file holds, read but not yet built into a model.

    arch:    the architecture's record
    spec:    the file's spec: stored (spec.json, export metadata) or inferred from the keys
    tensors: torch-named tensors renamed to our module tree (`Arch.from_torch`), or native ones (Flax paths)
    native:  whether `tensors` are in jaxsr's own layout
    source:  the file that was read
    """

    arch: Arch
    spec: dict
    tensors: dict
    native: bool
    source: str

    def load_into(self, model, strict=True) -> LoadReport:
        return load_state_dict(model, self.tensors, strict=strict, native=self.native)

    def build(self, spec=None, *, strict=True, dtype=jnp.float32, rngs=None):
        """(model, LoadReport): the model for `spec` (default: the file's) with these weights in it."""
        model = archs.build(spec or self.spec, rngs=rngs, dtype=dtype)
        return model, self.load_into(model, strict)


def _newest_export(workdir):
    models = os.path.join(workdir, "models")
    exports = [os.path.join(models, f) for f in os.listdir(models) if f.endswith(".safetensors")] if os.path.isdir(models) else []
    if not exports:
        raise WeightsError(f"{workdir} is neither a jaxsr export (no {SPEC_FILE}) nor a workdir with models/*.safetensors")
    return max(exports, key=os.path.getmtime)


def _read_native(folder):
    from safetensors.numpy import load_file

    try:
        with open(os.path.join(folder, SPEC_FILE)) as f:
            spec = json.load(f)
        tensors = load_file(os.path.join(folder, NATIVE_WEIGHTS))
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read the jaxsr export {folder}: {e}") from None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"cannot read the jaxsr export {folder}: {type(e).__name__}: {e}") from None
    return spec, tensors


def read(path, *, arch="auto", kind="generator") -> Weights:
    """Any weights file, folder or workdir as a `Weights`; `arch` other than 'auto' insists on that family."""
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, SPEC_FILE)):
        spec, tensors = _read_native(path)
        record = archs.get(spec.get("arch"))
        if arch not in (None, "auto") and arch != record.name:
            raise WeightsError(f"expected {archs.get(arch).what}, but {path} holds {record.what}")
        if record.kind != kind:
            raise WeightsError(f"{path} holds {record.what}, not a {kind}")
        return Weights(record, spec, tensors, True, path)
    if os.path.isdir(path):
        path = _newest_export(path)
    sd, meta = read_state_dict(path)
    record = archs.detect(sd, arch, kind)
    spec = json.loads(meta[SPEC_META_KEY]) if SPEC_META_KEY in meta else record.infer_spec(sd)
    return Weights(record, spec, record.from_torch(sd), False, path)


def info(spec, source, report=None) -> dict:
    """What `load_model` tells about a model: arch, scale, channels, hyperparameters, source (and the load report)."""
    hyper = {k: v for k, v in spec.items() if k not in ("arch", "scale")}
    out = {"arch": spec["arch"], "scale": spec["scale"], "in_ch": spec.get("in_ch", 3), "out_ch": spec.get("out_ch", 3),
           "hyperparameters": hyper, "source": str(source)}
    if report is not None:
        out["load_report"] = report
    return out


def load_model(path, *, arch="auto", strict=True, dtype=jnp.float32):
    """(model, info) from a .pth/.safetensors, a jaxsr export folder, or a training workdir."""
    w = read(path, arch=arch)
    model, report = w.build(strict=strict, dtype=dtype)
    return model, info(w.spec, w.source, report)


def interpolate(path_a, path_b, alpha):
    """(model, spec): the weights (1 - alpha) * A + alpha * B of two files of one architecture and shape (ESRGAN's
    network interpolation, e.g. a fidelity model and a GAN model trained from it). alpha 0 gives A and 1 gives B bit
    for bit. Integer buffers (index tables, BatchNorm counters) are taken from A."""
    a, b = read(path_a), read(path_b)
    if a.arch is not b.arch:
        raise WeightsError(f"cannot interpolate {a.arch.what} ({path_a}) with {b.arch.what} ({path_b}): the architectures differ")
    model_a, _ = a.build()
    model_b, _ = b.build()
    ta, tb = state_dict(model_a, native=True), state_dict(model_b, native=True)
    bad = [k for k in ta if k not in tb or ta[k].shape != tb[k].shape] + [k for k in tb if k not in ta]
    if bad:
        raise WeightsError(f"cannot interpolate {path_a} with {path_b}: their tensors differ at {', '.join(bad[:4])}"
                           f"{' ...' if len(bad) > 4 else ''} (other hyperparameters); both must have the same spec")
    alpha = float(alpha)
    mixed = {k: ((1.0 - alpha) * v + alpha * tb[k]).astype(v.dtype) if np.issubdtype(v.dtype, np.floating) else v
             for k, v in ta.items()}
    load_state_dict(model_a, mixed, native=True)
    return model_a, a.spec


# ----------------------------------------------------------------------------------------- writing models


def save_native(out_dir, model, spec):
    """jaxsr's own folder: spec.json and weights.safetensors in Flax paths and layouts."""
    from safetensors.numpy import save

    os.makedirs(out_dir, exist_ok=True)
    data = save(state_dict(model, native=True))
    atomic_write(os.path.join(out_dir, NATIVE_WEIGHTS), lambda f: f.write(data), error=WeightsError)
    atomic_write(os.path.join(out_dir, SPEC_FILE), lambda f: json.dump(spec, f, indent=2), mode="w", error=WeightsError)


def export(model, spec, path, info=None):
    """Write what PyTorch users load: .pth (wrapped as the family's trainers do) or .safetensors (flat). Warns for
    each way spandrel/chaiNNer cannot follow this spec (the record's `spandrel_gaps`). `info`: more JSON-able facts
    for the metadata (a deploy mirror's step and metrics), under INFO_META_KEY."""
    record = archs.get(spec["arch"])
    for message in record.spandrel_warnings(spec):
        warnings.warn(message, stacklevel=2)
    sd = record.to_torch(model, spec)
    meta = {SPEC_META_KEY: json.dumps(spec), **({INFO_META_KEY: json.dumps(info)} if info else {})}
    if os.fspath(path).endswith(".safetensors"):
        write_safetensors(path, sd, meta)
    else:
        wrapper = record.pth_wrapper(spec) if callable(record.pth_wrapper) else record.pth_wrapper
        write_pth(path, sd, wrapper=wrapper, metadata=meta if wrapper else None)
