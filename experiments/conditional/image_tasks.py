"""Image-conditional models against classical baselines and posterior sampling.

For a model trained with `model.condition.kind="image"` (low-res -> high-res,
gray -> colour, masked -> complete; e.g. `experiments/conditional/configs/photo_diffusion.py`),
measures `--num` test images (a fixed random subset) with the model's own operator and reconstructs
them four ways:

- amortised: the conditional model's sample given the measurement (and, with
  `--samples S > 1`, the mean of S samples, an estimate of the posterior mean);
- the classical baseline of the task (bicubic upsampling; gray copied to RGB, the
  pseudo-inverse; the pseudo-inverse (zero fill) and TV inpainting);
- posterior sampling (`--solver replacement` or `dps`, `jgen.inverse`) with an
  unconditional diffusion prior: `--prior-workdir`, default the same network with the
  null condition (condition dropout trains it as an unconditional model too).

Reports PSNR and SSIM (mean over images, `jgen.inverse.quality`), measurement
consistency (PSNR of A x against y), and pixel FID against the whole test split
(Frechet distance of raw pixels). Inpainting uses one centre box (half the side).
Writes `results.json`, `table.md` and `grid.png` (rows: measurement, baselines,
posterior sample, amortised sample, truth) to `--out`.

    python experiments/conditional/image_tasks.py --workdir runs/photo_superres --num 128 --out runs/photo_superres_eval
"""

import argparse
import json
import os
import time

import jax.numpy as jnp
import numpy as np

from jgen.conditioning import box_mask, measure
from jgen.data import gather, get_source
from jgen.inverse.quality import psnr, ssim, ssim_sigma_for
from jgen.metrics.frechet import fid_from_features
from jgen.train.loop import generate, restore_for_inference


def pixel_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID of raw pixels: the Frechet distance of two image sets' flattened pixels."""
    return fid_from_features(a.reshape(len(a), -1), b.reshape(len(b), -1))


def scores(x: np.ndarray, truth: np.ndarray, measured: np.ndarray, forward, reference: np.ndarray) -> dict:
    x = np.clip(np.asarray(x, np.float32), 0, 1)
    sigma = ssim_sigma_for(*truth.shape[1:3])
    return {"psnr": float(np.mean(psnr(x, truth))), "ssim": float(np.mean(ssim(x, truth, sigma=sigma))),
            "consistency_psnr": float(np.mean(psnr(np.asarray(forward(jnp.asarray(x))), measured))),
            "pixel_fid": pixel_fid(x, reference)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="an image-conditional model")
    p.add_argument("--prior-workdir", default=None, help="an unconditional diffusion prior (default: --workdir, null condition)")
    p.add_argument("--num", type=int, default=128)
    p.add_argument("--samples", type=int, default=1, help="amortised samples averaged per image")
    p.add_argument("--solver", default="replacement", help="posterior sampler, or 'none'")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    run, state, step = restore_for_inference(args.workdir)
    spec = run.spec.condition
    if spec is None or spec.kind != "image":
        raise SystemExit(f"error: {args.workdir} is not an image-conditional model (model.condition.kind='image').")
    config = run.config
    test = get_source(config.data.name, config.data.eval_split)
    all_truth = gather(test, np.arange(len(test)))["image"].astype(np.float32) / 255.0
    pick = np.sort(np.random.default_rng(args.seed).choice(len(all_truth), min(args.num, len(all_truth)), replace=False))
    truth = all_truth[pick]  # a fixed random subset: neighbouring patches are alike (sky next to sky)
    n, (h, w, c) = len(truth), spec.image_shape

    from jgen.inverse.solve import make_task

    if spec.operator.startswith("superres"):
        task = make_task("superres", (h, w, c), factor=spec.factor)
        mask = None
    elif spec.operator == "colorize":
        task = make_task("colorize", (h, w, c))
        mask = None
    else:
        box = (h // 4, w // 4, h - h // 4, w - w // 4)
        task = make_task("inpaint", (h, w, c), mask_box=box)
        mask = box_mask(h, w, box)[None]
    y_cond = np.asarray(measure(spec, truth, mask=mask))  # the model's raw condition
    y_task = np.asarray(task.A.forward(jnp.asarray(truth)))  # the posterior solvers' measurement
    forward = task.A.forward
    results, pictures = {}, {"measurement": np.asarray(task.show(jnp.asarray(y_task)))}
    for name, fn in task.baselines.items():
        x = np.asarray(fn(jnp.asarray(y_task)))
        results[f"baseline: {name}"] = scores(x, truth, y_task, forward, all_truth)
        pictures[name] = x
    if spec.operator == "inpaint":
        from jgen.inverse.tv import tv_reconstruct

        x = np.asarray(tv_reconstruct(task.A, jnp.asarray(y_task), lam=0.02, num_iters=500).x)
        results["baseline: tv"] = scores(x, truth, y_task, forward, all_truth)
        pictures["tv"] = x

    t0 = time.perf_counter()
    draws = [generate(run, state, n, seed=args.seed + i, condition=y_cond) for i in range(max(1, args.samples))]
    results["amortised sample"] = {**scores(draws[0], truth, y_task, forward, all_truth),
                                   "seconds": time.perf_counter() - t0}
    pictures["amortised"] = draws[0]
    if args.samples > 1:
        results[f"amortised mean of {args.samples}"] = scores(np.mean(draws, 0), truth, y_task, forward, all_truth)

    if args.solver != "none":
        from jgen.inverse.solve import load_prior, reconstruct

        prior = load_prior(args.prior_workdir or args.workdir)
        t0 = time.perf_counter()
        x, nfe = reconstruct(prior, task, jnp.asarray(y_task), solver=args.solver, steps=args.steps, seed=args.seed)
        results[f"posterior: {args.solver}"] = {**scores(x, truth, y_task, forward, all_truth), "nfe": int(nfe),
                                                "seconds": time.perf_counter() - t0,
                                                "prior": args.prior_workdir or f"{args.workdir} (null condition)"}
        pictures["posterior"] = x
    pictures["truth"] = truth
    report = {"workdir": args.workdir, "step": int(step), "operator": spec.operator, "num": n,
              "dataset": f"{config.data.name}/{config.data.eval_split}", "results": results,
              "grid_rows": list(pictures)}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    lines = [f"| {spec.operator} ({n} test images) | PSNR (dB) | SSIM | consistency PSNR | pixel FID |", "|---|---|---|---|---|"]
    for k, r in results.items():
        lines.append(f"| {k} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['consistency_psnr']:.1f} | {r['pixel_fid']:.2f} |")
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    from jgen.train.artifacts import save_image_grid

    k = min(8, n)
    rows = [np.clip(v[:k], 0, 1) if v.shape[-1] == c else np.repeat(np.clip(v[:k], 0, 1), c, -1)
            for v in pictures.values()]
    save_image_grid(np.concatenate(rows), os.path.join(args.out, "grid.png"), ncols=k)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
