"""Tests for the continuous normalizing flow (`jgen.bijectors.cnf`) and its vector-field
network (`jgen.models.flows.cnf_nets`).

Independent references: the matrix exponential (`jax.scipy.linalg.expm`) and
(t1 - t0) tr(A) for a linear field; the exact-trace log-det and the closed-form variance
of eps^T M eps for Hutchinson's estimator; runtime callback counts for the NFE; central
finite differences and gradients through `expm` for the adjoints. Invertibility and
log-det against a brute-force Jacobian of a nonlinear field are in the `BIJECTORS`
table of `test_bijectors.py`. Solves are kept tiny: compile time dominates here.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jgen.bijectors import Inverse
from jgen.bijectors.cnf import CNFStats, ContinuousFlow, cnf_stats
from jgen.models.flows.cnf_nets import CNFVectorField

A = np.array([[0.3, -1.0, 0.2], [0.8, -0.2, 0.1], [0.0, 0.4, 0.5]])  # not normal, tr = 0.6
T0, T1 = 0.5, 1.7


def linear_field(a):
    """f(t, z) = A z for each row z (row-wise: z @ A^T)."""
    return lambda t, z: z @ jnp.asarray(a, z.dtype).T


def tanh_field(d, hidden=6, seed=0):
    """A fixed random time-dependent MLP field, row-wise, in the input's dtype."""
    rng = np.random.default_rng(seed)
    w1, c1 = rng.normal(size=(d, hidden)) / np.sqrt(d), rng.normal(size=(1, hidden))
    w2 = rng.normal(size=(hidden, d)) / np.sqrt(hidden)

    def vf(t, z):
        h = jnp.tanh(z @ jnp.asarray(w1, z.dtype) + t * jnp.asarray(c1, z.dtype))
        return h @ jnp.asarray(w2, z.dtype)

    return vf


def _normal(seed, shape):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.zeros(()).dtype)


def test_cnf_linear_field_is_matrix_exponential_both_directions():
    with jax.enable_x64(True):
        flow = ContinuousFlow(linear_field(A), t0=T0, t1=T1, rtol=1e-12, atol=1e-12)
        x = _normal(0, (4, 3))

        @jax.jit
        def compute(flow, x):
            y, ld = flow.forward_and_log_det(x)
            return y, ld, *flow.inverse_and_log_det(y)

        y, ld, x_back, ld_back = compute(flow, x)
        assert y.dtype == jnp.float64 and ld.shape == (4,)
        # Reference: z(t1) = expm((t1 - t0) A) z(t0), log|det| = (t1 - t0) tr(A).
        expm = jax.scipy.linalg.expm
        np.testing.assert_allclose(y, x @ expm((T1 - T0) * A).T, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ld, np.full(4, (T1 - T0) * np.trace(A)), atol=1e-12)
        np.testing.assert_allclose(x_back, x, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ld_back, np.full(4, -(T1 - T0) * np.trace(A)), atol=1e-12)


def test_cnf_hutchinson_log_det_is_unbiased_with_the_right_variance():
    n = 400
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(7), n)
        x = _normal(1, (3, 3))
        # Fixed steps: the path z(t) does not depend on eps, and the RK log-det is a
        # linear combination of stage traces, so E[Hutchinson] = exact-trace log-det.
        common = {"solver": "heun", "num_steps": 3}
        vf = tanh_field(3)

        @jax.jit
        def compute(x, keys):
            exact = ContinuousFlow(vf, **common).forward_and_log_det(x)[1]
            out = {"exact": exact}
            for noise in ("rademacher", "gaussian"):
                est = lambda k, noise=noise: ContinuousFlow(
                    vf, trace="hutchinson", noise_key=k, hutchinson_noise=noise, **common
                ).forward_and_log_det(x)[1]
                out[noise] = jax.vmap(est)(keys)  # [n, B]
                # Linear field, one Euler step: the estimate is eps^T M eps, M = (t1-t0)A.
                lin = lambda k, noise=noise: ContinuousFlow(
                    linear_field(A), trace="hutchinson", noise_key=k, t0=T0, t1=T1,
                    hutchinson_noise=noise, solver="euler", num_steps=1,
                ).forward_and_log_det(x)[1]
                out["linear_" + noise] = jax.vmap(lin)(keys)
            return out

        r = jax.tree.map(np.asarray, compute(x, keys))
    for noise in ("rademacher", "gaussian"):
        est = r[noise]
        se = est.std(axis=0, ddof=1) / np.sqrt(n)
        assert np.all(se > 1e-3)  # the estimator is genuinely random
        # Reference: the exact-trace log-det, within 4 standard errors (fixed seed).
        z_scores = (est.mean(axis=0) - r["exact"]) / se
        assert np.all(np.abs(z_scores) < 4), (noise, z_scores)
    # Closed forms for eps^T M eps: mean tr M; variance 2||S||_F^2 (Gaussian) and
    # 2(||S||_F^2 - sum_k S_kk^2) (Rademacher), S = (M + M^T) / 2.
    m = (T1 - T0) * A
    s = (m + m.T) / 2
    var = {"gaussian": 2 * np.sum(s**2),
           "rademacher": 2 * (np.sum(s**2) - np.sum(np.diag(s) ** 2))}
    for noise, want in var.items():
        est = r["linear_" + noise][:, 0]  # the estimate does not depend on x here
        np.testing.assert_allclose(est.mean(), np.trace(m), atol=4 * np.sqrt(want / n))
        # Sample variance: relative sd about sqrt((kurtosis - 1) / n) < 0.2 for n=400.
        np.testing.assert_allclose(est.var(ddof=1), want, rtol=0.3)


def test_cnf_nfe_matches_counted_evaluations_and_grows_with_tolerance():
    counts = {}

    def counting_field(name):
        vf = tanh_field(2, seed=3)

        def counted(t, z):
            jax.debug.callback(lambda: counts.__setitem__(name, counts.get(name, 0) + 1))
            return vf(t, z)

        return counted

    settings = {
        # A small first step (t1 / num_steps) is accepted at once; see CNFStats.nfe.
        "tsit5_1e-3": {"rtol": 1e-3, "atol": 1e-3, "num_steps": 1000},
        "tsit5_1e-6": {"rtol": 1e-6, "atol": 1e-6, "num_steps": 1000},
        "tsit5_1e-9": {"rtol": 1e-9, "atol": 1e-9, "num_steps": 1000},
        "tsit5_1e-9_big_first_step": {"rtol": 1e-9, "atol": 1e-9, "num_steps": 1},
        "heun_adaptive_1e-4": {"solver": "heun", "adaptive": True, "rtol": 1e-4,
                               "atol": 1e-4},
        "euler_fixed_7": {"solver": "euler", "num_steps": 7},
    }
    flows = {k: ContinuousFlow(counting_field(k), t1=3.0, **v) for k, v in settings.items()}
    x = 2.0 * _normal(2, (5, 2))
    stats = jax.jit(lambda flows, x: {k: cnf_stats(f, x) for k, f in flows.items()})(flows, x)
    stats = {k: CNFStats(*map(int, v)) for k, v in stats.items()}
    for s in stats.values():
        assert s.num_steps == s.num_accepted_steps + s.num_rejected_steps
    # Reference: evaluations counted at runtime by a callback in the vector field.
    for name in ("tsit5_1e-3", "tsit5_1e-6", "tsit5_1e-9", "heun_adaptive_1e-4",
                 "euler_fixed_7"):
        assert stats[name].nfe == counts[name], (name, stats[name], counts[name])
    # A rejected first step of an FSAL solver costs one uncounted evaluation per retry.
    big = stats["tsit5_1e-9_big_first_step"]
    assert big.nfe < counts["tsit5_1e-9_big_first_step"] <= big.nfe + big.num_rejected_steps
    nfe = [stats[k].nfe for k in ("tsit5_1e-3", "tsit5_1e-6", "tsit5_1e-9")]
    assert nfe[0] < nfe[1] < nfe[2], nfe
    assert stats["tsit5_1e-3"].nfe == 1 + 6 * stats["tsit5_1e-3"].num_steps  # FSAL
    assert stats["heun_adaptive_1e-4"].nfe == 2 * stats["heun_adaptive_1e-4"].num_steps
    assert stats["heun_adaptive_1e-4"].num_rejected_steps > 0  # rejections are counted
    assert stats["euler_fixed_7"] == CNFStats(7, 7, 0, 7)


def test_cnf_param_gradients_match_finite_differences():
    with jax.enable_x64(True):
        net = CNFVectorField(hidden=(3,), param_dtype=jnp.float64)
        x = _normal(3, (2, 2))
        params = jax.jit(net.init)(jax.random.PRNGKey(0), 0.0, x)
        flat, unravel = ravel_pytree(params)
        assert flat.dtype == jnp.float64
        w = _normal(4, (2, 2))

        def loss(flat):
            p = unravel(flat)
            flow = ContinuousFlow(lambda t, z: net.apply(p, t, z), solver="heun", num_steps=3)
            y, log_det = flow.forward_and_log_det(x)
            return jnp.sum(w * y) + jnp.sum(log_det)

        value_and_grad = jax.jit(jax.value_and_grad(loss))  # the one compile
        _, grad = value_and_grad(flat)
        assert np.all(np.isfinite(grad)) and np.any(np.abs(grad) > 1e-3)
        # Reference: central finite differences of the same (discretised) solve along
        # random directions v: (L(p + h v) - L(p - h v)) / 2h = grad . v + O(h^2).
        h = 1e-6
        for i in range(4):
            v = _normal(10 + i, flat.shape)
            fd = (value_and_grad(flat + h * v)[0] - value_and_grad(flat - h * v)[0]) / (2 * h)
            np.testing.assert_allclose(jnp.dot(grad, v), fd, rtol=1e-6, atol=1e-8)


def test_cnf_gradients_through_both_adjoints_match_the_matrix_exponential():
    with jax.enable_x64(True):
        x = _normal(5, (2, 3))
        w = _normal(6, (2, 3))

        def loss(a, adjoint):
            flow = ContinuousFlow(linear_field(a), t0=T0, t1=T1, solver="dopri8",
                                  adaptive=False, num_steps=6, adjoint=adjoint)
            y, log_det = flow.forward_and_log_det(x)
            return jnp.sum(w * y) + jnp.sum(log_det)

        def reference(a):  # closed form: y = x expm((t1 - t0) A)^T, log_det = (t1-t0) tr A
            y = x @ jax.scipy.linalg.expm((T1 - T0) * a).T
            return jnp.sum(w * y) + 2 * (T1 - T0) * jnp.trace(a)

        a = jnp.asarray(A)
        grads = jax.jit(lambda a: [jax.grad(lambda b: loss(b, adj))(a) for adj in  # noqa: B023
                                   ("recursive_checkpoint", "backsolve")])(a)
        want = jax.grad(reference)(a)
    for got in grads:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_cnf_new_noise_key_does_not_recompile():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def log_det(flow, x):
        return flow.forward_and_log_det(x)[1]

    x = jnp.ones((2, 2))
    vf = linear_field(A[:2, :2])  # one function: a new one would be a new static field
    make = lambda k: ContinuousFlow(vf, trace="hutchinson", noise_key=k, solver="euler",
                                    num_steps=1)
    a = log_det(make(jax.random.PRNGKey(0)), x)
    b = log_det(make(jax.random.PRNGKey(1)), x)
    assert not np.allclose(a, b)  # different noise, same trace


def test_cnf_constructor_and_call_errors():
    vf = linear_field(A)
    with pytest.raises(ValueError, match=r"solver must be one of .*received 'rk4'"):
        ContinuousFlow(vf, solver="rk4")
    with pytest.raises(ValueError, match=r"trace must be one of .*received 'skilling'"):
        ContinuousFlow(vf, trace="skilling")
    with pytest.raises(ValueError, match=r"hutchinson_noise must be one of .*'uniform'"):
        ContinuousFlow(vf, hutchinson_noise="uniform")
    with pytest.raises(ValueError, match=r"adjoint must be one of .*'direct'"):
        ContinuousFlow(vf, adjoint="direct")
    with pytest.raises(ValueError, match=r"euler.*cannot be adaptive"):
        ContinuousFlow(vf, solver="euler", adaptive=True)
    with pytest.raises(ValueError, match=r"t1 > t0; received t0=1.0, t1=0.0"):
        ContinuousFlow(vf, t0=1.0, t1=0.0)
    with pytest.raises(ValueError, match=r"num_steps must be a positive int; received 0"):
        ContinuousFlow(vf, num_steps=0)
    with pytest.raises(ValueError, match=r"rtol and atol must be positive"):
        ContinuousFlow(vf, rtol=0.0)
    with pytest.raises(TypeError, match=r"vector_field must be a function"):
        ContinuousFlow(jnp.ones(3))
    flow = ContinuousFlow(vf)
    with pytest.raises(ValueError, match=r"received shape \(3,\)"):
        flow.forward(jnp.ones(3))
    with pytest.raises(ValueError, match=r"received shape \(2, 3, 1\)"):
        jax.jit(flow.inverse)(jnp.ones((2, 3, 1)))
    with pytest.raises(TypeError, match=r"floating dtype"):
        flow.forward(jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"z's shape \(2, 3\).*received shape \(2, 1\)"):
        ContinuousFlow(lambda t, z: z[:, :1]).forward(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"trace='hutchinson' needs noise_key"):
        ContinuousFlow(vf, trace="hutchinson").forward(jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=r"expected a ContinuousFlow"):
        cnf_stats(Inverse(flow), jnp.ones((2, 3)))


def test_cnf_vector_field_net_is_row_wise_and_time_conditioned():
    z = _normal(8, (3, 2))
    nets = {c: CNFVectorField(hidden=(8, 8), activation=jax.nn.softplus, conditioning=c)
            for c in ("concatsquash", "concat")}
    zero_net = CNFVectorField(hidden=(4,), zero_init_output=True)

    @jax.jit
    def compute(key, z):  # one compile: eager Flax init is slow on a shared CPU
        out = {}
        for c, net in nets.items():
            params = net.init(key, 0.0, z)
            apply = lambda t, v: net.apply(params, t, v)  # noqa: B023
            # Jacobian of the flattened batch: block diagonal iff the field is row-wise.
            jac = jax.jacobian(lambda v: apply(0.3, v.reshape(3, 2)).reshape(-1))(  # noqa: B023
                z.reshape(-1))
            out[c] = (apply(0.3, z), apply(jnp.full((3,), 0.3), z), apply(0.9, z),
                      apply(0.3, z[1:2]), jac)
        out["zero"] = zero_net.apply(zero_net.init(key, 0.0, z), 0.5, z)
        return out

    out = compute(jax.random.PRNGKey(0), z)
    np.testing.assert_array_equal(out.pop("zero"), np.zeros((3, 2)))  # identity flow at init
    for c, (y, y_per_example_t, y_later, y_row, jac) in out.items():
        assert y.shape == (3, 2)
        np.testing.assert_allclose(y_per_example_t, y, rtol=1e-6)  # scalar t == t [B]
        assert not np.allclose(y_later, y)  # depends on time
        cross = np.asarray(jac).reshape(3, 2, 3, 2) * (1 - np.eye(3))[:, None, :, None]
        assert np.all(cross == 0.0), c
        np.testing.assert_allclose(y_row, y[1:2], rtol=1e-6)  # a row alone: same output
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \[B\]"):
        jax.eval_shape(nets["concat"].init, jax.random.PRNGKey(0), jnp.zeros((2,)), z)
    with pytest.raises(ValueError, match=r"conditioning must be one of .*'film'"):
        jax.eval_shape(CNFVectorField(conditioning="film").init, jax.random.PRNGKey(0), 0.0, z)
