"""The flow objective: exact negative log-likelihood, with dequantization.

For 8-bit data x, training uses y = (x + u) / 256, u ~ U[0, 1)^D (uniform
dequantization). The flow models a density p(y) on [0, 1]^D, and

    log P(x) >= E_u[log p((x + u) / 256)] - D log 256,

so the reported NLL of the discrete data is -log p(y) + D log 256 per example:
a bound on the discrete NLL, never the continuous density passed off as one.

References:
  Theis, van den Oord & Bethge, "A note on the evaluation of generative models", ICLR 2016.
  Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jgen.bijectors import Bijector, Chain, Sigmoid, flow_log_prob
from jgen.distributions import standard_normal_log_prob
from jgen.losses.elbo import masked_mean, preprocessed_input
from jgen.typing import Array, Params


def make_flow_nll_loss(
    flow_fn: Callable[[Params], Bijector],
    base_log_prob_fn: Callable[[Array], Array],
    *,
    preprocess=None,
    nll_offset: float = 0.0,
):
    """Returns `loss_fn(params, key, batch) -> (loss, aux)`: the mean flow NLL.

    Args:
      flow_fn: `params -> bijector` (base -> data), built inside the loss so the
        parameters are traced.
      base_log_prob_fn: the base log-density, `z -> [B]`.
      preprocess: `preprocess(key, image, index) -> y` (e.g. uniform dequantization).
      nll_offset: added to every per-example NLL: D log 256 turns the density of
        dequantized data into the discrete-data bound.

    The aux dict holds `nll` [B] in nats (the discrete-data bound when
    `nll_offset` is set).
    """

    def loss_fn(params, key, batch):
        y, _ = preprocessed_input(preprocess, key, batch)
        nll = -flow_log_prob(flow_fn(params), base_log_prob_fn, y.reshape((y.shape[0], -1))) + nll_offset
        return masked_mean(nll, batch.get("mask")), {"nll": nll}

    return loss_fn


def make_variational_dequantizer(flow_fn: Callable[[Params, Array], Bijector], context_fn=None):
    r"""A variational dequantizer :math:`q(u \mid x)` on :math:`(0, 1)^D` from a conditional flow.

    :math:`u = \sigma(f_x(\varepsilon))`, :math:`\varepsilon \sim \mathcal N(0, I)`, where
    `flow_fn(params, context)` gives :math:`f_x` (base -> R^D); the sigmoid is appended
    here, so

    .. math::
        \log q(u \mid x) = \log \mathcal N(\varepsilon; 0, I)
            - \log|\det J_{f_x}(\varepsilon)| - \sum_i \log \sigma'(f_x(\varepsilon)_i).

    Args:
      flow_fn: `(params, context) -> bijector` on [B, D] (e.g.
        `jgen.models.flows.conditional.make_conditional_coupling_flow`).
      context_fn: `x [B, *shape] (integers as float) -> context [B, C]`; default: the
        pixels scaled to [-0.5, 0.5] and flattened.

    Returns:
      `dequantize(params, key, x) -> (u [B, *shape], log_q [B])`.
    """
    if context_fn is None:
        def context_fn(x):
            return x.reshape((x.shape[0], -1)) / 255.0 - 0.5

    def dequantize(params, key, x):
        x = jnp.asarray(x, jnp.float32)
        shape = x.shape
        dim = math.prod(shape[1:])
        eps = jax.random.normal(key, (shape[0], dim), jnp.float32)
        bij = Chain([flow_fn(params, context_fn(x)), Sigmoid()])
        u, log_det = bij.forward_and_log_det(eps)
        # float32 rounding can put sigmoid's output on 1.0; keep u inside [0, 1).
        u = jnp.minimum(u, jnp.nextafter(jnp.float32(1.0), jnp.float32(0.0)))
        return u.reshape(shape), standard_normal_log_prob(eps) - log_det

    return dequantize


def make_variational_dequantization_nll_loss(
    flow_fn: Callable[[Params], Bijector],
    base_log_prob_fn: Callable[[Array], Array],
    dequantize: Callable,
    *,
    num_bins: int = 256,
):
    r"""Returns `loss_fn(params, key, batch) -> (loss, aux)`: the variational-dequantization
    bound of Flow++ (Ho et al. 2019, Section 3.1), as a per-example NLL of the discrete data.

    For integer pixels :math:`x \in \{0, \dots, K-1\}^D` (K = `num_bins`) and
    :math:`y = (x + u) / K`, :math:`u \sim q(u \mid x)` on :math:`[0, 1)^D`,

    .. math::
        \log P(x) = \log \int_{[0,1)^D} K^{-D} p\big(\tfrac{x + u}{K}\big)\, du
          \ge \mathbb E_{q}\big[\log p(y) - D \log K - \log q(u \mid x)\big],

    with equality when :math:`q(u \mid x)` is the model's own density restricted to
    the cell of :math:`x`; uniform dequantization is the special case :math:`q = 1`.
    The aux `nll` [B] is :math:`-\log p(y) + D \log K + \log q(u \mid x)` (one sample of
    :math:`u`): an upper bound on :math:`-\log P(x)` in expectation, never a density of
    continuous values passed off as one.

    Args:
      flow_fn: `params["flow"] -> bijector` (base -> data on [0, 1]^D, flattened).
      base_log_prob_fn: base log-density `z -> [B]`.
      dequantize: `(params["dequantizer"], key, x) -> (u, log_q)`, e.g. from
        `make_variational_dequantizer`.
      num_bins: K, the number of pixel values.

    Params are a dict `{"flow": ..., "dequantizer": ...}`; both are trained jointly.
    """

    def loss_fn(params, key, batch):
        x = batch["image"]
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            raise TypeError(
                "Variational dequantization takes the integer pixels (uint8 batch['image'] in "
                f"[0, {num_bins - 1}]); received dtype {jnp.asarray(x).dtype}. Do not preprocess "
                "the images: the dequantizer adds the noise itself."
            )
        x = jnp.asarray(x, jnp.float32)
        u, log_q = dequantize(params["dequantizer"], key, x)
        y = ((x + u) / num_bins).reshape((x.shape[0], -1))
        dim = y.shape[1]
        nll = -flow_log_prob(flow_fn(params["flow"]), base_log_prob_fn, y) + log_q + dim * math.log(num_bins)
        return masked_mean(nll, batch.get("mask")), {"nll": nll, "log_q": log_q}

    return loss_fn
