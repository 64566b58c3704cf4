r"""The deep energy-based model family: an energy network on images trained by
contrastive divergence with Langevin (SGLD) negatives from a replay buffer (Du &
Mordatch 2019), with energy and gradient regularisation.

`config.model.architecture` is "conv" (`jgen.models.ebm.energy_nets.ConvEnergy`) or "mlp"
(`MLPEnergy` on the flattened image). Pixels are on [-1, 1] (``data.preprocess=
"symmetric"``). One compiled training step (`jgen.train.step`) is Du & Mordatch's
Algorithm 1:

1. *pre_update* (before the gradient step, with the current parameters): draw B
   starting points from the replay buffer kept in ``TrainState.extra``, a fraction
   `reinit_prob` from uniform noise (`jgen.samplers.replay_buffer.replay_sample`); run
   `sgld_steps` SGLD steps on :math:`e^{-E_\theta}`, clamped to [-1, 1]
   (`jgen.losses.ebm_cd.langevin_negatives`); put the end points in
   ``batch["negatives"]`` and write them back to the buffer (`replay_update`).
2. the gradient step on `jgen.losses.ebm_cd.ebm_cd_loss` of the data and the
   negatives, with the energy regulariser `alpha` and the input-gradient penalty
   `grad_weight`.

Why a pre-step: the loss needs the buffer and `loss_fn(params, key, batch)` does not see
``TrainState.extra``, while `post_update` runs after the gradient step. The
`ModelSpec.pre_update` hook carries the buffer into the batch, so the loss stays a plain
function of data and negatives (and the negatives are inputs, not differentiated).

`jgen sample` runs `sample_steps` SGLD steps from uniform noise (no buffer: sampling only
sees the parameters). An EBM's normaliser is unknown, so `jgen eval` reports no
likelihood: the mean energy of real test images and of as many fresh samples
(`energy_real`, `energy_fake`) are diagnostics (a well-trained model has them close).

References:
  Du, Y. & Mordatch, I. (2019). Implicit Generation and Generalization in Energy-Based
    Models. NeurIPS. https://arxiv.org/abs/1903.08689
  Grathwohl, W. et al. (2020). Your Classifier is Secretly an Energy Based Model and You
    Should Treat it Like One. ICLR. https://arxiv.org/abs/1912.03263
"""

import math

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses.ebm_cd import ebm_cd_loss, langevin_negatives
from jgen.models.ebm.energy_nets import ConvEnergy, MLPEnergy
from jgen.samplers.replay_buffer import (
    replay_init,
    replay_sample,
    replay_update,
    uniform_init,
)

ARCHITECTURES = ("conv", "mlp")


def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the EBM family, with its default."""
    c = ConfigDict()
    c.family = "ebm"
    c.architecture = "conv"  # "conv" | "mlp"
    c.features = 32  # conv: channels of the first convolution, doubled per stage
    c.num_stages = 2  # conv: stride-2 stages (28x28 -> 7x7)
    c.hidden = (256, 256)  # mlp
    c.activation = "swish"  # "swish" | "leaky_relu"
    c.alpha = 1.0  # energy regulariser weight (Du & Mordatch Sec. 3.3)
    c.grad_weight = 0.0  # input-gradient penalty weight (0 = off)
    c.buffer_size = 10_000  # replay buffer capacity
    c.reinit_prob = 0.05  # fraction of chains restarted from noise
    c.sgld_steps = 20  # SGLD steps per training step
    c.sgld_step_size = 2.0  # h: the gradient step is h / 2 * grad log p
    c.sgld_noise_scale = 0.007  # lambda: noise std sqrt(h) * lambda = 0.01 (JEM)
    c.sample_steps = 100  # SGLD steps from noise for `jgen sample` / `jgen eval`
    for k, v in overrides.items():
        c[k] = v
    return c


def _energy_module(m: ConfigDict):
    if m.architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown model.architecture={m.architecture!r} for the EBM family; use one of "
                         f"{ARCHITECTURES}.")
    if m.architecture == "conv":
        return ConvEnergy(features=int(m.features), num_stages=int(m.num_stages), activation=m.activation)
    return MLPEnergy(hidden=tuple(int(h) for h in m.hidden), activation=m.activation)


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)
    net = _energy_module(m)
    for key in ("preprocess", "eval_preprocess"):
        if config.data[key] != "symmetric":
            raise ValueError(f"The EBM family models pixels on [-1, 1] (its Langevin chains are clamped there): "
                             f"set data.{key}='symmetric' (got {config.data[key]!r}).")
    batch_size, capacity = int(config.train.batch_size), int(m.buffer_size)
    if capacity < batch_size:
        raise ValueError(f"model.buffer_size={capacity} must be at least train.batch_size={batch_size}: each step "
                         "draws its chains' starting points from distinct buffer slots.")
    if int(config.train.get("eval_every", 0)):
        raise ValueError(f"train.eval_every={config.train.eval_every}: the EBM family has no likelihood to track "
                         "during training (its normaliser is unknown); set train.eval_every=0 and run `jgen eval` "
                         "for its energy diagnostics.")
    image_shape = tuple(info.image_shape)
    buffer_key = jax.random.fold_in(jax.random.PRNGKey(int(config.get("seed", 0))), 3)
    sgld = {"step_size": float(m.sgld_step_size), "noise_scale": float(m.sgld_noise_scale), "clip": (-1.0, 1.0)}

    def energy_fn(params, x):
        return net.apply(params, x)

    def to_data(batch):
        check_image_batch(batch, image_shape, who="The EBM step")
        return jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1.0  # data.preprocess="symmetric"

    def init(key):
        return net.init(key, jnp.zeros((1, *image_shape)))

    def init_extra(params):  # the replay buffer, uniform noise on [-1, 1]
        del params
        return replay_init(buffer_key, image_shape, capacity)

    def pre_update(params, buffer, key, batch):  # Du & Mordatch's Algorithm 1, the sampling half
        check_image_batch(batch, image_shape, who="The EBM step")
        k_start, k_sgld = jax.random.split(key)
        x0, slots = replay_sample(k_start, buffer, batch["image"].shape[0], reinit_prob=float(m.reinit_prob))
        x_neg = langevin_negatives(k_sgld, energy_fn, params, x0, num_steps=int(m.sgld_steps), **sgld)
        return {**batch, "negatives": x_neg}, replay_update(buffer, slots, x_neg), {}

    def loss_fn(params, key, batch):
        del key
        if "negatives" not in batch:
            raise KeyError("The EBM loss needs batch['negatives'], the Langevin negatives the family's pre_update "
                           "draws from the replay buffer (the train step runs it: make_train_step(..., "
                           "pre_update=spec.pre_update)).")
        return ebm_cd_loss(energy_fn, params, to_data(batch), batch["negatives"], alpha=float(m.alpha),
                           grad_weight=float(m.grad_weight))

    def draw(params, key, num):  # SGLD from uniform noise, on [-1, 1]
        k0, k1 = jax.random.split(key)
        x0 = uniform_init(k0, (num, *image_shape))
        return langevin_negatives(k1, energy_fn, params, x0, num_steps=int(m.sample_steps), **sgld)

    def sample(params, key, num, labels=None):
        del labels  # unconditional
        return jnp.clip((draw(params, key, num) + 1.0) / 2.0, 0.0, 1.0)

    def eval_fn(params, key, batch):
        real = to_data(batch)
        return {"energy_real": energy_fn(params, real), "energy_fake": energy_fn(params, draw(params, key, real.shape[0]))}

    def summarize(values):
        return {k: float(jnp.mean(v)) for k, v in values.items()} | {"num_examples": len(values["energy_real"])}

    return ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=math.prod(image_shape),
                     nll_estimators=(), summarize=summarize, init_extra=init_extra, pre_update=pre_update)


def training_defaults(config: ConfigDict) -> ConfigDict:
    """Du & Mordatch's optimiser (Adam 1e-4, b1 = 0, b2 = 0.999), [-1, 1] pixels, no likelihood eval
    (no IWAE bounds, no in-training evaluation)."""
    config.data.preprocess = config.data.eval_preprocess = "symmetric"
    config.optim.learning_rate = 1e-4
    config.optim.b1 = 0.0
    config.optim.b2 = 0.999
    config.eval.iwae_k = ()
    config.train.eval_every = 0  # no likelihood to track during training
    return config


__all__ = ["ARCHITECTURES", "build", "model_config", "training_defaults"]
