"""Frequency-domain loss: compare FFT magnitudes, which a pixel loss weighs poorly at high frequencies."""
import jax.numpy as jnp

from jaxsr.losses.pixel import criterion


def fft_loss(sr, gt, criterion_name="l1"):
    """Criterion between |rfft2| (orthonormal) of each channel. The magnitude keeps a tiny floor inside
    the square root so its gradient stays finite where a coefficient is exactly zero."""
    def mag(x):
        f = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm="ortho")
        return jnp.sqrt(f.real**2 + f.imag**2 + 1e-12)

    return criterion(criterion_name)(mag(sr), mag(gt))
