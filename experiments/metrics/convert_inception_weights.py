"""Converts PyTorch Inception-v3 weights (pytorch-fid's FID checkpoint) into jgen's
``.npz`` format for `jgen.metrics.inception`.

Get the checkpoint yourself (nothing here downloads):
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
then, on a machine with PyTorch installed::

    python experiments/metrics/convert_inception_weights.py \\
        pt_inception-2015-12-05-6726825d.pth ~/.cache/jgen/inception_fid.npz

The input may also be a ``.npz`` holding the same state_dict as NumPy arrays under the
PyTorch names (``np.savez("sd.npz", **{k: v.numpy() for k, v in sd.items()})``), which
needs no PyTorch here. torchvision's ``inception_v3_google-*.pth`` converts too (its
``AuxLogits`` head is dropped); it is not the FID network's weights, see
`jgen.metrics.inception`.

Name mapping (`torch_to_jgen`), for every ``BasicConv2d`` ``<layer>``:
``<layer>.conv.weight [out, in, kh, kw]`` -> ``<layer>/conv/kernel [kh, kw, in, out]``;
``<layer>.bn.weight|bias|running_mean|running_var`` -> ``<layer>/bn/scale|bias|mean|var``;
``fc.weight [K, 2048]`` -> ``fc/kernel [2048, K]``; ``fc.bias`` -> ``fc/bias``;
``*.num_batches_tracked`` and ``AuxLogits.*`` are dropped.
"""

import argparse
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def torch_to_jgen(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Maps a PyTorch Inception-v3 state_dict (NumPy arrays under PyTorch names) to
    jgen's flat float32 weights. Pure: works on a plain dict, no PyTorch needed.

    Raises:
      ValueError: a key that is not part of Inception-v3 (named), or a convolution
        weight that is not 4-d.
    """
    out = {}
    for name, value in state_dict.items():
        name = name.removeprefix("module.")  # saved from DataParallel
        if name.endswith("num_batches_tracked") or name.startswith("AuxLogits."):
            continue
        a = np.asarray(value, dtype=np.float32)
        parts = name.split(".")
        layer = "/".join(parts[:-1])
        is_layer = parts[0].startswith(("Conv2d_", "Mixed_")) and len(parts) >= 3
        if name == "fc.weight":
            out["fc/kernel"] = np.ascontiguousarray(a.T)
        elif name == "fc.bias":
            out["fc/bias"] = a
        elif is_layer and parts[-2:] == ["conv", "weight"]:
            if a.ndim != 4:
                raise ValueError(f"{name}: expected a conv weight [out, in, kh, kw], got shape {a.shape}.")
            out[layer + "/kernel"] = np.ascontiguousarray(a.transpose(2, 3, 1, 0))
        elif is_layer and parts[-2] == "bn" and parts[-1] in _BN_NAMES:
            out[layer + "/" + _BN_NAMES[parts[-1]]] = a
        else:
            raise ValueError(
                f"unexpected state_dict key {name!r}: expected pytorch-fid / torchvision Inception-v3 "
                "names such as 'Mixed_5b.branch1x1.conv.weight' or 'fc.bias' (a state_dict of "
                "pytorch-fid's InceptionV3 wrapper, with 'blocks.*' keys, is not supported: use the "
                "raw pt_inception-2015-12-05 checkpoint).")
    return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A ``.pth`` (needs PyTorch, imported here only) or ``.npz`` state_dict as NumPy."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    try:
        import torch  # lazy: only this path needs PyTorch
    except ImportError as e:
        raise SystemExit(f"reading {path!r} needs PyTorch (pip install torch), or pass a .npz of the "
                         "state_dict's arrays saved on a machine that has it.") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", help="PyTorch state_dict: .pth (needs torch) or .npz of its arrays")
    p.add_argument("output", help="jgen weights .npz to write")
    args = p.parse_args(argv)
    from jgen.metrics.features import params_digest
    from jgen.metrics.inception import load_weights, save_weights

    t0 = time.time()
    flat = torch_to_jgen(load_state_dict(os.path.expanduser(args.input)))
    output = os.path.expanduser(args.output)
    save_weights(output, flat)  # checks every key and shape against the Flax module
    variables = load_weights(output)
    total = sum(v.size for v in flat.values())
    print(f"wrote {output}: {len(flat)} arrays, {total:,} numbers, "
          f"{variables['params']['fc']['kernel'].shape[1]} classes, "
          f"extractor identity inception-v3-fid:{params_digest(variables)}, {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
