"""jgen.latent on a trained tiny digits VAE (and a conditional one).

References: every expected image is recomputed directly as spec.decode(params, z)
with z built here in numpy; a "spy" decoder that returns the z it is given (as a
1x1 image) checks exactly which latents each function decodes.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from helpers import DIGITS_TINY, REPO_ROOT
from jgen import latent
from jgen.config import apply_overrides, load_config
from jgen.data import gather, get_source
from jgen.train.loop import eval_params, restore_for_inference, train_and_evaluate

ATOL = 1e-5


def _train(tmp_path_factory, name, overrides):
    config = apply_overrides(load_config(os.path.join(REPO_ROOT, DIGITS_TINY)), ["train.eval_every=0", *overrides])
    workdir = str(tmp_path_factory.mktemp(name))
    train_and_evaluate(config, workdir, progress=False)
    run, state, _ = restore_for_inference(workdir)
    # Host copies: the references below run op by op, which is slow on an 8-device mesh.
    return workdir, run.spec, jax.device_get(eval_params(state, run.config))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory, "vae", [])


@pytest.fixture(scope="module")
def trained_cond(tmp_path_factory):
    return _train(tmp_path_factory, "cvae", ["model.conditional=true"])


@pytest.fixture(scope="module")
def test_source():
    return get_source("digits", "test")


def _batch(source, start, n):
    return gather(source, np.arange(start, start + n))


def _z(spec, params, batch):
    # jit only to save op-by-op dispatch time; the composition under test is not involved.
    return np.asarray(jax.jit(spec.encode)(params, batch), np.float64)


def _decode(spec, params, z, labels=None):
    return np.asarray(jax.jit(spec.decode)(params, jnp.asarray(z, jnp.float32), labels))


def _spy(spec):
    """The spec with a decoder that returns [z, label] as a 1x1 "image" [N, 1, 1, D(+1)]."""

    def decode(params, z, labels=None):
        out = z if labels is None else jnp.concatenate([z, jnp.asarray(labels, z.dtype)[:, None]], -1)
        return out[:, None, None, :]

    return spec._replace(decode=decode)


# ---- reconstruct ---------------------------------------------------------------


def test_reconstruct_is_decode_of_encode(trained, test_source):
    _, spec, params = trained
    batch = _batch(test_source, 0, 8)
    out = latent.reconstruct(spec, params, batch)
    assert out.shape == (8, 8, 8, 1)
    np.testing.assert_allclose(np.asarray(out), _decode(spec, params, _z(spec, params, batch)), atol=ATOL)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_reconstruct_compiles_once_per_shape(trained, test_source):
    _, spec, params = trained
    latent.reconstruct(spec, params, _batch(test_source, 0, 4))
    before = latent._reconstruct._cache_size()
    latent.reconstruct(spec, params, _batch(test_source, 4, 4))
    latent.reconstruct(spec, params, _batch(test_source, 8, 4))
    assert latent._reconstruct._cache_size() == before


def test_conditional_reconstruct_uses_the_batch_labels(trained_cond, test_source):
    _, spec, params = trained_cond
    batch = _batch(test_source, 0, 8)
    out = np.asarray(latent.reconstruct(spec, params, batch))
    np.testing.assert_allclose(out, _decode(spec, params, _z(spec, params, batch), batch["label"]), atol=ATOL)
    other = {**batch, "label": (batch["label"] + 1) % 10}
    assert not np.allclose(np.asarray(latent.reconstruct(spec, params, other)), out, atol=1e-3)


def test_conditional_batch_without_labels(trained_cond, test_source):
    _, spec, params = trained_cond
    batch = _batch(test_source, 0, 2)
    del batch["label"]
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=10\).*'label'"):
        latent.reconstruct(spec, params, batch)


def test_batch_must_be_a_dict_with_images(trained):
    _, spec, params = trained
    with pytest.raises(ValueError, match=r"expects a batch dict.*got ndarray"):
        latent.reconstruct(spec, params, np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match=r"expects a batch dict.*got \['label'\]"):
        latent.reconstruct(spec, params, {"label": np.zeros(2, np.int32)})


# ---- interpolate ---------------------------------------------------------------


def test_interpolation_endpoints_and_midpoint(trained, test_source):
    _, spec, params = trained
    a, b = _batch(test_source, 0, 4), _batch(test_source, 4, 4)
    out = np.asarray(latent.interpolate(spec, params, a, b, steps=5))
    assert out.shape == (4, 5, 8, 8, 1)
    za, zb = _z(spec, params, a), _z(spec, params, b)
    np.testing.assert_allclose(out[:, 0], _decode(spec, params, za), atol=ATOL)
    np.testing.assert_allclose(out[:, -1], _decode(spec, params, zb), atol=ATOL)
    np.testing.assert_allclose(out[:, 2], _decode(spec, params, (za + zb) / 2), atol=ATOL)
    # Every step is decoded from (1 - t) z_a + t z_b.
    z = np.asarray(latent.interpolate(_spy(spec), params, a, b, steps=5))[:, :, 0, 0]
    t = np.linspace(0, 1, 5)[None, :, None]
    np.testing.assert_allclose(z, (1 - t) * za[:, None] + t * zb[:, None], atol=1e-5)
    assert latent.interpolate(spec, params, a, b).shape == (4, 8, 8, 8, 1)  # default steps=8


def test_spherical_interpolation(trained, test_source):
    _, spec, params = trained
    a, b = _batch(test_source, 0, 4), _batch(test_source, 4, 4)
    za, zb = _z(spec, params, a), _z(spec, params, b)
    out = np.asarray(latent.interpolate(spec, params, a, b, steps=5, spherical=True))
    np.testing.assert_allclose(out[:, 0], _decode(spec, params, za), atol=ATOL)
    np.testing.assert_allclose(out[:, -1], _decode(spec, params, zb), atol=ATOL)
    # Closed form of the slerp midpoint: (a + b) / (2 cos(omega / 2)).
    cos = np.sum(za * zb, -1) / (np.linalg.norm(za, axis=-1) * np.linalg.norm(zb, axis=-1))
    mid = (za + zb) / (2 * np.cos(np.arccos(cos) / 2))[:, None]
    z = np.asarray(latent.interpolate(_spy(spec), params, a, b, steps=5, spherical=True))[:, :, 0, 0]
    np.testing.assert_allclose(z[:, 2], mid, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[:, 2], _decode(spec, params, mid), atol=1e-4)
    # Equal end points (angle 0) fall back to a constant path, not NaN.
    same = np.asarray(latent.interpolate(spec, params, a, a, steps=3, spherical=True))
    assert np.all(np.isfinite(same))
    np.testing.assert_allclose(same, np.repeat(same[:, :1], 3, axis=1), atol=ATOL)


def test_conditional_interpolation_decodes_with_batch_a_labels(trained_cond, test_source):
    _, spec, params = trained_cond
    a, b = _batch(test_source, 0, 3), _batch(test_source, 3, 3)
    assert np.any(a["label"] != b["label"])
    labels = np.asarray(latent.interpolate(_spy(spec), params, a, b, steps=4))[:, :, 0, 0, -1]
    np.testing.assert_array_equal(labels, np.repeat(a["label"][:, None], 4, axis=1))
    out = np.asarray(latent.interpolate(spec, params, a, b, steps=4))
    np.testing.assert_allclose(out[:, -1], _decode(spec, params, _z(spec, params, b), a["label"]), atol=ATOL)


def test_interpolation_errors(trained, test_source):
    _, spec, params = trained
    a = _batch(test_source, 0, 4)
    with pytest.raises(ValueError, match="same batch size; got 4 and 3"):
        latent.interpolate(spec, params, a, _batch(test_source, 4, 3))
    with pytest.raises(ValueError, match="steps >= 2.*steps=1"):
        latent.interpolate(spec, params, a, a, steps=1)


# ---- traversal -----------------------------------------------------------------


def test_traversal_varies_only_the_chosen_dim(trained, test_source):
    _, spec, params = trained
    batch = _batch(test_source, 0, 8)
    dims, values = [1, 3], np.array([-2.0, 0.0, 2.0])
    out = np.asarray(latent.traversal(spec, params, batch, dims=dims, values=values))
    assert out.shape == (2, 3, 8, 8, 1)
    z0 = _z(spec, params, batch)[0]
    expected_z = np.tile(z0, (2, 3, 1))
    for i, d in enumerate(dims):
        expected_z[i, :, d] = values
    decoded_z = np.asarray(latent.traversal(_spy(spec), params, batch, dims=dims, values=values))[:, :, 0, 0]
    np.testing.assert_allclose(decoded_z, expected_z, atol=1e-6)
    np.testing.assert_allclose(out, _decode(spec, params, expected_z.reshape(6, -1)).reshape(out.shape), atol=ATOL)
    assert not np.allclose(out[0, 0], out[0, -1], atol=1e-3)  # the trained decoder reacts to dim 1


def test_traversal_default_dims_are_the_most_active(trained, test_source):
    _, spec, params = trained
    batch = _batch(test_source, 0, 64)
    variance = np.var(_z(spec, params, batch), axis=0)
    expected = np.argsort(-variance, kind="stable")[:8]  # latent_dim = 4 < 8: all, most active first
    np.testing.assert_array_equal(np.asarray(latent.active_dims(spec, params, batch)), expected)
    z = np.asarray(latent.traversal(_spy(spec), params, batch))[:, :, 0, 0]
    assert z.shape == (spec.latent_dim, 9, spec.latent_dim)
    z0 = _z(spec, params, batch)[0]
    for row, d in zip(z, expected):
        np.testing.assert_allclose(row[:, d], np.linspace(-3, 3, 9), atol=1e-6)
        np.testing.assert_allclose(np.delete(row, d, axis=1), np.tile(np.delete(z0, d), (9, 1)), atol=1e-6)
    assert np.asarray(latent.active_dims(spec, params, batch, num=2)).tolist() == expected[:2].tolist()


def test_traversal_errors(trained, test_source):
    _, spec, params = trained
    batch = _batch(test_source, 0, 4)
    with pytest.raises(ValueError, match=r"dims must lie in \[0, 4\).*got \[0, 4\]"):
        latent.traversal(spec, params, batch, dims=[0, 4])
    with pytest.raises(ValueError, match="dims must be a non-empty 1-D list of ints"):
        latent.traversal(spec, params, batch, dims=[0.5])


# ---- conditional grid ------------------------------------------------------------


def test_conditional_grid(trained_cond):
    _, spec, params = trained_cond
    key = jax.random.PRNGKey(3)
    grid = np.asarray(latent.conditional_grid(spec, params, key, per_class=4))
    assert grid.shape == (10, 4, 8, 8, 1)
    for c in (0, 7):
        np.testing.assert_allclose(grid[c], np.asarray(spec.sample(params, key, 4, jnp.full((4,), c))), atol=ATOL)
    assert not np.allclose(grid[0], grid[7], atol=1e-3)  # the label changes the images


def test_conditional_grid_needs_a_conditional_model(trained):
    _, spec, params = trained
    with pytest.raises(ValueError, match=r"model.conditional=true"):
        latent.conditional_grid(spec, params, jax.random.PRNGKey(0))


# ---- no latent space -------------------------------------------------------------


def test_spec_without_latent_space(trained, test_source):
    _, spec, params = trained
    flow_like = spec._replace(encode=None, decode=None, latent_dim=0)
    batch = _batch(test_source, 0, 2)
    for call in (lambda: latent.reconstruct(flow_like, params, batch),
                 lambda: latent.interpolate(flow_like, params, batch, batch),
                 lambda: latent.traversal(flow_like, params, batch)):
        with pytest.raises(ValueError, match="has no latent space: its ModelSpec provides no encode/decode"):
            call()
    with pytest.raises(ValueError, match=r"model.family='flow' has no latent space"):
        latent.require_latent(flow_like, family="flow")


# ---- PNG writers -----------------------------------------------------------------


def _tiles(path, rows, cols, size=8, scale=8):
    """The PNG read back as [rows, cols, size, size] uint8 tiles (save_image_grid's layout)."""
    img = np.asarray(Image.open(path))
    assert img.shape == ((rows * (size + 1) + 1) * scale, (cols * (size + 1) + 1) * scale)
    small = img[::scale, ::scale]
    return np.stack([np.stack([small[1 + r * (size + 1):1 + r * (size + 1) + size,
                                     1 + c * (size + 1):1 + c * (size + 1) + size] for c in range(cols)])
                     for r in range(rows)])


def test_save_reconstructions_layout(trained, test_source, tmp_path):
    _, spec, params = trained
    batch = _batch(test_source, 0, 8)
    recon = np.asarray(latent.reconstruct(spec, params, batch))
    path = latent.save_reconstructions(str(tmp_path / "sub" / "r.png"), batch["image"] / 255.0, recon)
    tiles = _tiles(path, 2, 8)
    np.testing.assert_array_equal(tiles[0], batch["image"][..., 0])  # originals on top
    np.testing.assert_array_equal(tiles[1], np.round(recon[..., 0] * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        latent.save_reconstructions(str(tmp_path / "x.png"), batch["image"], recon[:4])


def test_save_interpolation_and_grid(trained, test_source, tmp_path):
    _, spec, params = trained
    a, b = _batch(test_source, 0, 3), _batch(test_source, 3, 3)
    paths = np.asarray(latent.interpolate(spec, params, a, b, steps=4))
    tiles = _tiles(latent.save_interpolation(str(tmp_path / "i.png"), paths, start=a["image"], end=b["image"]), 3, 6)
    np.testing.assert_array_equal(tiles[:, 0], a["image"][..., 0])
    np.testing.assert_array_equal(tiles[:, -1], b["image"][..., 0])
    _tiles(latent.save_grid(str(tmp_path / "g.png"), paths), 3, 4)
    with pytest.raises(ValueError, match=r"\[rows, cols, H, W, C\]"):
        latent.save_grid(str(tmp_path / "bad.png"), paths[0])


# ---- latent_command ----------------------------------------------------------------


@pytest.mark.parametrize("what, rows, cols", [("reconstruct", 2, 8), ("interpolate", 8, 10), ("traverse", 4, 9)])
def test_latent_command(trained, tmp_path, what, rows, cols):
    workdir = trained[0]
    out = latent.latent_command(workdir, what, str(tmp_path / f"{what}.png"))
    assert out == str(tmp_path / f"{what}.png")
    _tiles(out, rows, cols)  # traverse: latent_dim = 4 rows


def test_latent_command_classes(trained_cond, tmp_path):
    out = latent.latent_command(trained_cond[0], "classes", str(tmp_path / "c.png"), num=5)
    _tiles(out, 10, 5)


def test_latent_command_label_selects_examples(trained, tmp_path):
    workdir, spec, params = trained
    out = latent.latent_command(workdir, "reconstruct", str(tmp_path / "r3.png"), num=4, label=3)
    config = load_config(os.path.join(REPO_ROOT, DIGITS_TINY))
    batch = latent.load_examples(config, "test", 4, label=3)
    assert batch["label"].tolist() == [3, 3, 3, 3]
    np.testing.assert_array_equal(_tiles(out, 2, 4)[0], batch["image"][..., 0])


def test_latent_command_errors(trained, tmp_path):
    workdir = trained[0]
    with pytest.raises(ValueError, match="Unknown latent command 'traversal'; use one of reconstruct, interpolate"):
        latent.latent_command(workdir, "traversal", str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="must end in .png"):
        latent.latent_command(workdir, "reconstruct", str(tmp_path / "x.jpg"))
    with pytest.raises(ValueError, match="model.conditional=true"):
        latent.latent_command(workdir, "classes", str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="takes no label"):
        latent.latent_command(workdir, "classes", str(tmp_path / "x.png"), label=1)
    with pytest.raises(ValueError, match="No example of class label=11"):
        latent.latent_command(workdir, "reconstruct", str(tmp_path / "x.png"), label=11)
