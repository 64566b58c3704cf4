r"""Spectral normalisation (Miyato et al. 2018): a pure function and two Flax layers.

A layer's kernel W is divided by an estimate of its largest singular value
:math:`\sigma(W)`, making the linear map 1-Lipschitz. The estimate comes from power
iteration with a persistent vector u, one (or a few) iterations per training step
(Miyato et al., Algorithm 1). A convolution kernel [kh, kw, c_in, c_out] is treated as the
matrix [kh * kw * c_in, c_out] (Miyato et al., Sec. 2.1 and Appendix), whose spectral norm
bounds -- up to a small factor -- the Lipschitz constant of the convolution.

**Orientation.** Kernels act as ``x @ W`` with W [d_in, d_out] (Flax's convention), and
u lives in the *output* space R^{d_out}. One power iteration is

.. math:: v \leftarrow W u / \|W u\|, \qquad u \leftarrow W^\top v / \|W^\top v\|,

and :math:`\sigma = v^\top W u = \|W u\|` for the final u (Miyato's :math:`\tilde u^\top W
\tilde v` with the two vectors' names swapped, because the paper writes W as [d_out, d_in]).
u and v are held constant under differentiation (``stop_gradient``), so
:math:`\partial\sigma/\partial W = v u^\top`, as in the paper.

**Threading the state.** The Flax layers keep u in the variable collection ``"spectral"``
(not ``"params"``: it is never touched by the optimiser). Their ``__call__`` takes a
keyword ``update_stats``:

- in the discriminator's training step, ``update_stats=True`` and the collection marked
  mutable, then the new u carried to the next step::

      logits, updates = disc.apply({"params": d_params, "spectral": spectral}, x,
                                   update_stats=True, mutable=["spectral"])
      spectral = updates["spectral"]        # carry with d_params in the train state

  (return ``updates["spectral"]`` as aux from the loss function under ``jax.grad``;
  ``jax.lax.stop_gradient`` is already applied to u);
- everywhere else (the generator's step, evaluation), ``update_stats=False``: no
  collection is mutated and the stored u is used as is (with ``n_iter`` power iterations
  still run from it, without storing the result).

``init`` creates both collections: ``variables = disc.init(key, x, update_stats=False)``
gives ``variables["params"]`` and ``variables["spectral"]``. The collection also stores
the last ``sigma`` of each layer for monitoring.

References:
  Miyato, T., Kataoka, T., Koyama, M. & Yoshida, Y. (2018). Spectral Normalization for
    Generative Adversarial Networks. ICLR. https://arxiv.org/abs/1802.05957 (Algorithm 1.)
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.typing import Array

SPECTRAL = "spectral"  # the variable collection holding u and sigma


def _normalize(x: Array, eps: float) -> Array:
    return x / (jnp.linalg.norm(x) + eps)


def kernel_matrix(kernel: Array) -> Array:
    """A kernel as the matrix [prod(shape[:-1]), shape[-1]]: dense kernels [d_in, d_out]
    unchanged, conv kernels [kh, kw, c_in, c_out] -> [kh * kw * c_in, c_out] (Miyato et al.)."""
    kernel = jnp.asarray(kernel)
    if kernel.ndim < 2:
        raise ValueError(f"kernel_matrix: a kernel needs at least 2 axes ([d_in, d_out] or [kh, kw, c_in, c_out]); "
                         f"got shape {list(kernel.shape)}.")
    return jnp.reshape(kernel, (-1, kernel.shape[-1]))


def spectral_normalize(kernel: Array, u: Array, n_iter: int = 1, *, eps: float = 1e-12) -> tuple[Array, Array, Array]:
    r"""Spectrally normalise a kernel with ``n_iter`` power iterations from u (Miyato et al. 2018,
    Algorithm 1).

    Args:
      kernel: dense [d_in, d_out] or conv [kh, kw, c_in, c_out] kernel (any rank >= 2; the
        last axis is the output).
      u: the persistent output-space vector [d_out] (unit norm; from the previous step).
      n_iter: power iterations to run (>= 0; 1 per training step in the paper). With 0,
        sigma = ||W u|| from the stored u.
      eps: added to norms before dividing.

    Returns:
      ``(kernel / sigma, u_new [d_out], sigma [])``; u_new carries no gradient, sigma is
      differentiable in the kernel with u and v held fixed.
    """
    who = "spectral_normalize"
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
        raise ValueError(f"{who}: n_iter must be an int >= 0; got {n_iter!r}.")
    w = kernel_matrix(kernel)
    u = jnp.asarray(u, w.dtype)
    if u.shape != (w.shape[1],):
        raise ValueError(f"{who}: u must have shape [d_out] = [{w.shape[1]}] for a kernel of shape "
                         f"{list(jnp.shape(kernel))}; got {list(u.shape)}.")
    w_sg = jax.lax.stop_gradient(w)

    def power_step(_, u):
        v = _normalize(w_sg @ u, eps)
        return _normalize(w_sg.T @ v, eps)

    u = jax.lax.stop_gradient(jax.lax.fori_loop(0, int(n_iter), power_step, u))
    v = jax.lax.stop_gradient(_normalize(w_sg @ u, eps))
    sigma = v @ (w @ u)  # = ||W u||, with the gradient v u^T
    return kernel / sigma, u, sigma


def _init_u(key, d_out: int, dtype) -> Array:
    return _normalize(jax.random.normal(key, (d_out,), dtype), 1e-12)


def _spectral_kernel(module: nn.Module, shape: tuple[int, ...], n_iter: int, kernel_init: Callable,
                     update_stats: bool, dtype=jnp.float32) -> Array:
    """Declares ``kernel`` (params) and ``u``, ``sigma`` (spectral) on `module` (inside its
    compact ``__call__``) and returns the normalised kernel, storing the new u if asked."""
    kernel = module.param("kernel", kernel_init, shape, dtype)
    u = module.variable(SPECTRAL, "u", lambda: _init_u(module.make_rng("params"), shape[-1], dtype))
    sigma_var = module.variable(SPECTRAL, "sigma", lambda: jnp.ones((), dtype))
    kernel_sn, u_new, sigma = spectral_normalize(kernel, u.value, n_iter)
    if update_stats:
        u.value = u_new
        sigma_var.value = jax.lax.stop_gradient(sigma)
    return kernel_sn


def _check_update_stats(update_stats, who: str) -> bool:
    if not isinstance(update_stats, bool):
        raise TypeError(f"{who}: pass update_stats=True in the discriminator's training step (with "
                         f"mutable=['{SPECTRAL}']) and update_stats=False elsewhere; got {update_stats!r}.")
    return update_stats


class SpectralDense(nn.Module):
    """A dense layer ``x @ (W / sigma(W)) + b`` with spectral normalisation.

    Attributes:
      features: output width.
      n_iter: power iterations per call (1 in Miyato et al.).
      use_bias: whether to add a bias (not normalised).
    """

    features: int
    n_iter: int = 1
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array, *, update_stats: bool) -> Array:
        _check_update_stats(update_stats, "SpectralDense")
        w = _spectral_kernel(self, (x.shape[-1], self.features), self.n_iter, self.kernel_init, update_stats)
        y = x @ w.astype(x.dtype)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), x.dtype)
            y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (self.features,))
        return y


class SpectralConv(nn.Module):
    """A 2-D convolution (NHWC, kernel HWIO) with a spectrally normalised kernel; the kernel
    is normalised as the matrix [kh * kw * c_in, c_out].

    Attributes:
      features: output channels.
      kernel_size: (kh, kw).
      strides: (sh, sw).
      padding: "SAME" or "VALID" (as `jax.lax.conv_general_dilated`, the same as `nn.Conv`).
      n_iter: power iterations per call.
      use_bias: whether to add a per-channel bias.
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: str = "SAME"
    n_iter: int = 1
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array, *, update_stats: bool) -> Array:
        _check_update_stats(update_stats, "SpectralConv")
        if x.ndim != 4:
            raise ValueError(f"SpectralConv: x must be [B, H, W, C]; got shape {list(x.shape)}.")
        shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
        w = _spectral_kernel(self, shape, self.n_iter, self.kernel_init, update_stats)
        y = jax.lax.conv_general_dilated(x, w.astype(x.dtype), tuple(self.strides), self.padding,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), x.dtype)
            y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (self.features,))
        return y
