"""Activation normalisation (Glow): a learned per-channel affine map whose parameters
are initialised from data so that the first batch leaves the layer standardised.

`ActNorm` is the bijector; `actnorm_init` is the pure, data-dependent initialiser that
computes its parameters from a batch. Both act on the last axis (channels), for images
[B, H, W, C] (`event_ndims=3`) and vectors [B, D] (`event_ndims=1`) alike.
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
)


@bijector_dataclass
class ActNorm(Bijector):
    r"""Per-channel affine map with a log-parametrised scale (Glow's actnorm).

    With one shift :math:`t_c` and log-scale :math:`s_c` per channel :math:`c` (the
    last axis), shared over the batch and over all other event axes (pixels),

    .. math::
        y_{\ldots c} = x_{\ldots c}\, e^{s_c} + t_c, \qquad
        x_{\ldots c} = (y_{\ldots c} - t_c)\, e^{-s_c}, \qquad
        \log|\det J| = N \sum_{c} s_c,

    where :math:`N` is the number of positions per channel in one event: :math:`N =
    H W` for images [B, H, W, C] and :math:`N = 1` for vectors [B, C].

    The inverse (data -> base, the direction `flow_log_prob` uses) standardises its
    input, so `actnorm_init(x)` sets :math:`t` to the per-channel mean and
    :math:`e^{s}` to the per-channel standard deviation of a data batch.

    Args:
      shift: floating array [C].
      log_scale: floating array [C].
      event_ndims: number of trailing event axes (static; default 1; 3 for images).

    Raises:
      ValueError: (when called) if `shift` or `log_scale` is not of shape [C] with C
        the input's last axis.

    Example:
      >>> shift, log_scale = actnorm_init(x)  # x [B, H, W, C], the first data batch
      >>> layer = ActNorm(shift, log_scale, event_ndims=3)
      >>> z, log_det = layer.inverse_and_log_det(x)  # z: per-channel mean 0, var 1

    References:
      Kingma, D. P. & Dhariwal, P. (2018). Glow: Generative Flow with Invertible 1x1
        Convolutions. NeurIPS, Section 3.1 and Table 1.
        https://arxiv.org/abs/1807.03039
    """

    shift: jax.Array
    log_scale: jax.Array
    event_ndims: int = static_field(default=1)

    def __post_init__(self):
        check_event_ndims("ActNorm", self.event_ndims)
        if self.event_ndims < 1:
            raise ValueError(
                "ActNorm: event_ndims must be >= 1 (the last event axis holds the "
                f"channels); received {self.event_ndims}."
            )

    def _params(self, name: str, x):
        x = check_input("ActNorm", name, x, self.event_ndims)
        c = x.shape[-1]
        out = []
        for pname, value in (("shift", self.shift), ("log_scale", self.log_scale)):
            if jnp.shape(value) != (c,):
                raise ValueError(
                    f"ActNorm: {pname} must have shape [C] = ({c},), one entry per channel "
                    f"of the input of shape {x.shape}; received shape {jnp.shape(value)}. "
                    "Compute both with actnorm_init(x)."
                )
            out.append(jnp.broadcast_to(jnp.asarray(value, x.dtype), x.shape))
        # Positions per channel in one event (H * W for images); a static int.
        n = int(np.prod(x.shape[1:-1], dtype=np.int64))
        log_det = n * jnp.sum(jnp.asarray(self.log_scale, x.dtype))
        return x, out[0], out[1], jnp.broadcast_to(log_det, x.shape[:1])

    def forward_and_log_det(self, x):
        x, t, s, log_det = self._params("x", x)
        return x * jnp.exp(s) + t, log_det

    def inverse_and_log_det(self, y):
        y, t, s, log_det = self._params("y", y)
        return (y - t) * jnp.exp(-s), -log_det


def actnorm_init(x: jax.Array, *, eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    r"""Data-dependent initialisation of `ActNorm` from a batch (pure, jittable).

    .. math::
        t_c = \operatorname{mean}(x_{\ldots c}), \qquad
        s_c = \tfrac12 \log\big(\operatorname{var}(x_{\ldots c}) + \epsilon\big),

    over all axes but the last (batch and pixels), so that
    `ActNorm(t, s).inverse(x)` has per-channel mean 0 and variance
    :math:`\operatorname{var}/(\operatorname{var} + \epsilon) \approx 1` on this batch.

    Args:
      x: floating data batch [B, ..., C] (e.g. [B, H, W, C] or [B, C]).
      eps: small positive float added to the variance (guards constant channels).

    Returns:
      `(shift, log_scale)`, each of shape [C] and the dtype of `x`.

    Raises:
      ValueError: if `x` has fewer than 2 axes.
      TypeError: if `x` is not floating.

    References:
      Kingma, D. P. & Dhariwal, P. (2018). Glow. NeurIPS, Section 3.1.
    """
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            "actnorm_init: x must be a batch [B, ..., C] with at least 2 axes; received "
            f"shape {x.shape}. E.g. x[:, None] for a batch of scalars."
        )
    x = check_input("actnorm_init", "x", x, x.ndim - 1)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.var(x, axis=axes)
    return mean, 0.5 * jnp.log(var + eps)
