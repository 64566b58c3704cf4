r"""Sampling throughput of the causal transformer with and without the key-value cache.

`jgen.samplers.kv_cache.sample_transformer` draws `num_new` tokens after a prompt
[B, P] in one compiled loop, either

- **cached**: one prefill pass over the prompt, then each step feeds only the token
  just drawn through `CausalTransformer.extend` (the keys and values of earlier
  positions are read from the cache): per step O(layers x d^2) for the projections and
  O(T d) for attention; or
- **uncached** (the reference): each step reruns the full causal pass over the whole
  [B, P + num_new] canvas and reads one position: per step O(T x layers x d^2) + O(T^2 d).

Both draw the same tokens from the same key (up to float rounding, which flips a draw
only at a near-exact tie); this script checks that on every timed run.

Method, per setting and path: `jax.jit(...).lower(...).compile()` once (its time is
reported separately as "compile"), one untimed warm-up call (`--warmup`), then
`repeats` timed calls, each with its own key and `block_until_ready` on the result;
the table shows the median and lists every run.
Throughput is samples/s = B / median and tokens/s = B x num_new / median (new tokens
only). The parameters are random (`model.init`): the work done, and so the throughput,
does not depend on their values.

Settings (`SETTINGS`; any field can be overridden from the command line):

- ``digits``: the binarized-MNIST transformer of
  `experiments/autoregressive/configs/mnist_transformer.py` (d_model 128, 4 layers,
  4 heads, vocabulary 3 = two pixel values + BOS) on the 8x8 digits: 64 tokens after
  the BOS, batch 16.
- ``text``: a character-level model like `experiments/autoregressive/sequences.py`'s
  default (d_model 64, 2 layers, 4 heads, vocabulary 59), a 16-character prompt and
  240 new characters, batch 16.
- ``mnist``: the same MNIST transformer at its own length, 784 tokens after the BOS
  (max_len 785), batch 16. The uncached reference reruns a [16, 785] pass 784 times
  (881 s per run measured on a 2-core CPU), so it is not in the CPU default; run it
  with ``--settings mnist --uncached-repeats 1 --warmup 0`` or on an accelerator.

Usage::

    nice -n 5 python experiments/autoregressive/bench_sampling.py --out runs/bench_sampling.json
    python experiments/autoregressive/bench_sampling.py --settings mnist --repeats 3 \
        --uncached-repeats 1 --warmup 0 --out runs/bench_mnist.json

References:
  Pope et al., "Efficiently Scaling Transformer Inference", MLSys 2023 (KV caching).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jgen.models.autoregressive.transformer import CausalTransformer
from jgen.samplers.kv_cache import sample_transformer, transformer_decode_fns

SETTINGS: dict[str, dict] = {
    "digits": {"d_model": 128, "num_layers": 4, "num_heads": 4, "vocab_size": 3, "batch_size": 16,
               "prompt_len": 1, "num_new": 64},
    "text": {"d_model": 64, "num_layers": 2, "num_heads": 4, "vocab_size": 59, "batch_size": 16,
             "prompt_len": 16, "num_new": 240},
    "mnist": {"d_model": 128, "num_layers": 4, "num_heads": 4, "vocab_size": 3, "batch_size": 16,
              "prompt_len": 1, "num_new": 784},
}
DEFAULT_SETTINGS = ("digits", "text")
FIELDS = ("d_model", "num_layers", "num_heads", "vocab_size", "batch_size", "prompt_len", "num_new")
PATHS = ("cached", "uncached")


def _check_setting(name: str, s: dict) -> None:
    for f in FIELDS:
        v = s.get(f)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if f == "num_new" else 1):
            raise ValueError(f"setting {name!r}: {f} must be an int >= {0 if f == 'num_new' else 1}; received {v!r}.")
    if s["d_model"] % s["num_heads"]:
        raise ValueError(f"setting {name!r}: d_model={s['d_model']} must be a multiple of num_heads={s['num_heads']}.")


def benchmark_setting(name: str, setting: dict, *, repeats: int = 3, uncached_repeats: int | None = None,
                      warmup: int = 1, seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Times cached and uncached sampling for one setting (see the module docstring).

    Args:
      name: a label for the report.
      setting: the `FIELDS` (model size, batch, prompt length, new tokens).
      repeats: timed runs of the cached path (and of the uncached one unless
        `uncached_repeats` is given).
      warmup: untimed runs after compiling, before the timed ones (first-call
        allocation costs); their times are reported as "warmup_s".
      seed: parameters, prompt and per-run keys derive from it.

    Returns:
      A dict with the setting, per path {"compile_s", "times_s", "median_s",
      "samples_per_s", "tokens_per_s"}, "speedup" (uncached median / cached median),
      "tokens_identical" (every run's cached tokens equal the uncached run with the same
      key) and "token_match_fraction".
    """
    _check_setting(name, setting)
    repeats = int(repeats)
    uncached_repeats = repeats if uncached_repeats is None else int(uncached_repeats)
    if repeats < 1 or uncached_repeats < 1:
        raise ValueError(f"repeats must be >= 1; received repeats={repeats}, uncached_repeats={uncached_repeats}.")
    s = setting
    max_len = s["prompt_len"] + s["num_new"]
    model = CausalTransformer(vocab_size=s["vocab_size"], max_len=max_len, d_model=s["d_model"],
                              num_heads=s["num_heads"], num_layers=s["num_layers"])
    k_params, k_prompt, k_runs = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.init(k_params, jnp.zeros((1, max_len), jnp.int32))  # random parameters
    prompt = jax.random.randint(k_prompt, (s["batch_size"], s["prompt_len"]), 0, s["vocab_size"])
    num_new = s["num_new"]

    report = {"setting": name, **s, "max_len": max_len,
              "num_params": sum(int(np.size(a)) for a in jax.tree.leaves(params))}
    tokens: dict[str, list[np.ndarray]] = {}
    for path, runs in zip(PATHS, (repeats, uncached_repeats)):
        def draw(params, prompt, key, use_cache=path == "cached"):
            return sample_transformer(key, transformer_decode_fns(model, params), prompt, num_new,
                                      use_cache=use_cache)

        t0 = time.perf_counter()
        compiled = jax.jit(draw).lower(params, prompt, k_runs).compile()
        compile_s = time.perf_counter() - t0
        warmup_times = []
        for _ in range(int(warmup)):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(params, prompt, k_runs))
            warmup_times.append(time.perf_counter() - t0)
        times, outs = [], []
        for r in range(runs):
            key = jax.random.fold_in(k_runs, r)
            jax.block_until_ready((params, prompt, key))
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(params, prompt, key))
            times.append(time.perf_counter() - t0)
            outs.append(np.asarray(out))
            if log is not None:
                log(f"{name:>8} {path:>8} run {r + 1}/{runs}: {times[-1]:.3f} s")
        median = statistics.median(times)
        tokens[path] = outs
        report[path] = {"compile_s": compile_s, "warmup_s": warmup_times, "times_s": times, "median_s": median,
                        "samples_per_s": s["batch_size"] / median,
                        "tokens_per_s": s["batch_size"] * num_new / median}
    pairs = list(zip(tokens["cached"], tokens["uncached"]))  # same key, run by run
    report["speedup"] = report["uncached"]["median_s"] / report["cached"]["median_s"]
    report["tokens_identical"] = all(np.array_equal(a, b) for a, b in pairs)
    report["token_match_fraction"] = float(np.mean([np.mean(a == b) for a, b in pairs]))
    report["prompt_preserved"] = all(np.array_equal(a[:, :s["prompt_len"]], np.asarray(prompt))
                                     for a in tokens["cached"] + tokens["uncached"])
    return report


def markdown_table(rows: Sequence[dict]) -> str:
    """One line per (setting, path); the speedup on the cached line."""
    head = ("| setting | d_model / layers / heads / V | batch | prompt + new | path | compile (s) | "
            "median (s) | runs (s) | samples/s | tokens/s | speedup | same tokens |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        for path in PATHS:
            p = r[path]
            runs = ", ".join(f"{t:.4g}" for t in p["times_s"])
            speedup = f"{r['speedup']:.1f}x" if path == "cached" else "1x"
            lines.append(
                f"| {r['setting']} | {r['d_model']} / {r['num_layers']} / {r['num_heads']} / {r['vocab_size']} | "
                f"{r['batch_size']} | {r['prompt_len']} + {r['num_new']} | {path} | {p['compile_s']:.2f} | "
                f"{p['median_s']:.4g} | {runs} | {p['samples_per_s']:.2f} | {p['tokens_per_s']:.0f} | "
                f"{speedup} | {'yes' if r['tokens_identical'] else 'no'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                        help=f"comma-separated, from {sorted(SETTINGS)}")
    for f in FIELDS:
        parser.add_argument("--" + f.replace("_", "-"), type=int, default=None,
                            help=f"override {f} in every setting")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--uncached-repeats", type=int, default=None, help="default: --repeats")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs after compiling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_sampling.json")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or not names:
        parser.error(f"unknown settings {unknown}; known: {', '.join(sorted(SETTINGS))}")
    overrides = {f: getattr(args, f) for f in FIELDS if getattr(args, f) is not None}
    rows = []
    try:
        for name in names:
            rows.append(benchmark_setting(name, SETTINGS[name] | overrides, repeats=args.repeats,
                                          uncached_repeats=args.uncached_repeats, warmup=args.warmup,
                                          seed=args.seed,
                                          log=lambda m: print(m, file=sys.stderr, flush=True)))
    except ValueError as e:
        parser.error(str(e))
    report = {
        "note": "random (untrained) parameters; throughput does not depend on their values",
        "config": vars(args) | {"settings": names, "overrides": overrides},
        "device": str(jax.devices()[0]), "platform": platform.platform(), "jax": jax.__version__,
        "cpu_count": os.cpu_count(), "results": rows,
    }
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
