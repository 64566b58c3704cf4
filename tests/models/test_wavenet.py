"""WaveNet: causality and the receptive field measured from the Jacobian (output t
depends on inputs t-R+1 .. t exactly, R = 1 + (k-1) sum(dilations)), the causal
convolution against XLA's dilated convolution, ancestral samples (the uncached
next-token sampler) against the enumerated joint of two steps, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.models.autoregressive.wavenet import (
    CausalConv1D,
    WaveNet,
    wavenet_dilations,
    wavenet_receptive_field,
)
from jgen.samplers.kv_cache import DecodeFns, sample_transformer

CONFIGS = {
    # kernel 2, dilations (1, 2, 4) x 2: R = 1 + 1 * 14 = 15
    "k2_two_stacks": {"kernel_size": 2, "layers_per_stack": 3, "num_stacks": 2},
    # kernel 3, dilations (1, 2) x 2, globally conditioned: R = 1 + 2 * 6 = 13
    "k3_conditional": {"kernel_size": 3, "layers_per_stack": 2, "num_stacks": 2, "num_classes": 4},
}
WIDTHS = {"residual_channels": 8, "dilation_channels": 8, "skip_channels": 8, "num_bins": 16}


def _label(model, batch):
    return jnp.arange(batch, dtype=jnp.int32) % model.num_classes if model.num_classes else None


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_t_depends_exactly_on_the_receptive_field_before_t(name):
    model = WaveNet(**CONFIGS[name], **WIDTHS)
    expected_r = {"k2_two_stacks": 15, "k3_conditional": 13}[name]
    assert model.receptive_field == expected_r == wavenet_receptive_field(model.kernel_size, model.dilations)
    t_len = 24
    label = _label(model, 1)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, t_len), jnp.int32), label)
    emb = jax.random.normal(jax.random.PRNGKey(1), (t_len, model.residual_channels))
    r = jax.random.normal(jax.random.PRNGKey(2), (model.num_bins,))

    def projected(e):  # [T, C] -> [T]
        return model.apply(params, e[None], label, method=model.from_embeddings)[0] @ r

    dependence = np.abs(np.asarray(jax.jit(jax.jacrev(projected))(emb))).max(axis=-1)  # [T_out, T_in]
    t, s = np.meshgrid(np.arange(t_len), np.arange(t_len), indexing="ij")
    window = (s <= t) & (s > t - expected_r)
    assert np.all(dependence[~window] == 0.0)  # nothing later, nothing older than R - 1 steps
    assert np.all(dependence[window] > 0.0)  # and every input inside the window is used
    # The measured receptive field of the last output is R.
    assert int(np.sum(dependence[-1] > 0)) == expected_r


@pytest.mark.parametrize("kernel_size, dilation", [(2, 1), (2, 4), (3, 2)])
def test_causal_conv_equals_xla_dilated_convolution_with_left_padding(kernel_size, dilation):
    conv = CausalConv1D(features=3, kernel_size=kernel_size, dilation=dilation)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 11, 4))
    params = conv.init(jax.random.PRNGKey(1), x)
    kernel, bias = params["params"]["kernel"], params["params"]["bias"]
    reference = jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1,), padding=[((kernel_size - 1) * dilation, 0)],
        rhs_dilation=(dilation,), dimension_numbers=("NWC", "WIO", "NWC"),
    ) + bias[None, None]
    np.testing.assert_allclose(np.asarray(conv.apply(params, x)), np.asarray(reference), rtol=1e-5, atol=1e-5)


def test_dilation_schedule_and_receptive_field_formula():
    assert wavenet_dilations(4, 2) == (1, 2, 4, 8, 1, 2, 4, 8)
    # The paper's 10-layer stack (dilations up to 512) with kernel 2 sees 1024 samples.
    assert wavenet_receptive_field(2, wavenet_dilations(10, 1)) == 1024
    assert WaveNet(layers_per_stack=10, num_stacks=3).receptive_field == 1 + 3 * 1023


def test_samples_match_the_enumerated_two_step_joint():
    # p(x1, x2 | x0) = softmax(logits(x0)_0)[x1] * softmax(logits(x0, x1)_1)[x2], by
    # enumeration of the 4 x 4 continuations; the sampler must hit it.
    model = WaveNet(kernel_size=2, layers_per_stack=2, num_stacks=1, residual_channels=8,
                    dilation_channels=8, skip_channels=8, num_bins=4)
    params = model.init(jax.random.PRNGKey(3), jnp.zeros((1, 3), jnp.int32))
    params = jax.tree_util.tree_map(lambda a: 2.0 * a, params)  # less uniform conditionals
    x0 = 2
    pairs = np.array([[x0, a, b] for a in range(4) for b in range(4)], np.int32)
    logp = jax.nn.log_softmax(model.apply(params, pairs), axis=-1)  # [16, 3, 4]
    joint = np.exp(np.asarray(logp[np.arange(16), 0, pairs[:, 1]] + logp[np.arange(16), 1, pairs[:, 2]],
                              np.float64))
    assert abs(joint.sum() - 1.0) < 1e-5
    num = 4000
    fns = DecodeFns(lambda tokens: model.apply(params, tokens))
    draws = np.asarray(jax.jit(lambda key: sample_transformer(
        key, fns, jnp.full((num, 1), x0, jnp.int32), 2, use_cache=False))(jax.random.PRNGKey(4)))
    assert np.all(draws[:, 0] == x0)
    counts = np.bincount(draws[:, 1] * 4 + draws[:, 2], minlength=16)
    assert stats.chisquare(counts, num * joint / joint.sum()).pvalue > 1e-3


def test_bad_inputs_raise_clear_errors():
    model = WaveNet(**CONFIGS["k2_two_stacks"], **WIDTHS)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    with pytest.raises(ValueError, match="mu_law_encode"):
        model.apply(params, jnp.zeros((1, 8)))  # a float waveform, not classes
    with pytest.raises(ValueError, match=r"\[0, num_bins=16\).*\[0, 20\]"):
        model.apply(params, jnp.array([[0, 20]], jnp.int32))
    with pytest.raises(ValueError, match="num_classes=0"):
        model.apply(params, jnp.zeros((1, 8), jnp.int32), jnp.zeros((1,), jnp.int32))
    with pytest.raises(ValueError, match=r"expected embeddings \[B, T, 8\]"):
        model.apply(params, jnp.zeros((1, 8, 5)), method=model.from_embeddings)
    conditional = WaveNet(**CONFIGS["k3_conditional"], **WIDTHS)
    with pytest.raises(ValueError, match="pass label"):
        conditional.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    with pytest.raises(ValueError, match="kernel_size"):
        WaveNet(kernel_size=0).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
