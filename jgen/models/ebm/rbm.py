r"""The Bernoulli-Bernoulli restricted Boltzmann machine (RBM) as pure functions.

An RBM with V binary visible units v and H binary hidden units h has energy and joint

.. math::
    E(v, h) = -b^\top v - c^\top h - v^\top W h, \qquad
    p(v, h) = e^{-E(v, h)}/Z,\quad Z = \sum_{v, h} e^{-E(v, h)},

with parameters W [V, H], b [V] and c [H]. The graph is bipartite, so both
conditionals factorise into independent Bernoullis,

.. math::
    p(h_j = 1 \mid v) = \sigma(c_j + v^\top W_{:j}),\qquad
    p(v_i = 1 \mid h) = \sigma(b_i + W_{i:} h),

and h sums out in closed form, giving the free energy

.. math:: F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j}),
          \qquad p(v) = e^{-F(v)}/Z.

The parameters are a plain dict pytree ``{"W": [V, H], "b": [V], "c": [H]}`` (no Flax
module: an RBM has no architecture beyond these three arrays, and a dict differentiates,
optimises and checkpoints like any other params pytree). Every function takes visible or
hidden states as a batch [B, V] / [B, H] of 0/1 values (float, int or bool); concrete
inputs are checked to be binary (traced ones cannot be). :math:`\log Z` is exact by
enumerating the smaller layer (`log_partition_exact`, up to 2^20 states); for larger
RBMs use AIS (`jgen.metrics.rbm_ais`). Sampling is block Gibbs (`jgen.samplers.gibbs`);
training is CD-k / PCD (`jgen.losses.rbm`).

References:
  Smolensky, P. (1986). Information processing in dynamical systems: foundations of
    harmony theory. Parallel Distributed Processing, vol. 1, ch. 6.
  Hinton, G. E. (2002). Training Products of Experts by Minimizing Contrastive
    Divergence. Neural Computation 14(8). https://doi.org/10.1162/089976602760128018
  Hinton, G. E. (2010). A Practical Guide to Training Restricted Boltzmann Machines.
    UTML TR 2010-003. https://www.cs.toronto.edu/~hinton/absps/guideTR.pdf
"""

import jax
import jax.numpy as jnp
import numpy as np

from jgen.typing import Array, Params, PRNGKey

MAX_ENUMERATION_UNITS = 20


def rbm_init(
    key: PRNGKey, num_visible: int, num_hidden: int, *, weight_scale: float = 0.01, dtype=jnp.float32
) -> Params:
    """RBM parameters ``{"W": N(0, weight_scale^2) [V, H], "b": 0 [V], "c": 0 [H]}``.

    The small random weights and zero biases follow Hinton's practical guide (2010,
    Sec. 8); set ``b = log(m / (1 - m))`` from the data means m for faster learning.
    """
    for name, n in (("num_visible", num_visible), ("num_hidden", num_hidden)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"rbm_init: {name} must be a Python int >= 1; received {n!r}.")
    return {
        "W": weight_scale * jax.random.normal(key, (num_visible, num_hidden), dtype),
        "b": jnp.zeros((num_visible,), dtype),
        "c": jnp.zeros((num_hidden,), dtype),
    }


def check_params(fn: str, params: Params) -> tuple[int, int]:
    """Validates an RBM params dict and returns (V, H)."""
    if not isinstance(params, dict) or set(params) != {"W", "b", "c"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            f'{fn}: params must be a dict {{"W": [V, H], "b": [V], "c": [H]}} (see rbm_init); '
            f"received {got}."
        )
    w, b, c = (jnp.shape(params[k]) for k in ("W", "b", "c"))
    if len(w) != 2 or b != w[:1] or c != w[1:]:
        raise ValueError(
            f'{fn}: RBM params must have shapes W [V, H], b [V], c [H]; received W {w}, '
            f"b {b}, c {c}."
        )
    return w[0], w[1]


def _check_binary(fn: str, name: str, x, size: int, dtype) -> Array:
    """[B, size] 0/1 states as `dtype`; values checked when concrete."""
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != size:
        raise ValueError(
            f"{fn}: {name} must be a batch of binary states of shape [B, {size}]; received "
            f"shape {x.shape}. For one state pass x[None]."
        )
    if not isinstance(x, jax.core.Tracer) and x.size:
        xv = np.asarray(x)
        bad = ~((xv == 0) | (xv == 1))
        if bad.any():
            raise ValueError(
                f"{fn}: {name} must be binary (0/1) for a Bernoulli RBM; received values "
                f"such as {xv[bad][:5].tolist()}. Binarise the data first, e.g. "
                "(x > 0.5).astype(jnp.float32), or sample jax.random.bernoulli(key, x)."
            )
    return x.astype(dtype)


def check_visible(fn: str, params: Params, v) -> Array:
    """Validates visible states [B, V] against `params` and casts them to its dtype."""
    num_visible, _ = check_params(fn, params)
    return _check_binary(fn, "visible states v", v, num_visible, params["W"].dtype)


def check_hidden(fn: str, params: Params, h) -> Array:
    """Validates hidden states [B, H] against `params` and casts them to its dtype."""
    _, num_hidden = check_params(fn, params)
    return _check_binary(fn, "hidden states h", h, num_hidden, params["W"].dtype)


def energy(params: Params, v: Array, h: Array) -> Array:
    r""":math:`E(v, h) = -b^\top v - c^\top h - v^\top W h`, [B] for v [B, V], h [B, H]."""
    v = check_visible("energy", params, v)
    h = check_hidden("energy", params, h)
    if v.shape[0] != h.shape[0]:
        raise ValueError(f"energy: v and h need the same batch size; received {v.shape} and {h.shape}.")
    return -(v @ params["b"] + h @ params["c"] + jnp.sum((v @ params["W"]) * h, axis=-1))


def free_energy(params: Params, v: Array) -> Array:
    r""":math:`F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j})`, [B].

    :math:`-F(v) = \log\sum_h e^{-E(v, h)}`, so :math:`\log p(v) = -F(v) - \log Z`.
    """
    v = check_visible("free_energy", params, v)
    return -(v @ params["b"]) - jnp.sum(jax.nn.softplus(v @ params["W"] + params["c"][None]), axis=-1)


def hidden_probs(params: Params, v: Array) -> Array:
    r""":math:`p(h_j = 1 \mid v) = \sigma(c_j + v^\top W_{:j})`, [B, H] for v [B, V]."""
    v = check_visible("hidden_probs", params, v)
    return jax.nn.sigmoid(v @ params["W"] + params["c"][None])


def visible_probs(params: Params, h: Array) -> Array:
    r""":math:`p(v_i = 1 \mid h) = \sigma(b_i + W_{i:} h)`, [B, V] for h [B, H]."""
    h = check_hidden("visible_probs", params, h)
    return jax.nn.sigmoid(h @ params["W"].T + params["b"][None])


def binary_states(n: int, dtype=jnp.float32) -> Array:
    """All 2^n binary vectors, [2^n, n]; row i holds the bits of i, least significant first."""
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_ENUMERATION_UNITS:
        raise ValueError(
            f"binary_states: n must be a Python int in [0, {MAX_ENUMERATION_UNITS}] (2^n rows); "
            f"received {n!r}."
        )
    return _bits(jnp.arange(1 << n, dtype=jnp.int32), n, dtype)


def _bits(idx: Array, n: int, dtype) -> Array:
    return ((idx[:, None] >> jnp.arange(n, dtype=jnp.int32)[None]) & 1).astype(dtype)


def log_partition_exact(params: Params, *, block_size: int = 4096) -> Array:
    r"""Exact :math:`\log Z` by enumerating the smaller layer, a scalar.

    Summing out the larger layer in closed form leaves a sum over :math:`2^{\min(V, H)}`
    states of the smaller one:

    .. math::
        \log Z = \operatorname{logsumexp}_{v}\big[-F(v)\big]
               = \operatorname{logsumexp}_{h}\Big[c^\top h + \sum_i
                 \operatorname{softplus}(b_i + W_{i:}h)\Big].

    States are generated from their integer index in blocks of `block_size` (a
    vectorised `lax.map` over blocks; memory O(block_size * max(V, H))), and combined
    with `logsumexp`, which is stable in the params' dtype; pass float64 params (under
    ``jax.enable_x64``) for a reference value.

    Args:
      params: RBM params ``{"W", "b", "c"}``.
      block_size: states per block (rounded to a power of two, at most 2^min(V, H)).

    Returns:
      :math:`\log Z`, a scalar in the params' dtype.

    Raises:
      ValueError: if min(V, H) > 20 (over a million states); estimate log Z with
        `jgen.metrics.rbm_ais.rbm_ais_log_partition` instead.
    """
    num_visible, num_hidden = check_params("log_partition_exact", params)
    n = min(num_visible, num_hidden)
    if n > MAX_ENUMERATION_UNITS:
        raise ValueError(
            f"log_partition_exact: enumeration needs 2^min(V, H) states and is limited to "
            f"min(V, H) <= {MAX_ENUMERATION_UNITS}; received an RBM with V={num_visible}, "
            f"H={num_hidden} (2^{n} states). Estimate log Z with "
            "jgen.metrics.rbm_ais.rbm_ais_log_partition instead."
        )
    w, b, c = params["W"], params["b"], params["c"]
    if num_visible <= num_hidden:  # enumerate v; sum h out
        def log_terms(s):
            return s @ b + jnp.sum(jax.nn.softplus(s @ w + c[None]), axis=-1)
    else:  # enumerate h; sum v out
        def log_terms(s):
            return s @ c + jnp.sum(jax.nn.softplus(s @ w.T + b[None]), axis=-1)

    total = 1 << n
    block = min(total, 1 << max(0, int(block_size) - 1).bit_length())
    num_blocks = total // block

    def block_lse(k):
        return jax.nn.logsumexp(log_terms(_bits(k * block + jnp.arange(block, dtype=jnp.int32), n, w.dtype)))

    return jax.nn.logsumexp(jax.lax.map(block_lse, jnp.arange(num_blocks, dtype=jnp.int32)))


def log_likelihood_exact(params: Params, v: Array) -> Array:
    r"""Exact :math:`\log p(v) = -F(v) - \log Z`, [B] for v [B, V] (min(V, H) <= 20)."""
    v = check_visible("log_likelihood_exact", params, v)
    return -free_energy(params, v) - log_partition_exact(params)
