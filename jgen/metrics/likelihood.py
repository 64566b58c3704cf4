"""Likelihood reporting: nats per example, bits per dimension, and a labelled
summary (estimator, mean, standard error) used by `jgen eval` for every family."""

import math

import numpy as np


# Preprocessings that turn 8-bit pixels into a continuous density by uniform
# dequantization, y = (x + u) / 256, and the log of their bin volume per dimension:
# log P(x) >= E_u log p(y) - D log 256, so a density NLL becomes the discrete-data
# bound by adding D log 256.
DEQUANTIZING_PREPROCESSES = {"dequantize_uniform": math.log(256.0)}


def dequantization_offset(preprocess: str, num_dims: int) -> float:
    """What to add to a density NLL (nats) on data preprocessed by `preprocess` to
    get the discrete-data NLL bound: D log 256 for uniform dequantization, else 0."""
    return DEQUANTIZING_PREPROCESSES.get(preprocess, 0.0) * num_dims


def dequantization_label(estimator: str, preprocess: str) -> str:
    """How an NLL estimate treats the 8-bit pixels, for labelling `jgen eval` output:

    - "variational": Flow++'s variational dequantization bound (estimator name says so);
    - "uniform": y = (x + u) / 256, D log 256 added, a bound on the discrete NLL
      (uniformly dequantized data, a flow's "exact (uniform dequantization)", or a
      diffusion model's "ODE" likelihood, which dequantizes internally);
    - "none (binary data)": binarized data, a discrete likelihood;
    - "none": no dequantization (a discrete likelihood of the pixels, e.g. a
      256-way softmax, a discretized logistic mixture or DDPM's discretized decoder;
      or a continuous density of [0, 1] pixels such as a Gaussian VAE decoder, which
      is not a discrete-data NLL).
    """
    name = estimator.lower()
    if "variational dequantization" in name:
        return "variational"
    if "uniform dequantization" in name or preprocess in DEQUANTIZING_PREPROCESSES or estimator == "ODE":
        return "uniform"
    if preprocess.startswith("binarize"):
        return "none (binary data)"
    return "none"


def bits_per_dim(nll_nats, num_dims: int):
    """Converts an NLL in nats per example to bits per dimension: nll / (D ln 2)."""
    return nll_nats / (num_dims * math.log(2.0))


def summarize_nll(per_example_nll_nats, *, estimator: str, num_dims: int, stochastic: bool = True,
                  dequantization: str | None = None) -> dict:
    """Mean NLL with its standard error over examples, in nats and bits/dim.

    Args:
      per_example_nll_nats: array [N] of per-example NLL estimates (nats).
      estimator: the estimator's name, e.g. "exact", "ELBO", "IWAE-5000".
      num_dims: the number of data dimensions (for bits/dim).
      stochastic: whether the per-example estimates are random (then the
        standard error also covers the estimator's own noise, since it is the
        spread of independent per-example estimates).
      dequantization: if given, added as "dequantization" (see
        `dequantization_label`; `jgen eval` labels every entry).

    Returns:
      {"estimator", "stochastic", "nats", "nats_stderr", "bits_per_dim",
      "bits_per_dim_stderr", "num_examples"} (+ "dequantization").
    """
    v = np.asarray(per_example_nll_nats, dtype=np.float64)
    n = v.size
    mean = float(v.mean())
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    out = {
        "estimator": estimator,
        "stochastic": stochastic,
        "nats": mean,
        "nats_stderr": se,
        "bits_per_dim": float(bits_per_dim(mean, num_dims)),
        "bits_per_dim_stderr": float(bits_per_dim(se, num_dims)),
        "num_examples": int(n),
    }
    if dequantization is not None:
        out["dequantization"] = dequantization
    return out
