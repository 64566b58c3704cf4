"""Energy-based models: the Bernoulli-Bernoulli RBM as pure functions over a params dict."""

from jgen.models.ebm.rbm import (
    binary_states,
    energy,
    free_energy,
    hidden_probs,
    log_likelihood_exact,
    log_partition_exact,
    rbm_init,
    visible_probs,
)

__all__ = [
    "binary_states",
    "energy",
    "free_energy",
    "hidden_probs",
    "log_likelihood_exact",
    "log_partition_exact",
    "rbm_init",
    "visible_probs",
]
