"""Training objectives as loss factories: `make_*_loss(...) -> loss_fn(params, key, batch)`."""

from jgen.losses.elbo import elbo_terms, make_elbo_loss, masked_mean
from jgen.losses.iwae import iwae_bound, iwae_log_weights, make_iwae_loss

__all__ = ["elbo_terms", "iwae_bound", "iwae_log_weights", "make_elbo_loss", "make_iwae_loss", "masked_mean"]
