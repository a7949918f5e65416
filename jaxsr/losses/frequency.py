"""Frequency-domain losses: compare spectra, whose high frequencies a pixel loss weighs poorly."""
import jax
import jax.numpy as jnp

from jaxsr.losses.pixel import get_criterion


def fft_loss(sr, gt, criterion="l1"):
    """Criterion between |rfft2| (orthonormal) of each channel. The magnitude keeps a tiny floor inside
    the square root so its gradient stays finite where a coefficient is exactly zero."""
    def mag(x):
        f = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm="ortho")
        return jnp.sqrt(f.real**2 + f.imag**2 + 1e-12)

    return get_criterion(criterion)(mag(sr), mag(gt))


def focal_frequency_loss(sr, gt, alpha=1.0, patch_factor=1, ave_spectrum=False, log_matrix=False, batch_matrix=False):
    """Focal frequency loss (Jiang et al., ICCV 2021, arXiv 2012.12821) as the `focal-frequency-loss` package
    computes it: orthonormal 2D DFT of each channel of each patch (patch_factor^2 patches), squared distance of the
    spectra weighted by their distance^alpha normalised to [0, 1] per spectrum (or per batch), the weight held
    constant (no gradient) and 0 where a spectrum matches exactly."""
    n, h, w, c = sr.shape
    p = int(patch_factor)
    if h % p or w % p:
        raise ValueError(f"focal_frequency: patch_factor {p} must divide the image size {h}x{w}")

    def spectrum(x):  # (N, P, C, h/p, w/p) complex, patches in row-major order as the package stacks them
        x = x.astype(jnp.float32).reshape(n, p, h // p, p, w // p, c).transpose(0, 1, 3, 5, 2, 4)
        return jnp.fft.fft2(x.reshape(n, p * p, c, h // p, w // p), norm="ortho")

    fs, fg = spectrum(sr), spectrum(gt)
    if ave_spectrum:
        fs, fg = jnp.mean(fs, 0, keepdims=True), jnp.mean(fg, 0, keepdims=True)
    diff = fs - fg
    dist = diff.real**2 + diff.imag**2
    m = jnp.sqrt(jax.lax.stop_gradient(dist)) ** alpha
    if log_matrix:
        m = jnp.log(m + 1.0)
    m = m / (jnp.max(m) if batch_matrix else jnp.max(m, axis=(-2, -1), keepdims=True))
    m = jnp.clip(jnp.where(jnp.isnan(m), 0.0, m), 0.0, 1.0)
    return jnp.mean(m * dist)
