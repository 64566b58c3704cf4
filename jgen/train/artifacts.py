"""Files a run leaves for people: sample grids and loss curves (PNG), metrics (JSONL)."""

import json
import math
import os

import numpy as np


def image_grid(images, *, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles images [N, H, W, C] with values in [0, 1] into one uint8 image."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"image_grid expects [N, H, W, C] images, got shape {images.shape}.")
    n, h, w, c = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    grid = np.clip(np.round(grid * 255.0), 0, 255).astype(np.uint8)
    return grid[..., 0] if c == 1 else grid


def save_image_grid(images, path: str, *, ncols: int | None = None, scale: int | None = None) -> str:
    """Writes a PNG grid of images in [0, 1]; small images are upscaled for viewing."""
    from PIL import Image

    grid = image_grid(images, ncols=ncols)
    img = Image.fromarray(grid)
    if scale is None:
        scale = max(1, 64 // max(np.asarray(images).shape[1], 1))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path


def read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_metrics(path: str, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_metrics(path: str, last_step: int) -> None:
    """Drops rows logged after `last_step` (a resumed run logs them again)."""
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def plot_loss_curve(metrics_path: str, png_path: str) -> str | None:
    """Plots training loss (and eval metrics if logged) against step.

    Draws on a bare `Figure` (no pyplot, no backend switch), so it is safe inside
    notebooks and threads.
    """
    from matplotlib.figure import Figure

    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    if not train:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(*zip(*train), label="train loss")
    evals = [(r["step"], r["eval/ELBO"]) for r in rows if "eval/ELBO" in r]
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval NLL (ELBO)")
    ax.set_xlabel("step")
    ax.set_ylabel("nats / example")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return png_path
