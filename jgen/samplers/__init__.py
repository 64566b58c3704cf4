"""Samplers: MCMC over batches of chains (ULA, MALA, HMC, Gibbs, rejection, SGLD,
replay buffers), autoregressive ancestral sampling with filtering and KV caches, and the
diffusion / score-based samplers. Each is a pure function of an explicit key whose whole
loop is one compiled program; see each module for its algorithm and references."""

from jgen.samplers.ancestral import ancestral_sample
from jgen.samplers.annealed_langevin import (
    AnnealedLangevinInfo,
    annealed_langevin_sample,
)
from jgen.samplers.categorical import (
    apply_temperature,
    sample_categorical,
    top_k_filter,
    top_p_filter,
)
from jgen.samplers.ddim import DDIMInfo, ddim_sample, ddim_timesteps
from jgen.samplers.ddpm import DDPMInfo, ddpm_sample
from jgen.samplers.diagnostics import effective_sample_size
from jgen.samplers.dpm_solver import (
    DPMSolverInfo,
    dpm_solver_pp_2m_sample,
    dpm_solver_time_steps,
)
from jgen.samplers.edm import EDMSampleInfo, denoiser_from_score, edm_sample
from jgen.samplers.gibbs import (
    GibbsState,
    gibbs_init,
    gibbs_run,
    gibbs_sample,
    gibbs_step,
)
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
from jgen.samplers.kv_cache import sample_transformer
from jgen.samplers.langevin import (
    LangevinInfo,
    LangevinState,
    langevin_init,
    mala_sample,
    mala_step,
    sgld_step,
    ula_sample,
    ula_step,
)
from jgen.samplers.ode import (
    ODESampleInfo,
    probability_flow_sample,
    probability_flow_velocity,
)
from jgen.samplers.pc import (
    PCInfo,
    euler_maruyama_predictor,
    langevin_corrector,
    pc_sample,
    reverse_diffusion_predictor,
)
from jgen.samplers.rejection import rejection_sample
from jgen.samplers.replay_buffer import (
    ReplayBufferState,
    replay_init,
    replay_sample,
    replay_update,
)

__all__ = [
    "AnnealedLangevinInfo", "DDIMInfo", "DDPMInfo", "DPMSolverInfo", "EDMSampleInfo", "GibbsState", "HMCInfo",
    "HMCState", "LangevinInfo", "LangevinState", "ODESampleInfo", "PCInfo", "ReplayBufferState",
    "StepSizeAdaptState", "ancestral_sample", "annealed_langevin_sample", "apply_temperature", "ddim_sample",
    "ddim_timesteps", "ddpm_sample", "denoiser_from_score", "dpm_solver_pp_2m_sample", "dpm_solver_time_steps",
    "edm_sample", "effective_sample_size", "euler_maruyama_predictor", "gibbs_init", "gibbs_run", "gibbs_sample",
    "gibbs_step", "hmc_init", "hmc_sample", "hmc_step", "langevin_corrector", "langevin_init", "leapfrog",
    "log_prob_and_grad", "mala_sample", "mala_step", "pc_sample", "probability_flow_sample",
    "probability_flow_velocity", "rejection_sample", "replay_init", "replay_sample", "replay_update",
    "reverse_diffusion_predictor", "sample_categorical", "sample_transformer", "sgld_step", "step_size_adapt_init",
    "step_size_adapt_update", "top_k_filter", "top_p_filter", "ula_sample", "ula_step",
]
