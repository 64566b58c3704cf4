"""Convolutional conditioner networks for coupling layers on images (architecture only).

A coupling layer (`jgen.bijectors.MaskedCoupling`) hands its conditioner the masked
image :math:`x_m` [B, H, W, C] (the entries it transforms set to 0) and needs a shift
and a raw log-scale of the same shape; entries at masked positions are ignored. So one
network shape serves checkerboard and channel masks alike: the input and output keep
H, W and C. The network is a small ResNet:

    3x3 conv (width) -> num_blocks x [h + conv3x3(relu(conv3x3(relu(h))))]
      -> relu -> 1x1 conv (width) -> relu -> 3x3 conv (2C or C), zero-initialised.

The zero-initialised last convolution makes every coupling the identity at
initialisation (shift 0, log-scale 0), so a deep flow starts as the identity map and
its first gradient steps are well conditioned. With `num_blocks=0` this is Glow's
coupling network (3x3 conv, 1x1 conv, zero-initialised 3x3 conv, ReLUs; Kingma &
Dhariwal 2018, Section 3.3 and Appendix A, without their actnorm inside the network).

References:
  Dinh, L., Sohl-Dickstein, J. & Bengio, S. (2017). Density estimation using Real NVP.
    ICLR, Section 4.1 (ResNet conditioners). https://arxiv.org/abs/1605.08803
  Kingma, D. P. & Dhariwal, P. (2018). Glow. NeurIPS, Section 3.3 (zero initialisation).
    https://arxiv.org/abs/1807.03039
  He, K., Zhang, X., Ren, S. & Sun, J. (2016). Identity Mappings in Deep Residual
    Networks. ECCV (pre-activation residual blocks).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class ResidualBlock(nn.Module):
    """Pre-activation residual block: h -> h + conv3x3(relu(conv3x3(relu(h))))."""

    width: int

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        r = nn.Conv(self.width, (3, 3), name="conv_a")(nn.relu(h))
        r = nn.Conv(self.width, (3, 3), name="conv_b")(nn.relu(r))
        return h + r


class ConvConditioner(nn.Module):
    """x_masked [B, H, W, C] -> (shift, raw_log_scale), each [B, H, W, C].

    With `additive=True` it returns the shift alone (NICE-style additive couplings).
    The output channels follow the input's C, so one module fits any mask and scale.

    Attributes:
      width: channels of the hidden feature maps.
      num_blocks: residual blocks (0 gives Glow's 3-layer network).
      additive: return only a shift.
    """

    width: int
    num_blocks: int = 2
    additive: bool = False

    @nn.compact
    def __call__(self, x: jax.Array):
        if x.ndim != 4:
            raise ValueError(
                "ConvConditioner expects images [B, H, W, C]; received shape "
                f"{x.shape}. Use CouplingMLP for flat vectors."
            )
        c = x.shape[-1]
        h = nn.Conv(self.width, (3, 3), name="conv_in")(x)
        for i in range(self.num_blocks):
            h = ResidualBlock(self.width, name=f"block_{i}")(h)
        h = nn.relu(nn.Conv(self.width, (1, 1), name="conv_hidden")(nn.relu(h)))
        out = nn.Conv(c if self.additive else 2 * c, (3, 3), kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.zeros, name="conv_out")(h)
        if self.additive:
            return out
        shift, raw_log_scale = jnp.split(out, 2, axis=-1)
        return shift, raw_log_scale


class ConvConditioners(nn.Module):
    """`num_nets` independent `ConvConditioner`s, one per coupling layer.

    `condition(x, i)` runs net i. Calling the module with a sequence of example inputs
    (one per net; their shapes may differ from scale to scale) runs every net, which is
    how `init` creates all parameters at once.
    """

    num_nets: int
    width: int
    num_blocks: int = 2
    additive: bool = False

    def setup(self):
        self.nets = [ConvConditioner(self.width, self.num_blocks, self.additive, name=f"coupling_{i}")
                     for i in range(self.num_nets)]

    def condition(self, x: jax.Array, i: int):
        return self.nets[i](x)

    def __call__(self, xs: Sequence[jax.Array]):
        if len(xs) != self.num_nets:
            raise ValueError(
                f"ConvConditioners: expected one example input per net ({self.num_nets}); "
                f"received {len(xs)}."
            )
        return [net(x) for net, x in zip(self.nets, xs)]
