"""The FID Inception-v3 (jgen.metrics.inception) and its weight converter.

The independent reference is a NumPy re-implementation of pytorch-fid's
``fid_inception_v3`` forward pass written here in PyTorch's conventions (NCHW data,
``[out, in, kh, kw]`` weights under PyTorch state_dict names, ``F.interpolate``'s
bilinear formula), fed a random state_dict built from a layer table that is also
written here. The Flax network sees the same weights only through the converter, so
one comparison checks the architecture (wiring, strides, paddings, the FID pooling
variants, concatenation order), the name mapping and the kernel transposes.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO_ROOT
from numpy.lib.stride_tricks import sliding_window_view

from jgen.metrics import inception
from jgen.metrics.features import params_digest


def _load_converter():
    path = os.path.join(REPO_ROOT, "experiments", "metrics", "convert_inception_weights.py")
    spec = importlib.util.spec_from_file_location("convert_inception_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------- the layer table


def torch_layer_table():
    """(name, in, out, kh, kw) of every BasicConv2d of pytorch-fid's fid_inception_v3."""
    t = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
         ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    for n, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):  # A
        t += [(f"{n}.branch1x1", cin, 64, 1, 1), (f"{n}.branch5x5_1", cin, 48, 1, 1),
              (f"{n}.branch5x5_2", 48, 64, 5, 5), (f"{n}.branch3x3dbl_1", cin, 64, 1, 1),
              (f"{n}.branch3x3dbl_2", 64, 96, 3, 3), (f"{n}.branch3x3dbl_3", 96, 96, 3, 3),
              (f"{n}.branch_pool", cin, pool, 1, 1)]
    t += [("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),  # B
          ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3)]
    for n, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):  # C
        t += [(f"{n}.branch1x1", 768, 192, 1, 1), (f"{n}.branch7x7_1", 768, c7, 1, 1),
              (f"{n}.branch7x7_2", c7, c7, 1, 7), (f"{n}.branch7x7_3", c7, 192, 7, 1),
              (f"{n}.branch7x7dbl_1", 768, c7, 1, 1), (f"{n}.branch7x7dbl_2", c7, c7, 7, 1),
              (f"{n}.branch7x7dbl_3", c7, c7, 1, 7), (f"{n}.branch7x7dbl_4", c7, c7, 7, 1),
              (f"{n}.branch7x7dbl_5", c7, 192, 1, 7), (f"{n}.branch_pool", 768, 192, 1, 1)]
    t += [("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),  # D
          ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
          ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3)]
    for n, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):  # E
        t += [(f"{n}.branch1x1", cin, 320, 1, 1), (f"{n}.branch3x3_1", cin, 384, 1, 1),
              (f"{n}.branch3x3_2a", 384, 384, 1, 3), (f"{n}.branch3x3_2b", 384, 384, 3, 1),
              (f"{n}.branch3x3dbl_1", cin, 448, 1, 1), (f"{n}.branch3x3dbl_2", 448, 384, 3, 3),
              (f"{n}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{n}.branch3x3dbl_3b", 384, 384, 3, 1),
              (f"{n}.branch_pool", cin, 192, 1, 1)]
    return t


NUM_CLASSES = 1008


def fake_torch_state_dict(seed=0):
    """A random state_dict under PyTorch names (with the keys the converter must drop)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for name, cin, cout, kh, kw in torch_layer_table():
        sd[f"{name}.conv.weight"] = (rng.standard_normal((cout, cin, kh, kw)) * np.sqrt(2 / (cin * kh * kw))).astype(np.float32)
        sd[f"{name}.bn.weight"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        sd[f"{name}.bn.bias"] = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        sd[f"{name}.bn.running_mean"] = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        sd[f"{name}.bn.running_var"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        sd[f"{name}.bn.num_batches_tracked"] = np.array(0, np.int64)
    sd["fc.weight"] = (rng.standard_normal((NUM_CLASSES, 2048)) * 0.05).astype(np.float32)
    sd["fc.bias"] = rng.standard_normal(NUM_CLASSES).astype(np.float32)
    sd["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)  # torchvision-style extra head
    return sd


# ----------------------------------------------------------- NumPy reference (NCHW)


def torch_bilinear(x, size):
    """F.interpolate(x, (size, size), mode="bilinear", align_corners=False), NCHW."""
    def matrix(n_in):
        src = np.maximum((np.arange(size) + 0.5) * (n_in / size) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = src - i0
        m = np.zeros((size, n_in))
        np.add.at(m, (np.arange(size), i0), 1 - lam)
        np.add.at(m, (np.arange(size), i1), lam)
        return m
    return matrix(x.shape[2]) @ x @ matrix(x.shape[3]).T  # [299, H] @ [B, C, H, W] @ [W, 299]


def np_forward(sd, images):
    """pytorch-fid's InceptionV3 forward (resize, normalise, fid_inception_v3) in NumPy."""
    x = np.asarray(images, np.float64).transpose(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    x = (2 * torch_bilinear(x, 299) - 1).astype(np.float32)

    def bc(x, name, stride=1, pad=(0, 0)):  # BasicConv2d: conv (no bias), BN (eps 1e-3), ReLU
        w = sd[name + ".conv.weight"]  # [out, in, kh, kw]
        x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
        win = sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]  # [B, C, Ho, Wo, kh, kw]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, w[0].size)  # im2col, (c, i, j) order
        y = (cols @ w.reshape(len(w), -1).T).reshape(*win.shape[:1], *win.shape[2:4], -1).transpose(0, 3, 1, 2)
        g, b, m, v = (sd[f"{name}.bn.{k}"][None, :, None, None] for k in ("weight", "bias", "running_mean", "running_var"))
        return np.maximum((y - m) / np.sqrt(v + 1e-3) * g + b, 0)

    def shifts(x, stride, fill):  # the 9 entries of every 3x3 window, as 9 arrays
        x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=fill) if fill is not None else x
        ho, wo = (x.shape[2] - 3) // stride + 1, (x.shape[3] - 3) // stride + 1
        return [x[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
                for i in range(3) for j in range(3)]

    def max_pool(x, stride, pad=False):  # MaxPool2d(3, stride), padding 1 (with -inf) if pad
        return np.max(shifts(x, stride, -np.inf if pad else None), axis=0)

    def avg_pool_no_pad_count(x):  # F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        count = np.sum(shifts(np.ones((1, 1) + x.shape[2:], x.dtype), 1, 0.0), axis=0)
        return np.sum(shifts(x, 1, 0.0), axis=0) / count

    cat = lambda *xs: np.concatenate(xs, axis=1)
    x = bc(x, "Conv2d_1a_3x3", stride=2)
    x = bc(x, "Conv2d_2a_3x3")
    x = max_pool(bc(x, "Conv2d_2b_3x3", pad=(1, 1)), 2)
    x = bc(x, "Conv2d_3b_1x1")
    x = max_pool(bc(x, "Conv2d_4a_3x3"), 2)
    for n in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = cat(bc(x, f"{n}.branch1x1"),
                bc(bc(x, f"{n}.branch5x5_1"), f"{n}.branch5x5_2", pad=(2, 2)),
                bc(bc(bc(x, f"{n}.branch3x3dbl_1"), f"{n}.branch3x3dbl_2", pad=(1, 1)), f"{n}.branch3x3dbl_3", pad=(1, 1)),
                bc(avg_pool_no_pad_count(x), f"{n}.branch_pool"))
    n = "Mixed_6a"
    x = cat(bc(x, f"{n}.branch3x3", stride=2),
            bc(bc(bc(x, f"{n}.branch3x3dbl_1"), f"{n}.branch3x3dbl_2", pad=(1, 1)), f"{n}.branch3x3dbl_3", stride=2),
            max_pool(x, 2))
    for n in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        b7 = bc(bc(bc(x, f"{n}.branch7x7_1"), f"{n}.branch7x7_2", pad=(0, 3)), f"{n}.branch7x7_3", pad=(3, 0))
        bd = bc(x, f"{n}.branch7x7dbl_1")
        for i, pad in ((2, (3, 0)), (3, (0, 3)), (4, (3, 0)), (5, (0, 3))):
            bd = bc(bd, f"{n}.branch7x7dbl_{i}", pad=pad)
        x = cat(bc(x, f"{n}.branch1x1"), b7, bd, bc(avg_pool_no_pad_count(x), f"{n}.branch_pool"))
    n = "Mixed_7a"
    b3 = bc(bc(x, f"{n}.branch3x3_1"), f"{n}.branch3x3_2", stride=2)
    b7 = bc(bc(bc(x, f"{n}.branch7x7x3_1"), f"{n}.branch7x7x3_2", pad=(0, 3)), f"{n}.branch7x7x3_3", pad=(3, 0))
    x = cat(b3, bc(b7, f"{n}.branch7x7x3_4", stride=2), max_pool(x, 2))
    for n, pool in (("Mixed_7b", avg_pool_no_pad_count), ("Mixed_7c", lambda x: max_pool(x, 1, pad=True))):
        b3 = bc(x, f"{n}.branch3x3_1")
        bd = bc(bc(x, f"{n}.branch3x3dbl_1"), f"{n}.branch3x3dbl_2", pad=(1, 1))
        x = cat(bc(x, f"{n}.branch1x1"),
                bc(b3, f"{n}.branch3x3_2a", pad=(0, 1)), bc(b3, f"{n}.branch3x3_2b", pad=(1, 0)),
                bc(bd, f"{n}.branch3x3dbl_3a", pad=(0, 1)), bc(bd, f"{n}.branch3x3dbl_3b", pad=(1, 0)),
                bc(pool(x), f"{n}.branch_pool"))
    pool3 = x.mean(axis=(2, 3)).astype(np.float64)
    logits = pool3 @ sd["fc.weight"].T.astype(np.float64)  # the original IS: no bias
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return pool3, probs / probs.sum(1, keepdims=True)


# ------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def random_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("inception") / "random.npz")
    inception.write_random_weights(path, seed=3)
    return path


def test_parameter_count_matches_layer_table_and_torchvision():
    convs = torch_layer_table()
    assert len(convs) == 94
    table_trainable = sum(ci * co * kh * kw + 2 * co for _, ci, co, kh, kw in convs) + 2048 * NUM_CLASSES + NUM_CLASSES
    table_stats = sum(2 * co for _, _, co, _, _ in convs)
    # torchvision documents 27,161,264 parameters for inception_v3 (1000 classes, with the
    # auxiliary head: conv0 768->128 1x1 + BN, conv1 128->768 5x5 + BN, fc 768->1000).
    aux = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
    torchvision_fid = 27_161_264 - aux + 8 * (2048 + 1)
    shapes = inception.weight_shapes(NUM_CLASSES)
    stats = sum(int(np.prod(s)) for k, s in shapes.items() if k.endswith(("/bn/mean", "/bn/var")))
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert table_trainable == torchvision_fid == total - stats == 23_850_960
    assert table_stats == stats and total == 23_885_392
    assert len(shapes) == 5 * 94 + 2


def test_converted_network_matches_numpy_reference(tmp_path):
    convert = _load_converter()
    sd = fake_torch_state_dict(seed=0)
    flat = convert.torch_to_jgen(sd)
    assert not any("Aux" in k or "num_batches" in k for k in flat)
    np.testing.assert_array_equal(flat["Mixed_6b/branch7x7_2/conv/kernel"],
                                  sd["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
    path = str(tmp_path / "converted.npz")
    inception.save_weights(path, flat)  # checks every key and shape against the Flax module
    ex = inception.inception_extractor(path)

    rng = np.random.default_rng(1)
    gray = rng.uniform(size=(2, 21, 17, 1)).astype(np.float32)  # non-square, grayscale, upsampled
    x = jnp.asarray(gray)
    feats, probs = np.asarray(ex.features(x)), np.asarray(ex.probs(x))
    ref_feats, ref_probs = np_forward(sd, gray)
    assert feats.shape == (2, 2048) and probs.shape == (2, NUM_CLASSES)
    np.testing.assert_allclose(feats, ref_feats, rtol=2e-3, atol=2e-3 * np.abs(ref_feats).max())
    np.testing.assert_allclose(probs, ref_probs, atol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probs - ref_probs).max() < 0.1 * np.abs(ref_probs[0] - ref_probs[1]).max()  # inputs distinguished
    # grayscale is the same image repeated to RGB (same network compile: batch 2, 299 x 299)
    np.testing.assert_allclose(ex.features(np.repeat(gray, 3, axis=-1)), feats, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ex.features(2 * gray - 1)


def test_resize_matches_torch_bilinear_up_and_down():
    rng = np.random.default_rng(2)
    for shape in ((1, 28, 40, 3), (1, 420, 331, 3)):
        x = rng.uniform(size=shape).astype(np.float32)
        ours = np.asarray(inception.fid_preprocess(x))
        ref = (2 * torch_bilinear(x.transpose(0, 3, 1, 2), 299) - 1).transpose(0, 2, 3, 1)
        np.testing.assert_allclose(ours, ref, atol=3e-4)  # float32 sample positions (~1e-4 here)
        assert np.abs(ours - ref).mean() < 1e-5


def test_random_weights_round_trip(random_file):
    loaded = inception.load_weights(random_file)
    expected = inception.unflatten_weights(inception.random_weights(seed=3))
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(expected)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, expected)
    assert set(loaded) == {"params", "batch_stats"}
    assert set(loaded["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]) == {"mean", "var"}
    assert params_digest(loaded) == params_digest(expected)


def _rewrite(src, dst, edit):
    with np.load(src) as data:
        flat = {k: data[k] for k in data.files}
    edit(flat)
    with open(dst, "wb") as f:
        np.savez(f, **flat)


def test_bad_files_give_errors_naming_the_key(random_file, tmp_path):
    bad = str(tmp_path / "bad.npz")
    _rewrite(random_file, bad, lambda f: f.pop("Mixed_6c/branch7x7_2/conv/kernel"))
    with pytest.raises(KeyError, match="Mixed_6c/branch7x7_2/conv/kernel"):
        inception.load_weights(bad)
    _rewrite(random_file, bad, lambda f: f.update({"Mixed_7b/branch_pool/bn/var": np.ones(191, np.float32)}))
    with pytest.raises(ValueError, match=r"Mixed_7b/branch_pool/bn/var.*\(191,\).*\(192,\)"):
        inception.load_weights(bad)
    _rewrite(random_file, bad, lambda f: f.update({"Mixed_5b/extra/kernel": np.ones(3, np.float32)}))
    with pytest.raises(KeyError, match="unexpected key 'Mixed_5b/extra/kernel'"):
        inception.load_weights(bad)
    with open(bad, "wb") as f:
        f.write(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt"):
        inception.load_weights(bad)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
        inception.load_weights(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="unexpected state_dict key 'blocks.0.0.conv.weight'"):
        _load_converter().torch_to_jgen({"blocks.0.0.conv.weight": np.zeros((32, 3, 3, 3))})


def test_identity_changes_when_one_weight_changes(random_file, tmp_path):
    a = inception.inception_extractor(random_file)
    assert a.identity == inception.inception_extractor(random_file).identity
    assert a.identity.startswith("inception-v3-fid:") and a.image_shape is None
    changed = str(tmp_path / "changed.npz")

    def bump(flat):
        flat["Mixed_6d/branch7x7dbl_3/bn/mean"][17] += 1e-3

    _rewrite(random_file, changed, bump)
    assert inception.inception_extractor(changed).identity != a.identity
