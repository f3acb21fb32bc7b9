"""Inpainting masks of operators/inpaint.py: box, random, strokes, mask files and tensors."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_cdt, label

import operators
from operators import OperatorError
from operators.inpaint import HUGE_HOLE_RADIUS, LARGE_HOLE_RADIUS, Inpainting, hole_radius, missing_fraction


def rand(shape, seed=0, batch=2):
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def missing_rows_cols(op) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the missing pixels of a one-channel mask."""
    return torch.nonzero(~op.kept[0, 0], as_tuple=True)


# ---- box ---------------------------------------------------------------------------------------------
def test_box_follows_the_dps_protocol_on_256():
    tops, lefts = set(), set()
    for seed in range(12):
        op = operators.build(f"box:128:seed={seed}", (1, 256, 256))
        rows, cols = missing_rows_cols(op)
        assert 16 <= op.top <= 112 and 16 <= op.left <= 112
        assert rows.min() == op.top and rows.max() == op.top + 127
        assert cols.min() == op.left and cols.max() == op.left + 127
        assert rows.numel() == 128 * 128
        tops.add(op.top)
        lefts.add(op.left)
    assert len(tops) > 6 and len(lefts) > 6, "positions should vary with the seed"


def test_box_is_seeded_and_spec_records_the_seed():
    shape = (3, 37, 53)
    a, b = operators.build("box:16", shape), operators.build("box:16:seed=0", shape)
    assert a.spec == "box:16:seed=0" and torch.equal(a.mask, b.mask)
    c = operators.build("box:16:seed=5", shape)
    d = operators.build(c.spec, shape)
    assert c.spec == "box:16:seed=5" and torch.equal(c.mask, d.mask)
    assert not all(torch.equal(operators.build(f"box:16:seed={s}", shape).mask, a.mask) for s in range(1, 6))


def test_box_small_image_falls_back_to_no_margin_per_axis():
    # 37 rows: 37 - 16 - 16 < 16, so rows use [0, 21]; 53 columns: [16, 21] keeps the margin.
    for seed in range(20):
        op = operators.build(f"box:16:seed={seed}", (1, 37, 53))
        assert 0 <= op.top <= 21 and 16 <= op.left <= 21


def test_box_rectangle_and_explicit_position():
    op = operators.build("box:4:6:top=2:left=3", (2, 10, 12))
    assert op.spec == "box:4:6:top=2:left=3"
    expected = torch.ones(10, 12, dtype=torch.bool)
    expected[2:6, 3:9] = False
    assert torch.equal(op.kept[0], expected.expand(2, -1, -1))
    assert op.mask.shape == (1, 1, 10, 12)
    assert float(missing_fraction(op)) == pytest.approx(24 / 120)
    # The whole image is a valid box.
    assert bool((~operators.build("box:10:12", (1, 10, 12)).kept).all())


@pytest.mark.parametrize("spec, message", [
    ("box:40", "larger than the image 37x53"),
    ("box:16:60", "larger than the image"),
    ("box:16:top=30:left=0", "does not fit"),
    ("box:16:top=3", "both top= and left="),
    ("box:16:top=3:left=4:seed=2", "seed= has no effect"),
    ("box:0", "at least 1"),
    ("box:abc", "integer"),
    ("box", "SIZE"),
    ("box:16:color=red", "unknown argument"),
    ("box:16:seed=-1", "non-negative"),
])
def test_box_bad_parameters(spec, message):
    with pytest.raises(OperatorError, match=message):
        operators.build(spec, (3, 37, 53))


# ---- random ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.7, 0.99])
def test_random_removes_exactly_the_fraction(fraction):
    shape = (3, 37, 53)
    expected = round(fraction * 37 * 53)
    shared = operators.build(f"random:{fraction}:seed=4", shape)
    assert shared.mask.shape == (1, 1, 37, 53)
    assert int((~shared.kept[0, 0]).sum()) == expected
    per = operators.build(f"random:{fraction}:channels=per:seed=4", shape)
    assert per.mask.shape[1] in (1, 3)
    assert [int((~per.kept[0, k]).sum()) for k in range(3)] == [expected] * 3
    assert torch.allclose(missing_fraction(per), torch.tensor([expected / (37 * 53)], dtype=torch.float64))


def test_random_per_channel_differs_and_is_seeded():
    shape = (3, 32, 32)
    per = operators.build("random:0.5:channels=per:seed=1", shape)
    assert per.mask.shape == (1, 3, 32, 32)
    assert not torch.equal(per.kept[0, 0], per.kept[0, 1])
    assert per.spec == "random:0.5:channels=per:seed=1"
    assert torch.equal(operators.build(per.spec, shape).mask, per.mask)
    default = operators.build("random:0.5", shape)
    assert default.spec == "random:0.5:seed=0"
    assert not torch.equal(default.mask, operators.build("random:0.5:seed=1", shape).mask)


@pytest.mark.parametrize("spec, message", [
    ("random:1.0", r"\[0, 1\)"),
    ("random:-0.1", r"\[0, 1\)"),
    ("random:half", "number"),
    ("random", "fraction"),
    ("random:0.5:channels=all", "shared' or 'per"),
    ("random:0.5:seed=x", "integer"),
])
def test_random_bad_parameters(spec, message):
    with pytest.raises(OperatorError, match=message):
        operators.build(spec, (3, 16, 16))


# ---- strokes -----------------------------------------------------------------------------------------
def test_strokes_are_seeded():
    shape = (3, 64, 64)
    a = operators.build("strokes:seed=3", shape)
    assert a.spec == "strokes:seed=3" and a.mask.shape == (1, 1, 64, 64)
    assert torch.equal(operators.build(a.spec, shape).mask, a.mask)
    assert not torch.equal(operators.build("strokes:seed=4", shape).mask, a.mask)
    b = operators.build("strokes:2:width=5:seed=1", shape)
    assert b.spec == "strokes:2:width=5:seed=1"


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 64, 96)], ids=str)
def test_strokes_missing_fraction_is_sane(shape):
    fractions = torch.cat([missing_fraction(operators.build(f"strokes:seed={s}", shape)) for s in range(10)])
    assert (fractions > 0.05).all() and (fractions < 0.5).all(), fractions
    assert 0.12 < fractions.mean() < 0.4, fractions


def test_stroke_count_and_width_control_the_area():
    shape = (1, 64, 64)
    thin = torch.cat([missing_fraction(operators.build(f"strokes:2:width=2:seed={s}", shape)) for s in range(5)])
    thick = torch.cat([missing_fraction(operators.build(f"strokes:2:width=8:seed={s}", shape)) for s in range(5)])
    assert (thin < thick).all()
    one = torch.cat([missing_fraction(operators.build(f"strokes:1:seed={s}", shape)) for s in range(5)])
    six = torch.cat([missing_fraction(operators.build(f"strokes:6:seed={s}", shape)) for s in range(5)])
    assert one.mean() < six.mean()


@pytest.mark.parametrize("width", [1, 4])
def test_one_stroke_is_one_connected_region(width):
    for seed in range(3):
        missing = ~operators.build(f"strokes:1:width={width}:seed={seed}", (1, 48, 48)).kept[0, 0]
        _, regions = label(missing.numpy(), structure=np.ones((3, 3)))
        assert regions == 1 and 0 < int(missing.sum()) < 0.5 * 48 * 48


@pytest.mark.parametrize("spec, message", [
    ("strokes:0", "at least 1"),
    ("strokes:2:width=0", "at least 1 pixel"),
    ("strokes:2:3", "at most one argument"),
    ("strokes:length=4", "unknown argument"),
])
def test_strokes_bad_parameters(spec, message):
    with pytest.raises(OperatorError, match=message):
        operators.build(spec, (1, 32, 32))


# ---- mask files --------------------------------------------------------------------------------------
def white_box_png(path, h=12, w=16, value=255, dtype=np.uint8):
    pixels = np.zeros((h, w), dtype=dtype)
    pixels[2:5, 3:9] = value
    iio.imwrite(path, pixels)
    expected_missing = torch.zeros(h, w, dtype=torch.bool)
    expected_missing[2:5, 3:9] = True
    return expected_missing


def test_mask_file_white_is_missing_and_invert(tmp_path):
    path = tmp_path / "m.png"
    missing = white_box_png(path)
    op = operators.build(f"mask:{path}", (3, 12, 16))
    assert op.spec == f"mask:{path}" and op.mask.shape == (1, 1, 12, 16)
    assert torch.equal(op.kept[0, 0], ~missing)
    inverted = operators.build(f"mask:{path}:invert=1", (3, 12, 16))
    assert inverted.spec == f"mask:{path}:invert=1"
    assert torch.equal(inverted.kept[0, 0], missing)
    assert torch.equal(operators.build(inverted.spec, (3, 12, 16)).mask, inverted.mask)


def test_mask_file_threshold_is_half_range(tmp_path):
    pixels = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    iio.imwrite(tmp_path / "g.png", pixels)
    op = operators.build(f"mask:{tmp_path / 'g.png'}", (1, 1, 4))
    assert op.kept[0, 0, 0].tolist() == [True, True, False, False]
    # 16-bit grayscale: white above 32767.
    iio.imwrite(tmp_path / "g16.png", np.array([[0, 30000, 40000, 65535]], dtype=np.uint16))
    op16 = operators.build(f"mask:{tmp_path / 'g16.png'}", (1, 1, 4))
    assert op16.kept[0, 0, 0].tolist() == [True, True, False, False]


def test_mask_file_rgb_per_channel_and_any_channel(tmp_path):
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    rgb[1, 2, 0] = 255  # only red
    rgb[3, 4, :] = 255  # all channels
    path = tmp_path / "rgb.png"
    iio.imwrite(path, rgb)
    op = operators.build(f"mask:{path}", (3, 6, 8))
    assert op.mask.shape == (1, 3, 6, 8)
    assert torch.equal(op.kept[0], torch.from_numpy(rgb.transpose(2, 0, 1) <= 127))
    # A grayscale image takes a pixel as missing when any channel is white.
    gray = operators.build(f"mask:{path}", (1, 6, 8))
    assert gray.mask.shape == (1, 1, 6, 8)
    assert torch.equal(~gray.kept[0, 0], torch.from_numpy(rgb.max(axis=2) > 127))
    # RGBA: the alpha channel is ignored; equal RGB channels give a shared mask.
    rgba = np.concatenate([np.repeat(rgb[:, :, 1:2], 3, axis=2), np.full((6, 8, 1), 255, np.uint8)], axis=2)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    shared = operators.build(f"mask:{tmp_path / 'rgba.png'}", (3, 6, 8))
    assert shared.mask.shape == (1, 1, 6, 8)
    assert int((~shared.kept[0, 0]).sum()) == 1 and not bool(shared.kept[0, 0, 3, 4])


def test_mask_file_size_mismatch_names_both_sizes(tmp_path):
    path = tmp_path / "m.png"
    white_box_png(path, h=12, w=16)
    with pytest.raises(OperatorError, match=r"12x16.*image is 20x30"):
        operators.build(f"mask:{path}", (3, 20, 30))


def test_mask_file_unreadable(tmp_path):
    with pytest.raises(OperatorError, match="cannot read mask image"):
        operators.build(f"mask:{tmp_path / 'absent.png'}", (1, 8, 8))
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(OperatorError, match="cannot read mask image"):
        operators.build(f"mask:{garbage}", (1, 8, 8))
    with pytest.raises(OperatorError, match="cannot read mask array"):
        operators.build(f"mask:{tmp_path / 'absent.npy'}", (1, 8, 8))


def test_mask_npy_one_is_missing(tmp_path):
    array = np.zeros((2, 5, 7), dtype=np.uint8)
    array[0, 1, 1] = 1
    array[1, 2, 3] = 1
    np.save(tmp_path / "m.npy", array)
    op = operators.build(f"mask:{tmp_path / 'm.npy'}", (2, 5, 7))
    assert op.mask.shape == (1, 2, 5, 7)
    assert torch.equal(op.kept[0], torch.from_numpy(array == 0))
    np.save(tmp_path / "b.npy", array[0].astype(bool))
    inverted = operators.build(f"mask:{tmp_path / 'b.npy'}:invert=1", (2, 5, 7))
    assert torch.equal(inverted.kept[0, 0], torch.from_numpy(array[0] == 1))
    np.save(tmp_path / "bad.npy", np.full((5, 7), 0.5))
    with pytest.raises(OperatorError, match="0/1"):
        operators.build(f"mask:{tmp_path / 'bad.npy'}", (2, 5, 7))
    with pytest.raises(OperatorError, match=r"\(H, W\) or \(C, H, W\)"):
        operators.build(f"mask:{tmp_path / 'm.npy'}", (3, 5, 7))


@pytest.mark.parametrize("spec, message", [
    ("mask:array", "cannot be rebuilt"),
    ("mask", "needs a file"),
    ("mask:m.png:invert=yes", "invert must be 0 or 1"),
    ("mask:m.png:flip=1", "unknown argument"),
])
def test_mask_bad_specs(spec, message):
    with pytest.raises(OperatorError, match=message):
        operators.build(spec, (1, 8, 8))


# ---- tensors, stacking, pseudo-inverse ---------------------------------------------------------------
def test_from_mask_and_missing_fraction():
    kept = torch.ones(4, 5, dtype=torch.bool)
    kept[1, 2] = kept[3, 0] = False
    op = Inpainting.from_mask(kept, (3, 4, 5))
    assert op.spec == "mask:array" and op.kept.shape == (1, 3, 4, 5)
    assert float(missing_fraction(op)) == pytest.approx(2 / 20)
    per_image = Inpainting.from_mask(torch.stack([kept, ~kept])[:, None].float())
    assert per_image.in_shape == (1, 4, 5) and per_image.batch_size == 2
    assert torch.allclose(missing_fraction(per_image), torch.tensor([0.1, 0.9], dtype=torch.float64))
    kept[0, 0] = False  # the operator holds a copy
    assert bool(op.kept[0, 0, 0, 0])
    with pytest.raises(OperatorError, match="0/1"):
        Inpainting.from_mask(torch.full((4, 5), 0.5))
    with pytest.raises(OperatorError, match="does not fit"):
        Inpainting.from_mask(torch.ones(4, 5), (3, 5, 5))
    with pytest.raises(OperatorError, match="inpainting operator"):
        missing_fraction(operators.build("identity", (1, 4, 5)))


def test_stacking_two_different_masks_per_image():
    shape = (3, 37, 53)
    box, rnd = operators.build("box:16:seed=1", shape), operators.build("random:0.5:channels=per:seed=2", shape)
    stacked = operators.build(f"{box.spec};{rnd.spec}", shape)
    assert stacked.batch_size == 2 and stacked.spec == f"{box.spec};{rnd.spec}"
    assert stacked.mask.shape == (2, 3, 37, 53)  # the shared box mask is expanded to meet the per-channel one
    x = rand(shape)
    y = stacked.A(x)
    assert torch.equal(y[:1], box.double().A(x[:1])) and torch.equal(y[1:], rnd.double().A(x[1:]))
    assert torch.equal(stacked.A_pinv(y), y)
    assert torch.allclose(missing_fraction(stacked), torch.cat([missing_fraction(box), missing_fraction(rnd)]))
    with pytest.raises(OperatorError, match="only inpainting"):
        Inpainting.stack([box, operators.build("identity", shape)])


def test_pinv_keeps_observed_pixels_and_matches_the_dense_pseudo_inverse():
    shape = (2, 4, 5)
    op = operators.build("random:0.4:channels=per:seed=7", shape).double()
    x = rand(shape)
    y = op.A(x)
    restored = op.A_pinv(y)
    kept = op.kept.expand(2, -1, -1, -1)
    assert torch.equal(restored[kept], x[kept]) and bool((restored[~kept] == 0).all())
    dense = torch.diag(op.singular_values()[0])
    assert torch.allclose(restored.flatten(1), y.flatten(1) @ torch.linalg.pinv(dense).T, atol=1e-14)
    assert torch.equal(op.A_adjoint(y), y)


def test_float32_buffer_follows_to_and_casts_on_the_fly():
    op = operators.build("random:0.5:seed=1", (1, 6, 6))
    assert op.mask.dtype == torch.float32
    x = rand((1, 6, 6))
    assert op.A(x).dtype == torch.float64
    assert op.double().mask.dtype == torch.float64


def test_freeform_holes_cover_a_quarter_to_two_fifths_and_rebuild_from_their_spec():
    for shape in ((3, 256, 256), (1, 171, 256), (3, 64, 96)):
        shares = []
        for seed in range(12):
            op = operators.build(f"freeform:seed={seed}", shape)
            shares.append(float(missing_fraction(op)))
            assert torch.equal(operators.build(op.spec, shape).mask, op.mask)
        assert min(shares) >= 0.25 and max(shares) <= 0.40, shares
        assert len(set(shares)) > 6  # the seed decides


def test_box_at_a_given_corner():
    op = operators.build("box:8@5,3", (1, 16, 16))
    assert (op.top, op.left) == (3, 5) and op.spec == "box:8:top=3:left=5"
    assert operators.build("box:8:4@5,3", (1, 16, 16)).box_width == 4
    with pytest.raises(OperatorError, match="SIZE@X,Y"):
        operators.build("box:8@5", (1, 16, 16))
    with pytest.raises(OperatorError, match="does not fit"):
        operators.build("box:8@12,0", (1, 16, 16))


@pytest.mark.parametrize("spec", ["box:33", "box:128:seed=3", "random:0.7:seed=1", "random:0.95:seed=2", "strokes:seed=4",
                                  "freeform:seed=5", "box:9:5@0,0", "random:0:seed=0"])
def test_hole_radius_is_scipys_chessboard_distance_of_the_deepest_missing_pixel(spec):
    op = operators.build(spec, (3, 96, 128) if "128" not in spec else (3, 256, 256))
    missing = (op.mask[0, 0] < 0.5).numpy()
    expected = int(distance_transform_cdt(missing, metric="chessboard").max()) if missing.any() else 0
    assert hole_radius(op) == expected
    assert hole_radius(op, limit=3) == min(expected, 3)


def test_mask_kind_tells_huge_and_large_holes_from_scattered_pixels_and_scratches():
    shape = (3, 256, 256)
    assert operators.build("box:128", shape).kind == "huge"
    assert operators.build(f"box:{2 * HUGE_HOLE_RADIUS - 1}", shape).kind == "huge"
    assert operators.build(f"box:{2 * HUGE_HOLE_RADIUS - 3}", shape).kind == "large"
    assert operators.build("freeform:seed=1", shape).kind == "large"
    assert operators.build(f"box:{2 * LARGE_HOLE_RADIUS - 1}", shape).kind == "large"
    assert operators.build(f"box:{2 * LARGE_HOLE_RADIUS - 3}", shape).kind == "small"
    assert operators.build("random:0.7", shape).kind == operators.build("random:0.9", shape).kind == "scattered"
    assert operators.build("random:0.3", shape).kind == operators.build("strokes:width=6", shape).kind == "small"
    assert Inpainting.from_mask(torch.zeros(1, 1, 8, 8, dtype=torch.bool)).kind == "huge"  # nothing kept at all
    stacked = Inpainting.stack([operators.build("random:0.7", shape), operators.build("box:128", shape)])
    assert stacked.kind == "huge"  # a batch takes its deepest hole's setting
