r"""Annealed Langevin dynamics: sample a noise-conditional score model (NCSN) by running
Langevin dynamics at a decreasing sequence of noise levels.

A noise-conditional score network :math:`s_\theta(x, \sigma) \approx \nabla_x \log
p_\sigma(x)`, with :math:`p_\sigma` the data convolved with :math:`\mathcal N(0,
\sigma^2 I)` (x = x_0 + sigma eps), is sampled by Song & Ermon's Algorithm 1: for noise
levels :math:`\sigma_1 > \dots > \sigma_L`, run T steps of unadjusted Langevin dynamics

.. math::
    x \leftarrow x + \frac{\alpha_i}{2} s_\theta(x, \sigma_i) + \sqrt{\alpha_i}\, z,
    \qquad \alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2,\quad z \sim \mathcal N(0, I),

each level starting from the previous level's end. The step size scales with
:math:`\sigma_i^2` so that the "signal-to-noise ratio" of each update is the same at
every level. Langevin dynamics without a Metropolis correction is only asymptotically
exact (as :math:`\epsilon \to 0`, :math:`T \to \infty`); for a Gaussian of variance v
its stationary variance is :math:`v/(1 - \alpha/4v)`. Jolicoeur-Martineau et al. (2021)
add one final denoising step, Tweedie's formula
:math:`x \leftarrow x + \sigma_L^2 s_\theta(x, \sigma_L) = \mathbb E[x_0 \mid x]`,
which removes the residual noise :math:`\sigma_L` from the output (visible noise in
images) at the price of a slight shrinkage: for a Gaussian of variance v the output
variance is :math:`v^2/(v + \sigma_L^2)`, negligible for small :math:`\sigma_L`.

The chain starts from :math:`\mathcal N(0, \sigma_1^2 I)` (Song & Ermon start from a
uniform; the Gaussian is the large-:math:`\sigma_1` limit of :math:`p_{\sigma_1}` for
centred data, the choice of Song & Ermon 2020 and of the VE SDE prior).

References:
  Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. NeurIPS. https://arxiv.org/abs/1907.05600 (Algorithm 1.)
  Song, Y. & Ermon, S. (2020). Improved Techniques for Training Score-Based Generative
    Models. NeurIPS. https://arxiv.org/abs/2006.09011 (choosing sigmas, T and epsilon.)
  Jolicoeur-Martineau, A., Piché-Taillefer, R., Tachet des Combes, R. & Mitliagkas, I.
    (2021). Adversarial score matching and improved sampling for image generation. ICLR.
    https://arxiv.org/abs/2009.05475 (the final denoising step.)
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgen.typing import Array, PRNGKey

# score_fn(x [B, ...], sigma [B]) -> score of p_sigma at x, [B, ...]
NoiseScoreFn = Callable[[Array, Array], Array]


class AnnealedLangevinInfo(NamedTuple):
    """Statistics of one `annealed_langevin_sample` call.

    Attributes:
      nfe: number of score evaluations, L * T (+ 1 for the denoising step).
    """

    nfe: int


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


def _check_sigmas(fn: str, sigmas) -> np.ndarray:
    try:
        s = np.asarray(sigmas, dtype=np.float64)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):  # a tracer, or not numeric
        raise ValueError(f"{fn}: sigmas must be a concrete 1-D array of noise levels (e.g. "
                         f"geometric_sigmas(10, 0.01, 50.0)); received {sigmas!r}.") from None
    if s.ndim != 1 or s.size < 1 or np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{fn}: sigmas must be a non-empty 1-D array of positive noise "
                         f"levels; received {sigmas!r}.")
    if np.any(np.diff(s) >= 0):
        raise ValueError(f"{fn}: sigmas must be strictly decreasing (largest first), e.g. "
                         f"geometric_sigmas(...); received {s.tolist()}.")
    return s


def _check_count(fn: str, name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{fn}: {name} must be a positive Python int (static); received {v!r}.")
    return int(v)


def annealed_langevin_sample(
    key: PRNGKey,
    score_fn: NoiseScoreFn,
    shape: tuple[int, ...],
    *,
    sigmas,
    steps_per_sigma: int,
    step_lr: float,
    denoise: bool = True,
    x_init: Array | None = None,
    dtype=jnp.float32,
) -> tuple[Array, AnnealedLangevinInfo]:
    r"""Draws a batch by annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    All L * T Langevin steps run in one `lax.fori_loop`; step k uses level k // T.

    Args:
      key: PRNG key (the initial point and the per-step noise, folded with the step).
      score_fn: `score_fn(x [B, ...], sigma [B]) -> [B, ...]`, the score of the data
        convolved with N(0, sigma^2 I) (a noise-conditional score network; for a
        VE-trained eps- or x0-network use `jgen.sde.parametrization.to_score` with
        alpha = 1).
      shape: the output shape (B, ...), static.
      sigmas: strictly decreasing noise levels :math:`\sigma_1 > \dots > \sigma_L`
        (static, e.g. `geometric_sigmas(L, sigma_min, sigma_max)`). :math:`\sigma_1`
        should be about the largest distance between data points (Song & Ermon 2020).
      steps_per_sigma: T, Langevin steps at each level (static int).
      step_lr: :math:`\epsilon`, the step size at the last level; level i uses
        :math:`\alpha_i = \epsilon\sigma_i^2/\sigma_L^2`. Stability needs roughly
        :math:`\epsilon < 4\sigma_L^2` (for a Gaussian of variance v, unadjusted
        Langevin diverges once :math:`\alpha \ge 4v`), and the bias grows with
        :math:`\epsilon/\sigma_L^2`.
      denoise: apply the final Tweedie step :math:`x + \sigma_L^2 s(x, \sigma_L)`
        (Jolicoeur-Martineau et al. 2021); one more score evaluation.
      x_init: optional starting point [B, ...] (default: :math:`\mathcal N(0,
        \sigma_1^2 I)` drawn with `key`).
      dtype: floating dtype of the samples.

    Returns:
      `(x, AnnealedLangevinInfo(nfe))`, x of shape `shape`.

    Raises:
      ValueError: for sigmas that are not a positive, strictly decreasing 1-D array, a
        non-positive steps_per_sigma or step_lr, a bad shape or x_init, or (at trace
        time) a score_fn returning the wrong shape.

    Example:
      >>> sigmas = geometric_sigmas(10, 0.05, 10.0)
      >>> x, info = jax.jit(lambda k: annealed_langevin_sample(
      ...     k, score_fn, (512, 2), sigmas=sigmas, steps_per_sigma=100, step_lr=1e-3))(key)
    """
    fn = "annealed_langevin_sample"
    shape = _check_shape(fn, shape)
    sig = _check_sigmas(fn, sigmas)
    steps = _check_count(fn, "steps_per_sigma", steps_per_sigma)
    if not isinstance(step_lr, (int, float, np.floating)) or not step_lr > 0:
        raise ValueError(f"{fn}: step_lr must be a positive number; received {step_lr!r}.")
    if x_init is not None:
        x_init = jnp.asarray(x_init, dtype)
        if x_init.shape != shape:
            raise ValueError(f"{fn}: x_init has shape {list(x_init.shape)} but shape is "
                             f"{list(shape)}; they must agree.")
    num_levels = sig.size
    sigmas_arr = jnp.asarray(sig, dtype)
    step_sizes = jnp.asarray(step_lr * (sig / sig[-1]) ** 2, dtype)  # alpha_i

    def score_at(x, sigma):
        s = score_fn(x, jnp.full(shape[:1], sigma, dtype))
        if jnp.shape(s) != shape:
            raise ValueError(f"{fn}: score_fn must return an array of shape {list(shape)}; "
                             f"it returned shape {list(jnp.shape(s))}.")
        return s

    key_init, key_steps = jax.random.split(key)
    x = sig[0] * jax.random.normal(key_init, shape, dtype) if x_init is None else x_init

    def step(k, x):
        i = k // steps  # noise level of step k
        alpha = step_sizes[i]
        z = jax.random.normal(jax.random.fold_in(key_steps, k), shape, dtype)
        return x + 0.5 * alpha * score_at(x, sigmas_arr[i]) + jnp.sqrt(alpha) * z

    x = jax.lax.fori_loop(0, num_levels * steps, step, x)
    if denoise:  # Tweedie: E[x_0 | x] for x = x_0 + sigma_L eps
        x = x + sigmas_arr[-1] ** 2 * score_at(x, sigmas_arr[-1])
    return x, AnnealedLangevinInfo(nfe=num_levels * steps + int(bool(denoise)))
