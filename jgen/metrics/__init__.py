"""Evaluation metrics: likelihood summaries (nats, bits/dim), annealed importance
sampling, and (later) sample-quality metrics."""

from jgen.metrics.ais import ais_log_marginal, geometric_schedule, sigmoid_schedule
from jgen.metrics.likelihood import bits_per_dim, summarize_nll

__all__ = ["ais_log_marginal", "bits_per_dim", "geometric_schedule", "sigmoid_schedule", "summarize_nll"]
