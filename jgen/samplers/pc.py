r"""Predictor-corrector (PC) sampling of a score-based SDE model.

Song et al. (2021) sample the reverse-time SDE
:math:`dx = [f(x,t) - g(t)^2 \nabla_x\log p_t(x)]\,dt + g(t)\,d\bar w` from the prior at
t = T down to a small :math:`t_{min}`, alternating two kinds of step on a uniform grid
:math:`T = t_0 > t_1 > \dots > t_K = t_{min}`:

- a *predictor*, one step of a numerical scheme for the reverse SDE from
  :math:`t_i` to :math:`t_{i+1}` (`euler_maruyama_predictor`,
  `reverse_diffusion_predictor`);
- a *corrector*, a few steps of score-based MCMC that leave :math:`p_{t_{i+1}}`
  invariant in the limit, here Langevin dynamics with the step set by a target
  signal-to-noise ratio (`langevin_corrector`).

Both are small pure functions with the signature
`(key, x, t, dt, score_fn, sde) -> x` (t per-example [B] the current time, dt < 0 the
grid step), and `pc_sample` composes them: predictor from :math:`t_i`, then the
corrector M times at :math:`t_{i+1}` (Song et al. Algorithms 2-3), then optionally one
denoising step at :math:`t_{min}`. "Predictor only" is plain reverse-SDE integration;
"corrector only" is annealed Langevin dynamics along the SDE's noise levels.

References:
  Song, Y., Sohl-Dickstein, J., Kingma, D. P., Kumar, A., Ermon, S. & Poole, B. (2021).
    Score-Based Generative Modeling through Stochastic Differential Equations. ICLR.
    https://arxiv.org/abs/2011.13456 (Sec. 4.2; Eqs. 46-47; Appendix G, Algorithms 1-5.)
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.sde.sde import LinearSDE, _expand
from jgen.typing import Array, PRNGKey

# score_fn(x [B, ...], t [B]) -> score of p_t at x, [B, ...]
ScoreFn = Callable[[Array, Array], Array]
# step(key, x, t [B], dt (scalar, < 0), score_fn, sde) -> x
StepFn = Callable[[PRNGKey, Array, Array, Array, ScoreFn, LinearSDE], Array]


class PCInfo(NamedTuple):
    """Statistics of one `pc_sample` call.

    Attributes:
      nfe: number of score evaluations: K predictor steps, K * M corrector steps and
        one for the final denoising step, as present.
    """

    nfe: int


def euler_maruyama_predictor(key: PRNGKey, x: Array, t: Array, dt, score_fn: ScoreFn,
                             sde: LinearSDE) -> Array:
    r"""One Euler-Maruyama step of the reverse SDE from t to t + dt (dt < 0):

    .. math:: x \leftarrow x + [f(x,t) - g(t)^2 s(x,t)]\,dt + g(t)\sqrt{|dt|}\,z.
    """
    drift = sde.reverse_drift(x, t, score_fn(x, t))
    g = _expand(sde.diffusion(t), x)
    z = jax.random.normal(key, x.shape, x.dtype)
    return x + drift * dt + g * jnp.sqrt(-dt) * z


def reverse_diffusion_predictor(key: PRNGKey, x: Array, t: Array, dt, score_fn: ScoreFn,
                                sde: LinearSDE) -> Array:
    r"""Song et al.'s reverse-diffusion predictor (Eq. 47) from t to t' = t + dt (dt < 0).

    The forward process is discretised by its exact Gaussian transition
    :math:`x_t = r\,x_{t'} + G z`, :math:`r = \alpha(t)/\alpha(t')`,
    :math:`G^2 = \sigma(t)^2 - r^2\sigma(t')^2` (i.e. :math:`f_i(x) = (r-1)x`; for the
    VE SDE :math:`G^2 = \sigma_t^2 - \sigma_{t'}^2` as in Algorithm 2, for VP it is
    DDPM's :math:`\beta_i` to first order), and reversed as in Eq. 47:

    .. math:: x \leftarrow x - (r - 1)x + G^2 s(x, t) + G z.
    """
    alpha, sigma = sde.marginal(t)
    alpha_next, sigma_next = sde.marginal(t + dt)
    r = alpha / alpha_next
    g2 = jnp.maximum(sigma ** 2 - r ** 2 * sigma_next ** 2, 0.0)
    score = score_fn(x, t)
    z = jax.random.normal(key, x.shape, x.dtype)
    return (_expand(2.0 - r, x) * x + _expand(g2, x) * score
            + _expand(jnp.sqrt(g2), x) * z)


def langevin_corrector(key: PRNGKey, x: Array, t: Array, dt, score_fn: ScoreFn,
                       sde: LinearSDE, *, snr: float = 0.16) -> Array:
    r"""One Langevin step at time t with the step size set by a signal-to-noise ratio
    (Song et al. Algorithms 4-5):

    .. math::
        \epsilon = 2 a \Big(r \frac{\|z\|}{\|s(x,t)\|}\Big)^2,\qquad
        x \leftarrow x + \epsilon\, s(x,t) + \sqrt{2\epsilon}\, z,

    with r = `snr` and :math:`a = (\alpha(t + |dt|)/\alpha(t))^2` (1 for VE; for VP
    DDPM's :math:`\alpha_i = 1 - \beta_i` to first order, as in Algorithm 5).

    As in Song et al.'s code, :math:`\|z\|` and :math:`\|s\|` are each averaged over the
    batch, so one step size serves the whole batch. Per-example ratios are heavy-tailed
    in low dimension (a point where the score nearly vanishes, such as the centre of a
    ring of modes, gets a huge step and is thrown far out), while in high dimension the
    norms concentrate and the two choices agree. The batch mean makes the step depend
    on the batch it is computed over (not on how that batch is sharded: under `jax.jit`
    the mean is global).
    """
    score = score_fn(x, t)
    z = jax.random.normal(key, x.shape, x.dtype)
    alpha, _ = sde.marginal(t)
    alpha_prev, _ = sde.marginal(t - dt)
    a = (alpha_prev / alpha) ** 2

    def norm(v):
        return jnp.sqrt(jnp.sum(jnp.reshape(v, (v.shape[0], -1)) ** 2, axis=1))

    tiny = jnp.finfo(x.dtype).tiny
    ratio = jnp.mean(norm(z)) / jnp.maximum(jnp.mean(norm(score)), tiny)  # batch means
    eps = _expand(2.0 * a * (snr * ratio) ** 2, x)  # [B] -> broadcastable
    return x + eps * score + jnp.sqrt(2.0 * eps) * z


PREDICTORS = {"euler_maruyama": euler_maruyama_predictor,
              "reverse_diffusion": reverse_diffusion_predictor}
CORRECTORS = {"langevin": langevin_corrector}


def _resolve(fn: str, kind: str, value, table: dict) -> StepFn | None:
    """A config name, a step function or None -> a step function or None."""
    if value is None or callable(value):
        return value
    if isinstance(value, str) and value in table:
        return table[value]
    raise ValueError(f"{fn}: unknown {kind} {value!r}; choose one of {sorted(table)}, None, or "
                     f"pass a function (key, x, t, dt, score_fn, sde) -> x.")


def pc_sample(
    key: PRNGKey,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    sde: LinearSDE,
    num_steps: int,
    predictor: str | StepFn | None = "euler_maruyama",
    corrector: str | StepFn | None = "langevin",
    snr: float = 0.16,
    corrector_steps: int = 1,
    denoise: bool = True,
    x_T: Array | None = None,
    dtype=jnp.float32,
) -> tuple[Array, PCInfo]:
    r"""Draws a batch with predictor-corrector sampling (Song et al. 2021, Algorithms 2-3).

    On the grid :math:`t_i = T - i\,(T - t_{min})/K`, i = 0..K, starting from
    :math:`x \sim` the SDE's prior, each of the K steps is

    .. code-block:: text

        x = predictor(key_i, x, t_i, dt, score_fn, sde)            # t_i -> t_{i+1}
        repeat M times:
            x = corrector(key_ij, x, t_{i+1}, dt, score_fn, sde)     # at t_{i+1}

    (dt = t_{i+1} - t_i < 0), and with `denoise` the output is Tweedie's
    :math:`\mathbb E[x_0 \mid x_{t_{min}}] = (x + \sigma^2 s(x, t_{min}))/\alpha`.

    Args:
      key: PRNG key (the prior draw and every step's noise, folded with the step).
      score_fn: `score_fn(x [B, ...], t [B]) -> [B, ...]`, the score of the SDE's
        marginal :math:`p_t` (for an eps-network: `to_score(out, x, *sde.marginal(t), "eps")`).
      shape: the output shape (B, ...), static.
      sde: the forward `LinearSDE` (its T, t_min, marginals, prior).
      num_steps: K, the number of grid steps (static int).
      predictor: "euler_maruyama", "reverse_diffusion", a step function, or None (no
        predictor: Langevin-only annealing along the grid).
      corrector: "langevin", a step function, or None (predictor only).
      snr: the Langevin corrector's signal-to-noise ratio r (Song et al. use 0.16 for
        VE on CIFAR-10, 0.01-0.17 elsewhere); used by the "langevin" name only.
      corrector_steps: M, corrector steps per grid step (static int).
      denoise: apply the final Tweedie denoising step (one more score evaluation).
      x_T: optional initial point [B, ...] (default: `sde.prior_sample(key, shape)`).
      dtype: floating dtype of the samples.

    Returns:
      `(x_0, PCInfo(nfe))` with nfe = K (predictor) + K M (corrector) + 1 (denoise).

    Raises:
      ValueError: for an unknown predictor or corrector name, neither given, a bad
        num_steps, corrector_steps, snr, shape or x_T.

    Example:
      >>> sde = VPSDE()
      >>> x, info = jax.jit(lambda k: pc_sample(k, score_fn, (512, 2), sde=sde,
      ...                                       num_steps=500))(key)
      >>> info.nfe  # 500 + 500 + 1
    """
    fn = "pc_sample"
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else shape
    if not isinstance(shape, tuple) or len(shape) < 1 or not all(
        isinstance(d, int) and d > 0 for d in shape
    ):
        raise ValueError(f"{fn}: shape must be a tuple of positive ints (batch first), e.g. "
                         f"(512, 2); received {shape!r}.")
    for name, v in (("num_steps", num_steps), ("corrector_steps", corrector_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{fn}: {name} must be a positive Python int (static); received {v!r}.")
    if not isinstance(snr, (int, float)) or not snr > 0:
        raise ValueError(f"{fn}: snr must be a positive number; received {snr!r}.")
    predictor_fn = _resolve(fn, "predictor", predictor, PREDICTORS)
    corrector_fn = _resolve(fn, "corrector", corrector, CORRECTORS)
    if corrector_fn is langevin_corrector:
        corrector_fn = functools.partial(langevin_corrector, snr=snr)
    if predictor_fn is None and corrector_fn is None:
        raise ValueError(f"{fn}: predictor and corrector are both None; give at least one.")
    if x_T is not None:
        x_T = jnp.asarray(x_T, dtype)
        if x_T.shape != shape:
            raise ValueError(f"{fn}: x_T has shape {list(x_T.shape)} but shape is "
                             f"{list(shape)}; they must agree.")

    def checked_score(x, t):
        s = score_fn(x, t)
        if jnp.shape(s) != shape:
            raise ValueError(f"{fn}: score_fn must return an array of shape {list(shape)}; "
                             f"it returned shape {list(jnp.shape(s))}.")
        return s

    dt = (sde.t_min - sde.T) / num_steps  # < 0
    key_init, key_steps = jax.random.split(key)
    x = sde.prior_sample(key_init, shape, dtype) if x_T is None else x_T

    def step(i, x):
        t = jnp.full(shape[:1], sde.T + i * dt, dtype)
        key_p, key_c = jax.random.split(jax.random.fold_in(key_steps, i))
        if predictor_fn is not None:
            x = predictor_fn(key_p, x, t, dt, checked_score, sde)
        if corrector_fn is not None:
            t_next = t + dt
            x = jax.lax.fori_loop(0, corrector_steps, lambda j, x: corrector_fn(
                jax.random.fold_in(key_c, j), x, t_next, dt, checked_score, sde), x)
        return x

    x = jax.lax.fori_loop(0, num_steps, step, x)
    nfe = num_steps * ((predictor_fn is not None) + corrector_steps * (corrector_fn is not None))
    if denoise:  # Tweedie at t_min: E[x_0 | x_t] = (x_t + sigma^2 score) / alpha
        t = jnp.full(shape[:1], sde.t_min, dtype)
        alpha, sigma = sde.marginal(t)
        x = (x + _expand(sigma ** 2, x) * checked_score(x, t)) / _expand(alpha, x)
        nfe += 1
    return x, PCInfo(nfe=int(nfe))
