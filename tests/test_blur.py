"""Blur operators: agreement with scipy / kornia, kernels, boundaries, errors and Wiener deconvolution."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal
import torch

import operators
from operators import OperatorError
from operators.blur import (
    CircularBlur,
    ReflectBlur,
    ValidBlur,
    load_kernel,
    make_kernel,
    motion_kernel,
    wiener_deconvolve,
)

SHAPE = (2, 37, 53)


def image(shape=SHAPE, batch=1, seed=0) -> torch.Tensor:
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def scipy_blur(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> np.ndarray:
    """scipy.ndimage.convolve of every (image, channel) plane."""
    planes = x.numpy()
    out = [[ndi.convolve(p, kernel.numpy(), mode=mode) for p in img] for img in planes]
    return np.asarray(out)


@pytest.mark.parametrize("kernel", ["gaussian:7:1.5", "motion:9:0.7:seed=3", "levin:4"])
def test_circular_is_scipy_wrap(kernel):
    op = operators.build(f"blur:{kernel}:boundary=circular", SHAPE).double()
    x = image()
    assert isinstance(op, CircularBlur)
    np.testing.assert_allclose(op.A(x).numpy(), scipy_blur(x, make_kernel(kernel), "wrap"), atol=1e-12)


@pytest.mark.parametrize("kernel", ["gaussian:5:1.0", "motion:9:0.7:seed=3", "levin:4"])  # levin:4 is 27x27: FFT path
def test_reflect_is_scipy_mirror_not_scipy_reflect(kernel):
    op = operators.build(f"blur:{kernel}:boundary=reflect", SHAPE).double()
    x = image()
    y = op.A(x).numpy()
    assert isinstance(op, ReflectBlur)
    np.testing.assert_allclose(y, scipy_blur(x, make_kernel(kernel), "mirror"), atol=1e-12)
    # scipy's "reflect" repeats the edge pixel: a different model, near the border only.
    assert not np.allclose(y, scipy_blur(x, make_kernel(kernel), "reflect"))


@pytest.mark.parametrize("kernel", ["gaussian:5:1.0", "motion:9:0.7:seed=3", "levin:4"])
def test_valid_is_scipy_signal_valid_convolution(kernel):
    op = operators.build(f"blur:{kernel}:boundary=valid", SHAPE).double()
    x = image()
    k = make_kernel(kernel).numpy()
    expected = np.asarray([[scipy.signal.convolve2d(p, k, mode="valid") for p in img] for img in x.numpy()])
    assert isinstance(op, ValidBlur) and op.out_shape == expected.shape[1:]
    np.testing.assert_allclose(op.A(x).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize(("boundary", "border"), [("reflect", "reflect"), ("circular", "circular")])
def test_kornia_agrees_with_flipped_kernel_correlation(boundary, border):
    kornia_filters = pytest.importorskip("kornia.filters")
    kernel = make_kernel("motion:9:0.8:seed=4")
    op = operators.build(f"blur:motion:9:0.8:seed=4:boundary={boundary}", SHAPE).double()
    x = image(batch=2)
    expected = kornia_filters.filter2d(x, kernel[None], border_type=border, behaviour="conv")
    torch.testing.assert_close(op.A(x), expected, atol=1e-12, rtol=0)
    # kornia's default behaviour is correlation: the same as convolving with the flipped kernel.
    torch.testing.assert_close(op.A(x), kornia_filters.filter2d(x, kernel.flip(-2, -1)[None], border_type=border),
                               atol=1e-12, rtol=0)


def test_delta_kernel_is_the_identity_and_shift_convention(tmp_path):
    x = image()
    delta = np.zeros((5, 5))
    delta[2, 2] = 1.0
    np.save(tmp_path / "delta.npy", delta)
    for boundary in ("circular", "reflect"):
        torch.testing.assert_close(operators.build(f"blur:file={tmp_path}/delta.npy:boundary={boundary}", SHAPE).double().A(x), x)
    # A delta at offset (+1, +2) from the centre moves the image by (+1, +2): true convolution.
    shifted = np.zeros((5, 5))
    shifted[3, 4] = 1.0
    np.save(tmp_path / "shift.npy", shifted)
    y = operators.build(f"blur:file={tmp_path}/shift.npy", SHAPE).double().A(x)
    torch.testing.assert_close(y, torch.roll(x, (1, 2), dims=(-2, -1)))


def test_circular_svd_matches_fft_convolution_float32_and_per_image_kernels():
    ops = [operators.build(f"blur:motion:9:0.5:seed={s}", (1, 32, 33)) for s in (1, 2)]
    stacked = CircularBlur.stack(ops).double()
    x = image((1, 32, 33), batch=2)
    y = stacked.A(x)
    torch.testing.assert_close(y[1:], ops[1].double().A(x[1:]))
    torch.testing.assert_close(stacked.svd_apply(x), y, atol=1e-12, rtol=0)
    assert stacked.singular_values().shape == (2, 32 * 33)
    y32 = ops[0].A(x[:1].float())
    assert y32.dtype == torch.float32 and torch.allclose(y32.double(), ops[0].double().A(x[:1]), atol=1e-5)


def test_kernels_sum_to_one_and_motion_is_reproducible():
    for spec in ("gaussian:61:3.0", "motion:61:0.5", "levin:1", "levin:8"):
        k = make_kernel(spec)
        assert k.dtype == torch.float64 and (k >= 0).all() and abs(k.sum().item() - 1) < 1e-12
    a, b, c = motion_kernel(31, 0.5, seed=7), motion_kernel(31, 0.5, seed=7), motion_kernel(31, 0.5, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    line = motion_kernel(15, 0.0, seed=1)
    assert (line > 1e-3).sum() < 0.3 * line.numel(), "intensity 0 should give a thin straight streak"
    assert torch.equal(make_kernel("motion:31:0.5"), motion_kernel(31, 0.5, seed=0))


def test_levin_kernels_load():
    sizes = [make_kernel(f"levin:{i}").shape for i in range(1, 9)]
    assert sizes == [(19, 19), (17, 17), (15, 15), (27, 27), (13, 13), (21, 21), (23, 23), (23, 23)]


def test_spec_round_trips_and_is_canonical():
    op = operators.build("blur:gaussian:61:3:boundary=reflect", (1, 64, 64))
    assert op.spec == "blur:gaussian:61:3.0:boundary=reflect"
    assert operators.build("blur:motion:9:0.5", SHAPE).spec == "blur:motion:9:0.5:seed=0:boundary=circular"
    assert operators.build(op.spec, (1, 64, 64)).spec == op.spec


def test_file_kernels_npy_npz_png(tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    kernel = make_kernel("motion:9:0.6:seed=5").numpy()
    np.save(tmp_path / "k.npy", 3 * kernel)
    np.savez(tmp_path / "ks.npz", first=kernel, second=kernel.T)
    png = np.round(255 * kernel / kernel.max()).astype(np.uint8)
    imageio.imwrite(tmp_path / "k.png", png)
    torch.testing.assert_close(load_kernel(tmp_path / "k.npy"), torch.from_numpy(kernel))
    torch.testing.assert_close(load_kernel(tmp_path / "ks.npz", key="second"), torch.from_numpy(kernel.T.copy()))
    torch.testing.assert_close(load_kernel(tmp_path / "k.png"), torch.from_numpy(png / png.sum()))
    op = operators.build(f"blur:kernel:{tmp_path}/ks.npz:key=first:boundary=valid", SHAPE)
    assert op.spec == f"blur:file={tmp_path}/ks.npz:key=first:boundary=valid"
    assert operators.build(op.spec, SHAPE).spec == op.spec
    with pytest.raises(OperatorError, match="key=NAME"):
        load_kernel(tmp_path / "ks.npz")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blur:gaussian:61:3.0", "kernel 61x61 is larger than the image 37x53"),
        ("blur:gaussian:7:1.5:boundary=zero", "unknown blur boundary 'zero'"),
        ("blur:gaussian:6:1.5", "odd"),
        ("blur:gaussian:7:-1", "std must be positive"),
        ("blur:gaussian:7", "SIZE:STD"),
        ("blur:motion:9:1.5", r"intensity must be in \[0, 1\]"),
        ("blur:motion:9:0.5:sead=1", "unknown blur option"),
        ("blur:levin:9", "1..8"),
        ("blur:box:5", "unknown blur kernel 'box'"),
        ("blur:file=/nonexistent/kernel.npy", "kernel file not found"),
        ("blur", "needs a kernel"),
    ],
)
def test_bad_specs_raise_operator_error(spec, message):
    with pytest.raises(OperatorError, match=message):
        operators.build(spec, SHAPE)


def test_negative_and_zero_kernels_are_refused(tmp_path):
    np.save(tmp_path / "neg.npy", np.array([[0.5, -0.1], [0.3, 0.3]]))
    np.save(tmp_path / "zero.npy", np.zeros((3, 3)))
    with pytest.raises(OperatorError, match="negative"):
        operators.build(f"blur:file={tmp_path}/neg.npy", SHAPE)
    with pytest.raises(OperatorError, match="all zero"):
        load_kernel(tmp_path / "zero.npy")


def test_wiener_recovers_a_noiselessly_blurred_image():
    skimage_data = pytest.importorskip("skimage.data")
    from skimage.transform import resize

    truth = torch.from_numpy(resize(skimage_data.camera() / 127.5 - 1.0, (32, 32), anti_aliasing=True))[None, None]
    op = operators.build("blur:gaussian:5:1.0", (1, 32, 32)).double()
    y = op.A(truth)
    x = wiener_deconvolve(y, op, 1e-6)
    blurred_err = (y - truth).norm() / truth.norm()
    err = (x - truth).norm() / truth.norm()
    assert err < 0.01 and err < 0.05 * blurred_err, (err, blurred_err)
    # Same regularised least squares as the operator's closed-form normal-equation solve.
    torch.testing.assert_close(x, op.solve_normal(op.A_adjoint(y), 1e-6))
    with pytest.raises(OperatorError, match="balance must be positive"):
        wiener_deconvolve(y, op, 0.0)


def test_wiener_for_reflect_boundaries_solves_the_same_problem():
    op = operators.build("blur:gaussian:3:0.5:boundary=reflect", (1, 32, 32)).double()
    truth = image((1, 32, 32))
    x = wiener_deconvolve(op.A(truth), op, 1e-3)
    rhs = op.A_adjoint(op.A(truth))
    residual = op.A_adjoint(op.A(x)) + 1e-3 * x - rhs
    assert residual.norm() < 1e-5 * rhs.norm()
