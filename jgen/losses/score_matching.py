r"""Score-matching objectives for a model of the score :math:`s(x) \approx \nabla_x\log p(x)`.

Each function takes a *score function* (a network closed over its parameters, or the
negative energy gradient :math:`-\nabla_x E(x)` of an energy-based model) and a batch
x [B, ...], and returns the objective's per-example terms [B] (reduce them in one place,
e.g. `jgen.losses.elbo.masked_mean`). Up to a constant independent of the model, all
of them estimate the Fisher divergence :math:`\tfrac12\mathbb E_p\|s - \nabla\log p\|^2`:

- `exact_score_matching` (Hyvarinen 2005): the implicit objective
  :math:`J(x) = \operatorname{tr}(\nabla_x s(x)) + \tfrac12\|s(x)\|^2`, with the Jacobian
  trace computed exactly from D Jacobian-vector products (D = event size; small D).
- `hutchinson_score_matching`: the same with Hutchinson's unbiased trace estimate
  :math:`\operatorname{tr}(\nabla s) \approx v^\top (\nabla s)\, v`, :math:`\mathbb E[vv^\top] = I`.
- `sliced_score_matching` (Song et al. 2019): SSM,
  :math:`v^\top(\nabla s)v + \tfrac12 (v^\top s)^2`, or SSM-VR (``variance_reduction``),
  :math:`v^\top(\nabla s)v + \tfrac12\|s\|^2` (identical to `hutchinson_score_matching`).
  :math:`v^\top(\nabla s)v` is one forward-mode `jax.jvp` per projection.
- `denoising_score_matching` (Vincent 2011; NCSN, Song & Ermon 2019): regress the score of
  the data perturbed by :math:`\mathcal N(0, \sigma^2 I)` onto the conditional score
  :math:`-(\tilde x - x)/\sigma^2`, at one or several noise levels.

The Jacobian-based objectives treat `score_fn` as a per-example map: the score of example
i may depend only on x[i] (true of MLPs and convnets; not of batch-statistics layers),
because each Jacobian-vector product is taken for the whole batch at once.

References:
  Hyvarinen, A. (2005). Estimation of Non-Normalized Statistical Models by Score
    Matching. JMLR 6. https://jmlr.org/papers/v6/hyvarinen05a.html
  Vincent, P. (2011). A Connection Between Score Matching and Denoising Autoencoders.
    Neural Computation 23(7). https://doi.org/10.1162/NECO_a_00142
  Song, Y., Garg, S., Shi, J. & Ermon, S. (2019). Sliced Score Matching: A Scalable
    Approach to Density and Score Estimation. UAI. https://arxiv.org/abs/1905.07088
  Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. NeurIPS. https://arxiv.org/abs/1907.05600 (Eqs. 5-6.)
  Hutchinson, M. F. (1989). A stochastic estimator of the trace of the influence matrix
    for Laplacian smoothing splines. Commun. Stat. Simul. Comput. 18(3).
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jgen.typing import Array, PRNGKey

# score_fn(x [B, ...]) -> score [B, ...]
ScoreFn = Callable[[Array], Array]
# noise-conditional score_fn(x_noisy [B, ...], sigma [B]) -> score [B, ...]
NoiseConditionalScoreFn = Callable[[Array, Array], Array]

DSM_WEIGHTINGS = ("sigma2", "none")
PROBE_NOISES = ("gaussian", "rademacher")


def _sum_event(v: Array) -> Array:
    """Sums every axis but the leading (batch) one: [B, ...] -> [B]."""
    return jnp.sum(jnp.reshape(v, (v.shape[0], -1)), axis=1)


def _check_batch(x: Array, who: str) -> Array:
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{who}: x must be a batch of shape [B, ...] with at least one event axis; got shape "
                         f"{list(x.shape)}. Use x[:, None] for scalar data.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{who}: x must be floating point (score matching differentiates in x); got dtype "
                         f"{x.dtype}. Convert with x.astype(jnp.float32).")
    return x


def _check_score(score: Array, x: Array, who: str) -> Array:
    if score.shape != x.shape:
        raise ValueError(f"{who}: score_fn must return an array shaped like its input {list(x.shape)}; got "
                         f"{list(score.shape)}.")
    return score


def _check_count(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive int; got {value!r}.")
    return int(value)


def _probes(key: PRNGKey, shape: tuple[int, ...], dtype, noise: str, who: str) -> Array:
    """Projection / probe vectors with E[v v^T] = I: standard normal or Rademacher (+-1)."""
    if noise == "gaussian":
        return jax.random.normal(key, shape, dtype)
    if noise == "rademacher":
        return jax.random.rademacher(key, shape, dtype)
    raise ValueError(f"{who}: unknown probe noise {noise!r}; choose one of {PROBE_NOISES}.")


def denoising_score_matching(
    score_fn: NoiseConditionalScoreFn,
    key: PRNGKey,
    x: Array,
    sigmas,
    *,
    weighting: str = "sigma2",
) -> Array:
    r"""Denoising score matching at one or several noise levels, per example.

    For each example a noise level :math:`\sigma` is drawn uniformly from `sigmas`, and

    .. math::
        \tilde x = x + \sigma z,\quad z\sim\mathcal N(0, I),\qquad
        \ell = \tfrac12\,\lambda(\sigma)\,\big\|s(\tilde x, \sigma) + z/\sigma\big\|^2,

    since :math:`\nabla_{\tilde x}\log q_\sigma(\tilde x\mid x) = -(\tilde x - x)/\sigma^2 = -z/\sigma`
    (Vincent 2011). Averaged over the batch this is Song & Ermon's Eq. 6,
    :math:`\frac1L\sum_i\lambda(\sigma_i)\,\ell(\theta;\sigma_i)`; its minimiser at each level is
    the score of the noised data :math:`\nabla\log(p * \mathcal N(0,\sigma^2 I))`. With
    :math:`\lambda = \sigma^2` (NCSN's choice, ``weighting="sigma2"``) every level contributes
    on the same scale: :math:`\ell = \tfrac12\|\sigma s + z\|^2`.

    Args:
      score_fn: the noise-conditional score model, ``score_fn(x_noisy [B, ...], sigma [B])
        -> score [B, ...]`` (for a single level the network may ignore sigma).
      key: PRNG key for the noise levels and the perturbations.
      x: clean data [B, ...].
      sigmas: one noise level (a float) or L levels (a 1-D array, e.g.
        `jgen.sde.schedules.geometric_sigmas`); each must be > 0.
      weighting: "sigma2" (:math:`\lambda(\sigma) = \sigma^2`) or "none" (:math:`\lambda = 1`).

    Returns:
      The per-example loss [B].

    Example::

        sigmas = geometric_sigmas(10, 0.01, 1.0)
        loss = denoising_score_matching(lambda y, s: net.apply(params, y, s), key, x, sigmas).mean()
    """
    who = "denoising_score_matching"
    x = _check_batch(x, who)
    if weighting not in DSM_WEIGHTINGS:
        raise ValueError(f"{who}: unknown weighting {weighting!r}; choose one of {DSM_WEIGHTINGS}.")
    if not isinstance(sigmas, jax.core.Tracer) and np.any(np.asarray(sigmas) <= 0):
        raise ValueError(f"{who}: every noise level must be > 0; got {np.asarray(sigmas)}.")
    sigmas = jnp.asarray(sigmas, x.dtype)
    if sigmas.ndim > 1 or sigmas.size == 0:
        raise ValueError(f"{who}: sigmas must be a float or a non-empty 1-D array of noise levels; got shape "
                         f"{list(sigmas.shape)}.")
    sigmas = jnp.reshape(sigmas, (-1,))
    b = x.shape[0]
    key_level, key_noise = jax.random.split(key)
    sigma = sigmas[jax.random.randint(key_level, (b,), 0, sigmas.shape[0])]  # uniform level per example
    s = jnp.reshape(sigma, (b,) + (1,) * (x.ndim - 1))
    z = jax.random.normal(key_noise, x.shape, x.dtype)
    score = _check_score(score_fn(x + s * z, sigma), x, who)
    if weighting == "sigma2":
        return 0.5 * _sum_event((s * score + z) ** 2)  # sigma^2 ||score + z / sigma||^2
    return 0.5 * _sum_event((score + z / s) ** 2)


def _jvp_quadratic(score_fn: ScoreFn, x: Array, v: Array, who: str) -> tuple[Array, Array]:
    """(s(x), v^T (grad_x s) v per example [B]) from one forward-mode product."""
    score, jv = jax.jvp(score_fn, (x,), (v,))
    return _check_score(score, x, who), _sum_event(v * jv)


def sliced_score_matching(
    score_fn: ScoreFn,
    key: PRNGKey,
    x: Array,
    *,
    num_projections: int = 1,
    variance_reduction: bool = False,
    noise: str = "gaussian",
) -> Array:
    r"""Sliced score matching (SSM) and its variance-reduced form (SSM-VR), per example.

    With M random projections :math:`v_m` (:math:`\mathbb E[vv^\top] = I`), Song et al.
    (2019) Eq. 8 (SSM) and the SSM-VR objective are

    .. math::
        \frac1M\sum_m v_m^\top \nabla_x s(x)\, v_m + \tfrac12\big(v_m^\top s(x)\big)^2
        \quad\text{or}\quad
        \frac1M\sum_m v_m^\top \nabla_x s(x)\, v_m + \tfrac12\|s(x)\|^2,

    both unbiased for Hyvarinen's :math:`\operatorname{tr}(\nabla s) + \tfrac12\|s\|^2`
    (`exact_score_matching`). :math:`\nabla_x s\, v` is a Jacobian-vector product
    (`jax.jvp`), one per projection, so the cost is M forward-mode passes.

    Args:
      score_fn: ``score_fn(x [B, ...]) -> score [B, ...]``, per-example (see module notes).
      key: PRNG key for the projections.
      x: data [B, ...].
      num_projections: M, projections per example.
      variance_reduction: False for SSM, True for SSM-VR (the second form).
      noise: projection distribution, "gaussian" (the paper's) or "rademacher".

    Returns:
      The per-example objective [B] (minimise its batch mean).
    """
    who = "sliced_score_matching"
    x = _check_batch(x, who)
    m = _check_count(num_projections, "num_projections", who)
    v = _probes(key, (m,) + x.shape, x.dtype, noise, who)

    def one(v_m):
        score, vjv = _jvp_quadratic(score_fn, x, v_m, who)
        if variance_reduction:
            return vjv + 0.5 * _sum_event(score ** 2)
        return vjv + 0.5 * _sum_event(v_m * score) ** 2

    return jnp.mean(jax.vmap(one)(v), axis=0)


def hutchinson_score_matching(
    score_fn: ScoreFn,
    key: PRNGKey,
    x: Array,
    num_probes: int = 1,
    *,
    noise: str = "rademacher",
) -> Array:
    r"""Hyvarinen score matching with Hutchinson's trace estimator, per example:
    :math:`\frac1M\sum_m v_m^\top\nabla_x s(x)\,v_m + \tfrac12\|s(x)\|^2`.

    The same estimator as SSM-VR (`sliced_score_matching` with ``variance_reduction=True``);
    Rademacher probes (the default here) give the lowest-variance trace estimate among
    probes with :math:`\mathbb E[vv^\top]=I` and i.i.d. entries.

    Args:
      score_fn: ``score_fn(x [B, ...]) -> score [B, ...]``, per-example.
      key: PRNG key for the probes.
      x: data [B, ...].
      num_probes: M, probes per example.
      noise: "rademacher" or "gaussian".

    Returns:
      The per-example objective [B], unbiased for `exact_score_matching`.
    """
    return sliced_score_matching(score_fn, key, x, num_projections=num_probes, variance_reduction=True,
                                 noise=noise)


def exact_score_matching(score_fn: ScoreFn, x: Array) -> Array:
    r"""Hyvarinen's (2005) score-matching objective with the exact Jacobian trace, per example:

    .. math:: J(x) = \operatorname{tr}\big(\nabla_x s(x)\big) + \tfrac12\|s(x)\|^2,

    whose data average equals :math:`\tfrac12\mathbb E_p\|s - \nabla\log p\|^2` up to a
    constant (Hyvarinen 2005, Theorem 1). The trace is :math:`\sum_d e_d^\top\nabla s\,e_d`:
    D Jacobian-vector products with the basis vectors (D = event size), so use it in low
    dimensions; `hutchinson_score_matching` is its one-probe estimate.

    Args:
      score_fn: ``score_fn(x [B, ...]) -> score [B, ...]``, per-example.
      x: data [B, ...].

    Returns:
      The per-example objective [B].
    """
    who = "exact_score_matching"
    x = _check_batch(x, who)
    event = x.shape[1:]
    d = math.prod(event)
    basis = jnp.reshape(jnp.eye(d, dtype=x.dtype), (d,) + event)

    def column(e):
        score, ede = _jvp_quadratic(score_fn, x, jnp.broadcast_to(e, x.shape), who)
        return score, ede

    scores, diag = jax.vmap(column)(basis)  # [D, B, ...], [D, B]
    return jnp.sum(diag, axis=0) + 0.5 * _sum_event(scores[0] ** 2)
