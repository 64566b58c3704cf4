"""An RBM on binarized MNIST trained by CD-k or persistent CD, with its test
log-likelihood estimated by AIS (Salakhutdinov & Murray 2008) — the classic CD vs PCD
comparison (Tieleman 2008).

Training pixels are binarized afresh each step (dynamic binarization); the test set
uses jgen's fixed-seed static binarization, as every other MNIST NLL in jgen does.
The reported figure is the mean of log p(v) = -F(v) - log Z over test images, with
log Z from AIS (its standard error over the AIS runs is reported beside the
test-set standard error, and the exact log Z of the base-rate model anchors the path).

    python experiments/ebm/rbm_mnist.py --method cd --k 1 --out runs/rbm_cd1
    python experiments/ebm/rbm_mnist.py --method pcd --k 1 --out runs/rbm_pcd1
    python experiments/ebm/rbm_mnist.py --dataset digits --hidden 25 --steps 500 --out /tmp/rbm  # seconds

Writes `results.json` and `samples.png` (persistent-chain or Gibbs samples) to --out.
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.data import DataIterator, gather, get_preprocess, get_source
from jgen.losses.ebm import cd_loss, pcd_init, pcd_step
from jgen.metrics.rbm_ais import base_visible_bias_from_data, rbm_ais_log_partition
from jgen.models.ebm.rbm import free_energy, rbm_init
from jgen.samplers.gibbs import gibbs_sample
from jgen.train.artifacts import save_image_grid


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--method", choices=["cd", "pcd"], default="cd")
    p.add_argument("--k", type=int, default=1, help="Gibbs sweeps per update")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--chains", type=int, default=100, help="PCD's persistent chains")
    p.add_argument("--ais-chains", type=int, default=100)
    p.add_argument("--ais-temperatures", type=int, default=10_000)
    p.add_argument("--test-examples", type=int, default=0, help="0 = the whole test split")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    key = jax.random.key(args.seed)
    train = get_source(args.dataset, "train", data_dir=args.data_dir)
    test = get_source(args.dataset, "test", data_dir=args.data_dir)
    shape = tuple(np.asarray(train[0]["image"]).shape)
    dim = int(np.prod(shape))
    binarize = get_preprocess("binarize_dynamic")
    binarize_static = get_preprocess("binarize_static")

    params = rbm_init(jax.random.fold_in(key, 0), dim, args.hidden)
    # Visible biases start at the data's base rates (Hinton 2010, "A practical guide", Sec. 8.1).
    probe = gather(train, np.arange(min(len(train), 5000)))
    base_rate = base_visible_bias_from_data(np.asarray(probe["image"], np.float32).reshape(-1, dim) / 255.0)
    params = {**params, "b": base_rate}
    opt = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps))
    opt_state = opt.init(params)
    pcd_state = pcd_init(jax.random.fold_in(key, 1), params, args.chains) if args.method == "pcd" else None

    @jax.jit
    def step(params, opt_state, pcd_state, key, images):
        k_bin, k_cd = jax.random.split(key)
        v = binarize(k_bin, images, None).reshape((images.shape[0], dim))
        if args.method == "cd":
            grads = jax.grad(lambda p: cd_loss(p, k_cd, v, k=args.k)[0])(params)
            new_pcd = pcd_state
        else:
            def loss(p):
                value, state, _ = pcd_step(p, k_cd, pcd_state, v, k=args.k)
                return value, state
            grads, new_pcd = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        recon = jnp.mean(free_energy(params, v))
        return optax.apply_updates(params, updates), opt_state, new_pcd, recon

    it = DataIterator(train, global_batch_size=args.batch_size, seed=args.seed)
    t0 = time.perf_counter()
    log = []
    for i in range(args.steps):
        batch = next(it)
        params, opt_state, pcd_state, fe = step(params, opt_state, pcd_state, jax.random.fold_in(key, 10 + i),
                                                jnp.asarray(batch["image"]))
        if (i + 1) % 16 == 0:
            fe = float(fe)
        if (i + 1) % max(args.steps // 10, 1) == 0:
            log.append({"step": i + 1, "mean_free_energy": float(fe), "elapsed_s": time.perf_counter() - t0})
            print(json.dumps(log[-1]), flush=True)
    it.close()
    train_s = time.perf_counter() - t0

    # AIS from the base-rate RBM (W = 0, visible biases = data base rates) to the model.
    t0 = time.perf_counter()
    betas = jnp.concatenate([jnp.linspace(0.0, 0.5, args.ais_temperatures // 10, endpoint=False),
                             jnp.linspace(0.5, 0.9, args.ais_temperatures // 5, endpoint=False),
                             jnp.linspace(0.9, 1.0, args.ais_temperatures - args.ais_temperatures // 10
                                          - args.ais_temperatures // 5 + 1)])
    log_z, info = jax.jit(lambda k: rbm_ais_log_partition(k, params, num_chains=args.ais_chains, betas=betas,
                                                            base_visible_bias=base_rate))(jax.random.fold_in(key, 2))
    ais_s = time.perf_counter() - t0
    n_test = args.test_examples or len(test)
    log_p = []
    for start in range(0, n_test, 1000):
        idx = np.arange(start, min(start + 1000, n_test))
        b = gather(test, idx)
        v = binarize_static(None, jnp.asarray(b["image"]), jnp.asarray(idx)).reshape((len(idx), dim))
        log_p.append(np.asarray(-free_energy(params, v) - log_z))
    log_p = np.concatenate(log_p)
    result = {
        "dataset": args.dataset, "method": args.method, "k": args.k, "hidden": args.hidden, "steps": args.steps,
        "batch_size": args.batch_size, "lr": args.lr, "train_s": train_s,
        "platform": jax.devices()[0].platform,
        "log_z": float(log_z), "log_z_stderr": float(info["log_z_stderr"]),
        "ais_chains": args.ais_chains, "ais_temperatures": args.ais_temperatures, "ais_s": ais_s,
        "test_log_likelihood": float(log_p.mean()), "test_stderr": float(log_p.std() / np.sqrt(len(log_p))),
        "test_examples": len(log_p), "log": log,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "log"}, indent=2))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    # Samples: 1000 Gibbs sweeps from the test images (PCD's chains would do too).
    v0 = binarize_static(None, jnp.asarray(gather(test, np.arange(16))["image"]), jnp.arange(16)).reshape((16, dim))
    samples, _ = jax.jit(lambda k: gibbs_sample(k, params, v0, num_steps=1, num_burnin=1000))(jax.random.fold_in(key, 3))
    save_image_grid(np.asarray(samples[-1]).reshape((16, *shape)), os.path.join(args.out, "samples.png"))


if __name__ == "__main__":
    main()
