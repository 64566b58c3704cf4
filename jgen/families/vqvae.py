"""The VQ-VAE family: conv encoder, a codebook (trained by its loss term or by
EMA updates), conv decoder with any `jgen.losses.likelihoods` head.

Evaluation reports reconstruction error, codebook usage and perplexity, and an
NLL bound under the uniform code prior: with a deterministic one-hot posterior,
KL(q || Uniform(K)) = log K per latent position, so
-log p(x) <= -log p(x | z_q(x)) + n_positions * log K.

Sampling needs a prior over code maps. This family's own `model.prior =
"uniform"` draws codes i.i.d. uniformly (what the bound above assumes; the
samples look like noise). A learned autoregressive prior is the second stage of
the standard two-stage recipe and a family of its own, `jgen.families.vqvae_prior`
(config `experiments/vae/configs/mnist_vqvae_prior.py`): it trains a PixelCNN or
a transformer on the code maps of a trained VQ-VAE workdir
(`model.vqvae_workdir`), and `jgen sample` / `jgen eval` of *that* workdir
sample through the learned prior and report the bound with it. `code_model`
below is the piece it builds on: the VQ-VAE as a map between images and code
maps.

References:
  van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning",
    NeurIPS 2017. https://arxiv.org/abs/1711.00937
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from jgen.data import get_preprocess
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses.likelihoods import get_likelihood
from jgen.losses.vq import (
    ema_codebook_init,
    get_codebook,
    make_vq_ema_step,
    make_vqvae_loss,
    nearest_code,
)
from jgen.models.vae import VQVAE

# The VQ-VAE family's own code priors. The learned (autoregressive) prior is a second
# training stage: the `vqvae_prior` family (jgen.families.vqvae_prior).
PRIORS = ("uniform",)
LEARNED_PRIOR_HINT = (
    "A learned autoregressive prior is a second training stage on a trained VQ-VAE workdir: "
    "`jgen train --config experiments/vae/configs/mnist_vqvae_prior.py --workdir PRIOR_RUN "
    "--config.model.vqvae_workdir=VQVAE_RUN`, then `jgen sample --workdir PRIOR_RUN` and "
    "`jgen eval --workdir PRIOR_RUN` (family 'vqvae_prior')."
)


def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the VQ-VAE family, with its default."""
    c = ConfigDict()
    c.family = "vqvae"
    c.num_codes = 64
    c.code_dim = 16
    c.hidden_channels = 64
    c.res_channels = 32
    c.num_res_blocks = 2
    c.downsample = 4
    c.likelihood = "bernoulli"
    c.gaussian_std = 0.1
    c.num_mixtures = 5
    c.beta = 0.25  # commitment weight
    c.ema = False  # EMA codebook updates instead of the codebook loss
    c.ema_decay = 0.99
    c.prior = "uniform"
    for k, v in overrides.items():
        c[k] = v
    return c


class CodeModel(NamedTuple):
    """A VQ-VAE as a map between preprocessed images and code maps (what a prior
    over codes needs; `jgen.families.vqvae_prior` builds on it).

    Attributes:
      init: `init(key) -> params` (the VQ-VAE family's parameter pytree).
      codes: `codes(params, x [B, H, W, C] preprocessed) -> int32 [B, h, w]`, the
        nearest codebook entry of every encoding, k(x) = argmin_k ||z_e(x) - e_k||^2.
      decode_codes: `decode_codes(params, codes int [B, h, w]) -> decoder output`
        (the likelihood's parameters) of z_q = e_codes.
      recon_nll: `recon_nll(x, out) -> [B]`, -log p(x | z_q) in nats.
      mean: `mean(out) -> images [B, H, W, C] in [0, 1]`, the decoder's mean.
      grid: (h, w), the code map's shape.
      num_codes: K, the codebook size.
    """

    init: Callable
    codes: Callable
    decode_codes: Callable
    recon_nll: Callable
    mean: Callable
    grid: tuple[int, int]
    num_codes: int


def _network(m: ConfigDict, image_shape):
    """(VQVAE module, likelihood) of a full VQ-VAE model config."""
    likelihood = get_likelihood(m.likelihood, gaussian_std=m.gaussian_std, num_mixtures=m.num_mixtures)
    model = VQVAE(image_shape=image_shape, num_codes=m.num_codes, code_dim=m.code_dim,
                  hidden_channels=m.hidden_channels, res_channels=m.res_channels,
                  num_res_blocks=m.num_res_blocks, downsample=m.downsample,
                  out_channels=image_shape[-1] * likelihood.params_per_channel)
    return model, likelihood


def code_model(model_cfg: ConfigDict, image_shape) -> CodeModel:
    """The `CodeModel` of a VQ-VAE `config.model` section on images of `image_shape`.

    Example (the frozen stage 1 of a learned prior)::

        cm = code_model(load_saved_config(vqvae_workdir).model, (28, 28, 1))
        codes = cm.codes(params, x)                         # [B, 7, 7] in 0..K-1
        images = cm.mean(cm.decode_codes(params, codes))    # [B, 28, 28, 1]
    """
    m = model_config()
    m.update(model_cfg)
    image_shape = tuple(int(s) for s in image_shape)
    model, likelihood = _network(m, image_shape)

    def init(key):
        return model.init(key, jnp.zeros((1, *image_shape), jnp.float32))

    def codes(params, x):
        return nearest_code(model.apply(params, x, method=VQVAE.encode), get_codebook(params))

    def decode_codes(params, codes):
        return model.apply(params, get_codebook(params)[codes], method=VQVAE.decode)

    def recon_nll(x, out):
        return -likelihood.log_prob(x, out)

    grid = (image_shape[0] // int(m.downsample), image_shape[1] // int(m.downsample))
    return CodeModel(init=init, codes=codes, decode_codes=decode_codes, recon_nll=recon_nll,
                     mean=likelihood.mean, grid=grid, num_codes=int(m.num_codes))


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)
    if m.prior not in PRIORS:
        raise ValueError(
            f"model.prior={m.prior!r} is not available in the VQ-VAE family, whose own prior is one of "
            f"{PRIORS} (codes drawn i.i.d. uniformly). {LEARNED_PRIOR_HINT}"
        )
    image_shape = tuple(info.image_shape)
    num_dims = math.prod(image_shape)
    model, likelihood = _network(m, image_shape)
    h, w = image_shape[0] // m.downsample, image_shape[1] // m.downsample
    positions = h * w

    def encode_fn(params, x):
        return model.apply(params, x, method=VQVAE.encode)

    def decode_fn(params, z_q):
        return model.apply(params, z_q, method=VQVAE.decode)

    def recon_fn(x, out):
        return -likelihood.log_prob(x, out)

    preprocess = get_preprocess(config.data.preprocess)
    eval_preprocess = get_preprocess(config.data.eval_preprocess)
    core = make_vqvae_loss(encode_fn, decode_fn, recon_fn, beta=m.beta, preprocess=preprocess, ema=m.ema)

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The VQ-VAE loss")
        return core(params, key, batch)

    def init(key):
        return model.init(key, jnp.zeros((1, *image_shape), jnp.float32))

    def codes_to_images(params, codes):
        z_q = get_codebook(params)[codes]  # [N, h, w, D]
        return likelihood.mean(decode_fn(params, z_q))

    def sample(params, key, num, labels=None):
        codes = jax.random.randint(key, (num, h, w), 0, m.num_codes)  # the uniform prior
        return codes_to_images(params, codes)

    def encode(params, batch):
        """The quantized encodings z_q, flattened to [B, h * w * D] (for jgen.latent)."""
        check_image_batch(batch, image_shape, who="The VQ-VAE encoder")
        x = eval_preprocess(jax.random.PRNGKey(0), batch["image"], batch.get("index"))
        z_q = get_codebook(params)[nearest_code(encode_fn(params, x), get_codebook(params))]
        return z_q.reshape((z_q.shape[0], -1))

    def decode(params, z, labels=None):
        return likelihood.mean(decode_fn(params, z.reshape((z.shape[0], h, w, m.code_dim))))

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The VQ-VAE evaluator")
        x = eval_preprocess(key, batch["image"], batch.get("index"))
        codes = nearest_code(encode_fn(params, x), get_codebook(params))  # [B, h, w]
        out = decode_fn(params, get_codebook(params)[codes])
        recon_nll = recon_fn(x, out)
        sq_err = jnp.sum((likelihood.mean(out) - _unit(x, m.likelihood)) ** 2, axis=(1, 2, 3))
        return {
            "ELBO (uniform code prior)": recon_nll + positions * math.log(m.num_codes),
            "reconstruction_nll": recon_nll,
            "squared_error": sq_err,
            "codes": codes.reshape((codes.shape[0], -1)),
        }

    def summarize(values):
        codes = values["codes"].reshape(-1)
        counts = np.bincount(codes, minlength=m.num_codes).astype(np.float64)
        p = counts / counts.sum()
        nz = p[p > 0]
        n = values["squared_error"].shape[0]
        return {
            "reconstruction_nll_nats": _mean_se(values["reconstruction_nll"]),
            "mse_per_pixel": _mean_se(values["squared_error"] / num_dims),
            "codebook_perplexity": {"value": float(np.exp(-np.sum(nz * np.log(nz)))), "num_codes": m.num_codes},
            "codebook_usage": {"value": float(np.mean(counts > 0)), "codes_used": int(np.sum(counts > 0))},
            "num_examples": int(n),
        }

    init_extra = post_update = None
    if m.ema:
        ema_step = make_vq_ema_step(encode_fn, decay=m.ema_decay, preprocess=preprocess)

        def init_extra(params):
            return ema_codebook_init(get_codebook(params))

        def post_update(params, extra, key, batch):
            # The loss split its key as (preprocess, rest); use the same split so the
            # EMA step sees the same preprocessed batch.
            return ema_step(params, extra, key, batch)

    return ModelSpec(
        init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=num_dims,
        stochastic=(), nll_estimators=("ELBO (uniform code prior)",), summarize=summarize,
        init_extra=init_extra, post_update=post_update,
        encode=encode, decode=decode, latent_dim=positions * int(m.code_dim),
    )


def _unit(x, likelihood_name):
    """Data in [0, 1] for the squared error (the DLM works on [-1, 1])."""
    return (x + 1.0) / 2.0 if likelihood_name == "dlogistic_mixture" else x


def _mean_se(v):
    v = np.asarray(v, np.float64)
    return {"mean": float(v.mean()), "stderr": float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None}
