"""Loading and saving whole models: PyTorch files through the bridge, and jaxsr's own export format.

jaxsr's own format is a folder with `spec.json` (architecture spec) and `weights.safetensors` (Flax
paths and layouts), readable with no torch installed.
"""
import json
import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from convert import pthfile, registry
from convert.mapping import EXPORTED, WeightsError, load_state_dict
from jaxsr.archs import build_model

SPEC_FILE, NATIVE_WEIGHTS = "spec.json", "weights.safetensors"
SPEC_META_KEY = "jaxsr_spec"  # .safetensors exports carry the spec in their metadata under this key


def info_from_spec(spec, source):
    hyper = {k: v for k, v in spec.items() if k not in ("arch", "scale")}
    return {"arch": spec["arch"], "scale": spec["scale"], "in_ch": spec.get("in_ch", 3), "out_ch": spec.get("out_ch", 3), "hyperparameters": hyper, "source": str(source)}


def from_state_dict(sd, *, arch="auto", strict=True, spec=None, dtype=jnp.float32):
    """(model, spec, LoadReport) from a canonical torch state dict; the spec is inferred unless given."""
    bridge = registry.detect(sd, arch)
    spec = spec or bridge.infer_spec(sd)
    model = build_model(spec, dtype=dtype)
    report = load_state_dict(model, bridge.to_model_keys(sd), strict=strict)
    return model, spec, report


def save_native(out_dir, model, spec):
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    flat = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, EXPORTED))}
    save_file(flat, os.path.join(out_dir, NATIVE_WEIGHTS))
    with open(os.path.join(out_dir, SPEC_FILE), "w") as f:
        json.dump(spec, f, indent=2)


def load_native(folder, *, dtype=jnp.float32):
    from safetensors.numpy import load_file

    with open(os.path.join(folder, SPEC_FILE)) as f:
        spec = json.load(f)
    model = build_model(spec, dtype=dtype)
    flat = load_file(os.path.join(folder, NATIVE_WEIGHTS))
    for path, var in nnx.to_flat_state(nnx.state(model, EXPORTED)):
        key = "/".join(map(str, path))
        if key not in flat or flat[key].shape != var[...].shape:
            raise WeightsError(f"{folder}: weights do not match spec.json at {key}")
        var[...] = jnp.asarray(flat[key], dtype=var[...].dtype)
    return model, spec


def load_model(path, *, arch="auto", strict=True, dtype=jnp.float32):
    """(model, info) from a .pth/.safetensors, a jaxsr export folder, or a training workdir."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, SPEC_FILE)):
            model, spec = load_native(path, dtype=dtype)
            return model, info_from_spec(spec, path)
        exports = sorted((p for p in (os.path.join(path, "models", f) for f in os.listdir(os.path.join(path, "models")))
                          if p.endswith(".safetensors")), key=os.path.getmtime) if os.path.isdir(os.path.join(path, "models")) else []
        if not exports:
            raise WeightsError(f"{path} is neither a jaxsr export (no {SPEC_FILE}) nor a workdir with models/*.safetensors")
        path = exports[-1]
    sd, meta = pthfile.read_state_dict(path)
    spec = json.loads(meta[SPEC_META_KEY]) if SPEC_META_KEY in meta else None
    model, spec, report = from_state_dict(sd, arch=arch, strict=strict, spec=spec, dtype=dtype)
    info = info_from_spec(spec, path)
    info["load_report"] = report
    return model, info


def export_torch(model, spec, path):
    """Write what PyTorch users load: .pth (wrapped as the family's trainers do) or .safetensors (flat)."""
    bridge = registry.bridge_for_arch(spec["arch"])
    sd = bridge.export(model, spec)
    if str(path).endswith(".safetensors"):
        pthfile.write_safetensors(path, sd, {SPEC_META_KEY: json.dumps(spec)})
    else:
        pthfile.write_pth(path, sd, wrapper=bridge.pth_wrapper, metadata={SPEC_META_KEY: json.dumps(spec)} if bridge.pth_wrapper else None)
