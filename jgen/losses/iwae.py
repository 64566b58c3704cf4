"""The importance-weighted bound (IWAE) and the importance-sampled marginal
likelihood estimate for latent-variable models.

    log p(x) >= L_K(x) = E[ log (1/K) sum_k p(x, z_k) / q(z_k|x) ],  z_k ~ q(z|x)

L_1 is the ELBO, L_K increases with K and tends to log p(x) as K -> inf
(Burda et al.). The same quantity with large K (e.g. 5000) is the standard
importance-sampled NLL estimate of a VAE. `iwae_bound` evaluates it in chunks
of samples with a running logsumexp, so K = 5000 fits in memory.

References:
  Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

import math

import jax
import jax.numpy as jnp

from jgen.distributions import diag_gaussian_log_prob, diag_gaussian_sample, standard_normal_log_prob
from jgen.losses.elbo import EncodeFn, LogLikelihoodFn, masked_mean, preprocessed_input
from jgen.typing import Array, Params, PRNGKey


def iwae_log_weights(
    log_likelihood_fn: LogLikelihoodFn,
    params: Params,
    key: PRNGKey,
    x: Array,
    mean: Array,
    log_std: Array,
    num_samples: int,
) -> Array:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for K samples: [K, B]."""

    def one(k):
        z = diag_gaussian_sample(k, mean, log_std)
        return (
            log_likelihood_fn(params, x, z)
            + standard_normal_log_prob(z)
            - diag_gaussian_log_prob(z, mean, log_std)
        )

    return jax.vmap(one)(jax.random.split(key, num_samples))


def iwae_bound(
    encode_fn: EncodeFn,
    log_likelihood_fn: LogLikelihoodFn,
    params: Params,
    key: PRNGKey,
    x: Array,
    *,
    num_samples: int,
    chunk_size: int | None = None,
) -> Array:
    """Per-example IWAE bound L_K(x) in nats, [B].

    Args:
      num_samples: K.
      chunk_size: samples evaluated at once; K must be a multiple of it. The
        chunks run in a `lax.scan` with a running logsumexp, so memory is
        O(chunk_size * B) whatever K is. Defaults to K (one chunk).
    """
    chunk = num_samples if chunk_size is None else min(chunk_size, num_samples)
    if num_samples % chunk:
        raise ValueError(
            f"num_samples={num_samples} must be a multiple of chunk_size={chunk}; "
            f"pick e.g. chunk_size={math.gcd(num_samples, chunk)}."
        )
    mean, log_std = encode_fn(params, x)

    def body(acc, k):
        log_w = iwae_log_weights(log_likelihood_fn, params, k, x, mean, log_std, chunk)
        return jnp.logaddexp(acc, jax.nn.logsumexp(log_w, axis=0)), None

    keys = jax.random.split(key, num_samples // chunk)
    init = jnp.full(mean.shape[:1], -jnp.inf, dtype=mean.dtype)
    total, _ = jax.lax.scan(body, init, keys)
    return total - math.log(num_samples)


def make_iwae_loss(encode_fn: EncodeFn, log_likelihood_fn: LogLikelihoodFn, *, num_samples: int, preprocess=None):
    """Returns `loss_fn(params, key, batch) -> (loss, aux)`: minus the IWAE-K bound
    (reparameterised gradient), with aux {"niwae": [B]}."""

    def loss_fn(params, key, batch):
        x, key_z = preprocessed_input(preprocess, key, batch)
        bound = iwae_bound(encode_fn, log_likelihood_fn, params, key_z, x, num_samples=num_samples)
        return masked_mean(-bound, batch.get("mask")), {"niwae": -bound}

    return loss_fn
