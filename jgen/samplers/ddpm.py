r"""DDPM ancestral sampling: run the learned reverse Markov chain from pure noise to data.

A DDPM (Ho et al. 2020) with betas :math:`\beta_1..\beta_N` has the reverse chain

.. math::
    x_{n-1} = \frac{1}{\sqrt{\alpha_n}}\Big(x_n - \frac{\beta_n}{\sqrt{1-\bar\alpha_n}}\,
              \varepsilon_\theta(x_n, n)\Big) + \sigma_n z, \qquad z \sim \mathcal N(0, I),

started at :math:`x_N \sim \mathcal N(0, I)`, with no noise on the last step (Ho et al.,
Algorithm 2). The mean is the posterior mean :math:`\tilde\mu_n(x_n, \hat x_0)` of
:math:`q(x_{n-1} \mid x_n, x_0)` (Eq. 7) at the prediction
:math:`\hat x_0 = (x_n - \sqrt{1-\bar\alpha_n}\,\varepsilon_\theta)/\sqrt{\bar\alpha_n}`;
`clip_x0` clips that prediction before forming the mean, as image models do. The
variance is fixed to :math:`\sigma_n^2 = \beta_n` or :math:`\tilde\beta_n` (Ho et al.
Sec. 3.2; both are optimal for extreme data distributions, and :math:`\tilde\beta_n` is
the exact posterior variance), or learned (Nichol & Dhariwal 2021), in which case the
network gives the log-variance.

Step indices are 0-based here: the paper's step n is index n - 1, and `eps_fn(x, n)`
receives the int32 index array [B].

References:
  Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    NeurIPS. https://arxiv.org/abs/2006.11239 (Algorithm 2, Eqs. 7 and 11.)
  Nichol, A. & Dhariwal, P. (2021). Improved Denoising Diffusion Probabilistic Models.
    ICML. https://arxiv.org/abs/2102.09672 (learned variances, Eq. 15.)
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.sde.schedules import DiscreteSchedule
from jgen.typing import Array, PRNGKey

# eps_fn(x [B, ...], n int32 [B]) -> eps [B, ...]
EpsFn = Callable[[Array, Array], Array]
VARIANCES = ("beta", "beta_tilde")


class DDPMInfo(NamedTuple):
    """Statistics of one `ddpm_sample` call.

    Attributes:
      nfe: number of network evaluations, N (one `eps_fn` call per step; a
        `model_var_fn` that shares the network's forward pass is not counted again).
    """

    nfe: int


def _check_shape(fn: str, shape) -> tuple[int, ...]:
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else shape
    if not isinstance(shape, tuple) or len(shape) < 1 or not all(
        isinstance(d, int) and d > 0 for d in shape
    ):
        raise ValueError(
            f"{fn}: shape must be a tuple of positive ints (batch first), e.g. (512, 2); "
            f"received {shape!r}."
        )
    return shape


def _check_x_T(fn: str, x_T, shape, dtype) -> Array | None:
    if x_T is None:
        return None
    x_T = jnp.asarray(x_T, dtype)
    if x_T.shape != shape:
        raise ValueError(f"{fn}: x_T has shape {list(x_T.shape)} but shape is {list(shape)}; "
                         "they must agree.")
    return x_T


def _checked_output(fn: str, name: str, out: Array, x: Array) -> Array:
    if jnp.shape(out) != x.shape:
        raise ValueError(f"{fn}: {name} must return an array of the shape of x, {list(x.shape)}; "
                         f"it returned shape {list(jnp.shape(out))}.")
    return out


def ddpm_sample(
    key: PRNGKey,
    eps_fn: EpsFn,
    shape: tuple[int, ...],
    *,
    schedule: DiscreteSchedule,
    variance: str = "beta",
    clip_x0: float | None = None,
    model_var_fn: EpsFn | None = None,
    x_T: Array | None = None,
    dtype=jnp.float32,
) -> tuple[Array, DDPMInfo]:
    r"""Draws a batch by DDPM ancestral sampling (Ho et al. 2020, Algorithm 2).

    For n = N, ..., 1 (indices N-1, ..., 0):

    .. math::
        \hat x_0 = \frac{x_n - \sqrt{1-\bar\alpha_n}\,\varepsilon_\theta(x_n, n)}{\sqrt{\bar\alpha_n}},
        \quad
        x_{n-1} = \underbrace{\frac{\sqrt{\bar\alpha_{n-1}}\beta_n}{1-\bar\alpha_n}\hat x_0
                  + \frac{\sqrt{\alpha_n}(1-\bar\alpha_{n-1})}{1-\bar\alpha_n} x_n}_{\tilde\mu_n}
                  + \sigma_n z \;(z = 0 \text{ at } n = 1).

    Without clipping the mean is Ho et al.'s Eq. 11 and is computed in that form.

    Args:
      key: PRNG key (the initial noise and the per-step noise, folded with the step).
      eps_fn: the noise prediction, `eps_fn(x [B, ...], n int32 [B]) -> [B, ...]`, n the
        0-based step index. From a score: `eps = -sigma_n * score` with
        `(alpha_n, sigma_n) = schedule.marginal(n)`.
      shape: the output shape (B, ...), static.
      schedule: the `DiscreteSchedule` the model was trained with (N steps).
      variance: fixed reverse variance, "beta" (:math:`\sigma_n^2 = \beta_n`) or
        "beta_tilde" (:math:`\tilde\beta_n`, the posterior variance). Ignored when
        `model_var_fn` is given.
      clip_x0: if a number c, clip :math:`\hat x_0` to [-c, c] before forming the mean
        (e.g. 1.0 for images in [-1, 1]); None (default) for no clipping.
      model_var_fn: optional learned variance (Improved DDPM): `model_var_fn(x, n) ->
        log sigma_n^2`, shape of x. For Nichol & Dhariwal's parametrisation return
        `v * log(beta_n) + (1 - v) * log(beta_tilde_n)` from the network's output v. It
        is called on the same (x, n) as `eps_fn`; under jit XLA merges a shared forward
        pass, so it is not counted in the NFE.
      x_T: optional initial noise [B, ...] (default: drawn from N(0, I) with `key`).
      dtype: floating dtype of the samples.

    Returns:
      `(x_0, DDPMInfo(nfe=N))`, x_0 of shape `shape`.

    Raises:
      ValueError: for an unknown `variance`, a bad `shape` or `clip_x0`, an `x_T` of the
        wrong shape, or (at trace time) an `eps_fn` returning the wrong shape.

    Example:
      >>> sched = discrete_schedule(linear_betas(1000))
      >>> x0, info = jax.jit(lambda k: ddpm_sample(k, eps_fn, (64, 2), schedule=sched))(key)
    """
    fn = "ddpm_sample"
    shape = _check_shape(fn, shape)
    if variance not in VARIANCES:
        raise ValueError(f"{fn}: unknown variance {variance!r}; choose one of {VARIANCES} "
                         "(or pass model_var_fn for learned variances).")
    if clip_x0 is not None and not (isinstance(clip_x0, (int, float)) and clip_x0 > 0):
        raise ValueError(f"{fn}: clip_x0 must be a positive number or None; received {clip_x0!r}.")
    x_T = _check_x_T(fn, x_T, shape, dtype)
    num = schedule.num_steps
    betas = schedule.betas.astype(dtype)
    alphas = schedule.alphas.astype(dtype)
    abar = schedule.alphas_cumprod.astype(dtype)
    abar_prev = schedule.alphas_cumprod_prev.astype(dtype)
    fixed_var = betas if variance == "beta" else schedule.posterior_variance().astype(dtype)

    key_init, key_steps = jax.random.split(key)
    x = jax.random.normal(key_init, shape, dtype) if x_T is None else x_T

    def step(i, x):
        n = num - 1 - i
        n_b = jnp.full(shape[:1], n, jnp.int32)
        eps = _checked_output(fn, "eps_fn", eps_fn(x, n_b), x)
        if clip_x0 is None:  # Ho et al. Eq. 11
            mean = (x - betas[n] / jnp.sqrt(1 - abar[n]) * eps) / jnp.sqrt(alphas[n])
        else:  # posterior mean (Eq. 7) at the clipped x0 prediction
            x0 = jnp.clip((x - jnp.sqrt(1 - abar[n]) * eps) / jnp.sqrt(abar[n]), -clip_x0, clip_x0)
            mean = (jnp.sqrt(abar_prev[n]) * betas[n] * x0
                    + jnp.sqrt(alphas[n]) * (1 - abar_prev[n]) * x) / (1 - abar[n])
        if model_var_fn is None:
            std = jnp.sqrt(fixed_var[n])
        else:
            std = jnp.exp(0.5 * _checked_output(fn, "model_var_fn", model_var_fn(x, n_b), x))
        z = jax.random.normal(jax.random.fold_in(key_steps, n), shape, dtype)
        return mean + jnp.where(n > 0, std, jnp.zeros_like(std)) * z  # no noise on the last step

    x = jax.lax.fori_loop(0, num, step, x)
    return x, DDPMInfo(nfe=num)
