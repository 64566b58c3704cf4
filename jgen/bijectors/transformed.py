"""Densities and samples of a flow: a base distribution pushed through a bijector.

The bijector's `forward` is the sampling direction, base (latent) space to data space:
:math:`x = f(z)`, :math:`z \\sim p_Z`. Then by the change of variables

.. math::
    \\log p_X(x) = \\log p_Z(f^{-1}(x)) + \\log|\\det J_{f^{-1}}(x)|.

The base enters as plain functions, e.g. `jgen.distributions.standard_normal_log_prob`,
so these helpers are pure and jittable (mark the functions and `num` static).

References:
  Rezende, D. J. & Mohamed, S. (2015). Variational Inference with Normalizing Flows.
    ICML. https://arxiv.org/abs/1505.05770
  Papamakarios, G. et al. (2021). Normalizing Flows for Probabilistic Modeling and
    Inference. JMLR 22(57), Section 2. https://arxiv.org/abs/1912.02762
"""

from collections.abc import Callable

import jax

from jgen.bijectors.base import Bijector

# base_log_prob_fn(z [B, *event]) -> [B]; base_sample_fn(key, num) -> z [num, *event]
BaseLogProbFn = Callable[[jax.Array], jax.Array]
BaseSampleFn = Callable[[jax.Array, int], jax.Array]


def flow_log_prob(
    bijector: Bijector, base_log_prob_fn: BaseLogProbFn, x: jax.Array
) -> jax.Array:
    r"""Per-example log-density of data under the flow, :math:`\log p_Z(f^{-1}(x)) + \log|\det J_{f^{-1}}(x)|`.

    Args:
      bijector: the flow :math:`f` (base -> data).
      base_log_prob_fn: `z [B, *event] -> [B]`, the base log-density.
      x: data [B, *event].

    Returns:
      Log-densities of shape [B] (nats). The flow NLL is `-flow_log_prob(...)`.

    Example:
      >>> from jgen.distributions import standard_normal_log_prob
      >>> flow = Affine(shift=jnp.ones(2), log_scale=jnp.zeros(2))
      >>> flow_log_prob(flow, standard_normal_log_prob, x)  # N(1, I) log-densities
    """
    z, log_det = bijector.inverse_and_log_det(x)
    return base_log_prob_fn(z) + log_det


def flow_sample(
    bijector: Bijector, base_sample_fn: BaseSampleFn, key: jax.Array, num: int
) -> jax.Array:
    r"""Draws `num` samples :math:`x = f(z)`, :math:`z \sim p_Z`.

    Args:
      bijector: the flow :math:`f` (base -> data).
      base_sample_fn: `(key, num) -> z [num, *event]`, e.g.
        `lambda k, n: jax.random.normal(k, (n, 2))`.
      key: a PRNG key.
      num: number of samples (static under jit).

    Returns:
      Samples [num, *event].
    """
    return bijector.forward(base_sample_fn(key, num))


def flow_sample_and_log_prob(
    bijector: Bijector,
    base_sample_fn: BaseSampleFn,
    base_log_prob_fn: BaseLogProbFn,
    key: jax.Array,
    num: int,
) -> tuple[jax.Array, jax.Array]:
    r"""Samples and their log-densities in one forward pass (no inverse needed).

    .. math::
        x = f(z),\qquad \log p_X(x) = \log p_Z(z) - \log|\det J_f(z)|,

    which is what a reverse-KL (variational) objective needs, and works for flows
    whose inverse is expensive.

    Args:
      bijector: the flow :math:`f` (base -> data).
      base_sample_fn: `(key, num) -> z [num, *event]`.
      base_log_prob_fn: `z [num, *event] -> [num]`.
      key: a PRNG key.
      num: number of samples (static under jit).

    Returns:
      `(x, log_prob)` of shapes [num, *event] and [num].
    """
    z = base_sample_fn(key, num)
    x, log_det = bijector.forward_and_log_det(z)
    return x, base_log_prob_fn(z) - log_det
