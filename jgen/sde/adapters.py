r"""One trained model, every sampler: adapters between the model-function conventions
that jgen's diffusion samplers are written in.

Samplers take the function their paper writes the algorithm in: a score
`score_fn(x, t)` (continuous SDE time), an epsilon `eps_fn(x, n)` on a discrete DDPM
schedule, an EDM denoiser `denoiser_fn(x, sigma)` with :math:`x = x_0 + \sigma\varepsilon`,
or a data prediction `x0_fn(x, t)`. For a Gaussian perturbation these are all the same
information (`jgen.sde.parametrization`); what differs is the time variable and the
scaling of x. The one invariant shared by all of them is the signal-to-noise ratio: a
VP/sub-VP state :math:`x_t = \alpha x_0 + \sigma\varepsilon` is the VE/EDM state
:math:`x_t/\alpha = x_0 + (\sigma/\alpha)\varepsilon` at noise level
:math:`\sigma_{VE} = \sigma/\alpha` (Karras et al. 2022, Sec. 2 and Appendix C.1; Kingma
et al. 2021, "Variational Diffusion Models", Eq. 2 onwards). So

- `edm_denoiser_from_x0(x0_fn, sde)` runs a continuous-time model in EDM's samplers;
- `discrete_schedule_from_sde(sde, N)` is a DDPM schedule whose step n has exactly the
  SDE's marginal at :math:`t_n = t_{min} + (T - t_{min})\,n/(N-1)`, and
  `eps_fn_from_score(score_fn, sde, N)` runs the model in DDPM/DDIM;
- `time_from_sigma_ratio(sde, r)` inverts :math:`\sigma(t)/\alpha(t)` (monotone in t for
  every SDE here) by bisection on device.

References:
  Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. NeurIPS. https://arxiv.org/abs/2206.00364
  Kingma, D. P., Salimans, T., Poole, B. & Ho, J. (2021). Variational Diffusion Models.
    NeurIPS. https://arxiv.org/abs/2107.00630
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jgen.sde.schedules import DiscreteSchedule, discrete_schedule
from jgen.sde.sde import LinearSDE, _expand
from jgen.typing import Array


def sigma_ratio(sde: LinearSDE, t: Array) -> Array:
    """sigma(t) / alpha(t): the EDM noise level of time t (increasing in t), [B]."""
    alpha, sigma = sde.marginal(t)
    return sigma / alpha


def time_from_sigma_ratio(sde: LinearSDE, ratio: Array, *, iters: int = 60) -> Array:
    """The t in [0, T] with sigma(t)/alpha(t) = ratio (clipped to the range), by bisection.

    60 halvings of [0, T] resolve t to T * 2^-60, below float64 precision."""
    ratio = jnp.asarray(ratio)
    lo = jnp.zeros_like(ratio)
    hi = jnp.full_like(ratio, sde.T)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = sigma_ratio(sde, mid) > ratio
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return 0.5 * (lo + hi)


def edm_denoiser_from_x0(x0_fn: Callable[[Array, Array], Array], sde: LinearSDE) -> Callable[[Array, Array], Array]:
    r"""`denoiser_fn(x, sigma)` in EDM coordinates from a continuous-time `x0_fn(x_t, t)`:
    :math:`D(x, \sigma) = \hat x_0(\alpha(t) x, t)` with :math:`\sigma(t)/\alpha(t) = \sigma`."""

    def denoiser_fn(x, sigma):
        t = time_from_sigma_ratio(sde, sigma)
        alpha, _ = sde.marginal(t)
        return x0_fn(_expand(alpha, x) * x, t)

    return denoiser_fn


def edm_sigma_range(sde: LinearSDE, t_min: float | None = None) -> tuple[float, float]:
    """(sigma_min, sigma_max) in EDM coordinates spanned by the SDE on [t_min, T]."""
    with jax.ensure_compile_time_eval():  # constants, also when called under jit
        t = jnp.array([sde.t_min if t_min is None else t_min, sde.T], jnp.float32)
        r = np.asarray(sigma_ratio(sde, t), np.float64)
    return float(r[0]), float(r[1])


def schedule_times(sde: LinearSDE, num_steps: int, t_min: float | None = None) -> np.ndarray:
    """The continuous times t_n = t_min + (T - t_min) n / (N - 1), n = 0..N-1, of
    `discrete_schedule_from_sde` (float64 numpy)."""
    t0 = sde.t_min if t_min is None else t_min
    return np.linspace(t0, sde.T, num_steps, dtype=np.float64)


def discrete_schedule_from_sde(sde: LinearSDE, num_steps: int, t_min: float | None = None) -> DiscreteSchedule:
    r"""A DDPM schedule matching a VP-type SDE's marginals at `schedule_times`:
    :math:`\bar\alpha_n = \alpha(t_n)^2/(\alpha(t_n)^2+\sigma(t_n)^2)` in the variance-preserving
    coordinates :math:`x/\sqrt{\alpha^2+\sigma^2}` (the identity for VP, where
    :math:`\alpha^2+\sigma^2=1`), and :math:`\beta_n = 1-\bar\alpha_n/\bar\alpha_{n-1}` with
    :math:`\bar\alpha_{-1}=1`."""
    if num_steps < 2:
        raise ValueError(f"discrete_schedule_from_sde needs num_steps >= 2; got {num_steps}.")
    with jax.enable_x64(True), jax.ensure_compile_time_eval():  # constants, also under jit
        t = jnp.asarray(schedule_times(sde, num_steps, t_min), jnp.float64)
        alpha, sigma = sde.marginal(t)
        ab = np.asarray(alpha ** 2 / (alpha ** 2 + sigma ** 2), np.float64)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    return discrete_schedule(1.0 - ab / ab_prev)


def eps_fn_from_score(score_fn: Callable[[Array, Array], Array], sde: LinearSDE, num_steps: int,
                      t_min: float | None = None) -> Callable[[Array, Array], Array]:
    r"""`eps_fn(x, n)` on `discrete_schedule_from_sde(sde, num_steps)` from a continuous-time
    `score_fn(x_t, t)`: the DDPM state x is the SDE state scaled by
    :math:`1/\sqrt{\alpha^2+\sigma^2}`, and :math:`\varepsilon = -\sigma\nabla\log p_t`."""
    times = jnp.asarray(schedule_times(sde, num_steps, t_min), jnp.float32)

    def eps_fn(x, n):
        t = times[n]
        alpha, sigma = sde.marginal(t)
        scale = _expand(jnp.sqrt(alpha ** 2 + sigma ** 2), x)
        return -_expand(sigma, x) * score_fn(x * scale, t)

    return eps_fn
