"""Flow densities and samples (`jgen.bijectors.transformed`) against independent
references: a brute-force 2-D integral, a chi-square test of samples against the
integrated density per cell, and scipy.stats closed forms in 1-D.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from scipy.integrate import trapezoid

from jgen.bijectors import (
    Affine,
    Chain,
    Exp,
    MaskedCoupling,
    Reverse,
    flow_log_prob,
    flow_sample,
    flow_sample_and_log_prob,
    half_mask,
)
from jgen.distributions import standard_normal_log_prob


def _conditioner(seed, d=2):
    """A fixed random MLP x_masked [B, d] -> (shift, raw_log_scale), each [B, d]."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(d, 8)), rng.normal(size=(8,))
    w2, b2 = rng.normal(size=(8, 2 * d)), 0.3 * rng.normal(size=(2 * d,))

    def conditioner(h):
        out = jnp.tanh(h @ jnp.asarray(w1, h.dtype) + jnp.asarray(b1, h.dtype)[None])
        out = out @ jnp.asarray(w2, h.dtype) + jnp.asarray(b2, h.dtype)[None]
        return out[:, :d], out[:, d:]

    return conditioner


def _flow_2d():
    """A small Real NVP in 2-D: Affine, coupling, reverse, coupling, Affine."""
    return Chain(
        [
            Affine(jnp.array([0.3, -0.2]), jnp.array([0.2, -0.3])),
            MaskedCoupling(half_mask(2), _conditioner(1), log_scale_bound=1.0),
            Reverse(),
            MaskedCoupling(half_mask(2), _conditioner(2), log_scale_bound=1.0),
            Affine(jnp.array([0.5, 0.0]), jnp.array([0.0, 0.1])),
        ]
    )


def _base_sample(key, num):
    return jax.random.normal(key, (num, 2), jnp.zeros(()).dtype)


_log_prob_2d = jax.jit(lambda flow, x: flow_log_prob(flow, standard_normal_log_prob, x))


def _density_on_grid(flow, nodes):
    xx, yy = np.meshgrid(nodes, nodes, indexing="ij")
    pts = jnp.stack([jnp.asarray(xx.ravel()), jnp.asarray(yy.ravel())], axis=-1)
    return np.exp(np.asarray(_log_prob_2d(flow, pts))).reshape(xx.shape)


def test_flow_log_prob_integrates_to_one_2d():
    with jax.enable_x64(True):
        # Box [-12, 12]^2: 200k samples of this flow stay within |x| < 8, and the
        # integral is unchanged to 1e-10 from L = 12 to L = 14 (checked when written).
        nodes = np.linspace(-12.0, 12.0, 601)
        p = _density_on_grid(_flow_2d(), nodes)
        total = trapezoid(trapezoid(p, nodes, axis=1), nodes)
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
        # Power check: dropping the log-det term must break normalisation.
        xx, yy = np.meshgrid(nodes, nodes, indexing="ij")
        pts = jnp.stack([jnp.asarray(xx.ravel()), jnp.asarray(yy.ravel())], axis=-1)
        z = _flow_2d().inverse(pts)
        wrong = np.exp(np.asarray(standard_normal_log_prob(z))).reshape(xx.shape)
        assert abs(trapezoid(trapezoid(wrong, nodes, axis=1), nodes) - 1.0) > 0.05


def _chi_square_vs_density(flow, samples, *, half_width=4.0, cells=10, sub=20):
    """Pearson chi-square of samples against the flow's probability of each cell.

    Cells: a `cells x cells` grid on [-half_width, half_width]^2, plus one bin for
    everything outside; cell probabilities by the midpoint rule on `sub x sub` points
    per cell; cells expecting fewer than 5 samples are merged into the outside bin.
    """
    edges = np.linspace(-half_width, half_width, cells + 1)
    h = edges[1] - edges[0]
    fine = np.linspace(-half_width, half_width, cells * sub + 1)
    mids = 0.5 * (fine[1:] + fine[:-1])
    p = _density_on_grid(flow, mids) * (h / sub) ** 2
    cell_p = p.reshape(cells, sub, cells, sub).sum(axis=(1, 3)).ravel()
    samples = np.asarray(samples)
    n = samples.shape[0]
    counts, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=[edges, edges])
    counts = counts.ravel()
    keep = cell_p * n >= 5
    expected = np.append(cell_p[keep] * n, (1.0 - cell_p[keep].sum()) * n)
    observed = np.append(counts[keep], n - counts[keep].sum())
    stat = np.sum((observed - expected) ** 2 / expected)
    return stat, scipy.stats.chi2.ppf(0.999, df=expected.size - 1)


def test_flow_sample_matches_flow_log_prob_chi_square():
    with jax.enable_x64(True):
        flow = _flow_2d()
        sample = jax.jit(flow_sample, static_argnums=(1, 3))
        samples = sample(flow, _base_sample, jax.random.PRNGKey(0), 20_000)
        assert samples.shape == (20_000, 2)
        stat, threshold = _chi_square_vs_density(flow, samples)
        assert stat < threshold, (stat, threshold)
        # Power check: base samples (flow not applied) are rejected by the same test.
        base = _base_sample(jax.random.PRNGKey(0), 20_000)
        bad_stat, _ = _chi_square_vs_density(flow, base)
        assert bad_stat > 10 * threshold, bad_stat


def test_flow_sample_and_log_prob_agrees_with_flow_log_prob():
    with jax.enable_x64(True):
        flow = _flow_2d()
        x, log_prob = jax.jit(flow_sample_and_log_prob, static_argnums=(1, 2, 4))(
            flow, _base_sample, standard_normal_log_prob, jax.random.PRNGKey(1), 64
        )
        assert x.shape == (64, 2) and log_prob.shape == (64,)
        np.testing.assert_allclose(log_prob, _log_prob_2d(flow, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("loc, scale", [(0.0, 1.0), (1.5, 0.3), (-2.0, 4.0)])
def test_flow_affine_normal_matches_scipy_norm(loc, scale):
    with jax.enable_x64(True):
        flow = Affine(jnp.array([loc]), jnp.log(jnp.array([scale])))
        x = np.linspace(-6.0, 6.0, 25)
        got = flow_log_prob(flow, standard_normal_log_prob, jnp.asarray(x)[:, None])
        assert got.shape == (25,)
        np.testing.assert_allclose(got, scipy.stats.norm(loc, scale).logpdf(x), rtol=1e-12)


def test_flow_exp_affine_normal_matches_scipy_lognorm():
    with jax.enable_x64(True):
        loc, scale = 0.4, 0.7
        flow = Chain([Affine(jnp.array([loc]), jnp.log(jnp.array([scale]))), Exp()])
        x = np.linspace(0.05, 8.0, 30)
        got = flow_log_prob(flow, standard_normal_log_prob, jnp.asarray(x)[:, None])
        want = scipy.stats.lognorm(s=scale, scale=np.exp(loc)).logpdf(x)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_flow_nll_grad_closed_form_and_single_trace():
    """Bijector params built inside the loss: grads are the Gaussian closed form, and
    the jitted loss traces once for new parameter values."""
    x = jnp.array([[0.5], [-1.0], [2.0]])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def nll(params, x):
        flow = Affine(params["shift"], params["log_scale"])
        return -jnp.mean(flow_log_prob(flow, standard_normal_log_prob, x))

    for shift, log_scale in [(0.0, 0.0), (0.3, -0.2)]:
        params = {"shift": jnp.array([shift]), "log_scale": jnp.array([log_scale])}
        grads = jax.grad(nll)(params, x)
        z = (np.asarray(x[:, 0]) - shift) / np.exp(log_scale)
        # d/dmu of -log N(x; mu, s) = -(x - mu) / s^2; d/dlog s = 1 - z^2.
        np.testing.assert_allclose(grads["shift"], [-np.mean(z) / np.exp(log_scale)], rtol=1e-5)
        np.testing.assert_allclose(grads["log_scale"], [np.mean(1.0 - z**2)], rtol=1e-5)
        want = -np.mean(scipy.stats.norm(shift, np.exp(log_scale)).logpdf(np.asarray(x[:, 0])))
        np.testing.assert_allclose(nll(params, x), want, rtol=1e-5)


def test_flow_with_flax_conditioner_grad_matches_finite_difference():
    """A coupling whose conditioner is a Flax module, built inside the loss from the
    params being differentiated: the gradient matches a central finite difference."""
    import flax.linen as nn

    class Conditioner(nn.Module):
        @nn.compact
        def __call__(self, h):
            out = nn.Dense(4)(jnp.tanh(nn.Dense(8)(h)))
            return out[:, :2], out[:, 2:]

    with jax.enable_x64(True):
        net = Conditioner()
        x = jax.random.normal(jax.random.PRNGKey(0), (16, 2), jnp.float64)
        params = net.init(jax.random.PRNGKey(1), x)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)  # Dense inits f32

        @jax.jit
        def loss(params):
            flow = Chain(
                [
                    MaskedCoupling(half_mask(2), lambda h: net.apply(params, h)),
                    Reverse(),
                    MaskedCoupling(half_mask(2), lambda h: net.apply(params, -h)),
                ]
            )
            return -jnp.mean(flow_log_prob(flow, standard_normal_log_prob, x))

        grads = jax.grad(loss)(params)
        direction = jax.tree.map(
            lambda p: jax.random.normal(jax.random.PRNGKey(2), p.shape, p.dtype), params
        )
        eps = 1e-6
        shifted = lambda sign: jax.tree.map(lambda p, d: p + sign * eps * d, params, direction)
        fd = (loss(shifted(1.0)) - loss(shifted(-1.0))) / (2 * eps)
        analytic = sum(
            jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction))
        )
        assert abs(analytic) > 1e-3  # the check is not vacuous
        np.testing.assert_allclose(analytic, fd, rtol=1e-6)
