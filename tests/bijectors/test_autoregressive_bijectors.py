"""Autoregressive bijectors (MAF, IAF, SplineMAF, SplineIAF) beyond the shared property
table in test_bijectors.py: the Jacobian is triangular in the MADE's ordering (both
directions); the sequential direction equals an independent position-by-position
reference loop and traces its conditioner a bounded number of times (a fori_loop, not
D unrolled passes); linear conditioners give the closed-form Gaussian density
(scipy); zero-initialised MADEs give the identity; a conditional (context) MAF; errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jgen.bijectors import (
    IAF,
    MAF,
    RationalQuadraticSpline,
    SplineIAF,
    SplineMAF,
    flow_log_prob,
    flow_sample_and_log_prob,
)
from jgen.distributions import standard_normal_log_prob
from jgen.models.autoregressive import MADE, made_conditioner, made_masks

B, D, K = 3, 4, 3  # batch, dimensions, spline bins
ORDER = (2, 0, 3, 1)  # a non-identity ordering: x_2 first, then x_0, x_3, x_1
CLASSES = {"MAF": MAF, "IAF": IAF, "SplineMAF": SplineMAF, "SplineIAF": SplineIAF}
ON_DATA = {"MAF": True, "SplineMAF": True, "IAF": False, "SplineIAF": False}


def _random_made(num_params, *, seed=0, context_features=None, zero_init=False):
    """A MADE in ORDER with random degrees; params N(0, 0.5^2) (or its zero-init)."""
    masks = made_masks(jax.random.PRNGKey(seed), D, (8,), order=jnp.asarray(ORDER),
                       conditional=context_features is not None)
    made = MADE((8,), D, num_params, activation=jnp.tanh, zero_init_output=zero_init)
    ctx = None if context_features is None else jnp.zeros((1, context_features))
    if zero_init:
        return made, made.init(jax.random.PRNGKey(seed), jnp.zeros((1, D)), masks, ctx), masks
    shapes = jax.eval_shape(made.init, jax.random.PRNGKey(0), jnp.zeros((1, D)), masks, ctx)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape), shapes)
    return made, params, masks


def _bijector(name, *, seed=0):
    """`name` on a random float64-capable MADE conditioner."""
    spline = name.startswith("Spline")
    made, params, masks = _random_made(3 * K - 1 if spline else 2, seed=seed)

    def conditioner(x):
        return made.apply(jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params), x, masks)

    kwargs = {"bound": 2.0} if spline else {"log_scale_bound": 2.0}
    return CLASSES[name](conditioner, **kwargs), conditioner


def _normal64(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float64)


@pytest.mark.parametrize("name", list(CLASSES))
def test_autoregressive_jacobian_triangular_in_order_and_sequential_matches_reference(name):
    with jax.enable_x64(True):
        bij, conditioner = _bijector(name)
        w = 1.5 * _normal64(1, (B, D))
        garbage = 50.0 + _normal64(2, (B, D))  # initial values the answer must not see
        order = np.asarray(ORDER)

        @jax.jit
        def compute(w, garbage):
            single = lambda f: jax.vmap(jax.jacobian(lambda v: f(v[None])[0]))
            # MAF: inverse is one pass, forward D passes; IAF the other way round.
            fast, slow = ((bij.inverse_and_log_det, bij.forward_and_log_det) if ON_DATA[name]
                          else (bij.forward_and_log_det, bij.inverse_and_log_det))
            slow_w, slow_ld = slow(w)

            # Reference for the slow direction: set dimension order[k] at step k from
            # the conditioner applied to the current vector (later entries: garbage).
            u = garbage
            for k in range(D):
                i = int(order[k])
                theta = conditioner(u)[:, i : i + 1]  # [B, 1, P]
                if name.startswith("Spline"):
                    g = RationalQuadraticSpline(theta[..., :K], theta[..., K : 2 * K],
                                                theta[..., 2 * K :], bound=2.0)
                    new = g.forward(w[:, i : i + 1]) if ON_DATA[name] else g.inverse(
                        w[:, i : i + 1])
                else:
                    shift, log_scale = theta[..., 0], 2.0 * jnp.tanh(theta[..., 1] / 2.0)
                    new = (w[:, i : i + 1] * jnp.exp(log_scale) + shift if ON_DATA[name]
                           else (w[:, i : i + 1] - shift) * jnp.exp(-log_scale))
                u = u.at[:, i : i + 1].set(new)
            return {
                "slow": slow_w, "slow_ld": slow_ld, "reference": u,
                "fast_of_slow": fast(slow_w)[0], "fast_ld": fast(w)[1],
                "jac_fast": single(lambda v: fast(v)[0])(w),
                "jac_slow": single(lambda v: slow(v)[0])(w),
            }

        r = jax.tree.map(np.asarray, compute(w, garbage))
    np.testing.assert_allclose(r["slow"], r["reference"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r["fast_of_slow"], w, rtol=1e-10, atol=1e-10)
    for jac_key, ld_key in (("jac_fast", "fast_ld"), ("jac_slow", "slow_ld")):
        jac = r[jac_key][:, order][:, :, order]  # rows and columns in the MADE order
        # Output at position a depends on inputs at positions <= a only: exactly zero
        # above the diagonal, nonzero on it; below it the conditioner is used (spline
        # entries in the identity tails have no such dependence, hence "most").
        upper = np.triu(np.ones((D, D), bool), k=1)
        assert np.all(jac[:, upper] == 0.0)
        diag = np.diagonal(jac, axis1=1, axis2=2)
        assert np.all(diag != 0.0)
        assert np.any(jac != 0.0, axis=0)[upper.T].mean() >= 0.8
        # Triangular: log|det| is the sum of log|diagonal| (the bijector's log-det).
        np.testing.assert_allclose(r[ld_key], np.log(np.abs(diag)).sum(-1), atol=1e-10)


def _counting_linear_conditioner(dim, calls):
    """Autoregressive in the natural order: params = (x L^T, 0.1 x L^T), L strictly
    lower triangular; counts its Python-side calls (i.e. how often it is traced)."""
    lower = jnp.tril(jnp.ones((dim, dim)), k=-1) / dim

    def conditioner(x):
        calls.append(1)
        h = x @ lower.T
        return jnp.stack([h, 0.1 * h], axis=-1)

    return conditioner


@pytest.mark.parametrize("cls", [MAF, IAF])
def test_autoregressive_sequential_direction_traces_conditioner_a_bounded_number_of_times(cls):
    counts = {}
    for dim in (3, 9):
        for direction in ("forward", "inverse"):
            calls = []
            bij = cls(_counting_linear_conditioner(dim, calls))
            fn = getattr(bij, f"{direction}_and_log_det")
            jax.make_jaxpr(fn)(jnp.ones((2, dim)))
            counts[dim, direction] = len(calls)
    slow, fast = ("forward", "inverse") if cls is MAF else ("inverse", "forward")
    # One pass in the fast direction; the slow one is a fori_loop whose body is traced
    # once, whatever D (an unrolled loop would trace the conditioner D times).
    assert counts[3, fast] == counts[9, fast] == 1
    assert counts[3, slow] == counts[9, slow] <= 2


@pytest.mark.parametrize("cls", [MAF, IAF])
def test_autoregressive_affine_with_linear_conditioner_is_the_closed_form_gaussian(cls):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        pos = np.argsort(ORDER)  # position of each dimension
        allowed = pos[None, :] < pos[:, None]  # A[i, j] may be nonzero iff j before i
        a = np.where(allowed, rng.normal(size=(D, D)), 0.0)
        b, s = rng.normal(size=D), 0.5 * rng.normal(size=D)

        def conditioner(u):
            shift = u @ jnp.asarray(a).T + jnp.asarray(b)[None]
            return jnp.stack([shift, jnp.broadcast_to(jnp.asarray(s)[None], u.shape)], -1)

        bij = cls(conditioner, log_scale_bound=None)
        # MAF: x = A x + b + e^s z  =>  x = M (b + e^s z), M = (I - A)^{-1}.
        # IAF: x = A z + b + e^s z  =>  x = (diag(e^s) + A) z + b.
        if cls is MAF:
            m = np.linalg.inv(np.eye(D) - a)
            mean, w = m @ b, m @ np.diag(np.exp(s))
        else:
            mean, w = b, np.diag(np.exp(s)) + a
        reference = scipy.stats.multivariate_normal(mean, w @ w.T)

        x_data = _normal64(3, (5, D)) + mean[None]
        log_p = jax.jit(lambda x: flow_log_prob(bij, standard_normal_log_prob, x))(x_data)
        sample_fn = lambda key, n: jax.random.normal(key, (n, D), jnp.float64)
        x_s, log_q = jax.jit(
            lambda k: flow_sample_and_log_prob(bij, sample_fn, standard_normal_log_prob, k, 5)
        )(jax.random.PRNGKey(0))
    np.testing.assert_allclose(log_p, reference.logpdf(np.asarray(x_data)), rtol=1e-10)
    np.testing.assert_allclose(log_q, reference.logpdf(np.asarray(x_s)), rtol=1e-10)


def test_autoregressive_zero_init_made_is_the_identity_and_conditional_maf():
    x = jax.random.normal(jax.random.PRNGKey(0), (B, D))
    for name, cls in CLASSES.items():
        made, params, masks = _random_made(3 * K - 1 if "Spline" in name else 2, zero_init=True)
        bij = cls(made_conditioner(made, params, masks))
        both = jax.jit(lambda b, x: (b.forward_and_log_det(x), b.inverse_and_log_det(x)))
        for y, log_det in both(bij, x):
            # Closed form: zero raw parameters are the identity (shift 0, log-scale 0;
            # the spline with equal bins and unit derivatives).
            np.testing.assert_allclose(y, x, atol=1e-5)
            np.testing.assert_allclose(log_det, np.zeros(B), atol=1e-5)

    # A conditional MAF, p(x | c): a MADE with context, closed over it.
    with jax.enable_x64(True):
        made, params, masks = _random_made(2, seed=3, context_features=2)
        params = jax.tree.map(jnp.asarray, params)  # float64
        x = _normal64(4, (B, D))
        contexts = _normal64(5, (2, B, 2))

        @jax.jit
        def run(c):
            bij = MAF(made_conditioner(made, params, masks, context=c))
            z, ld = bij.inverse_and_log_det(x)
            x_back, ld_back = bij.forward_and_log_det(z)
            return z, ld, x_back, ld_back

        (z0, ld0, xb0, ldb0), (z1, *_) = run(contexts[0]), run(contexts[1])
    np.testing.assert_allclose(xb0, x, atol=1e-10)
    np.testing.assert_allclose(ldb0, -ld0, atol=1e-10)
    # Every coordinate, the first in the order included, depends on the context.
    assert np.all(np.abs(np.asarray(z0) - np.asarray(z1)) > 1e-6)


def test_autoregressive_errors():
    x = jnp.zeros((B, D))
    with pytest.raises(ValueError, match=r"params \[B, D, P\] = \(3, 4, P\) with P = 2.*"
                                         r"received shape \(3, 4\)"):
        MAF(lambda u: u).inverse(x)
    with pytest.raises(ValueError, match=r"P = 3K - 1.*received shape \(3, 4, 10\)"):
        SplineIAF(lambda u: jnp.zeros(u.shape + (10,))).forward(x)
    with pytest.raises(ValueError, match=r"received shape \(3, 4, 3\)"):
        IAF(lambda u: jnp.zeros(u.shape + (3,))).inverse(x)  # checked inside the loop
    with pytest.raises(ValueError, match=r"ndim 2\); received shape \(3, 4, 1\)"):
        MAF(lambda u: jnp.zeros(u.shape + (2,))).forward(x[..., None])
    with pytest.raises(TypeError, match="conditioner must be a function.*made_conditioner"):
        SplineMAF(None)
    with pytest.raises(ValueError, match="log_scale_bound must be a positive float or None"):
        IAF(lambda u: u, log_scale_bound=0.0)
    with pytest.raises(ValueError, match=r"SplineMAF: bound must be a positive float"):
        SplineMAF(lambda u: u, bound=-1.0)
    with pytest.raises(TypeError, match="made_conditioner: expected a MADE module"):
        made_conditioner(lambda u: u, {}, None)
