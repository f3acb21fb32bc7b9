"""Super-resolution operators (operators/resize.py) against MATLAB-derived values and reference resamplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.transform import downscale_local_mean, resize

import operators
from operators import OperatorError
from operators.resize import bicubic_upsample, cubic_kernel, resize_matrix

# Odd sizes divisible by the factor, besides the powers of two.
SIZES = [((1, 32, 32), 2), ((1, 32, 32), 4), ((1, 64, 64), 8), ((3, 36, 54), 3), ((3, 36, 54), 6), ((1, 35, 49), 7)]
KINDS = ["bicubic", "avgpool", "nearest"]


def rand(shape, seed=0, batch=2):
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def interior(y: torch.Tensor) -> torch.Tensor:
    """Output pixels whose 4F-tap bicubic support lies inside the image (rows/columns 2 .. n-3)."""
    return y[..., 2:-2, 2:-2]


def test_cubic_kernel_values():
    # Keys' kernel with a = -0.5 at the tap offsets of a 2x downsampling (offsets / 2).
    t = torch.tensor([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5], dtype=torch.float64)
    expected = torch.tensor([1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0], dtype=torch.float64)
    assert torch.equal(cubic_kernel(t), expected)


def test_bicubic_2x_weights_match_matlab_by_hand():
    # MATLAB imresize(x, 1/2): interior taps 0.5*cubic(offset/2), offsets ±0.5..±3.5, normalised (sum 2 -> 1).
    taps = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]
    a = resize_matrix(16, 8)
    assert a.shape == (8, 16)
    assert torch.equal(a[3, 3:11], torch.tensor(taps, dtype=torch.float64))
    assert torch.count_nonzero(a[3]) == 8
    # Row 0: centre u = 0.5, taps -3..-1 mirrored onto pixels 2, 1, 0 (symmetric padding) and folded.
    row0 = [0.43359375 + 0.11328125, 0.43359375 - 0.03515625, 0.11328125 - 0.01171875, -0.03515625, -0.01171875]
    assert torch.equal(a[0, :5], torch.tensor(row0, dtype=torch.float64))
    assert torch.count_nonzero(a[0, 5:]) == 0
    # The last row mirrors the first.
    assert torch.equal(a[-1], a[0].flip(0))


@pytest.mark.parametrize("shape,factor", SIZES, ids=str)
def test_bicubic_interior_matches_pytorch_antialias(shape, factor):
    x = rand(shape)
    y = operators.build(f"bicubic:{factor}", shape).A(x)
    ref = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False)
    assert y.shape == ref.shape == (2, shape[0], shape[1] // factor, shape[2] // factor)
    assert torch.allclose(interior(y), interior(ref), rtol=0, atol=1e-12)
    # At the border PyTorch/PIL renormalise the truncated kernel instead of mirroring, so values differ there.
    assert not torch.allclose(y[..., 0, :], ref[..., 0, :], atol=1e-3)


@pytest.mark.parametrize("shape,factor", SIZES, ids=str)
def test_bicubic_keeps_constants_and_interior_of_ramps(shape, factor):
    op = operators.build(f"bicubic:{factor}", shape)
    constant = torch.full((1, *shape), 0.3, dtype=torch.float64)
    assert torch.allclose(op.A(constant), torch.full_like(op.A(constant), 0.3), atol=1e-14)
    # A linear ramp in x and y is sampled at the output centres (i + 0.5) F - 0.5 by a symmetric normalised kernel.
    rows = torch.arange(shape[1], dtype=torch.float64)[:, None]
    cols = torch.arange(shape[2], dtype=torch.float64)[None, :]
    ramp = (2 * rows - 3 * cols).expand(1, *shape)
    centres_r = (torch.arange(shape[1] // factor, dtype=torch.float64)[:, None] + 0.5) * factor - 0.5
    centres_c = (torch.arange(shape[2] // factor, dtype=torch.float64)[None, :] + 0.5) * factor - 0.5
    expected = (2 * centres_r - 3 * centres_c).expand(1, shape[0], -1, -1)
    assert torch.allclose(interior(op.A(ramp)), interior(expected), atol=1e-10)


@pytest.mark.parametrize("shape,factor", SIZES, ids=str)
def test_avgpool_matches_avg_pool2d_and_skimage(shape, factor):
    x = rand(shape)
    y = operators.build(f"avgpool:{factor}", shape).A(x)
    assert torch.allclose(y, F.avg_pool2d(x, factor), atol=1e-14)
    ref = downscale_local_mean(x.numpy(), (1, 1, factor, factor))
    assert np.allclose(y.numpy(), ref, atol=1e-14)


@pytest.mark.parametrize("shape,factor", SIZES, ids=str)
def test_nearest_picks_the_pixel_under_the_output_centre(shape, factor):
    x = rand(shape)
    y = operators.build(f"nearest:{factor}", shape).A(x)
    # floor((i + 0.5) F) = i F + F // 2, which is also PyTorch's 'nearest-exact'.
    assert torch.equal(y, x[..., factor // 2 :: factor, factor // 2 :: factor])
    assert torch.equal(y, F.interpolate(x, scale_factor=1 / factor, mode="nearest-exact"))
    if factor % 2:  # odd F: the centre pixel, unambiguous, so skimage's order-0 resize agrees
        out = (2, shape[0], shape[1] // factor, shape[2] // factor)
        ref = resize(x.numpy(), out, order=0, anti_aliasing=False, preserve_range=True)
        assert np.array_equal(y.numpy(), ref)


def dense_matrix(op, shape) -> torch.Tensor:
    """The full matrix of op.A, one column per input pixel."""
    n = int(np.prod(shape))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    return op.A(basis).reshape(n, -1).T


@pytest.mark.parametrize("kind", KINDS)
def test_svd_and_pinv_match_the_dense_matrix(kind):
    shape = (2, 6, 9)
    op = operators.build(f"{kind}:3", shape)
    dense = dense_matrix(op, shape)
    assert dense.shape == (2 * 2 * 3, 2 * 6 * 9)
    s = op.singular_values()[0]
    assert torch.allclose(s.sort().values, torch.linalg.svdvals(dense).sort().values, atol=1e-12)
    y = rand((2, 2, 3), seed=1)
    expected = (torch.linalg.pinv(dense) @ y.flatten(1).T).T.reshape(2, *shape)
    assert torch.allclose(op.A_pinv(y), expected, atol=1e-10)
    assert torch.allclose(op.A_adjoint(y).flatten(1), y.flatten(1) @ dense, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape,factor", SIZES[3:], ids=str)
def test_svd_on_odd_sizes(kind, shape, factor):
    op = operators.build(f"{kind}:{factor}", shape)
    x = rand(shape, seed=2)
    coeffs = op.Vt(x)
    n, m = x[0].numel(), op.singular_values().shape[1]
    assert coeffs.shape == (2, n) and m == shape[0] * (shape[1] // factor) * (shape[2] // factor)
    assert torch.allclose(op.V(coeffs), x, atol=1e-12)
    assert torch.allclose(coeffs.norm(dim=1), x.flatten(1).norm(dim=1))
    y = op.A(x)
    # The first m coefficients times the singular values are U^T A x; the rest are the null space.
    assert torch.allclose(op.Ut(y), op.singular_values() * coeffs[:, :m], atol=1e-12)
    null_part = torch.cat([torch.zeros(2, m, dtype=torch.float64), coeffs[:, m:]], dim=1)
    assert op.A(op.V(null_part)).abs().max() < 1e-12
    assert torch.allclose(op.A(op.A_pinv(y)), y, atol=1e-10)
    assert torch.allclose(op.U(op.Ut(y)), y, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_spec_round_trip_and_stacking(kind):
    shape = (3, 36, 54)
    op = operators.build(f"{kind}:6", shape)
    assert op.spec == f"{kind}:6"
    assert torch.equal(operators.build(op.spec, shape).a_h, op.a_h)
    x = rand(shape, seed=3)
    y32 = operators.build(op.spec, shape).to(torch.float32).A(x.float())
    assert y32.dtype == torch.float32
    assert torch.allclose(y32.double(), op.A(x), atol=1e-5)
    # Buffers are cast on the fly when the operator was not converted.
    assert operators.build(op.spec, shape).A(x.float()).dtype == torch.float32
    stacked = operators.build(f"{kind}:6;{kind}:6", shape)
    assert stacked.batch_size == 2 and stacked.a_h.shape[0] == 2
    assert torch.allclose(stacked.A(x), op.A(x))
    assert torch.allclose(stacked.Vt(x), op.Vt(x))


def test_bicubic_upsample_matches_pytorch_interior_and_keeps_constants():
    y = rand((1, 10, 12), seed=4)
    up = bicubic_upsample(y, 4)
    assert up.shape == (2, 1, 40, 48)
    # Upsampling with antialias=True uses PIL's a = -0.5 kernel unstretched (plain interpolate uses a = -0.75).
    ref = F.interpolate(y, scale_factor=4, mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(up[..., 8:-8, 8:-8], ref[..., 8:-8, 8:-8], atol=1e-12)
    ones = torch.ones(1, 3, 5, 7, dtype=torch.float64)
    assert torch.allclose(bicubic_upsample(ones, 3), torch.ones(1, 3, 15, 21, dtype=torch.float64), atol=1e-14)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_upsample_of_a_smooth_function_is_accurate(factor):
    def f(r, c):  # frequencies of 0.4 and 0.3 radians per low-resolution pixel
        return torch.sin(0.4 * r / factor) * torch.cos(0.3 * c / factor)

    high = 24 * factor
    # Low-resolution pixel centres in high-resolution coordinates.
    centres = (torch.arange(24, dtype=torch.float64) + 0.5) * factor - 0.5
    low = f(centres[:, None], centres[None, :])[None, None]
    grid = torch.arange(high, dtype=torch.float64)
    truth = f(grid[:, None], grid[None, :])[None, None]
    up = bicubic_upsample(low, factor)
    margin = 2 * factor
    err = (up - truth)[..., margin:-margin, margin:-margin].abs().max()
    assert err < 2e-3, err
    # Cubic convolution is third-order accurate, much better than the nearest-neighbour baseline.
    nearest = low.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
    assert err < 0.1 * (nearest - truth)[..., margin:-margin, margin:-margin].abs().max()


def test_bicubic_downsample_then_upsample_is_close_for_smooth_images():
    grid = torch.arange(64, dtype=torch.float64)
    x = (torch.sin(0.05 * grid[:, None]) + torch.cos(0.07 * grid[None, :]))[None, None]
    again = bicubic_upsample(operators.build("bicubic:2", (1, 64, 64)).A(x), 2)
    assert (again - x)[..., 8:-8, 8:-8].abs().max() < 5e-3


@pytest.mark.parametrize(
    "spec,shape,match",
    [
        ("bicubic:1", (1, 32, 32), "factor must be an integer in 2..8, got '1'"),
        ("bicubic:9", (1, 72, 72), "got '9'"),
        ("avgpool:2.5", (1, 32, 32), "got '2.5'"),
        ("nearest:two", (1, 32, 32), "got 'two'"),
        ("bicubic", (1, 32, 32), "exactly one argument"),
        ("bicubic:2:4", (1, 32, 32), "exactly one argument"),
        ("bicubic:2:mode=x", (1, 32, 32), "exactly one argument"),
        ("bicubic:4", (3, 37, 53), "37x53 is not divisible by the factor 4"),
        ("nearest:3", (1, 36, 40), "36x40 is not divisible by the factor 3"),
        ("lanczos:4", (1, 32, 32), "unknown operator 'lanczos'"),
    ],
)
def test_bad_parameters(spec, shape, match):
    with pytest.raises(OperatorError, match=match):
        operators.build(spec, shape)


def test_bad_upsample_factor_and_kernel():
    with pytest.raises(OperatorError, match="got '1.5'"):
        bicubic_upsample(torch.zeros(1, 1, 4, 4), 1.5)
    with pytest.raises(OperatorError, match="unknown resampling kernel 'lanczos3'"):
        resize_matrix(8, 4, "lanczos3")
