r"""A differentiable parallel-beam Radon transform, its exact adjoint, and filtered back-projection.

The Radon transform of an image :math:`f` integrates it along lines,

.. math::
    (\mathcal R f)(\theta, s) = \int_{\mathbb R} f\big(s\,n_\theta + t\,n_\theta^\perp\big)\,dt,
    \qquad n_\theta = (\cos\theta, \sin\theta),\; n_\theta^\perp = (-\sin\theta, \cos\theta),

and is the forward model of parallel-beam computed tomography (CT). It is discretised
here "ray-driven": an ``[N, N]`` image is the bilinear interpolant of its pixels (zero
outside), with pixel centres at :math:`X = j - (N-1)/2` (column :math:`j`, rightwards)
and :math:`Y = (N-1)/2 - i` (row :math:`i`, upwards), so lengths are in pixels;
each ray is sampled every ``ray_step`` pixels in :math:`t` and the samples are summed
times ``ray_step``. Detectors sit at :math:`s_d = d - (D-1)/2`, one pixel apart; the
default ``D = N`` sees the disk inscribed in the image (like ``skimage``'s
``circle=True``): keep the object inside it. At :math:`\theta = 0` the rays are the
image columns, so ``radon(x, [0.])[:, 0, :] ~= x.sum(1)`` (column sums).

The discrete operator is a sparse matrix with four bilinear weights per ray sample.
`radon` applies it as a gather, and `backproject` applies its transpose as the
matching scatter-add of the same weights, so :math:`\langle\mathcal R x, y\rangle =
\langle x, \mathcal R^\top y\rangle` holds to rounding (tested against
`jax.linear_transpose`). Both loop over chunks of angles (`lax.map` / `lax.scan`) to
bound memory, and both are linear, so ``jax.grad`` and ``jax.vjp`` work through them.

`fbp` is filtered back-projection (Kak & Slaney 1988, Ch. 3): the projections are
filtered along the detector axis by the ramp :math:`|\omega|` (realised as the DFT of
the band-limited spatial Ram-Lak kernel, which gets the DC term right), optionally
apodised (Shepp-Logan), zero-padded against wrap-around, then back-projected:

.. math::
    f \approx \frac{\pi}{2K}\,\mathcal R^\top\big(h * \mathcal R f\big),
    \qquad \hat h(\omega) = 2|\omega|,

with :math:`K` angles in :math:`[0, \pi)` (the factor 2 in :math:`\hat h` and the
:math:`1/2` in :math:`\pi/2K` are ``skimage.transform.iradon``'s convention).

Angles are in radians; `parallel_beam_angles` gives the usual equispaced set in
:math:`[0, \pi)`.

References:
  Radon, J. (1917). Über die Bestimmung von Funktionen durch ihre Integralwerte längs
    gewisser Mannigfaltigkeiten. Ber. Verh. Sächs. Akad. Wiss. Leipzig 69.
  Kak, A. C. & Slaney, M. (1988). Principles of Computerized Tomographic Imaging. IEEE
    Press, Ch. 3 (filtered back-projection and the band-limited Ram-Lak kernel).
  Shepp, L. A. & Logan, B. F. (1974). The Fourier reconstruction of a head section.
    IEEE Trans. Nucl. Sci. 21(3).
  Natterer, F. (2001). The Mathematics of Computerized Tomography. SIAM, Ch. II and V.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jgen.inverse.operators import LinearOperator, make_operator
from jgen.typing import Array

_FILTERS = ("ram-lak", "shepp-logan")
# Elements of the [chunk, B, D, 4T] gather per lax.map step: bounds peak memory.
_CHUNK_ELEMENTS = 1 << 22


def parallel_beam_angles(num_angles: int) -> np.ndarray:
    r"""``num_angles`` equispaced angles :math:`\theta_k = \pi k / K` in :math:`[0, \pi)` (radians)."""
    if isinstance(num_angles, bool) or not isinstance(num_angles, (int, np.integer)) or num_angles < 1:
        raise ValueError(f"parallel_beam_angles: num_angles must be a positive int; "
                         f"received {num_angles!r}.")
    return np.arange(num_angles) * (np.pi / num_angles)


# ------------------------------------------------------------------------------ checks


def _check_image(fn: str, x) -> tuple[Array, bool]:
    """[B, N, N] or [B, N, N, 1] -> ([B, N, N], had_channel)."""
    shape = getattr(x, "shape", None)
    ok = shape is not None and (
        (len(shape) == 3 and shape[1] == shape[2])
        or (len(shape) == 4 and shape[1] == shape[2] and shape[3] == 1)
    )
    if not ok or shape[1] < 2:
        raise ValueError(
            f"{fn}: expects a batch of square single-channel images [B, N, N] or "
            f"[B, N, N, 1] with N >= 2; received shape {shape}. Pad non-square images to "
            f"a square, add a batch axis (x[None]) for one image, and move channels into "
            f"the batch axis for C > 1."
        )
    return (x[..., 0], True) if len(shape) == 4 else (x, False)


def _check_angles(fn: str, angles) -> Array:
    shape = getattr(angles, "shape", np.shape(angles))
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"{fn}: angles must be a non-empty 1-D array of radians, e.g. "
                         f"parallel_beam_angles(180); received shape {tuple(shape)}.")
    if not isinstance(angles, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(angles))):
        raise ValueError(f"{fn}: angles must be finite (radians); received {angles!r}.")
    return jnp.asarray(angles)


def _check_size(fn: str, name: str, n, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}; received {n!r}.")
    return int(n)


def _check_ray_step(fn: str, ray_step) -> float:
    if not (isinstance(ray_step, (int, float, np.number)) and 0 < ray_step <= 1):
        raise ValueError(f"{fn}: ray_step must be a number in (0, 1] (pixels between "
                         f"samples along a ray); received {ray_step!r}.")
    return float(ray_step)


# ------------------------------------------------------------------------- geometry


def _num_ray_samples(n: int, ray_step: float) -> int:
    # The bilinear image is non-zero within (N + 1) / 2 of the centre along each axis,
    # so within (N + 1) / sqrt(2) of it: sample t symmetrically over that range.
    half = math.ceil((n + 1) / math.sqrt(2) / ray_step)
    return 2 * half + 1


def _taps(theta: Array, n: int, num_detectors: int, ray_step: float, dtype):
    """Flat pixel indices and weights of one angle's rays: ([D, 4T] int32, [D, 4T])."""
    t_count = _num_ray_samples(n, ray_step)
    c = (n - 1) / 2.0
    s = jnp.arange(num_detectors, dtype=dtype) - (num_detectors - 1) / 2.0
    t = (jnp.arange(t_count, dtype=dtype) - (t_count - 1) / 2.0) * ray_step
    cos, sin = jnp.cos(theta).astype(dtype), jnp.sin(theta).astype(dtype)
    px = s[:, None] * cos - t[None, :] * sin  # X, [D, T]
    py = s[:, None] * sin + t[None, :] * cos  # Y, [D, T]
    col, row = px + c, c - py
    r0, c0 = jnp.floor(row), jnp.floor(col)
    fr, fc = row - r0, col - c0
    r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
    idx, wts = [], []
    for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                       (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        rr, cc = r0 + dr, c0 + dc
        inside = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
        idx.append(jnp.where(inside, rr * n + cc, 0))
        wts.append(jnp.where(inside, wt, 0.0) * ray_step)
    idx = jnp.concatenate(idx, axis=1)
    wts = jnp.concatenate(wts, axis=1).astype(dtype)
    return idx, wts


def _chunk(num_angles: int, per_angle: int) -> int:
    return max(1, min(num_angles, _CHUNK_ELEMENTS // max(per_angle, 1)))


# ---------------------------------------------------------------------------- public


def radon(x: Array, angles, *, num_detectors: int | None = None, ray_step: float = 1.0) -> Array:
    r"""Parallel-beam Radon transform of square images (ray-driven, bilinear).

    .. math::
        (\mathcal R x)_{k,d} = \Delta t \sum_{m} \tilde x\big(s_d\, n_{\theta_k}
          + t_m\, n^\perp_{\theta_k}\big),

    with :math:`\tilde x` the bilinear interpolant of the pixels (zero outside) and
    :math:`t_m = m\,\Delta t` covering the image. See the module docstring for the
    coordinate conventions (lengths in pixels, :math:`\theta = 0` sums columns).

    Args:
      x: images ``[B, N, N]`` or ``[B, N, N, 1]``.
      angles: ``[K]`` projection angles in radians.
      num_detectors: detector bins ``D`` one pixel apart, centred on the image centre
        (default ``N``: the inscribed disk; use ``ceil(N * sqrt(2))`` to see the corners).
      ray_step: sample spacing :math:`\Delta t` along each ray, in pixels, in (0, 1].

    Returns:
      The sinogram ``[B, K, D]`` (``[B, K, D, 1]`` for ``[B, N, N, 1]`` input).

    Example:
      >>> sino = radon(shepp_logan(64)[None], parallel_beam_angles(180))  # [1, 180, 64]
    """
    fn = "radon"
    x, had_channel = _check_image(fn, x)
    angles = _check_angles(fn, angles)
    b, n = x.shape[0], x.shape[1]
    d = n if num_detectors is None else _check_size(fn, "num_detectors", num_detectors)
    ray_step = _check_ray_step(fn, ray_step)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x_flat = x.reshape(b, n * n).astype(dtype)
    per_angle = b * d * 4 * _num_ray_samples(n, ray_step)

    def one_angle(theta):
        idx, wts = _taps(theta, n, d, ray_step, dtype)
        return jnp.sum(x_flat[:, idx] * wts[None], axis=-1)  # [B, D]

    sino = lax.map(one_angle, angles, batch_size=_chunk(angles.shape[0], per_angle))
    sino = jnp.moveaxis(sino, 0, 1)  # [B, K, D]
    return sino[..., None] if had_channel else sino


def backproject(sinogram: Array, angles, image_size: int, *, ray_step: float = 1.0) -> Array:
    r"""The exact adjoint (transpose) of `radon`: unfiltered back-projection.

    .. math::
        (\mathcal R^\top y)_{ij} = \sum_{k,d} y_{k,d}\,\Delta t \sum_m
          w_{ij}\big(s_d\, n_{\theta_k} + t_m\, n^\perp_{\theta_k}\big),

    where :math:`w_{ij}(p)` is pixel :math:`(i, j)`'s bilinear weight at point
    :math:`p`: each measurement is spread back along its ray with the weights `radon`
    gathered with, so ``sum(radon(x) * y) == sum(x * backproject(y))`` up to rounding.
    The detector count is read from the sinogram.

    Args:
      sinogram: ``[B, K, D]`` or ``[B, K, D, 1]``.
      angles: the ``[K]`` angles (radians) it was measured at.
      image_size: ``N``, the side of the square image.
      ray_step: as in `radon` (must match it for the transpose to be exact).

    Returns:
      Images ``[B, N, N]`` (``[B, N, N, 1]`` for a ``[B, K, D, 1]`` sinogram).
    """
    fn = "backproject"
    angles = _check_angles(fn, angles)
    n = _check_size(fn, "image_size", image_size, minimum=2)
    ray_step = _check_ray_step(fn, ray_step)
    y, had_channel = _check_sinogram(fn, sinogram, angles.shape[0])
    b, k, d = y.shape
    dtype = y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else jnp.float32
    y = y.astype(dtype)
    chunk = _chunk(k, b * d * 4 * _num_ray_samples(n, ray_step))
    pad = (-k) % chunk
    # Padded angles carry zero measurements, hence zero contributions.
    angles_p = jnp.concatenate([angles.astype(dtype), jnp.zeros((pad,), dtype)])
    y_p = jnp.concatenate([y, jnp.zeros((b, pad, d), dtype)], axis=1)
    angles_p = angles_p.reshape(-1, chunk)
    y_p = jnp.moveaxis(y_p.reshape(b, -1, chunk, d), 1, 0)  # [steps, B, chunk, D]

    def step(img, inputs):
        thetas, ys = inputs
        idx, wts = jax.vmap(lambda th: _taps(th, n, d, ray_step, dtype))(thetas)  # [chunk, D, 4T]
        contrib = ys[..., None] * wts[None]  # [B, chunk, D, 4T]
        img = img.at[:, idx.reshape(-1)].add(contrib.reshape(b, -1))
        return img, None

    img, _ = lax.scan(step, jnp.zeros((b, n * n), dtype), (angles_p, y_p))
    img = img.reshape(b, n, n)
    return img[..., None] if had_channel else img


def _check_sinogram(fn: str, sinogram, num_angles: int) -> tuple[Array, bool]:
    shape = getattr(sinogram, "shape", None)
    ok = shape is not None and (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1))
    if not ok or shape[1] != num_angles:
        raise ValueError(
            f"{fn}: expects a sinogram [B, K, D] (or [B, K, D, 1]) with K = len(angles) = "
            f"{num_angles}; received shape {shape}. Add a batch axis (y[None]) for one "
            f"sinogram."
        )
    return (sinogram[..., 0], True) if len(shape) == 4 else (sinogram, False)


def ramp_filter(num_detectors: int, *, filter: str = "ram-lak", dtype=jnp.float32) -> Array:
    r"""The frequency response of the FBP filter on the zero-padded detector axis.

    The spatial Ram-Lak kernel with unit spacing (Kak & Slaney 1988, Sec. 3.3),
    :math:`h_0 = 1/4`, :math:`h_n = -1/(\pi n)^2` for odd :math:`n`, 0 for even, has
    DFT :math:`\approx |\omega|/2` (cycles per sample) with the right DC value;
    the response returned is :math:`2\,\mathrm{Re}\,\mathrm{DFT}(h)` (``skimage``'s
    convention, paired with the :math:`\pi/2K` back-projection weight in `fbp`).
    ``"shepp-logan"`` multiplies it by :math:`\operatorname{sinc}(\omega)`
    (:math:`\sin(\pi\omega)/(\pi\omega)`), damping the highest frequencies.

    Args:
      num_detectors: ``D``; the filter length is ``max(64, 2**ceil(log2(2 D)))``.
      filter: ``"ram-lak"`` or ``"shepp-logan"``.
      dtype: output dtype.

    Returns:
      ``[P]`` real response, ``P`` the padded length.
    """
    if filter not in _FILTERS:
        raise ValueError(f"fbp: filter must be one of {_FILTERS}; received {filter!r}.")
    size = max(64, int(2 ** math.ceil(math.log2(2 * num_detectors))))
    n = np.concatenate([np.arange(1, size // 2 + 1, 2), np.arange(size // 2 - 1, 0, -2)])
    h = np.zeros(size)
    h[0] = 0.25
    h[1::2] = -1.0 / (np.pi * n) ** 2
    response = 2.0 * np.real(np.fft.fft(h))
    if filter == "shepp-logan":
        omega = np.pi * np.fft.fftfreq(size)[1:]
        response[1:] *= np.sin(omega) / omega
    return jnp.asarray(response, dtype)


def fbp(
    sinogram: Array, angles, image_size: int, *, filter: str = "ram-lak", ray_step: float = 1.0
) -> Array:
    r"""Filtered back-projection: the classical analytic CT reconstruction.

    Filters each projection along the detector axis with `ramp_filter` (FFT with zero
    padding to at least twice the detector count, so the circular convolution equals
    the linear one on the detector range), then applies `backproject` and scales by
    :math:`\pi / (2K)`. Exact in the continuum limit for angles equispaced over
    :math:`[0, \pi)`; with few angles it shows the usual streaks.

    Args:
      sinogram: ``[B, K, D]`` or ``[B, K, D, 1]``, e.g. from `radon`.
      angles: the ``[K]`` angles (radians), assumed to cover :math:`[0, \pi)` evenly.
      image_size: ``N`` of the reconstruction.
      filter: ``"ram-lak"`` (the plain ramp) or ``"shepp-logan"`` (ramp times sinc).
      ray_step: as in `radon`.

    Returns:
      Reconstructions ``[B, N, N]`` (``[B, N, N, 1]`` for a 4-D sinogram).

    References:
      Kak & Slaney (1988), Ch. 3.3; Shepp & Logan (1974).
    """
    fn = "fbp"
    angles = _check_angles(fn, angles)
    y, had_channel = _check_sinogram(fn, sinogram, angles.shape[0])
    dtype = y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else jnp.float32
    d = y.shape[2]
    response = ramp_filter(d, filter=filter, dtype=dtype)
    size = response.shape[0]
    spec = jnp.fft.fft(y.astype(dtype), n=size, axis=-1)
    filtered = jnp.real(jnp.fft.ifft(spec * response[None, None], axis=-1))[..., :d]
    filtered = filtered.astype(dtype)
    img = backproject(filtered, angles, image_size, ray_step=ray_step)
    img = img * (jnp.pi / (2 * angles.shape[0]))
    return img[..., None] if had_channel else img


def radon_operator(
    image_size: int, angles, *, num_detectors: int | None = None, ray_step: float = 1.0
) -> LinearOperator:
    """The Radon transform as a `LinearOperator` from ``(N, N)`` to ``(K, D)``.

    ``forward`` is `radon`, ``adjoint`` is `backproject` (its exact transpose); no
    pseudo-inverse is attached (`fbp` is an approximate inverse, not :math:`A^+`; use
    `least_squares` or `jgen.inverse.tv_reconstruct`).

    Args:
      image_size: ``N``.
      angles: ``[K]`` angles in radians (kept as a constant).
      num_detectors: ``D`` (default ``N``).
      ray_step: as in `radon`.

    Returns:
      A `LinearOperator` named ``"radon"``.
    """
    fn = "radon_operator"
    n = _check_size(fn, "image_size", image_size, minimum=2)
    angles = _check_angles(fn, angles)
    d = n if num_detectors is None else _check_size(fn, "num_detectors", num_detectors)
    ray_step = _check_ray_step(fn, ray_step)
    return make_operator(
        lambda x: radon(x, angles, num_detectors=d, ray_step=ray_step),
        lambda y: backproject(y, angles, n, ray_step=ray_step),
        (n, n), (int(angles.shape[0]), d), name="radon",
    )
