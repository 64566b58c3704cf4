"""Convolutional VQ-VAE architecture: encoder, codebook and decoder.

Architecture only. The encoder maps images [B, H, W, C] to continuous encodings
[B, H/f, W/f, D] with f = `downsample` (strided 4x4 convolutions, then residual
blocks); the `Codebook` holds the [K, D] code vectors; the decoder maps (quantised)
encodings back to per-pixel outputs [B, H, W, C_out] with transposed convolutions
(logits of a Bernoulli, or means). Nearest-neighbour quantisation, the straight-through
estimator and the objective live in `jgen.losses.vq`, which reads the codebook from
`params["params"]["codebook"]["embedding"]`.

References:
  van den Oord, A., Vinyals, O. & Kavukcuoglu, K. (2017). Neural discrete
    representation learning. NeurIPS. https://arxiv.org/abs/1711.00937
    (Section 4: two stride-2 4x4 convolutions, 3x3 residual blocks
    ReLU-conv3x3-ReLU-conv1x1, and the mirrored transposed-convolution decoder.)
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax

# Entries ~ U(-sqrt(3/D), sqrt(3/D)): variance 1/D, so each code has squared norm ~1.
default_codebook_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform", in_axis=-1, out_axis=-2)


def _num_halvings(downsample: int) -> int:
    if not isinstance(downsample, int) or downsample < 2 or downsample & (downsample - 1):
        raise ValueError(
            f"VQVAE: downsample must be a power of two >= 2 (e.g. 2 or 4: one or two "
            f"stride-2 convolutions); got {downsample!r}."
        )
    return downsample.bit_length() - 1


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), the block of van den Oord et al. (2017)."""

    hidden_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(self.hidden_channels, (3, 3), padding="SAME", name="conv3x3")(nn.relu(x))
        h = nn.Conv(x.shape[-1], (1, 1), name="conv1x1")(nn.relu(h))
        return x + h


class VQEncoder(nn.Module):
    """x [B, H, W, C] -> z_e [B, H/f, W/f, code_dim], f = `downsample`."""

    hidden_channels: int
    res_channels: int
    num_res_blocks: int
    downsample: int
    code_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = _num_halvings(self.downsample)
        h = x
        for i in range(n):
            width = self.hidden_channels if i == n - 1 else max(self.hidden_channels // 2, 1)
            h = nn.relu(nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", name=f"down_{i}")(h))
        h = nn.Conv(self.hidden_channels, (3, 3), padding="SAME", name="conv_in")(h)
        for i in range(self.num_res_blocks):
            h = ResidualBlock(self.res_channels, name=f"res_{i}")(h)
        return nn.Conv(self.code_dim, (1, 1), name="to_code")(nn.relu(h))


class VQDecoder(nn.Module):
    """z [B, h, w, D] -> outputs [B, h*f, w*f, out_channels], f = `upsample`."""

    hidden_channels: int
    res_channels: int
    num_res_blocks: int
    upsample: int
    out_channels: int

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        n = _num_halvings(self.upsample)
        h = nn.Conv(self.hidden_channels, (3, 3), padding="SAME", name="conv_in")(z)
        for i in range(self.num_res_blocks):
            h = ResidualBlock(self.res_channels, name=f"res_{i}")(h)
        h = nn.relu(h)
        for i in range(n):
            last = i == n - 1
            width = self.out_channels if last else max(self.hidden_channels // 2, 1)
            h = nn.ConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME", name=f"up_{i}")(h)
            if not last:
                h = nn.relu(h)
        return h


class Codebook(nn.Module):
    """Holds the [num_codes, code_dim] code vectors; calling it returns them."""

    num_codes: int
    code_dim: int
    embedding_init: Callable = default_codebook_init

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("embedding", self.embedding_init, (self.num_codes, self.code_dim))


class VQVAE(nn.Module):
    """Encoder, codebook and decoder of a VQ-VAE; quantisation is left to the loss.

    Apply methods: `encode(x) -> z_e` [B, h, w, D], `get_codebook() -> [K, D]`,
    `decode(z) -> outputs` [B, H, W, out_channels]. `__call__(x)` runs all three
    (decoding the unquantised z_e) so that `init` creates every parameter. The codebook
    is the parameter `variables["params"]["codebook"]["embedding"]`
    (`jgen.losses.vq.CODEBOOK_PATH`).

    Attributes:
      image_shape: (H, W, C) of the input; H and W must be divisible by `downsample`.
      num_codes: K, the codebook size.
      code_dim: D, the width of the encodings and of each code.
      hidden_channels: width of the convolutional trunk.
      res_channels: width inside each residual block.
      num_res_blocks: residual blocks in the encoder and in the decoder.
      downsample: spatial reduction f, a power of two (2: 8x8 -> 4x4; 4: 28x28 -> 7x7).
      out_channels: channels of the decoder output; None means C (one Bernoulli logit
        or one mean per pixel channel).
      codebook_init: initializer of the [K, D] codebook.

    Example:
      >>> model = VQVAE(image_shape=(28, 28, 1), num_codes=512, code_dim=64)
      >>> variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
      >>> model.apply(variables, jnp.zeros((2, 28, 28, 1)), method=VQVAE.encode).shape
      (2, 7, 7, 64)
    """

    image_shape: Sequence[int]
    num_codes: int = 512
    code_dim: int = 64
    hidden_channels: int = 128
    res_channels: int = 32
    num_res_blocks: int = 2
    downsample: int = 4
    out_channels: int | None = None
    codebook_init: Callable = default_codebook_init

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(h, w) of the encodings: (H / downsample, W / downsample)."""
        return self.image_shape[0] // self.downsample, self.image_shape[1] // self.downsample

    def setup(self):
        _num_halvings(self.downsample)
        if len(self.image_shape) != 3:
            raise ValueError(f"VQVAE: image_shape must be (H, W, C); got {tuple(self.image_shape)}.")
        height, width, channels = self.image_shape
        if height % self.downsample or width % self.downsample:
            raise ValueError(
                f"VQVAE: image_shape {tuple(self.image_shape)} has H, W not divisible by "
                f"downsample={self.downsample}; pad or crop the images, or pick a downsample "
                f"factor that divides both (e.g. 28x28 works with 2 or 4)."
            )
        self.encoder = VQEncoder(
            self.hidden_channels, self.res_channels, self.num_res_blocks, self.downsample, self.code_dim
        )
        self.codebook = Codebook(self.num_codes, self.code_dim, self.codebook_init)
        out = channels if self.out_channels is None else self.out_channels
        self.decoder = VQDecoder(
            self.hidden_channels, self.res_channels, self.num_res_blocks, self.downsample, out
        )

    def encode(self, x: jax.Array) -> jax.Array:
        """Images [B, H, W, C] -> continuous encodings z_e [B, H/f, W/f, D]."""
        if tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ValueError(
                f"VQVAE.encode: expected images of shape [B, {', '.join(map(str, self.image_shape))}] "
                f"(image_shape={tuple(self.image_shape)}); got shape {tuple(x.shape)}."
            )
        return self.encoder(x)

    def get_codebook(self) -> jax.Array:
        """The [K, D] codebook (`params["params"]["codebook"]["embedding"]`)."""
        return self.codebook()

    def decode(self, z: jax.Array) -> jax.Array:
        """(Quantised) encodings [B, h, w, D] -> outputs [B, H, W, out_channels]."""
        if z.ndim != 4 or z.shape[-1] != self.code_dim:
            raise ValueError(
                f"VQVAE.decode: expected encodings of shape [B, h, w, {self.code_dim}] "
                f"(code_dim={self.code_dim}); got shape {tuple(z.shape)}."
            )
        return self.decoder(z)

    def __call__(self, x: jax.Array) -> jax.Array:
        self.codebook()  # creates the codebook parameter during init
        return self.decode(self.encode(x))
