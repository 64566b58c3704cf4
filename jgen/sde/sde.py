r"""Forward noising processes as SDEs: drift, diffusion, Gaussian marginals and priors.

Every process here is a linear SDE :math:`dx = f(t)\,x\,dt + g(t)\,dw` on
:math:`t \in [0, T]` (Song et al. 2021, Sec. 3.4), so its perturbation kernel is
Gaussian and per-dimension:

.. math:: p_{0t}(x_t \mid x_0) = \mathcal N\big(x_t;\ \alpha(t)\,x_0,\ \sigma(t)^2 I\big),

with :math:`\alpha` = `marginal(t)[0]` (the mean coefficient) and :math:`\sigma` =
`marginal(t)[1]` (the standard deviation). The score of the kernel is
:math:`-(x_t - \alpha x_0)/\sigma^2 = -\varepsilon/\sigma`, which every objective and
sampler in jgen converts through (`jgen.sde.parametrization`).

- `VESDE` (variance exploding, NCSN++): :math:`f = 0`,
  :math:`\sigma(t) = \sigma_{min}(\sigma_{max}/\sigma_{min})^{t}`,
  :math:`g(t) = \sigma(t)\sqrt{2\log(\sigma_{max}/\sigma_{min})}`; prior
  :math:`\mathcal N(0, \sigma_{max}^2 I)`.
- `VPSDE` (variance preserving, the continuous DDPM): :math:`f = -\tfrac12\beta(t)`,
  :math:`g = \sqrt{\beta(t)}`, :math:`\beta(t) = \beta_{min} + t(\beta_{max}-\beta_{min})`,
  :math:`\alpha(t) = e^{-\frac12\int_0^t\beta}`, :math:`\sigma(t)^2 = 1-\alpha(t)^2`;
  prior :math:`\mathcal N(0, I)`.
- `SubVPSDE`: the VP drift with :math:`g(t)^2 = \beta(t)(1 - e^{-2\int_0^t\beta})`,
  so :math:`\sigma(t) = 1 - \alpha(t)^2` (a smaller variance than VP's at every t).

All methods are pure and broadcast over a time array `t` of shape [B] against data
[B, ...]: `drift(x, t)` returns [B, ...], `diffusion(t)` returns [B], and
`marginal(t)` returns ([B], [B]). Time is continuous in [0, T] with T = 1; samplers
integrate from T down to a small `eps` (the SDE's `t_min`) to avoid the singular
score at t = 0.

References:
  Song, Y., Sohl-Dickstein, J., Kingma, D. P., Kumar, A., Ermon, S. & Poole, B. (2021).
    Score-Based Generative Modeling through Stochastic Differential Equations. ICLR.
    https://arxiv.org/abs/2011.13456 (Eqs. 9, 11, 29-34, Appendix B.)
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from jgen.typing import Array, PRNGKey


def _expand(v: Array, x: Array) -> Array:
    """Reshapes a per-example [B] array to broadcast against x [B, ...] (rank-promotion safe)."""
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _check_time(t: Array, x: Array | None = None, *, who: str) -> None:
    if t.ndim != 1:
        raise ValueError(f"{who}: t must be a per-example time array of shape [B]; got shape {list(t.shape)}. "
                         "Use jnp.full((batch,), t) for one time shared by the batch.")
    if x is not None and x.shape[:1] != t.shape:
        raise ValueError(f"{who}: t has shape {list(t.shape)} but x has batch size {x.shape[0]} "
                         f"(x shape {list(x.shape)}); give one time per example.")


@dataclasses.dataclass(frozen=True)
class LinearSDE:
    r"""Base class: a linear SDE with Gaussian marginals (subclasses give the coefficients).

    Subclasses implement `_beta_or_g2(t)` pieces through `drift_coeff(t)` (the
    scalar :math:`f(t)`), `diffusion(t)` and `marginal(t)`, plus the prior.
    """

    T: float = 1.0
    t_min: float = 1e-3

    # -- coefficients (per-example [B]) -------------------------------------------------
    def drift_coeff(self, t: Array) -> Array:
        raise NotImplementedError

    def diffusion(self, t: Array) -> Array:
        """g(t), shape [B]."""
        raise NotImplementedError

    def marginal(self, t: Array) -> tuple[Array, Array]:
        """(alpha(t), sigma(t)): mean coefficient and standard deviation of p_0t, each [B]."""
        raise NotImplementedError

    @property
    def prior_std(self) -> float:
        raise NotImplementedError

    # -- derived ------------------------------------------------------------------------
    def drift(self, x: Array, t: Array) -> Array:
        """f(x, t) = f(t) x, shape of x."""
        _check_time(t, x, who=f"{type(self).__name__}.drift")
        return _expand(self.drift_coeff(t), x) * x

    def perturb(self, key: PRNGKey, x0: Array, t: Array) -> tuple[Array, Array]:
        """Draws x_t ~ p_0t(. | x0); returns (x_t, eps) with x_t = alpha x0 + sigma eps."""
        _check_time(t, x0, who=f"{type(self).__name__}.perturb")
        eps = jax.random.normal(key, x0.shape, x0.dtype)
        alpha, sigma = self.marginal(t)
        return _expand(alpha, x0) * x0 + _expand(sigma, x0) * eps, eps

    def prior_sample(self, key: PRNGKey, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        """x_T ~ N(0, prior_std^2 I), shape [B, ...]."""
        return self.prior_std * jax.random.normal(key, shape, dtype)

    def prior_log_prob(self, x: Array) -> Array:
        """log N(x; 0, prior_std^2 I) summed over the event, shape [B]."""
        d = math.prod(x.shape[1:])
        s2 = self.prior_std ** 2
        sq = jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=1)
        return -0.5 * sq / s2 - 0.5 * d * math.log(2 * math.pi * s2)

    def reverse_drift(self, x: Array, t: Array, score: Array, *, probability_flow: bool = False) -> Array:
        r"""Drift of the reverse-time SDE (or of the probability-flow ODE):
        :math:`f(x,t) - c\,g(t)^2 \nabla\log p_t(x)` with c = 1 (SDE) or 1/2 (ODE), Song et al. Eqs. 6, 13."""
        g2 = _expand(self.diffusion(t) ** 2, x)
        return self.drift(x, t) - (0.5 if probability_flow else 1.0) * g2 * score

    def discretize(self, x: Array, t: Array, dt: float | Array) -> tuple[Array, Array]:
        """Euler-Maruyama discretisation of the forward SDE over a step dt > 0:
        returns (mean increment f dt, noise scale g sqrt(dt)) per example ([B, ...], [B])."""
        return self.drift(x, t) * dt, self.diffusion(t) * jnp.sqrt(dt)


@dataclasses.dataclass(frozen=True)
class VESDE(LinearSDE):
    """Variance-exploding SDE (NCSN / NCSN++), geometric sigma from sigma_min to sigma_max."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = 1e-5

    def sigma(self, t: Array) -> Array:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** (t / self.T)

    def drift_coeff(self, t: Array) -> Array:
        return jnp.zeros_like(t)

    def diffusion(self, t: Array) -> Array:
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min) / self.T)

    def marginal(self, t: Array) -> tuple[Array, Array]:
        # Song et al. use sigma(t) itself as the std (the sigma_min^2 at t=0 is negligible).
        return jnp.ones_like(t), self.sigma(t)

    @property
    def prior_std(self) -> float:
        return self.sigma_max


@dataclasses.dataclass(frozen=True)
class VPSDE(LinearSDE):
    """Variance-preserving SDE (continuous DDPM) with a linear beta(t)."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def beta(self, t: Array) -> Array:
        return self.beta_min + (t / self.T) * (self.beta_max - self.beta_min)

    def _log_alpha(self, t: Array) -> Array:
        # log alpha(t) = -1/2 int_0^t beta(s) ds
        s = t / self.T
        return -0.5 * self.T * (self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s ** 2)

    def drift_coeff(self, t: Array) -> Array:
        return -0.5 * self.beta(t)

    def diffusion(self, t: Array) -> Array:
        return jnp.sqrt(self.beta(t))

    def marginal(self, t: Array) -> tuple[Array, Array]:
        log_alpha = self._log_alpha(t)
        return jnp.exp(log_alpha), jnp.sqrt(-jnp.expm1(2 * log_alpha))

    @property
    def prior_std(self) -> float:
        return 1.0


@dataclasses.dataclass(frozen=True)
class SubVPSDE(VPSDE):
    """Sub-VP SDE: VP's drift, diffusion g^2 = beta (1 - e^{-2 int beta}); sigma(t) = 1 - alpha(t)^2."""

    def diffusion(self, t: Array) -> Array:
        return jnp.sqrt(self.beta(t) * -jnp.expm1(4 * self._log_alpha(t)))

    def marginal(self, t: Array) -> tuple[Array, Array]:
        log_alpha = self._log_alpha(t)
        return jnp.exp(log_alpha), -jnp.expm1(2 * log_alpha)


SDES = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}


def get_sde(name: str, **kwargs) -> LinearSDE:
    """The SDE named by a config string ("ve", "vp", "subvp"), with its coefficients as kwargs."""
    if name not in SDES:
        raise ValueError(f"Unknown SDE {name!r}; choose one of {sorted(SDES)}.")
    return SDES[name](**kwargs)
