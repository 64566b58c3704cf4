"""Sparse-view CT: filtered back-projection vs TV vs a diffusion prior, by PSNR/SSIM.

    python experiments/inverse/ct_sparse_view.py --workdir runs/phantoms_sde --views 8,18,30 \
        --num 16 --out runs/ct_sparse_view [--solvers replacement,dps] [--steps 200] [--noise-std 0]

Held-out images are the first `--num` of the workdir dataset's test split (for
`experiments/inverse/configs/phantoms_sde.py`: random-ellipse phantoms drawn from a seed
the training split does not use); the last 4 test images tune TV's weight per view count
(the best PSNR over `--tv-lams`), so the baseline is not handicapped by one fixed
weight. For each number of views K (equispaced in [0, pi), N detectors) the sinogram
y = R x (+ noise) is reconstructed by

* ``fbp``: filtered back-projection (Ram-Lak);
* ``tv``: `jgen.inverse.tv_reconstruct`, non-negative, from FBP;
* ``replacement``: `jgen.inverse.projection_sample` with the normalised FBP as the
  inverse: Song et al. (2022)'s sinogram-domain data consistency after every
  predictor-corrector step (`jgen.inverse.solve`);
* ``dps``: `jgen.inverse.dps_sample` (step size `--step-scale`).

With ``--samples S`` each diffusion row is the average of S posterior draws (in one
batch), an estimate of the posterior mean: a single posterior sample's squared error is
about twice the posterior mean's (~3 dB lower PSNR, see ``ct_exact_prior.py``).

Writes ``table.md`` (PSNR and SSIM, mean +- standard error over the images, NFE and
seconds per method), ``results.json`` (also the per-image values) and ``grid.png`` (rows:
the first 4 images; columns: ground truth, then FBP | TV | diffusion per view count).
Pixels are in [0, 1]; reconstructions are clipped to [0, 1] before scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jgen.config import load_saved_config
from jgen.data import gather, get_source
from jgen.inverse.quality import psnr, ssim, ssim_sigma_for
from jgen.inverse.solve import load_prior, make_task, reconstruct
from jgen.inverse.tv import tv_reconstruct
from jgen.train.artifacts import save_image_grid

NUM_TUNE = 4  # test images (from the end of the split) used to pick TV's weight


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def _scores(x: np.ndarray, truth: np.ndarray, sigma: float) -> dict[str, list[float]]:
    x = jnp.clip(jnp.asarray(x), 0.0, 1.0)
    return {"psnr": np.asarray(psnr(x, truth)).tolist(), "ssim": np.asarray(ssim(x, truth, sigma=sigma)).tolist()}


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def held_out_images(workdir: str, num: int) -> tuple[np.ndarray, np.ndarray]:
    """(evaluation images [num, N, N, 1], tuning images [NUM_TUNE, ...]) in [0, 1] from the test split."""
    config = load_saved_config(workdir)
    source = get_source(config.data.name, config.data.eval_split, data_dir=config.data.get("data_dir") or None)
    if len(source) < num + NUM_TUNE:
        raise ValueError(f"--num {num} is too large: the {config.data.name!r} test split has {len(source)} images "
                         f"and {NUM_TUNE} are kept for tuning TV.")
    images = gather(source, np.concatenate([np.arange(num), np.arange(len(source) - NUM_TUNE, len(source))]))
    x = images["image"].astype(np.float32) / 255.0
    return x[:num], x[num:]


def compare_at(prior, k: int, truth, tune, *, key, sigma, solvers, steps, noise_std, seed, step_scale, weight,
               tv_lams, tv_iters, samples=1) -> tuple[list[dict], list[np.ndarray]]:
    """Every method at k views: (table rows, the first 4 reconstructions of each method)."""
    task = make_task("ct", prior.image_shape, views=k)
    A = task.A

    def measure(x, key):
        return A.forward(x) + noise_std * jax.random.normal(key, (x.shape[0], *A.out_shape))

    measure = jax.jit(measure)
    y = np.asarray(measure(jnp.asarray(truth), key))
    y_tune = measure(jnp.asarray(tune), jax.random.fold_in(key, 1))

    @jax.jit
    def tv(y, lam):
        return tv_reconstruct(A, y, lam=lam, num_iters=tv_iters, nonneg=True, x0=task.baselines["fbp"](y)).x

    # TV's weight, tuned on held-out images that are not scored.
    tune_psnr = {lam: float(jnp.mean(psnr(jnp.clip(tv(y_tune, lam), 0, 1), tune))) for lam in tv_lams}
    lam = max(tune_psnr, key=tune_psnr.get)
    methods = {}
    t0 = time.time()
    methods["fbp"] = (np.asarray(jax.jit(task.baselines["fbp"])(y)), 0, time.time() - t0)
    t0 = time.time()
    methods["tv"] = (np.asarray(tv(y, lam)), 0, time.time() - t0)
    for solver in solvers:
        t0 = time.time()  # `samples` posterior draws per image in one batch, averaged
        x, nfe = reconstruct(prior, task, np.repeat(y, samples, axis=0), solver=solver, steps=steps, seed=seed,
                             noise_std=noise_std, step_scale=step_scale, weight=weight)
        x = x.reshape(y.shape[0], samples, *x.shape[1:]).mean(axis=1)
        methods[solver] = (x, nfe * samples, time.time() - t0)
    rows, panels = [], []
    for name, (x, nfe, seconds) in methods.items():
        s = _scores(x, truth, sigma)
        (p, p_se), (q, q_se) = _mean_se(s["psnr"]), _mean_se(s["ssim"])
        rows.append({"views": k, "method": name, "psnr": p, "psnr_se": p_se, "ssim": q, "ssim_se": q_se,
                     "nfe": nfe, "seconds": seconds, "per_image": s,
                     **({"tv_lam": lam, "tv_tuning_psnr": tune_psnr} if name == "tv" else {})})
        panels.append(np.clip(x[:4], 0, 1))
        print(f"views {k:3d}  {name:12s} PSNR {p:6.2f} +- {p_se:4.2f}  SSIM {q:.3f} +- {q_se:.3f}  "
              f"({seconds:.1f} s)", flush=True)
    return rows, panels


def run(workdir: str, views: list[int], num: int, out: str, *, solvers=("replacement",), steps: int = 200,
        noise_std: float = 0.0, seed: int = 0, step_scale: float = 1.0, weight: float = 1.0,
        tv_lams=(0.01, 0.03, 0.1, 0.3, 1.0), tv_iters: int = 300, samples: int = 1) -> dict:
    """Runs the comparison and writes table.md, results.json and grid.png into `out`."""
    os.makedirs(out, exist_ok=True)
    prior = load_prior(workdir)
    h, w, c = prior.image_shape
    if h != w or c != 1:
        raise ValueError(f"CT needs square single-channel images; the model in {workdir!r} has {prior.image_shape}.")
    truth, tune = held_out_images(workdir, num)
    sigma = ssim_sigma_for(h, w)
    key = jax.random.PRNGKey(seed)
    rows, panels = [], [truth[:4]]
    for k in views:
        new_rows, new_panels = compare_at(prior, k, truth, tune, key=jax.random.fold_in(key, k), sigma=sigma,
                                          solvers=solvers, steps=steps, noise_std=noise_std, seed=seed,
                                          step_scale=step_scale, weight=weight, tv_lams=tv_lams, tv_iters=tv_iters,
                                          samples=samples)
        rows += new_rows
        panels += new_panels
    table = ["| views | method | PSNR (dB) | SSIM | NFE | seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        name = r["method"] + (f" (lambda={r['tv_lam']:g})" if r["method"] == "tv" else "")
        table.append(f"| {r['views']} | {name} | {r['psnr']:.2f} ± {r['psnr_se']:.2f} | "
                     f"{r['ssim']:.3f} ± {r['ssim_se']:.3f} | {r['nfe']} | {r['seconds']:.1f} |")
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    report = {"workdir": workdir, "step": prior.step, "num": num, "views": views, "steps": steps,
              "noise_std": noise_std, "seed": seed, "solvers": list(solvers), "step_scale": step_scale,
              "weight": weight, "samples": samples, "ssim_sigma": sigma, "rows": rows}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    grid = np.stack(panels, axis=1).reshape(-1, h, w, c)
    save_image_grid(grid, os.path.join(out, "grid.png"), ncols=len(panels))
    print("\n".join(table))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a diffusion run on phantoms (experiments/inverse/configs)")
    p.add_argument("--views", default="8,18,30", help="comma-separated numbers of projection angles")
    p.add_argument("--num", type=int, default=16, help="held-out test images scored")
    p.add_argument("--out", required=True, help="folder for table.md, results.json, grid.png")
    p.add_argument("--solvers", default="replacement", help="comma list of replacement,dps")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--noise-std", type=float, default=0.0, help="sinogram noise std ([0, 1] image units)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step-scale", type=float, default=1.0, help="dps step size zeta'")
    p.add_argument("--weight", type=float, default=1.0, help="replacement consistency weight lambda")
    p.add_argument("--tv-lams", default="0.01,0.03,0.1,0.3,1", help="TV weights tried on the tuning images")
    p.add_argument("--tv-iters", type=int, default=300)
    p.add_argument("--samples", type=int, default=1,
                   help="posterior draws averaged per image (an estimate of the posterior mean; NFE x samples)")
    args = p.parse_args(argv)
    solvers = [s for s in args.solvers.split(",") if s]
    bad = sorted(set(solvers) - {"replacement", "dps"})
    if bad:
        p.error(f"unknown solvers {bad}; choose from replacement, dps")
    run(args.workdir, _ints(args.views), args.num, args.out, solvers=solvers, steps=args.steps,
        noise_std=args.noise_std, seed=args.seed, step_scale=args.step_scale, weight=args.weight,
        tv_lams=_floats(args.tv_lams), tv_iters=args.tv_iters, samples=args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
