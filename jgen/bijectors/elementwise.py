"""Elementwise bijectors: an affine map with explicit parameters, and the squashing
maps `Tanh`, `Sigmoid` and `Exp` with numerically stable log-determinants.

Each acts on every element independently, so its Jacobian is diagonal and the
log-determinant is the sum over the event of :math:`\\log|f'(x_i)|`. `event_ndims`
(default 1) says how many trailing axes form the event that is summed over.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jgen.bijectors.base import (
    Bijector,
    bijector_dataclass,
    check_event_ndims,
    check_input,
    static_field,
    sum_event,
)

_LOG2 = float(np.log(2.0))


def _broadcast_param(owner: str, name: str, value, x: jax.Array) -> jax.Array:
    """Broadcasts a parameter explicitly to x's shape (rank promotion stays strict)."""
    value = jnp.asarray(value, x.dtype)
    try:
        np.broadcast_shapes(value.shape, x.shape)
        return jnp.broadcast_to(value, x.shape)
    except ValueError:
        raise ValueError(
            f"{owner}: {name} of shape {value.shape} does not broadcast to the input of "
            f"shape {x.shape}. Give it the event shape {x.shape[1:]} (shared over the "
            f"batch), the full shape {x.shape} (per example), or a scalar."
        ) from None


@bijector_dataclass
class Affine(Bijector):
    r"""Elementwise affine map with a log-parametrised scale.

    .. math::
        y = x \odot e^{s} + t, \qquad x = (y - t) \odot e^{-s}, \qquad
        \log|\det J| = \sum_{i \in \text{event}} s_i,

    where :math:`t` is `shift` and :math:`s` is `log_scale`; the scale
    :math:`e^{s} > 0` needs no constraint, so both can be raw network outputs or
    learned parameters.

    Args:
      shift: floating array broadcastable to the input [B, *event]: a scalar, the event
        shape (shared over the batch) or [B, *event] (per example).
      log_scale: floating array, broadcastable likewise.
      event_ndims: number of trailing event axes (static; default 1).

    Example:
      >>> b = Affine(jnp.zeros(2), jnp.log(jnp.array([1.0, 2.0])))
      >>> b.forward_and_log_det(jnp.ones((4, 2)))  # y = [1, 2], log_det = log 2
    """

    shift: jax.Array
    log_scale: jax.Array
    event_ndims: int = static_field(default=1)

    def __post_init__(self):
        check_event_ndims("Affine", self.event_ndims)

    def _params(self, x):
        t = _broadcast_param("Affine", "shift", self.shift, x)
        s = _broadcast_param("Affine", "log_scale", self.log_scale, x)
        return t, s

    def forward_and_log_det(self, x):
        x = check_input("Affine", "x", x, self.event_ndims)
        t, s = self._params(x)
        return x * jnp.exp(s) + t, sum_event(s)

    def inverse_and_log_det(self, y):
        y = check_input("Affine", "y", y, self.event_ndims)
        t, s = self._params(y)
        return (y - t) * jnp.exp(-s), -sum_event(s)


@bijector_dataclass
class Tanh(Bijector):
    r"""Elementwise :math:`y = \tanh(x)`, mapping :math:`\mathbb{R}` onto :math:`(-1, 1)`.

    .. math::
        \log|\tanh'(x)| = \log(1 - \tanh^2 x) = 2\,\big(\log 2 - x - \operatorname{softplus}(-2x)\big),

    the right-hand form being accurate for large :math:`|x|`, where
    :math:`1 - \tanh^2 x` rounds to 0. The inverse is
    :math:`x = \operatorname{atanh}(y)` with log-det
    :math:`-\sum_i \big(\operatorname{log1p}(-y_i) + \operatorname{log1p}(y_i)\big)`.

    Args:
      event_ndims: number of trailing event axes (static; default 1).

    References:
      Haarnoja, T. et al. (2018). Soft Actor-Critic. ICML, Appendix C (the tanh
        change of variables). https://arxiv.org/abs/1801.01290
    """

    event_ndims: int = static_field(default=1)

    def __post_init__(self):
        check_event_ndims("Tanh", self.event_ndims)

    def forward_and_log_det(self, x):
        x = check_input("Tanh", "x", x, self.event_ndims)
        log_det = 2.0 * (_LOG2 - x - jax.nn.softplus(-2.0 * x))
        return jnp.tanh(x), sum_event(log_det)

    def inverse_and_log_det(self, y):
        y = check_input("Tanh", "y", y, self.event_ndims)
        return jnp.arctanh(y), -sum_event(jnp.log1p(-y) + jnp.log1p(y))


@bijector_dataclass
class Sigmoid(Bijector):
    r"""Elementwise logistic sigmoid :math:`y = \sigma(x) = 1 / (1 + e^{-x})`, onto :math:`(0, 1)`.

    .. math::
        \log \sigma'(x) = \log\sigma(x) + \log\sigma(-x)
                        = -\operatorname{softplus}(-x) - \operatorname{softplus}(x),

    stable for all :math:`x`. The inverse is the logit
    :math:`x = \log y - \operatorname{log1p}(-y)` with log-det
    :math:`-\sum_i \big(\log y_i + \operatorname{log1p}(-y_i)\big)`.

    Args:
      event_ndims: number of trailing event axes (static; default 1).

    References:
      Dinh, L., Sohl-Dickstein, J. & Bengio, S. (2017). Density estimation using
        Real NVP. ICLR, Section 4.1 (the logit transform of pixel data).
        https://arxiv.org/abs/1605.08803
    """

    event_ndims: int = static_field(default=1)

    def __post_init__(self):
        check_event_ndims("Sigmoid", self.event_ndims)

    def forward_and_log_det(self, x):
        x = check_input("Sigmoid", "x", x, self.event_ndims)
        log_det = -jax.nn.softplus(-x) - jax.nn.softplus(x)
        return jax.nn.sigmoid(x), sum_event(log_det)

    def inverse_and_log_det(self, y):
        y = check_input("Sigmoid", "y", y, self.event_ndims)
        log_y, log1m_y = jnp.log(y), jnp.log1p(-y)
        return log_y - log1m_y, -sum_event(log_y + log1m_y)


@bijector_dataclass
class Exp(Bijector):
    r"""Elementwise :math:`y = e^{x}`, onto :math:`(0, \infty)`.

    .. math::
        \log|\det J| = \sum_i x_i, \qquad x = \log y, \qquad
        \log|\det J^{-1}| = -\sum_i \log y_i.

    Args:
      event_ndims: number of trailing event axes (static; default 1).
    """

    event_ndims: int = static_field(default=1)

    def __post_init__(self):
        check_event_ndims("Exp", self.event_ndims)

    def forward_and_log_det(self, x):
        x = check_input("Exp", "x", x, self.event_ndims)
        return jnp.exp(x), sum_event(x)

    def inverse_and_log_det(self, y):
        y = check_input("Exp", "y", y, self.event_ndims)
        x = jnp.log(y)
        return x, -sum_event(x)
