"""Quality vs NFE of every diffusion sampler on a 2-D Gaussian mixture.

Two score models on the VP SDE: the EXACT score of the mixture (closed form, so the
only error is the sampler's own discretisation), and a small MLP trained here with the
score-SDE loss (sampler error + learning error). Every sampler in
`jgen.families.diffusion.SDE_SAMPLERS` runs on both at 10 / 20 / 50 / 100 / 1000 steps
(the DDIM paper's table shape); quality is the unbiased kernel MMD^2 between 2,000
samples and 2,000 exact draws (fixed Gaussian-kernel bandwidth 1.0; 0 = identical
distributions; the exact-vs-exact value is reported as the noise floor).

    python experiments/diffusion/toy2d.py --out runs/diffusion_toy2d [--train-steps 4000] [--steps 10,20,50,100,1000]

Writes `table.md`, `results.json` and `quality_vs_nfe.png` to --out.
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import optax

from jgen.bench_samplers import markdown_table, plot_quality, time_compiled
from jgen.families.diffusion import SDE_SAMPLERS, sample_with
from jgen.losses.diffusion import sde_loss
from jgen.metrics.mmd import mmd2_unbiased
from jgen.models.diffusion import ScoreMLP
from jgen.sde import VPSDE, ring_mixture, to_score


def train_mlp(key, gmm, sde, *, steps: int, batch: int = 512, lr: float = 2e-3):
    """An MLP eps-network fitted with the score-SDE loss; returns score_fn(x, t)."""
    net = ScoreMLP(hidden=(128, 128, 128), embed_dim=32, embedding="fourier", fourier_scale=1.0)
    k_init, k_train = jax.random.split(key)
    params = net.init({"params": k_init}, jnp.zeros((1, 2)), jnp.zeros((1,)))
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
    state = opt.init(params)

    def model_fn(p, x, t, labels):
        return net.apply(p, x, t)

    @jax.jit
    def step(params, state, key):
        k_data, k_loss = jax.random.split(key)
        x0 = gmm.sample(k_data, batch)

        def loss(p):
            return jnp.mean(sde_loss(model_fn, p, k_loss, x0, sde=sde, prediction="eps")[0])
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    losses = []
    for i in range(steps):
        params, state, value = step(params, state, jax.random.fold_in(k_train, i))
        if (i + 1) % 16 == 0:
            losses.append(float(value))

    def score_fn(x, t):
        alpha, sigma = sde.marginal(t)
        return to_score(net.apply(params, x, t), x, alpha, sigma, "eps")
    return score_fn, losses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", default="10,20,50,100,1000")
    p.add_argument("--samplers", default=",".join(SDE_SAMPLERS))
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--train-steps", type=int, default=4000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    steps = [int(s) for s in args.steps.split(",") if s]
    samplers = [s for s in args.samplers.split(",") if s]
    gmm = ring_mixture(8, radius=4.0, std=0.3)
    sde = VPSDE()
    key = jax.random.key(args.seed)
    reference = gmm.sample(jax.random.fold_in(key, 1), args.num)
    floor = float(mmd2_unbiased(gmm.sample(jax.random.fold_in(key, 2), args.num), reference, bandwidth=1.0))

    def quality(samples):
        return float(mmd2_unbiased(jnp.asarray(samples), reference, bandwidth=1.0))

    def exact_score(x, t):
        alpha, sigma = sde.marginal(t)
        return gmm.score(x, alpha, sigma)

    t0 = time.perf_counter()
    trained_score, losses = train_mlp(jax.random.fold_in(key, 3), gmm, sde, steps=args.train_steps)
    train_s = time.perf_counter() - t0
    results = {"noise_floor_mmd2": floor, "train_steps": args.train_steps, "train_s": train_s,
               "final_loss": losses[-1] if losses else None, "platform": jax.devices()[0].platform, "models": {}}
    for model_name, score_fn in (("exact", exact_score), ("trained_mlp", trained_score)):
        one_eval = time_compiled(lambda x, f=score_fn: f(x, jnp.full((x.shape[0],), 0.5)), reference, repeats=5)
        rows = []
        for name in samplers:
            for n in (steps if name != "ode_dopri5" else [0]):
                r = time_compiled(lambda k, name=name, n=n, f=score_fn: sample_with(name, k, f, sde, (args.num, 2), n,
                                                                          langevin_step_lr=1e-4, rtol=1e-3,
                                                                          atol=1e-3),
                                  jax.random.fold_in(key, 4), repeats=args.repeats)
                samples, nfe = r["output"]
                nfe = int(nfe)
                row = {"sampler": name, "steps": n or None, "nfe": nfe, "wall_s": r["median_s"],
                       "compile_s": r["compile_s"], "memory_bytes": r["memory_bytes"],
                       "forward_s": one_eval["median_s"], "overhead": r["median_s"] / (nfe * one_eval["median_s"]),
                       "samples_per_s": args.num / r["median_s"], "quality": quality(samples)}
                rows.append(row)
                print(json.dumps({"model": model_name, **row}), flush=True)
        results["models"][model_name] = rows
        with open(os.path.join(args.out, f"table_{model_name}.md"), "w") as f:
            f.write(f"Score model: {model_name}; MMD^2 noise floor (exact vs exact): {floor:.2e}\n\n")
            f.write(markdown_table(rows, quality_name="MMD^2 to exact samples") + "\n")
        plot_quality(rows, os.path.join(args.out, f"quality_vs_nfe_{model_name}.png"),
                     quality_name="MMD^2 to exact samples", title=f"8-mode ring mixture, {model_name} score")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
