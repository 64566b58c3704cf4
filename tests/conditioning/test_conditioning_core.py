"""The shared conditioning interface: condition specs, measured image conditions,
the condition encoder, the command-line condition parser, and the procedural
captioned-digits and photo-patch datasets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from jgen.conditioning import (
    ConditionEncoder,
    box_mask,
    check_condition,
    condition_config,
    condition_of,
    inpaint_masks,
    lift,
    measure,
    resolve,
)
from jgen.conditioning.parse import parse_condition
from jgen.data import captioned_digits as cd
from jgen.data import dataset_info, digits, gather, get_source
from jgen.data.photo_patches import _photos, photo_patch_arrays
from jgen.inverse.operators import downsampling, rgb_to_gray


def _config(data, kind, **kw):
    c = ConfigDict({"data": {"name": data}, "model": {"conditional": False, "condition": condition_config()}})
    c.model.condition.kind = kind
    for k, v in kw.items():
        c.model.condition[k] = v
    return c


def _spec(data, kind, **kw):
    return resolve(_config(data, kind, **kw), dataset_info(data))


# ----------------------------------------------------------------------------- specs


def test_resolve_kinds_and_shapes():
    assert resolve(_config("digits", "none"), dataset_info("digits")) is None
    assert _spec("digits", "label").num_classes == 10
    assert _spec("captioned_digits", "tokens").shape == (cd.MAX_TOKENS,)
    assert _spec("captioned_digits", "vector").shape == (13,)
    assert _spec("photo_patches", "image", operator="superres:2").shape == (8, 8, 3)
    assert _spec("photo_patches", "image", operator="colorize").shape == (16, 16, 1)
    s = _spec("photo_patches", "image", operator="inpaint")
    assert s.shape == (16, 16, 4) and s.map_channels == 5
    legacy = _config("digits", "none")
    legacy.model.conditional = True
    assert resolve(legacy, dataset_info("digits")).kind == "label"


@pytest.mark.parametrize("data,kind,kw,match", [
    ("digits", "caption", {}, "not a condition kind"),
    ("digits", "tokens", {}, "captioned dataset"),
    ("digits", "vector", {}, "'vector' feature"),
    ("phantoms16", "label", {}, "labelled dataset"),
    ("digits", "image", {"operator": "colorize"}, "needs RGB"),
    ("digits", "image", {"operator": "superres:3"}, "divide"),
    ("digits", "image", {"operator": "superres"}, "write the factor"),
    ("digits", "image", {"operator": "blur"}, "superres:F"),
    ("digits", "label", {"p_uncond": 1.0}, "p_uncond"),
])
def test_resolve_rejects_what_cannot_work(data, kind, kw, match):
    with pytest.raises(ValueError, match=match):
        resolve(_config(data, kind, **kw), dataset_info(data))


def test_legacy_flag_conflicting_with_kind_is_an_error():
    c = _config("captioned_digits", "tokens")
    c.model.conditional = True
    with pytest.raises(ValueError, match="model.conditional=True means class labels"):
        resolve(c, dataset_info("captioned_digits"))


def test_check_condition_names_the_expected_shape_and_dtype():
    s = _spec("captioned_digits", "tokens")
    with pytest.raises(ValueError, match=r"shape \[4, 10\]"):
        check_condition(s, np.zeros((4, 9), np.int32), 4)
    with pytest.raises(ValueError, match="integer ids"):
        check_condition(s, np.zeros((4, 10), np.float32), 4)
    with pytest.raises(ValueError, match="ids must lie in"):
        check_condition(s, np.full((4, 10), 99, np.int32), 4)
    with pytest.raises(ValueError, match="needs a condition"):
        check_condition(s, None, 4)
    with pytest.raises(ValueError, match="unconditional"):
        check_condition(None, np.zeros(4), 4)


# ----------------------------------------------------------------------------- measured images


def test_measured_conditions_match_the_inverse_operators():
    u = jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 3))
    sr = _spec("photo_patches", "image", operator="superres:2")
    np.testing.assert_allclose(measure(sr, u), downsampling(2, (16, 16, 3)).forward(u), atol=1e-6)
    # the lift is nearest-neighbour upsampling, the operator's pseudo-inverse
    np.testing.assert_allclose(lift(sr, measure(sr, u)), downsampling(2, (16, 16, 3)).pinv(measure(sr, u)), atol=1e-6)
    col = _spec("photo_patches", "image", operator="colorize")
    np.testing.assert_allclose(measure(col, u), rgb_to_gray((16, 16, 3)).forward(u), atol=1e-6)
    inp = _spec("photo_patches", "image", operator="inpaint")
    m = box_mask(16, 16, (2, 3, 9, 12))
    y = measure(inp, u, mask=m[None])
    np.testing.assert_array_equal(y[..., 3:], np.broadcast_to(m, (3, 16, 16, 1)))
    np.testing.assert_array_equal(y[..., :3], u * m[None])


def test_random_holes_have_the_stated_sizes():
    masks = np.asarray(inpaint_masks(jax.random.PRNGKey(1), 500, 16, 20))
    assert set(np.unique(masks)) <= {0.0, 1.0}
    hole = masks[..., 0] == 0
    rows = hole.any(axis=2).sum(axis=1)
    cols = hole.any(axis=1).sum(axis=1)
    assert rows.min() >= 4 and rows.max() <= 8 and cols.min() >= 5 and cols.max() <= 10
    assert (hole.sum(axis=(1, 2)) == rows * cols).all()  # rectangles
    assert len(np.unique(rows)) == 5  # every height in [H/4, H/2] occurs


def test_condition_of_a_batch():
    src = get_source("captioned_digits", "train")
    batch = gather(src, np.arange(4))
    np.testing.assert_array_equal(condition_of(_spec("captioned_digits", "tokens"), batch), batch["tokens"])
    np.testing.assert_array_equal(condition_of(_spec("captioned_digits", "vector"), batch), batch["vector"])
    with pytest.raises(KeyError, match="needs batch\\['tokens'\\]"):
        condition_of(_spec("captioned_digits", "tokens"), {"image": batch["image"]})


# ----------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("kind,data,kw", [("tokens", "captioned_digits", {}), ("vector", "captioned_digits", {}),
                                          ("label", "digits", {}), ("image", "photo_patches", {"operator": "inpaint"})])
def test_dropped_conditions_are_the_null_condition(kind, data, kw):
    spec = _spec(data, kind, **kw)
    src = get_source(data, "train")
    batch = gather(src, np.arange(6))
    c = condition_of(spec, batch, jax.random.PRNGKey(0))
    enc = ConditionEncoder(spec)
    params = enc.init(jax.random.PRNGKey(1), c, None)
    drop = jnp.array([True, False, True, False, False, True])
    vec, cmap = enc.apply(params, c, drop)
    full, full_map = enc.apply(params, c, None)
    null = params["params"]["null"]
    np.testing.assert_array_equal(vec[np.asarray(drop)], np.broadcast_to(null, (3, spec.embed_dim)))
    np.testing.assert_array_equal(vec[~np.asarray(drop)], full[~np.asarray(drop)])
    assert not np.allclose(full[0], null)
    if kind == "image":
        assert cmap.shape == (6, 16, 16, spec.map_channels)
        np.testing.assert_array_equal(cmap[np.asarray(drop)], 0.0)
        np.testing.assert_array_equal(cmap[~np.asarray(drop)], full_map[~np.asarray(drop)])
        np.testing.assert_allclose(full_map[..., :4], 2 * np.asarray(c) - 1, atol=1e-6)
        np.testing.assert_array_equal(full_map[..., 4], 1.0)
    else:
        assert cmap is None


def test_text_encoder_ignores_padding_and_reads_words():
    spec = _spec("captioned_digits", "tokens")
    enc = ConditionEncoder(spec)
    t = cd.tokenize(["a small 3 in the top left", "a small 4 in the top left", "a small 3 in the top left"])
    params = enc.init(jax.random.PRNGKey(0), jnp.asarray(t), None)
    vec, _ = enc.apply(params, jnp.asarray(t), None)
    np.testing.assert_allclose(vec[0], vec[2], rtol=1e-6)
    assert np.abs(vec[0] - vec[1]).max() > 1e-3
    # The same caption, padded into a longer sequence: masked attention and pooling make padding invisible.
    long_spec = spec._replace(max_tokens=14)
    t_long = cd.tokenize(["a small 3 in the top left"], 14)
    pos = params["params"]["text"]["positions"]
    params_long = jax.tree.map(lambda x: x, params)
    params_long["params"]["text"]["positions"] = jnp.concatenate([pos, jnp.zeros((4, pos.shape[1]))])
    v_long, _ = ConditionEncoder(long_spec).apply(params_long, jnp.asarray(t_long), None)
    np.testing.assert_allclose(v_long[0], vec[0], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- datasets


def test_captioned_digits_draw_each_real_digit_where_the_caption_says():
    a = cd.captioned_arrays("test")
    images, labels = digits.digits_arrays("test")
    assert len(a["image"]) == 4 * len(images) == cd.NUM_EXAMPLES["test"]
    caps = cd.detokenize(a["tokens"])
    for i in range(0, 1200, 7):
        src, pos, size, d = i // 4, int(a["position"][i]), int(a["size"][i]), int(a["label"][i])
        assert d == labels[src]
        words = caps[i].split()
        assert str(d) in words or cd._DIGIT_WORDS[d] in words
        assert any(w in words for w in cd._SYNONYMS[cd.SIZES[size]])
        img = a["image"][i, ..., 0].astype(float)
        ys, xs = np.nonzero(img)
        side = ys.max() - ys.min() + 1
        assert side <= cd.SIZE_PIXELS[size]
        cy, cx = np.average(ys, weights=img[ys, xs]), np.average(xs, weights=img[ys, xs])
        ty, tx = cd._CENTRES[cd.POSITIONS[pos]]
        assert abs(cy - ty) < 5 and abs(cx - tx) < 5, (i, cy, cx, ty, tx)
        if size == 0:  # a small digit is the real 8x8 digit, pixel for pixel, somewhere on the canvas
            found = any(np.array_equal(img[r:r + 8, c:c + 8], images[src, ..., 0])
                        for r in range(17) for c in range(17))
            assert found
    np.testing.assert_array_equal(a["vector"][:, :10].argmax(1), a["label"])


def test_tokenize_round_trip_and_errors():
    caps = ["a big seven in the lower right", "the digit 2 , little , center"]
    assert cd.detokenize(cd.tokenize(caps)) == caps
    with pytest.raises(ValueError, match="outside the captioned-digits vocabulary"):
        cd.tokenize(["a huge 3"])


def test_photo_patches_are_real_textured_photo_regions_split_by_region():
    from jgen.data.photo_patches import MIN_TEXTURE, texture

    train, train_labels = photo_patch_arrays("train", 16)
    test, test_labels = photo_patch_arrays("test", 16)
    photos = _photos()
    assert len(train) == 3223 and len(test) == 127
    assert texture(train).min() >= MIN_TEXTURE and texture(test).min() >= MIN_TEXTURE

    def where(patch, photo, cols, stride):
        return [(r, c) for r in range(0, photo.shape[0] - 15, stride) for c in cols
                if np.array_equal(photo[r:r + 16, c:c + 16], patch)]

    for i in (0, 60, 126):  # test patches lie on the stride-16 grid of the right 128 columns
        assert where(test[i], photos[test_labels[i]], range(512, 625, 16), 16)
    for i in (0, 1000, 3222):  # train patches on the stride-8 grid of the left 512 columns
        assert where(train[i], photos[train_labels[i]], range(0, 497, 8), 8)
    train_set = {p.tobytes() for p in train}
    assert not any(p.tobytes() in train_set for p in test)
    info = dataset_info("photo_patches32")
    assert info.image_shape == (32, 32, 3) and info.num_examples["test"] == 33


# ----------------------------------------------------------------------------- the CLI parser


def test_parse_condition_every_kind(tmp_path):
    lab = _spec("digits", "label")
    np.testing.assert_array_equal(parse_condition(lab, "label=1,2", 5), [1, 2, 1, 2, 1])
    np.testing.assert_array_equal(parse_condition(lab, "7", 2), [7, 7])
    tok = _spec("captioned_digits", "tokens")
    out = parse_condition(tok, "text=a small 3 in the top left|a big 4 in the center", 3)
    assert cd.detokenize(out) == ["a small 3 in the top left", "a big 4 in the center", "a small 3 in the top left"]
    vec = _spec("captioned_digits", "vector")
    v = cd.attribute_vector(3, 0, 1)
    assert parse_condition(vec, "vector=" + ",".join(map(str, v)), 2).shape == (2, 13)
    sr = _spec("photo_patches", "image", operator="superres:2")
    low = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "low.npy", low)
    np.testing.assert_array_equal(parse_condition(sr, f"image={tmp_path / 'low.npy'}", 2)[1], low)
    inp = _spec("photo_patches", "image", operator="inpaint")
    full = np.random.default_rng(1).random((16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "full.npy", full)
    y = parse_condition(inp, f"image={tmp_path / 'full.npy'};box=4,4,8,10", 1)
    assert y.shape == (1, 16, 16, 4) and y[0, 5, 5, 3] == 0 and y[0, 0, 0, 3] == 1 and y[0, 5, 5, 0] == 0
    with pytest.raises(ValueError, match="text=CAPTION"):
        parse_condition(tok, "label=3", 1)
    with pytest.raises(ValueError, match=r"reads measurements of shape \[8, 8, 3\]"):
        parse_condition(sr, f"image={tmp_path / 'full.npy'}", 1)
    with pytest.raises(ValueError, match="needs the hidden box"):
        parse_condition(inp, f"image={tmp_path / 'full.npy'}", 1)
    with pytest.raises(ValueError, match="unconditional"):
        parse_condition(None, "3", 1)
