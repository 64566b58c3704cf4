r"""Exact noised densities and scores of Gaussian mixtures, the closed-form references
that samplers and objectives are tested against.

If :math:`x_0 \sim \sum_k w_k \mathcal N(\mu_k, \Sigma_k)` and
:math:`x_t = \alpha x_0 + \sigma\varepsilon`, then

.. math:: p_t(x) = \sum_k w_k\, \mathcal N\big(x;\ \alpha\mu_k,\ \alpha^2\Sigma_k + \sigma^2 I\big),

so :math:`\log p_t` and the score :math:`\nabla_x \log p_t` are closed form for every
SDE, DDPM step and EDM noise level. With one component this is the Gaussian case.

`GaussianMixture` holds the parameters (weights [K], means [K, D], covariances
[K, D, D]); `log_prob(x, alpha, sigma)` and `score(x, alpha, sigma)` take x [B, D] and
per-example alpha, sigma [B] (alpha = 1, sigma = 0 gives the data density itself), and
`sample(key, n)` draws from the data distribution exactly.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.typing import Array, PRNGKey


class GaussianMixture(NamedTuple):
    """A mixture of full-covariance Gaussians in D dimensions."""

    weights: Array  # [K], sums to 1
    means: Array  # [K, D]
    covs: Array  # [K, D, D]

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    def log_prob(self, x: Array, alpha: Array | None = None, sigma: Array | None = None) -> Array:
        r"""log p_t(x) [B] for x [B, D] under x_t = alpha x_0 + sigma eps (defaults: the data, alpha=1, sigma=0)."""
        alpha, sigma = _defaults(x, alpha, sigma)
        return jax.vmap(self._log_prob_one)(x, alpha, sigma)

    def score(self, x: Array, alpha: Array | None = None, sigma: Array | None = None) -> Array:
        r"""\nabla_x log p_t(x) [B, D]."""
        alpha, sigma = _defaults(x, alpha, sigma)
        return jax.vmap(jax.grad(self._log_prob_one))(x, alpha, sigma)

    def _log_prob_one(self, x, alpha, sigma):
        d = self.dim
        cov = alpha ** 2 * self.covs + sigma ** 2 * jnp.eye(d, dtype=x.dtype)[None]
        chol = jnp.linalg.cholesky(cov)  # [K, D, D]
        diff = x[None, :] - alpha * self.means  # [K, D]
        sol = jax.scipy.linalg.solve_triangular(chol, diff[..., None], lower=True)[..., 0]
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        comp = -0.5 * jnp.sum(sol ** 2, axis=-1) - 0.5 * logdet - 0.5 * d * math.log(2 * math.pi)
        return jax.scipy.special.logsumexp(comp + jnp.log(self.weights))

    def sample(self, key: PRNGKey, n: int) -> Array:
        """n exact draws from the data distribution, [n, D]."""
        kc, kn = jax.random.split(key)
        k = jax.random.categorical(kc, jnp.log(self.weights), shape=(n,))
        chol = jnp.linalg.cholesky(self.covs)
        z = jax.random.normal(kn, (n, self.dim), self.means.dtype)
        return self.means[k] + jnp.einsum("nij,nj->ni", chol[k], z)

    def mean(self) -> Array:
        return jnp.sum(self.weights[:, None] * self.means, axis=0)

    def covariance(self) -> Array:
        m = self.mean()
        d = self.means - m[None]
        return jnp.sum(self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :]), axis=0)


def _defaults(x, alpha, sigma):
    if x.ndim != 2:
        raise ValueError(f"GaussianMixture expects x of shape [B, D]; got {list(x.shape)}.")
    b = x.shape[0]
    alpha = jnp.ones((b,), x.dtype) if alpha is None else jnp.broadcast_to(jnp.asarray(alpha, x.dtype), (b,))
    sigma = jnp.zeros((b,), x.dtype) if sigma is None else jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (b,))
    return alpha, sigma


def gaussian_mixture(weights, means, covs=None, *, std: float | None = None, dtype=jnp.float32) -> GaussianMixture:
    """Builds a `GaussianMixture`; give full `covs` [K, D, D] or an isotropic `std`."""
    means = jnp.asarray(means, dtype)
    if means.ndim != 2:
        raise ValueError(f"means must be [K, D]; got shape {list(means.shape)}.")
    k, d = means.shape
    weights = jnp.asarray(weights, dtype)
    if weights.shape != (k,):
        raise ValueError(f"weights must be [K] = [{k}] to match means; got shape {list(weights.shape)}.")
    if covs is None:
        if std is None:
            raise ValueError("Give the components' covariances `covs` [K, D, D] or an isotropic `std`.")
        covs = jnp.broadcast_to(std ** 2 * jnp.eye(d, dtype=dtype), (k, d, d))
    covs = jnp.asarray(covs, dtype)
    if covs.shape != (k, d, d):
        raise ValueError(f"covs must be [K, D, D] = [{k}, {d}, {d}]; got shape {list(covs.shape)}.")
    return GaussianMixture(weights / jnp.sum(weights), means, covs)


def ring_mixture(num_modes: int = 8, radius: float = 4.0, std: float = 0.3, dtype=jnp.float32) -> GaussianMixture:
    """The standard 2-D benchmark: equal-weight isotropic Gaussians on a circle."""
    angles = 2 * math.pi * jnp.arange(num_modes) / num_modes
    means = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    return gaussian_mixture(jnp.ones(num_modes), means, std=std, dtype=dtype)
