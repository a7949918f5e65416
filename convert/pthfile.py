"""Reading and writing PyTorch weight files safely, with no torch needed to read.

`.pth/.pt/.ckpt` (torch's zip format) are unpickled by a restricted unpickler that only knows how to
rebuild tensors as numpy arrays and plain containers: pickled code is refused before it can run.
`.safetensors` is read with the safetensors library. Legacy (pre-1.6, non-zip) pickles are read only
through `torch.load(weights_only=True)` when torch is installed.
"""
import collections
import json
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np

from convert.mapping import WeightsError

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
# Where canonical state dicts hide, in the order spandrel looks (formats.md §2).
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
    except Exception as e:
        raise WeightsError(f"cannot read {path} safely: {str(e).splitlines()[0]}") from None
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
        if ext not in (".pth", ".pt", ".ckpt", ".bin"):
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
    return canonical_state_dict(obj), meta


def write_pth(path, state_dict, wrapper=None, metadata=None):
    """torch.save of plain contiguous tensors, optionally wrapped ({'params_ema': sd}) with metadata."""
    try:
        import torch
    except ImportError:
        raise WeightsError("writing .pth needs torch (pip install torch); .safetensors needs no torch") from None
    sd = collections.OrderedDict((k, torch.from_numpy(_contiguous(v)).contiguous()) for k, v in state_dict.items())
    obj = {wrapper: sd} if wrapper else sd
    if metadata and wrapper:
        obj["metadata"] = metadata
    _atomic_write(path, lambda f: torch.save(obj, f))


def write_safetensors(path, state_dict, metadata=None):
    from safetensors.numpy import save

    data = save({k: _contiguous(v) for k, v in state_dict.items()}, metadata={k: str(v) for k, v in (metadata or {}).items()})
    _atomic_write(path, lambda f: f.write(data))


def _contiguous(a):
    """C-contiguous copy that keeps 0-d arrays 0-d (np.ascontiguousarray makes them shape (1,))."""
    return np.ascontiguousarray(a).reshape(np.shape(a))


def _atomic_write(path, write):
    """Write to a temporary file and rename, so a full disk or a kill never leaves a half-written export."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise WeightsError(f"cannot write {path}: {e.strerror or e}") from None
