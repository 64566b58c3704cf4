"""Glow's invertible 1x1 convolution, parametrised by an LU decomposition.

A 1x1 convolution mixes the channels of every pixel with one learned matrix
:math:`W \\in \\mathbb{R}^{C \\times C}`; it generalises the fixed channel permutations
between coupling layers. In LU form its log-determinant costs :math:`O(C)` and its
inverse two triangular solves. `conv1x1_init` builds one from a random rotation.
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
class Conv1x1LU(Bijector):
    r"""Invertible 1x1 convolution :math:`y_{hw} = W x_{hw}` with :math:`W = P L (U + \operatorname{diag}(\sigma e^{s}))`.

    Here :math:`P` is a fixed permutation matrix, :math:`L` unit lower triangular
    (`l_raw` below the diagonal), :math:`U` strictly upper triangular (`u_raw` above
    the diagonal), :math:`\sigma \in \{\pm 1\}^C` a fixed sign and :math:`s` = `log_s`.
    Entries of `l_raw` on/above and of `u_raw` on/below the diagonal are ignored. Then

    .. math::
        \log|\det J| = N \log|\det W| = N \sum_c s_c,

    with :math:`N` the number of pixels per event (:math:`HW`; 1 for vectors), and the
    inverse is :math:`x_{hw} = W^{-1} y_{hw}`, computed as :math:`P^\top`, then a unit
    lower and an upper triangular solve.

    Args:
      perm: static permutation (tuple of C ints) with :math:`(P a)_i = a_{\pi(i)}`,
        i.e. :math:`P` = `eye(C)[perm]`.
      l_raw: floating array [C, C].
      u_raw: floating array [C, C].
      log_s: floating array [C].
      sign: static tuple of C values +1.0 / -1.0 (the sign of :math:`\det W` is fixed).
      event_ndims: trailing event axes (static; default 3 for images [B, H, W, C];
        1 gives an invertible linear map of vectors [B, C]).

    Raises:
      ValueError: for an invalid `perm` or `sign`, or (when called) parameters whose
        shapes do not match the input's C channels.

    Example:
      >>> conv = conv1x1_init(key, 4)   # a random rotation; train l_raw, u_raw, log_s
      >>> y, log_det = conv.forward_and_log_det(x)  # x [B, H, W, 4]

    References:
      Kingma, D. P. & Dhariwal, P. (2018). Glow: Generative Flow with Invertible 1x1
        Convolutions. NeurIPS, Section 3.2 (LU decomposition).
        https://arxiv.org/abs/1807.03039
    """

    perm: tuple = static_field()
    l_raw: jax.Array
    u_raw: jax.Array
    log_s: jax.Array
    sign: tuple = static_field()
    event_ndims: int = static_field(default=3)

    def __post_init__(self):
        check_event_ndims("Conv1x1LU", self.event_ndims)
        if self.event_ndims < 1:
            raise ValueError(
                f"Conv1x1LU: event_ndims must be >= 1; received {self.event_ndims}."
            )
        perm = tuple(int(i) for i in self.perm)
        if sorted(perm) != list(range(len(perm))):
            raise ValueError(
                f"Conv1x1LU: perm must be a permutation of 0..C-1; received {self.perm!r}."
            )
        sign = tuple(float(s) for s in self.sign)
        if len(sign) != len(perm) or any(s not in (1.0, -1.0) for s in sign):
            raise ValueError(
                f"Conv1x1LU: sign must be {len(perm)} values each +1 or -1 (one per "
                f"channel); received {self.sign!r}."
            )
        object.__setattr__(self, "perm", perm)
        object.__setattr__(self, "sign", sign)

    def _factors(self, name: str, x):
        x = check_input("Conv1x1LU", name, x, self.event_ndims)
        c = len(self.perm)
        if x.shape[-1] != c:
            raise ValueError(
                f"Conv1x1LU: the last axis of {name} must have size C = {c}; received "
                f"shape {x.shape}."
            )
        for pname, value, shape in (
            ("l_raw", self.l_raw, (c, c)),
            ("u_raw", self.u_raw, (c, c)),
            ("log_s", self.log_s, (c,)),
        ):
            if jnp.shape(value) != shape:
                raise ValueError(
                    f"Conv1x1LU: {pname} must have shape {shape}; received shape "
                    f"{jnp.shape(value)}."
                )
        eye = jnp.eye(c, dtype=x.dtype)
        lower = jnp.tril(jnp.asarray(self.l_raw, x.dtype), -1) + eye
        log_s = jnp.asarray(self.log_s, x.dtype)
        diag = jnp.asarray(self.sign, x.dtype) * jnp.exp(log_s)
        upper = jnp.triu(jnp.asarray(self.u_raw, x.dtype), 1) + jnp.diag(diag)
        n = int(np.prod(x.shape[1:-1], dtype=np.int64))
        log_det = jnp.broadcast_to(n * jnp.sum(log_s), x.shape[:1])
        return x, lower, upper, log_det

    def weight(self, dtype=jnp.float32) -> jax.Array:
        """The matrix :math:`W = P L (U + \\operatorname{diag}(\\sigma e^{s}))` [C, C]."""
        x = jnp.zeros((1,) * self.event_ndims + (len(self.perm),), dtype)
        _, lower, upper, _ = self._factors("x", x)
        return (lower @ upper)[jnp.asarray(self.perm)]

    def forward_and_log_det(self, x):
        x, lower, upper, log_det = self._factors("x", x)
        # Pixels as rows: y_row = W x_row, i.e. Y = X W^T = X (P L U)^T.
        z = x @ upper.T
        z = z @ lower.T
        y = z[..., jnp.asarray(self.perm)]  # (P a)_i = a_perm[i]
        return y, log_det

    def inverse_and_log_det(self, y):
        y, lower, upper, log_det = self._factors("y", y)
        inv_perm = np.argsort(np.asarray(self.perm))
        a = y[..., jnp.asarray(inv_perm)]  # P^T y
        flat = a.reshape(-1, a.shape[-1]).T  # [C, pixels]
        b = jax.scipy.linalg.solve_triangular(lower, flat, lower=True, unit_diagonal=True)
        x = jax.scipy.linalg.solve_triangular(upper, b, lower=False)
        return x.T.reshape(y.shape), -log_det


def conv1x1_init(
    key: jax.Array, channels: int, *, event_ndims: int = 3, dtype=None
) -> Conv1x1LU:
    """A `Conv1x1LU` whose :math:`W` is a random rotation (Glow's initialisation).

    Draws :math:`W` from the QR decomposition of a standard normal matrix, then factors
    :math:`W = P L U` with `jax.scipy.linalg.lu`; `perm` and `sign` become static
    configuration, so call this outside `jax.jit` (it reads concrete values). Train the
    leaves `l_raw`, `u_raw`, `log_s`.

    Args:
      key: a PRNG key.
      channels: C >= 1.
      event_ndims: passed to `Conv1x1LU` (3 for images, 1 for vectors).
      dtype: floating dtype of the arrays (default: JAX's default float).

    Returns:
      A `Conv1x1LU` with :math:`|\\det W| = 1` (so `log_s` sums to ~0).

    References:
      Kingma, D. P. & Dhariwal, P. (2018). Glow. NeurIPS, Section 3.2.
    """
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"conv1x1_init: channels must be an int >= 1; received {channels!r}.")
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    q, _ = jnp.linalg.qr(jax.random.normal(key, (channels, channels), dtype))
    p_mat, lower, upper = jax.scipy.linalg.lu(q)
    # lu gives q = p_mat @ lower @ upper; with P = eye[perm], p_mat[i, perm[i]] = 1.
    perm = tuple(int(i) for i in np.argmax(np.asarray(p_mat), axis=1))
    diag = jnp.diag(upper)
    sign = tuple(float(s) for s in np.where(np.asarray(diag) < 0, -1.0, 1.0))
    return Conv1x1LU(
        perm,
        jnp.tril(lower, -1),
        jnp.triu(upper, 1),
        jnp.log(jnp.abs(diag)),
        sign,
        event_ndims=event_ndims,
    )
