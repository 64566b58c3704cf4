r"""Autoregressive sequence models: a character-level causal transformer on text and a
WaveNet on mu-law waveforms, trained by maximum likelihood, evaluated by exact held-out
NLL, then sampled.

Both models give, in one causal pass, every conditional
:math:`p(x_{t+1} \mid x_{\le t})`, so the held-out negative log-likelihood is exact:

.. math::
    \mathrm{NLL} = -\frac{1}{N} \sum_{t} \log p(x_{t+1} \mid x_{\le t})
    \quad \text{nats/token} \;=\; \mathrm{NLL} / \ln 2 \quad \text{bits/token}.

**text** (`train_text_transformer`, `text_nll`, `sample_text`): a `CausalTransformer`
on the characters of a corpus of `jgen.data.sequences` ("sonnets", the default, or
"grammar"), trained on random windows of the training split (`random_windows`) less
its last 10%, which is a validation split: the parameters of the step with the lowest
validation NLL (measured every 100 steps) are kept, since a corpus as small as the
Sonnets is otherwise memorised within a few hundred steps. The command line also
replaces 15% of the *input* characters by random ones in training (`input_noise`, a
regulariser; the targets stay clean). The test NLL covers *every* character of the
held-out split after its first: windows of `seq_len` characters start every `stride`
(default seq_len / 2) characters, and each window scores only the characters no
earlier window scored, so every scored character sees at least ``seq_len - stride``
characters of context (the first window's see all before them). The references are
the uniform model, :math:`\log V`, and the unigram model fitted to the training split
(add-one smoothing). Samples continue a prompt with temperature / top-k / top-p
filtering through the KV cache (`sample_transformer`).

**wavenet** (`train_wavenet`, `wavenet_nll`, `sample_wavenet`): a `WaveNet` on
8-bit mu-law codes of generated sinusoid mixtures (`waveform_tokens`), trained on fresh
clips every step (so there is no overfitting); the test NLL scores every sample after
the first of `num_clips` clips drawn from a fixed held-out key, disjoint from the
training keys. References: uniform, :math:`\log 256`, and the unigram model of the
mu-law codes fitted to other fresh clips. Samples are drawn with an exact
receptive-field window (`sample_wavenet`): output t of a WaveNet depends only on inputs
t-R+1 .. t (R = `model.receptive_field`), so each step reruns the network on the R
most recent samples only, not on the whole canvas, and draws the same tokens as
`sample_transformer(..., use_cache=False)`. A clip is saved as .npy (floats in [-1, 1])
and, optionally, as a 16-bit PCM .wav (stdlib `wave`).

Training: optax adamw with linear warm-up and cosine decay (to a tenth), gradients
clipped to global norm 1, one jitted step; the loop reads the loss back (blocking)
every 16 steps. All randomness comes from explicit seeds.

Usage::

    python experiments/autoregressive/sequences.py text --steps 2000 --out runs/text.json
    python experiments/autoregressive/sequences.py text --corpus grammar --d-model 64 \
        --num-layers 2 --seq-len 64 --steps 500 --out runs/grammar.json
    python experiments/autoregressive/sequences.py wavenet --steps 1000 \
        --out runs/wavenet.json --wav runs/wavenet.wav

Tests and notebooks load this file by path (it is a script, not a package module)::

    spec = importlib.util.spec_from_file_location("ar_sequences", path)
    sequences = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sequences
    spec.loader.exec_module(sequences)

References:
  Radford et al., "Language Models are Unsupervised Multitask Learners", 2019.
  van den Oord et al., "WaveNet: A Generative Model for Raw Audio", arXiv:1609.03499, 2016.
  Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020 (top-p).
  Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (adamw).
  Xie et al., "Data Noising as Smoothing in Neural Network Language Models", ICLR 2017.
"""

import argparse
import functools
import json
import math
import os
import sys
import time
import wave
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.data.sequences import (
    CORPORA,
    TextCorpus,
    mu_law_decode,
    random_windows,
    text_corpus,
    waveform_tokens,
)
from jgen.losses.autoregressive import categorical_autoregressive_log_prob
from jgen.models.autoregressive.transformer import CausalTransformer
from jgen.models.autoregressive.wavenet import WaveNet
from jgen.samplers.categorical import sample_categorical
from jgen.samplers.kv_cache import sample_transformer, transformer_decode_fns

# Host-device synchronisation period of the training loops (bounds the async queue).
SYNC_EVERY = 16
# The held-out waveform clips come from this key, never used for training.
HELDOUT_WAVEFORM_SEED = 2024
# The mu-law code of silence (x = 0) for 8-bit mu-law: floor(255/2 + 1/2) = 128.
SILENCE = 128


class Fit(NamedTuple):
    """What the training functions return.

    Attributes:
      model: the Flax module (`CausalTransformer` or `WaveNet`).
      params: the trained parameters.
      loss_steps: int array [S], the steps whose training loss was recorded.
      losses: float array [S], the training NLL (nats/token) at those steps.
      steps: optimisation steps taken.
      wall_time_s: training time in seconds, compilation and validation included.
      num_traces: how many times the train step was traced (1 unless it recompiled).
      corpus: the `TextCorpus` (text runs; None for WaveNet).
      val_steps, val_nll: the steps at which the validation NLL (nats/token) was
        measured, and its values (text runs with a validation split; else empty).
      best_step: the step whose parameters `params` are: the one with the lowest
        validation NLL when there is a validation split, else the last step.
    """

    model: Any
    params: Any
    loss_steps: np.ndarray
    losses: np.ndarray
    steps: int
    wall_time_s: float
    num_traces: int
    corpus: TextCorpus | None = None
    val_steps: np.ndarray = np.zeros(0, np.int64)
    val_nll: np.ndarray = np.zeros(0)
    best_step: int = -1


def _check_positive(who: str, **values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{who}: {name} must be a positive int; received {v!r}.")


def num_params(params) -> int:
    return sum(int(np.size(a)) for a in jax.tree.leaves(params))


def _optimizer(learning_rate: float, steps: int, warmup_steps: int, weight_decay: float):
    warmup = min(int(warmup_steps), max(int(steps) - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max(int(steps), warmup + 1),
                                                  end_value=learning_rate / 10)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=weight_decay))


def _fit(model, params, loss_fn, batch_fn, *, steps, learning_rate, warmup_steps, weight_decay,
         log: Callable[[str], None] | None, corpus=None, val_fn=None, eval_every: int = 0,
         noise_key=None) -> Fit:
    """The shared loop: `batch_fn(step) -> tokens` (traced), `loss_fn(params, tokens,
    key)` -> mean nats/token (key: `fold_in(noise_key, step)`, for training noise); one jitted step, blocking on the loss every SYNC_EVERY steps.
    With `val_fn(params) -> float`, the validation NLL is measured after every
    `eval_every` steps and after the last, and the best parameters are returned."""
    optimizer = _optimizer(learning_rate, steps, warmup_steps, weight_decay)
    opt_state = optimizer.init(params)
    traces = []

    @jax.jit
    def train_step(params, opt_state, step):
        traces.append(1)  # runs at trace time only
        key = jax.random.fold_in(noise_key if noise_key is not None else jax.random.PRNGKey(0), step)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch_fn(step), key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    loss_steps, losses, val_steps, val_nll = [], [], [], []
    best_params, best_step = params, int(steps) - 1
    start = time.perf_counter()
    for step in range(int(steps)):
        params, opt_state, loss = train_step(params, opt_state, jnp.asarray(step, jnp.int32))
        if val_fn is not None and ((step + 1) % max(int(eval_every), 1) == 0 or step == steps - 1):
            val_steps.append(step + 1)  # steps taken
            val_nll.append(float(val_fn(params)))
            if val_nll[-1] == min(val_nll):
                best_params, best_step = params, step + 1
            if log is not None:
                log(f"step {step + 1:6d}  validation NLL {val_nll[-1]:.4f} nats/token")
        if step % SYNC_EVERY == 0 or step == steps - 1:
            loss = float(loss)  # blocks: the device never runs more than 16 steps ahead
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at step {step}; lower the learning rate.")
            loss_steps.append(step)
            losses.append(loss)
            if log is not None and (step % (SYNC_EVERY * 16) == 0 or step == steps - 1):
                log(f"step {step:6d}  train NLL {loss:.4f} nats/token  {time.perf_counter() - start:.1f} s")
    if val_fn is None:
        best_params, best_step = params, int(steps)
    jax.block_until_ready(best_params)
    wall = time.perf_counter() - start
    return Fit(model, best_params, np.asarray(loss_steps), np.asarray(losses), int(steps), wall, len(traces), corpus,
               np.asarray(val_steps, np.int64), np.asarray(val_nll), best_step)


def _next_token_nll(logits, tokens):
    """Mean NLL (nats/token) of tokens[:, 1:] under logits[:, :-1] (next-token convention)."""
    n = tokens.shape[0] * (tokens.shape[1] - 1)
    return -jnp.sum(categorical_autoregressive_log_prob(logits[:, :-1], tokens[:, 1:])) / n


# --------------------------------------------------------------------------------------
# Text: a character-level causal transformer.
# --------------------------------------------------------------------------------------


def train_text_transformer(
    key: jax.Array,
    corpus: str | TextCorpus = "sonnets",
    *,
    steps: int = 2000,
    batch_size: int = 32,
    seq_len: int = 128,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
    mlp_ratio: int = 4,
    learning_rate: float = 3e-3,
    warmup_steps: int = 100,
    weight_decay: float = 0.1,
    val_fraction: float = 0.1,
    eval_every: int = 100,
    input_noise: float = 0.0,
    log: Callable[[str], None] | None = None,
) -> Fit:
    """Fits a `CausalTransformer` (max_len = seq_len) to the characters of `corpus`.

    Step t takes `batch_size` random windows of `seq_len` characters of the training
    text (key `fold_in(k_data, t)`) and an adamw step on their mean next-character
    NLL (nats/character, the first character of each window given).

    Early stopping by selection: the last `val_fraction` of the training split is held
    out as a validation split (contiguous, so no training window overlaps it); its NLL
    (`text_nll`) is measured every `eval_every` steps and after the last, and the
    parameters with the lowest one are returned. A small corpus (the Sonnets: 7.8k
    training characters) is otherwise memorised within a few hundred steps: after
    2,000 steps a 116k-parameter model reached 0.005 nats/char on the training text
    and 6.8 on the test split, worse than uniform (4.1). `val_fraction=0` trains on
    the whole training split and returns the last parameters.

    Args:
      key: PRNG key (parameter init and data).
      corpus: a name in `jgen.data.sequences.CORPORA` or a `TextCorpus`.
      steps, batch_size, seq_len: optimisation steps, windows per step, window length.
      d_model, num_heads, num_layers, mlp_ratio: the transformer's size.
      learning_rate, warmup_steps, weight_decay: adamw with warm-up and cosine decay.
      val_fraction, eval_every: the validation split and how often to measure it.
      input_noise: probability with which each *input* character (never a target)
        is replaced by a uniformly random one during training, a regulariser for
        small corpora ("data noising", Xie et al., ICLR 2017). 0 = off.
      log: optional progress callback.

    Returns:
      A `Fit` (with `corpus` set; `corpus.train` is the whole training split,
      validation part included).
    """
    _check_positive("train_text_transformer", steps=steps, batch_size=batch_size, d_model=d_model,
                    num_heads=num_heads, num_layers=num_layers)
    if isinstance(corpus, str):
        if corpus not in CORPORA:
            raise ValueError(f"train_text_transformer: unknown corpus {corpus!r}; available: {CORPORA}.")
        corpus = text_corpus(corpus)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"train_text_transformer: val_fraction must be in [0, 1); received {val_fraction}.")
    cut = round(len(corpus.train) * (1.0 - val_fraction))
    fit_ids, val_ids = corpus.train[:cut], corpus.train[cut:]
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 2 <= seq_len <= cut:
        raise ValueError(f"train_text_transformer: seq_len must be an int in [2, {cut}] (the training "
                         f"text's length); received {seq_len!r}.")
    if val_fraction > 0 and len(val_ids) < 2:
        raise ValueError(f"train_text_transformer: the validation split has {len(val_ids)} characters; "
                         "raise val_fraction or set it to 0.")
    model = CausalTransformer(vocab_size=corpus.vocab.size, max_len=seq_len, d_model=d_model,
                              num_heads=num_heads, num_layers=num_layers, mlp_ratio=mlp_ratio)
    k_init, k_data, k_noise = jax.random.split(key, 3)
    params = model.init(k_init, jnp.zeros((1, seq_len), jnp.int32))
    train_ids = jnp.asarray(fit_ids)

    def batch_fn(step):
        return random_windows(jax.random.fold_in(k_data, step), train_ids, batch_size, seq_len)


    if not 0.0 <= input_noise < 1.0:
        raise ValueError(f"train_text_transformer: input_noise must be in [0, 1); received {input_noise}.")

    def loss_fn(params, tokens, key):
        inputs = tokens
        if input_noise > 0:
            k_mask, k_tok = jax.random.split(key)
            noisy = jax.random.bernoulli(k_mask, input_noise, tokens.shape)
            inputs = jnp.where(noisy, jax.random.randint(k_tok, tokens.shape, 0, corpus.vocab.size), tokens)
        return _next_token_nll(model.apply(params, inputs), tokens)

    def val_fn(params):
        return text_nll(model, params, val_ids)["nats_per_token"]

    return _fit(model, params, loss_fn, batch_fn, steps=steps, learning_rate=learning_rate,
                warmup_steps=warmup_steps, weight_decay=weight_decay, log=log, corpus=corpus,
                val_fn=val_fn if val_fraction > 0 else None, eval_every=eval_every, noise_key=k_noise)


def strided_windows(num_tokens: int, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation windows that score every token 1 .. N-1 exactly once.

    Window k starts at `k * stride` (the last one at N - seq_len) and scores the
    targets after the previous window's last position, so each scored target sees at
    least `seq_len - stride` tokens of context (window 0 scores targets 1 .. L-1).

    Returns:
      (starts int [W], score bool [W, seq_len - 1]) where score[w, i] says whether
      target `starts[w] + 1 + i` is scored by window w. Windows are clipped to N;
      score is False past the end.
    """
    _check_positive("strided_windows", num_tokens=num_tokens, seq_len=seq_len, stride=stride)
    if num_tokens < 2 or stride > seq_len - 1:
        raise ValueError(f"strided_windows: need num_tokens >= 2 and 1 <= stride <= seq_len - 1; received "
                         f"num_tokens={num_tokens}, seq_len={seq_len}, stride={stride}.")
    last_start = max(num_tokens - seq_len, 0)
    starts = list(range(0, last_start, stride)) + [last_start]
    score = np.zeros((len(starts), seq_len - 1), bool)
    done = 0  # targets 1 .. done are scored
    for w, s in enumerate(starts):
        end = min(s + seq_len - 1, num_tokens - 1)  # the last target this window can score
        if end > done:
            score[w, done + 1 - (s + 1): end - s] = True
            done = end
    assert done == num_tokens - 1 and score.sum() == num_tokens - 1
    return np.asarray(starts), score


def text_nll(model: CausalTransformer, params, ids, *, stride: int | None = None,
             batch_size: int = 32) -> dict:
    """Exact NLL of every token of `ids` [N] after the first, in strided windows of
    `model.max_len` tokens (see `strided_windows`; default stride max_len // 2).

    Returns:
      {"nats_per_token", "bits_per_token", "num_tokens" (= N - 1), "num_windows",
      "seq_len", "stride"}.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"text_nll: ids must be integer [N]; received {ids.dtype} of shape {ids.shape}.")
    seq_len = model.max_len
    stride = max(seq_len // 2, 1) if stride is None else stride
    starts, score = strided_windows(len(ids), seq_len, stride)
    padded = np.concatenate([ids, np.zeros(seq_len, ids.dtype)])
    windows = np.stack([padded[s: s + seq_len] for s in starts]).astype(np.int32)  # [W, L]
    pad = -len(windows) % batch_size
    windows = np.concatenate([windows, np.zeros((pad, seq_len), np.int32)])
    score = np.concatenate([score, np.zeros((pad, seq_len - 1), bool)]).astype(np.float32)
    summed = _window_nll(model)
    total = 0.0
    for i in range(0, len(windows), batch_size):
        total += float(summed(params, windows[i: i + batch_size], score[i: i + batch_size]))
    n = len(ids) - 1
    return {"nats_per_token": total / n, "bits_per_token": total / n / math.log(2), "num_tokens": n,
            "num_windows": len(starts), "seq_len": seq_len, "stride": stride}


@functools.lru_cache(maxsize=8)
def _window_nll(model):
    """The jitted summed NLL of scored targets, one per model (compiled once per batch shape)."""

    @jax.jit
    def summed(params, tokens, weight):
        logits = model.apply(params, tokens)[:, :-1]
        logp = jax.nn.log_softmax(logits, axis=-1)
        ll = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
        return -jnp.sum(ll * weight)

    return summed


def unigram_cross_entropy(train_ids, targets, vocab_size: int) -> float:
    """-mean log q(x) over `targets` for the add-one-smoothed unigram model q of
    `train_ids` (nats/token): a context-free reference."""
    counts = np.bincount(np.asarray(train_ids).reshape(-1), minlength=vocab_size).astype(np.float64) + 1.0
    log_q = np.log(counts / counts.sum())
    return float(-np.mean(log_q[np.asarray(targets).reshape(-1)]))


def sample_text(key: jax.Array, model: CausalTransformer, params, vocab, prompt: str, num_new: int, *,
                temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                use_cache: bool = True) -> str:
    """`prompt` followed by `num_new` sampled characters (len(prompt) + num_new <=
    model.max_len), via `sample_transformer` (KV cache unless use_cache=False)."""
    ids = vocab.encode(prompt)
    if not 1 <= len(ids) or len(ids) + num_new > model.max_len:
        raise ValueError(f"sample_text: need 1 <= len(prompt) and len(prompt) + num_new <= max_len="
                         f"{model.max_len}; received len(prompt)={len(ids)}, num_new={num_new}. Shorten the "
                         "prompt or the continuation, or train with a longer --seq-len.")
    draw = _text_sampler(model, int(num_new), float(temperature), top_k, top_p, bool(use_cache))
    return vocab.decode(np.asarray(draw(key, params, jnp.asarray(ids)[None])[0]))


@functools.lru_cache(maxsize=32)
def _text_sampler(model, num_new, temperature, top_k, top_p, use_cache):
    """One jitted sampler per (model, settings), so repeated `sample_text` calls
    compile once (per prompt length)."""

    @jax.jit
    def draw(key, params, prompt):
        return sample_transformer(key, transformer_decode_fns(model, params), prompt, num_new,
                                  temperature=temperature, top_k=top_k, top_p=top_p, use_cache=use_cache)

    return draw


def run_text(*, corpus: str = "sonnets", steps: int = 2000, seed: int = 0, batch_size: int = 32,
             seq_len: int = 128, d_model: int = 64, num_heads: int = 4, num_layers: int = 2,
             learning_rate: float = 3e-3, warmup_steps: int = 100, weight_decay: float = 0.1,
             val_fraction: float = 0.1, eval_every: int = 100, input_noise: float = 0.15,
             prompt: str | None = None, num_new: int | None = None, temperature: float = 0.8,
             top_k: int | None = None, top_p: float | None = 0.95, num_samples: int = 3,
             log: Callable[[str], None] | None = None) -> dict:
    """Trains, evaluates on the test split and samples; returns the JSON report."""
    root = jax.random.PRNGKey(seed)
    k_fit, k_sample = jax.random.split(root)
    fit = train_text_transformer(k_fit, corpus, steps=steps, batch_size=batch_size, seq_len=seq_len,
                                 d_model=d_model, num_heads=num_heads, num_layers=num_layers,
                                 learning_rate=learning_rate, warmup_steps=warmup_steps,
                                 weight_decay=weight_decay, val_fraction=val_fraction, eval_every=eval_every,
                                 input_noise=input_noise, log=log)
    c = fit.corpus
    t0 = time.perf_counter()
    test = text_nll(fit.model, fit.params, c.test)
    train = text_nll(fit.model, fit.params, c.train[: len(c.test)])
    eval_s = time.perf_counter() - t0
    if prompt is None:
        prompt = "Shall I compare thee" if corpus == "sonnets" else "The "
    num_new = seq_len - len(prompt) if num_new is None else num_new
    t0 = time.perf_counter()
    samples = [sample_text(jax.random.fold_in(k_sample, i), fit.model, fit.params, c.vocab, prompt, num_new,
                           temperature=temperature, top_k=top_k, top_p=top_p) for i in range(num_samples)]
    sample_s = time.perf_counter() - t0
    return {
        "model": "transformer", "corpus": corpus, "vocab_size": c.vocab.size,
        "num_train_tokens": len(c.train), "num_test_tokens": len(c.test),
        "test_nats_per_token": test["nats_per_token"], "test_bits_per_token": test["bits_per_token"],
        "train_subset_nats_per_token": train["nats_per_token"],  # the first len(test) characters
        "best_step": fit.best_step,
        "validation": {"steps": fit.val_steps.tolist(), "nats_per_token": fit.val_nll.tolist()},
        "uniform_nats_per_token": math.log(c.vocab.size),
        "unigram_nats_per_token": unigram_cross_entropy(c.train, c.test[1:], c.vocab.size),
        "eval": {k: test[k] for k in ("num_tokens", "num_windows", "seq_len", "stride")},
        "steps": fit.steps, "wall_time_s": fit.wall_time_s, "eval_time_s": eval_s,
        "sample_time_s": sample_s, "num_params": num_params(fit.params), "num_traces": fit.num_traces,
        "final_train_loss": float(fit.losses[-1]),
        "input_noise": input_noise,
        "sampling": {"prompt": prompt, "num_new": num_new, "temperature": temperature, "top_k": top_k,
                     "top_p": top_p, "kv_cache": True},
        "samples": samples,
    }


# --------------------------------------------------------------------------------------
# Waveforms: WaveNet on mu-law codes.
# --------------------------------------------------------------------------------------


def train_wavenet(
    key: jax.Array,
    *,
    steps: int = 1000,
    batch_size: int = 16,
    clip_len: int = 1000,
    sample_rate: int = 8000,
    layers_per_stack: int = 8,
    num_stacks: int = 1,
    kernel_size: int = 2,
    residual_channels: int = 32,
    dilation_channels: int = 32,
    skip_channels: int = 64,
    learning_rate: float = 2e-3,
    warmup_steps: int = 50,
    weight_decay: float = 0.0,
    log: Callable[[str], None] | None = None,
) -> Fit:
    """Fits a `WaveNet` (256 mu-law classes) to generated sinusoid mixtures.

    Step t draws `batch_size` fresh clips of `clip_len` samples (key
    `fold_in(k_data, t)`, `jgen.data.sequences.waveform_tokens`) and takes an adamw
    step on their mean next-sample NLL (nats/sample, the first sample given).

    Returns:
      A `Fit`.
    """
    _check_positive("train_wavenet", steps=steps, batch_size=batch_size, layers_per_stack=layers_per_stack,
                    num_stacks=num_stacks, residual_channels=residual_channels)
    if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 2:
        raise ValueError(f"train_wavenet: clip_len must be an int >= 2; received {clip_len!r}.")
    model = WaveNet(num_bins=256, layers_per_stack=layers_per_stack, num_stacks=num_stacks,
                    kernel_size=kernel_size, residual_channels=residual_channels,
                    dilation_channels=dilation_channels, skip_channels=skip_channels)
    k_init, k_data = jax.random.split(key)
    params = model.init(k_init, jnp.zeros((1, clip_len), jnp.int32))

    def batch_fn(step):
        return waveform_tokens(jax.random.fold_in(k_data, step), batch_size, clip_len, sample_rate=sample_rate)

    def loss_fn(params, tokens, key):
        del key
        return _next_token_nll(model.apply(params, tokens), tokens)

    return _fit(model, params, loss_fn, batch_fn, steps=steps, learning_rate=learning_rate,
                warmup_steps=warmup_steps, weight_decay=weight_decay, log=log)


def wavenet_nll(model: WaveNet, params, key: jax.Array, *, num_clips: int = 64, clip_len: int = 1000,
                batch_size: int = 16, sample_rate: int = 8000) -> dict:
    """Exact NLL of fresh clips drawn from `key` (every sample after each clip's first).

    Returns:
      {"nats_per_token", "bits_per_token", "num_tokens", "num_clips", "clip_len"}.
    """
    _check_positive("wavenet_nll", num_clips=num_clips, clip_len=clip_len, batch_size=batch_size)

    @jax.jit
    def summed(params, key):
        tokens = waveform_tokens(key, batch_size, clip_len, sample_rate=sample_rate)
        return -jnp.sum(categorical_autoregressive_log_prob(model.apply(params, tokens)[:, :-1], tokens[:, 1:]))

    num_batches = -(-num_clips // batch_size)
    total = sum(float(summed(params, jax.random.fold_in(key, i))) for i in range(num_batches))
    n = num_batches * batch_size * (clip_len - 1)
    return {"nats_per_token": total / n, "bits_per_token": total / n / math.log(2), "num_tokens": n,
            "num_clips": num_batches * batch_size, "clip_len": clip_len}


def mu_law_unigram_cross_entropy(key: jax.Array, heldout_key: jax.Array, *, num_clips: int = 64,
                                 clip_len: int = 1000, sample_rate: int = 8000) -> float:
    """Nats/sample of the held-out clips (samples 1..T-1) under the add-one-smoothed
    histogram of the 256 codes of `num_clips` other fresh clips: a context-free reference."""
    fit = np.asarray(waveform_tokens(key, num_clips, clip_len, sample_rate=sample_rate))
    test = np.asarray(waveform_tokens(heldout_key, num_clips, clip_len, sample_rate=sample_rate))
    return unigram_cross_entropy(fit, test[:, 1:], 256)


def sample_wavenet(key: jax.Array, model: WaveNet, params, prompt, num_new: int, *,
                   temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Appends `num_new` sampled codes to `prompt` int [B, P] (P >= 1) -> int32 [B, P + num_new].

    Exact receptive-field windowing: with W = min(R, P + num_new), the step for
    position t runs the network on the W codes starting at max(0, t - W) and reads the
    output at t - 1. For t >= W the window ends at t - 1 and covers its whole receptive
    field t-R .. t-1; for t < W it is the start of the canvas, where the network's own
    zero padding is the full pass's, and the not-yet-drawn codes after t - 1 cannot
    reach output t - 1 (causality). Each step costs one pass over W positions instead
    of the whole canvas; the draw at t uses `fold_in(key, t)` and `sample_categorical`,
    exactly as `jgen.samplers.kv_cache.sample_transformer`, so the two draw the same
    codes from the same key.
    """
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ValueError(f"sample_wavenet: prompt must be integer codes [B, P] with P >= 1; received "
                         f"{prompt.dtype} of shape {prompt.shape}. Start from silence with "
                         f"jnp.full((B, 1), {SILENCE}).")
    if isinstance(num_new, bool) or not isinstance(num_new, int) or num_new < 0:
        raise ValueError(f"sample_wavenet: num_new must be a Python int >= 0; received {num_new!r}.")
    batch, num_prompt = prompt.shape
    total = num_prompt + num_new
    width = min(model.receptive_field, total)
    canvas = jnp.concatenate([prompt.astype(jnp.int32), jnp.zeros((batch, num_new), jnp.int32)], axis=1)

    def body(t, canvas):
        start = jnp.maximum(t - width, 0)
        window = jax.lax.dynamic_slice_in_dim(canvas, start, width, axis=1)
        logits = jax.lax.dynamic_index_in_dim(model.apply(params, window), t - 1 - start, axis=1, keepdims=False)
        token = sample_categorical(jax.random.fold_in(key, t), logits, temperature=temperature,
                                   top_k=top_k, top_p=top_p)
        return jax.lax.dynamic_update_index_in_dim(canvas, token, t, axis=1)

    return jax.lax.fori_loop(num_prompt, total, body, canvas)


def write_wav(path: str, waveform, sample_rate: int = 8000) -> None:
    """Writes floats in [-1, 1] [T] (mono) as a 16-bit PCM .wav with the stdlib `wave`."""
    x = np.asarray(waveform, np.float64).reshape(-1)
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.tobytes())


def run_wavenet(*, steps: int = 1000, seed: int = 0, batch_size: int = 16, clip_len: int = 1000,
                sample_rate: int = 8000, layers_per_stack: int = 8, num_stacks: int = 1,
                residual_channels: int = 32, dilation_channels: int = 32, skip_channels: int = 64,
                learning_rate: float = 2e-3, warmup_steps: int = 50, num_test_clips: int = 64,
                heldout_seed: int = HELDOUT_WAVEFORM_SEED, sample_len: int = 2000, num_samples: int = 1,
                temperature: float = 1.0, top_p: float | None = None,
                npy_path: str | None = None, wav_path: str | None = None,
                log: Callable[[str], None] | None = None) -> dict:
    """Trains, evaluates on held-out clips, samples (and saves) a clip; returns the report."""
    root = jax.random.PRNGKey(seed)
    k_fit, k_unigram, k_sample = jax.random.split(root, 3)
    heldout = jax.random.PRNGKey(heldout_seed)
    fit = train_wavenet(k_fit, steps=steps, batch_size=batch_size, clip_len=clip_len, sample_rate=sample_rate,
                        layers_per_stack=layers_per_stack, num_stacks=num_stacks,
                        residual_channels=residual_channels, dilation_channels=dilation_channels,
                        skip_channels=skip_channels, learning_rate=learning_rate, warmup_steps=warmup_steps,
                        log=log)
    t0 = time.perf_counter()
    test = wavenet_nll(fit.model, fit.params, heldout, num_clips=num_test_clips, clip_len=clip_len,
                       batch_size=batch_size, sample_rate=sample_rate)
    eval_s = time.perf_counter() - t0
    unigram = mu_law_unigram_cross_entropy(k_unigram, heldout, num_clips=num_test_clips, clip_len=clip_len,
                                           sample_rate=sample_rate)
    t0 = time.perf_counter()
    prompt = jnp.full((num_samples, 1), SILENCE, jnp.int32)
    draw = jax.jit(lambda key, params: sample_wavenet(key, fit.model, params, prompt, sample_len - 1,
                                                      temperature=temperature, top_p=top_p))
    codes = np.asarray(draw(k_sample, fit.params))
    sample_s = time.perf_counter() - t0
    clip = np.asarray(mu_law_decode(codes))  # [num_samples, sample_len]
    if npy_path:
        np.save(npy_path, clip)
    if wav_path:  # the clips one after another, 0.1 s of silence between them
        gap = np.zeros((num_samples, sample_rate // 10), np.float32)
        write_wav(wav_path, np.concatenate([clip, gap], axis=1), sample_rate)
    return {
        "model": "wavenet", "receptive_field": fit.model.receptive_field, "clip_len": clip_len,
        "sample_rate": sample_rate,
        "test_nats_per_token": test["nats_per_token"], "test_bits_per_token": test["bits_per_token"],
        "uniform_nats_per_token": math.log(256), "unigram_nats_per_token": unigram,
        "eval": {"num_tokens": test["num_tokens"], "num_clips": test["num_clips"], "heldout_seed": heldout_seed},
        "steps": fit.steps, "wall_time_s": fit.wall_time_s, "eval_time_s": eval_s, "sample_time_s": sample_s,
        "num_params": num_params(fit.params), "num_traces": fit.num_traces,
        "final_train_loss": float(fit.losses[-1]),
        "sampling": {"length": sample_len, "num_samples": num_samples, "temperature": temperature,
                     "top_p": top_p, "prompt": "silence (mu-law code 128)",
                     "sampler": "receptive-field window"},
        "sample_npy": npy_path, "sample_wav": wav_path,
        "sample_rms": float(np.sqrt(np.mean(clip**2))),
        "sample_codes_head": codes[0, :32].tolist(),
    }


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------


def _table(report: dict) -> str:
    name = report["model"] + (f" / {report['corpus']}" if "corpus" in report else "")
    row = (f"| {name} | {report['test_nats_per_token']:.4f} | {report['test_bits_per_token']:.4f} | "
           f"{report['uniform_nats_per_token']:.4f} | {report['unigram_nats_per_token']:.4f} | "
           f"{report['steps']} | {report['wall_time_s']:.1f} |")
    head = "| model | test NLL (nats/token) | bits/token | uniform | unigram | steps | train time (s) |"
    lines = [head, "|" + "---|" * 7, row]
    if report.get("best_step", -1) >= 0:
        lines.append(f"\n(parameters of step {report['best_step']}, the lowest validation NLL)")
    return "\n".join(lines)


def _write_json(path: str, report: dict) -> None:
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--steps", type=int, default=None)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--batch-size", type=int, default=None)
    common.add_argument("--learning-rate", type=float, default=None)
    common.add_argument("--warmup-steps", type=int, default=None)
    common.add_argument("--temperature", type=float, default=None)
    common.add_argument("--top-p", type=float, default=None, help="nucleus filter; 1 = off")

    text = sub.add_parser("text", parents=[common], help="character-level causal transformer")
    text.add_argument("--corpus", default="sonnets", choices=CORPORA)
    text.add_argument("--seq-len", type=int, default=128)
    text.add_argument("--d-model", type=int, default=64)
    text.add_argument("--num-heads", type=int, default=4)
    text.add_argument("--num-layers", type=int, default=2)
    text.add_argument("--weight-decay", type=float, default=0.1)
    text.add_argument("--val-fraction", type=float, default=0.1,
                      help="held out from the training split to select the best step; 0 = off")
    text.add_argument("--eval-every", type=int, default=100)
    text.add_argument("--input-noise", type=float, default=0.15,
                      help="probability of replacing each input character by a random one in training")
    text.add_argument("--top-k", type=int, default=None)
    text.add_argument("--prompt", default=None)
    text.add_argument("--num-new", type=int, default=None, help="default: fill the window (seq_len)")
    text.add_argument("--num-samples", type=int, default=3)
    text.add_argument("--out", default="runs/text.json")

    wav = sub.add_parser("wavenet", parents=[common], help="WaveNet on mu-law waveforms")
    wav.add_argument("--clip-len", type=int, default=1000)
    wav.add_argument("--sample-rate", type=int, default=8000)
    wav.add_argument("--layers-per-stack", type=int, default=8)
    wav.add_argument("--num-stacks", type=int, default=1)
    wav.add_argument("--channels", type=int, default=32, help="residual and dilation channels")
    wav.add_argument("--skip-channels", type=int, default=64)
    wav.add_argument("--num-test-clips", type=int, default=64)
    wav.add_argument("--heldout-seed", type=int, default=HELDOUT_WAVEFORM_SEED)
    wav.add_argument("--sample-len", type=int, default=2000, help="samples in the generated clip")
    wav.add_argument("--num-samples", type=int, default=1)
    wav.add_argument("--npy", default=None, help="default: the --out path with .npy")
    wav.add_argument("--wav", default=None, help="also write a 16-bit PCM .wav here")
    wav.add_argument("--out", default="runs/wavenet.json")
    args = parser.parse_args(argv)

    def pick(value, default):
        return default if value is None else value

    def log(message):
        print(message, file=sys.stderr, flush=True)

    top_p = pick(args.top_p, 0.95 if args.command == "text" else 1.0)
    top_p = None if top_p >= 1.0 else top_p
    try:
        if args.command == "text":
            report = run_text(corpus=args.corpus, steps=pick(args.steps, 2000), seed=args.seed,
                              batch_size=pick(args.batch_size, 32), seq_len=args.seq_len, d_model=args.d_model,
                              num_heads=args.num_heads, num_layers=args.num_layers,
                              learning_rate=pick(args.learning_rate, 3e-3),
                              warmup_steps=pick(args.warmup_steps, 100), weight_decay=args.weight_decay,
                              val_fraction=args.val_fraction, eval_every=args.eval_every,
                              input_noise=args.input_noise,
                              prompt=args.prompt, num_new=args.num_new,
                              temperature=pick(args.temperature, 0.8), top_k=args.top_k, top_p=top_p,
                              num_samples=args.num_samples, log=log)
        else:
            npy = args.npy or os.path.splitext(args.out)[0] + ".npy"
            for path in (npy, args.wav, args.out):
                if path and os.path.dirname(path):
                    os.makedirs(os.path.dirname(path), exist_ok=True)
            report = run_wavenet(steps=pick(args.steps, 1000), seed=args.seed, batch_size=pick(args.batch_size, 16),
                                 clip_len=args.clip_len, sample_rate=args.sample_rate,
                                 layers_per_stack=args.layers_per_stack, num_stacks=args.num_stacks,
                                 residual_channels=args.channels, dilation_channels=args.channels,
                                 skip_channels=args.skip_channels, learning_rate=pick(args.learning_rate, 2e-3),
                                 warmup_steps=pick(args.warmup_steps, 50), num_test_clips=args.num_test_clips,
                                 heldout_seed=args.heldout_seed, sample_len=args.sample_len,
                                 num_samples=args.num_samples, temperature=pick(args.temperature, 1.0),
                                 top_p=top_p, npy_path=npy, wav_path=args.wav, log=log)
    except ValueError as e:
        parser.error(str(e))
    report["config"] = vars(args) | {"devices": [str(d) for d in jax.devices()]}
    _write_json(args.out, report)
    print(_table(report))
    if args.command == "text":
        for s in report["samples"]:
            print("\n---\n" + s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
