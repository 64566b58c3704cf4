"""Trains jgen's MNIST classifier (`jgen.metrics.mnist_classifier`), the feature
extractor ``load_extractor("mnist")`` uses for FID / KID / IS / precision-recall on
MNIST, reports its test accuracy and saves it.

    python experiments/metrics/train_mnist_classifier.py                 # ~2-3 min on 2 CPU cores
    python experiments/metrics/train_mnist_classifier.py --out DIR --steps 2000 --seed 0
    python experiments/metrics/train_mnist_classifier.py --dataset digits --out /tmp/clf  # 8x8, seconds

Reads the prepared TFDS MNIST (``jgen data import mnist --from ../shared/data/mnist`` makes it); writes
``config.json`` (architecture, test accuracy, steps, seed, time) and ``params.npz`` to
--out, by default `jgen.metrics.features.DEFAULT_MNIST_CLASSIFIER`. Metrics computed
with different classifier weights are not comparable; the extractor identity (printed)
records which weights were used.
"""

import argparse
import time

import jax
import numpy as np

from jgen.data import gather, get_source
from jgen.metrics.features import DEFAULT_MNIST_CLASSIFIER
from jgen.metrics.mnist_classifier import (
    ConvClassifier,
    accuracy,
    feature_scale,
    mnist_classifier_extractor,
    save_classifier,
    train_classifier,
)


def load_split(dataset: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as ``(float32 [N, H, W, C] in [0, 1], int32 [N])``."""
    source = get_source(dataset, split, data_dir=data_dir)
    batch = gather(source, np.arange(len(source)))
    return batch["image"].astype(np.float32) / 255.0, batch["label"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DEFAULT_MNIST_CLASSIFIER)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--channels", default="32,64", help="conv channels per stage, comma-separated")
    p.add_argument("--features", type=int, default=128, help="penultimate (feature) width")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    t0 = time.time()
    x_train, y_train = load_split(args.dataset, "train", args.data_dir)
    x_test, y_test = load_split(args.dataset, "test", args.data_dir)
    model = ConvClassifier(image_shape=tuple(x_train.shape[1:]), num_classes=int(y_train.max()) + 1,
                           channels=tuple(int(c) for c in args.channels.split(",")), features=args.features)
    print(f"{args.dataset}: {len(x_train)} train / {len(x_test)} test images {x_train.shape[1:]} "
          f"({time.time() - t0:.1f} s to load)")
    t1 = time.time()
    params = train_classifier(jax.random.key(args.seed), x_train, y_train, model=model, steps=args.steps,
                              batch_size=args.batch_size, learning_rate=args.lr, log_every=max(args.steps // 10, 1))
    train_time = time.time() - t1
    test_acc = accuracy(params, model, x_test, y_test)
    train_acc = accuracy(params, model, x_train[:10000], y_train[:10000])
    info = {"dataset": args.dataset, "test_accuracy": test_acc, "train_accuracy_first_10000": train_acc,
            "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr, "seed": args.seed,
            "train_seconds": round(train_time, 1),
            "feature_scale": feature_scale(params, model, x_train[:10000])}
    save_classifier(args.out, params, model, info=info)
    extractor = mnist_classifier_extractor(args.out)
    print(f"test accuracy {test_acc:.4f} (train {train_acc:.4f}) after {args.steps} steps in {train_time:.0f} s "
          f"(total {time.time() - t0:.0f} s)")
    print(f"saved to {args.out}; extractor identity {extractor.identity}")


if __name__ == "__main__":
    main()
