r"""Conversions between the quantities a diffusion network can predict.

For a Gaussian perturbation :math:`x_t = \alpha x_0 + \sigma\varepsilon` (any SDE in
`jgen.sde.sde`, any DDPM step, or EDM's :math:`\alpha = 1`), a prediction of any one of

- :math:`\varepsilon` (Ho et al. 2020),
- :math:`x_0` (the denoiser :math:`D(x_t)`; EDM's parametrisation up to scaling),
- :math:`v = \alpha\varepsilon - \sigma x_0` (Salimans & Ho 2022, for :math:`\alpha^2+\sigma^2=1`),
- the score :math:`\nabla\log p_t(x_t) \approx -\varepsilon/\sigma`,

determines the others. Samplers in `jgen.samplers` take whichever function their
algorithm is written in (a score, an epsilon or a denoiser) and these helpers adapt a
network to it. `alpha`, `sigma` are per-example [B] and broadcast against x [B, ...].

References:
  Salimans, T. & Ho, J. (2022). Progressive Distillation for Fast Sampling of Diffusion
    Models. ICLR. https://arxiv.org/abs/2202.00512 (v-prediction, Sec. 4.)
"""

from jgen.sde.sde import _expand
from jgen.typing import Array

PREDICTIONS = ("eps", "x0", "v", "score")


def _check(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"Unknown prediction target {prediction!r}; choose one of {PREDICTIONS}.")


def to_eps(out: Array, x_t: Array, alpha: Array, sigma: Array, prediction: str) -> Array:
    """The epsilon implied by a network output `out` predicting `prediction`."""
    _check(prediction)
    a, s = _expand(alpha, x_t), _expand(sigma, x_t)
    if prediction == "eps":
        return out
    if prediction == "x0":
        return (x_t - a * out) / s
    if prediction == "v":
        # eps = alpha v + sigma x_t when alpha^2 + sigma^2 = 1; in general:
        # x_t = a x0 + s eps, v = a eps - s x0  =>  eps = (a v + s x_t) / (a^2 + s^2)
        return (a * out + s * x_t) / (a * a + s * s)
    return -s * out  # score


def to_x0(out: Array, x_t: Array, alpha: Array, sigma: Array, prediction: str) -> Array:
    """The x0 (denoised) estimate implied by a network output."""
    _check(prediction)
    a, s = _expand(alpha, x_t), _expand(sigma, x_t)
    if prediction == "x0":
        return out
    if prediction == "v":
        return (a * x_t - s * out) / (a * a + s * s)
    eps = to_eps(out, x_t, alpha, sigma, prediction)
    return (x_t - s * eps) / a


def to_score(out: Array, x_t: Array, alpha: Array, sigma: Array, prediction: str) -> Array:
    """The score implied by a network output: -eps / sigma."""
    if prediction == "score":
        _check(prediction)
        return out
    return -to_eps(out, x_t, alpha, sigma, prediction) / _expand(sigma, x_t)


def target(x0: Array, eps: Array, alpha: Array, sigma: Array, prediction: str) -> Array:
    """The regression target for a network predicting `prediction` (for the "score"
    target this is the conditional score -eps/sigma)."""
    _check(prediction)
    a, s = _expand(alpha, x0), _expand(sigma, x0)
    return {"eps": lambda: eps, "x0": lambda: x0, "v": lambda: a * eps - s * x0,
            "score": lambda: -eps / s}[prediction]()
