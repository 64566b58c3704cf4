r"""Discrete noise schedules: DDPM's betas (linear, cosine), NCSN's geometric sigmas and
EDM's Karras sigmas.

A DDPM schedule is N betas :math:`\beta_1..\beta_N`; step n (1-based in the papers,
0-based index n-1 here) has :math:`\alpha_n = 1-\beta_n` and
:math:`\bar\alpha_n = \prod_{i\le n}\alpha_i`, so
:math:`q(x_n \mid x_0) = \mathcal N(\sqrt{\bar\alpha_n}x_0, (1-\bar\alpha_n) I)`.
`DiscreteSchedule` holds these as float64-computed arrays stored in the default float
dtype, so they are compile-time constants.

References:
  Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    NeurIPS. https://arxiv.org/abs/2006.11239 (linear schedule 1e-4 .. 0.02, N = 1000.)
  Nichol, A. & Dhariwal, P. (2021). Improved Denoising Diffusion Probabilistic Models.
    ICML. https://arxiv.org/abs/2102.09672 (cosine schedule, Eq. 17; betas clipped at 0.999.)
  Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. NeurIPS. https://arxiv.org/abs/1907.05600 (geometric sigmas.)
  Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. NeurIPS. https://arxiv.org/abs/2206.00364 (Eq. 5.)
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jgen.typing import Array


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al.'s linear betas for N = 1000, rescaled by 1000/N for other N (Nichol & Dhariwal
    2021, Sec. 3.2) so the product of alphas, and hence the prior mismatch, stays the same."""
    scale = 1000.0 / max(num_steps, 1)
    if num_steps < 1 or scale * beta_end >= 1.0:
        raise ValueError(f"linear_betas: num_steps={num_steps} rescales beta_end={beta_end} to "
                         f"{scale * beta_end:g} >= 1; use num_steps >= {int(1000 * beta_end) + 1} "
                         "or the cosine schedule.")
    return np.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    r"""Nichol & Dhariwal's cosine schedule: :math:`\bar\alpha(t) = \cos^2(\frac{t/N+s}{1+s}\frac\pi2)`."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}.")
    t = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    alphas_bar = f / f[0]
    return np.clip(1 - alphas_bar[1:] / alphas_bar[:-1], 0.0, max_beta)


class DiscreteSchedule(NamedTuple):
    """A DDPM schedule's per-step constants, each [N] (index n-1 for the paper's step n)."""

    betas: Array
    alphas: Array
    alphas_cumprod: Array  # \bar\alpha_n
    alphas_cumprod_prev: Array  # \bar\alpha_{n-1}, with \bar\alpha_0 = 1

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    def marginal(self, n: Array) -> tuple[Array, Array]:
        """(sqrt(abar_n), sqrt(1 - abar_n)) for 0-based step indices n [B]."""
        ab = self.alphas_cumprod[n]
        return jnp.sqrt(ab), jnp.sqrt(1.0 - ab)

    def posterior_variance(self) -> Array:
        r""":math:`\tilde\beta_n = \beta_n (1-\bar\alpha_{n-1})/(1-\bar\alpha_n)` (Ho et al. Eq. 7), [N]."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)


def discrete_schedule(betas) -> DiscreteSchedule:
    """Builds the constants from betas [N] (computed in float64, stored in the default float
    dtype: float32, or float64 under `jax.enable_x64`)."""
    b = np.asarray(betas, dtype=np.float64)
    if b.ndim != 1 or b.size < 1 or np.any(b <= 0) or np.any(b >= 1):
        raise ValueError(f"betas must be a 1-D array of values in (0, 1); got shape {b.shape}, "
                         f"range [{b.min() if b.size else None}, {b.max() if b.size else None}].")
    a = 1.0 - b
    ab = np.cumprod(a)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    dtype = jnp.result_type(float)  # float32, or float64 under jax.enable_x64
    arr = lambda v: jnp.asarray(v, dtype)
    return DiscreteSchedule(arr(b), arr(a), arr(ab), arr(ab_prev))


def get_schedule(name: str, num_steps: int, **kwargs) -> DiscreteSchedule:
    """The DDPM schedule named by a config string: "linear" or "cosine"."""
    makers = {"linear": linear_betas, "cosine": cosine_betas}
    if name not in makers:
        raise ValueError(f"Unknown beta schedule {name!r}; choose one of {sorted(makers)}.")
    return discrete_schedule(makers[name](num_steps, **kwargs))


def geometric_sigmas(num: int, sigma_min: float = 0.01, sigma_max: float = 50.0) -> np.ndarray:
    """NCSN's noise levels, decreasing geometrically from sigma_max to sigma_min ([num])."""
    return np.geomspace(sigma_max, sigma_min, num)


def karras_sigmas(num: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    r"""EDM's time steps (Karras et al. Eq. 5), decreasing, with a final 0 appended ([num + 1]):
    :math:`\sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{N-1}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`."""
    if num < 1:
        raise ValueError(f"num must be >= 1; got {num}.")
    i = np.arange(num, dtype=np.float64)
    frac = i / max(num - 1, 1)
    s = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.concatenate([s, [0.0]])
