"""Two likelihoods of one trained score model, in the order theory and practice put
them: entropy <= ODE NLL <= variational bound.

A small MLP is fitted with the score-SDE loss on a 2-D Gaussian mixture. Its
probability-flow ODE defines a normalised density, so its NLL on data is a
cross-entropy, >= the data's entropy (estimated exactly from the mixture's log-density
on the same points). The DDPM variational bound of the same network (run on the SDE's
matched discrete schedule through `jgen.sde.adapters`) bounds the NLL of the
discretised reverse process and is looser than the ODE's exact likelihood (Song et al.
2021, Table 2: ODE 3.13 bits/dim vs the DDPM bound's <= 3.70 on CIFAR-10).
"""

import math

import jax
import jax.numpy as jnp
import optax

from jgen.losses.diffusion import ddpm_vlb_terms, sde_loss
from jgen.metrics.ode_likelihood import ode_log_prob
from jgen.models.diffusion import ScoreMLP
from jgen.sde import VPSDE, ring_mixture, to_score
from jgen.sde.adapters import discrete_schedule_from_sde, eps_fn_from_score


def test_entropy_le_ode_nll_le_variational_bound_of_a_trained_model():
    gmm, sde = ring_mixture(4, radius=2.0, std=0.5), VPSDE()
    net = ScoreMLP(hidden=(64, 64), embed_dim=16, embedding="fourier", fourier_scale=1.0)
    params = net.init({"params": jax.random.key(0)}, jnp.zeros((1, 2)), jnp.zeros((1,)))
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, 600))
    opt_state = opt.init(params)

    def model_fn(p, x, t, labels):
        return net.apply(p, x, t)

    @jax.jit
    def step(p, opt_state, key):
        k1, k2 = jax.random.split(key)
        x0 = gmm.sample(k1, 256)
        _, grads = jax.value_and_grad(lambda p: jnp.mean(sde_loss(model_fn, p, k2, x0, sde=sde)[0]))(p)
        updates, opt_state = opt.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    for i in range(600):
        params, opt_state = step(params, opt_state, jax.random.fold_in(jax.random.key(1), i))
        if i % 16 == 0:
            jax.block_until_ready(params)

    def score(x, t):
        return to_score(net.apply(params, x, t), x, *sde.marginal(t), "eps")

    n = 512
    x = gmm.sample(jax.random.key(2), n)
    entropy_terms = -gmm.log_prob(x)
    ode_nll = -jax.jit(lambda x: ode_log_prob(score, x, sde=sde, trace="exact")[0])(x)
    steps = 1000
    eps_fn = eps_fn_from_score(score, sde, steps)
    vlb = jax.jit(lambda x: ddpm_vlb_terms(lambda p, x, k, y: eps_fn(x, k), None, x,
                                           schedule=discrete_schedule_from_sde(sde, steps), key=jax.random.key(3),
                                           prediction="eps", decoder="gaussian")["total"])(x)

    def mean_and_se(v):
        return float(jnp.mean(v)), float(jnp.std(v)) / math.sqrt(n)

    gap_ode, se_ode = mean_and_se(ode_nll - entropy_terms)  # paired: KL(p || q_ODE) >= 0
    gap_vlb, se_vlb = mean_and_se(vlb - ode_nll)
    assert gap_ode > -3 * se_ode, (gap_ode, se_ode)
    assert gap_ode < 0.5  # the fit is good: within half a nat of the entropy
    assert gap_vlb > 3 * se_vlb, (gap_vlb, se_vlb)
