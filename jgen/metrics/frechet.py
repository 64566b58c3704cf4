r"""The Fréchet distance between Gaussians fitted to two sets of features: the formula
behind the Fréchet Inception Distance (FID), with a numerically careful matrix square
root, and the feature statistics it is computed from.

For Gaussians :math:`\mathcal N(\mu_1, \Sigma_1)` and :math:`\mathcal N(\mu_2,
\Sigma_2)` the squared 2-Wasserstein (Fréchet) distance is

.. math::
    d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2
          - 2 (\Sigma_1 \Sigma_2)^{1/2}\big).

FID is this distance between the mean and covariance of Inception-v3 pool features of
real and generated images (Heusel et al. 2017); any feature extractor can be used
here. This module only sees feature arrays; extracting features is the caller's job.

**Numerics.** :math:`\Sigma_1 \Sigma_2` is not symmetric, and a general matrix square
root of it (the reference implementation's ``scipy.linalg.sqrtm``) returns complex or
NaN entries when the covariances are near singular, as they are whenever there are
fewer samples than feature dimensions. Here only the trace is needed, and

.. math::
    \operatorname{tr}(\Sigma_1 \Sigma_2)^{1/2}
      = \operatorname{tr}\big(\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}\big)^{1/2}
      = \sum_i \sqrt{\lambda_i}, \quad
      \lambda_i = \operatorname{eig}\big(\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}\big),

because :math:`XY` and :math:`YX` have the same eigenvalues (take :math:`X =
\Sigma_1^{1/2}`, :math:`Y = \Sigma_1^{1/2}\Sigma_2`), and the right-hand matrix is
symmetric positive semi-definite, so two symmetric eigendecompositions (``eigh``)
suffice. Eigenvalues made slightly negative by round-off are clipped to 0. All of
this runs in float64 NumPy on the host: the matrices are D x D (D = 2048 for
Inception), computed once per evaluation, not inside a training step.

**Covariance convention.** `feature_statistics` uses the unbiased covariance (divisor
N - 1, ``np.cov``'s default), as the reference TTUR implementation does
(``np.cov(act, rowvar=False)``); `jgen.metrics.streaming.moments_finalize` matches it.

References:
  Heusel, M., Ramsauer, H., Unterthiner, T., Nessler, B. & Hochreiter, S. (2017).
    GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium.
    NeurIPS (Section 4 and Appendix: the FID). https://arxiv.org/abs/1706.08500
    Reference code: https://github.com/bioinf-jku/TTUR (``fid.py``).
  Dowson, D. C. & Landau, B. V. (1982). The Fréchet distance between multivariate
    normal distributions. J. Multivariate Anal. 12(3), 450-455 (the closed form).
"""

from typing import Any

import numpy as np

# Rows converted to float64 at a time in `feature_statistics` (bounds host memory).
_CHUNK_ROWS = 4096


def _as_float64(fn: str, name: str, a: Any) -> np.ndarray:
    """A host float64 copy of a real-valued array (JAX or NumPy), or a clear error."""
    arr = np.asarray(a)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(
            f"{fn}: {name} must be a real-valued array; received dtype {arr.dtype} "
            f"(shape {arr.shape})."
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{fn}: {name} contains NaN or infinite values (shape {arr.shape}); check the "
            "feature extractor's output before computing statistics."
        )
    return arr


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix via eigh,
    with round-off negative eigenvalues clipped to 0."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))[None, :]) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    r""":math:`\operatorname{tr}(\Sigma_1 \Sigma_2)^{1/2}` for symmetric PSD float64 matrices.

    Computed as :math:`\sum_i \sqrt{\max(\lambda_i, 0)}` over the eigenvalues of the
    symmetric matrix :math:`\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}` (same spectrum as
    :math:`\Sigma_1 \Sigma_2`), so it is real and finite also for singular inputs.

    Args:
      sigma1: [D, D] symmetric PSD, float64.
      sigma2: [D, D] symmetric PSD, float64.

    Returns:
      A non-negative Python float.
    """
    a = _sqrt_psd(sigma1)
    m = a @ sigma2 @ a
    m = 0.5 * (m + m.T)  # symmetric in exact arithmetic; remove round-off asymmetry
    w = np.linalg.eigvalsh(m)
    return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def _check_moments(fn: str, mu1, sigma1, mu2, sigma2):
    mu1, mu2 = _as_float64(fn, "mu1", mu1), _as_float64(fn, "mu2", mu2)
    sigma1, sigma2 = _as_float64(fn, "sigma1", sigma1), _as_float64(fn, "sigma2", sigma2)
    for name, mu in (("mu1", mu1), ("mu2", mu2)):
        if mu.ndim != 1:
            raise ValueError(
                f"{fn}: {name} must be a mean vector of shape [D]; received shape "
                f"{mu.shape}. Compute it with feature_statistics(features)."
            )
    for name, mu_name, mu, s in (("sigma1", "mu1", mu1, sigma1), ("sigma2", "mu2", mu2, sigma2)):
        if s.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(
                f"{fn}: {name} must be a [D, D] covariance matching {mu_name} of shape "
                f"{mu.shape}; received shape {s.shape}. (Passing the features [N, D] "
                "instead of their covariance is a common slip; use feature_statistics.)"
            )
        scale = max(float(np.max(np.abs(s))), np.finfo(np.float64).tiny)
        if float(np.max(np.abs(s - s.T))) > 1e-3 * scale:
            raise ValueError(
                f"{fn}: {name} is not symmetric (max |S - S^T| = "
                f"{float(np.max(np.abs(s - s.T))):.3g}, max |S| = {scale:.3g}); it must be a "
                "covariance matrix."
            )
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"{fn}: the two feature sets have different dimensions: mu1 has shape "
            f"{mu1.shape} and mu2 has shape {mu2.shape}. Use the same feature extractor "
            "(and layer) for both sets."
        )
    return mu1, 0.5 * (sigma1 + sigma1.T), mu2, 0.5 * (sigma2 + sigma2.T)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    r"""Fréchet distance between :math:`\mathcal N(\mu_1, \Sigma_1)` and :math:`\mathcal N(\mu_2, \Sigma_2)`.

    .. math::
        d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
              - 2 \operatorname{tr}\big(\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}\big)^{1/2}

    (Dowson & Landau 1982; the FID of Heusel et al. 2017 when the moments are those of
    Inception features). The trace of the square root is computed from symmetric
    eigendecompositions in float64 (see the module docstring), so rank-deficient
    covariances (fewer samples than dimensions) give a finite value. Values below 0
    that arise from round-off (identical inputs) are returned as 0.

    Args:
      mu1: [D] mean of the first feature set (JAX or NumPy, any float dtype).
      sigma1: [D, D] covariance of the first set (symmetric PSD).
      mu2: [D] mean of the second set.
      sigma2: [D, D] covariance of the second set.

    Returns:
      The squared Fréchet distance, a non-negative Python float (this is what FID
      reports; it is not square-rooted).

    Raises:
      ValueError: for shapes that are not [D], [D, D] with a common D, non-symmetric
        covariances, or non-finite values.
      TypeError: for non-real dtypes.

    Example:
      >>> mu1, s1 = feature_statistics(real_features)   # [N, 2048] each
      >>> mu2, s2 = feature_statistics(fake_features)
      >>> fid = frechet_distance(mu1, s1, mu2, s2)
    """
    mu1, sigma1, mu2, sigma2 = _check_moments("frechet_distance", mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    value = (
        float(diff @ diff)
        + float(np.trace(sigma1))
        + float(np.trace(sigma2))
        - 2.0 * trace_sqrt_product(sigma1, sigma2)
    )
    return max(value, 0.0)


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and unbiased covariance of a feature set [N, D], in float64.

    .. math::
        \mu = \frac1N \sum_n f_n, \qquad
        \Sigma = \frac{1}{N - 1} \sum_n (f_n - \mu)(f_n - \mu)^\top,

    the convention of ``np.cov`` and of the reference FID code. Two passes (mean first,
    then centred products), accumulated in float64 over chunks of rows, so large
    offsets do not cancel. For features that arrive in batches use
    `jgen.metrics.streaming` instead (same convention).

    Args:
      features: [N, D] real array, N >= 2 (JAX or NumPy).

    Returns:
      `(mu, sigma)`: float64 NumPy arrays [D] and [D, D].

    Raises:
      ValueError: if features is not 2-D, has fewer than 2 rows, or is not finite.
    """
    fn = "feature_statistics"
    f = np.asarray(features)
    if f.ndim != 2:
        raise ValueError(
            f"{fn}: features must have shape [num_samples, feature_dim]; received shape "
            f"{f.shape}. Flatten per-example features first, e.g. f.reshape(len(f), -1)."
        )
    n, d = f.shape
    if n < 2:
        raise ValueError(
            f"{fn}: the unbiased covariance needs at least 2 samples; received {n} "
            f"(features of shape {f.shape})."
        )
    total = np.zeros(d, np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        total += _as_float64(fn, "features", f[start:start + _CHUNK_ROWS]).sum(axis=0)
    mu = total / n
    m2 = np.zeros((d, d), np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        c = f[start:start + _CHUNK_ROWS].astype(np.float64) - mu[None, :]
        m2 += c.T @ c
    return mu, m2 / (n - 1)


def fid_from_features(features1: Any, features2: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N1, D], [N2, D].

    `frechet_distance(*feature_statistics(features1), *feature_statistics(features2))`.
    It is invariant to the order of the rows. FID is biased upwards for finite N (the
    bias shrinks roughly like 1/N), so only compare values computed with the same N.

    Args:
      features1: [N1, D] real array, N1 >= 2.
      features2: [N2, D] real array, N2 >= 2, same D.

    Returns:
      A non-negative Python float.
    """
    f1, f2 = np.asarray(features1), np.asarray(features2)
    if f1.ndim == 2 and f2.ndim == 2 and f1.shape[1] != f2.shape[1]:
        raise ValueError(
            "fid_from_features: the two feature sets have different dimensions: "
            f"features1 has shape {f1.shape} and features2 has shape {f2.shape}."
        )
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
