"""The `jgen` command line: train | sample | eval | eval-data | ood | solve | bench | data.

  jgen train --config experiments/vae/configs/digits.py --workdir runs/digits [--config.a.b=v ...]
  jgen sample --workdir runs/digits --num 64 --out samples.png      (or .npz; --label K)
  jgen latent reconstruct|interpolate|traverse|classes --workdir runs/digits --out grid.png
  jgen eval --workdir runs/digits [--split test] [--num-examples N] [--metrics fid,kid,is,pr --num-samples N]
  jgen eval-data --dataset mnist --split test --reference-split train --metrics fid,kid,pr
  jgen ood --workdir runs/digits --ood noise,flip,shift [--num-examples N]
  jgen solve --workdir runs/sde --task inpaint|superres|colorize|deblur|ct --input x.npz --out result.png
  jgen bench train-step --config FILE --devices 1,8
  jgen bench samplers --workdir runs/mnist_sde [--steps 10,20,50,100] [--quality] --out bench/
  jgen data import mnist --from ../shared/data/mnist [--data-dir DIR]

Multi-host: add --coordinator-address HOST:PORT --num-processes N --process-id I
(or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or pass
--distributed-auto on TPU pods and SLURM) and run the same command on every host.
"""

import argparse
import json
import sys


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.a.b=value` (or `--config.a.b value`) overrides from other args."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            body = arg[len("--config."):]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise SystemExit(f"error: {arg} needs a value, e.g. {arg}=VALUE")
                body = f"{body}={argv[i + 1]}"
                i += 1
            overrides.append(body)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def _add_distributed_flags(p):
    g = p.add_argument_group("multi-host (jax.distributed)")
    g.add_argument("--coordinator-address", default=None, help="HOST:PORT of process 0")
    g.add_argument("--coordinator-bind-address", default=None)
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    g.add_argument("--distributed-auto", action="store_true",
                   help="let JAX detect the cluster (TPU pods, SLURM, Open MPI)")


def _init_distributed(args):
    from jgen.train.distributed import initialize

    initialize(args.coordinator_address, args.num_processes, args.process_id,
               coordinator_bind_address=args.coordinator_bind_address, auto=args.distributed_auto)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a config in a workdir (resumes if it has checkpoints)")
    t.add_argument("--config", required=True, help="experiments/<family>/configs/<name>.py[:variant]")
    t.add_argument("--workdir", required=True)
    t.add_argument("--no-progress", action="store_true")
    _add_distributed_flags(t)

    s = sub.add_parser("sample", help="draw samples from a trained workdir")
    s.add_argument("--workdir", required=True)
    s.add_argument("--num", type=int, default=64)
    s.add_argument("--out", required=True, help="a .png grid or an .npz of samples")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, default=None, help="class to sample (class-conditional models)")
    s.add_argument("--condition", default=None,
                   help="conditional models: 3 | 'text=a large 7 in the top left' | 'vector=v1,v2,...' | "
                        "image=FILE[;box=T,L,B,R] | split=test (see jgen.conditioning.parse)")
    s.add_argument("--guidance-scale", type=float, default=None,
                   help="diffusion models: classifier-free guidance weight (default: model.guidance_scale)")

    lt = sub.add_parser("latent", help="reconstructions, interpolations, traversals, per-class grids (PNG)")
    lt.add_argument("what", choices=["reconstruct", "interpolate", "traverse", "classes"])
    lt.add_argument("--workdir", required=True)
    lt.add_argument("--out", required=True, help="a .png file")
    lt.add_argument("--split", default="test")
    lt.add_argument("--num", type=int, default=8, help="rows (examples, paths, dims) or samples per class")
    lt.add_argument("--seed", type=int, default=0)
    lt.add_argument("--label", type=int, default=None, help="use examples of this class only")

    e = sub.add_parser("eval", help="NLL estimates (nats, bits/dim) of a trained workdir on a split")
    e.add_argument("--workdir", required=True)
    e.add_argument("--split", default=None, help="default: the config's data.eval_split")
    e.add_argument("--num-examples", type=int, default=0, help="0 = the whole split")
    e.add_argument("--batch-size", type=int, default=0, help="0 = the config's eval.batch_size")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default=None, help="also write the JSON here")
    e.add_argument("--iwae-k", default=None, help="comma-separated IWAE sample counts (default: eval.iwae_k)")
    e.add_argument("--ais-steps", type=int, default=None, help="add the AIS estimator with this many temperatures")
    e.add_argument("--ais-chains", type=int, default=None)
    e.add_argument("--progress", action="store_true")
    e.add_argument("--metrics", default="", help="sample quality: comma list of fid,kid,is,pr (default: none)")
    e.add_argument("--num-samples", type=int, default=10000, help="samples drawn for --metrics")
    e.add_argument("--features", default=None,
                   help="feature extractor: pixels | mnist[:PATH] | inception:PATH (default mnist for 28x28x1)")
    e.add_argument("--reference-split", default=None, help="real data for --metrics (default: data.train_split)")
    e.add_argument("--reference-stats", default=None,
                   help="reference-statistics cache .npz (default ~/.cache/jgen/refstats/...)")
    e.add_argument("--sample-batch-size", type=int, default=500, help="samples per sampler call for --metrics")
    e.add_argument("--label", type=int, default=None, help="--metrics of one class (class-conditional models)")
    e.add_argument("--max-rows", type=int, default=10000, help="feature rows kept for KID/PR (and cached)")
    e.add_argument("--no-nll", action="store_true", help="skip the NLL estimates (e.g. with --metrics)")
    _add_distributed_flags(e)

    ed = sub.add_parser("eval-data", help="sample-quality metrics of a dataset split against another (the floor)")
    ed.add_argument("--dataset", required=True)
    ed.add_argument("--split", default="test")
    ed.add_argument("--reference-split", default="train")
    ed.add_argument("--metrics", default="fid,kid,pr", help="comma list of fid,kid,is,pr")
    ed.add_argument("--features", default=None, help="as for eval (default mnist for 28x28x1)")
    ed.add_argument("--preprocess", default="unit_interval", help="a data preprocessing (binarize_* = binary images)")
    ed.add_argument("--num-examples", type=int, default=0, help="examples of --split (0 = all)")
    ed.add_argument("--reference-stats", default=None)
    ed.add_argument("--batch-size", type=int, default=500)
    ed.add_argument("--max-rows", type=int, default=10000, help="feature rows kept for KID/PR (and cached)")
    ed.add_argument("--seed", type=int, default=0)
    ed.add_argument("--data-dir", default=None)
    ed.add_argument("--out", default=None, help="also write the JSON here")

    o = sub.add_parser("ood", help="OOD detection AUROCs (likelihood and typicality) of a trained workdir")
    o.add_argument("--workdir", required=True)
    o.add_argument("--ood", default=None,
                   help="comma list of noise,flip,shift,digits (default: all; digits for 28x28x1 models only)")
    o.add_argument("--num-examples", type=int, default=1000, help="in-distribution inputs (and per OOD set)")
    o.add_argument("--num-heldout", type=int, default=0, help="held-out examples for the typical NLL (0 = auto)")
    o.add_argument("--split", default=None, help="default: the config's data.eval_split")
    o.add_argument("--estimator", default=None, help="NLL estimator (default: the family's first, e.g. ELBO)")
    o.add_argument("--typicality-batch", default="1,10", help="batch sizes M of the typicality test")
    o.add_argument("--batch-size", type=int, default=0, help="0 = the config's eval.batch_size")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--out", default=None, help="also write the JSON here")

    sv = sub.add_parser("solve", help="inverse problems with a trained diffusion prior (jgen.inverse.solve)")
    sv.add_argument("--workdir", required=True, help="a trained diffusion run (its EMA weights are the prior)")
    sv.add_argument("--task", required=True, choices=["inpaint", "superres", "colorize", "deblur", "ct"])
    sv.add_argument("--input", required=True, help="a PNG, or an .npz with 'images' (uint8 0..255 or float in "
                    "[0, 1], [N, H, W, C]: measured here, PSNR/SSIM reported) or 'measurements' ([0, 1] units)")
    sv.add_argument("--out", required=True, help="FILE.png or FILE.npz; both are written")
    sv.add_argument("--solver", default="replacement", choices=["replacement", "repaint", "dps"])
    sv.add_argument("--steps", type=int, default=100, help="sampler steps")
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--noise-std", type=float, default=0.0, help="measurement noise std ([0, 1] image units)")
    sv.add_argument("--mask-box", default=None, help="inpaint: TOP,LEFT,BOTTOM,RIGHT pixels hidden (default: centre)")
    sv.add_argument("--factor", type=int, default=2, help="superres: downsampling factor")
    sv.add_argument("--views", type=int, default=18, help="ct: projection angles in [0, pi)")
    sv.add_argument("--blur-size", type=int, default=5, help="deblur: Gaussian kernel size (odd)")
    sv.add_argument("--blur-sigma", type=float, default=1.0, help="deblur: Gaussian kernel std (pixels)")
    sv.add_argument("--step-scale", type=float, default=1.0, help="dps: the step size zeta'")
    sv.add_argument("--weight", type=float, default=1.0, help="replacement: data-consistency weight lambda")
    sv.add_argument("--resample", type=int, default=5, help="repaint: resampling passes U")
    sv.add_argument("--tv-lam", type=float, default=0.3, help="ct: the TV baseline's weight")

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    bt = bsub.add_parser("train-step", help="train-step throughput (examples/s) per device count")
    bt.add_argument("--config", required=True)
    bt.add_argument("--devices", default="1", help="comma-separated device counts, e.g. 1,8")
    bt.add_argument("--steps", type=int, default=50)
    bt.add_argument("--repeats", type=int, default=5)
    bt.add_argument("--out", default=None)
    bt.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    bs = bsub.add_parser("samplers", help="every diffusion sampler: NFE, wall time, compile time, memory, quality")
    bs.add_argument("--config", default=None, help="a diffusion config (random init), or give --workdir")
    bs.add_argument("--workdir", default=None, help="a trained diffusion run (its EMA weights)")
    bs.add_argument("--samplers", default="", help="comma-separated (default: every sampler of the model)")
    bs.add_argument("--steps", default="10,20,50,100", help="comma-separated step counts")
    bs.add_argument("--num", type=int, default=64, help="samples per batch")
    bs.add_argument("--repeats", type=int, default=3)
    bs.add_argument("--quality", action="store_true",
                    help="pixel-space kernel MMD^2 of the samples to --num test images (lower is better)")
    bs.add_argument("--out", default=None, help="folder for table.md, results.json, quality_vs_nfe.png")

    d = sub.add_parser("data", help="datasets")
    dsub = d.add_subparsers(dest="data", required=True)
    di = dsub.add_parser("import", help="write local raw files into TFDS's on-disk format")
    di.add_argument("name", choices=["mnist"])
    di.add_argument("--from", dest="from_dir", required=True, help="folder with the four MNIST IDX files")
    di.add_argument("--data-dir", default=None, help="TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    di.add_argument("--no-verify", action="store_true", help="skip the md5 check")
    return p


def _load_config(spec: str, overrides: list[str]):
    from jgen.config import apply_overrides, load_config

    return apply_overrides(load_config(spec), overrides)


def cmd_train(args, overrides):
    config = _load_config(args.config, overrides)
    _init_distributed(args)
    from jgen.train.loop import train_and_evaluate

    train_and_evaluate(config, args.workdir, progress=not args.no_progress)
    import jax

    if jax.process_index() == 0:
        print(f"Done. Workdir {args.workdir}: samples.png, loss_curve.png, metrics.jsonl, checkpoints/")


def cmd_sample(args):
    import numpy as np

    from jgen.train.artifacts import save_image_grid
    from jgen.train.loop import data_conditions, generate, restore_for_inference

    config = None
    if args.guidance_scale is not None:
        from jgen.config import load_saved_config

        config = load_saved_config(args.workdir)
        if "guidance_scale" not in config.model:
            raise SystemExit(f"error: --guidance-scale: the model in {args.workdir} has no guidance "
                             "(classifier-free guidance is a diffusion-family option).")
        config.model.guidance_scale = float(args.guidance_scale)
    run, state, step = restore_for_inference(args.workdir, config)
    condition = None
    if args.condition is not None:
        from jgen.conditioning.parse import parse_condition

        if args.label is not None:
            raise SystemExit("error: give --label or --condition, not both.")
        condition = parse_condition(run.spec.condition, args.condition, args.num,
                                    data_conditions=lambda split, n: data_conditions(run, n, split=split,
                                                                                     seed=args.seed))
    images = generate(run, state, args.num, seed=args.seed, label=args.label, condition=condition)
    if args.out.endswith(".npz"):
        extra = {"condition": condition} if condition is not None else {}
        np.savez(args.out, samples=images, step=step, **extra)
    elif args.out.endswith(".png"):
        save_image_grid(images, args.out)
    else:
        raise SystemExit(f"error: --out must end in .png or .npz, got {args.out!r}")
    print(json.dumps({"out": args.out, "num": args.num, "step": int(step), "shape": list(images.shape)}))


def cmd_latent(args):
    from jgen.latent import latent_command

    out = latent_command(args.workdir, args.what, args.out, split=args.split, num=args.num, seed=args.seed,
                         label=args.label)
    print(json.dumps({"out": out, "what": args.what}))


def cmd_eval(args):
    _init_distributed(args)
    import jax

    from jgen.config import load_saved_config
    from jgen.data import get_source
    from jgen.train.evaluate import evaluate
    from jgen.train.loop import eval_params, restore_for_inference

    config = load_saved_config(args.workdir)
    with config.unlocked():
        if args.iwae_k is not None:
            config.eval.iwae_k = tuple(int(k) for k in args.iwae_k.split(",") if k)
        if args.ais_steps is not None:
            config.eval.ais_steps = args.ais_steps
        if args.ais_chains is not None:
            config.eval.ais_chains = args.ais_chains
    run, state, step = restore_for_inference(args.workdir, config)
    split = args.split or config.data.eval_split
    results = {}
    if not args.no_nll:
        source = get_source(config.data.name, split, data_dir=config.data.get("data_dir") or None)
        results = evaluate(run.spec, eval_params(state, config), source, mesh=run.mesh,
                           batch_size=args.batch_size or config.eval.batch_size, key=jax.random.PRNGKey(args.seed),
                           num_examples=args.num_examples, progress=args.progress)
    report = {"workdir": args.workdir, "step": int(step), "dataset": config.data.name, "split": split,
              "preprocess": config.data.eval_preprocess,
              "nll": {k: _labelled(k, v, config.data.eval_preprocess) for k, v in results.items() if _is_nll(v)},
              "metrics": {k: v for k, v in results.items() if not _is_nll(v)}}
    if args.metrics:
        from jgen.metrics.sample_quality import run_sample_quality

        report["metrics"]["sample_quality"] = run_sample_quality(
            run, state, metrics=args.metrics, num_samples=args.num_samples, features=args.features,
            reference_split=args.reference_split, reference_path=args.reference_stats,
            batch_size=args.sample_batch_size, seed=args.seed, label=args.label, max_rows=args.max_rows)
    _emit(report, args.out)


def _labelled(name, entry, preprocess):
    """An NLL entry with its dequantization stated (jgen.metrics.likelihood.dequantization_label)."""
    from jgen.metrics.likelihood import dequantization_label

    return {**entry, "dequantization": entry.get("dequantization") or dequantization_label(name, preprocess)}


def _emit(report, out):
    import jax

    text = json.dumps(report, indent=2)
    if jax.process_index() == 0:
        print(text)
        if out:
            with open(out, "w") as f:
                f.write(text + "\n")


def cmd_eval_data(args):
    from jgen.data import dataset_info
    from jgen.metrics.sample_quality import dataset_vs_reference, default_feature_spec

    features = args.features or default_feature_spec(
        dataset_info(args.dataset, data_dir=args.data_dir).image_shape, args.dataset)
    _emit(dataset_vs_reference(args.dataset, args.split, args.reference_split, metrics=args.metrics,
                               features=features, preprocess=args.preprocess, num_examples=args.num_examples,
                               reference_path=args.reference_stats, data_dir=args.data_dir,
                               batch_size=args.batch_size, seed=args.seed, max_rows=args.max_rows), args.out)


def cmd_ood(args):
    from jgen.metrics.ood import ood_from_workdir

    ood = [s for s in args.ood.split(",") if s] if args.ood else None
    _emit(ood_from_workdir(args.workdir, ood=ood, num_examples=args.num_examples,
                           num_heldout=args.num_heldout, split=args.split, estimator=args.estimator,
                           typicality_batches=[int(m) for m in args.typicality_batch.split(",") if m],
                           batch_size=args.batch_size, seed=args.seed), args.out)


def cmd_solve(args):
    from jgen.inverse.solve import solve

    report = solve(args.workdir, args.task, args.input, args.out, solver=args.solver, steps=args.steps,
                   seed=args.seed, noise_std=args.noise_std, step_scale=args.step_scale, weight=args.weight,
                   resample_steps=args.resample, mask_box=args.mask_box, factor=args.factor, views=args.views,
                   blur_size=args.blur_size, blur_sigma=args.blur_sigma, tv_lam=args.tv_lam)
    print(json.dumps(report, indent=2))


def _is_nll(entry) -> bool:
    return isinstance(entry, dict) and "estimator" in entry


def cmd_bench_samplers(args, overrides):
    import os

    import numpy as np

    from jgen.bench_samplers import benchmark_samplers, markdown_table, plot_quality
    from jgen.train.loop import eval_params, init_state, restore_for_inference, setup

    if bool(args.config) == bool(args.workdir):
        raise SystemExit("error: give exactly one of --config (random init) or --workdir (a trained run)")
    if args.workdir:
        run, state, step = restore_for_inference(args.workdir)
    else:
        run, step = setup(_load_config(args.config, overrides)), 0
        state = init_state(run)
    fns = run.spec.sampler_fns
    if fns is None:
        raise SystemExit(f"error: `jgen bench samplers` needs a diffusion model; this run's family is "
                         f"{run.config.model.family!r}")
    if fns.condition is not None and fns.condition.kind != "label":  # captions, vectors, images: the eval split's
        from jgen.train.loop import data_conditions

        fns = fns.with_condition(data_conditions(run, args.num))
    names = [s for s in args.samplers.split(",") if s] or list(fns.samplers)
    unknown = sorted(set(names) - set(fns.samplers))
    if unknown:
        raise SystemExit(f"error: unknown samplers {unknown}; this model runs {', '.join(fns.samplers)}")
    steps = [int(s) for s in args.steps.split(",") if s]
    quality_fn = None
    if args.quality:
        from jgen.data import get_source
        from jgen.metrics.mmd import mmd2_unbiased

        source = get_source(run.config.data.name, run.config.data.eval_split,
                            data_dir=run.config.data.get("data_dir") or None)
        real = np.stack([np.asarray(source[i]["image"]) for i in range(args.num)]).astype(np.float32) / 127.5 - 1

        def quality_fn(samples):
            flat = lambda a: a.reshape((a.shape[0], -1))
            return float(mmd2_unbiased(flat(np.clip(samples, -1, 1)), flat(real)))
    rows = benchmark_samplers(fns, eval_params(state, run.config), samplers=names, steps=steps, num=args.num,
                              repeats=args.repeats, mesh=run.mesh, quality_fn=quality_fn)
    qname = "pixel MMD^2 to test images" if args.quality else "quality"
    table = markdown_table(rows, quality_name=qname)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write(table + "\n")
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"step": int(step), "num": args.num, "rows": rows}, f, indent=2)
        plot_quality(rows, os.path.join(args.out, "quality_vs_nfe.png"), quality_name=qname,
                     title=f"{run.config.model.formulation} on {run.config.data.name}, step {int(step)}")


def cmd_bench(args, overrides):
    from jgen.bench import run_device_sweep, train_step_throughput

    if args.bench == "samplers":
        return cmd_bench_samplers(args, overrides)

    if args.child:
        config = _load_config(args.config, overrides)
        print(json.dumps(train_step_throughput(config, steps=args.steps, repeats=args.repeats)))
        return
    devices = [int(x) for x in args.devices.split(",") if x]
    result = run_device_sweep(args.config, overrides, devices, steps=args.steps, repeats=args.repeats)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


def cmd_data(args):
    from jgen.data import import_mnist

    path = import_mnist(args.from_dir, args.data_dir, verify_checksums=not args.no_verify)
    print(f"Imported MNIST into {path}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rest, overrides = _split_overrides(argv)
    args = _parser().parse_args(rest)
    if overrides and args.command not in ("train", "bench"):
        raise SystemExit(f"error: --config.* overrides only apply to train and bench, not {args.command}")
    from jgen.checkpoint import StructureMismatchError
    from jgen.config import ConfigError
    from jgen.train.loop import NonFiniteError

    try:
        if args.command == "train":
            cmd_train(args, overrides)
        elif args.command == "sample":
            cmd_sample(args)
        elif args.command == "eval":
            cmd_eval(args)
        elif args.command == "eval-data":
            cmd_eval_data(args)
        elif args.command == "ood":
            cmd_ood(args)
        elif args.command == "solve":
            cmd_solve(args)
        elif args.command == "latent":
            cmd_latent(args)
        elif args.command == "bench":
            cmd_bench(args, overrides)
        elif args.command == "data":
            cmd_data(args)
    except (ConfigError, FileNotFoundError, StructureMismatchError, ValueError) as e:  # incl. DatasetNotFoundError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
