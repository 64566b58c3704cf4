"""The VAE family: MLP or conv encoder/decoder, any decoder likelihood, ELBO
(beta, KL annealing, free bits, Monte Carlo KL) or IWAE-K training, optionally
conditional (a CVAE, Sohn et al. 2015) on any condition of `jgen.conditioning`.

A conditional VAE models p(x|c) with an encoder q(z|x,c) and a decoder p(x|z,c), the
prior staying N(0, I):

    log p(x|c) >= ELBO(x|c) = E_{q(z|x,c)}[log p(x|z,c)] - KL(q(z|x,c) || N(0, I)).

`model.condition.kind` picks c (`model.conditional=True` is the older spelling of kind
"label"): class labels go in one-hot, exactly as before; "vector", "tokens" (captions)
and "image" (superres / colorize / inpaint measurements) go through a
`jgen.conditioning.ConditionEncoder` (the ``"condition"`` params subtree, trained jointly)
whose embedding is concatenated to the encoder's features and to z, and whose image
map (kind "image") is concatenated to the conv encoder's input and the conv decoder's
feature maps (flattened for the MLPs). These kinds are trained with condition dropout
(`model.condition.p_uncond`: the learned null condition replaces c, so the model also
learns p(x)); evaluation (ELBO, IWAE-k, AIS of log p(x|c)) and `sample(params, key,
num, condition)` never drop it: samples decode prior z ~ N(0, I) given c.

Reference:
  Sohn, K., Lee, H. & Yan, X. (2015). Learning Structured Output Representation using
    Deep Conditional Generative Models. NeurIPS.

`model_config()` holds every `config.model` key with its default; experiment
configs start from it. `build(config, info)` returns the `ModelSpec`.
"""

import math

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from jgen.conditioning.encoder import drop_mask
from jgen.conditioning.spec import (
    check_condition,
    condition_config,
    condition_of,
    default_condition,
    resolve,
)
from jgen.data import get_preprocess
from jgen.distributions import standard_normal_log_prob
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses import (
    elbo_terms,
    iwae_bound,
    linear_kl_warmup,
    make_elbo_loss,
    make_iwae_loss,
)
from jgen.losses.likelihoods import get_likelihood
from jgen.metrics.ais import ais_log_marginal
from jgen.metrics.likelihood import dequantization_offset
from jgen.models.vae import VAE, conv_vae, mlp_vae

EVAL_CONDITION_KEY = 0  # the fixed key of image conditions' random holes in evaluation


def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the VAE family, with its default."""
    c = ConfigDict()
    c.family = "vae"
    c.architecture = "mlp"  # "mlp" | "conv"
    c.encoder_hidden = (512, 512)  # mlp
    c.decoder_hidden = (512, 512)  # mlp
    c.conv_channels = (32, 64)  # conv: channels of the two stride-2 stages
    c.conv_hidden = 256  # conv: width of the dense layer next to the latent
    c.latent_dim = 50
    c.likelihood = "bernoulli"  # bernoulli | gaussian_fixed | gaussian_learned | dlogistic_mixture
    c.gaussian_std = 0.1  # gaussian_fixed
    c.num_mixtures = 5  # dlogistic_mixture
    c.conditional = False  # condition encoder and decoder on the one-hot label (CVAE)
    c.condition = condition_config()  # any condition kind (see jgen.conditioning.spec)
    c.objective = "elbo"  # "elbo" | "iwae"
    c.iwae_k = 50  # samples of the IWAE training bound
    c.beta = 1.0  # KL weight (beta-VAE); the final weight when annealing
    c.kl_warmup_steps = 0  # KL annealing: weight rises linearly over this many steps (0 = off)
    c.free_bits = 0.0  # nats per latent dimension (0 = off)
    c.kl_estimator = "analytic"  # "analytic" | "mc"
    for k, v in overrides.items():
        c[k] = v
    return c


def _build_module(m: ConfigDict, image_shape, out_channels: int, condition=None) -> VAE:
    if m.architecture == "mlp":
        return mlp_vae(m.encoder_hidden, m.decoder_hidden, m.latent_dim, image_shape, out_channels, condition)
    if m.architecture == "conv":
        return conv_vae(m.conv_channels, m.latent_dim, image_shape, out_channels, m.conv_hidden, condition)
    raise ValueError(f"Unknown model.architecture={m.architecture!r}; use 'mlp' or 'conv'.")


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)  # a config saved by an older run may lack newer keys
    image_shape = tuple(info.image_shape)
    num_dims = math.prod(image_shape)
    likelihood = get_likelihood(m.likelihood, gaussian_std=m.get("gaussian_std", 0.1),
                                num_mixtures=m.get("num_mixtures", 5))
    cond = resolve(config, info)
    labelled = cond is not None and cond.kind == "label"  # the one-hot label path (unchanged)
    embedded = cond is not None and not labelled  # vector / tokens / image: a ConditionEncoder
    num_classes = cond.num_classes if labelled else 0
    model = _build_module(m, image_shape, likelihood.params_per_channel, cond if embedded else None)

    def condition_inputs(params, batch, key, drop=None):
        """(y, cmap) the encoder and decoder read for a batch: the one-hot label, or the
        condition encoder's (vec, cmap); (None, None) for an unconditional VAE."""
        if labelled:
            return jax.nn.one_hot(condition_of(cond, batch), num_classes), None
        if embedded:
            return model.apply(params, condition_of(cond, batch, key), drop, method=VAE.embed)
        return None, None

    # The model as the pure functions the losses take; the condition rides along in x.
    def encode_fn(params, xc):
        x, y, cmap = xc
        return model.apply(params, x, y, cmap, method=VAE.encode)

    def log_likelihood_fn(params, xc, z):
        x, y, cmap = xc
        return likelihood.log_prob(x, model.apply(params, z, y, cmap, method=VAE.decode))

    preprocess = get_preprocess(config.data.preprocess)
    eval_preprocess = get_preprocess(config.data.eval_preprocess)

    if m.get("objective", "elbo") == "elbo":
        beta = linear_kl_warmup(m.kl_warmup_steps, end=m.beta) if m.get("kl_warmup_steps", 0) else m.beta
        core = make_elbo_loss(encode_fn, log_likelihood_fn, beta=beta, free_bits=m.get("free_bits", 0.0),
                              kl_estimator=m.get("kl_estimator", "analytic"))
    elif m.objective == "iwae":
        core = make_iwae_loss(encode_fn, log_likelihood_fn, num_samples=int(m.iwae_k))
    else:
        raise ValueError(f"Unknown model.objective={m.objective!r}; use 'elbo' or 'iwae'.")

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The VAE loss")
        key_pre, key_loss = jax.random.split(key)
        x = preprocess(key_pre, batch["image"], batch.get("index"))
        key_c = drop = None
        if embedded:  # condition dropout: the learned null condition with probability p_uncond
            key_c, key_d = jax.random.split(jax.random.fold_in(key, 1))
            drop = drop_mask(key_d, x.shape[0], cond.p_uncond)
        y, cmap = condition_inputs(params, batch, key_c, drop)
        return core(params, key_loss, {**batch, "image": (x, y, cmap)})

    def init(key):
        x = jnp.zeros((1, *image_shape), jnp.float32)
        if embedded:
            return model.init(key, x, None, jnp.zeros((1, *cond.shape), cond.dtype))
        return model.init(key, x, jnp.zeros((1, num_classes)) if num_classes else None)

    def given(params, num, condition, who):
        """(y, cmap) for `num` decodes given a raw condition (checked; labels default to
        cycling through the classes)."""
        if cond is None:
            check_condition(cond, condition, num, who=who)
            return None, None
        c = check_condition(cond, condition if condition is not None else default_condition(cond, num), num, who=who)
        if labelled:
            return jax.nn.one_hot(c, num_classes), None
        return model.apply(params, c, None, method=VAE.embed)

    def decode(params, z, condition=None):
        y, cmap = given(params, z.shape[0], condition, "The VAE decoder")
        return likelihood.mean(model.apply(params, z, y, cmap, method=VAE.decode))

    def sample(params, key, num, condition=None):
        y, cmap = given(params, num, condition, "The VAE sampler")
        z = jax.random.normal(key, (num, m.latent_dim))
        # Decoder means, the usual way to show VAE samples (pixel noise hides the structure).
        return likelihood.mean(model.apply(params, z, y, cmap, method=VAE.decode))

    eval_key = jax.random.PRNGKey(EVAL_CONDITION_KEY)

    def encode(params, batch):
        check_image_batch(batch, image_shape, who="The VAE encoder")
        x = eval_preprocess(jax.random.PRNGKey(0), batch["image"], batch.get("index"))
        y, cmap = condition_inputs(params, batch, eval_key)
        return model.apply(params, x, y, cmap, method=VAE.encode)[0]

    iwae_ks = tuple(int(k) for k in config.eval.iwae_k)
    chunk = int(config.eval.iwae_chunk)
    offset = dequantization_offset(config.data.eval_preprocess, num_dims)
    ais_steps, ais_chains = int(config.eval.get("ais_steps", 0)), int(config.eval.get("ais_chains", 16))

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The VAE evaluator")
        key_pre, key_e, key_i = jax.random.split(key, 3)
        xy = (eval_preprocess(key_pre, batch["image"], batch.get("index")),
              *condition_inputs(params, batch, eval_key))  # log p(x|c): the condition, never dropped
        out = {"ELBO": -elbo_terms(encode_fn, log_likelihood_fn, params, key_e, xy)["elbo"] + offset}
        for i, k in enumerate(iwae_ks):
            bound = iwae_bound(encode_fn, log_likelihood_fn, params, jax.random.fold_in(key_i, i), xy,
                               num_samples=k, chunk_size=min(chunk, k))
            out[f"IWAE-{k}"] = -bound + offset
        if ais_steps:
            log_px, _ = ais_log_marginal(
                standard_normal_log_prob, log_likelihood_fn, params, jax.random.fold_in(key_i, 10_000), xy,
                num_chains=ais_chains, num_steps=ais_steps, init="posterior", encode_fn=encode_fn,
            )
            out[f"AIS-{ais_steps}"] = -log_px + offset
        return out

    return ModelSpec(
        init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=num_dims,
        stochastic=("ELBO",) + tuple(f"IWAE-{k}" for k in iwae_ks) + ((f"AIS-{ais_steps}",) if ais_steps else ()),
        encode=encode, decode=decode, latent_dim=int(m.latent_dim), num_classes=num_classes, condition=cond,
    )
