"""Exact log-likelihoods of autoregressive models from their conditional logits.

An autoregressive model returns, in one pass over the (teacher-forced) input,
the parameters of every conditional :math:`p(x_i \\mid x_{<i})`; the chain rule
makes the joint log-likelihood their sum, exactly:

.. math::
    \\log p(x) = \\sum_i \\log p(x_i \\mid x_{<i}).

The functions here return per-example terms [B]; reduce with
`jgen.losses.elbo.masked_mean`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jgen.losses.elbo import masked_mean, preprocessed_input
from jgen.typing import Array, Params


def bernoulli_autoregressive_log_prob(logits: Array, x: Array) -> Array:
    """sum_i log Bernoulli(x_i; sigmoid(logits_i)) over all non-batch axes -> [B].

    Uses log sigma(l) = -softplus(-l), stable for any logit.
    """
    logits = jnp.asarray(logits)
    x = jnp.asarray(x, logits.dtype)
    if logits.shape != x.shape:
        raise ValueError(f"logits {logits.shape} and x {x.shape} must have the same shape [B, ...].")
    ll = -(x * jax.nn.softplus(-logits) + (1.0 - x) * jax.nn.softplus(logits))
    return jnp.sum(ll.reshape((ll.shape[0], -1)), axis=1)


def categorical_autoregressive_log_prob(logits: Array, x: Array) -> Array:
    """sum_i log softmax(logits_i)[x_i] -> [B]; logits [B, ..., V], integer x [B, ...]."""
    logits = jnp.asarray(logits)
    x = jnp.asarray(x)
    if logits.shape[:-1] != x.shape or not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(
            f"Expected integer x of shape logits.shape[:-1] = {logits.shape[:-1]}; "
            f"received {x.dtype} of shape {x.shape}."
        )
    logp = jax.nn.log_softmax(logits, axis=-1)
    ll = jnp.take_along_axis(logp, x[..., None], axis=-1)[..., 0]
    return jnp.sum(ll.reshape((ll.shape[0], -1)), axis=1)


def make_bernoulli_autoregressive_loss(
    logits_fn: Callable[[Params, Array], Array], *, preprocess=None
):
    """Returns `loss_fn(params, key, batch) -> (loss, aux)`: the mean exact NLL (nats)
    of binary images under `logits_fn(params, x_flat [B, D]) -> logits [B, D]`;
    aux `nll` [B]."""

    def loss_fn(params, key, batch):
        x, _ = preprocessed_input(preprocess, key, batch)
        x = x.reshape((x.shape[0], -1))
        nll = -bernoulli_autoregressive_log_prob(logits_fn(params, x), x)
        return masked_mean(nll, batch.get("mask")), {"nll": nll}

    return loss_fn
