"""The coupling-flow family (RealNVP-style, on flattened images).

The flow maps a standard normal base on R^D to data in (0, 1)^D:

    z -> [affine coupling (half mask) -> reverse] x num_layers -> sigmoid -> squash

where the last two maps are the logit trick of Dinh et al. written as
bijectors (so their log-dets are counted): in the data -> base direction,
y -> alpha + (1 - 2 alpha) y -> logit, which keeps pixels at 0 and 1 finite. Each coupling's conditioner is an MLP (`jgen.models.flows`). Data are
uniformly dequantized, and every NLL is reported as the discrete-data bound
(+ D log 256; see `jgen.losses.flow`).

References:
  Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

import math

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from jgen.bijectors import Affine, Chain, MaskedCoupling, Reverse, Sigmoid, flow_sample, half_mask
from jgen.data import get_preprocess
from jgen.distributions import standard_normal_log_prob
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses.flow import make_flow_nll_loss
from jgen.metrics.likelihood import DEQUANTIZING_PREPROCESSES, dequantization_offset
from jgen.models.flows import CouplingMLPs

def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the flow family, with its default."""
    c = ConfigDict()
    c.family = "flow"
    c.num_layers = 8
    c.hidden = (256, 256)
    c.log_scale_bound = 3.0  # soft clamp of each coupling's log-scale
    c.alpha = 1e-3  # logit trick: y -> logit(alpha + (1 - 2 alpha) y)
    c.temperature = 1.0  # sampling: base samples scaled by this (Glow's temperature)
    for k, v in overrides.items():
        c[k] = v
    return c


def make_flow(model: ConfigDict, dim: int):
    """(conditioner module, `flow_fn(params) -> bijector`) for a `config.model`."""
    m = model_config()
    m.update(model)
    nets = CouplingMLPs(m.num_layers, tuple(m.hidden), dim)
    alpha = float(m.alpha)

    def flow_fn(params):
        layers = []
        for i in range(m.num_layers):
            def conditioner(xm, i=i):
                return nets.apply(params, xm, i, method=CouplingMLPs.condition)

            # The same half mask every time: the Reverse after each coupling is what
            # alternates which half is transformed (flipping the mask too would undo it).
            layers += [MaskedCoupling(half_mask(dim), conditioner, log_scale_bound=m.log_scale_bound), Reverse()]
        # base -> data: s = sigmoid(.) in (0, 1), then y = (s - alpha) / (1 - 2 alpha).
        unsquash = Affine(jnp.full((dim,), -alpha / (1.0 - 2.0 * alpha)),
                          jnp.full((dim,), -math.log(1.0 - 2.0 * alpha)))
        return Chain(layers + [Sigmoid(), unsquash])

    return nets, flow_fn


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)
    for key in ("preprocess", "eval_preprocess"):
        if config.data[key] not in DEQUANTIZING_PREPROCESSES:
            raise ValueError(
                f"The flow family models a density of dequantized pixels: set data.{key}="
                f"'dequantize_uniform' (got {config.data[key]!r})."
            )
    image_shape = tuple(info.image_shape)
    dim = math.prod(image_shape)
    nets, flow_fn = make_flow(m, dim)

    loss_core = make_flow_nll_loss(flow_fn, standard_normal_log_prob,
                                   preprocess=get_preprocess(config.data.preprocess),
                                   nll_offset=dequantization_offset(config.data.preprocess, dim))
    eval_core = make_flow_nll_loss(flow_fn, standard_normal_log_prob,
                                   preprocess=get_preprocess(config.data.eval_preprocess),
                                   nll_offset=dequantization_offset(config.data.eval_preprocess, dim))

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The flow loss")
        return loss_core(params, key, batch)

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The flow evaluator")
        _, aux = eval_core(params, key, batch)
        return {"exact (uniform dequantization)": aux["nll"]}

    def init(key):
        return nets.init(key, jnp.zeros((1, dim), jnp.float32))

    def sample(params, key, num, labels=None):
        y = flow_sample(flow_fn(params), lambda k, n: m.temperature * jax.random.normal(k, (n, dim)), key, num)
        return jnp.clip(y, 0.0, 1.0).reshape((num, *image_shape))

    return ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=dim,
                     stochastic=("exact (uniform dequantization)",))
