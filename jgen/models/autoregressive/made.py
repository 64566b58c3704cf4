"""MADE, the masked autoencoder for distribution estimation: a feed-forward network
whose output for dimension i depends only on the inputs that come before i in a chosen
ordering, so one pass gives every conditional of an autoregressive model.

`made_masks` is a pure function that draws the connectivity (an input ordering and
hidden-unit degrees) from a key; `MADE` is the Flax module, which takes the masks as
an *input* to `__call__`, so a fresh ordering/connectivity can be drawn every training
step inside one compiled step (order- and connectivity-agnostic training), and an
ensemble of masks can be evaluated with `jax.vmap`. `made_conditioner` closes a MADE
over its params and masks, giving the `x -> params` function that the autoregressive
bijectors (`jgen.bijectors.MAF`, `IAF`, `SplineMAF`, `SplineIAF`) expect.

Example (order-agnostic training and a mask ensemble at evaluation)::

    made = MADE(hidden=(256, 256), dim=D, num_params=1)  # e.g. Bernoulli logits
    params = made.init(key, x, made_masks(None, D, (256, 256)))

    def loss_fn(params, key, x):  # a new ordering + connectivity every step
        masks = made_masks(key, D, (256, 256), random_order=True)
        logits = made.apply(params, x, masks)[..., 0]   # [B, D]
        ...

    keys = jax.random.split(key, 8)  # evaluation: average over 8 masks
    ensemble = jax.vmap(lambda k: made_masks(k, D, (256, 256), random_order=True))(keys)
    logits = jax.vmap(lambda m: made.apply(params, x, m))(ensemble)  # [8, B, D, 1]

References:
  Germain, M., Gregor, K., Murray, I. & Larochelle, H. (2015). MADE: Masked
    Autoencoder for Distribution Estimation. ICML. https://arxiv.org/abs/1502.03509
  Papamakarios, G., Pavlakou, T. & Murray, I. (2017). Masked Autoregressive Flow for
    Density Estimation. NeurIPS, Section 3 (conditional MADE).
    https://arxiv.org/abs/1705.07057
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.typing import Params, PRNGKey


class MADEMasks(NamedTuple):
    """The connectivity of a MADE (a pytree of arrays; vmap/jit friendly).

    With `pos[d]` the position of input dimension d in the ordering (0-based),
    ``mask[j, k] = True`` means that unit j of the layer below feeds unit k above.

    Attributes:
      order: int32 [D]; `order[k]` is the dimension at position k (dimension
        `order[0]` comes first and depends on nothing).
      hidden: one boolean mask per hidden layer: [D, H_1], [H_1, H_2], ..., [H_{L-1}, H_L].
      output: boolean [H_L, D] (or [D, D] when there are no hidden layers): hidden
        unit -> output dimension.
      direct: boolean [D, D], ``direct[j, i] = pos[j] < pos[i]``: the masked direct
        input -> output connection (used by `MADE(direct_connection=True)`).
    """

    order: jax.Array
    hidden: tuple[jax.Array, ...]
    output: jax.Array
    direct: jax.Array


def _check_dim_and_hidden(owner: str, dim: Any, hidden: Any) -> tuple[int, tuple[int, ...]]:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(
            f"{owner}: dim must be a positive Python int (the number of autoregressive "
            f"dimensions D); received {dim!r} of type {type(dim).__name__}."
        )
    try:
        widths = tuple(hidden)
    except TypeError:
        widths = None
    if widths is None or not all(
        isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in widths
    ):
        raise ValueError(
            f"{owner}: hidden must be a sequence of positive ints (the hidden-layer "
            f"widths), e.g. (64, 64) or () for none; received {hidden!r}."
        )
    return int(dim), tuple(int(h) for h in widths)


def _check_order(order: Any, dim: int) -> jax.Array:
    order_arr = jnp.asarray(order)
    if order_arr.shape != (dim,) or not jnp.issubdtype(order_arr.dtype, jnp.integer):
        raise ValueError(
            f"made_masks: order must be an integer array of shape ({dim},), a permutation "
            f"of 0..{dim - 1}; received {order!r} with shape {order_arr.shape} and dtype "
            f"{order_arr.dtype}. E.g. order=jnp.arange({dim})[::-1] for reversed."
        )
    if not isinstance(order, jax.core.Tracer):  # a traced order cannot be checked
        values = np.asarray(order)
        if sorted(values.tolist()) != list(range(dim)):
            raise ValueError(
                f"made_masks: order must be a permutation of 0..{dim - 1}; received "
                f"{values.tolist()}."
            )
    return order_arr.astype(jnp.int32)


def made_masks(
    key: PRNGKey | None,
    dim: int,
    hidden: Sequence[int],
    *,
    order: Any = None,
    random_order: bool = False,
    conditional: bool = False,
) -> MADEMasks:
    r"""Draws MADE connectivity masks for an input ordering (Germain et al. 2015, Sec. 4).

    Each input dimension d gets the degree :math:`m(d) = \text{pos}(d) \in
    \{0, \dots, D-1\}`, its position in the ordering. Each hidden unit k of layer l
    gets a degree :math:`m^l(k) \in \{\min_{k'} m^{l-1}(k'), \dots, D - 2\}` (the
    minimum over the layer below, so no unit is cut off from its inputs). Then

    .. math::
        M^l_{k'k} = [\,m^l(k) \ge m^{l-1}(k')\,],\qquad
        M^{\text{out}}_{k d} = [\,m(d) > m^L(k)\,],\qquad
        M^{\text{direct}}_{d' d} = [\,m(d) > m(d')\,],

    so every path from input :math:`d'` to output :math:`d` has non-decreasing degrees
    and ends with a strict increase: output d depends only on inputs at earlier
    positions (:math:`\text{pos}(d') < \text{pos}(d)`), the first dimension in the
    order on none. Hidden units of degree :math:`D-1` would feed no output, so none is
    drawn. (For D = 1 all degrees are 0 and the output depends on no input.)

    With `conditional=True` the first hidden layer's degrees start at -1: a unit of
    degree -1 sees no input (in a conditional MADE, only the context) and feeds every
    output, so even the first dimension in the order gets parameters that are a
    nonlinear function of the context, :math:`p(x_{\text{first}} \mid c)`.

    Pure and traceable: `key` and `order` may be traced, `dim` and `hidden` are static,
    so under `jax.jit` a new ordering/connectivity per step costs no recompile.

    Args:
      key: a PRNG key, or None. With a key the hidden degrees are drawn uniformly
        (connectivity-agnostic training when a new key is used per step); with None
        they are deterministic, cycling through :math:`\min, \dots, D-2`.
      dim: D, the number of input (= output) dimensions.
      hidden: the hidden-layer widths, e.g. (64, 64); () gives a single masked linear
        layer (the fully visible sigmoid belief net / logistic autoregression).
      order: optional int array [D], a permutation: `order[k]` is the dimension at
        position k. Default: the natural order 0, 1, ..., D-1.
      random_order: draw the ordering uniformly from `key` instead (order-agnostic
        training); needs a key and no `order`.
      conditional: allow hidden degree -1 (context-only units); use it when the MADE
        is given a `context`. Without a context such units are constants.

    Returns:
      A `MADEMasks` (order, hidden masks, output mask, direct mask), boolean masks.

    Raises:
      ValueError: for a bad `dim`, `hidden` or `order`, or `random_order` without a key
        or together with `order`.

    Example:
      >>> masks = made_masks(jax.random.PRNGKey(0), 4, (8, 8), order=jnp.array([2, 0, 3, 1]))
      >>> masks.output.shape, masks.direct.shape
      ((8, 4), (4, 4))
    """
    dim, widths = _check_dim_and_hidden("made_masks", dim, hidden)
    if random_order and (key is None or order is not None):
        raise ValueError(
            "made_masks: random_order=True draws the ordering from the key, so it needs a "
            f"key and no explicit order; received key={'None' if key is None else 'a key'} "
            f"and order={'None' if order is None else 'an array'}."
        )
    if key is not None:
        order_key, degree_key = jax.random.split(key)
    if random_order:
        perm = jax.random.permutation(order_key, dim).astype(jnp.int32)
    elif order is None:
        perm = jnp.arange(dim, dtype=jnp.int32)
    else:
        perm = _check_order(order, dim)
    # pos[d] = position of dimension d (the inverse permutation) = the input degree.
    pos = jnp.zeros((dim,), jnp.int32).at[perm].set(jnp.arange(dim, dtype=jnp.int32))

    below = pos
    hidden_masks = []
    for layer, width in enumerate(widths):
        low = jnp.min(below) - (1 if conditional and layer == 0 else 0)
        if dim == 1:
            degrees = jnp.full((width,), -1 if conditional else 0, jnp.int32)
        elif key is None:
            degrees = low + jnp.arange(width, dtype=jnp.int32) % (dim - 1 - low)
        else:
            k = jax.random.fold_in(degree_key, layer)
            degrees = jax.random.randint(k, (width,), low, dim - 1, dtype=jnp.int32)
        hidden_masks.append(degrees[None, :] >= below[:, None])
        below = degrees
    return MADEMasks(
        order=perm,
        hidden=tuple(hidden_masks),
        output=pos[None, :] > below[:, None],
        direct=pos[None, :] > pos[:, None],
    )


class MaskedDense(nn.Module):
    r"""Dense layer with a fixed-per-call binary mask on the kernel: :math:`y = x (W \odot M) + b`.

    The mask is an input to `__call__` (not a parameter), so it may change per call.
    A masked-out weight contributes exactly 0 (and gets gradient 0).

    Attributes:
      features: output width.
      use_bias: add a bias.
      kernel_init: initialiser of the full [in, features] kernel.
    """

    features: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        dtype = jnp.result_type(x.dtype, kernel.dtype)
        y = x.astype(dtype) @ (kernel.astype(dtype) * jnp.asarray(mask).astype(dtype))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            y = y + bias.astype(dtype)[None, :]
        return y


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation; the masks are call arguments.

    With :math:`h^0 = x` and masks :math:`M^l` from `made_masks`,

    .. math::
        h^l = g\big((W^l \odot M^l)^\top h^{l-1} + b^l + U^l c\big),\quad l = 1..L,
        \qquad
        \theta = (V \odot M^{\text{out}})^\top h^L + b^V + U^V c
                 \;[+ (A \odot M^{\text{direct}})^\top x],

    where :math:`c` is the optional context (unmasked: a conditional MADE, as in MAF's
    :math:`p(x \mid c)`), each output mask column is repeated `num_params` times, and
    the bracketed direct connection is optional. Output
    :math:`\theta_{i,:}` (num_params numbers) depends only on :math:`x_j` with
    :math:`\text{pos}(j) < \text{pos}(i)` (and on :math:`c`), whatever the weights.

    Attributes:
      hidden: hidden-layer widths; must match the masks' layers.
      dim: D, the input dimension.
      num_params: P, parameters per dimension (1 for Bernoulli logits, 2 for an
        affine shift/log-scale, 3K - 1 for a K-bin rational-quadratic spline).
      activation: the nonlinearity g (default ReLU).
      direct_connection: add the masked direct input -> output connection.
      zero_init_output: zero-initialise the output layer (and the direct connection),
        so the initial output is 0: an autoregressive flow then starts at the identity.
      mask_bias: add a learned mask-dependent bias :math:`(U^l_m \odot M^l)^\top 1`
        to each hidden layer, telling the network which connectivity is in use, for
        connectivity-agnostic training (Germain et al. 2015, Sec. 4.3, also feed the
        mask to the network; this is our simple form of that idea). It depends on the
        masks only, so the autoregressive property is kept.

    Call args:
      x: floating [B, D].
      masks: a `MADEMasks` from `made_masks(key, dim, hidden, ...)`.
      context: optional floating [B, C]; fed unmasked into every hidden layer and
        the output layer. Draw the masks with `made_masks(..., conditional=True)` so
        that the first dimension's parameters depend on it nonlinearly (otherwise only
        through the output layer, linearly).

    Returns:
      [B, D, num_params].

    Example:
      >>> made = MADE(hidden=(32, 32), dim=4, num_params=2, zero_init_output=True)
      >>> masks = made_masks(jax.random.PRNGKey(1), 4, (32, 32))
      >>> params = made.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), masks)
      >>> made.apply(params, x, masks).shape  # x [B, 4]
      (B, 4, 2)
    """

    hidden: Sequence[int]
    dim: int
    num_params: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    direct_connection: bool = False
    zero_init_output: bool = False
    mask_bias: bool = False

    def _check(self, x, masks, context, widths) -> None:
        d = self.dim
        if isinstance(self.num_params, bool) or not isinstance(
            self.num_params, (int, np.integer)
        ) or self.num_params < 1:
            raise ValueError(
                f"MADE: num_params must be a positive int; received {self.num_params!r}."
            )
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != d:
            raise ValueError(
                f"MADE: x must have shape [B, dim] = [B, {d}]; received shape "
                f"{jnp.shape(x)}. Flatten images first, x.reshape(B, -1)."
            )
        if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            raise TypeError(
                f"MADE: x must be floating; received dtype {jnp.asarray(x).dtype}. Cast it "
                "first, e.g. x.astype(jnp.float32)."
            )
        if not isinstance(masks, MADEMasks):
            raise TypeError(
                f"MADE: masks must be a MADEMasks from made_masks(key, {d}, "
                f"{widths}); received {type(masks).__name__}."
            )
        fan_in = (d,) + widths
        want = [(fan_in[i], w) for i, w in enumerate(widths)]
        got = [tuple(jnp.shape(m)) for m in masks.hidden]
        want_out, got_out = (fan_in[-1], d), tuple(jnp.shape(masks.output))
        if got != want or got_out != want_out or tuple(jnp.shape(masks.direct)) != (d, d):
            raise ValueError(
                f"MADE(hidden={widths}, dim={d}): masks do not fit the network; expected "
                f"hidden masks {want}, output {want_out}, direct {(d, d)}; received "
                f"hidden {got}, output {got_out}, direct {tuple(jnp.shape(masks.direct))}. "
                f"Build them with made_masks(key, {d}, {widths})."
            )
        if context is not None and (
            jnp.ndim(context) != 2 or jnp.shape(context)[0] != jnp.shape(x)[0]
        ):
            raise ValueError(
                f"MADE: context must have shape [B, C] with B = {jnp.shape(x)[0]} (the "
                f"batch of x); received shape {jnp.shape(context)}."
            )

    @nn.compact
    def __call__(
        self, x: jax.Array, masks: MADEMasks, context: jax.Array | None = None
    ) -> jax.Array:
        _, widths = _check_dim_and_hidden("MADE", self.dim, self.hidden)
        self._check(x, masks, context, widths)
        d, p = self.dim, self.num_params
        h = x
        for i, (width, mask) in enumerate(zip(widths, masks.hidden)):
            h = MaskedDense(width, name=f"masked_{i}")(h, mask)
            if self.mask_bias:
                ones = jnp.ones((1, mask.shape[0]), h.dtype)
                h = h + MaskedDense(width, use_bias=False, name=f"mask_bias_{i}")(ones, mask)
            if context is not None:
                h = h + nn.Dense(width, use_bias=False, name=f"context_{i}")(context)
            h = self.activation(h)
        out_init = (
            nn.initializers.zeros if self.zero_init_output else nn.initializers.lecun_normal()
        )
        # Column d * P + q of the output layer is parameter q of dimension d.
        out = MaskedDense(d * p, kernel_init=out_init, name="output")(
            h, jnp.repeat(masks.output, p, axis=1)
        )
        if context is not None:
            out = out + nn.Dense(
                d * p, use_bias=False, kernel_init=out_init, name="context_output"
            )(context)
        if self.direct_connection:
            out = out + MaskedDense(d * p, use_bias=False, kernel_init=out_init, name="direct")(
                x, jnp.repeat(masks.direct, p, axis=1)
            )
        return out.reshape(x.shape[0], d, p)


def made_conditioner(
    made: MADE, params: Params, masks: MADEMasks, *, context: jax.Array | None = None
) -> Callable[[jax.Array], jax.Array]:
    """The function `x [B, D] -> made.apply(params, x, masks, context)` of shape [B, D, P].

    This is the `conditioner` of the autoregressive bijectors (`jgen.bijectors.MAF`,
    `IAF`, `SplineMAF`, `SplineIAF`). Build it inside the loss from the params being
    trained, so the closure is traced rather than baked in as constants.

    Args:
      made: a `MADE` module.
      params: its variables, as returned by `made.init`.
      masks: the `MADEMasks` to use (fixed for the conditioner's lifetime).
      context: optional [B, C] conditioning input (a conditional flow); the batch of
        every x passed to the conditioner must then be B.

    Returns:
      The conditioner function.

    Example:
      >>> cond = made_conditioner(made, params, masks)
      >>> z, log_det = MAF(cond).inverse_and_log_det(x)
    """
    if not isinstance(made, MADE):
        raise TypeError(
            f"made_conditioner: expected a MADE module; received {type(made).__name__}."
        )

    def conditioner(x: jax.Array) -> jax.Array:
        return made.apply(params, x, masks, context)

    return conditioner
