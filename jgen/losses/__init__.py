"""Training objectives as pure functions and loss factories
(`make_*_loss(...) -> loss_fn(params, key, batch)`), one family of objectives per module."""

from jgen.losses.autoregressive import (
    bernoulli_autoregressive_log_prob,
    categorical_autoregressive_log_prob,
    make_bernoulli_autoregressive_loss,
)
from jgen.losses.diffusion import (
    classifier_free_guidance,
    ddpm_loss,
    ddpm_vlb_terms,
    drop_labels,
    edm_loss,
    edm_precondition,
    edm_scalings,
    sde_loss,
)
from jgen.losses.ebm import PCDState, cd_loss, nce_loss, pcd_init, pcd_step
from jgen.losses.ebm_cd import ebm_cd_loss, langevin_negatives
from jgen.losses.elbo import (
    KL_ESTIMATORS,
    elbo_terms,
    linear_kl_warmup,
    make_elbo_loss,
    masked_mean,
)
from jgen.losses.fgan import (
    FDivergence,
    fgan_d_loss,
    fgan_g_loss,
    get_fdivergence,
    variational_bound,
)
from jgen.losses.flow import (
    make_flow_nll_loss,
    make_variational_dequantization_nll_loss,
    make_variational_dequantizer,
)
from jgen.losses.gan import (
    GANLoss,
    clip_weights,
    get_gan_loss,
    gradient_penalty,
    r1_penalty,
)
from jgen.losses.iwae import iwae_bound, iwae_log_weights, make_iwae_loss
from jgen.losses.likelihoods import LIKELIHOODS, Likelihood, get_likelihood
from jgen.losses.score_matching import (
    denoising_score_matching,
    exact_score_matching,
    hutchinson_score_matching,
    sliced_score_matching,
)
from jgen.losses.vq import (
    CODEBOOK_PATH,
    EMACodebookState,
    codebook_perplexity,
    ema_codebook_init,
    ema_codebook_update,
    get_codebook,
    make_vq_codes_fn,
    make_vq_ema_step,
    make_vqvae_loss,
    nearest_code,
    set_codebook,
    vector_quantize,
)

__all__ = [
    "CODEBOOK_PATH",
    "KL_ESTIMATORS",
    "LIKELIHOODS",
    "EMACodebookState",
    "FDivergence",
    "GANLoss",
    "Likelihood",
    "PCDState",
    "bernoulli_autoregressive_log_prob",
    "categorical_autoregressive_log_prob",
    "cd_loss",
    "classifier_free_guidance",
    "clip_weights",
    "codebook_perplexity",
    "ddpm_loss",
    "ddpm_vlb_terms",
    "denoising_score_matching",
    "drop_labels",
    "ebm_cd_loss",
    "edm_loss",
    "edm_precondition",
    "edm_scalings",
    "elbo_terms",
    "ema_codebook_init",
    "ema_codebook_update",
    "exact_score_matching",
    "fgan_d_loss",
    "fgan_g_loss",
    "get_codebook",
    "get_fdivergence",
    "get_gan_loss",
    "get_likelihood",
    "gradient_penalty",
    "hutchinson_score_matching",
    "iwae_bound",
    "iwae_log_weights",
    "langevin_negatives",
    "linear_kl_warmup",
    "make_bernoulli_autoregressive_loss",
    "make_elbo_loss",
    "make_flow_nll_loss",
    "make_iwae_loss",
    "make_variational_dequantization_nll_loss",
    "make_variational_dequantizer",
    "make_vq_codes_fn",
    "make_vq_ema_step",
    "make_vqvae_loss",
    "masked_mean",
    "nce_loss",
    "nearest_code",
    "pcd_init",
    "pcd_step",
    "r1_penalty",
    "sde_loss",
    "set_codebook",
    "sliced_score_matching",
    "variational_bound",
    "vector_quantize",
]
