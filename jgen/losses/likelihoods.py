"""Decoder likelihoods p(x|z): how a decoder's raw outputs become a log-density.

A `Likelihood` says how many outputs per data channel the decoder must produce
(`params_per_channel`), computes the per-example log p(x|z), and turns outputs
into a displayable mean image in [0, 1] and into samples. Which data each one
is for:

| name                | data x                      | decoder outputs per channel          |
|---------------------|-----------------------------|--------------------------------------|
| `bernoulli`         | binary {0, 1}               | 1: logits                            |
| `gaussian_fixed`    | continuous (e.g. [0, 1])    | 1: mean; std fixed by config         |
| `gaussian_learned`  | continuous                  | 2: mean, log-std (floored)           |
| `dlogistic_mixture` | 8-bit, scaled to [-1, 1]    | 3K: K logits, K means, K log-scales  |

The discretized logistic mixture is a probability mass on the 256 pixel values,
so its NLL is a discrete NLL directly; a Gaussian on dequantized data is a
density, and `jgen.families.vae` converts it to a discrete-data bound.

References:
  Salimans et al., "PixelCNN++", ICLR 2017 (discretized logistic mixture).
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.distributions import (
    bernoulli_logits_log_prob,
    diag_gaussian_log_prob,
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_sample,
)


class Likelihood(NamedTuple):
    """log p(x|z) from decoder outputs [B, H, W, C * params_per_channel]."""

    name: str
    params_per_channel: int
    log_prob: Callable[[jax.Array, jax.Array], jax.Array]  # (x [B,H,W,C], out) -> [B]
    mean: Callable[[jax.Array], jax.Array]  # out -> image in [0, 1]
    sample: Callable[[jax.Array, jax.Array], jax.Array]  # (key, out) -> image in [0, 1]


def _checked(name: str, p: int, log_prob):
    """Wraps log_prob(x, out) with a check that the decoder made p outputs per channel."""

    def fn(x, out):
        if out.shape[:-1] != x.shape[:-1] or out.shape[-1] != x.shape[-1] * p:
            raise ValueError(
                f"The {name} likelihood needs decoder outputs of shape {list(x.shape[:-1]) + [x.shape[-1] * p]} "
                f"({p} per data channel) for data {list(x.shape)}; got {list(out.shape)}. Build the decoder "
                f"with out_channels={p} (Likelihood.params_per_channel)."
            )
        return log_prob(x, out)

    return fn


def _split(out: jax.Array, p: int) -> jax.Array:
    """[B, H, W, C*p] -> [B, H, W, C, p] (channel-major groups of p)."""
    return out.reshape(out.shape[:-1] + (out.shape[-1] // p, p))


def bernoulli() -> Likelihood:
    return Likelihood(
        "bernoulli", 1,
        log_prob=_checked("bernoulli", 1, bernoulli_logits_log_prob),
        mean=jax.nn.sigmoid,
        sample=lambda key, out: jax.random.bernoulli(key, jax.nn.sigmoid(out)).astype(out.dtype),
    )


def gaussian_fixed(std: float) -> Likelihood:
    """N(x; mean, std^2) with a fixed std; data in [0, 1] for display."""
    log_std = math.log(std)
    return Likelihood(
        "gaussian_fixed", 1,
        log_prob=_checked("gaussian_fixed", 1, lambda x, out: diag_gaussian_log_prob(x, out, jnp.full_like(out, log_std))),
        mean=lambda out: jnp.clip(out, 0.0, 1.0),
        sample=lambda key, out: jnp.clip(out + std * jax.random.normal(key, out.shape, out.dtype), 0.0, 1.0),
    )


def gaussian_learned(min_log_std: float = -6.0) -> Likelihood:
    """N(x; mean, exp(log_std)^2) with a per-pixel learned std, floored at exp(min_log_std)
    (an unbounded std lets the density diverge on constant pixels)."""

    def parts(out):
        p = _split(out, 2)
        mean, log_std = p[..., 0], p[..., 1]
        return mean, min_log_std + jax.nn.softplus(log_std - min_log_std)

    def log_prob(x, out):
        mean, log_std = parts(out)
        return diag_gaussian_log_prob(x, mean, log_std)

    def sample(key, out):
        mean, log_std = parts(out)
        return jnp.clip(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype), 0.0, 1.0)

    return Likelihood("gaussian_learned", 2, _checked("gaussian_learned", 2, log_prob), lambda out: jnp.clip(parts(out)[0], 0.0, 1.0), sample)


def _dlm_parts(out: jax.Array, k: int):
    """[B, H, W, C * 3K] -> (logits, means in (-1, 1), log-scales >= -7), each [B, H, W, C, K]."""
    p = _split(out, 3 * k)
    return p[..., :k], jnp.tanh(p[..., k:2 * k]), jnp.maximum(p[..., 2 * k:], -7.0)


def dlogistic_mixture(num_mixtures: int, num_bins: int = 256) -> Likelihood:
    """Per-channel discretized logistic mixture over `num_bins` values of x in [-1, 1]."""
    k = num_mixtures

    def parts(out):
        return _dlm_parts(out, k)

    def log_prob(x, out):
        logits, means, log_scales = parts(out)
        return discretized_logistic_mixture_log_prob(x, logits, means, log_scales, num_bins=num_bins)

    def mean(out):
        logits, means, _ = parts(out)
        return (jnp.sum(jax.nn.softmax(logits, -1) * means, -1) + 1.0) / 2.0

    def sample(key, out):
        logits, means, log_scales = parts(out)
        return (discretized_logistic_mixture_sample(key, logits, means, log_scales, num_bins=num_bins) + 1.0) / 2.0

    return Likelihood("dlogistic_mixture", 3 * k, _checked("dlogistic_mixture", 3 * k, log_prob), mean, sample)


def dlogistic_mixture_value_log_probs(out: jax.Array, num_mixtures: int, num_bins: int = 256) -> jax.Array:
    """log P(x_i = v) for every element i and every value v of the grid, under the
    per-channel mixture of `dlogistic_mixture(num_mixtures, num_bins)` with
    parameters `out` [B, H, W, C * 3K]: returns [B, H, W, C, num_bins].

    Used to sample (or score all values of) one subpixel at a time: the result is a
    categorical over the `num_bins` values, normalised by construction.
    """
    logits, means, log_scales = _dlm_parts(out, num_mixtures)  # each [B, H, W, C, K]
    grid = jnp.linspace(-1.0, 1.0, num_bins, dtype=out.dtype)
    values = jnp.broadcast_to(grid, logits.shape[:-1] + (num_bins,))  # [B, H, W, C, V]
    expand = lambda a: a[..., None, :]
    return discretized_logistic_mixture_log_prob(values, expand(logits), expand(means), expand(log_scales),
                                                 num_bins=num_bins, event_ndims=0)


LIKELIHOODS = ("bernoulli", "gaussian_fixed", "gaussian_learned", "dlogistic_mixture")


def get_likelihood(name: str, *, gaussian_std: float = 0.1, num_mixtures: int = 5) -> Likelihood:
    """The likelihood named in a config (`model.likelihood`)."""
    if name == "bernoulli":
        return bernoulli()
    if name == "gaussian_fixed":
        return gaussian_fixed(gaussian_std)
    if name == "gaussian_learned":
        return gaussian_learned()
    if name == "dlogistic_mixture":
        return dlogistic_mixture(num_mixtures)
    raise ValueError(f"Unknown model.likelihood={name!r}; use one of {', '.join(LIKELIHOODS)}.")
