r"""Block Gibbs sampling of a Bernoulli-Bernoulli RBM over a batch of independent chains.

An RBM's conditionals factorise (`jgen.models.ebm.rbm`), so a whole layer is sampled
at once: one Gibbs step draws

.. math:: v' \sim p(v \mid h) = \prod_i \mathrm{Bern}\big(\sigma(b_i + W_{i:}h)\big),\qquad
          h' \sim p(h \mid v') = \prod_j \mathrm{Bern}\big(\sigma(c_j + v'^\top W_{:j})\big).

Each half-step leaves the joint :math:`p(v, h)` invariant, so a step does too, and the
chain is irreducible (every conditional probability is in (0, 1)). Marginally the
visible states follow the Markov kernel :math:`T(v'|v) = \sum_h p(h|v)\,p(v'|h)`,
which leaves :math:`p(v)` invariant; that kernel is `gibbs_visible_step`, the
transition CD-k, PCD and AIS use.

``gibbs_init`` / ``gibbs_step`` are the init/step pair over a `GibbsState` (visible and
hidden states of C chains), ``gibbs_run`` takes k steps in one ``fori_loop``, and
``gibbs_sample`` keeps every `thin`-th state in one ``lax.scan``.

References:
  Geman, S. & Geman, D. (1984). Stochastic Relaxation, Gibbs Distributions, and the
    Bayesian Restoration of Images. IEEE TPAMI 6(6).
  Hinton, G. E. (2002). Training Products of Experts by Minimizing Contrastive
    Divergence. Neural Computation 14(8).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.models.ebm.rbm import check_hidden, check_visible, hidden_probs, visible_probs
from jgen.typing import Array, Params, PRNGKey


class GibbsState(NamedTuple):
    """State of C block-Gibbs chains of an RBM.

    Attributes:
      visible: visible states, [C, V] (0/1 in the params' dtype).
      hidden: hidden states drawn from p(h | visible), [C, H].
      num_steps: number of Gibbs steps taken, int32 [].
    """

    visible: Array
    hidden: Array
    num_steps: Array


def sample_hidden(key: PRNGKey, params: Params, v: Array) -> tuple[Array, Array]:
    """``(h, p)``: h ~ p(h | v) [B, H] in the params' dtype, and p = p(h = 1 | v)."""
    p = hidden_probs(params, v)
    return jax.random.bernoulli(key, p).astype(p.dtype), p


def sample_visible(key: PRNGKey, params: Params, h: Array) -> tuple[Array, Array]:
    """``(v, p)``: v ~ p(v | h) [B, V] in the params' dtype, and p = p(v = 1 | h)."""
    p = visible_probs(params, h)
    return jax.random.bernoulli(key, p).astype(p.dtype), p


def gibbs_visible_step(key: PRNGKey, params: Params, v: Array) -> Array:
    r"""One v -> h -> v' sweep, :math:`h \sim p(h|v)`, :math:`v' \sim p(v|h)`: a kernel on v
    leaving p(v) invariant. Returns v' [B, V]."""
    key_h, key_v = jax.random.split(key)
    h, _ = sample_hidden(key_h, params, v)
    return sample_visible(key_v, params, h)[0]


def gibbs_init(key: PRNGKey, params: Params, v0: Array) -> GibbsState:
    """Starts C chains at visible states `v0` [C, V] (binary), drawing h ~ p(h | v0)."""
    v0 = check_visible("gibbs_init", params, v0)
    h0, _ = sample_hidden(key, params, v0)
    return GibbsState(visible=v0, hidden=h0, num_steps=jnp.zeros((), jnp.int32))


def gibbs_step(key: PRNGKey, params: Params, state: GibbsState) -> GibbsState:
    """One block-Gibbs step per chain: v ~ p(v | h), then h ~ p(h | v)."""
    check_hidden("gibbs_step", params, state.hidden)
    key_v, key_h = jax.random.split(key)
    v, _ = sample_visible(key_v, params, state.hidden)
    h, _ = sample_hidden(key_h, params, v)
    return GibbsState(visible=v, hidden=h, num_steps=state.num_steps + 1)


def gibbs_run(key: PRNGKey, params: Params, state: GibbsState, num_steps) -> GibbsState:
    """`num_steps` Gibbs steps in one ``fori_loop`` (step i uses ``fold_in(key, i)``)."""
    return jax.lax.fori_loop(
        0, num_steps, lambda i, s: gibbs_step(jax.random.fold_in(key, i), params, s), state
    )


def gibbs_sample(
    key: PRNGKey,
    params: Params,
    v0: Array,
    *,
    num_steps: int,
    num_burnin: int = 0,
    thin: int = 1,
) -> tuple[Array, dict]:
    """Runs C block-Gibbs chains of an RBM from `v0` on device.

    Args:
      key: a PRNG key.
      params: RBM params ``{"W": [V, H], "b": [V], "c": [H]}``.
      v0: initial visible states, binary [C, V].
      num_steps: Gibbs steps after burn-in (a Python int); every `thin`-th state is
        kept, S = num_steps // thin.
      num_burnin: steps discarded first (a Python int).
      thin: keep one state every `thin` steps.

    Returns:
      ``(samples, info)``: `samples`, the visible states [S, C, V]; `info` a dict with
      "hidden" [S, C, H] (the hidden states paired with them: together exact draws of
      the joint once the chains have mixed) and "state", the final `GibbsState`.

    Example:
      >>> params = rbm_init(jax.random.PRNGKey(0), 4, 3, weight_scale=1.0)
      >>> v, info = gibbs_sample(jax.random.PRNGKey(1), params, jnp.zeros((100, 4)),
      ...                        num_steps=50, num_burnin=20, thin=5)
      >>> v.shape
      (10, 100, 4)
    """
    for name, n, lo in (("num_steps", num_steps, 1), ("num_burnin", num_burnin, 0), ("thin", thin, 1)):
        if not isinstance(n, int) or isinstance(n, bool) or n < lo:
            raise ValueError(
                f"gibbs_sample: {name} must be a Python int >= {lo}; received {n!r}. Under "
                "jax.jit close over it or mark it static."
            )
    if num_steps < thin:
        raise ValueError(f"gibbs_sample: num_steps={num_steps} < thin={thin} keeps no samples.")
    key_init, key_burn, key_run = jax.random.split(key, 3)
    state = gibbs_run(key_burn, params, gibbs_init(key_init, params, v0), num_burnin)

    def keep(state, s):
        state = gibbs_run(jax.random.fold_in(key_run, s), params, state, thin)
        return state, (state.visible, state.hidden)

    state, (visible, hidden) = jax.lax.scan(keep, state, jnp.arange(num_steps // thin))
    return visible, {"hidden": hidden, "state": state}
