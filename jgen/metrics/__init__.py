"""Evaluation metrics: likelihood summaries (nats, bits/dim) and, later, sample-quality metrics."""

from jgen.metrics.likelihood import bits_per_dim, summarize_nll

__all__ = ["bits_per_dim", "summarize_nll"]
