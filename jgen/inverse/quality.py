r"""Full-reference image quality of reconstructions: SSIM (Gaussian window) and PSNR.

`ssim` is the structural similarity index of Wang et al. (2004) with their Gaussian
weighting: local means, variances and the covariance are Gaussian-weighted averages
(standard deviation :math:`\sigma = 1.5` pixels), and

.. math::
    \mathrm{SSIM}(x, y) = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
                               {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
    \qquad C_1 = (K_1 L)^2,\; C_2 = (K_2 L)^2,

with :math:`K_1 = 0.01`, :math:`K_2 = 0.03` and L the data range, averaged over the
pixels whose window lies inside the image and over the channels. The window is the
Gaussian truncated at radius :math:`r = \lfloor 3.5\sigma + 0.5\rfloor` and
renormalised (SciPy's ``gaussian_filter`` with ``truncate=3.5``), so the mean runs over
the :math:`(H - 2r) \times (W - 2r)` interior; this is exactly
``skimage.metrics.structural_similarity(x, y, data_range=L, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, channel_axis=-1)`` (which computes the maps with
reflected borders and then crops r pixels, the same numbers). The variances are the
population (weighted) ones, as in Wang et al.; scikit-image's default
``use_sample_covariance=True`` scales them by :math:`N_w/(N_w - 1)`.

`psnr` is :math:`10\log_{10}(L^2/\mathrm{MSE})` per image.

References:
  Wang, Z., Bovik, A. C., Sheikh, H. R. & Simoncelli, E. P. (2004). Image quality
    assessment: from error visibility to structural similarity. IEEE Trans. Image
    Process. 13(4), 600-612. https://doi.org/10.1109/TIP.2003.819861 (Eqs. 13-16;
    Sec. III-B, the 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03.)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jgen.typing import Array


def _check_pair(fn: str, x, y) -> tuple[Array, Array]:
    xs, ys = getattr(x, "shape", None), getattr(y, "shape", None)
    if xs is None or ys is None or tuple(xs) != tuple(ys) or len(xs) not in (3, 4):
        raise ValueError(f"{fn}: expects two batches of images of the same shape, [B, H, W] or [B, H, W, C] "
                         f"(channels last); received shapes {xs} and {ys}. Add a batch axis (x[None]) for "
                         f"one image.")
    x, y = jnp.asarray(x), jnp.asarray(y)
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    return x.astype(dtype), y.astype(dtype)


def _check_range(fn: str, data_range) -> float:
    ok = isinstance(data_range, (int, float, np.number)) and not isinstance(data_range, bool)
    if not ok or not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"{fn}: data_range must be a positive number (1.0 for images in [0, 1], 255.0 "
                         f"for 8-bit pixels); received {data_range!r}.")
    return float(data_range)


def gaussian_window(sigma: float, truncate: float = 3.5) -> np.ndarray:
    """The normalised 1-D Gaussian window of SciPy's ``gaussian_filter``: radius
    ``int(truncate * sigma + 0.5)``, float64 ``[2r + 1]``."""
    if not (isinstance(sigma, (int, float, np.number)) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"ssim: sigma must be a positive number of pixels; received {sigma!r}.")
    r = int(truncate * float(sigma) + 0.5)
    u = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (u / float(sigma)) ** 2)
    return w / w.sum()


def _filter_valid(v: Array, w: np.ndarray) -> Array:
    """Separable correlation of [B, H, W, C] with w along H and W, 'valid' part only."""
    k = w.shape[0]
    h, wd = v.shape[1] - k + 1, v.shape[2] - k + 1
    wj = jnp.asarray(w, v.dtype)
    v = sum(wj[i] * v[:, i:i + h] for i in range(k))
    return sum(wj[i] * v[:, :, i:i + wd] for i in range(k))


def ssim(x: Array, y: Array, *, data_range: float = 1.0, sigma: float = 1.5, truncate: float = 3.5,
         k1: float = 0.01, k2: float = 0.03) -> Array:
    r"""Mean structural similarity of each image pair (Wang et al. 2004, Gaussian window).

    Args:
      x, y: images ``[B, H, W]`` or ``[B, H, W, C]`` (same shape), on a scale of width
        `data_range`.
      data_range: L, e.g. 1.0 for [0, 1] images.
      sigma: the Gaussian window's standard deviation in pixels (1.5 in Wang et al.;
        smaller for images under 11 pixels across, e.g. 0.75 for 8x8).
      truncate: window radius in standard deviations (SciPy's default 4.0 is not used:
        3.5 gives Wang et al.'s 11x11 window at sigma = 1.5).
      k1, k2: the stabilising constants' factors.

    Returns:
      ``[B]`` SSIM in [-1, 1] (1 iff x = y), averaged over the window positions inside the
      image and over channels.

    Raises:
      ValueError: shapes that differ or are not image batches, a bad data_range or sigma,
        or a window larger than the image.

    Example:
      >>> ssim(reconstruction, ground_truth, data_range=1.0)  # [B]
    """
    fn = "ssim"
    x, y = _check_pair(fn, x, y)
    data_range = _check_range(fn, data_range)
    w = gaussian_window(sigma, truncate)
    if x.ndim == 3:
        x, y = x[..., None], y[..., None]
    r = w.shape[0] // 2
    if min(x.shape[1], x.shape[2]) <= 2 * r:
        raise ValueError(f"{fn}: the {w.shape[0]}x{w.shape[0]} window (sigma={sigma}, radius {r}) does not fit in "
                         f"images of {x.shape[1]}x{x.shape[2]}; use a smaller sigma (e.g. 0.75 for 8x8 images: "
                         f"radius 3).")
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # Moments of the images minus their own means (variances are shift-invariant): fewer
    # digits lost in E[x^2] - E[x]^2 than with raw pixels, in float32.
    x_bar, y_bar = jnp.mean(x, axis=(1, 2), keepdims=True), jnp.mean(y, axis=(1, 2), keepdims=True)
    xc, yc = x - x_bar, y - y_bar
    mxc, myc = _filter_valid(xc, w), _filter_valid(yc, w)
    vx = _filter_valid(xc * xc, w) - mxc * mxc
    vy = _filter_valid(yc * yc, w) - myc * myc
    cxy = _filter_valid(xc * yc, w) - mxc * myc
    mx, my = mxc + x_bar, myc + y_bar
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(1, 2, 3))


def psnr(x: Array, y: Array, *, data_range: float = 1.0) -> Array:
    r"""Peak signal-to-noise ratio per image, :math:`10\log_{10}(L^2/\mathrm{MSE})` in dB.

    Args:
      x, y: images ``[B, ...]`` of the same shape (the batch axis first).
      data_range: L (1.0 for [0, 1] images).

    Returns:
      ``[B]`` PSNR in dB (``inf`` for identical images).
    """
    fn = "psnr"
    xs, ys = getattr(x, "shape", None), getattr(y, "shape", None)
    if xs is None or ys is None or tuple(xs) != tuple(ys) or len(xs) < 2:
        raise ValueError(f"{fn}: expects two batches of the same shape [B, ...]; received shapes {xs} and {ys}.")
    data_range = _check_range(fn, data_range)
    x, y = jnp.asarray(x), jnp.asarray(y)
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x, y = x.astype(dtype), y.astype(dtype)
    mse = jnp.mean(jnp.reshape((x - y) ** 2, (x.shape[0], -1)), axis=1)
    return 10.0 * jnp.log10(data_range ** 2 / mse)


def ssim_sigma_for(height: int, width: int) -> float:
    """Wang et al.'s sigma = 1.5 if its window fits the image, else the largest of
    1.0, 0.75, 0.5 that does (for small images such as 8x8 digits)."""
    for sigma in (1.5, 1.0, 0.75, 0.5):
        if 2 * int(3.5 * sigma + 0.5) < min(height, width):
            return sigma
    raise ValueError(f"ssim: images of {height}x{width} are too small for a Gaussian SSIM window.")


__all__ = ["gaussian_window", "psnr", "ssim", "ssim_sigma_for"]
