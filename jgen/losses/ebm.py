r"""Training objectives for energy-based models without a tractable normaliser: contrastive
divergence (CD-k), persistent CD (PCD) for the RBM, and noise-contrastive estimation (NCE).

**CD-k and PCD** (Hinton 2002; Tieleman 2008). For an RBM with free energy F the
gradient of the average negative log-likelihood of data :math:`v_{1..B}` is

.. math:: \nabla_\theta\Big[\tfrac1B\textstyle\sum_b F(v_b)\Big]
          - \mathbb E_{v\sim p_\theta}\big[\nabla_\theta F(v)\big],

whose second (model) term is intractable. CD-k replaces the model expectation by an
average over negatives :math:`\tilde v` obtained by k block-Gibbs sweeps started *at
the data*; PCD starts them at persistent chains carried from one parameter update to
the next, which, for small learning rates, stay close to the model distribution. Both
are written here as a *surrogate loss*

.. math:: \mathcal L = \tfrac1B\textstyle\sum_b F(v_b)
          - \tfrac1C\sum_c F\big(\mathrm{sg}(\tilde v_c)\big),

(sg = stop-gradient) whose `jax.grad` is exactly the CD/PCD gradient estimate; its value
is not a log-likelihood (use `jgen.models.ebm.rbm.log_likelihood_exact` or AIS for that).
CD-k's estimate is biased (it is not the gradient of any objective in general;
Carreira-Perpiñán & Hinton 2005) but points close to the likelihood gradient, and tends
to it as k grows, since the k-step chain then reaches :math:`p_\theta`.

**NCE** (Gutmann & Hyvärinen 2010, 2012) fits an unnormalised model
:math:`\log p_m(u;\theta) = \log\phi(u;\alpha) + c`, with the log-normaliser c a free
parameter, by logistic regression between data and :math:`\nu` times as many noise
samples from a known :math:`p_n`: with :math:`G(u) = \log p_m(u) - \log\nu - \log p_n(u)`,

.. math:: J(\theta) = \tfrac1B\textstyle\sum_b\Big[\operatorname{softplus}(-G(x_b))
          + \sum_{k=1}^{\nu}\operatorname{softplus}(G(y_{bk}))\Big],

the negative log-likelihood of the classifier :math:`\sigma(G)`. Its minimiser is
consistent: :math:`p_m \to p_{\text{data}}` *normalised* (so :math:`c \to -\log Z(\alpha)`)
whenever the family contains the data density and :math:`p_n > 0` where the data is.

References:
  Hinton, G. E. (2002). Training Products of Experts by Minimizing Contrastive
    Divergence. Neural Computation 14(8). https://doi.org/10.1162/089976602760128018
  Tieleman, T. (2008). Training Restricted Boltzmann Machines using Approximations to
    the Likelihood Gradient. ICML. https://doi.org/10.1145/1390156.1390290
  Carreira-Perpiñán, M. A. & Hinton, G. E. (2005). On Contrastive Divergence Learning.
    AISTATS.
  Gutmann, M. & Hyvärinen, A. (2010). Noise-contrastive estimation: A new estimation
    principle for unnormalized statistical models. AISTATS.
    https://proceedings.mlr.press/v9/gutmann10a.html
  Gutmann, M. & Hyvärinen, A. (2012). Noise-Contrastive Estimation of Unnormalized
    Statistical Models, with Applications to Natural Image Statistics. JMLR 13.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.models.ebm.rbm import check_params, check_visible, free_energy
from jgen.samplers.gibbs import gibbs_visible_step
from jgen.typing import Array, Params, PRNGKey


def _check_k(fn: str, k) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(
            f"{fn}: k (Gibbs sweeps per update) must be a Python int >= 1; received {k!r}. "
            "Under jax.jit close over it or mark it static."
        )


def cd_loss(
    params: Params,
    key: PRNGKey,
    v_data: Array,
    *,
    k: int = 1,
    persistent_chains: Array | None = None,
) -> tuple[Array, Array, dict]:
    r"""Surrogate loss whose gradient is the CD-k (or PCD-k) estimate of -grad log-likelihood.

    Negatives are k Gibbs sweeps (`jgen.samplers.gibbs.gibbs_visible_step`) from
    `v_data` (CD-k) or from `persistent_chains` (PCD-k), run with stop-gradient
    parameters; the loss is ``mean(F(v_data)) - mean(F(sg(negatives)))``.

    Args:
      params: RBM params ``{"W": [V, H], "b": [V], "c": [H]}``.
      key: a PRNG key; sweep i uses ``fold_in(key, i)``.
      v_data: a batch of binary visible vectors, [B, V].
      k: Gibbs sweeps (a Python int >= 1).
      persistent_chains: None for CD-k, or the PCD chains' visible states [C, V] (C
        need not equal B).

    Returns:
      ``(loss, new_chains, aux)``: the scalar surrogate loss; the negatives [C, V]
      (the PCD chains to carry to the next update; for CD, C = B); and `aux` with the
      per-example "free_energy_data" [B] and per-chain "free_energy_negative" [C].

    Example:
      >>> def loss_fn(params, key, v):
      ...     loss, chains, aux = cd_loss(params, key, v, k=1)
      ...     return loss, aux
      >>> grads, aux = jax.grad(loss_fn, has_aux=True)(params, key, v)
    """
    _check_k("cd_loss", k)
    v_data = check_visible("cd_loss", params, v_data)
    chains = v_data if persistent_chains is None else check_visible("cd_loss", params, persistent_chains)
    frozen = jax.lax.stop_gradient(params)
    negatives = jax.lax.fori_loop(
        0, k, lambda i, v: gibbs_visible_step(jax.random.fold_in(key, i), frozen, v), chains
    )
    negatives = jax.lax.stop_gradient(negatives)
    f_data = free_energy(params, v_data)
    f_neg = free_energy(params, negatives)
    loss = jnp.mean(f_data) - jnp.mean(f_neg)
    return loss, negatives, {"free_energy_data": f_data, "free_energy_negative": f_neg}


class PCDState(NamedTuple):
    """Persistent contrastive divergence state: the fantasy particles.

    Attributes:
      chains: visible states of the C persistent chains, [C, V].
      num_steps: parameter updates taken, int32 [].
    """

    chains: Array
    num_steps: Array


def pcd_init(key: PRNGKey, params: Params, num_chains: int, *, v_init: Array | None = None) -> PCDState:
    r"""Starts `num_chains` persistent chains at `v_init` [C, V] if given (e.g. a data
    batch), else at draws from the visible biases' independent model
    :math:`v_i \sim \mathrm{Bern}(\sigma(b_i))`."""
    num_visible, _ = check_params("pcd_init", params)
    if not isinstance(num_chains, int) or isinstance(num_chains, bool) or num_chains < 1:
        raise ValueError(f"pcd_init: num_chains must be a Python int >= 1; received {num_chains!r}.")
    if v_init is not None:
        chains = check_visible("pcd_init", params, v_init)
        if chains.shape[0] != num_chains:
            raise ValueError(
                f"pcd_init: v_init must hold num_chains={num_chains} states; received shape {chains.shape}."
            )
    else:
        p = jax.nn.sigmoid(params["b"])
        chains = jax.random.bernoulli(key, p[None], (num_chains, num_visible)).astype(p.dtype)
    return PCDState(chains=chains, num_steps=jnp.zeros((), jnp.int32))


def pcd_step(
    params: Params, key: PRNGKey, state: PCDState, v_data: Array, *, k: int = 1
) -> tuple[Array, PCDState, dict]:
    """PCD-k (Tieleman 2008): `cd_loss` from the persistent chains, advancing them.

    Returns ``(loss, new_state, aux)``; differentiate with, e.g.,

      >>> def loss_fn(params, key, state, v):
      ...     loss, state, aux = pcd_step(params, key, state, v, k=1)
      ...     return loss, (state, aux)
      >>> grads, (state, aux) = jax.grad(loss_fn, has_aux=True)(params, key, state, v)
    """
    loss, chains, aux = cd_loss(params, key, v_data, k=k, persistent_chains=state.chains)
    return loss, PCDState(chains=chains, num_steps=state.num_steps + 1), aux


def nce_loss(
    log_model_fn: Callable[[Params, Array], Array],
    params: Params,
    key: PRNGKey,
    x_data: Array,
    noise_sample_fn: Callable[[PRNGKey, int], Array],
    noise_log_prob_fn: Callable[[Array], Array],
    *,
    nu: int = 1,
) -> tuple[Array, dict]:
    r"""Noise-contrastive estimation loss (Gutmann & Hyvärinen 2010) for an unnormalised model.

    Draws :math:`\nu B` noise samples, noise sample i paired with example
    :math:`\lfloor i/\nu\rfloor`, and returns the mean over examples of
    :math:`\operatorname{softplus}(-G(x_b)) + \sum_k\operatorname{softplus}(G(y_{bk}))`,
    :math:`G = \log p_m - \log\nu - \log p_n`.

    Args:
      log_model_fn: ``(params, u [N, ...]) -> [N]``, the model's log-density *including*
        its learned log-normaliser parameter c (e.g. ``-energy(params, u) + params["c"]``);
        NCE fits c along with the rest.
      params: the model parameters.
      key: a PRNG key for the noise samples.
      x_data: a batch of data, [B, ...].
      noise_sample_fn: ``(key, n) -> [n, ...]``, samples of the noise :math:`p_n`.
      noise_log_prob_fn: ``u [N, ...] -> [N]``, the normalised :math:`\log p_n`.
      nu: noise samples per data sample (a Python int >= 1); larger :math:`\nu` lowers
        the estimator's variance toward that of maximum likelihood.

    Returns:
      ``(loss, aux)``: the scalar loss and per-example terms [B], "data_term"
      (:math:`\operatorname{softplus}(-G(x_b))`) and "noise_term" (the sum over the
      example's :math:`\nu` noise samples).

    Raises:
      ValueError: for a bad `nu`, a data batch without a batch axis, or functions
        that return the wrong shapes.
    """
    if not isinstance(nu, int) or isinstance(nu, bool) or nu < 1:
        raise ValueError(f"nce_loss: nu (noise samples per data sample) must be a Python int >= 1; received {nu!r}.")
    x_data = jnp.asarray(x_data)
    if x_data.ndim < 1 or x_data.shape[0] < 1:
        raise ValueError(f"nce_loss: x_data must be a batch [B, ...] with B >= 1; received shape {x_data.shape}.")
    b = x_data.shape[0]
    y = noise_sample_fn(key, nu * b)
    if jnp.shape(y) != (nu * b,) + x_data.shape[1:]:
        raise ValueError(
            f"nce_loss: noise_sample_fn(key, {nu * b}) must return samples shaped like the data, "
            f"{(nu * b,) + x_data.shape[1:]}; it returned shape {jnp.shape(y)}."
        )

    def log_ratio(u, name):  # G(u) = log p_m(u) - log nu - log p_n(u), [N]
        lm, ln = log_model_fn(params, u), noise_log_prob_fn(u)
        for fname, v in (("log_model_fn", lm), ("noise_log_prob_fn", ln)):
            if jnp.shape(v) != u.shape[:1]:
                raise ValueError(
                    f"nce_loss: {fname} must return one log-density per {name} sample, shape "
                    f"{u.shape[:1]}; it returned shape {jnp.shape(v)}."
                )
        return lm - ln - math.log(nu)

    data_term = jax.nn.softplus(-log_ratio(x_data, "data"))  # -log sigma(G(x))
    noise_term = jnp.sum(jax.nn.softplus(log_ratio(y, "noise")).reshape(b, nu), axis=1)  # -log(1 - sigma(G(y)))
    return jnp.mean(data_term + noise_term), {"data_term": data_term, "noise_term": noise_term}
