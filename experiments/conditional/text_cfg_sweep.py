"""Classifier-free guidance sweep of a text-conditional model on captioned digits.

For each guidance scale w, draws one sample per caption of the test split's first
`--num` examples (captions of unseen handwriting) and reports:

- caption consistency (`jgen.metrics.captions`): the fraction of samples showing the
  named digit, at the named position, at the named size, and all three;
- pixel FID against the test split's images (Frechet distance of raw pixels, the
  "pixels" feature extractor: a sample-quality score without a learned network);
- diversity: the mean pixel distance between samples drawn for the same caption
  (`--repeats` samples of each of 8 captions).

The same numbers for the test images themselves (the ceiling) are reported as
"data". Usage:

    python experiments/conditional/text_cfg_sweep.py --workdir runs/captions_diffusion \
        --scales 0,1,2,4 --num 400 --out runs/captions_cfg.json --grid docs/images/captions_cfg.png
"""

import argparse
import json
import time

import jax
import numpy as np

from jgen.config import load_saved_config
from jgen.data import captioned_digits as cd
from jgen.metrics.captions import caption_scores
from jgen.metrics.frechet import fid_from_features
from jgen.train.loop import generate, restore_for_inference


def pixel_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID of raw pixels: the Frechet distance of two image sets' flattened pixels."""
    return fid_from_features(a.reshape(len(a), -1), b.reshape(len(b), -1))


def diversity(samples: np.ndarray, repeats: int) -> float:
    x = samples.reshape(-1, repeats, samples[0].size).astype(np.float64)
    d = np.sqrt(((x[:, :, None] - x[:, None, :]) ** 2).sum(-1))
    return float(d.sum() / (len(x) * repeats * (repeats - 1)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--scales", default="0,1,2,4")
    p.add_argument("--num", type=int, default=400)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--grid", default=None, help="PNG: rows = scales, columns = 8 test captions")
    args = p.parse_args()

    test = cd.captioned_arrays("test")
    n = min(args.num, len(test["image"]))
    captions = test["tokens"][:n]
    real = test["image"][:n] / 255.0
    report = {"workdir": args.workdir, "num": n, "repeats": args.repeats, "seed": args.seed,
              "data": {**caption_scores(real, test["label"][:n], test["position"][:n], test["size"][:n]),
                       "pixel_fid_vs_test": pixel_fid(real[: n // 2], real[n // 2:]),
                       "note": "test images vs their own captions; FID of the first half vs the second half"},
              "scales": {}}
    div_idx = np.repeat(np.arange(8) * 37 % n, args.repeats)
    grid_rows = []
    for w in (float(s) for s in args.scales.split(",")):
        config = load_saved_config(args.workdir)
        kind = config.model.condition.kind if "condition" in config.model else "label"
        if kind != "tokens":
            raise SystemExit(f"error: {args.workdir} is not a text-conditional model (condition kind {kind!r}).")
        config.model.guidance_scale = w
        run, state, step = restore_for_inference(args.workdir, config)
        t0 = time.perf_counter()
        samples = generate(run, state, n, seed=args.seed, condition=captions)
        seconds = time.perf_counter() - t0
        div = generate(run, state, len(div_idx), seed=args.seed + 1, condition=test["tokens"][div_idx])
        scores = caption_scores(samples, test["label"][:n], test["position"][:n], test["size"][:n])
        report["scales"][str(w)] = {**scores, "pixel_fid_vs_test": pixel_fid(samples, test["image"] / 255.0),
                                    "diversity": diversity(div, args.repeats), "step": int(step),
                                    "sample_seconds": seconds}
        print(json.dumps({"scale": w, **report["scales"][str(w)]}), flush=True)
        grid_rows.append(samples[:8])
        jax.clear_caches()
    report["captions_in_grid"] = cd.detokenize(captions[:8])
    if args.grid:
        from jgen.train.artifacts import save_image_grid

        save_image_grid(np.concatenate([test["image"][:8] / 255.0, *grid_rows]), args.grid, ncols=8)
        report["grid"] = {"path": args.grid, "rows": ["test images"] + [f"w={s}" for s in args.scales.split(",")]}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "scales"}))


if __name__ == "__main__":
    main()
