"""torch's checkpoint format, read and written without torch's unpickler.

- `load(path)`: the object a torch.save'd file holds, its tensors as numpy arrays. torch's zip format goes through a
  restricted unpickler that only rebuilds tensors and plain containers: pickled code is refused before it can run,
  and no torch is needed. Legacy (pre-1.6, non-zip) pickles are read only through `torch.load(weights_only=True)`.
- `writer(obj)`: what writes a nest of dicts, strings, numbers and numpy arrays in torch's zip format, as torch.save
  does, so that torch.load(weights_only=True) reads it; no torch is needed.

`jaxsr.weights` reads and writes weight files through these.
"""
import collections
import pickle
import re
import struct
import zipfile

import ml_dtypes
import numpy as np

from jaxsr.errors import WeightsError

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


def load(path):
    """The object a torch file holds (zip format, or legacy through torch), tensors as numpy arrays. Never executes
    pickled code."""
    if zipfile.is_zipfile(path):
        return _read_torch_zip(path)
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":  # a pickle: torch's legacy format
        return _read_legacy(path)
    raise WeightsError(f"{path} is not a PyTorch checkpoint (truncated or another format)")


# ----------------------------------------------------------------------------------------- writing


def writer(obj):
    """f -> None: writes `obj` (dicts, OrderedDicts, strings, numbers, None, tuples, numpy arrays) to the open binary
    file f in torch's zip format. The pickle is made here, so an object it cannot hold is refused before a file is
    opened."""
    pickler = _TorchPickle()
    data = pickler.dumps(obj)

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", data)
            z.writestr("archive/byteorder", "little")
            for i, a in enumerate(pickler.storages):
                z.writestr(f"archive/data/{i}", a.tobytes())
            z.writestr("archive/version", "3\n")

    return write


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
