r"""Linear measurement operators for inverse problems :math:`y = A x + \text{noise}`.

A `LinearOperator` bundles the forward map :math:`A`, its adjoint :math:`A^\top` (the
transpose with respect to the Euclidean inner product, so that
:math:`\langle A x, y\rangle = \langle x, A^\top y\rangle` exactly), optionally a
pseudo-inverse :math:`A^+`, and the per-example shapes. All three are pure functions on
batches, ``[B, *in_shape] -> [B, *out_shape]``; images are channels-last,
``[B, H, W]`` or ``[B, H, W, C]``. The constructors cover the classical image restoration
tasks used by diffusion posterior samplers (Kawar et al. 2022; Chung et al. 2023):

* `masking` (inpainting), :math:`A = A^\top = A^+ = \operatorname{diag}(m)`;
* `downsampling` (super-resolution by average pooling);
* `rgb_to_gray` (colorization);
* `blur` (deblurring, a circular 2-D convolution);

and `compose` chains them (blur then downsample is the usual super-resolution model).
`least_squares` solves :math:`\min_x \|Ax - y\|^2 + \lambda\|x\|^2` by conjugate
gradients on the normal equations (CGLS) in one `lax.fori_loop`, and `operator_norm`
estimates :math:`\|A\|_2` by power iteration, both on device.

References:
  Hestenes, M. R. & Stiefel, E. (1952). Methods of conjugate gradients for solving linear
    systems. J. Res. Nat. Bur. Standards 49(6).
  Björck, Å. (1996). Numerical Methods for Least Squares Problems, Sec. 7.4 (CGLS). SIAM.
  Kawar, B., Elad, M., Ermon, S. & Song, J. (2022). Denoising Diffusion Restoration
    Models. NeurIPS. https://arxiv.org/abs/2201.11793
  Chung, H., Kim, J., Mccann, M. T., Klasky, M. L. & Ye, J. C. (2023). Diffusion
    Posterior Sampling for General Noisy Inverse Problems. ICLR.
    https://arxiv.org/abs/2209.14687
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jgen.typing import Array, PRNGKey

BatchFn = Callable[[Array], Array]  # [B, *in_shape] -> [B, *out_shape]


@dataclasses.dataclass(frozen=True)
class LinearOperator:
    """A linear map between batches of arrays, with its adjoint.

    Attributes:
      forward: ``x [B, *in_shape] -> A x [B, *out_shape]``.
      adjoint: ``y [B, *out_shape] -> A^T y [B, *in_shape]``, the exact transpose of
        `forward`: ``sum(forward(x) * y) == sum(x * adjoint(y))``.
      in_shape: per-example input shape, e.g. ``(64, 64, 3)``.
      out_shape: per-example output shape.
      pinv: optional ``y [B, *out_shape] -> A^+ y [B, *in_shape]``, the Moore–Penrose
        pseudo-inverse (``None`` where it has no cheap closed form).
      name: a short label used in error messages.

    The functions close over static data (masks, kernels, angles), so an operator is
    passed to jitted code by closure (or as a static argument), not as a traced pytree.
    """

    forward: BatchFn
    adjoint: BatchFn
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    pinv: BatchFn | None = None
    name: str = "linear"


# ----------------------------------------------------------------------------- checks


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_shape_arg(fn: str, shape, what: str = "image_shape") -> tuple[int, ...]:
    ok = isinstance(shape, (tuple, list)) and len(shape) >= 1 and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape
    )
    if not ok:
        raise ValueError(
            f"{fn}: {what} must be a tuple of positive ints without the batch axis, "
            f"e.g. (64, 64) or (64, 64, 3); received {shape!r}."
        )
    return tuple(int(d) for d in shape)


def check_image_shape(fn: str, shape) -> tuple[int, ...]:
    """Validate an image shape `(H, W)` or `(H, W, C)` (no batch axis); returns it as ints."""
    shape = _check_shape_arg(fn, shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{fn}: image_shape must be (H, W) or (H, W, C) (channels last, no batch axis); "
            f"received {shape!r}."
        )
    return shape


def check_batch(x: Array, shape: tuple[int, ...], where: str) -> Array:
    """Raise a clear ValueError unless ``x.shape == (B, *shape)``; returns ``x``."""
    xs = getattr(x, "shape", None)
    if xs is None or len(xs) != len(shape) + 1 or tuple(xs[1:]) != tuple(shape):
        hint = ""
        if xs is not None and tuple(xs) == tuple(shape):
            hint = " Add a leading batch axis, e.g. x[None], for a single example."
        raise ValueError(
            f"{where} expects a batch of shape [B, *{tuple(shape)}]; received shape "
            f"{None if xs is None else tuple(xs)}.{hint}"
        )
    return x


def make_operator(
    forward: BatchFn,
    adjoint: BatchFn,
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    *,
    pinv: BatchFn | None = None,
    name: str = "linear",
) -> LinearOperator:
    """Build a `LinearOperator` whose functions check their input shapes.

    Args:
      forward, adjoint, pinv: batch functions as in `LinearOperator` (unchecked).
      in_shape, out_shape: per-example shapes (no batch axis).
      name: label for error messages.

    Returns:
      A `LinearOperator` whose functions raise a ValueError naming the received shape
      when given a batch of the wrong shape.
    """
    in_shape = _check_shape_arg("make_operator", in_shape, "in_shape")
    out_shape = _check_shape_arg("make_operator", out_shape, "out_shape")

    def wrap(fn, shape, label):
        if fn is None:
            return None

        def checked(z):
            return fn(check_batch(z, shape, f"{name}.{label}"))

        return checked

    return LinearOperator(
        forward=wrap(forward, in_shape, "forward"),
        adjoint=wrap(adjoint, out_shape, "adjoint"),
        in_shape=in_shape,
        out_shape=out_shape,
        pinv=wrap(pinv, out_shape, "pinv"),
        name=name,
    )


# ------------------------------------------------------------------------ constructors


def masking(mask) -> LinearOperator:
    r"""Inpainting: keep the observed entries, zero the rest.

    :math:`A x = m \odot x` with a binary mask :math:`m`. :math:`A` is an orthogonal
    projection, so :math:`A = A^\top = A^+`. The measurement keeps the image's shape;
    its range is :math:`\{y : m \odot y = y\}` and :math:`A A^+ y = y` there.

    Args:
      mask: array of 0/1 (or bool) with the per-example shape, e.g. ``[H, W]`` or
        ``[H, W, C]``; broadcasting is not applied (repeat a ``[H, W, 1]`` mask
        over channels yourself).

    Returns:
      A `LinearOperator` with ``in_shape == out_shape == mask.shape``.

    Example:
      >>> A = masking(jnp.ones((8, 8)).at[2:5, 2:5].set(0))
      >>> A.forward(jnp.ones((1, 8, 8))).sum()
      Array(55., dtype=float32)
    """
    shape = getattr(mask, "shape", None)
    if shape is None or len(shape) < 1 or 0 in shape:
        raise ValueError(f"masking: mask must be a non-empty array, e.g. [H, W]; "
                         f"received {type(mask).__name__} with shape {shape}.")
    if not _is_tracer(mask):
        m = np.asarray(mask)
        if not np.all((m == 0) | (m == 1)):
            bad = m[(m != 0) & (m != 1)].ravel()[:3]
            raise ValueError(
                f"masking: mask must be binary (0/1 or bool) so that A is a projection; "
                f"received values such as {bad.tolist()}. Threshold a soft mask first, "
                f"e.g. mask > 0.5."
            )
    m = jnp.asarray(mask)
    shape = tuple(int(d) for d in shape)

    def apply(x):
        return x * m[None].astype(x.dtype)

    return make_operator(apply, apply, shape, shape, pinv=apply, name="masking")


def downsampling(factor: int, image_shape: Sequence[int]) -> LinearOperator:
    r"""Super-resolution: average pooling over ``factor x factor`` blocks.

    :math:`(A x)_{ij} = f^{-2}\sum_{u,v<f} x_{fi+u,\,fj+v}` per channel. Its adjoint is
    nearest-neighbour upsampling divided by :math:`f^2`; since
    :math:`A A^\top = f^{-2} I`, the pseudo-inverse
    :math:`A^+ = A^\top (A A^\top)^{-1}` is plain nearest-neighbour upsampling, a right
    inverse (:math:`A A^+ = I`) whose output is the least-norm preimage.

    Args:
      factor: positive int dividing H and W.
      image_shape: ``(H, W)`` or ``(H, W, C)``.

    Returns:
      A `LinearOperator` from ``(H, W[, C])`` to ``(H/f, W/f[, C])``.
    """
    fn = "downsampling"
    image_shape = check_image_shape(fn, image_shape)
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"{fn}: factor must be a positive int; received {factor!r}.")
    factor = int(factor)
    h, w = image_shape[:2]
    if h % factor or w % factor:
        raise ValueError(
            f"{fn}: factor {factor} must divide the image height and width; received "
            f"image_shape {image_shape}. Crop or pad the image to a multiple of {factor}."
        )
    rest = image_shape[2:]
    out_shape = (h // factor, w // factor, *rest)

    def forward(x):
        b = x.shape[0]
        x = x.reshape(b, h // factor, factor, w // factor, factor, *rest)
        return x.mean(axis=(2, 4))

    def upsample(y):
        return jnp.repeat(jnp.repeat(y, factor, axis=1), factor, axis=2)

    def adjoint(y):
        return upsample(y) / factor**2

    return make_operator(forward, adjoint, image_shape, out_shape, pinv=upsample,
                         name="downsampling")


def rgb_to_gray(
    image_shape: Sequence[int], weights: Sequence[float] = (0.299, 0.587, 0.114)
) -> LinearOperator:
    r"""Colorization: a weighted sum over channels, :math:`(Ax)_{ij} = \sum_c w_c x_{ijc}`.

    The adjoint broadcasts back, :math:`(A^\top y)_{ijc} = w_c\, y_{ij}`; since
    :math:`A A^\top = \|w\|^2 I` the pseudo-inverse is
    :math:`A^+ y = w\, y / \|w\|^2` (a right inverse). The default weights are ITU-R
    BT.601 luma.

    Args:
      image_shape: ``(H, W)`` or ``(H, W, C)`` with ``C == len(weights)``.
      weights: the channel weights, not all zero.

    Returns:
      A `LinearOperator` from ``(H, W, C)`` to ``(H, W, 1)``.
    """
    fn = "rgb_to_gray"
    image_shape = check_image_shape(fn, image_shape)
    w_np = np.asarray(weights, dtype=np.float64)
    if w_np.ndim != 1 or w_np.size == 0 or not np.all(np.isfinite(w_np)) or not np.any(w_np):
        raise ValueError(f"{fn}: weights must be a non-empty 1-D sequence of finite numbers, "
                         f"not all zero; received {weights!r}.")
    c = w_np.size
    if len(image_shape) == 3 and image_shape[2] != c:
        raise ValueError(f"{fn}: image_shape has {image_shape[2]} channels but {c} weights "
                         f"were given; received image_shape {image_shape}, weights {weights!r}.")
    in_shape = (*image_shape[:2], c)
    out_shape = (*image_shape[:2], 1)
    sq = float(np.sum(w_np**2))

    def forward(x):
        return jnp.sum(x * jnp.asarray(w_np, x.dtype)[None, None, None], axis=-1, keepdims=True)

    def adjoint(y):
        return y * jnp.asarray(w_np, y.dtype)[None, None, None]

    def pinv(y):
        return y * jnp.asarray(w_np / sq, y.dtype)[None, None, None]

    return make_operator(forward, adjoint, in_shape, out_shape, pinv=pinv, name="rgb_to_gray")


def gaussian_kernel(size: int, sigma: float) -> Array:
    r"""A normalised 2-D Gaussian kernel, :math:`k_{uv} \propto e^{-(u^2+v^2)/(2\sigma^2)}`.

    Args:
      size: odd positive int; the kernel is ``[size, size]`` centred at ``size // 2``.
      sigma: positive standard deviation in pixels.

    Returns:
      float32 ``[size, size]`` summing to 1.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_kernel: size must be an odd positive int so the kernel "
                         f"has a centre pixel; received {size!r}.")
    if not (isinstance(sigma, (int, float, np.number)) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"gaussian_kernel: sigma must be a positive finite number; "
                         f"received {sigma!r}.")
    u = np.arange(size) - size // 2
    g = np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2.0 * float(sigma) ** 2))
    return jnp.asarray(g / g.sum(), dtype=jnp.float32)


def _circular_correlate(x: Array, k: Array, pad: tuple[tuple[int, int], tuple[int, int]]):
    """out[i, j] = sum_{u, v} k[u, v] * xpad[i + u, j + v], xpad = wrap-padded x, per channel."""
    squeeze = x.ndim == 3
    if squeeze:
        x = x[..., None]
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), pad[0], pad[1], (0, 0)), mode="wrap")
    # Channels into the batch axis: one [kh, kw] filter applied to every channel.
    x = jnp.moveaxis(x, 3, 1).reshape(b * c, 1, *x.shape[1:3])
    out = lax.conv_general_dilated(
        x, k.astype(x.dtype)[None, None], window_strides=(1, 1), padding="VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=lax.Precision.HIGHEST,
    )
    out = jnp.moveaxis(out.reshape(b, c, h, w), 1, 3)
    return out[..., 0] if squeeze else out


def blur(kernel, image_shape: Sequence[int]) -> LinearOperator:
    r"""Deblurring: a 2-D circular convolution with ``kernel``, the same for every channel.

    .. math::
        (A x)_{ij} = \sum_{u,v} k_{uv}\, x_{(i - u + c_h) \bmod H,\; (j - v + c_w) \bmod W},
        \qquad c = (\lfloor k_h/2\rfloor, \lfloor k_w/2\rfloor).

    Padding is circular (periodic) rather than zero: then :math:`A` is diagonalised by the
    2-D DFT and its adjoint is *exactly* the circular convolution with the flipped
    kernel (a correlation with :math:`k`), :math:`(A^\top y)_{ij} = \sum_{u,v} k_{uv}\,
    y_{(i + u - c_h) \bmod H,\,(j + v - c_w) \bmod W}`; with zero padding the adjoint
    would need the transposed padding too. Images with dark borders see no difference;
    otherwise the wrap-around affects a band of half the kernel's width. No closed-form
    pseudo-inverse is attached (``pinv=None``); use `least_squares`.

    Args:
      kernel: ``[kh, kw]`` finite real array, no larger than the image, not all zero.
        Even sizes are allowed (the centre is ``kh // 2, kw // 2``).
      image_shape: ``(H, W)`` or ``(H, W, C)``.

    Returns:
      A `LinearOperator` with ``in_shape == out_shape == image_shape``.
    """
    fn = "blur"
    image_shape = check_image_shape(fn, image_shape)
    shape = getattr(kernel, "shape", None)
    if shape is None or len(shape) != 2 or 0 in shape:
        raise ValueError(
            f"{fn}: kernel must be a non-empty 2-D array [kh, kw] (one kernel for all "
            f"channels); received {type(kernel).__name__} with shape {shape}. For a 1-D "
            f"kernel k use jnp.outer(k, k)."
        )
    kh, kw = int(shape[0]), int(shape[1])
    h, w = image_shape[:2]
    if kh > h or kw > w:
        raise ValueError(f"{fn}: kernel {tuple(shape)} is larger than the image {(h, w)}; "
                         f"crop the kernel or use a larger image.")
    if not _is_tracer(kernel):
        k_np = np.asarray(kernel)
        if not np.issubdtype(k_np.dtype, np.number) or np.iscomplexobj(k_np):
            raise ValueError(f"{fn}: kernel must be real; received dtype {k_np.dtype}.")
        if not np.all(np.isfinite(k_np)) or not np.any(k_np):
            raise ValueError(f"{fn}: kernel must be finite and not all zero; received "
                             f"{k_np.tolist() if k_np.size <= 9 else 'an array'} of shape {shape}.")
    k = jnp.asarray(kernel)
    ch, cw = kh // 2, kw // 2

    def forward(x):  # convolution = correlation with the flipped kernel
        return _circular_correlate(x, k[::-1, ::-1], ((kh - 1 - ch, ch), (kw - 1 - cw, cw)))

    def adjoint(y):  # correlation with the kernel itself
        return _circular_correlate(y, k, ((ch, kh - 1 - ch), (cw, kw - 1 - cw)))

    return make_operator(forward, adjoint, image_shape, image_shape, name="blur")


def compose(outer: LinearOperator, inner: LinearOperator) -> LinearOperator:
    r"""The product :math:`A = A_\text{outer} A_\text{inner}`, with
    :math:`A^\top = A_\text{inner}^\top A_\text{outer}^\top`.

    No pseudo-inverse is attached (that of a product is not the product of
    pseudo-inverses in general).

    Args:
      outer: applied second.
      inner: applied first; ``inner.out_shape`` must equal ``outer.in_shape``.

    Returns:
      A `LinearOperator` from ``inner.in_shape`` to ``outer.out_shape``.

    Example:
      >>> sr = compose(downsampling(4, (64, 64, 3)), blur(gaussian_kernel(9, 2.0), (64, 64, 3)))
    """
    if inner.out_shape != outer.in_shape:
        raise ValueError(
            f"compose: inner.out_shape {inner.out_shape} ({inner.name}) must equal "
            f"outer.in_shape {outer.in_shape} ({outer.name}); check the argument order, "
            f"compose(outer, inner) applies inner first."
        )
    return LinearOperator(
        forward=lambda x: outer.forward(inner.forward(x)),
        adjoint=lambda y: inner.adjoint(outer.adjoint(y)),
        in_shape=inner.in_shape,
        out_shape=outer.out_shape,
        pinv=None,
        name=f"{outer.name}*{inner.name}",
    )


# ---------------------------------------------------------------------------- solvers


def normal_op(A: LinearOperator) -> BatchFn:
    r"""The normal operator :math:`x \mapsto A^\top A x`, ``[B, *in_shape] -> [B, *in_shape]``."""
    return lambda x: A.adjoint(A.forward(x))


def _bdot(a: Array, b: Array) -> Array:
    """Per-example inner product, [B, ...] x [B, ...] -> [B]."""
    return jnp.sum(a * b, axis=tuple(range(1, a.ndim)))


def _bcast(s: Array, like: Array) -> Array:
    """[B] -> [B, 1, ..., 1] to multiply an array shaped like `like`."""
    return s.reshape(s.shape + (1,) * (like.ndim - 1))


def _safe_div(num: Array, den: Array) -> Array:
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def least_squares(
    A: LinearOperator,
    y: Array,
    *,
    num_iters: int,
    lam: float = 0.0,
    x0: Array | None = None,
    tol: float | None = None,
) -> Array:
    r"""Regularised least squares by conjugate gradients on the normal equations (CGLS).

    Minimises, independently for every example of the batch,

    .. math:: \|A x - y\|_2^2 + \lambda \|x\|_2^2,

    i.e. solves :math:`(A^\top A + \lambda I)\,x = A^\top y` by CG without forming
    :math:`A^\top A` (CGLS, Björck 1996, Sec. 7.4, with the shift :math:`\lambda`): per step,
    one `A.forward` and one `A.adjoint`. In exact arithmetic CG terminates in at most
    ``dim(x)`` steps; started from ``x0 = 0`` with :math:`\lambda = 0` its iterates stay
    in :math:`\operatorname{range}(A^\top)`, so it converges to the minimum-norm
    least-squares solution :math:`A^+ y`. Runs in one `lax.fori_loop`. An example stops
    (its iterate is frozen) once the normal-equation residual
    :math:`s_k = A^\top(y - Ax_k) - \lambda x_k` satisfies
    :math:`\|s_k\| \le \text{tol}\,\|s_0\|`: past convergence, rounding makes CG's
    search directions drift and the iterate can wander off, so do not set ``tol = 0``
    together with many more steps than needed.

    Args:
      A: the measurement operator.
      y: measurements ``[B, *A.out_shape]``.
      num_iters: number of CG steps (a static non-negative int).
      lam: Tikhonov weight :math:`\lambda \ge 0`.
      x0: optional start ``[B, *A.in_shape]`` (default zeros).
      tol: relative residual at which an example stops; default ``10 * eps`` of the
        dtype (about ``2e-15`` in float64, ``1e-6`` in float32).

    Returns:
      ``x [B, *A.in_shape]``.

    References:
      Hestenes & Stiefel (1952); Björck (1996), Sec. 7.4.
    """
    fn = "least_squares"
    if isinstance(num_iters, bool) or not isinstance(num_iters, (int, np.integer)) or num_iters < 0:
        raise ValueError(f"{fn}: num_iters must be a non-negative int; received {num_iters!r}.")
    if not _is_tracer(lam) and not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"{fn}: lam must be a finite number >= 0; received {lam!r}.")
    check_batch(y, A.out_shape, f"{fn}: y ({A.name} measurements)")
    if x0 is None:
        x = jnp.zeros((y.shape[0], *A.in_shape), y.dtype)
    else:
        x = check_batch(x0, A.in_shape, f"{fn}: x0")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{fn}: x0 has batch {x.shape[0]} but y has batch {y.shape[0]}.")
    if tol is not None and not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"{fn}: tol must be a finite number >= 0 or None; received {tol!r}.")
    tol = 10 * float(jnp.finfo(y.dtype).eps) if tol is None else float(tol)
    lam = jnp.asarray(lam, y.dtype)

    r = y - A.forward(x)
    s = A.adjoint(r) - lam * x
    gamma = _bdot(s, s)
    stop = (tol**2) * gamma  # gamma_k <= tol^2 gamma_0  <=>  ||s_k|| <= tol ||s_0||

    def body(_, carry):
        x, r, p, s, gamma = carry
        q = A.forward(p)
        active = gamma > stop
        alpha = jnp.where(active, _safe_div(gamma, _bdot(q, q) + lam * _bdot(p, p)), 0.0)
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * q
        s = A.adjoint(r) - lam * x
        gamma_new = _bdot(s, s)
        beta = jnp.where(active, _safe_div(gamma_new, gamma), 0.0)
        p = s + _bcast(beta, p) * p
        return x, r, p, s, gamma_new

    x, *_ = lax.fori_loop(0, int(num_iters), body, (x, r, s, s, gamma))
    return x


def operator_norm(
    A: LinearOperator, *, num_iters: int = 50, key: PRNGKey | None = None, dtype=jnp.float32
) -> Array:
    r"""Estimate the spectral norm :math:`\|A\|_2` by power iteration on :math:`A^\top A`.

    :math:`v \leftarrow A^\top A v / \|A^\top A v\|`, then :math:`\|A\|\approx\|Av\|`.
    The estimate approaches :math:`\|A\|_2` from below (linearly, at the rate of the
    ratio of the two largest eigenvalues of :math:`A^\top A`); multiply by a small
    safety factor when it sets a step size.

    Args:
      A: the operator.
      num_iters: number of power iterations (static int >= 1).
      key: PRNG key for the random start; ``None`` uses a fixed key, so the estimate is
        a deterministic function of ``A``.
      dtype: floating dtype of the iteration.

    Returns:
      A scalar estimate of :math:`\|A\|_2`.
    """
    if isinstance(num_iters, bool) or not isinstance(num_iters, (int, np.integer)) or num_iters < 1:
        raise ValueError(f"operator_norm: num_iters must be an int >= 1; received {num_iters!r}.")
    key = jax.random.key(0) if key is None else key
    v = jax.random.normal(key, (1, *A.in_shape), dtype)

    def normalise(v):
        n = jnp.sqrt(jnp.sum(v * v))
        return v / jnp.where(n > 0, n, 1.0)

    v = lax.fori_loop(0, int(num_iters), lambda _, v: normalise(normal_op(A)(v)), normalise(v))
    av = A.forward(v)
    return jnp.sqrt(jnp.sum(av * av))


def measure(A: LinearOperator, x: Array, *, key: PRNGKey, noise_std: float) -> Array:
    r"""Simulate measurements :math:`y = A x + \sigma \varepsilon`, :math:`\varepsilon\sim\mathcal N(0, I)`.

    Args:
      A: the operator.
      x: clean signals ``[B, *A.in_shape]``.
      key: PRNG key for the noise.
      noise_std: :math:`\sigma \ge 0`.

    Returns:
      ``y [B, *A.out_shape]``.
    """
    if not _is_tracer(noise_std) and not (np.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"measure: noise_std must be a finite number >= 0; received {noise_std!r}.")
    y = A.forward(x)
    return y + noise_std * jax.random.normal(key, y.shape, y.dtype)
