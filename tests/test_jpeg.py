"""The JPEG operator of operators/jpeg.py against libjpeg-turbo, through Pillow.

Pillow exposes no DCT coefficients, so the exact check decodes the Huffman data of the files
Pillow writes with :func:`operators.jpeg.read_coefficients` and compares integer for integer
with :func:`operators.jpeg.encode` of the same 8-bit image. Decoded pixels can only agree up
to the roundings of libjpeg's integer decoder; those tests assert the bounds measured.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from operators import OperatorError
from operators.jpeg import (
    JPEG,
    ZIGZAG,
    JPEGTables,
    dct_planes,
    decode,
    encode,
    quantisation_projection,
    read_coefficients,
)
from operators.registry import build

torch.set_num_threads(1)

SUBSAMPLINGS = ("gray", "4:4:4", "4:2:2", "4:2:0")


def smooth_image(h: int, w: int, c: int, seed: int = 0) -> torch.Tensor:
    """A smooth random image (1, C, H, W) in [-0.9, 0.9]: bicubic upsampling of coarse noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, c, h // 4 + 2, w // 4 + 2, generator=g, dtype=torch.float64)
    z = torch.nn.functional.interpolate(z, size=(h, w), mode="bicubic", align_corners=False)
    return 0.9 * (z / z.abs().max()).clamp(-1, 1)


def noise_image(h: int, w: int, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, c, h, w, generator=g, dtype=torch.float64) * 2 - 1


def to_u8(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [-1, 1] → (H, W) or (H, W, 3) uint8, rounded as restore.io.to_array does."""
    a = ((x[0].double() + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[2] == 1 else a


def from_u8(a: np.ndarray) -> torch.Tensor:
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[None] / 127.5 - 1


def pillow_jpeg(path, x: torch.Tensor, subsampling: str, **options):
    """Save x with Pillow (libjpeg-turbo) and return the path."""
    extra = {} if subsampling == "gray" else {"subsampling": subsampling}
    Image.fromarray(to_u8(x)).save(path, "JPEG", **extra, **options)
    return path


def channels(subsampling: str) -> int:
    return 1 if subsampling == "gray" else 3


def standard(quality: int, subsampling: str) -> JPEGTables:
    gray = subsampling == "gray"
    return JPEGTables.standard(quality, "4:4:4" if gray else subsampling, gray=gray)


def same_fraction(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum(int((p == q).sum()) for p, q in zip(a, b)) / sum(p.numel() for p in a)


# ---- tables ------------------------------------------------------------------------------------------
def test_pillow_quantization_is_in_natural_order(tmp_path):
    """save(qtables=) and .quantization are both natural order; the DQT segment holds zigzag order."""
    luma, chroma = list(range(1, 65)), list(range(101, 165))
    path = pillow_jpeg(tmp_path / "t.jpg", noise_image(16, 16, 3), "4:2:0", qtables=[luma, chroma])
    with Image.open(path) as im:
        assert list(im.quantization[0]) == luma and list(im.quantization[1]) == chroma
    data = path.read_bytes()
    start = data.index(b"\xff\xdb") + 5  # marker, length, precision/id
    assert list(data[start : start + 64]) == [luma[k] for k in ZIGZAG]
    tables = JPEGTables.from_file(path)
    assert tables.luma.flatten().tolist() == luma and tables.chroma.flatten().tolist() == chroma
    assert tables.luma[0, 1] == 2 and tables.luma[1, 0] == 9  # [i, j]: row i, column j


@pytest.mark.parametrize("quality", [1, 5, 10, 25, 49, 50, 51, 75, 90, 95, 100])
def test_standard_tables_equal_what_pillow_writes(tmp_path, quality):
    path = pillow_jpeg(tmp_path / "q.jpg", noise_image(8, 8, 3), "4:2:0", quality=quality)
    assert JPEGTables.from_file(path) == JPEGTables.standard(quality)


def test_standard_tables_known_values():
    assert JPEGTables.standard(50).luma[0].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]
    assert bool((JPEGTables.standard(100).luma == 1).all()) and bool((JPEGTables.standard(100).chroma == 1).all())
    assert int(JPEGTables.standard(1).luma.max()) == 255  # clamped to baseline
    assert JPEGTables.standard(75, "422") == JPEGTables.standard(75, "4:2:2")


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_from_file_reads_back_the_tables_given_to_pillow(tmp_path, subsampling):
    rng = np.random.default_rng(3)
    luma, chroma = rng.integers(1, 256, 64).tolist(), rng.integers(1, 256, 64).tolist()
    qtables = [luma] if subsampling == "gray" else [luma, chroma]
    path = pillow_jpeg(tmp_path / "t.jpg", noise_image(24, 40, channels(subsampling)), subsampling, qtables=qtables)
    tables = JPEGTables.from_file(path)
    assert tables.gray == (subsampling == "gray")
    assert tables.subsampling == ("4:4:4" if subsampling == "gray" else subsampling)
    assert tables.luma.flatten().tolist() == luma
    assert tables.chroma.flatten().tolist() == (luma if subsampling == "gray" else chroma)


# ---- the exact forward: coefficient for coefficient ------------------------------------------------
CASES = [(24, 40, "noise"), (37, 53, "noise"), (37, 53, "smooth"), (64, 64, "smooth"), (5, 3, "noise")]


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("h,w,kind", CASES)
def test_encode_is_bit_exact_with_libjpeg(tmp_path, subsampling, h, w, kind):
    c = channels(subsampling)
    x = (smooth_image if kind == "smooth" else noise_image)(h, w, c, seed=h + w)
    for quality in (100, 75, 30):
        path = pillow_jpeg(tmp_path / f"{quality}.jpg", x, subsampling, quality=quality)
        tables, stored, size = read_coefficients(path)
        assert size == (h, w) and tables == standard(quality, subsampling)
        ours = encode(x, tables)
        assert [p.shape for p in ours] == [p.shape for p in stored]
        for p, (a, b) in enumerate(zip(ours, stored)):
            assert torch.equal(a, b), f"q{quality} plane {p}: {int((a != b).sum())} of {a.numel()} coefficients differ"


@pytest.mark.parametrize("options", [
    {"optimize": True},
    {"restart_marker_blocks": 3},
    {"qtables": [[3] * 64, list(range(2, 66))]},
    {"qtables": [list(range(200, 264)), [7] * 64]},  # 16-bit tables (an extended-sequential file)
])
def test_encode_is_bit_exact_for_other_encoder_options(tmp_path, options):
    x = noise_image(37, 53, 3, seed=1)
    path = pillow_jpeg(tmp_path / "o.jpg", x, "4:2:0", **options)
    tables, stored, _ = read_coefficients(path)
    assert all(torch.equal(a, b) for a, b in zip(encode(x, tables), stored))


def test_encode_batches_and_float32(tmp_path):
    tables = JPEGTables.standard(60, "4:2:0")
    xs = torch.cat([noise_image(21, 35, 3, seed=s) for s in range(3)])
    batch = encode(xs, tables)
    one = encode(xs[1:2], tables)
    assert all(torch.equal(b[1:2], o) for b, o in zip(batch, one))
    assert all(torch.equal(a, b) for a, b in zip(encode(xs.float(), tables), batch))
    assert all(p.dtype == torch.int32 for p in batch)


# ---- decoded pixels against Pillow's decoder ----------------------------------------------------------
# (subsampling, max abs difference, mean abs difference) in 8-bit levels, as measured on
# these images at qualities 100, 75 and 30 (the worst seen over 3 sizes × 5 qualities ×
# noise / smooth images: gray 1 / 0.025, 4:4:4 2 / 0.41, 4:2:2 3 / 0.48, 4:2:0 2 / 0.45).
DECODE_BOUNDS = [("gray", 1, 0.05), ("4:4:4", 2, 0.45), ("4:2:2", 3, 0.5), ("4:2:0", 2, 0.5)]


@pytest.mark.parametrize("subsampling,max_diff,mean_diff", DECODE_BOUNDS)
@pytest.mark.parametrize("kind", ["smooth", "noise"])
def test_decode_agrees_with_pillow(tmp_path, subsampling, max_diff, mean_diff, kind):
    c = channels(subsampling)
    x = (smooth_image if kind == "smooth" else noise_image)(37, 53, c, seed=7)
    for quality in (100, 75, 30):
        path = pillow_jpeg(tmp_path / "d.jpg", x, subsampling, quality=quality)
        with Image.open(path) as im:
            theirs = from_u8(np.asarray(im))
        tables, coefficients, size = read_coefficients(path)
        ours = decode(coefficients, tables, size, torch.float64)
        diff = ((ours - theirs) * 127.5).round().abs()
        assert float(diff.max()) <= max_diff and float(diff.mean()) < mean_diff, (quality, float(diff.max()), float(diff.mean()))


@pytest.mark.parametrize("subsampling,floor", [("gray", 0.999), ("4:4:4", 0.999), ("4:2:2", 0.98), ("4:2:0", 0.98)])
def test_reencoding_pillows_decoding_is_almost_a_fixed_point(tmp_path, subsampling, floor):
    """encode(Pillow's decoding of a JPEG) reproduces its coefficients: measured 1.0000 (gray, 4:4:4), 0.992 (4:2:x)."""
    x = smooth_image(64, 64, channels(subsampling), seed=2)
    path = pillow_jpeg(tmp_path / "f.jpg", x, subsampling, quality=75)
    tables, stored, _ = read_coefficients(path)
    with Image.open(path) as im:
        decoded = from_u8(np.asarray(im))
    assert same_fraction(encode(decoded, tables), stored) >= floor


# ---- the operator -----------------------------------------------------------------------------------
def test_operator_spec_round_trip_and_layout():
    op = build("jpeg:quality=50:subsampling=422", (3, 37, 53))
    assert isinstance(op, JPEG) and op.spec == "jpeg:quality=50:subsampling=422" and not op.linear
    assert op.blocks == [(5, 7), (5, 4), (5, 4)]
    assert build(op.spec, (3, 37, 53)).spec == op.spec
    assert build("jpeg:quality=50", (1, 9, 9)).spec == "jpeg:quality=50"  # gray: no subsampling
    assert build("jpeg:quality=50", (3, 9, 9)).spec == "jpeg:quality=50:subsampling=420"
    assert JPEG(JPEGTables.standard(33, "444"), (3, 8, 8)).spec == "jpeg:quality=33:subsampling=444"
    assert JPEG(JPEGTables([2] * 64, [3] * 64, "444"), (3, 8, 8)).spec == "jpeg:tables"

    x = noise_image(37, 53, 3).repeat(2, 1, 1, 1)
    y = op.A_exact(x)
    assert y.shape == (2, 64 * (35 + 2 * 20))
    coefficients = op.coefficients(y)
    assert all(torch.equal(a, b) for a, b in zip(coefficients, encode(x, op.tables)))
    assert torch.equal(op.measurement(coefficients, torch.float64), y)
    assert torch.allclose(op.pinv(y), decode(coefficients, op.tables, (37, 53), torch.float64))


def test_operator_from_file_spec_and_jpeg_file(tmp_path):
    x = smooth_image(24, 40, 3)
    path = pillow_jpeg(tmp_path / "in.jpg", x, "4:2:2", quality=60)
    op = build(f"jpeg:file={path}", (3, 24, 40))
    assert op.spec == f"jpeg:file={path}" and op.tables == JPEGTables.standard(60, "4:2:2")
    op2, y = JPEG.from_jpeg_file(path, torch.float64)
    assert op2.in_shape == (3, 24, 40)
    assert torch.equal(y, op.A_exact(x))  # the file's coefficients are the exact measurement of x


def test_stacked_operators_use_per_image_tables():
    stacked = build("jpeg:quality=50:subsampling=420;jpeg:quality=10:subsampling=420", (3, 20, 20))
    x = torch.cat([noise_image(20, 20, 3, seed=1), noise_image(20, 20, 3, seed=2)])
    first = build("jpeg:quality=50:subsampling=420", (3, 20, 20)).A_exact(x[:1])
    second = build("jpeg:quality=10:subsampling=420", (3, 20, 20)).A_exact(x[1:])
    assert torch.equal(stacked.A_exact(x), torch.cat([first, second]))
    with pytest.raises(OperatorError, match="subsampling"):
        build("jpeg:quality=50:subsampling=420;jpeg:quality=50:subsampling=444", (3, 20, 20))


@pytest.mark.parametrize("subsampling", ["gray", "4:2:0"])
def test_straight_through_gradient_is_finite_and_descends(subsampling):
    c = channels(subsampling)
    op = JPEG(standard(50, subsampling), (c, 37, 53))
    y = op.A_exact(smooth_image(37, 53, c, seed=4))
    x = (smooth_image(37, 53, c, seed=4) + 0.3 * noise_image(37, 53, c, seed=5)).requires_grad_(True)
    value = op.A(x)
    assert torch.equal(value.detach(), op.A_exact(x))  # the value is the exact measurement
    (grad,) = torch.autograd.grad(((value - y) ** 2).sum(), x)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0
    # One gradient step. JᵀJ = 127.5² · (how often the padding repeats a pixel: up to 16 in a
    # corner), so 0.05 / 127.5² is a tenth of a Newton step inside and stable at the corners.
    before = float(((op.A_exact(x) - y) ** 2).sum())
    stepped = x.detach() - 0.05 / 127.5**2 * grad
    after = float(((op.A_exact(stepped) - y) ** 2).sum())
    assert after < 0.85 * before, (before, after)  # measured 0.62 (gray), 0.75 (4:2:0)


# ---- projection onto the quantisation constraint set ------------------------------------------------
def bin_violation(x: torch.Tensor, coefficients, tables: JPEGTables) -> float:
    """The largest distance (DCT scale) of a coefficient of x outside its bin [(q - ½)Q, (q + ½)Q]."""
    worst = 0.0
    for c, q, table in zip(dct_planes(x, tables), coefficients, tables.quant()):
        lo, hi = (q - 0.5) * table, (q + 0.5) * table
        worst = max(worst, float(torch.maximum(lo - c, c - hi).max()))
    return worst


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("size", [(64, 64), (37, 53)])
def test_projection_lands_in_the_bins_and_is_idempotent(subsampling, size):
    c = channels(subsampling)
    tables = standard(75, subsampling)
    truth = smooth_image(*size, c, seed=1)
    coefficients = encode(truth, tables)
    start = torch.cat([truth + 0.2 * noise_image(*size, c, seed=s) for s in (8, 9)])  # batch of 2
    batch = [q.expand(2, -1, -1, -1, -1) for q in coefficients]
    projected, moved = quantisation_projection(start, batch, tables)
    assert moved.shape == (2,) and bool((moved > 0).all())
    assert bin_violation(projected, batch, tables) <= 2e-3  # ADMM's tolerance (1e-3) on edge MCUs
    again, moved_again = quantisation_projection(projected, batch, tables)
    if size == (64, 64):  # whole MCUs: one exact step
        assert bin_violation(projected, batch, tables) <= 1e-9
        assert int(moved_again.sum()) == 0 and float((again - projected).abs().max()) <= 1e-12
    else:
        assert float((again - projected).abs().max()) <= 1e-4
    assert float((projected - start).norm()) < float((truth - start).norm())  # nearer than the truth


def test_projection_reencodes_to_the_coefficients():
    """Re-encoding is exact up to 8-bit rounding etc.

    Measured (4:2:0, q75): 0.891 of the coefficients without margin, 0.997 with 0.1, 1.0 with 0.2.
    """
    tables = JPEGTables.standard(75, "4:2:0")
    truth = smooth_image(64, 64, 3, seed=1)
    coefficients = encode(truth, tables)
    start = truth + 0.2 * noise_image(64, 64, 3, seed=8)
    plain, _ = quantisation_projection(start, coefficients, tables)
    kept, _ = quantisation_projection(start, coefficients, tables, margin=0.2)
    assert same_fraction(encode(plain, tables), coefficients) > 0.85
    assert same_fraction(encode(kept, tables), coefficients) > 0.999


# ---- errors -----------------------------------------------------------------------------------------
def test_progressive_cmyk_png_and_arithmetic_files_are_refused(tmp_path):
    x = noise_image(16, 24, 3)
    progressive = pillow_jpeg(tmp_path / "p.jpg", x, "4:2:0", progressive=True)
    with pytest.raises(OperatorError, match="progressive"):
        JPEGTables.from_file(progressive)
    cmyk = tmp_path / "c.jpg"
    Image.fromarray(to_u8(x)).convert("CMYK").save(cmyk, "JPEG")
    with pytest.raises(OperatorError, match="CMYK"):
        JPEGTables.from_file(cmyk)
    rgb = tmp_path / "rgb.jpg"
    Image.fromarray(to_u8(x)).save(rgb, "JPEG", keep_rgb=True)
    with pytest.raises(OperatorError, match="without the YCbCr transform"):
        JPEGTables.from_file(rgb)
    png = tmp_path / "x.png"
    Image.fromarray(to_u8(x)).save(png)
    with pytest.raises(OperatorError, match="is a PNG file, not a JPEG"):
        JPEGTables.from_file(png)
    with pytest.raises(OperatorError, match="is a PNG file"):
        build(f"jpeg:file={png}", (3, 16, 24))
    arithmetic = tmp_path / "a.jpg"
    data = bytearray(pillow_jpeg(tmp_path / "b.jpg", x, "4:2:0").read_bytes())
    data[data.index(b"\xff\xc0") + 1] = 0xC9  # SOF9: sequential, arithmetic coding
    arithmetic.write_bytes(bytes(data))
    with pytest.raises(OperatorError, match="arithmetic"):
        JPEGTables.from_file(arithmetic)
    with pytest.raises(OperatorError, match="cannot read"):
        JPEGTables.from_file(tmp_path / "missing.jpg")
    truncated = tmp_path / "t.jpg"
    data[data.index(b"\xff\xc9") + 1] = 0xC0
    scan = data.index(b"\xff\xda")
    truncated.write_bytes(bytes(data[: scan + (len(data) - scan) // 2]))  # the entropy-coded data cut short
    with pytest.raises(OperatorError, match="damaged"):
        read_coefficients(truncated)


@pytest.mark.parametrize("spec,message", [
    ("jpeg:quality=0", "quality must be an integer in 1..100"),
    ("jpeg:quality=101", "quality must be an integer in 1..100"),
    ("jpeg:quality=high", "quality must be an integer"),
    ("jpeg:quality=50:subsampling=4:2:0", "without colons"),
    ("jpeg:quality=50:subsampling=411", "subsampling must be 444, 422 or 420"),
    ("jpeg", "needs quality=Q"),
    ("jpeg:75", "takes quality=Q"),
    ("jpeg:qualty=75", "unknown argument"),
    ("jpeg:quality=50:file=x.jpg", "do not combine"),
])
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(OperatorError, match=message):
        build(spec, (3, 16, 16))


def test_bad_parameters_are_refused():
    with pytest.raises(OperatorError, match="1..100"):
        JPEGTables.standard(0)
    with pytest.raises(OperatorError, match="1..100"):
        JPEGTables.standard(75.5)
    with pytest.raises(OperatorError, match="4:4:4, 4:2:2 or 4:2:0"):
        JPEGTables.standard(75, "4:1:1")
    with pytest.raises(OperatorError, match="64 entries"):
        JPEGTables([1] * 63, [1] * 64)
    with pytest.raises(OperatorError, match="1..65535"):
        JPEGTables([0] * 64, [1] * 64)
    with pytest.raises(OperatorError, match="3 channels"):
        JPEG(JPEGTables.standard(75, gray=True), (3, 8, 8))
    op = JPEG(JPEGTables.standard(75), (3, 16, 16))
    with pytest.raises(OperatorError, match="built for images"):
        op.A(torch.zeros(1, 3, 16, 17))
    with pytest.raises(OperatorError, match="measurements"):
        op.pinv(torch.zeros(1, 5))
    with pytest.raises(OperatorError, match="margin"):
        quantisation_projection(torch.zeros(1, 3, 16, 16), encode(torch.zeros(1, 3, 16, 16), op.tables), op.tables, margin=0.5)
