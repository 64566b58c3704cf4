"""Evaluation metrics: likelihood summaries (nats, bits/dim), annealed importance
sampling, and (later) sample-quality metrics."""

from jgen.metrics.ais import ais_log_marginal, geometric_schedule, sigmoid_schedule
from jgen.metrics.likelihood import (
    DEQUANTIZING_PREPROCESSES,
    bits_per_dim,
    dequantization_offset,
    summarize_nll,
)
from jgen.metrics.mmd import (
    gaussian_kernel_matrix,
    median_heuristic_bandwidth,
    mmd2_unbiased,
    mmd_permutation_test,
    squared_distances,
)

__all__ = [
    "DEQUANTIZING_PREPROCESSES",
    "ais_log_marginal",
    "bits_per_dim",
    "dequantization_offset",
    "gaussian_kernel_matrix",
    "geometric_schedule",
    "median_heuristic_bandwidth",
    "mmd2_unbiased",
    "mmd_permutation_test",
    "sigmoid_schedule",
    "squared_distances",
    "summarize_nll",
]
