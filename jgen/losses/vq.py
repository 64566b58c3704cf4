r"""Vector quantisation and the VQ-VAE objective.

A VQ-VAE replaces the continuous encoding :math:`z_e(x)` at every latent position by
its nearest codebook entry :math:`e_k`, decodes the quantised :math:`z_q`, and trains
with

.. math::
    L = -\log p(x \mid z_q) + \lVert \mathrm{sg}[z_e] - e \rVert^2
        + \beta \lVert z_e - \mathrm{sg}[e] \rVert^2,

where the decoder's gradient is copied straight through the (non-differentiable)
nearest-neighbour lookup to the encoder. The second (codebook) term moves the codes
towards the encodings; alternatively the codes are exponential moving averages of
their assigned encodings (`ema_codebook_init` / `ema_codebook_update`), and only the
third (commitment) term is kept.

The pieces:

* `vector_quantize`: nearest-neighbour lookup, straight-through output, and the
  per-example codebook and commitment terms.
* `codebook_perplexity`: how many codes are in use.
* `EMACodebookState`, `ema_codebook_init`, `ema_codebook_update`: the EMA codebook
  as an optax-style pure init/update pair.
* `make_vqvae_loss`: the loss factory, `loss_fn(params, key, batch) -> (loss, aux)`.
* `make_vq_codes_fn`: the encodings and code indices of a batch, exactly as the loss
  sees them (for perplexity metrics and the EMA update).
* `make_vq_ema_step`: the one call a training step adds for the EMA codebook.

Where the codebook lives: the loss reads the [K, D] codebook from the parameter
pytree at `codebook_path`, by default `CODEBOOK_PATH = ("params", "codebook",
"embedding")`, i.e. `params["params"]["codebook"]["embedding"]`, which is where
`jgen.models.vae.VQVAE` puts it.

References:
  van den Oord, A., Vinyals, O. & Kavukcuoglu, K. (2017). Neural discrete
    representation learning. NeurIPS. https://arxiv.org/abs/1711.00937
    (Section 3.2 for the loss; Appendix A.1 for the EMA codebook.)
  Razavi, A., van den Oord, A. & Vinyals, O. (2019). Generating diverse
    high-fidelity images with VQ-VAE-2. NeurIPS. https://arxiv.org/abs/1906.00446
    (the EMA update with Laplace smoothing of the cluster sizes.)
"""

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jgen.losses.elbo import masked_mean, preprocessed_input
from jgen.typing import Array, Params, PRNGKey

# encode_fn(params, x) -> z_e [B, ..., D]
VQEncodeFn = Callable[[Params, Array], Array]
# decode_fn(params, z_q [B, ..., D]) -> decoder output (logits, means, ...)
VQDecodeFn = Callable[[Params, Array], Array]
# recon_fn(x, decoder_output) -> reconstruction loss per example [B]
ReconFn = Callable[[Array, Array], Array]

CODEBOOK_PATH: tuple[str, ...] = ("params", "codebook", "embedding")


# ---------------------------------------------------------------------------
# Nearest-neighbour quantisation
# ---------------------------------------------------------------------------


def _check_codebook(fn: str, z_e: Array, codebook: Array) -> None:
    if codebook.ndim != 2:
        raise ValueError(
            f"{fn}: the codebook must have shape [K, D] (num_codes, code_dim); got shape "
            f"{tuple(codebook.shape)}. Pass the [K, D] embedding array, e.g. "
            f"params['params']['codebook']['embedding']."
        )
    if z_e.ndim < 1 or z_e.shape[-1] != codebook.shape[-1]:
        raise ValueError(
            f"{fn}: z_e has shape {tuple(z_e.shape)} but the codebook has shape "
            f"{tuple(codebook.shape)}; the last axis of z_e (the encoder's output "
            f"channels) must equal the codebook's code_dim D = {codebook.shape[-1]}. "
            f"Make the encoder output D channels, or build the codebook with that width."
        )


def _position_axes(z_e: Array) -> tuple[int, ...]:
    """Axes between the leading batch axis and the trailing code axis."""
    return tuple(range(1, z_e.ndim - 1))


def nearest_code(z_e: Array, codebook: Array) -> Array:
    r"""Index of the nearest codebook entry at every position (squared Euclidean).

    Distances are expanded as :math:`\lVert z\rVert^2 - 2 z\cdot e + \lVert e\rVert^2`
    (one matmul, no [..., K, D] difference tensor), with the matmul at full float32
    precision so that accelerators' reduced-precision defaults do not change the
    argmin. Ties go to the lowest index.

    Args:
      z_e: encodings [..., D].
      codebook: [K, D].

    Returns:
      int32 indices of shape `z_e.shape[:-1]`.
    """
    _check_codebook("nearest_code", z_e, codebook)
    z_sq = jnp.sum(z_e * z_e, axis=-1, keepdims=True)  # [..., 1]
    e_sq = jnp.sum(codebook * codebook, axis=-1)  # [K]
    cross = jnp.einsum("...d,kd->...k", z_e, codebook, precision=jax.lax.Precision.HIGHEST)
    dist = z_sq - 2.0 * cross + jnp.broadcast_to(e_sq, cross.shape)
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)


def vector_quantize(z_e: Array, codebook: Array) -> tuple[Array, Array, dict[str, Array]]:
    r"""Quantises `z_e` to its nearest codebook entries, with a straight-through output.

    .. math::
        k(z) = \arg\min_k \lVert z - e_k \rVert^2, \qquad z_q = e_{k(z)}, \qquad
        z_{q,\mathrm{st}} = z_e + \mathrm{sg}[z_q - z_e].

    The forward value of `z_q_st` is the codebook entry; its gradient with respect to
    `z_e` is the identity (the straight-through estimator), and no gradient reaches the
    codebook through it.

    Per-example terms: with P the number of latent positions of one example (the
    product of the axes between the first and the last; P = 1 for [B, D] input),

    .. math::
        \text{codebook} = \frac1P \sum_{\text{positions}} \lVert \mathrm{sg}[z_e] - e_k\rVert^2,
        \qquad
        \text{commitment} = \frac1P \sum_{\text{positions}} \lVert z_e - \mathrm{sg}[e_k]\rVert^2,

    i.e. squared distances summed over the D code dimensions and **averaged** over
    positions. The two have the same value and differ only in where the gradient goes:
    the codebook term trains the codes, the commitment term the encoder.

    Args:
      z_e: continuous encodings, [B, *positions, D] (e.g. [B, h, w, D]) or [B, D];
        a single vector [D] is also accepted (its terms are then scalars).
      codebook: [K, D].

    Returns:
      `(z_q_st, indices, aux)`: `z_q_st` with the shape of `z_e`; int32 `indices` of
      shape `z_e.shape[:-1]`; and `aux` with
      `codebook` [B], `commitment` [B] (as above; shape [] for [D] input) and
      `counts` [B, K] (how many positions of each example chose each code, float;
      [K] for [D] input).

    Raises:
      ValueError: if the codebook is not [K, D] or `z_e`'s last axis is not D.

    Example:
      >>> z_q, idx, aux = vector_quantize(jnp.zeros((2, 7, 7, 64)), jnp.ones((512, 64)))
      >>> z_q.shape, idx.shape, aux["commitment"].shape, aux["counts"].shape
      ((2, 7, 7, 64), (2, 7, 7), (2,), (2, 512))
    """
    _check_codebook("vector_quantize", z_e, codebook)
    indices = nearest_code(z_e, codebook)
    z_q = jnp.take(codebook, indices, axis=0)  # [..., D]; differentiable in the codebook
    z_q_st = z_e + jax.lax.stop_gradient(z_q - z_e)

    axes = _position_axes(z_e)
    if z_e.ndim == 1:
        reduce = lambda sq: jnp.sum(sq, axis=-1)  # noqa: E731
        count_axes: tuple[int, ...] = ()
    else:
        reduce = lambda sq: jnp.mean(jnp.sum(sq, axis=-1), axis=axes)  # noqa: E731
        count_axes = axes
    codebook_term = reduce(jnp.square(jax.lax.stop_gradient(z_e) - z_q))
    commitment_term = reduce(jnp.square(z_e - jax.lax.stop_gradient(z_q)))
    one_hot = jax.nn.one_hot(indices, codebook.shape[0], dtype=z_e.dtype)
    counts = jnp.sum(one_hot, axis=count_axes) if count_axes else one_hot
    aux = {"codebook": codebook_term, "commitment": commitment_term, "counts": counts}
    return z_q_st, indices, aux


# ---------------------------------------------------------------------------
# Code usage
# ---------------------------------------------------------------------------


def _check_indices(fn: str, indices: Array) -> None:
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: indices must be an integer array of code indices; got dtype "
            f"{indices.dtype} with shape {tuple(indices.shape)}. Pass the `indices` "
            f"returned by vector_quantize, not the one-hot counts or the encodings."
        )


def _row_weights(fn: str, indices: Array, mask: Array | None, dtype) -> Array:
    """Per-position weights: the example mask [B] broadcast over positions."""
    if mask is None:
        return jnp.ones(indices.shape, dtype)
    if indices.ndim < 1 or mask.shape != indices.shape[:1]:
        raise ValueError(
            f"{fn}: mask must have shape [B] = {tuple(indices.shape[:1])} (one entry per "
            f"example, the leading axis of indices with shape {tuple(indices.shape)}); got "
            f"shape {tuple(mask.shape)}."
        )
    mask = mask.astype(dtype).reshape(mask.shape + (1,) * (indices.ndim - 1))
    return jnp.broadcast_to(mask, indices.shape)


def codebook_perplexity(indices: Array, num_codes: int, mask: Array | None = None) -> tuple[Array, Array]:
    r"""Perplexity of the average code usage, and the fraction of codes used.

    With :math:`\bar p_k` the fraction of (unmasked) positions assigned to code k,

    .. math::
        \mathrm{perplexity} = \exp\Big(-\sum_k \bar p_k \log \bar p_k\Big) \in [1, K],

    K when all codes are used equally, 1 when a single code is used.

    Args:
      indices: integer code indices of any shape, [B, ...] when `mask` is given.
      num_codes: K, the codebook size.
      mask: optional [B] weights (1 = real example, 0 = padding) over the leading axis.

    Returns:
      `(perplexity, fraction_used)`, two float32 scalars; `fraction_used` is the
      fraction of the K codes chosen at least once.

    Raises:
      TypeError: if `indices` is not an integer array.
      ValueError: if `mask` does not match the leading axis of `indices`.

    Example:
      >>> codebook_perplexity(jnp.arange(8) % 4, 8)
      (Array(4., dtype=float32), Array(0.5, dtype=float32))
    """
    fn = "codebook_perplexity"
    _check_indices(fn, indices)
    weights = _row_weights(fn, indices, mask, jnp.float32)
    one_hot = jax.nn.one_hot(indices, num_codes, dtype=jnp.float32)  # [..., K]
    counts = jnp.sum(one_hot * weights[..., None], axis=tuple(range(indices.ndim)))  # [K]
    probs = counts / jnp.maximum(jnp.sum(counts), 1e-12)
    safe = jnp.where(probs > 0, probs, 1.0)
    entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(safe), 0.0))
    return jnp.exp(entropy), jnp.mean((counts > 0).astype(jnp.float32))


# ---------------------------------------------------------------------------
# EMA codebook (an optax-style init/update pair)
# ---------------------------------------------------------------------------


class EMACodebookState(NamedTuple):
    """State of the EMA codebook.

    Attributes:
      cluster_size: [K] EMA of the number of encodings assigned to each code, N_k
        (not Laplace-smoothed; the smoothing is applied when the codebook is formed).
      embed_sum: [K, D] EMA of the sum of the encodings assigned to each code, m_k.
      codebook: [K, D] the current codes, m_k / smoothed N_k.
    """

    cluster_size: Array
    embed_sum: Array
    codebook: Array


def ema_codebook_init(codebook: Array) -> EMACodebookState:
    """The EMA state for an initial [K, D] codebook.

    Each code starts with a pseudo-count of one (`cluster_size = 1`, `embed_sum =
    codebook`), so the first updates are convex combinations of the initial code and
    the assigned encodings rather than a division by a near-zero count.

    Args:
      codebook: the initial codes [K, D] (e.g. the model's initialised embedding).

    Returns:
      An `EMACodebookState` whose `codebook` is `codebook`.
    """
    if codebook.ndim != 2:
        raise ValueError(
            f"ema_codebook_init: the codebook must have shape [K, D]; got shape "
            f"{tuple(codebook.shape)}."
        )
    return EMACodebookState(
        cluster_size=jnp.ones(codebook.shape[:1], codebook.dtype),
        embed_sum=jnp.asarray(codebook),
        codebook=jnp.asarray(codebook),
    )


def ema_codebook_update(
    state: EMACodebookState,
    z_e: Array,
    indices: Array,
    *,
    decay: float = 0.99,
    eps: float = 1e-5,
    mask: Array | None = None,
) -> EMACodebookState:
    r"""One EMA update of the codebook from a batch of encodings and their codes.

    With :math:`n_k` the number of positions assigned to code k in the batch and
    :math:`s_k` the sum of their encodings (van den Oord et al. 2017, App. A.1),

    .. math::
        N_k \leftarrow \gamma N_k + (1-\gamma) n_k, \qquad
        m_k \leftarrow \gamma m_k + (1-\gamma) s_k,

    then the cluster sizes are Laplace-smoothed (Razavi et al. 2019) so that no code
    divides by zero, and the codes are the smoothed means:

    .. math::
        \tilde N_k = \frac{N_k + \epsilon}{\sum_j N_j + K\epsilon}\sum_j N_j, \qquad
        e_k = m_k / \tilde N_k.

    With fixed assignments, `N_k -> n_k` and `e_k -> s_k / n_k` (up to O(eps)). Codes
    that are never chosen keep their value while their pseudo-count dominates eps and
    then drift towards the origin; restart dead codes yourself if that matters.

    Args:
      state: the current `EMACodebookState`.
      z_e: the encodings [B, ..., D] (gradients are not taken through this update).
      indices: their integer code indices, shape `z_e.shape[:-1]` (from
        `vector_quantize` or `nearest_code` with `state.codebook`).
      decay: gamma, the EMA decay.
      eps: the Laplace smoothing constant.
      mask: optional [B] example weights; padded examples (0) are left out.

    Returns:
      The new `EMACodebookState`.

    Raises:
      ValueError: on mismatched shapes of `z_e`, `indices`, `mask` and the codebook.
    """
    fn = "ema_codebook_update"
    _check_codebook(fn, z_e, state.codebook)
    _check_indices(fn, indices)
    if indices.shape != z_e.shape[:-1]:
        raise ValueError(
            f"{fn}: indices must have shape z_e.shape[:-1] = {tuple(z_e.shape[:-1])} (one "
            f"code per position); got indices of shape {tuple(indices.shape)} for z_e of "
            f"shape {tuple(z_e.shape)}."
        )
    z_e = jax.lax.stop_gradient(z_e)
    num_codes = state.codebook.shape[0]
    weights = _row_weights(fn, indices, mask, z_e.dtype)
    one_hot = jax.nn.one_hot(indices, num_codes, dtype=z_e.dtype) * weights[..., None]  # [..., K]
    flat_one_hot = one_hot.reshape((-1, num_codes))
    flat_z = z_e.reshape((-1, z_e.shape[-1]))
    counts = jnp.sum(flat_one_hot, axis=0)  # [K]
    sums = jnp.einsum("nk,nd->kd", flat_one_hot, flat_z, precision=jax.lax.Precision.HIGHEST)

    cluster_size = decay * state.cluster_size + (1.0 - decay) * counts
    embed_sum = decay * state.embed_sum + (1.0 - decay) * sums
    total = jnp.sum(cluster_size)
    smoothed = (cluster_size + eps) / (total + num_codes * eps) * total
    codebook = embed_sum / smoothed[:, None]
    return EMACodebookState(cluster_size=cluster_size, embed_sum=embed_sum, codebook=codebook)


# ---------------------------------------------------------------------------
# Codebook access in a parameter pytree
# ---------------------------------------------------------------------------


def get_codebook(params: Params, path: Sequence[str] = CODEBOOK_PATH) -> Array:
    """The [K, D] codebook stored at `path` in a nested-dict parameter pytree."""
    node = params
    for i, name in enumerate(path):
        try:
            node = node[name]
        except (KeyError, TypeError):
            keys = list(node.keys()) if hasattr(node, "keys") else type(node).__name__
            raise KeyError(
                f"No codebook at {tuple(path)} in the parameters: {tuple(path[:i])} holds "
                f"{keys}, without {name!r}. Pass `codebook_path=` naming where your model "
                f"keeps its [K, D] codebook (VQVAE uses {CODEBOOK_PATH})."
            ) from None
    return node


def set_codebook(params: Params, codebook: Array, path: Sequence[str] = CODEBOOK_PATH) -> Params:
    """A copy of `params` with the leaf at `path` replaced by `codebook` (same shape)."""
    old = get_codebook(params, path)
    if old.shape != codebook.shape:
        raise ValueError(
            f"set_codebook: the new codebook has shape {tuple(codebook.shape)} but the one at "
            f"{tuple(path)} has shape {tuple(old.shape)}."
        )

    def put(node, i):
        if i == len(path):
            return codebook.astype(old.dtype)
        items = dict(node)
        items[path[i]] = put(node[path[i]], i + 1)
        return type(node)(items)

    return put(params, 0)


# ---------------------------------------------------------------------------
# The loss and what a training step needs around it
# ---------------------------------------------------------------------------


def make_vqvae_loss(
    encode_fn: VQEncodeFn,
    decode_fn: VQDecodeFn,
    recon_fn: ReconFn,
    *,
    beta: float = 0.25,
    preprocess: Callable[[PRNGKey, Array, Array], Array] | None = None,
    ema: bool = False,
    codebook_path: Sequence[str] = CODEBOOK_PATH,
):
    r"""Returns `loss_fn(params, key, batch) -> (loss, aux)`, the VQ-VAE objective.

    Per example,

    .. math::
        \ell = \mathrm{recon}(x, \mathrm{dec}(z_{q,\mathrm{st}}))
               + [\text{not ema}]\ \text{codebook} + \beta\ \text{commitment},

    with the codebook and commitment terms of `vector_quantize` (squared distances
    summed over D, averaged over latent positions), and `loss` its batch mean (over the
    rows with `batch["mask"] == 1` when a mask is given).

    Args:
      encode_fn: `encode_fn(params, x) -> z_e` [B, ..., D], e.g.
        `lambda p, x: model.apply(p, x, method=VQVAE.encode)`.
      decode_fn: `decode_fn(params, z_q) -> output` (logits, means, ...).
      recon_fn: `recon_fn(x, output) -> [B]`, the reconstruction loss per example:
        a negative log-likelihood such as
        `lambda x, logits: -bernoulli_logits_log_prob(x, logits)`, or a squared error.
      beta: weight of the commitment term (0.25 in the paper).
      preprocess: optional `preprocess(key, image, index) -> x` applied to
        `batch["image"]` (e.g. dynamic binarization); otherwise the image is used as is.
      ema: if True the codebook is trained by EMA (`make_vq_ema_step`), so the codebook
        term is left out of the loss (it is still reported in aux) and the loss gives
        the codebook a zero gradient.
      codebook_path: where the [K, D] codebook lives in `params`; by default
        `params["params"]["codebook"]["embedding"]` (`VQVAE`'s layout). With
        `ema=False` it is an ordinary trainable parameter.

    Returns:
      `loss_fn`. Its aux holds per-example [B] terms only, in nats when `recon_fn`
      is a negative log-likelihood: `recon`, `codebook`, `commitment`. The code
      indices are not in aux (they are not per-example scalars): get them, for
      perplexity metrics or the EMA update, from `make_vq_codes_fn` with the same key.

    Example:
      >>> model = VQVAE(image_shape=(28, 28, 1), num_codes=512, code_dim=64)
      >>> loss_fn = make_vqvae_loss(
      ...     lambda p, x: model.apply(p, x, method=VQVAE.encode),
      ...     lambda p, z: model.apply(p, z, method=VQVAE.decode),
      ...     lambda x, logits: -bernoulli_logits_log_prob(x, logits))
    """

    def loss_fn(params, key, batch):
        x, _ = preprocessed_input(preprocess, key, batch)
        codebook = get_codebook(params, codebook_path)
        z_e = encode_fn(params, x)
        z_q_st, _, vq = vector_quantize(z_e, codebook)
        recon = recon_fn(x, decode_fn(params, z_q_st))
        per_example = recon + beta * vq["commitment"]
        if not ema:
            per_example = per_example + vq["codebook"]
        aux = {"recon": recon, "codebook": vq["codebook"], "commitment": vq["commitment"]}
        return masked_mean(per_example, batch.get("mask")), aux

    return loss_fn


def make_vq_codes_fn(
    encode_fn: VQEncodeFn,
    *,
    preprocess: Callable[[PRNGKey, Array, Array], Array] | None = None,
    codebook_path: Sequence[str] = CODEBOOK_PATH,
):
    """Returns `codes_fn(params, key, batch) -> (z_e, indices)`.

    The encodings [B, ..., D] and int32 code indices [B, ...] of a batch, with the same
    preprocessing (and, given the same `key`, the same random draw) as the loss of
    `make_vqvae_loss`. For perplexity metrics:

        z_e, idx = codes_fn(params, key, batch)
        perplexity, used = codebook_perplexity(idx, num_codes, batch.get("mask"))
    """

    def codes_fn(params, key, batch):
        x, _ = preprocessed_input(preprocess, key, batch)
        codebook = get_codebook(params, codebook_path)
        z_e = encode_fn(params, x)
        return z_e, nearest_code(z_e, codebook)

    return codes_fn


def make_vq_ema_step(
    encode_fn: VQEncodeFn,
    *,
    decay: float = 0.99,
    eps: float = 1e-5,
    preprocess: Callable[[PRNGKey, Array, Array], Array] | None = None,
    codebook_path: Sequence[str] = CODEBOOK_PATH,
):
    """Returns `ema_step(params, ema_state, key, batch) -> (params, ema_state, metrics)`.

    What a training step adds for an EMA codebook (`make_vqvae_loss(..., ema=True)`):
    after the optimizer update, call

        params, ema_state, vq_metrics = ema_step(params, ema_state, key, batch)

    with the step's key (the one the loss got, so preprocessing draws the same x). It
    encodes the batch with `params`, assigns codes with `ema_state.codebook`, applies
    `ema_codebook_update` (masked by `batch["mask"]` if present) and returns `params`
    with the codebook at `codebook_path` replaced by the new EMA codebook, so whatever
    the optimizer did to that leaf is overwritten. `metrics` holds two scalars,
    `perplexity` and `codes_used` (fraction of codes chosen in this batch).

    Create the state once with `ema_codebook_init(get_codebook(params, codebook_path))`
    and carry it next to the optimizer state (and checkpoint it).
    """

    def ema_step(params, ema_state: EMACodebookState, key, batch):
        mask = batch.get("mask")
        x, _ = preprocessed_input(preprocess, key, batch)
        z_e = encode_fn(params, x)
        # Assign with the EMA codebook (equal to the one in params after the first
        # call, whatever the optimizer did to that leaf in between).
        indices = nearest_code(z_e, ema_state.codebook)
        ema_state = ema_codebook_update(ema_state, z_e, indices, decay=decay, eps=eps, mask=mask)
        perplexity, used = codebook_perplexity(indices, ema_state.codebook.shape[0], mask)
        params = set_codebook(params, ema_state.codebook, codebook_path)
        return params, ema_state, {"perplexity": perplexity, "codes_used": used}

    return ema_step
