r"""Classifier guidance: a noise-conditional classifier's training loss, and the guided
score (or noise prediction) that turns any unconditional diffusion sampler into a
class-conditional one.

By Bayes' rule the score of the class-conditional noised density splits as

.. math:: \nabla_x \log p_t(x \mid y) = \nabla_x \log p_t(x) + \nabla_x \log p_t(y \mid x),

where :math:`p_t(y \mid x)` is the class posterior of the *noised* data
:math:`x_t = \alpha(t) x_0 + \sigma(t)\varepsilon` (Song et al. 2021, Sec. 5 and
Eq. 14). A classifier :math:`p_\phi(y \mid x_t, t)` trained by cross-entropy on noised
data (`noisy_classifier_loss`) estimates it, and sampling with

.. math:: \tilde s(x, t) = s_\theta(x, t) + w\,\nabla_x \log p_\phi(y \mid x, t)

(`classifier_guided_score`) draws from :math:`p_t(x \mid y)` at :math:`w = 1` when both
models are exact, and from the sharpened :math:`\propto p(x)\,p(y \mid x)^w` for
:math:`w > 1` (Dhariwal & Nichol 2021, Sec. 4 and Algorithm 1, whose "gradient scale"
s is this w). The guided score is an ordinary ``score_fn(x, t)``, so every sampler in
`jgen.samplers` (and `jgen.families.diffusion.sample_with`, which routes a score to
all of them) samples with guidance unchanged; for a DDPM model written as an
:math:`\varepsilon` predictor, `classifier_guided_eps` is the same transformation in
those coordinates, :math:`\tilde\varepsilon = \varepsilon - w\,\sigma_n\nabla_x\log
p_\phi(y \mid x_n, n)` (Dhariwal & Nichol Eq. 14, used by their DDIM Algorithm 2).

This module lives beside `jgen.losses.diffusion`, whose classifier-free guidance
(`drop_labels` for training, `classifier_free_guidance` for sampling) is the
alternative that needs no separate classifier (Ho & Salimans 2022): both halves of
one algorithm in one file, as there.

The classifier is ``classifier_fn(params, x_t [B, ...], time [B]) -> logits [B, K]``,
called with the same time variable as the diffusion losses: the continuous time t
(float [B], not rescaled) for an SDE, the 0-based step index n (int32 [B]) for a DDPM
schedule. The gradient is taken of :math:`\sum_b \log p_\phi(y_b \mid x_b)`, which is
the per-example gradient only if the classifier treats examples independently (no
batch statistics, as in evaluation mode).

References:
  Song, Y., Sohl-Dickstein, J., Kingma, D. P., Kumar, A., Ermon, S. & Poole, B. (2021).
    Score-Based Generative Modeling through Stochastic Differential Equations. ICLR.
    https://arxiv.org/abs/2011.13456 (Sec. 5, Eq. 14; Appendix I.4, class-conditional
    sampling with a time-dependent classifier.)
  Dhariwal, P. & Nichol, A. (2021). Diffusion Models Beat GANs on Image Synthesis.
    NeurIPS. https://arxiv.org/abs/2105.05233 (Sec. 4, Algorithms 1-2, Eq. 14.)
  Ho, J. & Salimans, T. (2022). Classifier-Free Diffusion Guidance.
    https://arxiv.org/abs/2207.12598
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jgen.sde.schedules import DiscreteSchedule
from jgen.sde.sde import LinearSDE, _expand
from jgen.typing import Array, Params, PRNGKey

# classifier_fn(params, x_t [B, ...], time [B]) -> logits [B, K]
ClassifierFn = Callable[[Params, Array, Array], Array]
# logits_fn(x_t [B, ...], time [B]) -> logits [B, K]: a classifier with its parameters bound
LogitsFn = Callable[[Array, Array], Array]
ScoreFn = Callable[[Array, Array], Array]


# -- checks ----------------------------------------------------------------------------------

def _check_labels(labels, batch: int, who: str) -> Array:
    """Integer class labels, a scalar (shared by the batch) or [B] -> int32 [B]."""
    if not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    shape, dtype = tuple(labels.shape), labels.dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{who}: labels must be integer class indices, a scalar or [B] = [{batch}]; "
                         f"got dtype {dtype}. Use labels.astype(jnp.int32) (not one-hot vectors).")
    labels = jnp.asarray(labels, jnp.int32)
    if tuple(shape) == ():
        return jnp.full((batch,), labels, jnp.int32)
    if tuple(shape) != (batch,):
        raise ValueError(f"{who}: labels must be a scalar class index or one per example, [B] = [{batch}]; "
                         f"got shape {list(shape)}.")
    return labels


def _check_logits(logits, batch: int, who: str) -> Array:
    if logits.ndim != 2 or logits.shape[0] != batch:
        raise ValueError(f"{who}: the classifier must return logits [B, K] = [{batch}, K]; it returned shape "
                         f"{list(logits.shape)}.")
    return logits


def _is_static_zero(scale) -> bool:
    return isinstance(scale, (int, float, np.number)) and not isinstance(scale, bool) and float(scale) == 0.0


def _check_scale(scale, who: str):
    if isinstance(scale, bool) or not (isinstance(scale, (int, float, np.number)) or hasattr(scale, "shape")):
        raise ValueError(f"{who}: scale must be a number or an array (scalar or per-example [B]); got {scale!r}.")
    if isinstance(scale, (int, float, np.number)) and not np.isfinite(scale):
        raise ValueError(f"{who}: scale must be finite; got {scale!r}.")
    return scale


def _scale_like(scale, x: Array, who: str) -> Array:
    w = jnp.asarray(scale, x.dtype)
    if w.ndim == 1 and w.shape[0] == x.shape[0]:
        return _expand(w, x)
    if w.ndim != 0:
        raise ValueError(f"{who}: scale must be a scalar or per-example [B] = [{x.shape[0]}]; got shape "
                         f"{list(w.shape)}.")
    return w


# -- training --------------------------------------------------------------------------------

def noisy_classifier_loss(
    classifier_fn: ClassifierFn,
    params: Params,
    key: PRNGKey,
    x0: Array,
    labels: Array,
    *,
    sde: LinearSDE | None = None,
    schedule: DiscreteSchedule | None = None,
    t_eps: float | None = None,
) -> tuple[Array, dict[str, Array]]:
    r"""Cross-entropy of a noise-conditional classifier on noised data (Dhariwal & Nichol 2021, Sec. 4).

    Per example, a noise level is drawn and the data noised by the forward process,

    .. math::
        x_t = \alpha(t)\,x_0 + \sigma(t)\,\varepsilon, \qquad
        \ell = -\log \operatorname{softmax}\big(f_\phi(x_t, t)\big)_y,

    with :math:`t \sim \mathcal U(t_\epsilon, T)` for an `sde` (the network sees t) or
    :math:`n \sim \mathcal U\{0..N-1\}` with :math:`(\alpha, \sigma) = (\sqrt{\bar\alpha_n},
    \sqrt{1-\bar\alpha_n})` for a DDPM `schedule` (the network sees the step index n).
    Its population minimiser is the posterior of the noised data,
    :math:`p_t(y \mid x_t) \propto \pi_y\, p_t(x_t \mid y)`, at every noise level, which is
    what `classifier_guided_score` needs. Draw the noise levels the sampler will visit:
    the same t range (or schedule) as the diffusion model's own loss.

    Args:
      classifier_fn: ``classifier_fn(params, x_t [B, ...], time [B]) -> logits [B, K]``.
      params: classifier parameters.
      key: PRNG key for the noise levels and the noise.
      x0: clean data [B, ...] (the diffusion model's pixel scale, e.g. [-1, 1]).
      labels: integer classes [B].
      sde: the forward `LinearSDE` (give exactly one of `sde` and `schedule`).
      schedule: a DDPM `DiscreteSchedule`.
      t_eps: smallest continuous time drawn (sde only); defaults to ``sde.t_min``.

    Returns:
      ``(loss [B], aux)``: loss the cross-entropy in nats; aux ``time`` (the drawn t or n,
      [B]) and ``correct`` (1.0 where the arg-max class is the label, [B]).

    Raises:
      ValueError: neither or both of sde and schedule, x0 not a floating batch, labels not
        integer [B], a t_eps outside [0, T), or logits not [B, K].
    """
    who = "noisy_classifier_loss"
    if (sde is None) == (schedule is None):
        raise ValueError(f"{who}: give exactly one of sde= (continuous time) or schedule= (DDPM steps); got "
                         f"sde={type(sde).__name__}, schedule={type(schedule).__name__}.")
    x0 = jnp.asarray(x0)
    if x0.ndim < 2 or not jnp.issubdtype(x0.dtype, jnp.floating):
        raise ValueError(f"{who}: x0 must be a floating batch [B, ...]; got shape {list(x0.shape)}, dtype "
                         f"{x0.dtype}. Use x[:, None] for scalar data.")
    b = x0.shape[0]
    labels = _check_labels(labels, b, who)
    key_t, key_noise = jax.random.split(key)
    if sde is not None:
        if not isinstance(sde, LinearSDE):
            raise TypeError(f"{who}: sde must be a jgen.sde.LinearSDE (VPSDE, VESDE, SubVPSDE); got "
                            f"{type(sde).__name__}.")
        t_eps = sde.t_min if t_eps is None else t_eps
        if not 0.0 <= float(t_eps) < sde.T:
            raise ValueError(f"{who}: t_eps must lie in [0, T) = [0, {sde.T}); got {t_eps!r}.")
        time = jax.random.uniform(key_t, (b,), x0.dtype, minval=t_eps, maxval=sde.T)
        alpha, sigma = sde.marginal(time)
    else:
        if not isinstance(schedule, DiscreteSchedule):
            raise TypeError(f"{who}: schedule must be a jgen.sde.DiscreteSchedule; got {type(schedule).__name__}.")
        time = jax.random.randint(key_t, (b,), 0, schedule.num_steps, jnp.int32)
        alpha, sigma = schedule.marginal(time)
    eps = jax.random.normal(key_noise, x0.shape, x0.dtype)
    x_t = _expand(alpha.astype(x0.dtype), x0) * x0 + _expand(sigma.astype(x0.dtype), x0) * eps
    logits = _check_logits(classifier_fn(params, x_t, time), b, who)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.take_along_axis(log_p, labels[:, None], axis=1)[:, 0]
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return loss, {"time": time, "correct": correct}


# -- sampling --------------------------------------------------------------------------------

def classifier_log_prob_grad(logits_fn: LogitsFn, x: Array, time: Array, labels: Array) -> Array:
    r""":math:`\nabla_x \log p_\phi(y \mid x, t)` per example, shaped like x.

    Args:
      logits_fn: ``logits_fn(x [B, ...], time [B]) -> logits [B, K]``, examples independent.
      x: noised data [B, ...].
      time: the classifier's time input [B] (t, or the DDPM step index n).
      labels: integer classes, a scalar or [B].
    """
    who = "classifier_log_prob_grad"
    labels = _check_labels(labels, x.shape[0], who)

    def total_log_prob(x):
        logits = _check_logits(logits_fn(x, time), x.shape[0], who)
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return jnp.sum(jnp.take_along_axis(log_p, labels[:, None], axis=1))

    return jax.grad(total_log_prob)(x)


def classifier_guided_score(score_fn: ScoreFn, logits_fn: LogitsFn, labels: Array, *, scale=1.0) -> ScoreFn:
    r"""The guided score :math:`s(x, t) + w\,\nabla_x \log p_\phi(y \mid x, t)` as a new ``score_fn``.

    A score-function transformer: pass the result to any sampler that takes a score
    (`jgen.samplers.pc_sample`, `probability_flow_sample`, `dpm_solver_pp_2m_sample` via
    `x0_from_score`, `jgen.families.diffusion.sample_with` for all of them, the inverse-problem
    samplers of `jgen.inverse`). With exact models, :math:`w = 1` is the exact score of
    :math:`p_t(x \mid y)` (Song et al. 2021, Eq. 14).

    Args:
      score_fn: the unconditional ``score_fn(x [B, ...], t [B]) -> [B, ...]``.
      logits_fn: the noise-conditional classifier ``logits_fn(x [B, ...], t [B]) -> logits [B, K]``
        at the score model's noise levels (same x and t).
      labels: the classes to sample, integer scalar or [B].
      scale: the guidance weight w >= 0, a number or an array (scalar or [B]). A Python 0
        returns `score_fn` itself, so the sampler is then exactly the unguided one (and the
        classifier is never evaluated).

    Returns:
      ``guided_score_fn(x, t) -> [B, ...]``.

    Example:
      >>> guided = classifier_guided_score(score_fn, lambda x, t: clf.apply(p, x, t), labels, scale=2.0)
      >>> x, nfe = sample_with("dpm_solver_pp_2m", key, guided, sde, (16, 28, 28, 1), 20)
    """
    who = "classifier_guided_score"
    scale = _check_scale(scale, who)
    if _is_static_zero(scale):
        return score_fn

    def guided_score_fn(x: Array, t: Array) -> Array:
        w = _scale_like(scale, x, who)
        return score_fn(x, t) + w * classifier_log_prob_grad(logits_fn, x, t, labels)

    return guided_score_fn


def classifier_guided_eps(eps_fn: Callable[[Array, Array], Array], logits_fn: LogitsFn, labels: Array, *,
                          schedule: DiscreteSchedule, scale=1.0) -> Callable[[Array, Array], Array]:
    r"""Classifier guidance for an :math:`\varepsilon` model on a DDPM schedule (Dhariwal & Nichol Eq. 14):

    .. math:: \tilde\varepsilon(x_n, n) = \varepsilon(x_n, n) - w\,\sqrt{1-\bar\alpha_n}\,
              \nabla_x \log p_\phi(y \mid x_n, n),

    the guided score of `classifier_guided_score` written as a noise prediction
    (:math:`\varepsilon = -\sigma_n\, s`), for `jgen.samplers.ddpm_sample`, `ddim_sample`
    and `jgen.inverse.repaint_sample`.

    Args:
      eps_fn: ``eps_fn(x [B, ...], n int32 [B]) -> [B, ...]``.
      logits_fn: ``logits_fn(x, n) -> logits [B, K]``, the classifier at step index n.
      labels: integer classes, scalar or [B].
      schedule: the `DiscreteSchedule` the indices n refer to.
      scale: w, as in `classifier_guided_score` (a Python 0 returns `eps_fn` itself).

    Returns:
      ``guided_eps_fn(x, n) -> [B, ...]``.
    """
    who = "classifier_guided_eps"
    scale = _check_scale(scale, who)
    if _is_static_zero(scale):
        return eps_fn

    def guided_eps_fn(x: Array, n: Array) -> Array:
        w = _scale_like(scale, x, who)
        sigma = schedule.marginal(n)[1].astype(x.dtype)
        return eps_fn(x, n) - w * _expand(sigma, x) * classifier_log_prob_grad(logits_fn, x, n, labels)

    return guided_eps_fn


__all__ = [
    "ClassifierFn",
    "LogitsFn",
    "classifier_guided_eps",
    "classifier_guided_score",
    "classifier_log_prob_grad",
    "noisy_classifier_loss",
]
