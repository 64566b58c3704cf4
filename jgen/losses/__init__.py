"""Training objectives as loss factories: `make_*_loss(...) -> loss_fn(params, key, batch)`."""

from jgen.losses.elbo import KL_ESTIMATORS, elbo_terms, linear_kl_warmup, make_elbo_loss, masked_mean
from jgen.losses.iwae import iwae_bound, iwae_log_weights, make_iwae_loss

__all__ = ["KL_ESTIMATORS", "elbo_terms", "linear_kl_warmup", "iwae_bound", "iwae_log_weights", "make_elbo_loss", "make_iwae_loss", "masked_mean"]
