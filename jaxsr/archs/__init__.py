"""Architectures. A JSON-able spec ({"arch": name, "scale": s, ...hyperparameters}) builds a model.

The bridge (`convert/`) infers specs from PyTorch files; configs and jaxsr exports store them.
"""
import importlib

import jax.numpy as jnp

# spec["arch"] -> module with `from_spec(spec, *, rngs, dtype)`; one line per architecture family.
ARCHS = {
    "esrgan": "jaxsr.archs.rrdb",
    "dat": "jaxsr.archs.dat",
}


def build_model(spec, *, rngs=None, dtype=jnp.float32):
    arch = spec.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}")
    return importlib.import_module(ARCHS[arch]).from_spec(spec, rngs=rngs, dtype=dtype)
