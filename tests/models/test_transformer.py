"""CausalTransformer and the KV-cached sampler: causality by the Jacobian (not by
reading the masks), cached logits equal the full forward pass, cached and uncached
sampling draw identical tokens from one key, the sampler traces its step once, and a
model fit to a known Markov chain samples its transition matrix (chi-square)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from jgen.losses.autoregressive import categorical_autoregressive_log_prob
from jgen.models.autoregressive.transformer import (
    CausalTransformer,
    KVCache,
    init_kv_cache,
)
from jgen.samplers.kv_cache import DecodeFns, sample_transformer, transformer_decode_fns

VOCAB, MAX_LEN = 5, 12
CONFIGS = {
    "learned": {"position_embedding": "learned"},
    "sinusoidal_conditional": {"position_embedding": "sinusoidal", "num_classes": 3},
}


def _model(name, **overrides):
    kwargs = {"vocab_size": VOCAB, "max_len": MAX_LEN, "d_model": 16, "num_heads": 2, "num_layers": 2}
    return CausalTransformer(**{**kwargs, **CONFIGS[name], **overrides})


def _init(model, seed=0):
    label = jnp.zeros((1,), jnp.int32) if model.num_classes else None
    return model.init(jax.random.PRNGKey(seed), jnp.zeros((1, MAX_LEN), jnp.int32), label)


def _labels(model, batch):
    return jnp.arange(batch, dtype=jnp.int32) % model.num_classes if model.num_classes else None


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_t_depends_exactly_on_inputs_up_to_t(name):
    # Convention: logits at position t (which predict token t+1) may depend on the
    # inputs at positions <= t only. d logits_t . r / d emb_s must be exactly 0 for s > t
    # and nonzero for s <= t (every earlier position is used).
    model = _model(name)
    params = _init(model)
    t_len = 8
    emb = jax.random.normal(jax.random.PRNGKey(1), (1, t_len, model.d_model))
    r = jax.random.normal(jax.random.PRNGKey(2), (VOCAB,))
    label = _labels(model, 1)

    def projected(e):  # [T, D] -> [T]
        return model.apply(params, e[None], label, method=model.from_embeddings)[0] @ r

    jac = np.asarray(jax.jit(jax.jacrev(projected))(emb[0]))  # [T_out, T_in, D]
    dependence = np.abs(jac).max(axis=-1)
    assert np.all(dependence[np.triu_indices(t_len, k=1)] == 0.0)
    assert np.all(dependence[np.tril_indices(t_len)] > 0.0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_logits_equal_the_full_forward_pass(name):
    model = _model(name)
    params = _init(model, seed=3)
    batch = 3
    tokens = jax.random.randint(jax.random.PRNGKey(4), (batch, MAX_LEN), 0, VOCAB)
    label = _labels(model, batch)

    @jax.jit
    def full_and_cached(params, tokens):
        # Prefill 4 positions, then a chunk of 2, then one position per step (a scan).
        def extend(x, cache):
            return model.apply(params, x, cache, label, method=model.extend)

        cache = init_kv_cache(model, batch)
        first, cache = extend(tokens[:, :4], cache)
        second, cache = extend(tokens[:, 4:6], cache)

        def step(cache, x):
            logits, cache = extend(x[:, None], cache)
            return cache, logits[:, 0]

        cache, rest = jax.lax.scan(step, cache, tokens[:, 6:].T)
        cached = jnp.concatenate([first, second, jnp.swapaxes(rest, 0, 1)], axis=1)
        return model.apply(params, tokens, label), cached, cache.index

    full, cached, index = full_and_cached(params, tokens)
    np.testing.assert_allclose(np.asarray(cached), np.asarray(full), rtol=1e-5, atol=1e-5)
    assert int(index) == MAX_LEN


_TRACES = {"cached": 0, "uncached": 0}


def _counting(fns):
    """The same DecodeFns, counting the Python calls (= traces) of each function."""

    def logits_fn(tokens):
        _TRACES["uncached"] += 1
        return fns.logits_fn(tokens)

    def extend_fn(tokens, cache):
        _TRACES["cached"] += 1
        return fns.extend_fn(tokens, cache)

    return DecodeFns(logits_fn, fns.init_cache, extend_fn)


def test_cached_and_uncached_sampling_draw_the_same_tokens():
    model = _model("sinusoidal_conditional")
    params = jax.tree_util.tree_map(lambda a: 3.0 * a, _init(model, seed=5))  # sharper, more varied logits
    batch, num_new = 6, 8
    prompt = jax.random.randint(jax.random.PRNGKey(6), (batch, 2), 0, VOCAB)
    fns = _counting(transformer_decode_fns(model, params, label=_labels(model, batch)))
    _TRACES.update(cached=0, uncached=0)

    @jax.jit
    def both(key, temperature, top_p):
        # temperature and top_p are traced (one compile for every setting); top_k is
        # static, and 4 of V = 5 keeps the top-k filter active in all of them.
        kwargs = {"temperature": temperature, "top_k": 4, "top_p": top_p}
        return (sample_transformer(key, fns, prompt, num_new, use_cache=True, **kwargs),
                sample_transformer(key, fns, prompt, num_new, use_cache=False, **kwargs))

    draws = []
    for seed, temperature, top_p in [(0, 1.0, 1.0), (1, 0.5, 1.0), (2, 1.7, 0.8), (3, 1.0, 0.5)]:
        cached, uncached = both(jax.random.PRNGKey(seed), temperature, top_p)
        np.testing.assert_array_equal(np.asarray(cached), np.asarray(uncached))
        np.testing.assert_array_equal(np.asarray(cached[:, :2]), np.asarray(prompt))
        draws.append(np.asarray(cached[:, 2:]))
    # The comparison is not vacuous: the draws vary, and the key matters.
    assert len(np.unique(np.concatenate(draws))) >= 3
    assert not np.array_equal(draws[0], draws[1])
    # Traced once for all four calls: prefill + one step (cached), one step (uncached).
    assert _TRACES == {"cached": 2, "uncached": 1}


def test_sampler_program_does_not_grow_with_the_number_of_steps():
    model = _model("learned")
    params = _init(model)
    prompt = jnp.zeros((2, 1), jnp.int32)
    for use_cache in (True, False):
        sizes = []
        for num_new in (3, 10):
            fns = _counting(transformer_decode_fns(model, params))
            _TRACES.update(cached=0, uncached=0)
            def sample(key, fns=fns, num_new=num_new, use_cache=use_cache):
                return sample_transformer(key, fns, prompt, num_new, use_cache=use_cache)

            jaxpr = jax.make_jaxpr(sample)(jax.random.PRNGKey(0))
            sizes.append(len(jaxpr.eqns))
            assert _TRACES == ({"cached": 2, "uncached": 0} if use_cache else {"cached": 0, "uncached": 1})
        assert sizes[0] == sizes[1], sizes


def _markov_sequences(rng, matrix, initial, num, length):
    states = np.empty((num, length), np.int32)
    states[:, 0] = rng.choice(len(initial), size=num, p=initial)
    cumulative = np.cumsum(matrix, axis=1)
    for t in range(1, length):
        u = rng.random(num)[:, None]
        states[:, t] = np.minimum((u > cumulative[states[:, t - 1]]).sum(axis=1), len(initial) - 1)
    return states


def test_samples_of_a_model_fit_to_a_markov_chain_have_its_transition_matrix():
    matrix = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.3, 0.3, 0.4]])
    k, length = 3, 10
    rng = np.random.default_rng(0)
    data = _markov_sequences(rng, matrix, np.full(k, 1.0 / k), 20_000, length)
    model = CausalTransformer(vocab_size=k, max_len=length, d_model=16, num_heads=2, num_layers=1)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, length), jnp.int32))
    num_steps, batch = 200, 128
    opt = optax.adam(optax.cosine_decay_schedule(1e-2, num_steps))  # decays: small final SGD noise

    def loss_fn(p, x):  # mean NLL of tokens 1.. given the previous ones
        return -jnp.mean(categorical_autoregressive_log_prob(model.apply(p, x)[:, :-1], x[:, 1:]))

    @jax.jit
    def train(params, batches):
        def step(carry, x):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p, x)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss
        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), batches)
        return params, losses

    batches = data[rng.integers(0, len(data), (num_steps, batch))]
    params, losses = train(params, jnp.asarray(batches))
    # The training loss approaches the true conditional entropy of tokens 1.. given
    # token 0: sum_t sum_i P(x_t = i) H(row i), with P(x_t) = uniform @ matrix^t.
    row_entropy = -np.sum(matrix * np.log(matrix), axis=1)
    marginals = [np.full(k, 1.0 / k) @ np.linalg.matrix_power(matrix, t) for t in range(length - 1)]
    true_nll = float(sum(m @ row_entropy for m in marginals))
    assert float(np.mean(losses[-20:])) < true_nll * 1.03, (np.mean(losses[-20:]), true_nll)

    num = 256
    prompt = jnp.asarray(rng.integers(0, k, (num, 1)), jnp.int32)
    samples = np.asarray(jax.jit(lambda key: sample_transformer(
        key, transformer_decode_fns(model, params), prompt, length - 1))(jax.random.PRNGKey(1)))
    counts = np.zeros((k, k))
    np.add.at(counts, (samples[:, :-1].ravel(), samples[:, 1:].ravel()), 1)
    expected = counts.sum(axis=1, keepdims=True) * matrix
    chi2 = np.sum((counts - expected) ** 2 / expected)
    pval = stats.chi2.sf(chi2, df=k * (k - 1))
    assert pval > 1e-3, (pval, counts / counts.sum(axis=1, keepdims=True))


def test_bad_inputs_raise_clear_errors():
    model = _model("learned")
    params = _init(model)
    with pytest.raises(ValueError, match="integer ids of shape"):
        model.apply(params, jnp.zeros((2, 4)))  # floats
    with pytest.raises(ValueError, match="integer ids of shape"):
        model.apply(params, jnp.zeros((4,), jnp.int32))  # no batch axis
    with pytest.raises(ValueError, match=r"\[0, vocab_size=5\).*\[0, 7\]"):
        model.apply(params, jnp.array([[0, 7]], jnp.int32))  # out of vocabulary
    with pytest.raises(ValueError, match="T <= 12"):
        model.apply(params, jnp.zeros((1, MAX_LEN + 1), jnp.int32))
    with pytest.raises(ValueError, match="num_classes=0"):
        model.apply(params, jnp.zeros((1, 3), jnp.int32), jnp.zeros((1,), jnp.int32))
    conditional = _model("sinusoidal_conditional")
    with pytest.raises(ValueError, match="pass label"):
        conditional.apply(_init(conditional), jnp.zeros((1, 3), jnp.int32))
    with pytest.raises(ValueError, match="multiple of"):
        _init(_model("learned", d_model=15))
    with pytest.raises(ValueError, match="length must be"):
        init_kv_cache(model, 2, MAX_LEN + 1)
    with pytest.raises(ValueError, match="do not fit the cache"):
        model.apply(params, jnp.zeros((3, 1), jnp.int32), init_kv_cache(model, 2), method=model.extend)
    assert isinstance(init_kv_cache(model, 2), KVCache)
    fns = transformer_decode_fns(model, params)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"prompt must be integer tokens \[B, P\] with P >= 1"):
        sample_transformer(key, fns, jnp.zeros((2, 0), jnp.int32), 3)
    with pytest.raises(ValueError, match="num_new must be"):
        sample_transformer(key, fns, jnp.zeros((2, 1), jnp.int32), 2.0)
    with pytest.raises(ValueError, match="length must be"):  # prompt + new tokens exceed max_len
        sample_transformer(key, fns, jnp.zeros((2, 4), jnp.int32), MAX_LEN)
    with pytest.raises(ValueError, match="use_cache=False"):
        sample_transformer(key, DecodeFns(fns.logits_fn), jnp.zeros((2, 1), jnp.int32), 3)
