"""jaxsr: image super-resolution training in JAX/Flax with a two-way bridge to PyTorch weights.

    from jaxsr import load_model, upscale
    model, info = load_model("RealESRGAN_x4plus.pth")
    out = upscale(model, img)   # HxWxC float32 in [0,1]
"""

__version__ = "0.1.0"


def load_model(path, **kwargs):
    """(model, info) from a .pth/.safetensors, a jaxsr export folder or a workdir; see `jaxsr.weights.load_model`."""
    from jaxsr.weights import load_model as _load

    return _load(path, **kwargs)


def upscale(model, img, tile=None, **kwargs):
    """Upscale an HxWxC float32 image in [0,1]; `tile`, `overlap`, `seam`... as `jaxsr.infer.upscale`."""
    from jaxsr.infer import upscale as _upscale

    return _upscale(model, img, tile=tile, **kwargs)
