"""Log-density functions as pure JAX functions.

Every `*_log_prob` takes arrays whose leading axis is the batch axis and returns
per-example log-densities of shape [B], summed over all other axes; the keyword-only
`event_ndims` overrides which trailing axes are summed (see `sum_event`). Parameters
broadcast against `x` in the numpy way.
"""

from jgen.distributions._util import sum_event
from jgen.distributions.bernoulli import bernoulli_logits_log_prob, bernoulli_logits_sample
from jgen.distributions.categorical import categorical_log_prob, categorical_sample
from jgen.distributions.logistic import (
    discretized_logistic_log_prob,
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_sample,
    logistic_log_prob,
)
from jgen.distributions.normal import (
    diag_gaussian_entropy,
    diag_gaussian_kl,
    diag_gaussian_log_prob,
    diag_gaussian_sample,
    standard_normal_log_prob,
)

__all__ = [
    "bernoulli_logits_log_prob",
    "bernoulli_logits_sample",
    "categorical_log_prob",
    "categorical_sample",
    "diag_gaussian_entropy",
    "diag_gaussian_kl",
    "diag_gaussian_log_prob",
    "diag_gaussian_sample",
    "discretized_logistic_log_prob",
    "discretized_logistic_mixture_log_prob",
    "discretized_logistic_mixture_sample",
    "logistic_log_prob",
    "standard_normal_log_prob",
    "sum_event",
]
