"""Parallel-beam CT (operators/ct.py) against scikit-image's radon / iradon, and its spec handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

import operators
from operators import LinearOperator, OperatorError, inner
from operators.ct import ParallelBeamCT, diagonal_length, fbp, ramp_filter


def blob(height: int, width: int) -> np.ndarray:
    """A smooth, off-centre Gaussian blob that vanishes at the image border."""
    ii, jj = np.mgrid[:height, :width].astype(np.float64)
    return np.exp(-((ii - 0.45 * height) ** 2 + (jj - 0.55 * width) ** 2) / (2 * (0.13 * min(height, width)) ** 2))


def phantom(n: int) -> np.ndarray:
    return resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)


def as_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image))[None, None]


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def rand(shape, seed=0, batch=2) -> torch.Tensor:
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    "image,spec,theta",
    [
        (phantom(64), "ct:30", np.linspace(0, 180, 30, endpoint=False)),
        (blob(37, 53), "ct:12:start=7.5", np.linspace(7.5, 187.5, 12, endpoint=False)),
        (blob(53, 37), "ct:10:arc=120:start=-30", np.linspace(-30, 90, 10, endpoint=False)),
        (blob(32, 32), "ct:7:arc=360", np.linspace(0, 360, 7, endpoint=False)),
    ],
    ids=["phantom64", "blob37x53", "blob53x37-limited", "blob32-full-turn"],
)
def test_sinogram_matches_skimage_radon(image, spec, theta):
    op = operators.build(spec, (1, *image.shape)).double()
    ours = op.A(as_batch(image))[0, 0].numpy()
    ref = radon(image, theta, circle=False)  # (N, ANGLES): our layout transposed
    assert ours.shape == ref.T.shape == (len(theta), diagonal_length(*image.shape))
    # Same geometry and the same bilinear interpolation: only the float32 grid rounds (~1e-7).
    assert rel(ours, ref.T) < 1e-6


def test_default_detectors_follow_the_diagonal():
    assert diagonal_length(256, 256) == 363  # the ct60 protocol's 363 bins
    assert diagonal_length(37, 53) == 75
    op = operators.build("ct:1", (1, 256, 256))
    assert op.out_shape == (1, 1, 363) and op.samples == 363 and op.spec == "ct:1"


def test_layout_angle_zero_sums_columns_and_ninety_degrees_sums_rows():
    x = rand((2, 9, 13))
    op = operators.build("ct:2", (2, 9, 13)).double()  # angles 0° and 90°
    y = op.A(x)
    assert y.shape == (2, 2, 2, op.detectors)
    centre = op.detectors // 2
    # θ = 0: bin N//2 + t integrates column W//2 + t.
    assert torch.allclose(y[:, :, 0, centre - 6 : centre + 7], x.sum(dim=2), atol=1e-5)
    # θ = 90°: bin N//2 + t integrates row H//2 - t (rows point down: the rays turn anticlockwise).
    assert torch.allclose(y[:, :, 1, centre - 4 : centre + 5], x.sum(dim=3).flip(-1), atol=1e-5)


def test_detectors_option_keeps_the_central_bins():
    x = rand((1, 37, 53))
    full = operators.build("ct:5", (1, 37, 53)).double()
    narrow = operators.build("ct:5:detectors=40", (1, 37, 53)).double()
    wide = operators.build("ct:5:detectors=81", (1, 37, 53)).double()
    first = full.detectors // 2 - 40 // 2
    assert narrow.out_shape == (1, 5, 40) and wide.out_shape == (1, 5, 81)
    assert torch.allclose(narrow.A(x), full.A(x)[..., first : first + 40], atol=1e-6)
    # Bins beyond the diagonal see nothing.
    y = wide.A(x)
    assert torch.allclose(y[..., 3:-3], full.A(x), atol=1e-6) and y[..., :3].abs().max() < 1e-6


def test_limited_angle_arc_is_a_subset_of_the_full_arc():
    x = rand((3, 32, 32))
    full = operators.build("ct:16", (3, 32, 32)).double()  # steps of 11.25°
    assert torch.allclose(operators.build("ct:8:arc=90", (3, 32, 32)).double().A(x), full.A(x)[:, :, :8])
    shifted = operators.build("ct:8:arc=90:start=45", (3, 32, 32)).double()
    assert torch.allclose(shifted.A(x), full.A(x)[:, :, 4:12])
    assert torch.allclose(torch.rad2deg(shifted.angles[0]), 45 + 11.25 * torch.arange(8, dtype=torch.float64))


@pytest.mark.parametrize("filter", ["ramp", "shepp-logan", "cosine"])
def test_fbp_matches_skimage_iradon(filter):
    image = phantom(48)
    theta = np.linspace(0, 180, 45, endpoint=False)
    sinogram = radon(image, theta, circle=False)
    op = operators.build("ct:45", (1, 48, 48)).double()
    ours = fbp(as_batch(sinogram.T), op, filter)[0, 0].numpy()
    ref = iradon(sinogram, theta, output_size=48, filter_name=filter, circle=False)
    assert np.abs(ours - ref).max() < 1e-10


@pytest.mark.parametrize("filter", ["hann", "hamming"])
def test_fbp_windows_are_close_to_iradon(filter):
    # scikit-image's hann/hamming use numpy's (M-1)-point windows; ours are exact functions of frequency.
    image = blob(32, 32)
    theta = np.linspace(0, 180, 30, endpoint=False)
    sinogram = radon(image, theta, circle=False)
    op = operators.build("ct:30", (1, 32, 32)).double()
    ours = fbp(as_batch(sinogram.T), op, filter)[0, 0].numpy()
    ref = iradon(sinogram, theta, output_size=32, filter_name=filter, circle=False)
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_fbp_reconstructs_from_many_angles():
    image = blob(48, 48)
    x = as_batch(image)
    op = operators.build("ct:90", (1, 48, 48)).double()
    assert rel(fbp(op.A(x), op), x) < 0.01  # 0.6 % in practice
    # The phantom's sharp edges leave streaks, as with iradon (≈ 18 %).
    x = as_batch(phantom(48))
    assert rel(fbp(op.A(x), op), x) < 0.25
    # A half-turn arc counts every line once: 360° over twice the angles gives the same image.
    turn = operators.build("ct:180:arc=360", (1, 48, 48)).double()
    assert rel(fbp(turn.A(x), turn), fbp(op.A(x), op)) < 0.02


def test_fbp_of_a_limited_arc_is_worse_but_finite():
    x = as_batch(blob(32, 32))
    full, limited = (operators.build(s, (1, 32, 32)).double() for s in ("ct:60", "ct:40:arc=120"))
    err_full, err_limited = rel(fbp(full.A(x), full), x), rel(fbp(limited.A(x), limited), x)
    assert err_full < 0.02 < err_limited < 1.0


def test_ramp_filter_rises_from_a_small_dc_term_to_about_one():
    response = ramp_filter(64)
    assert response.shape == (33,)
    # DC: 2·Σ h[n] over the circular kernel, lags ±1, ±3, ..., ±31.
    odd = np.arange(1, 32, 2)
    assert response[0].item() == pytest.approx(0.5 - 4 * np.sum(1 / (np.pi * odd) ** 2), abs=1e-12)
    assert response[-1].item() == pytest.approx(0.5 + 4 * np.sum(1 / (np.pi * odd) ** 2), abs=1e-12)
    assert (response[1:] > response[:-1]).all() and 0.99 < response[-1] < 1


def test_adjoint_is_the_transpose_and_equals_autograd():
    op = operators.build("ct:7:arc=150:detectors=50:start=3", (2, 37, 53)).double()
    x = rand((2, 37, 53), seed=1)
    y = torch.randn(op.A(x).shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    back = op.A_adjoint(y)
    assert torch.allclose(inner(op.A(x), y), inner(x, back), rtol=1e-10)
    assert torch.allclose(back, LinearOperator.A_adjoint(op, y), atol=1e-12)
    # A y that needs a graph goes through autograd, so gradients flow through the adjoint too.
    y.requires_grad_(True)
    op.A_adjoint(y).pow(2).sum().backward()
    assert y.grad is not None and torch.allclose(y.grad, 2 * op.A(back), atol=1e-9)


def test_gradients_flow_through_A():
    op = operators.build("ct:6", (3, 21, 17))
    x = torch.rand((2, 3, 21, 17), requires_grad=True)
    op.A(x).sum().backward()
    expected = op.A_adjoint(torch.ones((2, *op.out_shape)))
    assert torch.allclose(x.grad, expected, atol=1e-4)


def test_float32_default_and_bounded_chunks(monkeypatch):
    op = operators.build("ct:9", (2, 24, 24))
    x = rand((2, 24, 24)).float()
    y = op.A(x)
    assert y.dtype == torch.float32 and op.grid.dtype == torch.float32
    # Chunking the angles (here one angle per grid_sample call) changes nothing.
    back = op.A_adjoint(y)
    monkeypatch.setattr("operators.ct.CHUNK_ELEMENTS", 1)
    assert len(op._chunks(4)) == 9
    assert torch.allclose(op.A(x), y, atol=1e-5)
    assert torch.allclose(op.A_adjoint(y), back, atol=1e-4)


def test_stacked_operators_apply_their_own_angles():
    shape = (1, 32, 32)
    ops = [operators.build(s, shape).double() for s in ("ct:4", "ct:4:start=20")]
    stacked = operators.build("ct:4;ct:4:start=20", shape).double()
    assert stacked.batch_size == 2 and stacked.grid.shape[0] == 2
    x = rand(shape, seed=3)
    y = stacked.A(x)
    for b, op in enumerate(ops):
        assert torch.allclose(y[b : b + 1], op.A(x[b : b + 1]))
        assert torch.allclose(stacked.A_adjoint(y)[b : b + 1], op.A_adjoint(y[b : b + 1]))
        assert torch.allclose(fbp(y, stacked)[b : b + 1], fbp(y[b : b + 1], op))
    with pytest.raises(OperatorError, match="stacked for 2 images"):
        stacked.A(rand(shape, batch=3))
    with pytest.raises(OperatorError, match="differ in shape"):
        operators.build("ct:4;ct:5", shape)


def test_construction_is_deterministic_and_specs_are_canonical():
    a, b = (operators.build("ct:6:arc=100.5:detectors=50:start=-12.25", (1, 40, 40)) for _ in range(2))
    assert torch.equal(a.grid, b.grid) and torch.equal(a.angles, b.angles)
    assert a.spec == "ct:6:arc=100.5:detectors=50:start=-12.25"
    assert operators.build("ct:6:start=0:arc=180.0:detectors=57", (1, 40, 40)).spec == "ct:6"
    assert isinstance(a, ParallelBeamCT) and a.num_angles == 6 and a.detectors == 50


@pytest.mark.parametrize(
    "spec,message",
    [
        ("ct", "one positional argument"),
        ("ct:0", "at least 1"),
        ("ct:-3", "at least 1"),
        ("ct:2.5", "must be an integer"),
        ("ct:many", "must be an integer"),
        ("ct:4:6", "one positional argument"),
        ("ct:4:arc=0", r"arc must be in \(0, 360\]"),
        ("ct:4:arc=-90", r"arc must be in \(0, 360\]"),
        ("ct:4:arc=400", r"arc must be in \(0, 360\]"),
        ("ct:4:arc=nan", "arc must be finite"),
        ("ct:4:arc=wide", "arc must be a number"),
        ("ct:4:start=inf", "start must be finite"),
        ("ct:4:detectors=31", "31 detectors are too few for a 32x40 image"),
        ("ct:4:detectors=40.5", "detectors must be an integer"),
        ("ct:4:detectors=0", "too few"),
        ("ct:4:angles=3", "unknown argument"),
        ("ct:1000000", "GiB sampling grid"),
    ],
)
def test_bad_specs_raise_operator_errors(spec, message):
    with pytest.raises(OperatorError, match=message):
        operators.build(spec, (1, 32, 40))


def test_bad_inputs_raise_operator_errors():
    op = operators.build("ct:4", (1, 16, 16))
    with pytest.raises(OperatorError, match="expected images"):
        op.A(torch.zeros(1, 1, 16, 17))
    with pytest.raises(OperatorError, match="expected sinograms"):
        op.A_adjoint(torch.zeros(1, 1, 4, 3))
    with pytest.raises(OperatorError, match="expected sinograms"):
        fbp(torch.zeros(1, 1, 5, op.detectors), op)
    with pytest.raises(OperatorError, match="unknown filter 'butterworth'"):
        fbp(torch.zeros(1, *op.out_shape), op, "butterworth")
    with pytest.raises(OperatorError, match="needs a ct operator"):
        fbp(torch.zeros(1, 1, 16, 16), operators.build("identity", (1, 16, 16)))
