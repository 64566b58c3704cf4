"""A PixelCNN++-style network: shifted convolutions, gated resnet blocks with
concat_elu, and a discretized logistic mixture per subpixel (Flax Linen, architecture
only), scored by jgen's existing `dlogistic_mixture` likelihood.

For 8-bit images scaled to the grid :math:`\\{-1 + 2j/255\\}` in [-1, 1], in raster
order over pixels and R -> G -> B within a pixel,

.. math::
    p(x) = \\prod_{i,j} \\prod_{c} \\sum_{k=1}^{K} \\pi_{ijck}\\,
        P_{\\text{disc}}\\big(x_{ijc} \\mid \\mu_{ijck}, s_{ijck}\\big),
    \\qquad
    \\mu_{ijck} = \\tanh\\Big(m_{ijck} + \\sum_{c' < c} \\alpha_{ij,cc'k}\\, x_{ijc'}\\Big),

where the network output :math:`(\\pi, m, s, \\alpha)` at pixel (i, j) depends only on
the pixels strictly before (i, j) — not on any channel of the current pixel — and the
current pixel's earlier channels enter only through the linear channel coefficients
:math:`\\alpha = \\tanh(\\cdot) \\in (-1, 1)` (PixelCNN++ Sec. 2.2).

Two deviations from the paper, both to reuse `jgen.losses.likelihoods.dlogistic_mixture`
unchanged: (1) each channel has its own K mixture logits (the paper shares one
component choice across the three channels of a pixel); (2) that likelihood bounds
means with tanh, so the linear channel term is added to the mean's pre-activation
:math:`m` (the paper adds it to the unbounded mean).

`PixelCNNPlusPlus` returns the raw network output; `channel_coupled_mixture_params`
adds the channel coefficients' term and returns parameters [B, H, W, C * 3K] in the
layout `dlogistic_mixture(K).log_prob(x, out)` expects, so that likelihood gives the
exact log-probability; `pixelcnn_pp_log_prob` does both.

The network (simplified from the paper's U-Net, which this is *not*): no down/up
sampling and no skip connections between resolutions, one resolution with
`num_blocks` gated resnet blocks in each of two streams, no dropout, no weight
normalisation::

    u  = down_shift(conv_down[2x3](x))                                 # rows above
    ul = down_shift(conv_down[1x3](x)) + right_shift(conv_downright[2x1](x))
    repeat num_blocks:
        u  = gated_resnet(u,        conv_down[2x3])
        ul = gated_resnet(ul, a=u,  conv_downright[2x2])
    raw = Dense(elu(ul))

    gated_resnet(x, a, conv):  c = conv(concat_elu(x)) [+ nin(concat_elu(a))]
                               [a_, b_] = conv(concat_elu(c)) [+ label bias]
                               return x + a_ * sigmoid(b_)

A "down" convolution pads kh - 1 rows on top and (kw - 1) / 2 columns each side (its
output at row i sees rows <= i), a "down-right" one pads kh - 1 rows on top and kw - 1
columns on the left (it sees rows <= i, columns <= j); the initial down/right shifts
make both streams strictly causal. As in the paper, a channel of ones is appended to
the input so zero padding is distinguishable from black pixels.

Example (CIFAR-like 8-bit RGB)::

    model = PixelCNNPlusPlus(num_mixtures=5, channels=80, num_blocks=5)
    x = images / 127.5 - 1.0                          # [B, 32, 32, 3] on the grid
    params = model.init(key, x)
    nll = -pixelcnn_pp_log_prob(model.apply(params, x), x, num_mixtures=5)   # [B]

References:
  Salimans, T., Karpathy, A., Chen, X. & Kingma, D. P. (2017). PixelCNN++: Improving
    the PixelCNN with Discretized Logistic Mixture Likelihood and Other
    Modifications. ICLR. https://arxiv.org/abs/1701.05517
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.losses.likelihoods import dlogistic_mixture
from jgen.models.autoregressive.pixelcnn import (
    _check_images,
    _check_labels,
    _down_shift,
    _label_bias_fn,
    _positive_int,
)
from jgen.typing import Array


def num_raw_outputs(data_channels: int, num_mixtures: int) -> int:
    """Raw outputs per pixel: C * 3K mixture parameters + K * C(C-1)/2 channel coefficients."""
    c, k = data_channels, num_mixtures
    return c * 3 * k + k * c * (c - 1) // 2


def _right_shift(x: jax.Array) -> jax.Array:
    """Moves a feature map one column right (column 0 becomes zeros): y[:, j] = x[:, j - 1]."""
    return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def concat_elu(x: jax.Array) -> jax.Array:
    """elu([x, -x]) along the channel axis: [.., F] -> [.., 2F] (PixelCNN++ Sec. 2.5)."""
    return nn.elu(jnp.concatenate([x, -x], axis=-1))


def _down_conv(features: int, kernel: tuple[int, int], name: str) -> nn.Conv:
    kh, kw = kernel
    return nn.Conv(features, kernel, padding=((kh - 1, 0), ((kw - 1) // 2, (kw - 1) // 2)), name=name)


def _down_right_conv(features: int, kernel: tuple[int, int], name: str) -> nn.Conv:
    kh, kw = kernel
    return nn.Conv(features, kernel, padding=((kh - 1, 0), (kw - 1, 0)), name=name)


class PixelCNNPlusPlus(nn.Module):
    """The PixelCNN++-style network (single resolution; see the module docstring).

    Attributes:
      num_mixtures: K, logistic components per subpixel.
      channels: feature channels of both streams (160 in the paper).
      num_blocks: gated resnet blocks per stream.
      num_classes: set to condition on class labels (a label bias in every block).

    Call args:
      x: [B, H, W, C] pixels on the grid in [-1, 1] (8-bit: x / 127.5 - 1); C = 1 or
        3 in the paper, any C works.
      labels: int [B] in [0, num_classes), required iff `num_classes` is set.

    Returns:
      The raw output [B, H, W, num_raw_outputs(C, K)]: first C groups of 3K
      (K mixture logits, K mean pre-activations, K log-scales; the layout of
      `dlogistic_mixture(K)`), then K * C(C-1)/2 channel-coefficient pre-activations,
      K for each pair (c, c') with c' < c in the order (1,0), (2,0), (2,1), ...
      It depends only on pixels strictly before (i, j). Pass it with x to
      `channel_coupled_mixture_params` or `pixelcnn_pp_log_prob`.
    """

    num_mixtures: int = 5
    channels: int = 80
    num_blocks: int = 5
    num_classes: int | None = None

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None) -> jax.Array:
        x = _check_images("PixelCNNPlusPlus", x)
        k = _positive_int("PixelCNNPlusPlus", "num_mixtures", self.num_mixtures)
        feats = _positive_int("PixelCNNPlusPlus", "channels", self.channels)
        _check_labels("PixelCNNPlusPlus", labels, self.num_classes, x.shape[0])
        add_label = _label_bias_fn(self, labels)

        def gated_resnet(h: jax.Array, a: jax.Array | None, conv: Callable, name: str) -> jax.Array:
            c1 = conv(feats, f"{name}_conv1")(concat_elu(h))
            if a is not None:
                c1 = c1 + nn.Dense(feats, name=f"{name}_nin")(concat_elu(a))
            c2 = add_label(conv(2 * feats, f"{name}_conv2")(concat_elu(c1)), name)
            return h + c2[..., :feats] * jax.nn.sigmoid(c2[..., feats:])

        xp = jnp.concatenate([x, jnp.ones(x.shape[:3] + (1,), x.dtype)], axis=-1)
        u = _down_shift(_down_conv(feats, (2, 3), "u_in")(xp))
        ul = _down_shift(_down_conv(feats, (1, 3), "ul_in_down")(xp)) + _right_shift(
            _down_right_conv(feats, (2, 1), "ul_in_right")(xp)
        )
        for b in range(self.num_blocks):
            u = gated_resnet(u, None, lambda f, n: _down_conv(f, (2, 3), n), f"u{b}")
            ul = gated_resnet(ul, u, lambda f, n: _down_right_conv(f, (2, 2), n), f"ul{b}")
        return nn.Dense(num_raw_outputs(x.shape[-1], k), name="out")(nn.elu(ul))


def channel_coupled_mixture_params(raw: Array, x: Array, num_mixtures: int) -> jax.Array:
    """Adds the channel-coefficient term to the means: raw output -> likelihood parameters.

    .. math::
        m'_{ijck} = m_{ijck} + \\sum_{c' < c} \\tanh(a_{ij,cc'k})\\, x_{ijc'},

    with the logits and log-scales passed through, so that
    `dlogistic_mixture(K).log_prob(x, out)` (which applies tanh to :math:`m'`) is the
    exact log-probability of the model. Channel c's parameters then depend on the
    current pixel's channels c' < c (only through this term) and on nothing later.

    Args:
      raw: [B, H, W, num_raw_outputs(C, K)] from `PixelCNNPlusPlus`.
      x: [B, H, W, C], the same images the network was applied to (teacher forcing).
      num_mixtures: K.

    Returns:
      [B, H, W, C * 3K]: per channel, K logits, K mean pre-activations, K log-scales.

    Raises:
      ValueError: if `raw` does not have num_raw_outputs(C, K) channels for x's C.
    """
    x = _check_images("channel_coupled_mixture_params", x)
    raw = jnp.asarray(raw)
    k = _positive_int("channel_coupled_mixture_params", "num_mixtures", num_mixtures)
    c = x.shape[-1]
    want = x.shape[:3] + (num_raw_outputs(c, k),)
    if raw.shape != want:
        raise ValueError(
            f"channel_coupled_mixture_params: for x of shape {x.shape} and num_mixtures={k} "
            f"the raw output must have shape {want} (C * 3K + K * C(C-1)/2 = "
            f"{num_raw_outputs(c, k)} channels); received {raw.shape}. Was the network built "
            f"with num_mixtures={k} and applied to these images?"
        )
    params = raw[..., : 3 * c * k].reshape(x.shape[:3] + (c, 3 * k))
    coeffs = jnp.tanh(raw[..., 3 * c * k :])
    means, pair = [], 0
    for ch in range(c):
        m = params[..., ch, k : 2 * k]
        for earlier in range(ch):
            m = m + coeffs[..., pair * k : (pair + 1) * k] * x[..., earlier : earlier + 1].astype(m.dtype)
            pair += 1
        means.append(m)
    coupled = jnp.concatenate([params[..., :k], jnp.stack(means, axis=-2), params[..., 2 * k :]], axis=-1)
    return coupled.reshape(x.shape[:3] + (c * 3 * k,))


def pixelcnn_pp_log_prob(raw: Array, x: Array, num_mixtures: int, *, num_bins: int = 256) -> jax.Array:
    """Exact log p(x) [B] of the model from its raw output, via `dlogistic_mixture`.

    Args:
      raw: the `PixelCNNPlusPlus` output for x.
      x: [B, H, W, C] on the grid of `num_bins` values in [-1, 1].
      num_mixtures: K.
      num_bins: number of pixel values (256 for 8-bit).

    Returns:
      Log-probabilities (nats) [B]; divide by H * W * C * log(2) for bits/dim.
    """
    out = channel_coupled_mixture_params(raw, x, num_mixtures)
    return dlogistic_mixture(num_mixtures, num_bins=num_bins).log_prob(jnp.asarray(x, out.dtype), out)
