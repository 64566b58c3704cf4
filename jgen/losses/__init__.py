"""Training objectives as loss factories: `make_*_loss(...) -> loss_fn(params, key, batch)`."""

from jgen.losses.elbo import KL_ESTIMATORS, elbo_terms, linear_kl_warmup, make_elbo_loss, masked_mean
from jgen.losses.iwae import iwae_bound, iwae_log_weights, make_iwae_loss
from jgen.losses.likelihoods import LIKELIHOODS, Likelihood, get_likelihood
from jgen.losses.vq import (CODEBOOK_PATH, EMACodebookState, codebook_perplexity, ema_codebook_init,
                            ema_codebook_update, get_codebook, make_vq_codes_fn, make_vq_ema_step,
                            make_vqvae_loss, nearest_code, set_codebook, vector_quantize)

__all__ = [
    "CODEBOOK_PATH", "EMACodebookState", "KL_ESTIMATORS", "LIKELIHOODS", "Likelihood", "codebook_perplexity",
    "elbo_terms", "ema_codebook_init", "ema_codebook_update", "get_codebook", "get_likelihood", "iwae_bound",
    "iwae_log_weights", "linear_kl_warmup", "make_elbo_loss", "make_iwae_loss", "make_vq_codes_fn",
    "make_vq_ema_step", "make_vqvae_loss", "masked_mean", "nearest_code", "set_codebook", "vector_quantize",
]
