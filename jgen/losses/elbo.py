"""The evidence lower bound (ELBO) of a latent-variable model with a diagonal
Gaussian posterior and a standard normal prior, and its common variants.

    log p(x) >= ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z))

The reconstruction term is estimated with reparameterised samples
z = mean + std * eps. The KL term is the closed form for diagonal Gaussians, or
a Monte Carlo estimate log q(z|x) - log p(z) on the same samples (for
posteriors/priors without a closed form, and as a check of the closed form).

Training variants (all in `make_elbo_loss`): beta-VAE (a constant KL weight),
KL annealing (a KL weight that grows with the training step), and free bits
(a floor of lambda nats per latent dimension on the batch-averaged KL).

References:
  Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
  Higgins et al., "beta-VAE", ICLR 2017.
  Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016 (KL annealing).
  Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow",
    NeurIPS 2016 (free bits).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from jgen.distributions import (diag_gaussian_kl, diag_gaussian_log_prob, diag_gaussian_sample,
                                standard_normal_log_prob)
from jgen.typing import Array, Params, PRNGKey

# encode_fn(params, x) -> (mean [B, D], log_std [B, D])
EncodeFn = Callable[[Params, Array], tuple[Array, Array]]
# log_likelihood_fn(params, x, z) -> log p(x|z) per example [B]
LogLikelihoodFn = Callable[[Params, Array, Array], Array]

KL_ESTIMATORS = ("analytic", "mc")


def elbo_terms(
    encode_fn: EncodeFn,
    log_likelihood_fn: LogLikelihoodFn,
    params: Params,
    key: PRNGKey,
    x: Array,
    *,
    num_samples: int = 1,
    kl_estimator: str = "analytic",
) -> dict[str, Array]:
    """Per-example ELBO and its two terms.

    Args:
      encode_fn: the posterior q(z|x) as (mean, log_std).
      log_likelihood_fn: log p(x|z) per example.
      params: model parameters.
      key: PRNG key for the reparameterised samples.
      x: a batch [B, ...].
      num_samples: number of z samples averaged in the Monte Carlo terms.
      kl_estimator: "analytic" (closed form) or "mc" (log q(z|x) - log p(z)
        averaged over the same samples; unbiased, noisier).

    Returns:
      {"elbo": [B], "log_likelihood": [B] (E_q log p(x|z)), "kl": [B],
       "kl_per_dim": [B, D] (closed form; used by free bits)}, in nats.
    """
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator={kl_estimator!r}; use one of {KL_ESTIMATORS}.")
    mean, log_std = encode_fn(params, x)
    keys = jax.random.split(key, num_samples)

    def one(k):
        z = diag_gaussian_sample(k, mean, log_std)
        kl_mc = diag_gaussian_log_prob(z, mean, log_std) - standard_normal_log_prob(z)
        return log_likelihood_fn(params, x, z), kl_mc

    log_lik, kl_mc = jax.vmap(one)(keys)
    log_lik = jnp.mean(log_lik, axis=0)
    kl_per_dim = diag_gaussian_kl(mean, log_std, event_ndims=0)
    kl = jnp.sum(kl_per_dim, axis=-1) if kl_estimator == "analytic" else jnp.mean(kl_mc, axis=0)
    return {"elbo": log_lik - kl, "log_likelihood": log_lik, "kl": kl, "kl_per_dim": kl_per_dim}


def linear_kl_warmup(warmup_steps: int, *, start: float = 0.0, end: float = 1.0) -> Callable[[Array], Array]:
    """KL annealing: the KL weight rises linearly from `start` to `end` over `warmup_steps`."""

    def schedule(step):
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(warmup_steps, 1), 0.0, 1.0)
        return start + (end - start) * frac

    return schedule


def make_elbo_loss(
    encode_fn: EncodeFn,
    log_likelihood_fn: LogLikelihoodFn,
    *,
    beta: float | Callable[[Array], Array] = 1.0,
    free_bits: float = 0.0,
    kl_estimator: str = "analytic",
    preprocess: Callable[[PRNGKey, Array, Array], Array] | None = None,
):
    """Returns `loss_fn(params, key, batch) -> (loss, aux)`: the negative ELBO
    (with the options below) averaged over the batch.

    Args:
      encode_fn, log_likelihood_fn: the model, as in `elbo_terms`.
      beta: KL weight: a constant (1 is the ELBO, other values a beta-VAE) or a
        schedule `beta(step)` (KL annealing, e.g. `linear_kl_warmup`), read from
        `batch["step"]` (the training step adds it; 0 when absent).
      free_bits: lambda >= 0 nats per latent dimension: the KL part of the loss is
        sum_d max(lambda, mean_batch KL_d) (Kingma et al. 2016). 0 disables it.
      kl_estimator: "analytic" or "mc" (see `elbo_terms`). Free bits need "analytic".
      preprocess: optional `preprocess(key, image, index) -> x` applied to
        `batch["image"]` first (e.g. dynamic binarization).

    The aux dict holds per-example terms [B] in nats, always of the true ELBO:
    `nelbo`, `nll_recon` (-E_q log p(x|z)) and `kl`. If the batch has a "mask"
    key (eval padding), the mean is taken over the masked rows only.
    """
    if free_bits and kl_estimator != "analytic":
        raise ValueError("free_bits needs kl_estimator='analytic' (per-dimension KL terms).")

    def loss_fn(params, key, batch):
        x, key_z = preprocessed_input(preprocess, key, batch)
        terms = elbo_terms(encode_fn, log_likelihood_fn, params, key_z, x, kl_estimator=kl_estimator)
        mask = batch.get("mask")
        weight = beta(batch.get("step", 0)) if callable(beta) else beta
        if free_bits:
            kl_dims = masked_mean(terms["kl_per_dim"], mask)  # [D], batch-averaged
            kl_part = jnp.sum(jnp.maximum(kl_dims, free_bits))
        else:
            kl_part = masked_mean(terms["kl"], mask)
        loss = masked_mean(-terms["log_likelihood"], mask) + weight * kl_part
        aux = {"nelbo": -terms["elbo"], "nll_recon": -terms["log_likelihood"], "kl": terms["kl"]}
        return loss, aux

    return loss_fn


def preprocessed_input(preprocess, key: PRNGKey, batch) -> tuple[Array, PRNGKey]:
    """The model input `batch["image"]`, preprocessed with the first half of `key`
    (if a `preprocess(key, image, index)` is given), and the other half of the key.

    Every loss factory (and the VQ-VAE's EMA step) uses this one split, so they all
    see the same x for the same key.
    """
    key_pre, key_rest = jax.random.split(key)
    x = batch["image"]
    if preprocess is not None:
        x = preprocess(key_pre, x, batch.get("index"))
    return x, key_rest


def masked_mean(values: Array, mask: Array | None) -> Array:
    """Mean over the leading (batch) axis, over rows where mask == 1 if a mask is given."""
    if mask is None:
        return jnp.mean(values, axis=0)
    mask = mask.astype(values.dtype).reshape(mask.shape + (1,) * (values.ndim - 1))
    return jnp.sum(values * mask, axis=0) / jnp.maximum(jnp.sum(mask), 1.0)
