"""Evaluation metrics: likelihood summaries (nats, bits/dim), annealed importance
sampling, and (later) sample-quality metrics."""

from jgen.metrics.ais import ais_log_marginal, geometric_schedule, sigmoid_schedule
from jgen.metrics.likelihood import DEQUANTIZING_PREPROCESSES, bits_per_dim, dequantization_offset, summarize_nll

__all__ = ["DEQUANTIZING_PREPROCESSES", "ais_log_marginal", "bits_per_dim", "dequantization_offset", "geometric_schedule", "sigmoid_schedule", "summarize_nll"]
