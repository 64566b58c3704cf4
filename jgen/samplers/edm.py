r"""EDM samplers: Heun's method on the sigma-parametrised probability-flow ODE, with
optional stochastic "churn" (Karras et al. 2022, Algorithms 1 and 2).

EDM writes the noised data as :math:`x = x_0 + \sigma\varepsilon` (the VE convention,
:math:`\alpha = 1`) and the probability-flow ODE in the noise level itself,

.. math::
    \frac{dx}{d\sigma} = -\sigma\,\nabla_x\log p(x; \sigma)
                       = \frac{x - D(x; \sigma)}{\sigma},

where :math:`D(x;\sigma) = E[x_0 \mid x] = x + \sigma^2\nabla_x\log p(x;\sigma)` is the
denoiser (Tweedie). It is integrated from :math:`\sigma_{max}` to 0 over Karras'
steps (`jgen.sde.karras_sigmas`, Eq. 5) with Heun's second-order method, except the
last step into :math:`\sigma_N = 0`, which is an Euler step (the correction would
divide by :math:`\sigma = 0`); so N steps cost ``2N - 1`` denoiser evaluations.

Algorithm 2 adds, before each step whose :math:`\sigma_i \in [S_{tmin}, S_{tmax}]`,
fresh noise that raises the level to :math:`\hat\sigma_i = (1 + \gamma_i)\sigma_i`,
:math:`\gamma_i = \min(S_{churn}/N, \sqrt2 - 1)`: a Langevin-like correction that
forgets part of the accumulated error. With :math:`S_{churn} = 0` it is Algorithm 1
and the sampler is deterministic given :math:`x_T`.

References:
  Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. NeurIPS. https://arxiv.org/abs/2206.00364
    (Algorithms 1 and 2, Eq. 5, Table 1.) Reference code: NVlabs/edm `generate.py`.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.sde.schedules import karras_sigmas
from jgen.sde.sde import _expand
from jgen.typing import Array, PRNGKey

# denoiser_fn(x [B, ...], sigma [B]) -> x0_hat [B, ...], for x = x0 + sigma * eps.
DenoiserFn = Callable[[Array, Array], Array]


class EDMSampleInfo(NamedTuple):
    """Statistics of one EDM solve.

    Attributes:
      nfe: denoiser evaluations, ``2 * num_steps - 1`` (int32 scalar).
      sigmas: the noise levels :math:`\\sigma_0 > \\dots > \\sigma_{N-1} > \\sigma_N = 0`,
        [num_steps + 1] (before churn).
    """

    nfe: Array
    sigmas: Array


def _check(num_steps, sigma_min, sigma_max, rho, s_churn, s_noise, shape, x_T):
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(
            "edm_sample: num_steps must be a positive Python int (static, so each step "
            f"count compiles once); received {num_steps!r}."
        )
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"edm_sample: need 0 < sigma_min < sigma_max; received sigma_min={sigma_min!r}, "
            f"sigma_max={sigma_max!r} (EDM's defaults are 0.002 and 80)."
        )
    if not rho > 0:
        raise ValueError(f"edm_sample: rho must be positive (EDM uses 7); received {rho!r}.")
    if not (s_churn >= 0 and s_noise >= 0):
        raise ValueError(
            f"edm_sample: s_churn and s_noise must be >= 0; received s_churn={s_churn!r}, "
            f"s_noise={s_noise!r}."
        )
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(
            f"edm_sample: shape must be [B, ...] (a batch axis first); received {shape}. "
            "For one D-dim sample use (1, D)."
        )
    if x_T is not None and tuple(x_T.shape) != shape:
        raise ValueError(
            f"edm_sample: x_T has shape {tuple(x_T.shape)} but shape is {shape}; they must agree."
        )
    return shape


def edm_sample(
    key: PRNGKey | None,
    denoiser_fn: DenoiserFn,
    shape: tuple[int, ...],
    *,
    num_steps: int = 18,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    x_T: Array | None = None,
) -> tuple[Array, EDMSampleInfo]:
    r"""Karras et al.'s sampler: Algorithm 1 (``s_churn=0``) or Algorithm 2.

    For :math:`i = 0, \dots, N-1` over :math:`\sigma_i` = `karras_sigmas(N, ...)`:

    .. math::
        \gamma_i &= \min(S_{churn}/N, \sqrt2 - 1)\ \text{if}\ \sigma_i \in
            [S_{tmin}, S_{tmax}]\ \text{else}\ 0, \qquad
            \hat\sigma_i = (1 + \gamma_i)\,\sigma_i, \\
        \hat x_i &= x_i + \sqrt{\hat\sigma_i^2 - \sigma_i^2}\;S_{noise}\,\varepsilon_i,
            \qquad \varepsilon_i \sim \mathcal N(0, I), \\
        d_i &= (\hat x_i - D(\hat x_i; \hat\sigma_i)) / \hat\sigma_i, \qquad
            x_{i+1} = \hat x_i + (\sigma_{i+1} - \hat\sigma_i)\, d_i, \\
        \text{if } \sigma_{i+1} \ne 0:&\quad
            d_i' = (x_{i+1} - D(x_{i+1}; \sigma_{i+1})) / \sigma_{i+1}, \quad
            x_{i+1} = \hat x_i + (\sigma_{i+1} - \hat\sigma_i)\,\tfrac12 (d_i + d_i'),

    from :math:`x_0 = \sigma_0\,n,\ n \sim \mathcal N(0, I)`. Only the last step has
    :math:`\sigma_{i+1} = 0`, so the first N - 1 steps run as Heun steps in one
    `lax.fori_loop` and the last as an Euler step after it: ``2N - 1`` evaluations.

    Args:
      key: PRNG key, split into the prior draw's key (used unless `x_T` is given) and
        the churn noise's key k (step i uses `fold_in(k, i)`). May be None for ``s_churn=0`` with `x_T`.
      denoiser_fn: ``(x [B, ...], sigma [B]) -> x0_hat [B, ...]`` for
        :math:`x = x_0 + \sigma\varepsilon`. From a score:
        ``lambda x, s: x + s[:, None]**2 * score(x, s)`` (broadcast as needed).
      shape: the sample shape [B, ...] (static).
      num_steps: N >= 1 (static Python int).
      sigma_min, sigma_max, rho: the Karras schedule (Eq. 5).
      s_churn, s_tmin, s_tmax, s_noise: Algorithm 2's stochasticity; ``s_churn=0`` (the
        default) gives the deterministic Algorithm 1.
      x_T: optional starting point [shape] at noise level `sigma_max`; default
        `sigma_max * N(0, I)` from `key` in JAX's default float dtype.

    Returns:
      ``(samples [shape], EDMSampleInfo(nfe, sigmas))``.

    Raises:
      ValueError: `num_steps` not a positive int, ``sigma_min >= sigma_max`` or non-positive,
        ``rho <= 0``, negative `s_churn`/`s_noise`, a `shape` without a batch axis, or an
        `x_T` of another shape; `key` None when it is needed.

    Example:
      >>> denoiser = lambda x, sigma: edm_precond_apply(params, x, sigma)
      >>> x, info = jax.jit(lambda k: edm_sample(k, denoiser, (16, 32, 32, 3)))(key)
      >>> info.nfe  # 35 for the default 18 steps
      >>> # Algorithm 2 with ImageNet-64's settings (Karras et al., Table 5)
      >>> x, _ = edm_sample(key, denoiser, shape, num_steps=256, s_churn=40, s_tmin=0.05,
      ...                   s_tmax=50, s_noise=1.003)

    References:
      Karras et al. (2022), Algorithms 1 and 2. https://arxiv.org/abs/2206.00364
    """
    shape = _check(num_steps, sigma_min, sigma_max, rho, s_churn, s_noise, shape, x_T)
    stochastic = s_churn > 0
    if key is None and (x_T is None or stochastic):
        raise ValueError(
            "edm_sample: key is None, but a key is needed for the prior draw (x_T=None) or "
            f"for the churn noise (s_churn={s_churn!r} > 0). Pass jax.random.PRNGKey(...)."
        )
    prior_key, noise_key = jax.random.split(key) if key is not None else (None, None)
    if x_T is None:
        x = sigma_max * jax.random.normal(prior_key, shape, jnp.result_type(float))
    else:
        x = jnp.asarray(x_T)
    dtype, batch = x.dtype, shape[0]
    sigmas = jnp.asarray(karras_sigmas(num_steps, sigma_min, sigma_max, rho), dtype)  # [N + 1]
    gamma_max = min(s_churn / num_steps, math.sqrt(2.0) - 1.0)
    full = lambda s: jnp.full((batch,), s, dtype)

    def churn(i, x):
        """Algorithm 2, lines 4-6: (sigma_hat, x_hat); the identity without churn."""
        sigma = sigmas[i]
        if not stochastic:
            return sigma, x
        gamma = jnp.where((sigma >= s_tmin) & (sigma <= s_tmax), gamma_max, 0.0)
        sigma_hat = sigma * (1.0 + gamma)
        eps = s_noise * jax.random.normal(jax.random.fold_in(noise_key, i), shape, dtype)
        # sqrt(sigma_hat^2 - sigma^2) written so that it cannot round below 0 (a fused
        # multiply-add makes sigma_hat^2 - sigma^2 slightly negative when gamma = 0).
        return sigma_hat, x + sigma * jnp.sqrt(gamma * (2.0 + gamma)) * eps

    def euler(i, x):
        """Lines 4-8: churn, then an Euler step from sigma_hat to sigma_{i+1}."""
        sigma_hat, x_hat = churn(i, x)
        d = (x_hat - denoiser_fn(x_hat, full(sigma_hat))) / sigma_hat
        return x_hat, sigma_hat, d, x_hat + (sigmas[i + 1] - sigma_hat) * d

    def heun(i, x):
        """Lines 4-11: the Euler step, then the second-order correction (sigma_{i+1} > 0)."""
        x_hat, sigma_hat, d, x_next = euler(i, x)
        sigma_next = sigmas[i + 1]
        d_next = (x_next - denoiser_fn(x_next, full(sigma_next))) / sigma_next
        return x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)

    x = jax.lax.fori_loop(0, num_steps - 1, heun, x)  # sigma_{i+1} > 0 for i < N - 1
    x = euler(num_steps - 1, x)[-1]  # the last step, into sigma_N = 0
    return x, EDMSampleInfo(nfe=jnp.asarray(2 * num_steps - 1, jnp.int32), sigmas=sigmas)


def denoiser_from_score(score_fn: Callable[[Array, Array], Array]) -> DenoiserFn:
    r"""Tweedie's denoiser :math:`D(x;\sigma) = x + \sigma^2 s(x;\sigma)` from a VE score
    ``score_fn(x, sigma [B])`` of :math:`p(x;\sigma)`, :math:`x = x_0 + \sigma\varepsilon`."""
    return lambda x, sigma: x + _expand(sigma ** 2, x) * score_fn(x, sigma)
