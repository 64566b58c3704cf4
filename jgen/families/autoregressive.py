"""The autoregressive family: exact-likelihood models of images, one pixel (or
subpixel) at a time, trained by maximum likelihood and sampled ancestrally in
one compiled loop.

`config.model.architecture` picks the network:

- "fvsbn", "nade": binary images (Bernoulli conditionals) on the flattened image.

Every architecture returns, in one teacher-forced pass, the parameters of all
conditionals; the exact NLL is their sum (`jgen.losses.autoregressive`).
Evaluation reports it as the "exact" estimator (deterministic on a statically
binarized split). Sampling is `jgen.samplers.ancestral.ancestral_sample`: D
network passes in one `lax.fori_loop`.

`model_config()` holds every `config.model` key with its default; experiment
configs start from it. `build(config, info)` returns the `ModelSpec`.
"""

import math

import jax.numpy as jnp
from ml_collections import ConfigDict

from jgen.data import get_preprocess
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses.autoregressive import bernoulli_autoregressive_log_prob
from jgen.losses.elbo import masked_mean
from jgen.models.autoregressive.fvsbn import FVSBN, NADE
from jgen.samplers.ancestral import ancestral_sample

ARCHITECTURES = ("fvsbn", "nade")
BINARY_PREPROCESSES = ("binarize_dynamic", "binarize_static")


def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the autoregressive family, with its default."""
    c = ConfigDict()
    c.family = "autoregressive"
    c.architecture = "nade"  # see ARCHITECTURES
    c.hidden = 500  # nade: hidden units shared across positions
    c.temperature = 1.0  # sampling temperature on the logits
    for k, v in overrides.items():
        c[k] = v
    return c


def _bernoulli_network(m: ConfigDict, dim: int):
    """(module, logits_fn(params, x_flat [B, D], labels) -> logits [B, D])."""
    if m.architecture == "fvsbn":
        module = FVSBN(dim)
    else:
        module = NADE(dim, hidden=int(m.hidden))

    def logits_fn(params, x, labels=None):
        del labels
        return module.apply(params, x)

    return module, logits_fn


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)
    if m.architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown model.architecture={m.architecture!r} for the autoregressive family; "
                         f"known: {', '.join(ARCHITECTURES)}.")
    for key in ("preprocess", "eval_preprocess"):
        if config.data[key] not in BINARY_PREPROCESSES:
            raise ValueError(
                f"model.architecture={m.architecture!r} models binary pixels: set data.{key} to one of "
                f"{BINARY_PREPROCESSES} (got {config.data[key]!r})."
            )
    image_shape = tuple(info.image_shape)
    dim = math.prod(image_shape)
    module, logits_fn = _bernoulli_network(m, dim)
    preprocess = get_preprocess(config.data.preprocess)
    eval_preprocess = get_preprocess(config.data.eval_preprocess)

    def nll(params, x):
        x = x.reshape((x.shape[0], -1))
        return -bernoulli_autoregressive_log_prob(logits_fn(params, x), x)

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The autoregressive loss")
        values = nll(params, preprocess(key, batch["image"], batch.get("index")))
        return masked_mean(values, batch.get("mask")), {"nll": values}

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The autoregressive evaluator")
        return {"exact": nll(params, eval_preprocess(key, batch["image"], batch.get("index")))}

    def init(key):
        return module.init(key, jnp.zeros((1, dim), jnp.float32))

    def sample(params, key, num, labels=None):
        del labels
        x = ancestral_sample(key, lambda v: logits_fn(params, v), jnp.zeros((num, dim), jnp.float32),
                             temperature=float(m.temperature))
        return x.reshape((num, *image_shape))

    stochastic = ("exact",) if config.data.eval_preprocess == "binarize_dynamic" else ()
    return ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=dim,
                     stochastic=stochastic, nll_estimators=("exact",))
