"""Fully visible sigmoid belief network and NADE: autoregressive models of binary
vectors whose every conditional logit comes out of one forward pass.

For x in {0, 1}^D in a fixed order, both define

.. math::
    p(x) = \\prod_{i=1}^{D} \\operatorname{Bernoulli}(x_i; \\sigma(\\ell_i(x_{<i}))),

and return the logits :math:`\\ell` [B, D]; the exact log-likelihood is
`jgen.losses.autoregressive.bernoulli_autoregressive_log_prob(logits, x)`.

- FVSBN (Frey 1998; Gan et al. 2015): :math:`\\ell_i = b_i + \\sum_{j<i} W_{ij} x_j`,
  a strictly lower-triangular linear map (D(D+1)/2 parameters).
- NADE (Larochelle & Murray 2011): a hidden layer shared across positions,
  :math:`h_i = \\sigma(c + W_{:, <i} x_{<i})`, :math:`\\ell_i = b_i + V_i^\\top h_i`;
  the pre-activations :math:`a_i = c + \\sum_{j<i} W_{:, j} x_j` are an exclusive
  cumulative sum, so all D conditionals cost O(DH) in one pass.

Modules hold architecture only.

References:
  Frey, "Graphical Models for Machine Learning and Digital Communication", 1998.
  Larochelle & Murray, "The Neural Autoregressive Distribution Estimator", AISTATS 2011.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def _check_binary_vectors(who: str, x: jax.Array, dim: int) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(
            f"{who}: expected binary vectors of shape [B, {dim}]; received shape {x.shape}. "
            "Flatten images with x.reshape(B, -1)."
        )
    return x.astype(jnp.float32)


class FVSBN(nn.Module):
    """x [B, D] -> logits [B, D] with logit_i = b_i + sum_{j<i} W_ij x_j."""

    dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _check_binary_vectors("FVSBN", x, self.dim)
        w = self.param("w", nn.initializers.zeros, (self.dim, self.dim))
        b = self.param("b", nn.initializers.zeros, (self.dim,))
        strictly_lower = jnp.tril(jnp.ones((self.dim, self.dim), jnp.float32), k=-1)
        return x @ (w * strictly_lower).T + b[None]


class NADE(nn.Module):
    """x [B, D] -> logits [B, D]; `hidden` units shared across positions."""

    dim: int
    hidden: int = 500

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _check_binary_vectors("NADE", x, self.dim)
        w = self.param("w", nn.initializers.normal(0.01), (self.dim, self.hidden))
        c = self.param("c", nn.initializers.zeros, (self.hidden,))
        v = self.param("v", nn.initializers.normal(0.01), (self.dim, self.hidden))
        b = self.param("b", nn.initializers.zeros, (self.dim,))
        contrib = x[:, :, None] * w[None]  # [B, D, H]: input j's contribution
        a = jnp.cumsum(contrib, axis=1) - contrib + c[None, None]  # exclusive cumsum: j < i
        h = jax.nn.sigmoid(a)
        return jnp.sum(h * v[None], axis=-1) + b[None]
