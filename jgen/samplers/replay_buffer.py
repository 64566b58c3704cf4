r"""A replay buffer of past Langevin chain end points, the persistent initialisation of
deep energy-based models' negative samples (Du & Mordatch 2019, Sec. 3.1).

Short-run Langevin dynamics from noise mixes poorly on a deep energy landscape. Du &
Mordatch instead start most chains where earlier chains ended: a buffer of N past
negatives, from which each training step draws its B starting points, re-initialising a
fraction ``reinit_prob`` (5%) of them from noise so the buffer keeps exploring; after
the SGLD steps the chains' end points are written back. (This is persistent contrastive
divergence, Tieleman 2008, with many more persistent chains than the batch; the
write-back to the drawn slots follows JEM's implementation, Grathwohl et al. 2020.)

As an init/step pair over a `ReplayBufferState`:

  >>> state = replay_init(key, (8, 8, 1), capacity=10_000)        # noise on [-1, 1]
  >>> x0, idx = replay_sample(k1, state, 128, reinit_prob=0.05)    # starting points
  >>> x_neg = langevin_negatives(k2, energy_fn, params, x0, ...)   # jgen.losses.ebm_cd
  >>> state = replay_update(state, idx, x_neg)                     # write the end points back

Every function is pure and jit-able with fixed shapes; the B slots of one draw are
distinct (sampled without replacement), so a write-back is unambiguous.

References:
  Du, Y. & Mordatch, I. (2019). Implicit Generation and Generalization in Energy-Based
    Models. NeurIPS. https://arxiv.org/abs/1903.08689
  Tieleman, T. (2008). Training Restricted Boltzmann Machines using Approximations to the
    Likelihood Gradient. ICML. https://doi.org/10.1145/1390156.1390290
  Grathwohl, W. et al. (2020). Your Classifier is Secretly an Energy Based Model and You
    Should Treat it Like One. ICLR. https://arxiv.org/abs/1912.03263
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.typing import Array, PRNGKey

# init_fn(key, shape) -> noise of that shape (the chains' fresh starting points)
InitFn = Callable[[PRNGKey, tuple[int, ...]], Array]


class ReplayBufferState(NamedTuple):
    """A buffer of N past negative samples.

    Attributes:
      samples: the stored samples, [N, ...] (N = capacity).
      num_updates: how many `replay_update` calls wrote into it, int32 [].
    """

    samples: Array
    num_updates: Array


def uniform_init(key: PRNGKey, shape: tuple[int, ...]) -> Array:
    """Uniform noise on [-1, 1] (the pixel range of ``data.preprocess="symmetric"``), float32."""
    return jax.random.uniform(key, shape, jnp.float32, minval=-1.0, maxval=1.0)


def _check_count(fn: str, name: str, v, lo: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{fn}: {name} must be a Python int >= {lo}; received {v!r}. Under jax.jit "
                         "close over it or mark it static.")
    return v


def _init_noise(fn: str, init_fn: InitFn, key: PRNGKey, shape: tuple[int, ...]) -> Array:
    x = init_fn(key, shape)
    if jnp.shape(x) != shape:
        raise ValueError(f"{fn}: init_fn(key, {shape}) must return an array of that shape; it returned "
                         f"shape {jnp.shape(x)}.")
    return x


def replay_init(key: PRNGKey, shape: Sequence[int], capacity: int, *,
                init_fn: InitFn = uniform_init) -> ReplayBufferState:
    """A buffer of `capacity` samples of one example's `shape`, filled with noise.

    Args:
      key: a PRNG key for the noise.
      shape: one example's shape, e.g. (H, W, C) for images.
      capacity: N, the number of stored samples (a Python int >= 1).
      init_fn: ``(key, shape) -> noise``; default uniform on [-1, 1].

    Returns:
      A `ReplayBufferState` with samples [capacity, *shape] and num_updates 0.
    """
    _check_count("replay_init", "capacity", capacity, 1)
    shape = tuple(shape)
    if not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"replay_init: shape must be one example's shape, a tuple of positive ints, e.g. "
                         f"(8, 8, 1); received {shape!r}.")
    samples = _init_noise("replay_init", init_fn, key, (capacity, *shape))
    return ReplayBufferState(samples=samples, num_updates=jnp.zeros((), jnp.int32))


def replay_sample(key: PRNGKey, state: ReplayBufferState, batch_size: int, *, reinit_prob=0.05,
                  init_fn: InitFn = uniform_init) -> tuple[Array, Array]:
    """Draws `batch_size` chain starting points: distinct buffer slots, some re-initialised.

    1. Slots :math:`i_1..i_B` are drawn uniformly without replacement from 0..N-1.
    2. Each starting point is ``samples[i_b]``, except that independently with probability
       `reinit_prob` it is replaced by fresh ``init_fn`` noise (Du & Mordatch 2019: 5%).

    Args:
      key: a PRNG key.
      state: the `ReplayBufferState`.
      batch_size: B, a Python int with 1 <= B <= capacity.
      reinit_prob: the probability of starting a chain from noise, in [0, 1] (may be
        traced).
      init_fn: ``(key, shape) -> noise`` for the re-initialised chains; default uniform on
        [-1, 1].

    Returns:
      ``(x0, indices)``: starting points [B, ...] in the buffer's dtype and the drawn slots,
      int32 [B], to pass to `replay_update` with the chains' end points.
    """
    _check_count("replay_sample", "batch_size", batch_size, 1)
    capacity = state.samples.shape[0]
    if batch_size > capacity:
        raise ValueError(f"replay_sample: batch_size={batch_size} exceeds the buffer's capacity {capacity} "
                         "(slots are drawn without replacement); use a larger buffer or a smaller batch.")
    if isinstance(reinit_prob, (int, float)) and not 0.0 <= reinit_prob <= 1.0:
        raise ValueError(f"replay_sample: reinit_prob must be a probability in [0, 1]; received {reinit_prob!r}.")
    k_idx, k_mask, k_noise = jax.random.split(key, 3)
    indices = jax.random.choice(k_idx, capacity, (batch_size,), replace=False).astype(jnp.int32)
    stored = state.samples[indices]
    noise = _init_noise("replay_sample", init_fn, k_noise, stored.shape).astype(stored.dtype)
    reinit = jax.random.bernoulli(k_mask, reinit_prob, (batch_size,))
    reinit = reinit.reshape((batch_size,) + (1,) * (stored.ndim - 1))
    return jnp.where(reinit, noise, stored), indices


def replay_update(state: ReplayBufferState, indices: Array, new_samples: Array) -> ReplayBufferState:
    """Writes `new_samples` [B, ...] into the slots `indices` [B] (the rest are unchanged).

    Args:
      state: the `ReplayBufferState`.
      indices: the slots to overwrite, int [B], distinct (as `replay_sample` draws them;
        with repeated slots, which of the repeated rows is kept is unspecified).
      new_samples: the chains' end points, [B, *example_shape].

    Returns:
      The updated `ReplayBufferState` (num_updates + 1).
    """
    indices = jnp.asarray(indices)
    if indices.ndim != 1 or not jnp.issubdtype(indices.dtype, jnp.integer):
        raise ValueError(f"replay_update: indices must be a 1-D integer array [B] of slots; received shape "
                         f"{indices.shape} and dtype {indices.dtype}.")
    expected = indices.shape + state.samples.shape[1:]
    if jnp.shape(new_samples) != expected:
        raise ValueError(f"replay_update: new_samples must be one sample per index, shape {expected}; received "
                         f"shape {jnp.shape(new_samples)}.")
    samples = state.samples.at[indices].set(jnp.asarray(new_samples, state.samples.dtype))
    return ReplayBufferState(samples=samples, num_updates=state.num_updates + 1)


__all__ = ["InitFn", "ReplayBufferState", "replay_init", "replay_sample", "replay_update", "uniform_init"]
