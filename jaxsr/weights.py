"""Weight files: the one path from a file to a model, and from a model to the files PyTorch users load.

Formats:
- `.pth/.pt/.ckpt/.bin` (torch's zip format) are unpickled by a restricted unpickler that only rebuilds
  tensors as numpy arrays and plain containers: pickled code is refused before it can run, and no torch is
  needed. Legacy (pre-1.6, non-zip) pickles are read only through `torch.load(weights_only=True)`.
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
import re
import struct
import zipfile
from dataclasses import dataclass

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from jaxsr import archs
from jaxsr.archs.bridge import Arch, LoadReport, load_state_dict, state_dict
from jaxsr.errors import WeightsError
from jaxsr.files import atomic_write

SPEC_FILE, NATIVE_WEIGHTS = "spec.json", "weights.safetensors"
SPEC_META_KEY = "jaxsr_spec"  # .safetensors (and wrapped .pth) exports carry the spec in their metadata under this key
TORCH_EXTENSIONS = (".pth", ".pt", ".ckpt", ".bin", ".state")  # .state: read only to name it as a training state

# ----------------------------------------------------------------------------------------- reading torch files

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# Where canonical state dicts hide, in the order spandrel looks (`spandrel/__helpers/canonicalize.py`).
WRAPPER_KEYS = ("model_state_dict", "state_dict", "params_ema", "params-ema", "params", "model", "net")
PREFIXES = ("module.", "netG.")


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *args):
    if not size:
        return np.array(storage[offset])  # a 0-d array (e.g. BatchNorm's num_batches_tracked), not a numpy scalar
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *args):
    return data


class _SafeUnpickler(pickle.Unpickler):
    """Allows tensors, OrderedDicts and plain data; anything else (code) is refused."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("typing", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "Counter"): collections.Counter,  # plain data (e.g. MultiStepLR milestones in training states)
    }

    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise WeightsError(
            f"refusing to unpickle {module}.{name}: this file holds more than tensors (possibly code). "
            "Only plain weight files are loaded; re-save the state dict alone, or as .safetensors."
        )

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage":
            raise WeightsError(f"unsupported persistent object {kind!r} in the pickle")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        return np.frombuffer(raw, dtype=storage_type.dtype, count=numel)


def _read_torch_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
                raise WeightsError(f"{path} is a TorchScript archive; save the model's state_dict instead")
            raise WeightsError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pkl[0][: -len("/data.pkl")] if "/" in pkl[0] else ""
        with archive.open(pkl[0]) as f:
            return _SafeUnpickler(f, archive, prefix).load()


def _read_legacy(path):
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path} uses torch's legacy (pre-1.6) format; install torch to read it, or re-save it") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's safe loader refused a global: say so, and no advice to run it anyway
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise WeightsError(f"refusing to load {path}: this legacy (pre-1.6) file holds more than tensors (possibly code"
                           f"{': ' + found[1] if found else ''}). Only plain weight files are loaded; re-save the state "
                           "dict alone, or as .safetensors") from None
    except Exception as e:
        raise WeightsError(f"cannot read {path}: the file is truncated or corrupt ({type(e).__name__})") from None
    return _to_numpy(obj)


def _to_numpy(obj):
    if hasattr(obj, "detach"):
        t = obj.detach().cpu()
        return t.float().numpy().astype(ml_dtypes.bfloat16) if str(t.dtype) == "torch.bfloat16" else t.numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    return obj


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
        if zipfile.is_zipfile(path):
            obj = _read_torch_zip(path)
        else:
            with open(path, "rb") as f:
                head = f.read(2)
            if head[:1] == b"\x80":  # a pickle: torch's legacy format
                obj = _read_legacy(path)
            else:
                raise WeightsError(f"{path} is not a PyTorch checkpoint (truncated or another format)")
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


def canonical_state_dict(obj):
    """Unwrap params_ema/params/state_dict/model/net and strip module./netG. prefixes (as spandrel does)."""
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
        raise WeightsError(f"the file holds no tensors; top-level keys: {', '.join(map(str, list(sd)[:8]))}")
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
    without torch (`_TorchPickle`): exports need no torch installed, and torch.load(weights_only=True) reads them."""
    obj = collections.OrderedDict((k, _contiguous(v)) for k, v in sd.items())
    obj = {wrapper: obj} if wrapper else obj
    if metadata and wrapper:
        obj["metadata"] = dict(metadata)
    pickler = _TorchPickle()
    data = pickler.dumps(obj)

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", data)
            z.writestr("archive/byteorder", "little")
            for i, a in enumerate(pickler.storages):
                z.writestr(f"archive/data/{i}", a.tobytes())
            z.writestr("archive/version", "3\n")

    atomic_write(path, write, error=WeightsError)


class _TorchPickle:
    """The pickle torch.save writes for a nest of dicts, strings, numbers and tensors (protocol 2): each tensor is
    `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` with its storage a persistent
    id ('storage', torch.<Type>Storage, key, 'cpu', numel) whose bytes go to data/<key> in the zip."""

    _STORAGE = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items()}

    def __init__(self):
        self.storages, self.out = [], bytearray()

    def dumps(self, obj):
        self.out += pickle.PROTO + bytes([2])
        self._save(obj)
        self.out += pickle.STOP
        return bytes(self.out)

    def _global(self, module, name):
        self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode()

    def _str(self, s):
        b = s.encode("utf-8")
        self.out += pickle.BINUNICODE + len(b).to_bytes(4, "little") + b

    def _int(self, n):
        if -(2**31) <= n < 2**31:
            self.out += pickle.BININT + int(n).to_bytes(4, "little", signed=True)
        else:
            b = int(n).to_bytes((int(n).bit_length() + 8) // 8, "little", signed=True)
            self.out += pickle.LONG1 + bytes([len(b)]) + b

    def _tuple(self, items):
        self.out += pickle.MARK
        for x in items:
            self._save(x)
        self.out += pickle.TUPLE

    def _ordered_dict(self):
        self._global("collections", "OrderedDict")
        self.out += pickle.EMPTY_TUPLE + pickle.REDUCE

    def _save(self, obj):
        if isinstance(obj, np.ndarray):
            return self._tensor(obj)
        if isinstance(obj, dict):
            if isinstance(obj, collections.OrderedDict):
                self._ordered_dict()
            else:
                self.out += pickle.EMPTY_DICT
            if obj:
                self.out += pickle.MARK
                for k, v in obj.items():
                    self._save(k)
                    self._save(v)
                self.out += pickle.SETITEMS
        elif isinstance(obj, str):
            self._str(obj)
        elif isinstance(obj, bool):
            self.out += pickle.NEWTRUE if obj else pickle.NEWFALSE
        elif isinstance(obj, (int, np.integer)):
            self._int(int(obj))
        elif isinstance(obj, (float, np.floating)):
            self.out += pickle.BINFLOAT + struct.pack(">d", float(obj))
        elif obj is None:
            self.out += pickle.NONE
        elif isinstance(obj, (tuple, list)):
            self._tuple(obj)
        else:
            raise WeightsError(f"cannot write a {type(obj).__name__} into a .pth (tensors, numbers, strings and dicts only)")

    def _tensor(self, a):
        if a.dtype not in self._STORAGE:
            raise WeightsError(f"cannot write a {a.dtype} tensor into a .pth")
        key = str(len(self.storages))
        self.storages.append(np.ascontiguousarray(a))
        strides = [int(np.prod(a.shape[i + 1:], dtype=np.int64)) for i in range(a.ndim)]
        self._global("torch._utils", "_rebuild_tensor_v2")
        self.out += pickle.MARK
        self.out += pickle.MARK
        self._str("storage")
        self._global("torch", self._STORAGE[a.dtype])
        self._str(key)
        self._str("cpu")
        self._int(a.size)
        self.out += pickle.TUPLE + pickle.BINPERSID
        self._int(0)
        self._tuple(a.shape)
        self._tuple(strides)
        self.out += pickle.NEWFALSE
        self._ordered_dict()
        self.out += pickle.TUPLE + pickle.REDUCE


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


def export(model, spec, path):
    """Write what PyTorch users load: .pth (wrapped as the family's trainers do) or .safetensors (flat)."""
    record = archs.get(spec["arch"])
    sd = record.to_torch(model, spec)
    meta = {SPEC_META_KEY: json.dumps(spec)}
    if os.fspath(path).endswith(".safetensors"):
        write_safetensors(path, sd, meta)
    else:
        write_pth(path, sd, wrapper=record.pth_wrapper, metadata=meta if record.pth_wrapper else None)
