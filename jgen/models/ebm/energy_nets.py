r"""Energy networks for deep energy-based models: a small convnet for images and an MLP for
vectors (toy 2-D data) or flattened images.

An energy-based model is a density :math:`p_\theta(x) = e^{-E_\theta(x)}/Z(\theta)`
with an unconstrained scalar network :math:`E_\theta`; lower energy means more likely.
Both modules map a batch to one energy per example, [B]. They are architecture only:
training (contrastive divergence with Langevin negatives) is `jgen.losses.ebm_cd`, which
takes ``energy_fn = module.apply``.

Design choices, for Langevin sampling (which follows :math:`-\nabla_x E`):

- a smooth activation (swish by default; Du & Mordatch 2019 and Nijkamp et al. 2019
  note that ReLU's piecewise-constant input gradient makes poor Langevin dynamics), with
  leaky ReLU as the alternative;
- no normalisation layer: batch statistics would couple the examples, so one chain's
  energy would depend on the others in its batch;
- no spectral normalisation (Du & Mordatch use it; here the energy and gradient
  regularisers of `jgen.losses.ebm_cd.ebm_cd_loss` keep the landscape smooth instead);
- for images, global average pooling before the last linear layer, so one module
  serves 8x8 digits and 28x28 MNIST.

References:
  Du, Y. & Mordatch, I. (2019). Implicit Generation and Generalization in Energy-Based
    Models. NeurIPS. https://arxiv.org/abs/1903.08689
  Nijkamp, E., Hill, M., Zhu, S.-C. & Wu, Y. N. (2019). Learning Non-Convergent
    Non-Persistent Short-Run MCMC Toward Energy-Based Model. NeurIPS.
    https://arxiv.org/abs/1904.09770
  Ramachandran, P., Zoph, B. & Le, Q. V. (2017). Searching for Activation Functions
    (swish). https://arxiv.org/abs/1710.05941
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jgen.typing import Array

ENERGY_ACTIVATIONS = {"swish": nn.swish, "leaky_relu": lambda h: nn.leaky_relu(h, 0.2)}


def _activation(name: str, who: str):
    if name not in ENERGY_ACTIVATIONS:
        raise ValueError(f"{who}: unknown activation {name!r}; choose one of {sorted(ENERGY_ACTIVATIONS)}.")
    return ENERGY_ACTIVATIONS[name]


class ConvEnergy(nn.Module):
    """Images x [B, H, W, C] -> energies [B].

    A 3x3 convolution with `features` channels, then `num_stages` stride-2 4x4
    convolutions doubling the channels (8x8 -> 4x4 with one stage; 28x28 -> 14x14 ->
    7x7 with two), each followed by the activation, global average pooling over
    (H, W), and a linear layer to one energy per image.

    Attributes:
      features: channels of the first convolution.
      num_stages: the number of stride-2 stages (>= 0).
      activation: "swish" or "leaky_relu" (slope 0.2).
    """

    features: int = 32
    num_stages: int = 2
    activation: str = "swish"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        who = "ConvEnergy"
        act = _activation(self.activation, who)
        if x.ndim != 4:
            raise ValueError(f"{who}: x must be images [B, H, W, C]; got shape {list(x.shape)}. Add a trailing "
                             "channel axis to grayscale [B, H, W] images (x[..., None]).")
        if self.num_stages < 0:
            raise ValueError(f"{who}: num_stages must be >= 0; got {self.num_stages}.")
        h = act(nn.Conv(self.features, (3, 3), name="conv_in")(x))
        ch = self.features
        for i in range(self.num_stages):
            ch *= 2
            h = act(nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME", name=f"down_{i}")(h))
        h = jnp.mean(h, axis=(1, 2))  # global average pooling, [B, ch]
        return nn.Dense(1, name="out")(h)[:, 0]


class MLPEnergy(nn.Module):
    """x [B, ...] (flattened) -> energies [B]: Dense-activation layers, then Dense(1).

    Attributes:
      hidden: widths of the hidden layers.
      activation: "swish" or "leaky_relu" (slope 0.2).
    """

    hidden: Sequence[int] = (128, 128)
    activation: str = "swish"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = _activation(self.activation, "MLPEnergy")
        if x.ndim < 2:
            raise ValueError(f"MLPEnergy: x must be a batch [B, ...]; got shape {list(x.shape)}. For one "
                             "example pass x[None].")
        h = jnp.reshape(x, (x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(int(width), name=f"dense_{i}")(h))
        return nn.Dense(1, name="out")(h)[:, 0]


__all__ = ["ENERGY_ACTIVATIONS", "ConvEnergy", "MLPEnergy"]
