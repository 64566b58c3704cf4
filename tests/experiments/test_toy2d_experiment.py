"""The 2-D flow experiment (experiments/flows/toy2d.py): a short maximum-likelihood fit
of Real NVP to the correlated Gaussian reaches the true entropy (NLL - H = KL(p||q) ~ 0)
and its samples pass an MMD two-sample test against exact samples; every flow builder
(coupling, autoregressive, FFJORD) starts at the identity, inverts its forward map and
has log-dets equal to brute-force Jacobian log-determinants; FFJORD's solver report
counts Heun's evaluations; the command line writes JSON and a markdown table. Fixed
seeds throughout."""

import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO_ROOT

from jgen.bijectors import flow_log_prob
from jgen.data.toy2d import get_toy_density
from jgen.distributions import standard_normal_log_prob


def _load_experiment():
    """experiments/flows/toy2d.py is a script, not a package module: load it by path."""
    name = "toy2d_experiment"
    if name not in sys.modules:
        path = os.path.join(REPO_ROOT, "experiments", "flows", "toy2d.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


toy2d = _load_experiment()


def test_realnvp_fit_reaches_the_entropy_of_a_correlated_gaussian():
    # An affine coupling flow can represent a Gaussian exactly, so after a short fit
    # the held-out NLL (20,000 samples, standard error ~0.007 nats) should be within
    # 0.05 nats of the closed-form entropy, the low-variance KL estimate
    # mean(log p - log q) >= 0 up to noise, and 1,000 flow samples indistinguishable
    # from 1,000 exact ones by the MMD test.
    density = get_toy_density("gaussian")
    fit = toy2d.fit_toy_flow(jax.random.PRNGKey(0), density, "realnvp", steps=300,
                             batch_size=256, learning_rate=3e-3,
                             size={"num_layers": 4, "hidden": (32, 32)})
    assert fit.num_traces == 1  # the train step compiled once
    assert fit.losses[-1] < fit.losses[0] - 0.5
    r = toy2d.evaluate_toy_flow(jax.random.PRNGKey(1), density, fit.params, fit.flow_fn,
                                num_permutations=200)
    assert r["entropy"] == density.entropy
    assert r["gap"] == pytest.approx(r["nll"] - density.entropy)
    assert abs(r["gap"]) < 0.05, r
    assert -3 * r["kl_stderr"] < r["kl"] < 0.05, r
    assert r["mmd_p_value"] > 0.01, r


# Tiny sizes per builder. NICE starts random by default (see build_nice); zero init
# gives its identity. FFJORD: 16 fixed Tsit5 steps here (fifth order: the forward and
# backward solves are inverse maps, and the integrated trace the log|det| of the
# discrete map, to ~1e-6; the default 8 Heun steps are only second order).
_TINY = {
    "nice": {"num_layers": 2, "hidden": (8,), "output_init_scale": 0.0},
    "ffjord": {"hidden": (8,), "solver": "tsit5", "adaptive": False, "num_steps": 16},
}


@pytest.mark.parametrize("name", sorted(toy2d.FLOW_BUILDERS))
def test_builders_start_at_identity_and_invert(name):
    # Zero-initialised outputs make every flow the identity, q = N(0, I). With perturbed
    # parameters (numpy noise) each is still a bijection whose log-dets agree between
    # directions and with the brute-force log|det| of the forward map's Jacobian.
    size = _TINY.get(name, {"num_layers": 2, "hidden": (8,)})
    params, flow_fn = toy2d.FLOW_BUILDERS[name](jax.random.PRNGKey(0), dim=2, **size)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 2)).astype(np.float32)
    noisy = jax.tree.map(lambda a: a + 0.3 * rng.normal(size=a.shape).astype(np.float32), params)

    @jax.jit  # one compilation per builder, run at init and perturbed
    def check(params, x):
        flow = flow_fn(params)
        if name == "ffjord":
            # Central differences (step 1e-2; error ~1e-5 for this smooth map) in the same
            # batched forward solve: jacrev through diffrax compiles for seconds.
            h = 1e-2 * np.eye(2, dtype=np.float32)
            xs = jnp.concatenate([x, x + h[:1], x + h[1:], x - h[:1], x - h[1:]])  # 5 blocks of B
            ys, fwds = flow.forward_and_log_det(xs)
            y, plus_0, plus_1, minus_0, minus_1 = jnp.split(ys, 5)
            fwd = fwds[:x.shape[0]]
            # jac[b, i, j] = d y_i / d x_j
            jac = jnp.stack([plus_0 - minus_0, plus_1 - minus_1], axis=2) / 2e-2
        else:
            y, fwd = flow.forward_and_log_det(x)
            # Rows map independently, so d(sum_b y_b)/dx holds every row's Jacobian.
            jac = jax.jacrev(lambda x: flow.forward(x).sum(axis=0))(x).transpose(1, 0, 2)
        back, inv = flow.inverse_and_log_det(y)
        return y, fwd, back, inv, jac

    # At init the flow is the identity in both directions: q = N(0, I).
    y, fwd, back, inv, _ = check(params, x)
    for a, b in ((y, x), (back, x), (fwd, 0.0), (inv, 0.0)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    y, fwd, back, inv, jac = check(noisy, x)
    np.testing.assert_allclose(back, x, atol=1e-4)
    np.testing.assert_allclose(fwd, -inv, atol=1e-4)
    np.testing.assert_allclose(fwd, np.linalg.slogdet(np.asarray(jac, np.float64))[1], atol=2e-4)
    assert not np.allclose(y, x, atol=1e-2)  # the perturbation does something


def test_cnf_report_counts_heun_evaluations_and_measures_the_discretisation_error():
    # 8 fixed Heun steps, 2 evaluations each: NFE = 16 in both directions. The reference
    # (adaptive Tsit5 at 1e-6) NLL differs from the Heun one by at most the reported
    # max |log q - log q_ref|, which is small but not zero.
    params, flow_fn = toy2d.build_ffjord(jax.random.PRNGKey(0), hidden=(8,), solver="heun")
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda a: a + 0.5 * rng.normal(size=a.shape).astype(np.float32), params)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    z = rng.normal(size=(32, 2)).astype(np.float32)
    log_q = np.asarray(jax.jit(lambda p, x: flow_log_prob(flow_fn(p), standard_normal_log_prob,
                                                          x))(params, x), np.float64)
    r = toy2d.cnf_report(params, flow_fn, x, z, log_q)
    assert (r["solver"], r["adaptive"], r["num_steps"], r["trace"]) == ("heun", False, 8, "exact")
    assert r["nfe_density"] == r["nfe_sample"] == 16 and r["solver_steps_density"] == 8
    assert r["rejected_steps_density"] == 0 and r["nfe_reference"] > 16
    assert 1e-7 < r["max_abs_log_q_error"] < 0.05, r
    assert abs(r["nll_reference"] + log_q.mean()) <= r["max_abs_log_q_error"] + 1e-6


def test_unknown_names_fail_with_the_known_ones():
    with pytest.raises(KeyError, match="known: ffjord, iaf, maf, nice, realnvp, spline_ar, spline_coupling"):
        toy2d.get_flow_builder("glow")
    with pytest.raises(SystemExit):
        toy2d.main(["--densities", "moons", "--flows", "nice", "--steps", "1"])
    with pytest.raises(SystemExit):
        toy2d.main(["--size", "[4]"])
    with pytest.raises(SystemExit):  # per-flow overrides must name flows that are run
        toy2d.main(["--flows", "nice", "--flow-steps", '{"ffjord": 10}'])
    with pytest.raises(SystemExit):
        toy2d.main(["--flows", "nice", "--flow-steps", '{"nice": 0}'])


def test_command_line_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "runs" / "toy.json"
    # A smoke test of the entry point (tiny net; the fit test above checks the numbers).
    assert toy2d.main(["--densities", "gaussian", "--flows", "nice", "--steps", "40",
                       "--size", '{"num_layers": 2, "hidden": [8]}', "--num-eval", "500",
                       "--num-mmd", "100", "--num-permutations", "20", "--out", str(out),
                       "--markdown", str(tmp_path / "toy.md")]) == 0
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["flow"] == "nice" and row["density"] == "gaussian" and row["steps"] == 40
    assert row["gap"] == pytest.approx(row["nll"] - row["entropy"])
    assert row["entropy"] == pytest.approx(get_toy_density("gaussian").entropy)
    assert 0 < row["mmd_p_value"] <= 1 and row["wall_time_s"] > 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| flow | density | NLL (nats)") and table[2].startswith("| nice | gaussian |")
    assert table[2].endswith("| - |")  # no NFE column entry for a discrete flow
    md = (tmp_path / "toy.md").read_text().splitlines()
    assert md[:3] == table and md[-1].startswith("Command: `python experiments/flows/toy2d.py")
