"""The evidence lower bound (ELBO) of a latent-variable model with a diagonal
Gaussian posterior and a standard normal prior.

    log p(x) >= ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z))

The reconstruction term is estimated with reparameterised samples
z = mean + std * eps; the KL term is the closed form for diagonal Gaussians.

References:
  Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from jgen.distributions import diag_gaussian_kl, diag_gaussian_sample
from jgen.typing import Array, Params, PRNGKey

# encode_fn(params, x) -> (mean [B, D], log_std [B, D])
EncodeFn = Callable[[Params, Array], tuple[Array, Array]]
# log_likelihood_fn(params, x, z) -> log p(x|z) per example [B]
LogLikelihoodFn = Callable[[Params, Array, Array], Array]


def elbo_terms(
    encode_fn: EncodeFn,
    log_likelihood_fn: LogLikelihoodFn,
    params: Params,
    key: PRNGKey,
    x: Array,
    *,
    num_samples: int = 1,
) -> dict[str, Array]:
    """Per-example ELBO and its two terms.

    Args:
      encode_fn: the posterior q(z|x) as (mean, log_std).
      log_likelihood_fn: log p(x|z) per example.
      params: model parameters.
      key: PRNG key for the reparameterised samples.
      x: a batch [B, ...].
      num_samples: number of z samples averaged in the reconstruction term.

    Returns:
      {"elbo": [B], "log_likelihood": [B] (E_q log p(x|z)), "kl": [B]}, in nats.
    """
    mean, log_std = encode_fn(params, x)
    keys = jax.random.split(key, num_samples)

    def one(k):
        z = diag_gaussian_sample(k, mean, log_std)
        return log_likelihood_fn(params, x, z)

    log_lik = jnp.mean(jax.vmap(one)(keys), axis=0)
    kl = diag_gaussian_kl(mean, log_std)
    return {"elbo": log_lik - kl, "log_likelihood": log_lik, "kl": kl}


def make_elbo_loss(
    encode_fn: EncodeFn,
    log_likelihood_fn: LogLikelihoodFn,
    *,
    beta: float = 1.0,
    preprocess: Callable[[PRNGKey, Array, Array], Array] | None = None,
):
    """Returns `loss_fn(params, key, batch) -> (loss, aux)`: the negative
    (beta-weighted) ELBO averaged over the batch.

    Args:
      encode_fn, log_likelihood_fn: the model, as in `elbo_terms`.
      beta: weight of the KL term (1 gives the ELBO; other values a beta-VAE).
      preprocess: optional `preprocess(key, image, index) -> x` applied to
        `batch["image"]` first (e.g. dynamic binarization); otherwise
        `batch["image"]` is used as is.

    The aux dict holds per-example terms [B] in nats: `nelbo`, `nll_recon`
    (-E_q log p(x|z)) and `kl`. If the batch has a "mask" key (eval padding),
    the mean is taken over the masked rows only.
    """

    def loss_fn(params, key, batch):
        key_pre, key_z = jax.random.split(key)
        x = batch["image"]
        if preprocess is not None:
            x = preprocess(key_pre, x, batch.get("index"))
        terms = elbo_terms(encode_fn, log_likelihood_fn, params, key_z, x)
        per_example = -terms["log_likelihood"] + beta * terms["kl"]
        aux = {"nelbo": -terms["elbo"], "nll_recon": -terms["log_likelihood"], "kl": terms["kl"]}
        return masked_mean(per_example, batch.get("mask")), aux

    return loss_fn


def masked_mean(values: Array, mask: Array | None) -> Array:
    """Mean of per-example values, over the rows where mask == 1 if a mask is given."""
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
