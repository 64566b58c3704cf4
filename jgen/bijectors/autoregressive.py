r"""Autoregressive bijectors on vectors [B, D]: MAF and IAF, affine or with a
rational-quadratic spline per dimension.

Each dimension is transformed elementwise, :math:`x_i = \tau(z_i; \theta_i)`, with
parameters :math:`\theta_i` computed by an autoregressive *conditioner* (e.g. a MADE,
`jgen.models.autoregressive.MADE`) from the dimensions before i in some ordering. The
Jacobian is triangular in that ordering, so the log-det is
:math:`\sum_i \log|\partial \tau / \partial z_i|`. The two families differ in which
side of the map the conditioner reads:

========  ============================  ==================  ====================
class     parameters                    forward (sampling)  inverse (density)
========  ============================  ==================  ====================
MAF       :math:`\theta(x_{<i})` (data)  D passes            **1 pass**
IAF       :math:`\theta(z_{<i})` (base)  **1 pass**          D passes
========  ============================  ==================  ====================

(`SplineMAF` / `SplineIAF` likewise.) MAF is the density estimator (cheap
`flow_log_prob`, slow sampling); IAF is the sampler / variational posterior (cheap
`flow_sample_and_log_prob`, slow density of external points). Both directions are
exact for both.

The slow direction solves :math:`u = T_{\theta(u)}(w)` for the conditioner-side
variable u by the fixed-point iteration :math:`u^{(0)} = 0`,
:math:`u^{(k+1)} = T_{\theta(u^{(k)})}(w)`: after k steps the first k positions of the
ordering are exact (position k only needs positions < k), so D steps give the exact
answer, whatever the ordering, without knowing it. The steps run in one
`lax.fori_loop`, so the conditioner is traced once, not D times.

The conditioner is any function `x [B, D] -> params [B, D, P]` that is autoregressive
(output i depends only on inputs before i in a fixed ordering); it is static pytree
metadata (hashed by identity), e.g. `jgen.models.autoregressive.made_conditioner(made,
params, masks)`. A conditional flow closes it over a context. Build the bijector
inside the loss from the params being trained, as for `MaskedCoupling`.

References:
  Papamakarios, G., Pavlakou, T. & Murray, I. (2017). Masked Autoregressive Flow for
    Density Estimation. NeurIPS. https://arxiv.org/abs/1705.07057
  Kingma, D. P., Salimans, T., Jozefowicz, R., Chen, X., Sutskever, I. & Welling, M.
    (2016). Improved Variational Inference with Inverse Autoregressive Flow. NeurIPS.
    https://arxiv.org/abs/1606.04934
  Durkan, C., Bekasov, A., Murray, I. & Papamakarios, G. (2019). Neural Spline
    Flows. NeurIPS, Section 3.3 (autoregressive transforms).
    https://arxiv.org/abs/1906.04032
  Germain, M., Gregor, K., Murray, I. & Larochelle, H. (2015). MADE. ICML.
    https://arxiv.org/abs/1502.03509
"""

from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp

from jgen.bijectors.base import (
    Bijector,
    bijector_dataclass,
    check_input,
    static_field,
    sum_event,
)
from jgen.bijectors.spline import _check_spline_config, _rqs


class _Autoregressive(Bijector):
    """Shared machinery. Subclasses set `_on_data` (True: MAF, parameters read from
    the data side x; False: IAF, from the base side z), `_num_params(P)` and
    `_elementwise(u, params, inverse)`."""

    _on_data: ClassVar[bool]
    event_ndims: ClassVar[int] = 1

    def _check_conditioner(self) -> None:
        if not callable(self.conditioner):
            raise TypeError(
                f"{type(self).__name__}: conditioner must be a function x [B, D] -> params "
                f"[B, D, P]; received {self.conditioner!r} of type "
                f"{type(self.conditioner).__name__}. E.g. made_conditioner(made, params, "
                "masks) from jgen.models.autoregressive."
            )

    def _params(self, u: jax.Array) -> jax.Array:
        params = self.conditioner(u)
        shape = jnp.shape(params)
        if len(shape) != 3 or shape[:2] != u.shape or not self._num_params_ok(shape[2]):
            raise ValueError(
                f"{type(self).__name__}: the conditioner must map x {u.shape} to params "
                f"[B, D, P] = ({u.shape[0]}, {u.shape[1]}, P) with {self._params_hint}; "
                f"received shape {shape}."
            )
        return jnp.asarray(params, u.dtype)

    def _one_pass(self, v: jax.Array, inverse: bool):
        """The fast direction: the input v is the conditioner's own side."""
        return self._elementwise(v, self._params(v), inverse)

    def _sequential(self, w: jax.Array, inverse: bool):
        """The slow direction: solve u = T_{theta(u)}(w) in D conditioner passes."""

        def step(_, carry):
            u, _ = carry
            return self._elementwise(w, self._params(u), inverse)

        init = (jnp.zeros_like(w), jnp.zeros(w.shape[:1], w.dtype))
        return jax.lax.fori_loop(0, w.shape[1], step, init)

    def forward_and_log_det(self, x):
        x = check_input(type(self).__name__, "x", x, 1)
        if self._on_data:
            return self._sequential(x, inverse=False)
        return self._one_pass(x, inverse=False)

    def inverse_and_log_det(self, y):
        y = check_input(type(self).__name__, "y", y, 1)
        if self._on_data:
            return self._one_pass(y, inverse=True)
        return self._sequential(y, inverse=True)


# ----------------------------------------------------------------------------- affine

_AFFINE_MATH = r"""
    The elementwise map is affine with a soft-clamped log-scale: from the conditioner's
    `params[..., 0]` = :math:`\mu` and `params[..., 1]` = raw,
    :math:`s = b \tanh(\text{raw} / b)` (:math:`b` = `log_scale_bound`; the identity
    near 0 but bounded in :math:`(-b, b)`, as in `MaskedCoupling`; None: no clamp).
"""


@bijector_dataclass
class _AffineAutoregressive(_Autoregressive):
    conditioner: Callable = static_field()
    log_scale_bound: float | None = static_field(default=3.0)

    _params_hint: ClassVar[str] = "P = 2 (shift, raw log-scale)"

    def __post_init__(self):
        self._check_conditioner()
        if self.log_scale_bound is not None and not self.log_scale_bound > 0:
            raise ValueError(
                f"{type(self).__name__}: log_scale_bound must be a positive float or None; "
                f"received {self.log_scale_bound!r}."
            )

    @staticmethod
    def _num_params_ok(p: int) -> bool:
        return p == 2

    def _elementwise(self, u, params, inverse):
        shift, log_scale = params[..., 0], params[..., 1]
        if self.log_scale_bound is not None:
            b = self.log_scale_bound
            log_scale = b * jnp.tanh(log_scale / b)
        if inverse:
            return (u - shift) * jnp.exp(-log_scale), -sum_event(log_scale)
        return u * jnp.exp(log_scale) + shift, sum_event(log_scale)


@bijector_dataclass
class MAF(_AffineAutoregressive):
    __doc__ = (
        r"""Masked autoregressive flow layer (affine): fast density, sequential sampling.

    Forward (sampling, base z -> data x) and inverse (density):

    .. math::
        x_i = z_i\, e^{s_i(x_{<i})} + \mu_i(x_{<i}), \qquad
        z_i = \big(x_i - \mu_i(x_{<i})\big)\, e^{-s_i(x_{<i})},\qquad
        \log|\det J_f| = \sum_i s_i(x_{<i}),

    with :math:`(\mu, \text{raw})` = `conditioner(x)` and :math:`x_{<i}` the
    dimensions before i in the conditioner's ordering. `inverse_and_log_det` is ONE
    conditioner pass; `forward_and_log_det` is D passes (a `lax.fori_loop`).
    """
        + _AFFINE_MATH
        + r"""
    Args:
      conditioner: autoregressive `x [B, D] -> params [B, D, 2]`; static.
      log_scale_bound: positive float or None (static; default 3.0).

    Raises:
      TypeError: if `conditioner` is not callable.
      ValueError: for a non-positive bound, an input that is not [B, D], or
        conditioner output that is not [B, D, 2].

    Example:
      >>> made = MADE(hidden=(32,), dim=4, num_params=2, zero_init_output=True)
      >>> masks = made_masks(None, 4, (32,))
      >>> params = made.init(key, jnp.zeros((1, 4)), masks)
      >>> flow = MAF(made_conditioner(made, params, masks))
      >>> flow_log_prob(flow, standard_normal_log_prob, x)  # one MADE pass

    References:
      Papamakarios, G., Pavlakou, T. & Murray, I. (2017). Masked Autoregressive Flow
        for Density Estimation. NeurIPS, Section 3. https://arxiv.org/abs/1705.07057
    """
    )

    _on_data: ClassVar[bool] = True


@bijector_dataclass
class IAF(_AffineAutoregressive):
    __doc__ = (
        r"""Inverse autoregressive flow layer (affine): fast sampling, sequential density.

    Forward (sampling, base z -> data x) and inverse (density):

    .. math::
        x_i = z_i\, e^{s_i(z_{<i})} + \mu_i(z_{<i}), \qquad
        z_i = \big(x_i - \mu_i(z_{<i})\big)\, e^{-s_i(z_{<i})},\qquad
        \log|\det J_f| = \sum_i s_i(z_{<i}),

    with :math:`(\mu, \text{raw})` = `conditioner(z)`. `forward_and_log_det` is ONE
    conditioner pass (so `flow_sample_and_log_prob` is cheap: a variational
    posterior); `inverse_and_log_det` is D passes (a `lax.fori_loop`). Kingma et al.
    write the same map as :math:`x = \sigma \odot z + (1 - \sigma) \odot m` with a
    sigmoid gate; this is the shift/log-scale form.
    """
        + _AFFINE_MATH
        + r"""
    Args:
      conditioner: autoregressive `z [B, D] -> params [B, D, 2]`; static.
      log_scale_bound: positive float or None (static; default 3.0).

    Raises:
      TypeError: if `conditioner` is not callable.
      ValueError: for a non-positive bound, an input that is not [B, D], or
        conditioner output that is not [B, D, 2].

    Example:
      >>> flow = IAF(made_conditioner(made, params, masks))
      >>> x, log_q = flow_sample_and_log_prob(flow, sample_fn, standard_normal_log_prob,
      ...                                     key, 64)  # one MADE pass

    References:
      Kingma, D. P. et al. (2016). Improved Variational Inference with Inverse
        Autoregressive Flow. NeurIPS, Section 4. https://arxiv.org/abs/1606.04934
    """
    )

    _on_data: ClassVar[bool] = False


# ----------------------------------------------------------------------------- spline

_SPLINE_MATH = r"""
    The elementwise map is `RationalQuadraticSpline`'s (K bins on
    :math:`[-B, B]`, identity tails; all-zero raw parameters give the identity), with
    per-dimension raw parameters split from the conditioner's last axis of size
    :math:`P = 3K - 1`: widths `params[..., :K]`, heights `params[..., K:2K]`, interior
    derivatives `params[..., 2K:]`.
"""


@bijector_dataclass
class _SplineAutoregressive(_Autoregressive):
    conditioner: Callable = static_field()
    bound: float = static_field(default=3.0)
    min_bin_width: float = static_field(default=1e-3)
    min_bin_height: float = static_field(default=1e-3)
    min_derivative: float = static_field(default=1e-3)

    _params_hint: ClassVar[str] = (
        "P = 3K - 1 for K bins (K widths, K heights, K - 1 derivatives), e.g. 23 for K = 8"
    )

    def __post_init__(self):
        self._check_conditioner()
        _check_spline_config(type(self).__name__, self.bound, self.min_bin_width,
                             self.min_bin_height, self.min_derivative)

    @staticmethod
    def _num_params_ok(p: int) -> bool:
        return p >= 2 and (p + 1) % 3 == 0

    def _elementwise(self, u, params, inverse):
        k = (params.shape[-1] + 1) // 3
        out, log_deriv = _rqs(
            u, params[..., :k], params[..., k : 2 * k], params[..., 2 * k :],
            bound=self.bound, min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height, min_derivative=self.min_derivative,
            inverse=inverse,
        )
        return out, sum_event(log_deriv)


@bijector_dataclass
class SplineMAF(_SplineAutoregressive):
    __doc__ = (
        r"""Autoregressive rational-quadratic spline flow, MAF structure (Neural Spline
    Flows): fast density, sequential sampling.

    .. math::
        x_i = g_{\theta_i(x_{<i})}(z_i),\qquad
        z_i = g^{-1}_{\theta_i(x_{<i})}(x_i),\qquad
        \log|\det J_f| = \sum_i \log g'_{\theta_i(x_{<i})}(z_i),

    with :math:`\theta` = `conditioner(x)`. `inverse_and_log_det` is ONE conditioner
    pass; `forward_and_log_det` is D passes (a `lax.fori_loop`).
    """
        + _SPLINE_MATH
        + r"""
    Args:
      conditioner: autoregressive `x [B, D] -> params [B, D, 3K - 1]`; static.
      bound: B > 0 (static; default 3.0).
      min_bin_width, min_bin_height, min_derivative: static floats in (0, 1).

    Raises:
      TypeError: if `conditioner` is not callable.
      ValueError: for a bad spline configuration, an input that is not [B, D], or
        conditioner output that is not [B, D, 3K - 1].

    Example:
      >>> k = 8
      >>> made = MADE(hidden=(32,), dim=4, num_params=3 * k - 1, zero_init_output=True)
      >>> flow = SplineMAF(made_conditioner(made, params, masks), bound=4.0)

    References:
      Durkan, C., Bekasov, A., Murray, I. & Papamakarios, G. (2019). Neural Spline
        Flows. NeurIPS, Section 3.3. https://arxiv.org/abs/1906.04032
    """
    )

    _on_data: ClassVar[bool] = True


@bijector_dataclass
class SplineIAF(_SplineAutoregressive):
    __doc__ = (
        r"""Autoregressive rational-quadratic spline flow, IAF structure: fast sampling,
    sequential density.

    .. math::
        x_i = g_{\theta_i(z_{<i})}(z_i),\qquad
        z_i = g^{-1}_{\theta_i(z_{<i})}(x_i),\qquad
        \log|\det J_f| = \sum_i \log g'_{\theta_i(z_{<i})}(z_i),

    with :math:`\theta` = `conditioner(z)`. `forward_and_log_det` is ONE conditioner
    pass; `inverse_and_log_det` is D passes (a `lax.fori_loop`).
    """
        + _SPLINE_MATH
        + r"""
    Args:
      conditioner: autoregressive `z [B, D] -> params [B, D, 3K - 1]`; static.
      bound: B > 0 (static; default 3.0).
      min_bin_width, min_bin_height, min_derivative: static floats in (0, 1).

    Raises:
      TypeError: if `conditioner` is not callable.
      ValueError: for a bad spline configuration, an input that is not [B, D], or
        conditioner output that is not [B, D, 3K - 1].

    References:
      Durkan, C., Bekasov, A., Murray, I. & Papamakarios, G. (2019). Neural Spline
        Flows. NeurIPS, Section 3.3. https://arxiv.org/abs/1906.04032
    """
    )

    _on_data: ClassVar[bool] = False
