"""jaxsr: image super-resolution training in JAX/Flax with a two-way bridge to PyTorch weights."""

__version__ = "0.1.0"
