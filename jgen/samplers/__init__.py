"""MCMC samplers as pure init/step functions over batches of chains, and their diagnostics."""

from jgen.samplers.diagnostics import effective_sample_size
from jgen.samplers.hmc import (
    HMCInfo,
    HMCState,
    StepSizeAdaptState,
    hmc_init,
    hmc_sample,
    hmc_step,
    leapfrog,
    log_prob_and_grad,
    step_size_adapt_init,
    step_size_adapt_update,
)

__all__ = [
    "HMCInfo",
    "HMCState",
    "StepSizeAdaptState",
    "effective_sample_size",
    "hmc_init",
    "hmc_sample",
    "hmc_step",
    "leapfrog",
    "log_prob_and_grad",
    "step_size_adapt_init",
    "step_size_adapt_update",
]
