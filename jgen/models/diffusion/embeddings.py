r"""Time (noise-level) embeddings for diffusion networks: sinusoidal and random Fourier.

A diffusion network is conditioned on where the input sits on the noising path, given
as a per-example scalar :math:`t` of shape [B]. These functions lift it to a feature
vector that the network's MLP then mixes; they hold no opinion on *what* :math:`t` is:

- DDPM (discrete) feeds the 0-based step index :math:`n \in \{0, \dots, N-1\}` as a
  float (Ho et al. 2020), which the default ``max_period=10000`` is scaled for;
- score-SDE / VP-SDE models feed the continuous time :math:`t \in [0, 1]` (multiply
  by N - 1 first to reuse a DDPM scale for the sinusoidal embedding, or use the
  Fourier projection, whose frequencies suit unit-scale inputs);
- VE / NCSN++ and EDM feed a noise level, usually :math:`\log\sigma`
  (:math:`\tfrac14\log\sigma` in EDM's :math:`c_\text{noise}`).

The caller chooses the scale (the thing to avoid is a hidden ``t * 999`` inside a
network); the embeddings are smooth and injective over their intended range either way.

References:
  Vaswani, A. et al. (2017). Attention Is All You Need. NeurIPS (Sec. 3.5).
    https://arxiv.org/abs/1706.03762
  Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    NeurIPS. https://arxiv.org/abs/2006.11239 (code: `diffusion_tf/nn.py`,
    `get_timestep_embedding`.)
  Tancik, M. et al. (2020). Fourier Features Let Networks Learn High Frequency
    Functions in Low Dimensional Domains. NeurIPS. https://arxiv.org/abs/2006.10739
  Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic
    Differential Equations. ICLR. https://arxiv.org/abs/2011.13456 (code:
    `models/layerspp.py`, `GaussianFourierProjection`.)
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.typing import Array


def _check_t(owner: str, t: Array) -> jax.Array:
    t = jnp.asarray(t)
    if t.ndim != 1:
        raise ValueError(
            f"{owner}: t must be a per-example array of shape [B]; received shape "
            f"{tuple(t.shape)}. Use jnp.full((batch,), t) for one time shared by the batch."
        )
    return t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(jnp.float32)


def sinusoidal_embedding(t: Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    r"""The Transformer / DDPM sinusoidal embedding of a per-example scalar.

    With :math:`h = \lfloor \text{dim}/2 \rfloor` frequencies spaced geometrically from
    1 down to :math:`1/\text{max\_period}`,

    .. math::
        \omega_k = \exp\!\Big(-\log(\text{max\_period})\,\frac{k}{h - 1}\Big),\quad
        k = 0, \dots, h-1, \qquad
        e(t) = [\sin(\omega_0 t), \dots, \sin(\omega_{h-1} t),
                \cos(\omega_0 t), \dots, \cos(\omega_{h-1} t)],

    and one zero column appended when ``dim`` is odd. This is DDPM's
    `get_timestep_embedding` (denominator :math:`h - 1`, so the lowest frequency is
    exactly 1/max_period; the Transformer paper divides by :math:`h`, a negligible
    difference); ``dim = 2`` or 3 uses the single frequency 1. See the module docstring
    for the scale of ``t``: the default ``max_period`` suits step indices 0..999.

    Args:
      t: per-example times / step indices / log-noise-levels, shape [B] (ints are cast
        to float32).
      dim: embedding width, an int >= 2.
      max_period: the longest period, :math:`2\pi` times the largest t the embedding
        should resolve, roughly.

    Returns:
      [B, dim] embedding in t's float dtype.

    Example:
      >>> emb = sinusoidal_embedding(jnp.arange(4.0), 128)   # DDPM step indices
    """
    t = _check_t("sinusoidal_embedding", t)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ValueError(f"sinusoidal_embedding: dim must be an int >= 2; received {dim!r}.")
    if not max_period > 1:
        raise ValueError(f"sinusoidal_embedding: max_period must be > 1; received {max_period!r}.")
    half = int(dim) // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=t.dtype) / max(half - 1, 1))
    args = t[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class GaussianFourierProjection(nn.Module):
    r"""Random Fourier features of a scalar with fixed, untrained frequencies (NCSN++).

    .. math::
        W_k \sim \mathcal N(0, \text{scale}^2),\ k = 1..\text{embedding\_size}, \qquad
        e(t) = [\sin(2\pi W t), \cos(2\pi W t)] \in \mathbb R^{2\,\text{embedding\_size}}.

    The frequencies are drawn once from the ``"params"`` init key and stored in the
    separate ``"constants"`` collection (``variables["constants"][...]["W"]``), not in
    ``"params"``; they are also passed through `jax.lax.stop_gradient`, so even when a
    training step differentiates the whole variables dict their gradient is exactly
    zero (mask the ``"constants"`` collection out of decoupled weight decay, which would
    otherwise still shrink them). Keep the whole variables dict from ``init`` when
    calling ``apply``.

    Attributes:
      embedding_size: number of frequencies; the output has twice as many features.
      scale: standard deviation of the frequencies (16 in NCSN++, for inputs
        :math:`\log\sigma`; ~1-30 for inputs of unit scale).

    Call args:
      t: per-example scalar of shape [B].

    Returns:
      [B, 2 * embedding_size].

    Example:
      >>> proj = GaussianFourierProjection(embedding_size=64, scale=16.0)
      >>> variables = proj.init(key, jnp.zeros((2,)))   # {"constants": {"W": [64]}}
      >>> emb = proj.apply(variables, jnp.log(sigma))    # [B, 128]
    """

    embedding_size: int = 256
    scale: float = 16.0
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t: Array) -> jax.Array:
        t = _check_t("GaussianFourierProjection", t)
        size = self.embedding_size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(
                f"GaussianFourierProjection: embedding_size must be a positive int; received {size!r}."
            )
        if not self.is_initializing() and not self.has_variable("constants", "W"):
            raise ValueError(
                "GaussianFourierProjection: the frozen frequencies live in the 'constants' "
                "collection, but the variables passed to apply have no 'constants' entry for "
                f"this module ({'/'.join(self.path) or 'top level'}). Pass the whole dict "
                "returned by init, e.g. {'params': ..., 'constants': ...}, not only "
                "variables['params']."
            )
        w = self.variable(
            "constants",
            "W",
            lambda: self.scale * jax.random.normal(self.make_rng("params"), (int(size),), self.param_dtype),
        ).value
        w = jax.lax.stop_gradient(w)
        proj = t[:, None] * w[None, :].astype(t.dtype) * (2.0 * math.pi)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=1)
