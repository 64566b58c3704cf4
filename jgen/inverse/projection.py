r"""Posterior sampling by projection onto the measurements: replacement for any linear A.

`jgen.inverse.replacement_sample` overwrites the observed pixels of a mask. For a general
operator the same idea is a data-consistency step after every predictor-corrector step,

.. math::
    x \leftarrow x + \lambda\, B\big(y_t - A x\big), \qquad
    y_t = \alpha(t)\,y + \sigma(t)\,A\varepsilon,\quad \varepsilon \sim \mathcal N(0, I),

where :math:`y_t` is a draw of :math:`A x_t` given :math:`A x_0 = y` under the forward
process, and B is a (pseudo-)inverse of A:

* :math:`B = A^+` (the operator's ``pinv``) with :math:`\lambda = 1` is the orthogonal
  projection onto :math:`\{x : Ax = y_t\}` (the range-null-space split of DDNM, Wang et
  al. 2023, applied to :math:`x_t`): for a mask it is exactly `replacement_sample`'s
  replacement; for average pooling it replaces the low-pass content of x by that of
  :math:`y_t`, as ILVR does (Choi et al. 2021); for RGB-to-gray it replaces the luma;
* for sparse-view CT, with :math:`B` filtered back-projection over the measured angles,
  the step is Song et al. (2022)'s sinogram-domain consistency: the full-view sinogram
  of x is moved towards :math:`y_t` at the measured angles by the fraction
  :math:`\lambda` and mapped back to the image. (Their update inverts the whole modified
  sinogram; written as a correction, only the residual at the measured angles goes
  through the approximate inverse, so x is not blurred where it already agrees with y.)

The last step (with `denoise`) is Tweedie's :math:`\hat x_0` at :math:`t_{min}`
followed by one more consistency step with y itself. Like `replacement_sample` this
treats y as noiseless (for noisy measurements lower :math:`\lambda`, or use `dps_sample`),
and it is exact only in the sense of the imputation it generalises: the unknown part is
conditioned on a noised copy of y.

References:
  Song, Y., Shen, L., Xing, L. & Ermon, S. (2022). Solving Inverse Problems in Medical
    Imaging with Score-Based Generative Models. ICLR. https://arxiv.org/abs/2111.08005
    (Sec. 3-4, the consistency step with weight lambda; sparse-view CT.)
  Wang, Y., Yu, J. & Zhang, J. (2023). Zero-Shot Image Restoration Using Denoising
    Diffusion Null-Space Model. ICLR. https://arxiv.org/abs/2212.00490
  Choi, J., Kim, S., Jeong, Y., Gwon, Y. & Yoon, S. (2021). ILVR: Conditioning Method
    for Denoising Diffusion Probabilistic Models. ICCV. https://arxiv.org/abs/2108.02938
  Song, Y., Sohl-Dickstein, J., Kingma, D. P., Kumar, A., Ermon, S. & Poole, B. (2021).
    Score-Based Generative Modeling through Stochastic Differential Equations. ICLR.
    https://arxiv.org/abs/2011.13456 (Appendix I.2, imputation.)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jgen.inverse.operators import LinearOperator
from jgen.inverse.posterior import (
    PosteriorInfo,
    ScoreFn,
    _check_int,
    _check_operator,
    _check_positive,
    _check_shape,
    _check_y,
    _checked,
    consistent_pc_loop,
)
from jgen.sde.sde import LinearSDE, _expand
from jgen.typing import Array, PRNGKey

# inverse(r [B, *A.out_shape]) -> [B, *A.in_shape], an (approximate) inverse of A
InverseFn = Callable[[Array], Array]


def projection_sample(
    key: PRNGKey,
    score_fn: ScoreFn,
    A: LinearOperator,
    y: Array,
    shape: tuple[int, ...],
    *,
    sde: LinearSDE,
    num_steps: int,
    inverse: InverseFn | None = None,
    weight: float = 1.0,
    snr: float = 0.16,
    corrector: bool = True,
    corrector_steps: int = 1,
    denoise: bool = True,
    dtype=jnp.float32,
) -> tuple[Array, PosteriorInfo]:
    r"""Predictor-corrector sampling with a data-consistency step (module docstring).

    The grid, predictor (reverse diffusion) and corrector (Langevin) are those of
    `replacement_sample`; after each predictor and each corrector step at time t,
    :math:`x \leftarrow x + \lambda B(\alpha(t) y + \sigma(t) A\varepsilon - Ax)`.

    Args:
      key: PRNG key.
      score_fn: ``score_fn(x [B, ...], t [B]) -> [B, ...]``, the prior's score.
      A: the measurement operator, ``A.in_shape == shape[1:]``.
      y: noiseless measurements, ``A.out_shape`` (shared) or ``(B, *A.out_shape)``.
      shape: ``(B, *A.in_shape)``, static.
      sde: the prior's forward `LinearSDE`.
      num_steps: K, grid steps (static int >= 1).
      inverse: B, ``[B, *A.out_shape] -> [B, *A.in_shape]``; default ``A.pinv`` (then,
        with weight 1, an exact projection). For CT pass a filtered back-projection.
      weight: :math:`\lambda > 0` (1 = full replacement).
      snr, corrector, corrector_steps, denoise, dtype: as in `replacement_sample`.

    Returns:
      ``(x, PosteriorInfo(nfe))``, nfe = K (1 + M) + 1 as in `replacement_sample`.

    Raises:
      ValueError: A without ``pinv`` and no `inverse`, a shape or y that does not match
        A, a bad num_steps, corrector_steps, snr or weight.

    Example:
      >>> A = downsampling(4, (64, 64, 1))
      >>> x, info = jax.jit(lambda k: projection_sample(k, score_fn, A, y, (8, 64, 64, 1),
      ...                                               sde=VPSDE(), num_steps=200))(key)
    """
    fn = "projection_sample"
    A = _check_operator(fn, A)
    shape = _check_shape(fn, shape, A.in_shape, "A.in_shape")
    y = _check_y(fn, y, shape[0], A.out_shape, "A.out_shape", dtype)
    num_steps = _check_int(fn, "num_steps", num_steps)
    corrector_steps = _check_int(fn, "corrector_steps", corrector_steps)
    snr = _check_positive(fn, "snr", snr)
    weight = _check_positive(fn, "weight", weight)
    if inverse is None:
        if A.pinv is None:
            raise ValueError(f"{fn}: operator {A.name!r} has no pseudo-inverse (pinv=None); pass inverse=, e.g. "
                             f"lambda r: least_squares(A, r, num_iters=20) or, for CT, a filtered "
                             f"back-projection.")
        inverse = A.pinv
    score = _checked(fn, "score_fn", score_fn, shape)

    def consistent(x, target):
        return x + weight * inverse(target - A.forward(x))

    def noised_y(k, t):  # a draw of A x_t given A x_0 = y
        alpha, sigma = sde.marginal(t)
        eps = jax.random.normal(k, shape, dtype)
        return _expand(alpha, y) * y + _expand(sigma, y) * A.forward(eps)

    return consistent_pc_loop(key, score, shape, y, consistent, noised_y, sde=sde, num_steps=num_steps, snr=snr,
                              corrector=corrector, corrector_steps=corrector_steps, denoise=denoise, dtype=dtype)


__all__ = ["InverseFn", "projection_sample"]
