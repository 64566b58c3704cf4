"""WaveNet: a stack of dilated causal 1-D convolutions with gated activations, residual
and skip connections, predicting a categorical distribution over mu-law classes.

For a quantised waveform :math:`x_{0:T}` (ints in 0..num_bins-1, see
`jgen.data.sequences.mu_law_encode`) the network returns logits [B, T, num_bins] and
is causal: **output t depends only on the inputs at positions <= t** and gives
:math:`p(x_{t+1} \\mid x_{\\le t})` -- the same next-token convention as
`CausalTransformer`, so ``categorical_autoregressive_log_prob(logits[:, :-1],
x[:, 1:])`` is the log-likelihood given the first sample (prepend a start sample, e.g.
the mu-law code of silence, 128, to model the first one too), and
`jgen.samplers.kv_cache.sample_transformer(..., use_cache=False)` samples it.

Layers (van den Oord et al. 2016, Sec. 2.1-2.5):

* input: an embedding of the class (a 1x1 convolution of the one-hot input);
* residual layers with dilations ``(1, 2, 4, ..., 2^(L-1))`` repeated ``num_stacks``
  times; layer l computes, with :math:`*_d` a causal convolution of kernel size k and
  dilation d and an optional global-conditioning embedding :math:`h` of a label,

  .. math::
      z = \\tanh(W_{f} *_d x + V_f h) \\odot \\sigma(W_{g} *_d x + V_g h), \\qquad
      x \\leftarrow x + W_r z, \\qquad s \\leftarrow s + W_s z

  (the last two 1x1 convolutions);
* output: :math:`\\mathrm{logits} = W_2\\, \\mathrm{relu}(W_1\\, \\mathrm{relu}(s))`.

The causal convolution :math:`(W *_d x)_t = \\sum_{i=0}^{k-1} W_i\\, x_{t - (k-1-i) d}`
(zero before the start), so the receptive field is

.. math::
    R = 1 + (k - 1) \\sum_l d_l

(`wavenet_receptive_field`): output t depends on inputs t-R+1 .. t and no others.

Modules hold architecture only.

References:
  van den Oord, Dieleman, Zen, Simonyan, Vinyals, Graves, Kalchbrenner, Senior &
    Kavukcuoglu, "WaveNet: A Generative Model for Raw Audio", arXiv:1609.03499, 2016.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.data.sequences import mu_law_decode, mu_law_encode
from jgen.typing import Array

__all__ = ["CausalConv1D", "WaveNet", "mu_law_decode", "mu_law_encode", "wavenet_dilations",
           "wavenet_receptive_field"]


def wavenet_dilations(layers_per_stack: int, num_stacks: int) -> tuple[int, ...]:
    """(1, 2, 4, ..., 2^(layers_per_stack-1)) repeated num_stacks times."""
    return tuple(2**i for i in range(layers_per_stack)) * num_stacks


def wavenet_receptive_field(kernel_size: int, dilations: Sequence[int]) -> int:
    """R = 1 + (kernel_size - 1) * sum(dilations): the number of inputs (the current
    one included) each output sees."""
    return 1 + (kernel_size - 1) * sum(dilations)


class CausalConv1D(nn.Module):
    """x [B, T, C_in] -> [B, T, features] with out_t = b + sum_i W_i x_{t-(k-1-i)d}
    (zero-padded on the left: no output sees a later input)."""

    features: int
    kernel_size: int = 2
    dilation: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k, d, t = self.kernel_size, self.dilation, x.shape[1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        padded = jnp.pad(x, ((0, 0), ((k - 1) * d, 0), (0, 0)))
        # Tap i reads x_{t - (k-1-i) d}: the slice of the padded input starting at i d.
        out = sum(padded[:, i * d: i * d + t] @ kernel[i] for i in range(k))
        return out + bias[None, None]


class WaveNet(nn.Module):
    """tokens int [B, T] in [0, num_bins) -> logits [B, T, num_bins]; output t depends
    on tokens t-R+1 .. t (R = `receptive_field`) and gives p(token t+1 | tokens <= t).

    Attributes:
      num_bins: output classes (256 for 8-bit mu-law).
      layers_per_stack: dilations 1, 2, ..., 2^(layers_per_stack-1) per stack.
      num_stacks: repeats of the dilation pattern.
      kernel_size: taps of every dilated convolution (2 in the paper).
      residual_channels, dilation_channels, skip_channels: widths of the residual
        stream, the gated units, and the skip sum / output head.
      num_classes: > 0 for global conditioning on an integer label [B] (a speaker, a
        class); every call then needs `label`. 0 for unconditional.

    Methods:
      __call__(tokens, label=None) -> logits.
      from_embeddings(x [B, T, residual_channels], label=None) -> logits: the network
        after the input embedding (for Jacobian tests).
    """

    num_bins: int = 256
    layers_per_stack: int = 10
    num_stacks: int = 1
    kernel_size: int = 2
    residual_channels: int = 32
    dilation_channels: int = 32
    skip_channels: int = 64
    num_classes: int = 0

    @property
    def dilations(self) -> tuple[int, ...]:
        return wavenet_dilations(self.layers_per_stack, self.num_stacks)

    @property
    def receptive_field(self) -> int:
        return wavenet_receptive_field(self.kernel_size, self.dilations)

    def setup(self):
        if self.kernel_size < 1 or self.layers_per_stack < 1 or self.num_stacks < 1:
            raise ValueError(f"WaveNet: kernel_size, layers_per_stack and num_stacks must be >= 1; received "
                             f"{self.kernel_size}, {self.layers_per_stack}, {self.num_stacks}.")
        self.embed = nn.Embed(self.num_bins, self.residual_channels)
        self.gates = [CausalConv1D(2 * self.dilation_channels, self.kernel_size, d) for d in self.dilations]
        self.residuals = [nn.Dense(self.residual_channels) for _ in self.dilations]
        self.skips = [nn.Dense(self.skip_channels) for _ in self.dilations]
        if self.num_classes > 0:
            self.label_embed = nn.Embed(self.num_classes, 2 * self.dilation_channels * len(self.dilations))
        self.out_hidden = nn.Dense(self.skip_channels)
        self.out_logits = nn.Dense(self.num_bins)

    def _check_label(self, label, batch: int):
        if self.num_classes <= 0:
            if label is not None:
                raise ValueError("WaveNet: received a label but num_classes=0 (unconditional). "
                                 "Set num_classes for global conditioning.")
            return None
        label = None if label is None else jnp.asarray(label)
        if label is None or label.shape != (batch,) or not jnp.issubdtype(label.dtype, jnp.integer):
            raise ValueError(f"WaveNet: this model is globally conditioned (num_classes={self.num_classes}); "
                             f"pass label, integer [B={batch}]; received "
                             f"{None if label is None else (label.dtype, label.shape)}.")
        return label

    def __call__(self, tokens: Array, label: Array | None = None) -> Array:
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"WaveNet: tokens must be integer classes [B, T]; received {tokens.dtype} of shape "
                f"{tokens.shape}. Quantise waveforms [-1, 1] with jgen.data.sequences.mu_law_encode first."
            )
        if not isinstance(tokens, jax.core.Tracer) and tokens.size:
            values = np.asarray(tokens)  # numpy: jnp ops on constants inside a jit trace are staged
            lo, hi = int(values.min()), int(values.max())
            if lo < 0 or hi >= self.num_bins:
                raise ValueError(f"WaveNet: tokens must lie in [0, num_bins={self.num_bins}); received "
                                 f"values in [{lo}, {hi}].")
        return self.from_embeddings(self.embed(tokens), label)

    def from_embeddings(self, x: Array, label: Array | None = None) -> Array:
        """x [B, T, residual_channels] -> logits [B, T, num_bins]."""
        if x.ndim != 3 or x.shape[-1] != self.residual_channels:
            raise ValueError(f"WaveNet: expected embeddings [B, T, {self.residual_channels}]; "
                             f"received shape {x.shape}.")
        label = self._check_label(label, x.shape[0])
        cond = None
        if label is not None:  # one embedding, split into per-layer biases V h
            cond = self.label_embed(label).reshape((x.shape[0], len(self.dilations), 2 * self.dilation_channels))
        skip = 0.0
        for layer, (gate, residual, skip_proj) in enumerate(zip(self.gates, self.residuals, self.skips)):
            pre = gate(x)  # [B, T, 2 * dilation_channels]
            if cond is not None:
                pre = pre + cond[:, layer][:, None, :]
            filt, g = jnp.split(pre, 2, axis=-1)
            z = jnp.tanh(filt) * jax.nn.sigmoid(g)
            x = x + residual(z)
            skip = skip + skip_proj(z)
        return self.out_logits(nn.relu(self.out_hidden(nn.relu(skip))))
