r"""Contrastive divergence for deep energy-based models, with Langevin (SGLD) negatives and
energy / gradient regularisation (Du & Mordatch 2019).

For :math:`p_\theta(x) = e^{-E_\theta(x)}/Z(\theta)` the gradient of the average
negative log-likelihood of data :math:`x_{1..B}` is

.. math:: \nabla_\theta\Big[\tfrac1B\textstyle\sum_b E_\theta(x_b)\Big]
          - \mathbb E_{x\sim p_\theta}\big[\nabla_\theta E_\theta(x)\big].

The model expectation is estimated with negatives :math:`\tilde x_b` from a few steps of
Langevin dynamics on :math:`p_\theta` (`langevin_negatives`; started from a replay buffer,
`jgen.samplers.replay_buffer`), giving the surrogate loss `ebm_cd_loss`

.. math:: \mathcal L = \tfrac1B\textstyle\sum_b\Big[E_\theta(x_b) - E_\theta(\mathrm{sg}(\tilde x_b))
          + \alpha\big(E_\theta(x_b)^2 + E_\theta(\tilde x_b)^2\big)
          + \gamma\big(\|\nabla_x E_\theta(x_b)\|^2 + \|\nabla_x E_\theta(\tilde x_b)\|^2\big)\Big],

(sg = stop-gradient: the negatives are constants, no gradient flows through the chain)
whose first two terms have exactly the CD gradient above. Its value is not a
log-likelihood: it is near 0 when data and negatives have equal energies, and negative
while the model still separates them. The :math:`\alpha` term is Du & Mordatch's energy
regulariser (Sec. 3.3, :math:`\alpha = 1`): without it the two energies can drift
together to large magnitudes, since the CD term only sees their difference. The
:math:`\gamma` term (off by default) penalises the input gradient at data and negatives
(the R1 penalty of `jgen.losses.gan.r1_penalty` applied to the energy), smoothing the
landscape the Langevin chains follow.

`langevin_negatives` runs SGLD (`jgen.samplers.langevin.sgld_step`) on
:math:`\log p_\theta = -E_\theta + \text{const}`,

.. math:: x_{k+1} = \operatorname{clip}\big(x_k - \tfrac h2\nabla_x E_\theta(x_k)
          + \sqrt h\,\lambda\,z_k\big),

in one `lax.fori_loop`. In Du & Mordatch's notation (:math:`x - \lambda_g\nabla E + \omega`,
:math:`\omega\sim\mathcal N(0, \sigma^2)`) :math:`h = 2\lambda_g` and
:math:`\lambda = \sigma/\sqrt h`; they use :math:`\lambda_g = 10`, :math:`\sigma = 0.005`
and 60 steps; JEM (Grathwohl et al. 2020) :math:`\lambda_g = 1`, :math:`\sigma = 0.01` and 20.
With :math:`\lambda = 1` and no clipping it is exactly ULA on :math:`p_\theta`.

References:
  Du, Y. & Mordatch, I. (2019). Implicit Generation and Generalization in Energy-Based
    Models. NeurIPS. https://arxiv.org/abs/1903.08689
  Hinton, G. E. (2002). Training Products of Experts by Minimizing Contrastive
    Divergence. Neural Computation 14(8). https://doi.org/10.1162/089976602760128018
  Grathwohl, W. et al. (2020). Your Classifier is Secretly an Energy Based Model and You
    Should Treat it Like One. ICLR. https://arxiv.org/abs/1912.03263
  Welling, M. & Teh, Y. W. (2011). Bayesian Learning via Stochastic Gradient Langevin
    Dynamics. ICML.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jgen.losses.gan import r1_penalty
from jgen.samplers.langevin import sgld_step
from jgen.typing import Array, Params, PRNGKey

# energy_fn(params, x [B, ...]) -> energies [B] (lower = more likely)
EnergyFn = Callable[[Params, Array], Array]


def _energies(fn: str, energy_fn: EnergyFn, params: Params, x: Array, name: str) -> Array:
    e = energy_fn(params, x)
    if jnp.shape(e) != x.shape[:1]:
        raise ValueError(f"{fn}: energy_fn(params, {name}) must return one energy per example, shape "
                         f"{x.shape[:1]}; it returned shape {jnp.shape(e)}.")
    return e


def langevin_negatives(key: PRNGKey, energy_fn: EnergyFn, params: Params, x0: Array, *, num_steps: int,
                       step_size, noise_scale, clip=(-1.0, 1.0)) -> Array:
    r"""Negative samples: `num_steps` SGLD steps on :math:`e^{-E_\theta}` from `x0`, on device.

    Step k is ``sgld_step(fold_in(key, k), x, -grad_x E, step_size, noise_scale, clip)``
    (module docstring); the gradient is taken with respect to x only (the parameters are
    held constant), and the result is wrapped in `stop_gradient`, so the negatives are
    constants to a surrounding `jax.grad` over the parameters.

    Args:
      key: a PRNG key.
      energy_fn: ``(params, x [B, ...]) -> [B]``, example b depending on ``x[b]`` only.
      params: the energy's parameters.
      x0: the chains' starting points, a floating [B, ...] array (e.g. from
        `jgen.samplers.replay_buffer.replay_sample`).
      num_steps: the number of SGLD steps (a Python int >= 0; 0 returns `x0`).
      step_size: h > 0, a scalar or per-chain [B].
      noise_scale: :math:`\lambda`, the multiplier of the :math:`\sqrt h` noise (1 = ULA).
      clip: the box the chains are clamped to after every step, (low, high) or a positive
        number c for [-c, c], or None (default the image range (-1, 1)).

    Returns:
      The chains' end points, shape and dtype of `x0`.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
        raise ValueError(f"langevin_negatives: num_steps must be a Python int >= 0; received {num_steps!r}. "
                         "Under jax.jit close over it or mark it static.")
    x0 = jnp.asarray(x0)
    params = jax.lax.stop_gradient(params)
    out = jax.eval_shape(energy_fn, params, x0)  # a shape check only, no FLOPs
    if out.shape != x0.shape[:1]:
        raise ValueError(f"langevin_negatives: energy_fn(params, x0) must return one energy per chain, shape "
                         f"{x0.shape[:1]}; it returned shape {out.shape}.")

    def grad_log_p(x):  # -grad_x E(x), per example (the energies are summed over the batch)
        return jax.grad(lambda y: -jnp.sum(energy_fn(params, y)))(x)

    def body(k, x):
        return sgld_step(jax.random.fold_in(key, k), x, grad_log_p, step_size=step_size,
                         noise_scale=noise_scale, clip=clip)

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, num_steps, body, x0))


def ebm_cd_loss(energy_fn: EnergyFn, params: Params, x_data: Array, x_neg: Array, *, alpha=1.0,
                grad_weight: float = 0.0) -> tuple[Array, dict]:
    r"""The contrastive-divergence surrogate loss of a deep EBM (module docstring).

    Per example b:
    :math:`E(x_b) - E(\mathrm{sg}(\tilde x_b)) + \alpha(E(x_b)^2 + E(\tilde x_b)^2)`
    :math:`+\ \gamma(\|\nabla_x E(x_b)\|^2 + \|\nabla_x E(\tilde x_b)\|^2)`; the loss is
    their mean, whose gradient in the parameters is the CD estimate of the NLL gradient
    plus the regularisers'.

    Args:
      energy_fn: ``(params, x [B, ...]) -> [B]``.
      params: the energy's parameters (differentiate the loss with respect to these).
      x_data: a batch of data [B, ...].
      x_neg: as many negatives [B, ...] (e.g. `langevin_negatives`); gradients never flow
        into them.
      alpha: :math:`\alpha \ge 0`, the weight of the energy regulariser (Du & Mordatch: 1).
      grad_weight: :math:`\gamma \ge 0`, the weight of the input-gradient penalty (a Python
        float; 0 = off, which also skips its computation).

    Returns:
      ``(loss, aux)``: the scalar loss and per-example terms [B]: "cd"
      (:math:`E(x_b) - E(\tilde x_b)`), "energy_reg" (:math:`E(x_b)^2 + E(\tilde x_b)^2`),
      "energy_data", "energy_neg", and "grad_penalty" when `grad_weight` > 0.

    Raises:
      ValueError: if the batches' shapes differ or `energy_fn` returns the wrong shape.
    """
    x_data, x_neg = jnp.asarray(x_data), jax.lax.stop_gradient(jnp.asarray(x_neg))
    if x_data.ndim < 1 or x_data.shape != x_neg.shape:
        raise ValueError(f"ebm_cd_loss: x_data and x_neg must be batches of the same shape [B, ...] (one "
                         f"negative per example); received {x_data.shape} and {x_neg.shape}.")
    if not isinstance(grad_weight, (int, float)) or isinstance(grad_weight, bool) or grad_weight < 0:
        raise ValueError(f"ebm_cd_loss: grad_weight must be a Python float >= 0; received {grad_weight!r}.")
    e_data = _energies("ebm_cd_loss", energy_fn, params, x_data, "x_data")
    e_neg = _energies("ebm_cd_loss", energy_fn, params, x_neg, "x_neg")
    cd = e_data - e_neg
    reg = jnp.square(e_data) + jnp.square(e_neg)
    per_example = cd + alpha * reg
    aux = {"cd": cd, "energy_reg": reg, "energy_data": e_data, "energy_neg": e_neg}
    if grad_weight > 0:
        def energy(x):
            return energy_fn(params, x)

        gp = r1_penalty(energy, x_data) + r1_penalty(energy, x_neg)
        aux["grad_penalty"] = gp
        per_example = per_example + grad_weight * gp
    return jnp.mean(per_example), aux


__all__ = ["EnergyFn", "ebm_cd_loss", "langevin_negatives"]
