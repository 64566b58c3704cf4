"""f-GAN divergences (`jgen.losses.fgan`) derived from the definition, for every entry of
the table.

Convention (Nowozin et al. 2016, Eqs. 4-6): P = data, Q = model,
D_f(P||Q) = E_Q[f(p/q)] >= E_P[T] - E_Q[f*(T)], tight at T* = f'(p/q).

References used:
- (a) convexity: numeric second differences of f on a grid; f(1) = 0.
- (b) conjugate: f*(t) = sup_{u>0} (u t - f(u)) by a dense grid over u refined with
  scipy.optimize.minimize_scalar, at t = g_f(v) for a few v.
- (c) the true divergences written independently of the library in numpy from their
  integral definitions (KL = int p log(p/q), Pearson = int (p-q)^2/q, ...), integrated by
  scipy.integrate.quad for two 1-D Gaussians and summed exactly for two discrete
  distributions; the KL and Pearson values are also checked against their Gaussian closed forms.
- (d) the bound is concave in T and maximised at T*: critics on the segment from T* to a
  constant critic give monotonically smaller values, all below D_f.
- (e) the activation maps R into dom f*, and the fused f*(g_f(v)) equals the composition.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats

from jgen.losses.fgan import (
    FDIVERGENCES,
    FDivergence,
    fgan_d_loss,
    fgan_g_loss,
    get_fdivergence,
    variational_bound,
)

NAMES = sorted(FDIVERGENCES)

# The divergences from their definitions, as integrands of (p, q) (numpy; independent of the library).
REFERENCE = {
    "kl": lambda p, q: p * np.log(p / q),
    "reverse_kl": lambda p, q: q * np.log(q / p),
    "js": lambda p, q: 0.5 * p * np.log(2 * p / (p + q)) + 0.5 * q * np.log(2 * q / (p + q)),
    "pearson": lambda p, q: (p - q) ** 2 / q,
    "neyman": lambda p, q: (p - q) ** 2 / p,
    "hellinger": lambda p, q: (np.sqrt(p) - np.sqrt(q)) ** 2,
    "tv": lambda p, q: 0.5 * np.abs(p - q),
}

P = scipy.stats.norm(0.0, 1.0)  # data
Q = scipy.stats.norm(0.5, 1.2)  # model (wide enough that Pearson and Neyman chi^2 are finite)
P_DISCRETE = np.array([0.1, 0.25, 0.05, 0.3, 0.2, 0.1])
Q_DISCRETE = np.array([0.2, 0.2, 0.15, 0.1, 0.25, 0.1])  # p = q in the last cell


def test_table_is_complete_and_registry_errors():
    assert set(NAMES) == set(REFERENCE)
    assert all(isinstance(d, FDivergence) and d.name == n for n, d in FDIVERGENCES.items())
    assert get_fdivergence("kl") is FDIVERGENCES["kl"]
    with pytest.raises(ValueError, match="Unknown f-divergence 'chi2'"):
        get_fdivergence("chi2")


@pytest.mark.parametrize("name", NAMES)
def test_a_generator_is_convex_with_f1_zero(name):
    fdiv = FDIVERGENCES[name]
    with jax.enable_x64(True):
        u = jnp.linspace(0.02, 8.0, 4000)
        fu = np.asarray(fdiv.f(u))
        f1 = float(fdiv.f(jnp.array(1.0)))
    second = fu[:-2] - 2 * fu[1:-1] + fu[2:]
    assert np.all(second >= -1e-12), second.min()
    assert f1 == 0.0
    if name != "tv":  # strictly convex
        assert np.all(second > 0)


def _numeric_conjugate(f, t):
    """sup_{u > 0} u t - f(u): the best of a dense log grid, refined by a bounded 1-D search."""
    u = np.geomspace(1e-8, 1e4, 200001)
    vals = u * t - f(u)
    k = int(np.argmax(vals))
    lo, hi = u[max(k - 1, 0)], u[min(k + 1, len(u) - 1)]
    res = scipy.optimize.minimize_scalar(lambda s: -(s * t - float(f(np.array(s)))), bounds=(lo, hi),
                                         method="bounded", options={"xatol": 1e-12})
    return max(vals[k], -res.fun)


@pytest.mark.parametrize("name", NAMES)
def test_b_conjugate_is_the_fenchel_sup(name):
    fdiv = FDIVERGENCES[name]
    with jax.enable_x64(True):
        ts = np.asarray(fdiv.activation(jnp.array([-2.0, -0.5, 0.3, 1.5])))  # points inside dom f*
        got = np.asarray(fdiv.conjugate(jnp.asarray(ts)))
        f_np = lambda u: np.asarray(fdiv.f(jnp.asarray(u)))
        want = [_numeric_conjugate(f_np, t) for t in ts]
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def _bound_on_grid(fdiv, x, log_p, log_q, critic):
    """E_P[T] - E_Q[f*(T)] by Simpson's rule on the grid x, T = critic values on x."""
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    integrand = np.asarray(p * critic - q * fdiv.conjugate(critic))
    return scipy.integrate.simpson(integrand, x=np.asarray(x))


@pytest.mark.parametrize("name", NAMES)
def test_c_optimal_critic_attains_the_divergence_for_gaussians(name):
    fdiv = FDIVERGENCES[name]
    true = scipy.integrate.quad(lambda x: REFERENCE[name](P.pdf(x), Q.pdf(x)), -20, 20, limit=400,
                                epsabs=1e-12, epsrel=1e-11)[0]
    with jax.enable_x64(True):
        x = jnp.linspace(-20.0, 20.0, 40001)
        log_p = jax.scipy.stats.norm.logpdf(x, 0.0, 1.0)
        log_q = jax.scipy.stats.norm.logpdf(x, 0.5, 1.2)
        t_star = fdiv.optimal_critic(log_p - log_q)
        bound = _bound_on_grid(fdiv, x, log_p, log_q, t_star)
        # D_f = E_Q[f(p/q)] with the library's f, also by quadrature.
        by_f = scipy.integrate.simpson(np.asarray(jnp.exp(log_q) * fdiv.f(jnp.exp(log_p - log_q))), x=np.asarray(x))
    np.testing.assert_allclose(bound, true, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(by_f, true, rtol=1e-6, atol=1e-9)
    closed = {  # Gaussian closed forms: KL, and Pearson chi^2 = int p^2/q - 1
        "kl": math.log(1.2) + (1.0 + 0.5 ** 2) / (2 * 1.2 ** 2) - 0.5,
        "pearson": 1.2 ** 2 / (1.0 * math.sqrt(2 * 1.2 ** 2 - 1.0)) * math.exp(0.5 ** 2 / (2 * 1.2 ** 2 - 1.0)) - 1,
    }
    if name in closed:
        np.testing.assert_allclose(true, closed[name], rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_c_optimal_critic_attains_the_divergence_for_discrete(name):
    fdiv = FDIVERGENCES[name]
    true = float(np.sum(REFERENCE[name](P_DISCRETE, Q_DISCRETE)))
    with jax.enable_x64(True):
        p, q = jnp.asarray(P_DISCRETE), jnp.asarray(Q_DISCRETE)
        t_star = fdiv.optimal_critic(jnp.log(p) - jnp.log(q))
        bound = float(jnp.sum(p * t_star) - jnp.sum(q * fdiv.conjugate(t_star)))
        by_f = float(jnp.sum(q * fdiv.f(p / q)))
    assert true > 0.01
    np.testing.assert_allclose(bound, true, rtol=1e-12)
    np.testing.assert_allclose(by_f, true, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_d_suboptimal_critics_give_smaller_values(name):
    fdiv = FDIVERGENCES[name]
    true = float(np.sum(REFERENCE[name](P_DISCRETE, Q_DISCRETE)))
    with jax.enable_x64(True):
        p, q = jnp.asarray(P_DISCRETE), jnp.asarray(Q_DISCRETE)
        t_star = fdiv.optimal_critic(jnp.log(p) - jnp.log(q))
        t_const = fdiv.activation(jnp.zeros_like(t_star))
        values = []
        for lam in [0.0, 0.1, 0.3, 0.6, 1.0]:  # the segment T* -> constant critic stays in dom f* (an interval)
            t = (1 - lam) * t_star + lam * t_const
            values.append(float(jnp.sum(p * t) - jnp.sum(q * fdiv.conjugate(t))))
        # Random critics from raw outputs through the activation.
        v = jax.random.normal(jax.random.PRNGKey(0), (20, len(P_DISCRETE)), jnp.float64)
        t_rand = fdiv.activation(v)
        random_values = np.asarray(t_rand @ p - fdiv.conjugate(t_rand) @ q)
    np.testing.assert_allclose(values[0], true, rtol=1e-12)
    assert np.all(np.diff(values) < 0), values
    assert np.all(random_values < true)


@pytest.mark.parametrize("name", NAMES)
def test_e_activation_maps_reals_into_the_conjugate_domain(name):
    fdiv = FDIVERGENCES[name]
    low, high = fdiv.domain
    with jax.enable_x64(True):
        v = jnp.linspace(-15.0, 15.0, 3001)
        t = np.asarray(fdiv.activation(v))
        fused = np.asarray(fdiv.conjugate_of_activation(v))
        composed = np.asarray(fdiv.conjugate(jnp.asarray(t)))
    assert np.all((t > low) & (t < high))
    assert np.all(np.diff(t) > 0)  # increasing, so larger raw output = "more real"
    assert np.all(np.isfinite(fused))
    np.testing.assert_allclose(fused, composed, rtol=1e-9, atol=1e-12)
    # In float32 the fused form stays finite where the composition reaches the domain's edge.
    assert np.all(np.isfinite(np.asarray(fdiv.conjugate_of_activation(jnp.array([-30.0, 30.0], jnp.float32)))))


def test_losses_are_minus_the_bound_terms():
    fdiv = FDIVERGENCES["js"]
    rng = np.random.default_rng(0)
    vr, vf = jnp.asarray(rng.normal(size=8), jnp.float32), jnp.asarray(rng.normal(size=8), jnp.float32)
    d = jax.jit(lambda a, b: fgan_d_loss(fdiv, a, b))(vr, vf)
    bound = variational_bound(fdiv, fdiv.activation(vr), fdiv.activation(vf))
    np.testing.assert_allclose(jnp.mean(d), -bound, rtol=1e-5)
    # JS: f*(g(v)) = (softplus(v) - log 2) / 2 and g(v) = (log 2 - softplus(-v)) / 2 (closed forms).
    sp = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(fgan_g_loss(fdiv, vf), -(sp(np.asarray(vf)) - math.log(2)) / 2, rtol=1e-5)
    np.testing.assert_allclose(fgan_g_loss(fdiv, vf, mode="non_saturating"),
                               -(math.log(2) - sp(-np.asarray(vf))) / 2, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown mode"):
        fgan_g_loss(fdiv, vf, mode="saturating")
    with pytest.raises(ValueError, match="same shape"):
        fgan_d_loss(fdiv, vr, vf[:4])
    with pytest.raises(TypeError, match="must be an FDivergence"):
        fgan_d_loss("js", vr, vf)
