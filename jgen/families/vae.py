"""The VAE family: an MLP VAE with a Bernoulli decoder on binarized images.

Builds the `ModelSpec` from `config.model` (encoder_hidden, decoder_hidden,
latent_dim, beta) and `config.eval` (iwae_k, iwae_chunk).
"""

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from jgen.data import get_preprocess
from jgen.distributions import bernoulli_logits_log_prob
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses import elbo_terms, iwae_bound, make_elbo_loss
from jgen.models.vae import VAE


def build(config: ConfigDict, info) -> ModelSpec:
    image_shape = tuple(info.image_shape)
    model = VAE(
        encoder_hidden=tuple(config.model.encoder_hidden),
        decoder_hidden=tuple(config.model.decoder_hidden),
        latent_dim=config.model.latent_dim,
        image_shape=image_shape,
    )

    def encode_fn(params, x):
        return model.apply(params, x, method=VAE.encode)

    def log_likelihood_fn(params, x, z):
        return bernoulli_logits_log_prob(x, model.apply(params, z, method=VAE.decode))

    preprocess = get_preprocess(config.data.preprocess)
    eval_preprocess = get_preprocess(config.data.eval_preprocess)
    elbo_loss = make_elbo_loss(encode_fn, log_likelihood_fn, beta=config.model.beta, preprocess=preprocess)

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The VAE loss")
        return elbo_loss(params, key, batch)

    def init(key):
        return model.init(key, jnp.zeros((1, *image_shape), jnp.float32))

    def sample(params, key, num):
        z = jax.random.normal(key, (num, config.model.latent_dim))
        # The decoder's Bernoulli means, the usual way to show binary-VAE samples.
        return jax.nn.sigmoid(model.apply(params, z, method=VAE.decode))

    iwae_ks = tuple(int(k) for k in config.eval.iwae_k)
    chunk = int(config.eval.iwae_chunk)

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The VAE evaluator")
        key_pre, key_e, key_i = jax.random.split(key, 3)
        x = eval_preprocess(key_pre, batch["image"], batch["index"])
        out = {"ELBO": -elbo_terms(encode_fn, log_likelihood_fn, params, key_e, x)["elbo"]}
        for i, k in enumerate(iwae_ks):
            bound = iwae_bound(
                encode_fn, log_likelihood_fn, params, jax.random.fold_in(key_i, i), x,
                num_samples=k, chunk_size=min(chunk, k),
            )
            out[f"IWAE-{k}"] = -bound
        return out

    num_dims = 1
    for d in image_shape:
        num_dims *= d
    return ModelSpec(
        init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=num_dims,
        stochastic=("ELBO",) + tuple(f"IWAE-{k}" for k in iwae_ks),
    )
