"""The autoregressive sequence experiments (experiments/autoregressive/sequences.py and
bench_sampling.py): short runs of the character transformer on the "grammar" corpus and
of WaveNet on mu-law waveforms beat their independent references (the uniform model
log V, and a unigram model counted here with numpy) on held-out data; samples are text
of the corpus' own words and a .wav that reads back; the strided evaluation windows
score every character exactly once; the receptive-field WaveNet sampler draws exactly
the full-canvas sampler's tokens; and the sampling benchmark reports identical cached
and uncached tokens. Fixed seeds throughout."""

import importlib.util
import json
import math
import os
import re
import sys
import wave
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO_ROOT

from jgen.data.sequences import grammar_text, waveform_tokens
from jgen.losses.autoregressive import categorical_autoregressive_log_prob
from jgen.models.autoregressive.transformer import CausalTransformer
from jgen.models.autoregressive.wavenet import WaveNet
from jgen.samplers.kv_cache import DecodeFns, sample_transformer


def _load(name: str, filename: str):
    """The experiment files are scripts, not package modules: load them by path."""
    if name not in sys.modules:
        path = os.path.join(REPO_ROOT, "experiments", "autoregressive", filename)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


sequences = _load("ar_sequences", "sequences.py")
bench = _load("ar_bench_sampling", "bench_sampling.py")


@pytest.mark.parametrize("num_tokens,seq_len,stride", [(2, 2, 1), (10, 4, 2), (11, 4, 3), (5, 8, 4), (97, 16, 8)])
def test_strided_windows_score_every_target_once_with_enough_context(num_tokens, seq_len, stride):
    starts, score = sequences.strided_windows(num_tokens, seq_len, stride)
    targets, context = [], []
    for s, row in zip(starts, score):
        for i in np.nonzero(row)[0]:
            targets.append(s + 1 + i)  # the target's position in the sequence
            context.append(i + 1)  # tokens of the window before it
    assert sorted(targets) == list(range(1, num_tokens))  # each target exactly once
    assert all(s + seq_len - 1 <= max(num_tokens - 1, seq_len - 1) for s in starts)
    # Outside the first window every target sees at least seq_len - stride tokens.
    assert all(c >= min(seq_len - stride, t) for t, c in zip(targets, context))


def test_text_nll_in_one_window_equals_the_summed_next_token_log_likelihood():
    model = CausalTransformer(vocab_size=7, max_len=24, d_model=16, num_heads=2, num_layers=1)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 24), jnp.int32))
    ids = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (20,), 0, 7), np.int32)
    r = sequences.text_nll(model, params, ids, batch_size=4)
    ll = categorical_autoregressive_log_prob(model.apply(params, ids[None])[:, :-1], ids[None, 1:])
    assert r["num_tokens"] == 19 and r["num_windows"] == 1
    np.testing.assert_allclose(r["nats_per_token"], -float(ll[0]) / 19, rtol=1e-5)
    np.testing.assert_allclose(r["bits_per_token"], r["nats_per_token"] / math.log(2), rtol=1e-12)


def test_short_transformer_run_on_grammar_beats_uniform_and_unigram_and_samples_its_words(tmp_path, capsys):
    out = tmp_path / "text.json"
    assert sequences.main(["text", "--corpus", "grammar", "--steps", "150", "--seq-len", "32", "--d-model", "32",
                           "--num-heads", "2", "--num-layers", "1", "--learning-rate", "1e-2",
                           "--warmup-steps", "20", "--input-noise", "0.05", "--prompt", "The ", "--temperature", "0.6",
                           "--num-samples", "2", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    # Independent references from the raw text: uniform over its characters, and the
    # unigram (add-one) model of the first 90% scored on the last 10%.
    text = grammar_text()
    chars = sorted(set(text))
    cut = round(len(text) * 0.9)
    counts = Counter(text[:cut])
    unigram = -np.mean([math.log((counts[c] + 1) / (cut + len(chars))) for c in text[cut + 1:]])
    assert r["vocab_size"] == len(chars) and r["eval"]["num_tokens"] == len(text) - cut - 1
    assert r["uniform_nats_per_token"] == pytest.approx(math.log(len(chars)))
    assert r["unigram_nats_per_token"] == pytest.approx(unigram, rel=1e-9)
    assert r["test_nats_per_token"] < math.log(len(chars)) - 1.5, r  # 3.53 nats/char for the uniform model
    assert r["test_nats_per_token"] < unigram - 1.0, r  # context matters: 2.96 for the unigram model
    assert r["steps"] == 150 and r["num_traces"] == 1 and r["wall_time_s"] > 0
    val = r["validation"]  # measured after 100 and 150 steps; the kept parameters are the better
    assert val["steps"] == [100, 150] and r["best_step"] == val["steps"][int(np.argmin(val["nats_per_token"]))]
    # Samples: the prompt, then in-vocabulary text made mostly of the grammar's words.
    lexicon = set(re.findall(r"[a-z]+", text.lower()))
    words = []
    for s in r["samples"]:
        assert s.startswith("The ") and len(s) == 32 and set(s) <= set(chars), s
        words += re.findall(r"[a-z]+", s.lower())[:-1]  # the last word may be cut off
    assert np.mean([w in lexicon for w in words]) >= 0.6, r["samples"]
    assert capsys.readouterr().out.startswith("| model | test NLL (nats/token)")


def test_short_wavenet_run_beats_uniform_and_unigram_on_heldout_clips_and_writes_a_wav(tmp_path):
    out, wav = tmp_path / "wavenet.json", tmp_path / "clip.wav"
    clip_len, num_clips = 256, 32
    assert sequences.main(["wavenet", "--steps", "100", "--batch-size", "8", "--clip-len", str(clip_len),
                           "--layers-per-stack", "5", "--channels", "16", "--skip-channels", "32",
                           "--learning-rate", "1e-2", "--warmup-steps", "10", "--num-test-clips", str(num_clips),
                           "--sample-len", "200", "--wav", str(wav), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    # Unigram reference counted here on training-distribution clips from another key.
    fit_codes = np.asarray(waveform_tokens(jax.random.PRNGKey(99), num_clips, clip_len))
    test_codes = np.asarray(waveform_tokens(jax.random.PRNGKey(sequences.HELDOUT_WAVEFORM_SEED), num_clips,
                                            clip_len))[:, 1:]
    p = (np.bincount(fit_codes.ravel(), minlength=256) + 1.0) / (fit_codes.size + 256)
    unigram = -np.mean(np.log(p[test_codes]))
    assert r["eval"]["num_tokens"] == num_clips * (clip_len - 1)
    assert r["test_nats_per_token"] < math.log(256) - 1.0, r  # 5.55 nats/sample for the uniform model
    assert r["test_nats_per_token"] < unigram - 0.5, (r, unigram)
    assert r["num_traces"] == 1 and r["receptive_field"] == 32
    # The clip: 200 samples in [-1, 1] from silence, and the .wav reads back as 16-bit PCM.
    clip = np.load(r["sample_npy"])
    assert clip.shape == (1, 200) and np.abs(clip).max() <= 1.0 and abs(clip[0, 0]) < 1e-3  # silence
    with wave.open(str(wav), "rb") as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 8000)
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2")
    np.testing.assert_array_equal(pcm[:200], np.round(clip[0].astype(np.float64) * 32767).astype(np.int16))
    assert pcm.size == 200 + 800 and not pcm[200:].any()  # then 0.1 s of silence


def test_receptive_field_wavenet_sampler_draws_the_full_canvas_samplers_tokens():
    model = WaveNet(num_bins=16, layers_per_stack=3, residual_channels=8, dilation_channels=8, skip_channels=8)
    assert model.receptive_field == 8
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    params = jax.tree.map(lambda a: 3.0 * a, params)  # sharper, more varied logits
    fns = DecodeFns(lambda tokens: model.apply(params, tokens))
    prompt = jax.random.randint(jax.random.PRNGKey(1), (3, 2), 0, 16)

    @jax.jit
    def both(key):
        outs = []
        for num_new, kwargs in [(30, {}), (30, {"temperature": 0.7, "top_p": 0.9}), (4, {"top_k": 5})]:
            outs.append((sequences.sample_wavenet(key, model, params, prompt, num_new, **kwargs),
                         sample_transformer(key, fns, prompt, num_new, use_cache=False, **kwargs)))
        return outs

    for windowed, full in both(jax.random.PRNGKey(2)):
        np.testing.assert_array_equal(np.asarray(windowed), np.asarray(full))
        np.testing.assert_array_equal(np.asarray(windowed[:, :2]), np.asarray(prompt))
    windowed = np.asarray(both(jax.random.PRNGKey(2))[0][0])
    assert len(np.unique(windowed[:, 2:])) >= 3  # not vacuous: the draws vary


def test_benchmark_reports_identical_cached_and_uncached_tokens(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--settings", "text", "--d-model", "16", "--num-layers", "1", "--num-heads", "2",
                       "--batch-size", "3", "--prompt-len", "3", "--num-new", "12", "--repeats", "2",
                       "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "random" in report["note"]
    (r,) = report["results"]
    assert r["setting"] == "text" and r["vocab_size"] == bench.SETTINGS["text"]["vocab_size"]
    assert r["tokens_identical"] and r["token_match_fraction"] == 1.0 and r["prompt_preserved"], r
    assert r["batch_size"] == 3 and r["num_new"] == 12 and r["max_len"] == 3 + 12
    for path in ("cached", "uncached"):
        p = r[path]
        assert len(p["times_s"]) == 2 and len(p["warmup_s"]) == 1 and p["compile_s"] > 0
        assert p["median_s"] == pytest.approx(float(np.median(p["times_s"])))
        assert p["tokens_per_s"] == pytest.approx(3 * 12 / p["median_s"])
        assert p["samples_per_s"] == pytest.approx(3 / p["median_s"])
    assert r["speedup"] == pytest.approx(r["uncached"]["median_s"] / r["cached"]["median_s"])
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| setting |") and len(table) == 2 + 2 and "| text |" in table[2]
    with pytest.raises(SystemExit):
        bench.main(["--settings", "gpt2", "--out", str(out)])
