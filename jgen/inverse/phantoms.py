r"""Ellipse phantoms for computed tomography: Shepp–Logan and random ellipses.

A phantom is a sum of constant-intensity ellipses on the square :math:`[-1, 1]^2`
(:math:`x` rightwards, :math:`y` upwards, so row 0 of the image is :math:`y \approx 1`),
rasterised at pixel centres :math:`x_j = (2j + 1)/N - 1`, :math:`y_i = 1 - (2i + 1)/N`;
``supersample = s`` averages an :math:`s \times s` grid of points per pixel instead
(anti-aliased edges, the fractional area covered). An ellipse
:math:`(\rho, a, b, x_0, y_0, \varphi)` adds :math:`\rho` on

.. math::
    \frac{\big((x - x_0)\cos\varphi + (y - y_0)\sin\varphi\big)^2}{a^2}
    + \frac{\big(-(x - x_0)\sin\varphi + (y - y_0)\cos\varphi\big)^2}{b^2} \le 1 .

`shepp_logan` is the modified Shepp–Logan head phantom of Toft (1996), the
higher-contrast variant (intensities in [0, 1]: skull 1, brain 0.2, ventricles 0,
small tumours 0.3) used by MATLAB's ``phantom('Modified Shepp-Logan')`` and
``skimage.data.shepp_logan_phantom``. It is built from the published table of ten
ellipses (geometry from Shepp & Logan 1974, intensities from Toft 1996, Appendix B),
not from a downloaded image. `random_ellipses` draws phantoms in the same style from a key.

References:
  Shepp, L. A. & Logan, B. F. (1974). The Fourier reconstruction of a head section.
    IEEE Trans. Nucl. Sci. 21(3), 21-43.
  Toft, P. A. (1996). The Radon Transform: Theory and Implementation. PhD thesis,
    Technical University of Denmark, Appendix B.
  Adler, J. & Öktem, O. (2018). Learned primal-dual reconstruction. IEEE Trans. Med.
    Imaging 37(6) (random-ellipse training phantoms).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jgen.typing import Array, PRNGKey

# Modified Shepp-Logan (Toft 1996): intensity, semi-axis a (x), semi-axis b (y),
# centre x0, centre y0, rotation phi in degrees (counter-clockwise from the x axis).
SHEPP_LOGAN_ELLIPSES = np.array([
    [1.0, 0.6900, 0.9200, 0.00, 0.0000, 0.0],
    [-0.8, 0.6624, 0.8740, 0.00, -0.0184, 0.0],
    [-0.2, 0.1100, 0.3100, 0.22, 0.0000, -18.0],
    [-0.2, 0.1600, 0.4100, -0.22, 0.0000, 18.0],
    [0.1, 0.2100, 0.2500, 0.00, 0.3500, 0.0],
    [0.1, 0.0460, 0.0460, 0.00, 0.1000, 0.0],
    [0.1, 0.0460, 0.0460, 0.00, -0.1000, 0.0],
    [0.1, 0.0460, 0.0230, -0.08, -0.6050, 0.0],
    [0.1, 0.0230, 0.0230, 0.00, -0.6060, 0.0],
    [0.1, 0.0230, 0.0460, 0.06, -0.6050, 0.0],
])


def _check_size(fn: str, size, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{fn}: {name} must be a positive int; received {size!r}.")
    return int(size)


def _grid(size: int, supersample: int, dtype) -> tuple[Array, Array]:
    """Sample points (x, y), each [size, size, s*s], s = supersample."""
    s = supersample
    offsets = (jnp.arange(s, dtype=dtype) + 0.5) / s  # within a pixel
    u = (jnp.arange(size, dtype=dtype)[:, None] + offsets[None, :]) * (2.0 / size) - 1.0  # [N, s]
    x = jnp.broadcast_to(u[None, :, None, :], (size, size, s, s))
    y = jnp.broadcast_to(-u[:, None, :, None], (size, size, s, s))
    return x.reshape(size, size, s * s), y.reshape(size, size, s * s)


def render_ellipses(params: Array, size: int, *, supersample: int = 1) -> Array:
    r"""Rasterise a sum of ellipses (the module docstring's convention).

    Args:
      params: ``[E, 6]`` rows ``(intensity, a, b, x0, y0, phi)`` with ``phi`` in
        radians (unlike `SHEPP_LOGAN_ELLIPSES`, which is in degrees as published).
        Rows with intensity 0 contribute nothing.
      size: image side ``N``.
      supersample: points per pixel side (1 = pixel centres).

    Returns:
      ``[N, N]`` image (unclipped).
    """
    fn = "render_ellipses"
    size = _check_size(fn, size)
    supersample = _check_size(fn, supersample, "supersample")
    params = jnp.asarray(params)
    if params.ndim != 2 or params.shape[1] != 6:
        raise ValueError(f"{fn}: params must be [E, 6] rows (intensity, a, b, x0, y0, phi); "
                         f"received shape {params.shape}.")
    dtype = params.dtype if jnp.issubdtype(params.dtype, jnp.floating) else jnp.float32
    x, y = _grid(size, supersample, dtype)

    def one(img, p):
        rho, a, b, x0, y0, phi = p
        dx, dy = x - x0, y - y0
        cos, sin = jnp.cos(phi), jnp.sin(phi)
        u = (dx * cos + dy * sin) / a
        v = (-dx * sin + dy * cos) / b
        return img + jnp.where(u * u + v * v <= 1.0, rho, 0.0), None

    img, _ = jax.lax.scan(one, jnp.zeros(x.shape, dtype), params.astype(dtype))
    return img.mean(axis=-1)


def shepp_logan(size: int, *, supersample: int = 1) -> Array:
    """The modified Shepp–Logan head phantom (Toft 1996), ``[size, size]`` in [0, 1].

    Args:
      size: image side ``N``.
      supersample: points per pixel side; 1 samples pixel centres, larger values give
        the covered fraction (anti-aliased edges).

    Returns:
      float32 ``[N, N]``; e.g. 0.2 (brain) at the centre, 1 (skull) at
      :math:`(x, y) = (0, 0.9)`, 0 (ventricle) at :math:`(0.22, 0)`, 0 outside.

    Example:
      >>> x = shepp_logan(64)[None]  # a batch of one for jgen.inverse.radon
    """
    params = SHEPP_LOGAN_ELLIPSES.copy()
    params[:, 5] = np.deg2rad(params[:, 5])
    img = render_ellipses(jnp.asarray(params, jnp.float32), size, supersample=supersample)
    return jnp.clip(img, 0.0, 1.0)


def random_ellipses(
    key: PRNGKey,
    num: int,
    size: int,
    *,
    num_ellipses: tuple[int, int] = (4, 10),
    supersample: int = 1,
) -> Array:
    r"""Random Shepp–Logan-style phantoms: a body ellipse plus random inner ellipses.

    Each phantom has one "body" ellipse (semi-axes in [0.6, 0.9], intensity in
    [0.5, 1], centre within 0.05 of the origin) and :math:`E - 1` inner ellipses, with
    :math:`E` uniform on ``num_ellipses`` (inclusive): semi-axes in [0.03, 0.3],
    intensity in [-0.5, 0.5] (holes and lesions), any angle, centre uniform on the disk
    of radius 0.6. Every ellipse lies inside the unit disk (centre radius plus largest
    semi-axis < 1), so the phantoms fit the Radon transform's inscribed disk. The sum is
    clipped to [0, 1]. A fixed maximum number of ellipses is drawn and the surplus
    zeroed, so shapes are static and the function can be jitted.

    Args:
      key: PRNG key; the same key gives the same phantoms.
      num: number of phantoms.
      size: image side ``N``.
      num_ellipses: ``(min, max)`` total ellipses per phantom, body included,
        ``1 <= min <= max``.
      supersample: points per pixel side (see `shepp_logan`).

    Returns:
      float32 ``[num, size, size]`` in [0, 1].
    """
    fn = "random_ellipses"
    num = _check_size(fn, num, "num")
    size = _check_size(fn, size)
    ok = (isinstance(num_ellipses, (tuple, list)) and len(num_ellipses) == 2
          and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool)
                  for k in num_ellipses)
          and 1 <= num_ellipses[0] <= num_ellipses[1])
    if not ok:
        raise ValueError(f"{fn}: num_ellipses must be a pair of ints (min, max) with "
                         f"1 <= min <= max; received {num_ellipses!r}.")
    lo, hi = int(num_ellipses[0]), int(num_ellipses[1])

    def one(k):
        kb, kn, ka, kc, kr, kp, ki = jax.random.split(k, 7)
        f32 = jnp.float32
        # Body: large, bright, near the centre (0.05 + 0.9 < 1 keeps it in the disk).
        b_axes = jax.random.uniform(kb, (2,), f32, 0.6, 0.9)
        b_rest = jax.random.uniform(jax.random.fold_in(kb, 1), (4,), f32)
        b_rho = 0.5 + 0.5 * b_rest[0]
        b_r, b_t = 0.05 * jnp.sqrt(b_rest[1]), 2 * jnp.pi * b_rest[2]
        b_phi = jnp.pi * b_rest[3]
        body = jnp.stack([b_rho, b_axes[0], b_axes[1], b_r * jnp.cos(b_t),
                          b_r * jnp.sin(b_t), b_phi])
        # Inner ellipses: 0.6 + 0.3 < 1 keeps them in the disk.
        m = hi - 1
        axes = jax.random.uniform(ka, (m, 2), f32, 0.03, 0.3)
        radius = 0.6 * jnp.sqrt(jax.random.uniform(kr, (m,), f32))  # uniform on the disk
        theta = jax.random.uniform(kc, (m,), f32, 0.0, 2 * jnp.pi)
        phi = jax.random.uniform(kp, (m,), f32, 0.0, jnp.pi)
        rho = jax.random.uniform(ki, (m,), f32, -0.5, 0.5)
        count = jax.random.randint(kn, (), lo, hi + 1) - 1  # inner ellipses used
        rho = jnp.where(jnp.arange(m) < count, rho, 0.0)
        inner = jnp.stack([rho, axes[:, 0], axes[:, 1], radius * jnp.cos(theta),
                           radius * jnp.sin(theta), phi], axis=1)
        params = jnp.concatenate([body[None], inner], axis=0)
        return jnp.clip(render_ellipses(params, size, supersample=supersample), 0.0, 1.0)

    return jax.lax.map(one, jax.random.split(key, num))
