"""Vector quantisation, code usage, the EMA codebook and the VQ-VAE loss.

References used: brute-force nearest neighbours and per-position squared distances in
numpy; the analytic gradient of the codebook term, (2 / P) * n_k * (e_k - mean_k); the
closed form of an EMA with fixed inputs, N_T = g^T N_0 + (1 - g^T) n; numpy entropies.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.losses.vq import (
    CODEBOOK_PATH,
    EMACodebookState,
    codebook_perplexity,
    ema_codebook_init,
    ema_codebook_update,
    get_codebook,
    make_vq_codes_fn,
    make_vq_ema_step,
    make_vqvae_loss,
    nearest_code,
    set_codebook,
    vector_quantize,
)

K, D = 7, 3


def _codebook(seed=0, k=K, d=D):
    return np.random.default_rng(seed).normal(size=(k, d)).astype(np.float32)


def _brute_force(z, codebook):
    """Nearest code by explicit differences: argmin_k sum_d (z_d - e_kd)^2."""
    dist = np.sum((z[..., None, :] - codebook) ** 2, axis=-1)
    return np.argmin(dist, axis=-1), dist


# ---------------------------------------------------------------------------
# vector_quantize
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(D,), (5, D), (4, 3, 2, D)], ids=["single", "flat", "spatial"])
def test_vector_quantize_picks_the_nearest_code(shape):
    codebook = _codebook()
    z = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 1.5
    z_q, idx, aux = jax.jit(vector_quantize)(z, codebook)
    expected, dist = _brute_force(z, codebook)
    np.testing.assert_array_equal(idx, expected)
    assert idx.dtype == jnp.int32 and idx.shape == shape[:-1]
    # Forward value is the code itself.
    np.testing.assert_allclose(z_q, codebook[expected], atol=1e-6)
    # Terms: squared distance summed over D, averaged over positions (numpy reference).
    min_dist = np.min(dist, axis=-1)
    ref = min_dist if len(shape) == 1 else min_dist.reshape(shape[0], -1).mean(-1)
    np.testing.assert_allclose(aux["codebook"], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux["commitment"], ref, rtol=1e-5, atol=1e-6)
    # One-hot counts per example.
    if len(shape) == 1:
        np.testing.assert_array_equal(aux["counts"], np.eye(K)[expected])
    else:
        flat = expected.reshape(shape[0], -1)
        ref_counts = np.stack([np.bincount(row, minlength=K) for row in flat])
        np.testing.assert_array_equal(aux["counts"], ref_counts)


def test_nearest_code_on_exact_codes_and_ties():
    codebook = _codebook()
    # Each code is its own nearest neighbour.
    np.testing.assert_array_equal(nearest_code(jnp.asarray(codebook), codebook), np.arange(K))
    # Equidistant point: ties go to the lowest index.
    tie_book = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]], np.float32)
    assert int(nearest_code(jnp.zeros((2,)), tie_book)) == 0


def test_straight_through_gradient_is_identity():
    codebook = jnp.asarray(_codebook())
    z = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 3, D)), jnp.float32)
    cotangent = jnp.asarray(np.random.default_rng(3).normal(size=z.shape), jnp.float32)

    def out(z, codebook):
        return vector_quantize(z, codebook)[0]

    _, vjp = jax.vjp(out, z, codebook)
    grad_z, grad_codebook = vjp(cotangent)
    # d loss / d z_e == d loss / d z_q, and no gradient reaches the codebook through z_q_st.
    np.testing.assert_array_equal(grad_z, cotangent)
    np.testing.assert_array_equal(grad_codebook, np.zeros_like(codebook))


def test_codebook_term_moves_used_codes_towards_their_assigned_mean():
    rng = np.random.default_rng(4)
    codebook = _codebook(seed=5, k=12)
    z = rng.normal(size=(6, 2, 2, D)).astype(np.float32)  # 24 encodings, P = 4 per example
    idx, _ = _brute_force(z, codebook)
    flat_idx, flat_z = idx.reshape(-1), z.reshape(-1, D)
    counts = np.bincount(flat_idx, minlength=12)
    assert 0 < np.sum(counts > 0) < 12  # some codes used, some not

    def codebook_loss(cb):
        return jnp.sum(vector_quantize(jnp.asarray(z), cb)[2]["codebook"])

    def commitment_loss(cb):
        return jnp.sum(vector_quantize(jnp.asarray(z), cb)[2]["commitment"])

    grad = np.asarray(jax.jit(jax.grad(codebook_loss))(jnp.asarray(codebook)))
    # Analytic gradient: sum over examples of (1/P) sum_positions 2 (e_k - z) 1[k(z)=k].
    expected = np.zeros_like(codebook)
    for k in np.flatnonzero(counts):
        mean_k = flat_z[flat_idx == k].mean(0)
        expected[k] = 2.0 / 4 * counts[k] * (codebook[k] - mean_k)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)

    # One SGD step: each used code moves along (mean_k - e_k), unused codes stay put.
    lr = 0.05
    new = codebook - lr * grad
    for k in range(12):
        if counts[k] == 0:
            np.testing.assert_array_equal(new[k], codebook[k])
        else:
            step, target = new[k] - codebook[k], flat_z[flat_idx == k].mean(0) - codebook[k]
            cos = step @ target / (np.linalg.norm(step) * np.linalg.norm(target))
            assert cos > 1 - 1e-5
            assert np.linalg.norm(new[k] - flat_z[flat_idx == k].mean(0)) < np.linalg.norm(target)
    # The commitment term does not train the codebook.
    np.testing.assert_array_equal(jax.grad(commitment_loss)(jnp.asarray(codebook)), 0.0)


def test_codebook_term_does_not_train_the_encoder_and_commitment_does():
    codebook = jnp.asarray(_codebook())
    z = jnp.asarray(np.random.default_rng(6).normal(size=(3, 2, D)), jnp.float32)
    g_cb = jax.grad(lambda z: jnp.sum(vector_quantize(z, codebook)[2]["codebook"]))(z)
    g_cm = jax.grad(lambda z: jnp.sum(vector_quantize(z, codebook)[2]["commitment"]))(z)
    np.testing.assert_array_equal(g_cb, 0.0)
    idx, _ = _brute_force(np.asarray(z), np.asarray(codebook))
    # d/dz (1/P) ||z - sg[e]||^2 = (2/P) (z - e), P = 2.
    np.testing.assert_allclose(g_cm, (np.asarray(z) - np.asarray(codebook)[idx]), rtol=1e-5, atol=1e-6)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 5\).*\(16, 3\)"):
        vector_quantize(jnp.zeros((2, 4, 4, 5)), jnp.zeros((16, 3)))
    with pytest.raises(ValueError, match=r"\[K, D\].*\(16,\)"):
        vector_quantize(jnp.zeros((2, 3)), jnp.zeros((16,)))
    with pytest.raises(TypeError, match="integer"):
        codebook_perplexity(jnp.zeros((4,)), 8)
    with pytest.raises(ValueError, match=r"mask.*\(3,\)"):
        codebook_perplexity(jnp.zeros((4, 2), jnp.int32), 8, mask=jnp.ones((3,)))
    state = ema_codebook_init(jnp.zeros((K, D)))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(2, 4\)"):
        ema_codebook_update(state, jnp.zeros((2, 5, D)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(7, 3\)"):
        ema_codebook_update(state, jnp.zeros((2, 4)), jnp.zeros((2,), jnp.int32))
    with pytest.raises(KeyError, match="codebook_path"):
        get_codebook({"params": {"encoder": {}}})


# ---------------------------------------------------------------------------
# Perplexity
# ---------------------------------------------------------------------------


def _numpy_perplexity(indices, k):
    p = np.bincount(np.ravel(indices), minlength=k) / np.size(indices)
    nz = p[p > 0]
    return np.exp(-np.sum(nz * np.log(nz))), np.mean(p > 0)


def test_perplexity_extremes_and_numpy_reference():
    f = jax.jit(codebook_perplexity, static_argnums=1)
    ppl, used = f(jnp.tile(jnp.arange(8), 5).reshape(4, 10), 8)
    np.testing.assert_allclose(ppl, 8.0, rtol=1e-6)
    np.testing.assert_allclose(used, 1.0)
    ppl, used = f(jnp.full((4, 3, 3), 5, jnp.int32), 8)
    np.testing.assert_allclose(ppl, 1.0, rtol=1e-6)
    np.testing.assert_allclose(used, 1 / 8)
    idx = np.random.default_rng(7).choice(12, size=(6, 5), p=np.r_[np.full(6, 3.0), np.full(6, 1.0)] / 24)
    ppl, used = f(jnp.asarray(idx), 16)
    ref_ppl, ref_used = _numpy_perplexity(idx, 16)
    np.testing.assert_allclose(ppl, ref_ppl, rtol=1e-5)
    np.testing.assert_allclose(used, ref_used)


def test_perplexity_mask_drops_padded_rows():
    idx = np.random.default_rng(8).integers(0, 10, size=(6, 4))
    mask = np.array([1, 0, 1, 1, 0, 1], np.float32)
    ppl, used = codebook_perplexity(jnp.asarray(idx), 10, mask=jnp.asarray(mask))
    ref_ppl, ref_used = _numpy_perplexity(idx[mask == 1], 10)
    np.testing.assert_allclose(ppl, ref_ppl, rtol=1e-5)
    np.testing.assert_allclose(used, ref_used)


# ---------------------------------------------------------------------------
# EMA codebook
# ---------------------------------------------------------------------------


def _ema_setup():
    rng = np.random.default_rng(9)
    codebook0 = rng.normal(size=(K, D)).astype(np.float32)
    z = rng.normal(size=(5, 4, D)).astype(np.float32)
    idx = rng.choice(4, size=(5, 4)).astype(np.int32)  # fixed assignment, codes 4..6 unused
    idx[0, :4] = [0, 1, 2, 3]  # every one of codes 0..3 used
    counts = np.bincount(idx.ravel(), minlength=K).astype(np.float64)
    sums = np.zeros((K, D))
    np.add.at(sums, idx.ravel(), z.reshape(-1, D))
    return codebook0, z, idx, counts, sums


def _run_ema(state, z, idx, steps, decay, mask=None):
    def body(_, s):
        return ema_codebook_update(s, jnp.asarray(z), jnp.asarray(idx), decay=decay, eps=1e-5, mask=mask)

    return jax.jit(lambda s: jax.lax.fori_loop(0, steps, body, s))(state)


def test_ema_init():
    codebook0 = _codebook()
    state = ema_codebook_init(jnp.asarray(codebook0))
    assert isinstance(state, EMACodebookState)
    np.testing.assert_array_equal(state.cluster_size, np.ones(K))
    np.testing.assert_array_equal(state.embed_sum, codebook0)
    np.testing.assert_array_equal(state.codebook, codebook0)


def test_ema_matches_closed_form_after_t_steps():
    codebook0, z, idx, counts, sums = _ema_setup()
    decay, eps, t = 0.9, 1e-5, 17
    state = _run_ema(ema_codebook_init(jnp.asarray(codebook0)), z, idx, t, decay)
    # Fixed inputs: x_T = g^T x_0 + (1 - g^T) x_batch, with x_0 = (1, e_0) from the init.
    g = decay**t
    n = g * 1.0 + (1 - g) * counts
    m = g * codebook0.astype(np.float64) + (1 - g) * sums
    smoothed = (n + eps) / (n.sum() + K * eps) * n.sum()
    np.testing.assert_allclose(state.cluster_size, n, rtol=1e-5)
    np.testing.assert_allclose(state.embed_sum, m, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.codebook, m / smoothed[:, None], rtol=1e-4, atol=1e-5)


def test_ema_converges_to_the_mean_of_assigned_encodings():
    codebook0, z, idx, counts, sums = _ema_setup()
    eps = 1e-5
    state = _run_ema(ema_codebook_init(jnp.asarray(codebook0)), z, idx, 3000, 0.99)
    used = counts > 0
    # Laplace-smoothed cluster sizes -> the counts; used codes -> the means of their encodings.
    n = np.asarray(state.cluster_size, np.float64)
    smoothed = (n + eps) / (n.sum() + K * eps) * n.sum()
    np.testing.assert_allclose(smoothed[used], counts[used], rtol=1e-4)
    np.testing.assert_allclose(n[~used], 0.0, atol=1e-6)
    np.testing.assert_allclose(state.codebook[used], sums[used] / counts[used, None], rtol=1e-4, atol=1e-4)


def test_ema_update_mask_equals_update_on_the_unmasked_rows():
    codebook0, z, idx, _, _ = _ema_setup()
    mask = np.array([1, 0, 1, 0, 1], np.float32)
    state = ema_codebook_init(jnp.asarray(codebook0))
    masked = ema_codebook_update(state, jnp.asarray(z), jnp.asarray(idx), mask=jnp.asarray(mask))
    subset = ema_codebook_update(state, jnp.asarray(z[mask == 1]), jnp.asarray(idx[mask == 1]))
    for a, b in zip(masked, subset):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# The loss and the EMA step on a tiny linear model
# ---------------------------------------------------------------------------

B, X_DIM, P = 6, 5, 2  # two latent positions per example


def _linear_model(seed=10):
    rng = np.random.default_rng(seed)
    params = {
        "params": {
            "codebook": {"embedding": jnp.asarray(rng.normal(size=(K, D)), jnp.float32)},
            "enc": jnp.asarray(rng.normal(size=(X_DIM, P * D)), jnp.float32),
            "dec": jnp.asarray(rng.normal(size=(P * D, X_DIM)), jnp.float32),
        }
    }

    def encode_fn(p, x):
        return (x @ p["params"]["enc"]).reshape((x.shape[0], P, D))

    def decode_fn(p, z):
        return z.reshape((z.shape[0], P * D)) @ p["params"]["dec"]

    def recon_fn(x, out):
        return jnp.sum(jnp.square(x - out), axis=-1)

    x = jnp.asarray(rng.normal(size=(B, X_DIM)), jnp.float32)
    return params, encode_fn, decode_fn, recon_fn, x


@pytest.mark.parametrize("ema", [False, True])
def test_vqvae_loss_terms_and_total(ema):
    params, enc, dec, rec, x = _linear_model()
    beta = 0.3
    mask = jnp.asarray([1, 1, 0, 1, 0, 1], jnp.float32)
    loss_fn = jax.jit(make_vqvae_loss(enc, dec, rec, beta=beta, ema=ema))
    loss, aux = loss_fn(params, jax.random.PRNGKey(0), {"image": x, "mask": mask})
    assert set(aux) == {"recon", "codebook", "commitment"}
    assert all(v.shape == (B,) for v in aux.values())

    # Reference: quantise by brute force in numpy, decode the codes.
    z = np.asarray(enc(params, x))
    cb = np.asarray(params["params"]["codebook"]["embedding"])
    idx, dist = _brute_force(z, cb)
    recon = np.sum((np.asarray(x) - np.asarray(dec(params, jnp.asarray(cb[idx])))) ** 2, -1)
    vq = np.min(dist, -1).mean(-1)
    np.testing.assert_allclose(aux["recon"], recon, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(aux["codebook"], vq, rtol=1e-5)
    np.testing.assert_allclose(aux["commitment"], vq, rtol=1e-5)
    per_example = recon + beta * vq + (0 if ema else vq)
    m = np.asarray(mask) == 1
    np.testing.assert_allclose(loss, per_example[m].mean(), rtol=1e-4)

    grads = jax.grad(lambda p: loss_fn(p, jax.random.PRNGKey(0), {"image": x})[0])(params)
    g_cb = np.asarray(grads["params"]["codebook"]["embedding"])
    if ema:
        np.testing.assert_array_equal(g_cb, 0.0)
    else:
        assert np.all(np.abs(g_cb[np.unique(idx)]).sum(-1) > 0)


def test_reconstruction_gradient_reaches_the_encoder_only_through_straight_through():
    params, enc, dec, rec, x = _linear_model()
    # beta = 0 and ema=True: the loss is the reconstruction term alone.
    loss_fn = make_vqvae_loss(enc, dec, rec, beta=0.0, ema=True)
    g = jax.grad(lambda p: loss_fn(p, jax.random.PRNGKey(0), {"image": x})[0])(params)["params"]
    assert np.linalg.norm(g["enc"]) > 1e-3

    def no_straight_through(p):
        z_e = enc(p, x)
        cb = p["params"]["codebook"]["embedding"]
        z_q = jnp.take(cb, nearest_code(z_e, cb), axis=0)
        return jnp.mean(rec(x, dec(p, z_q)))

    g_no = jax.grad(no_straight_through)(params)["params"]
    np.testing.assert_array_equal(g_no["enc"], 0.0)
    # Same decoder gradient either way (the forward values agree).
    np.testing.assert_allclose(g_no["dec"], g["dec"], rtol=1e-5, atol=1e-5)


def test_codes_fn_sees_the_loss_preprocessing():
    params, enc, dec, rec, x = _linear_model()

    def preprocess(key, image, index):
        return image + jax.random.normal(key, image.shape)

    key = jax.random.PRNGKey(3)
    batch = {"image": x}
    z_e, idx = make_vq_codes_fn(enc, preprocess=preprocess)(params, key, batch)
    x_pre = preprocess(jax.random.split(key)[0], x, None)
    np.testing.assert_allclose(z_e, enc(params, x_pre), rtol=1e-6)
    # The loss's recon term is that of decoding these codes.
    _, aux = make_vqvae_loss(enc, dec, rec, preprocess=preprocess)(params, key, batch)
    cb = params["params"]["codebook"]["embedding"]
    np.testing.assert_allclose(aux["recon"], rec(x_pre, dec(params, cb[idx])), rtol=1e-4, atol=1e-4)


def test_ema_step_replaces_the_codebook_in_params():
    params, enc, _, _, x = _linear_model()
    mask = jnp.asarray([1, 0, 1, 1, 1, 1], jnp.float32)
    batch = {"image": x, "mask": mask}
    state = ema_codebook_init(get_codebook(params))
    ema_step = jax.jit(make_vq_ema_step(enc, decay=0.8))
    new_params, new_state, metrics = ema_step(params, state, jax.random.PRNGKey(0), batch)

    z = enc(params, x)
    expected = ema_codebook_update(state, z, nearest_code(z, state.codebook), decay=0.8, mask=mask)
    for a, b in zip(new_state, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_array_equal(get_codebook(new_params), new_state.codebook)
    # Every other leaf is untouched, the structure is unchanged.
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
    np.testing.assert_array_equal(new_params["params"]["enc"], params["params"]["enc"])
    ppl, used = codebook_perplexity(nearest_code(z, state.codebook), K, mask)
    np.testing.assert_allclose(metrics["perplexity"], ppl, rtol=1e-6)
    np.testing.assert_allclose(metrics["codes_used"], used)


def test_set_codebook_keeps_frozen_dicts_and_checks_shape():
    params = flax.core.freeze({"params": {"codebook": {"embedding": jnp.zeros((K, D))}, "w": jnp.ones(2)}})
    new = set_codebook(params, jnp.ones((K, D)), CODEBOOK_PATH)
    assert isinstance(new, flax.core.FrozenDict)
    np.testing.assert_array_equal(new["params"]["codebook"]["embedding"], 1.0)
    np.testing.assert_array_equal(params["params"]["codebook"]["embedding"], 0.0)
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(7, 3\)"):
        set_codebook(params, jnp.ones((3, D)))
