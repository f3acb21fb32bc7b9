"""MRI operator, masks and k-space helpers of operators/mri.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import operators
from operators import LinearOperator, OperatorError, SVDOperator, inner
from operators.mri import (
    MRI,
    center_columns,
    equispaced_mask,
    fft2c,
    ifft2c,
    poisson_disc_mask,
    radial_mask,
    random_mask,
    read_kspace,
    reflect_frequencies,
    synthetic_maps,
    zero_filled,
)


def rand(shape, seed=0, batch=2, complex_=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *shape), generator=gen, dtype=torch.float64)
    if complex_:
        x = torch.complex(x, torch.randn((batch, *shape), generator=gen, dtype=torch.float64))
    return x


def rand_like(y, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(y.shape, generator=gen, dtype=torch.float64),
                         torch.randn(y.shape, generator=gen, dtype=torch.float64))


# -- the Fourier transform -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (37, 53)], ids=str)
def test_fft_is_orthonormal_centred_and_matches_numpy(size):
    x = rand((1, *size), complex_=True)
    k = fft2c(x)
    assert torch.allclose(k.abs().square().sum(), x.abs().square().sum())
    assert torch.allclose(ifft2c(k), x)
    reference = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    assert np.allclose(k.numpy(), reference)
    # a constant image has all its energy at the centre, index (H // 2, W // 2)
    dc = fft2c(torch.ones(size, dtype=torch.complex128))
    h, w = size
    assert dc[h // 2, w // 2].real == pytest.approx((h * w) ** 0.5)
    assert dc.abs().sum() == pytest.approx((h * w) ** 0.5)


@pytest.mark.parametrize("size", [(8, 8), (7, 10)], ids=str)
def test_spectrum_of_a_real_image_is_hermitian(size):
    k = fft2c(rand((1, *size)).to(torch.complex128))
    assert torch.allclose(reflect_frequencies(k), k.conj())


# -- masks -----------------------------------------------------------------------------------------


def test_equispaced_mask_columns_and_centre():
    width = 368
    mask = equispaced_mask(width, 4, 20)
    expected = set(range(0, width, 4)) | set(range((width - 20 + 1) // 2, (width - 20 + 1) // 2 + 20))
    assert set(torch.nonzero(mask).flatten().tolist()) == expected
    assert mask[width // 2] == 1 and mask[width // 2 - 10 : width // 2 + 10].all()
    # the benchmark's mri4x through the spec: the same columns in every row
    op = operators.build("mri:equispaced:4:center=20", (1, 16, width))
    assert op.spec == "mri:equispaced:4:center=20"
    assert torch.equal(op.mask[0, 0], mask.expand(16, width))
    shifted = equispaced_mask(53, 4, 4, offset=1)
    assert set(torch.nonzero(shifted).flatten().tolist()) == set(range(1, 53, 4)) | {25, 26, 27, 28}


def test_center_columns_follow_fastmri():
    # fastMRI: pad = (num_cols - num_low_freqs + 1) // 2
    assert torch.nonzero(center_columns(10, 3)).flatten().tolist() == [4, 5, 6]
    assert torch.nonzero(center_columns(9, 4)).flatten().tolist() == [3, 4, 5, 6]


def test_random_mask_acceleration_and_seed():
    width, center = 4000, 320
    mask = random_mask(width, 4.0, center, torch.Generator().manual_seed(3))
    assert abs(width / mask.sum().item() - 4.0) < 0.2
    assert center_columns(width, center).le(mask).all()
    assert torch.equal(mask, random_mask(width, 4.0, center, torch.Generator().manual_seed(3)))
    assert not torch.equal(mask, random_mask(width, 4.0, center, torch.Generator().manual_seed(4)))
    op = operators.build("mri:random:4", (1, 8, 64))
    assert op.spec == "mri:random:4:center_fraction=0.08:seed=0"
    assert torch.equal(op.mask, operators.build(op.spec, (1, 8, 64)).mask)


def test_poisson_mask_acceleration_calibration_density_and_seed():
    h, w = 48, 64
    mask = poisson_disc_mask(h, w, 4.0, (6, 6), torch.Generator().manual_seed(0))
    assert abs(h * w / mask.sum().item() - 4.0) < 0.4
    assert mask[h // 2 - 3 : h // 2 + 3, w // 2 - 3 : w // 2 + 3].all()
    rows = (torch.arange(h) - h // 2)[:, None] / (h / 2)
    cols = (torch.arange(w) - w // 2)[None, :] / (w / 2)
    radius = (rows**2 + cols**2).sqrt()
    assert mask[radius < 0.4].mean() > 2 * mask[radius > 0.8].mean()  # variable density
    again = poisson_disc_mask(h, w, 4.0, (6, 6), torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    op = operators.build("mri:poisson:3:seed=2", (1, 32, 32))
    assert op.spec == "mri:poisson:3:center_fraction=0.08:seed=2"
    assert torch.equal(op.mask, operators.build("mri:poisson:3:seed=2", (1, 32, 32)).mask)
    assert not torch.equal(op.mask, operators.build("mri:poisson:3:seed=5", (1, 32, 32)).mask)


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (20, 15)], ids=str)
def test_radial_mask_is_point_symmetric(size):
    h, w = size
    mask = radial_mask(h, w, 8)
    ci, cj = h // 2, w // 2
    assert mask[ci, cj] == 1 and mask[ci].all()  # the line at angle 0 is the centre row
    checked = 0
    for i, j in torch.nonzero(mask).tolist():
        mi, mj = 2 * ci - i, 2 * cj - j
        if 0 <= mi < h and 0 <= mj < w:
            assert mask[mi, mj] == 1
            checked += 1
    assert checked > 0
    assert radial_mask(h, w, 1).sum() == w  # one line: the centre row only


# -- the operator ----------------------------------------------------------------------------------


def test_not_an_svd_operator_and_complex_output():
    op = operators.build("mri:equispaced:4:center=4", (3, 37, 53))
    assert not op.has_svd and not isinstance(op, SVDOperator)
    assert op.A(rand((3, 37, 53)).float()).dtype == torch.complex64
    assert op.A(rand((3, 37, 53))).dtype == torch.complex128
    assert op.A(rand((3, 37, 53))).shape == (2, 3, 37, 53)
    assert op.A_adjoint(op.A(rand((3, 37, 53)))).dtype == torch.float64
    complex_op = operators.build("mri:equispaced:4:center=4:complex=1", (1, 8, 8))
    assert complex_op.complex_input and complex_op.A_adjoint(complex_op.A(rand((1, 8, 8), complex_=True))).is_complex()


def test_channels_are_measured_independently():
    op = operators.build("mri:radial:6", (3, 12, 10))
    x = rand((3, 12, 10))
    single = operators.build("mri:radial:6", (1, 12, 10))
    for c in range(3):
        assert torch.allclose(op.A(x)[:, c : c + 1], single.A(x[:, c : c + 1]))


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("spec", ["mri:equispaced:3:center=2:coils=4", "mri:radial:5:coils=3"])
def test_multicoil_shapes_and_adjoint(spec, complex_):
    shape = (1, 12, 10)
    op = operators.build(spec + (":complex=1" if complex_ else ""), shape)
    x = rand(shape, complex_=complex_)
    y = op.A(x)
    assert y.shape == (2, op.coils, 12, 10)
    v = rand_like(y)
    assert torch.allclose(inner(y, v), inner(x, op.A_adjoint(v)))
    # adjoint against autograd's vector-Jacobian product (the base class)
    assert torch.allclose(op.A_adjoint(v), LinearOperator.A_adjoint(op, v))
    # two channels, each seen by every coil: channel c, coil k at index c·K + k
    two = operators.build(spec, (2, 12, 10))
    x2 = rand((2, 12, 10))
    assert two.A(x2).shape == (2, 2 * op.coils, 12, 10)
    assert torch.allclose(two.A(x2)[:, op.coils :], operators.build(spec, shape).A(x2[:, 1:]))


def test_maps_from_file_and_synthetic_maps(tmp_path):
    maps = synthetic_maps(4, 12, 10)
    assert torch.allclose(maps.abs().square().sum(dim=0), torch.ones(12, 10, dtype=torch.float64))
    np.save(tmp_path / "maps.npy", maps.numpy())
    path = str(tmp_path / "maps.npy")
    op = operators.build(f"mri:random:2:seed=1:maps={path}", (1, 12, 10))
    assert op.spec == f"mri:random:2:center_fraction=0.08:seed=1:maps={path}"
    synthetic = operators.build("mri:random:2:seed=1:coils=4", (1, 12, 10))
    assert torch.allclose(op.A(rand((1, 12, 10))), synthetic.A(rand((1, 12, 10))))
    # float32 conversion keeps the imaginary part of the maps
    x = rand((1, 12, 10))
    y32 = op.to(torch.float32).A(x.float())
    assert y32.dtype == torch.complex64
    assert torch.allclose(y32.to(torch.complex128), op.to(torch.float64).A(x), atol=1e-5)
    np.save(tmp_path / "bad.npy", maps[:, :, :8].numpy())
    with pytest.raises(OperatorError, match="maps"):
        operators.build(f"mri:radial:4:maps={tmp_path / 'bad.npy'}", (1, 12, 10))


@pytest.mark.parametrize("spec", ["mri:random:3:seed=4", "mri:radial:5", "mri:poisson:2:seed=1"])
def test_real_pinv_closed_form_matches_conjugate_gradients(spec):
    shape = (1, 11, 14)
    op = operators.build(spec, shape).double()
    y = rand_like(op.A(rand(shape)))  # not in the range: the least-squares part matters too
    closed = op.A_pinv(y)
    by_cg = LinearOperator.A_pinv(op, y, tol=1e-12, max_iter=500)
    assert closed.dtype == torch.float64
    assert torch.allclose(closed, by_cg, atol=1e-8)
    # ... and differs from the naive Re(F⁻¹ M y), unless the mask is point symmetric (radial)
    if "radial" not in spec:
        assert not torch.allclose(closed, op.A_adjoint(y), atol=1e-3)


def test_complex_pinv_is_inverse_fft_of_masked_data():
    op = operators.build("mri:equispaced:2:center=2:complex=1", (1, 8, 12))
    y = rand_like(op.A(rand((1, 8, 12), complex_=True)))
    assert torch.allclose(op.A_pinv(y), ifft2c(op.mask * y))


def test_multicoil_pinv_is_a_generalised_inverse():
    op = operators.build("mri:equispaced:2:center=4:coils=3", (1, 8, 8))
    y = op.A(rand((1, 8, 8)))
    assert torch.allclose(op.A(op.A_pinv(y, tol=1e-10, max_iter=300)), y, atol=1e-6)


@pytest.mark.parametrize("spec", ["mri:random:3:seed=4", "mri:radial:5:complex=1"])
def test_solve_normal_closed_form(spec):
    shape = (1, 9, 12)
    op = operators.build(spec, shape)
    rhs = rand(shape, complex_=op.complex_input)
    rho = torch.tensor([0.5, 2.0], dtype=torch.float64)
    x = op.solve_normal(rhs, rho)
    assert torch.allclose(x, LinearOperator.solve_normal(op, rhs, rho, tol=1e-12, max_iter=300), atol=1e-9)


def test_zero_filled_baseline():
    shape = (1, 12, 10)
    x = rand(shape)
    full = operators.build("mri:equispaced:1:center=0", shape)
    assert torch.allclose(zero_filled(full.A(x), full), x)
    multi = operators.build("mri:equispaced:1:center=0:coils=3", shape)
    assert torch.allclose(zero_filled(multi.A(x), multi), x)
    assert torch.allclose(zero_filled(multi.A(x), multi, magnitude=True), x.abs())
    op = operators.build("mri:equispaced:4:center=2", shape)
    assert torch.allclose(zero_filled(op.A(x), op), op.A_adjoint(op.A(x)))
    complex_op = operators.build("mri:radial:4:complex=1", shape)
    xc = rand(shape, complex_=True)
    assert torch.allclose(zero_filled(complex_op.A(xc), complex_op), complex_op.A_pinv(complex_op.A(xc)))


def test_stacked_masks_apply_per_image():
    shape = (1, 10, 12)
    ops = [operators.build(f"mri:random:2:seed={s}", shape) for s in (1, 2)]
    stacked = MRI.stack(ops)
    x = rand(shape)
    y = stacked.A(x)
    assert torch.allclose(y[:1], ops[0].A(x[:1])) and torch.allclose(y[1:], ops[1].A(x[1:]))
    assert torch.allclose(stacked.A_pinv(y)[1:], ops[1].A_pinv(y[1:]))
    assert operators.build(stacked.spec, shape).batch_size == 2
    with pytest.raises(OperatorError, match="same coils"):
        MRI.stack([ops[0], operators.build("mri:random:2:seed=1:coils=2", shape)])


def test_from_mask_spells_the_mask_in_the_spec():
    shape = (1, 6, 10)
    columns = torch.tensor([1, 0, 0, 1, 1, 1, 0, 1, 0, 0], dtype=torch.float32)
    op = MRI.from_mask(columns.expand(6, 10)[None, None], shape)
    assert op.spec.startswith("mri:bits:") and torch.equal(operators.build(op.spec, shape).mask, op.mask)
    pixels = (torch.rand(6, 10, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    op2 = MRI.from_mask(pixels, shape, complex_input=True)
    again = operators.build(op2.spec, shape)
    assert again.complex_input and torch.equal(again.mask[0, 0], pixels)
    with pytest.raises(OperatorError, match="does not match"):
        MRI.from_mask(torch.ones(5, 10), shape)


def test_aliases_are_rewritten(tmp_path):
    op = operators.build("mri:equispaced:2:center_lines=2", (1, 8, 8))
    assert op.spec == "mri:equispaced:2:center=2"
    np.save(tmp_path / "m.npy", np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=np.uint8))
    op = operators.build(f"mri:mask={tmp_path / 'm.npy'}", (1, 8, 8))
    assert op.spec == f"mri:mask:{tmp_path / 'm.npy'}" and op.mask[0, 0, 3].tolist() == [1, 0, 1, 1, 0, 0, 1, 0]


def test_mask_from_file(tmp_path):
    mask = radial_mask(8, 12, 3).numpy()
    np.save(tmp_path / "mask.npy", mask)
    op = operators.build(f"mri:mask:{tmp_path / 'mask.npy'}", (1, 8, 12))
    assert np.array_equal(op.mask[0, 0].numpy(), mask)
    with pytest.raises(OperatorError, match=r"shape \(8, 12\).*\(10, 12\)"):
        operators.build(f"mri:mask:{tmp_path / 'mask.npy'}", (1, 10, 12))
    np.save(tmp_path / "half.npy", mask * 0.5)
    with pytest.raises(OperatorError, match="only 0 and 1"):
        operators.build(f"mri:mask:{tmp_path / 'half.npy'}", (1, 8, 12))
    with pytest.raises(OperatorError, match="not found"):
        operators.build(f"mri:mask:{tmp_path / 'missing.npy'}", (1, 8, 12))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mri", "mask family"),
        ("mri:spiral:4", "unknown mask family"),
        ("mri:equispaced:2.5", "integer"),
        ("mri:equispaced:0", "at least 1"),
        ("mri:equispaced:4:center=40", "do not fit"),
        ("mri:equispaced:4:center=2:center_fraction=0.1", "not both"),
        ("mri:equispaced:4:seed=1", "unknown option"),
        ("mri:equispaced:4:offset=4", "offset"),
        ("mri:random:4:center=20", "exceed"),
        ("mri:random:x", "number"),
        ("mri:poisson:50:center=8", "calibration"),
        ("mri:radial:0", "at least 1"),
        ("mri:radial:4:complex=2", "0 or 1"),
        ("mri:radial:4:coils=2:maps=a.npy", "not both"),
        ("mri:radial:4:5", "one positional"),
        ("mri:bits:zz", "hexadecimal"),
        ("mri:bits:ff", "fit neither"),
    ],
)
def test_bad_specs_raise_operator_errors(spec, message):
    with pytest.raises(OperatorError, match=message):
        operators.build(spec, (1, 32, 32))


# -- k-space files ---------------------------------------------------------------------------------


def test_read_kspace_npy(tmp_path):
    kspace = rand_like(torch.zeros(3, 8, 6)).numpy().astype(np.complex64)
    np.save(tmp_path / "multi.npy", kspace)
    np.save(tmp_path / "single.npy", kspace[0])
    np.save(tmp_path / "real.npy", kspace.real)
    data, mask = read_kspace(tmp_path / "multi.npy")
    assert data.dtype == torch.complex64 and data.shape == (3, 8, 6) and mask is None
    assert np.array_equal(data.numpy(), kspace)
    data, _ = read_kspace(tmp_path / "single.npy")
    assert data.shape == (1, 8, 6)
    with pytest.raises(OperatorError, match="complex"):
        read_kspace(tmp_path / "real.npy")
    with pytest.raises(OperatorError, match="not found"):
        read_kspace(tmp_path / "missing.npy")


def test_read_kspace_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    volume = rand_like(torch.zeros(3, 2, 8, 6)).numpy().astype(np.complex64)  # (slices, coils, H, W)
    columns = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    with h5py.File(tmp_path / "file.h5", "w") as handle:
        handle["kspace"] = volume
        handle["mask"] = columns
    data, mask = read_kspace(tmp_path / "file.h5")
    assert data.shape == (2, 8, 6) and np.array_equal(data.numpy(), volume[1])
    assert mask.tolist() == columns.astype(float).tolist()
    data, _ = read_kspace(tmp_path / "file.h5", slice_index=0)
    assert np.array_equal(data.numpy(), volume[0])
    with h5py.File(tmp_path / "single.h5", "w") as handle:
        handle["kspace"] = volume[:, 0]  # (slices, H, W) single-coil
    data, mask = read_kspace(tmp_path / "single.h5")
    assert data.shape == (1, 8, 6) and mask is None
    # the operator measures k-space in the same convention: zero-filled recon of full data
    op = operators.build("mri:equispaced:1:center=0:complex=1", (1, 8, 6))
    assert torch.allclose(op.A(zero_filled(data[None], op)), data[None], atol=1e-6)
    with pytest.raises(OperatorError, match="out of range"):
        read_kspace(tmp_path / "single.h5", slice_index=7)
