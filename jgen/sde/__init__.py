"""Noise schedules and SDEs for score-based and diffusion models: marginals, priors,
discretisations, and conversions between the quantities a network can predict."""

from jgen.sde.exact import GaussianMixture, gaussian_mixture, ring_mixture
from jgen.sde.parametrization import PREDICTIONS, target, to_eps, to_score, to_x0
from jgen.sde.schedules import (
    DiscreteSchedule,
    cosine_betas,
    discrete_schedule,
    geometric_sigmas,
    get_schedule,
    karras_sigmas,
    linear_betas,
)
from jgen.sde.sde import SDES, VESDE, VPSDE, LinearSDE, SubVPSDE, get_sde

__all__ = [
    "PREDICTIONS",
    "SDES",
    "VESDE",
    "VPSDE",
    "DiscreteSchedule",
    "GaussianMixture",
    "LinearSDE",
    "SubVPSDE",
    "cosine_betas",
    "discrete_schedule",
    "gaussian_mixture",
    "geometric_sigmas",
    "get_schedule",
    "get_sde",
    "karras_sigmas",
    "linear_betas",
    "ring_mixture",
    "target",
    "to_eps",
    "to_score",
    "to_x0",
]
