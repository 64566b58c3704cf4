r"""DDIM: sampling a trained DDPM on any sub-sequence of its steps, deterministically or not.

Song, Meng & Ermon (2021) note that a DDPM's training objective only involves the
marginals :math:`q(x_n \mid x_0)`, so the same :math:`\varepsilon_\theta` serves a
family of non-Markovian reverse processes. On an increasing sub-sequence
:math:`\tau_1 < \dots < \tau_S` of the steps, with :math:`\bar\alpha_{\tau_0} = 1`,
each step is (Eq. 12)

.. math::
    x_{\tau_{i-1}} = \sqrt{\bar\alpha_{\tau_{i-1}}}\,\hat x_0
      + \sqrt{1 - \bar\alpha_{\tau_{i-1}} - \sigma_i^2}\;\varepsilon_\theta(x_{\tau_i}, \tau_i)
      + \sigma_i z,
    \qquad
    \hat x_0 = \frac{x_{\tau_i} - \sqrt{1-\bar\alpha_{\tau_i}}\,\varepsilon_\theta}{\sqrt{\bar\alpha_{\tau_i}}},

.. math::
    \sigma_i = \eta\,\sqrt{\frac{1-\bar\alpha_{\tau_{i-1}}}{1-\bar\alpha_{\tau_i}}}
               \sqrt{1 - \frac{\bar\alpha_{\tau_i}}{\bar\alpha_{\tau_{i-1}}}}\quad\text{(Eq. 16)}.

:math:`\eta = 0` is the deterministic DDIM (an Euler step of the probability-flow ODE in
the variables :math:`x/\sqrt{\bar\alpha}` and :math:`\sqrt{1-\bar\alpha}/\sqrt{\bar\alpha}`,
hence first order in the step size); :math:`\eta = 1` on the full sequence has
:math:`\sigma_i^2 = \tilde\beta_n` and is DDPM ancestral sampling. The last step
(:math:`\bar\alpha_{\tau_0} = 1`) returns :math:`\hat x_0`.

Step indices are 0-based (the paper's step n is index n - 1), and `eps_fn(x, n)`
receives the int32 index array [B].

References:
  Song, J., Meng, C. & Ermon, S. (2021). Denoising Diffusion Implicit Models. ICLR.
    https://arxiv.org/abs/2010.02502 (Eqs. 12 and 16, Sec. 4.2 and Appendix C.)
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgen.sde.schedules import DiscreteSchedule
from jgen.typing import Array, PRNGKey

# eps_fn(x [B, ...], n int32 [B]) -> eps [B, ...]
EpsFn = Callable[[Array, Array], Array]


class DDIMInfo(NamedTuple):
    """Statistics of one `ddim_sample` call.

    Attributes:
      nfe: number of network evaluations, S = len(timesteps).
      timesteps: the increasing 0-based step indices used, a numpy int array [S].
    """

    nfe: int
    timesteps: np.ndarray


def _check_shape(fn: str, shape) -> tuple[int, ...]:
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else shape
    if not isinstance(shape, tuple) or len(shape) < 1 or not all(
        isinstance(d, int) and d > 0 for d in shape
    ):
        raise ValueError(
            f"{fn}: shape must be a tuple of positive ints (batch first), e.g. (512, 2); "
            f"received {shape!r}."
        )
    return shape


def ddim_timesteps(num_steps: int, schedule_steps: int) -> np.ndarray:
    """`num_steps` evenly spaced 0-based step indices from 0 to N-1, increasing ([S])."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or not (
        1 <= num_steps <= schedule_steps
    ):
        raise ValueError(f"num_steps must be an int in [1, {schedule_steps}] (the schedule's "
                         f"number of steps); received {num_steps!r}.")
    if num_steps == 1:
        return np.array([schedule_steps - 1])
    # Spacing (N-1)/(S-1) >= 1, so the rounded indices are distinct.
    return np.round(np.linspace(0, schedule_steps - 1, num_steps)).astype(np.int64)


def _resolve_timesteps(fn: str, num_steps, timesteps, schedule_steps: int) -> np.ndarray:
    if (num_steps is None) == (timesteps is None):
        raise ValueError(f"{fn}: give exactly one of num_steps (evenly spaced steps) or "
                         f"timesteps (explicit indices); received num_steps={num_steps!r}, "
                         f"timesteps={timesteps!r}.")
    if num_steps is not None:
        return ddim_timesteps(num_steps, schedule_steps)
    ts = np.asarray(timesteps)
    if ts.ndim != 1 or ts.size < 1 or not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"{fn}: timesteps must be a non-empty 1-D sequence of ints (0-based "
                         f"step indices); received {timesteps!r}.")
    if np.any(np.diff(ts) <= 0):
        raise ValueError(f"{fn}: timesteps must be strictly increasing, e.g. [0, 9, 19, ...]; "
                         f"received {ts.tolist()}.")
    if ts[0] < 0 or ts[-1] >= schedule_steps:
        raise ValueError(f"{fn}: timesteps must lie in [0, {schedule_steps - 1}] for a "
                         f"{schedule_steps}-step schedule; received {ts.tolist()}.")
    return ts.astype(np.int64)


def ddim_sample(
    key: PRNGKey,
    eps_fn: EpsFn,
    shape: tuple[int, ...],
    *,
    schedule: DiscreteSchedule,
    num_steps: int | None = None,
    timesteps=None,
    eta: float = 0.0,
    clip_x0: float | None = None,
    x_T: Array | None = None,
    dtype=jnp.float32,
) -> tuple[Array, DDIMInfo]:
    r"""Draws a batch with the DDIM update (Song, Meng & Ermon 2021, Eq. 12).

    Args:
      key: PRNG key (the initial noise and, for eta > 0, the per-step noise).
      eps_fn: the noise prediction `eps_fn(x [B, ...], n int32 [B]) -> [B, ...]` of a
        model trained on `schedule` (n 0-based).
      shape: the output shape (B, ...), static.
      schedule: the `DiscreteSchedule` the model was trained with (N steps).
      num_steps: S evenly spaced steps (`ddim_timesteps(S, N)`: from 0 to N-1). Give
        this or `timesteps`.
      timesteps: an explicit strictly increasing sequence of 0-based indices in
        [0, N-1] (static, e.g. a list or numpy array). Sampling starts at the last one;
        use N-1 there for the prior N(0, I) to match.
      eta: in [0, 1]; 0 gives the deterministic sampler, 1 the DDPM-like one.
      clip_x0: if a number c, clip :math:`\hat x_0` to [-c, c] and recompute
        :math:`\varepsilon` from it before the update; None for no clipping.
      x_T: optional initial noise [B, ...] (default: N(0, I) drawn with `key`). With
        eta = 0 the output is a deterministic function of x_T.
      dtype: floating dtype of the samples.

    Returns:
      `(x_0, DDIMInfo(nfe=S, timesteps))`, x_0 of shape `shape`.

    Raises:
      ValueError: for both or neither of num_steps/timesteps, timesteps that are not
        strictly increasing ints in range, eta outside [0, 1], a bad shape, clip_x0 or
        x_T, or (at trace time) an eps_fn returning the wrong shape.

    Example:
      >>> x0, info = jax.jit(lambda k: ddim_sample(k, eps_fn, (64, 2), schedule=sched,
      ...                                          num_steps=50))(key)
      >>> info.nfe  # 50
    """
    fn = "ddim_sample"
    shape = _check_shape(fn, shape)
    ts = _resolve_timesteps(fn, num_steps, timesteps, schedule.num_steps)
    try:
        eta = float(eta)
    except (TypeError, jax.errors.ConcretizationTypeError):
        raise ValueError(f"{fn}: eta must be a concrete number in [0, 1] (static); "
                         f"received {eta!r}.") from None
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"{fn}: eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like); "
                         f"received {eta!r}.")
    if clip_x0 is not None and not (isinstance(clip_x0, (int, float)) and clip_x0 > 0):
        raise ValueError(f"{fn}: clip_x0 must be a positive number or None; received {clip_x0!r}.")
    if x_T is not None:
        x_T = jnp.asarray(x_T, dtype)
        if x_T.shape != shape:
            raise ValueError(f"{fn}: x_T has shape {list(x_T.shape)} but shape is "
                             f"{list(shape)}; they must agree.")

    abar_all = schedule.alphas_cumprod.astype(dtype)
    prev = np.concatenate([[-1], ts[:-1]])  # tau_{i-1}; -1 stands for abar = 1 (the data)
    # Scan from the last step to the first: (tau_i, tau_{i-1}) pairs, S of them.
    xs = (jnp.asarray(ts[::-1], jnp.int32), jnp.asarray(prev[::-1], jnp.int32))

    key_init, key_steps = jax.random.split(key)
    x = jax.random.normal(key_init, shape, dtype) if x_T is None else x_T

    def step(x, inputs):
        n, n_prev = inputs
        abar = abar_all[n]
        abar_prev = jnp.where(n_prev >= 0, abar_all[jnp.maximum(n_prev, 0)], jnp.ones((), dtype))
        eps = eps_fn(x, jnp.full(shape[:1], n, jnp.int32))
        if jnp.shape(eps) != shape:
            raise ValueError(f"{fn}: eps_fn must return an array of shape {list(shape)}; it "
                             f"returned shape {list(jnp.shape(eps))}.")
        x0 = (x - jnp.sqrt(1 - abar) * eps) / jnp.sqrt(abar)
        if clip_x0 is not None:
            x0 = jnp.clip(x0, -clip_x0, clip_x0)
            eps = (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)
        # Eq. 16: sigma_i(eta); the direction term keeps the marginal variance 1 - abar_prev.
        sigma = eta * jnp.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        x = jnp.sqrt(abar_prev) * x0 + jnp.sqrt(jnp.maximum(1 - abar_prev - sigma ** 2, 0.0)) * eps
        if eta > 0:  # static: the deterministic sampler draws no noise
            x = x + sigma * jax.random.normal(jax.random.fold_in(key_steps, n), shape, dtype)
        return x, None

    x, _ = jax.lax.scan(step, x, xs)
    return x, DDIMInfo(nfe=int(ts.size), timesteps=ts)
