"""Properties every operator must have, parametrised over example specs of all registered operators."""

from __future__ import annotations

import pytest
import torch

import operators
from operators import OperatorError, SVDOperator, inner

# Example specs per module of linear operators; every registered linear operator must appear at least once
# (nonlinear ones — JPEG — have their own tests: there is no adjoint to check).
CASES: dict[str, list[str]] = {
    "inpaint": ["box:16:seed=1", "random:0.7:seed=2", "random:0.5:channels=per", "strokes:seed=3", "freeform:seed=4",
                "mask:tests/data/inpaint_mask_37x53.png"],
    "blur": ["blur:gaussian:7:1.5", "blur:gaussian:3:0.5:boundary=reflect", "blur:gaussian:3:0.5:boundary=valid",
             "blur:motion:9:0.5:seed=1", "blur:motion:5:0.3:seed=2:boundary=reflect", "blur:levin:5"],
    "resize": ["bicubic:2", "bicubic:4", "bicubic:8", "avgpool:2", "nearest:4"],
    "color": ["identity", "gray"],
    "mri": ["mri:equispaced:4:center=4", "mri:random:4:seed=1", "mri:poisson:3:seed=2", "mri:radial:8",
            "mri:equispaced:2:center=2:complex=1"],
    "ct": ["ct:4", "ct:6:arc=120:detectors=40:start=15"],
}
SPECS = [spec for specs in CASES.values() for spec in specs]
SHAPES = [(3, 37, 53), (1, 32, 32)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def build_for(spec: str, shape: tuple[int, int, int], dtype=torch.float64, device="cpu"):
    """Build ``spec`` for ``shape``, or skip when the operator does not apply to it (e.g. 1 channel colorisation)."""
    try:
        op = operators.build(spec, shape)
    except OperatorError as err:
        pytest.skip(f"{spec} does not apply to {shape}: {err}")
    return op.to(device=device, dtype=dtype)


def random_input(op, batch: int, shape, dtype, device, generator):
    x = torch.randn((batch, *shape), generator=generator, dtype=dtype).to(device)
    if op.complex_input:
        x = torch.complex(x, torch.randn(x.shape, generator=generator, dtype=dtype).to(device))
    return x


def random_like(y: torch.Tensor, generator) -> torch.Tensor:
    if y.is_complex():
        real = torch.view_as_real(y)
        return torch.view_as_complex(torch.randn(real.shape, generator=generator, dtype=real.dtype).to(y.device))
    return torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)


def test_every_registered_operator_has_a_case():
    named = {spec.split(":")[0] for spec in SPECS}
    linear = {name for name, cls in operators.REGISTRY.items() if cls.linear}
    assert linear <= named, linear - named
    assert all(issubclass(cls, operators.NonlinearOperator) for name, cls in operators.REGISTRY.items() if name not in linear)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("spec", SPECS)
def test_adjoint_by_dot_products(spec, shape, device):
    gen = torch.Generator().manual_seed(0)
    op = build_for(spec, shape, device=device)
    x = random_input(op, 2, shape, torch.float64, device, gen)
    y = random_like(op.A(x), gen)
    lhs, rhs = inner(op.A(x), y), inner(x, op.A_adjoint(y))
    assert torch.allclose(lhs, rhs, rtol=1e-6, atol=1e-9 * lhs.abs().max().item()), (lhs, rhs)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("spec", SPECS)
def test_pinv_is_a_generalised_inverse(spec, shape):
    gen = torch.Generator().manual_seed(1)
    op = build_for(spec, shape)
    x = random_input(op, 2, shape, torch.float64, "cpu", gen)
    ax = op.A(x)
    again = op.A(op.A_pinv(ax))
    err = (again - ax).abs().pow(2).sum().sqrt() / ax.abs().pow(2).sum().sqrt()
    assert err < 1e-4, f"relative error of A A+ A x = {err:.2e}"


@pytest.mark.parametrize("spec", SPECS)
def test_float32_matches_float64(spec):
    shape = SHAPES[0]
    gen = torch.Generator().manual_seed(2)
    op64 = build_for(spec, shape)
    op32 = build_for(spec, shape, dtype=torch.float32)
    x = random_input(op64, 1, shape, torch.float64, "cpu", gen)
    y64 = op64.A(x)
    y32 = op32.A(x.to(torch.complex64 if x.is_complex() else torch.float32))
    assert y32.dtype in (torch.float32, torch.complex64)
    assert torch.allclose(y32.to(y64.dtype), y64, atol=1e-4 * y64.abs().max().item())


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trips(spec):
    shape = SHAPES[0]
    op = build_for(spec, shape)
    again = operators.build(op.spec, shape).double()
    assert again.spec == op.spec
    x = random_input(op, 1, shape, torch.float64, "cpu", torch.Generator().manual_seed(3))
    assert torch.equal(again.A(x), op.A(x))


@pytest.mark.parametrize("spec", SPECS)
def test_stacked_operator_applies_each_to_its_image(spec):
    shape = SHAPES[0]
    op = build_for(spec, shape)
    stacked = type(op).stack([op, op]).double()
    x = random_input(op, 2, shape, torch.float64, "cpu", torch.Generator().manual_seed(4))
    assert torch.allclose(stacked.A(x), op.A(x))
    assert stacked.batch_size == 2 and operators.build(stacked.spec, shape).batch_size == 2


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("spec", SPECS)
def test_svd_is_orthonormal_and_reproduces_A(spec, shape):
    op = build_for(spec, shape)
    if not op.has_svd:
        pytest.skip("no SVD")
    assert isinstance(op, SVDOperator)
    assert type(op).A is not SVDOperator.A, "A must be computed directly so the SVD can be checked against it"
    gen = torch.Generator().manual_seed(5)
    x = torch.randn((2, *shape), generator=gen, dtype=torch.float64)
    n = x[0].numel()
    coeffs = op.Vt(x)
    assert coeffs.shape == (2, n)
    assert torch.allclose(coeffs.norm(dim=1), x.flatten(1).norm(dim=1)), "V^T is not an isometry"
    assert torch.allclose(op.V(coeffs), x), "V V^T != I"
    y = op.A(x)
    s = op.singular_values()
    m = s.shape[1]
    assert m <= n and y[0].numel() == m
    uy = op.Ut(y)
    assert uy.shape == (2, m)
    assert torch.allclose(uy.norm(dim=1), y.flatten(1).norm(dim=1)), "U^T is not an isometry"
    assert torch.allclose(op.U(uy), y), "U U^T != I"
    assert (s >= 0).all()
    assert torch.allclose(op.svd_apply(x), y, atol=1e-10 * y.abs().max().item() + 1e-12)


@pytest.mark.parametrize("spec", SPECS)
def test_regularised_solves_satisfy_their_equations(spec):
    """solve_normal gives (AᵀA + ρI) x = rhs and solve_gram (AAᵀ + cI) u = r, per image ρ included."""
    shape = SHAPES[1]
    op = build_for(spec, shape)
    gen = torch.Generator().manual_seed(6)
    rhs = random_input(op, 2, shape, torch.float64, "cpu", gen)
    rho = torch.tensor([0.5, 2.0], dtype=torch.float64)
    x = op.solve_normal(rhs, rho)
    residual = op.A_adjoint(op.A(x)) + rho.view(-1, 1, 1, 1) * x - rhs
    assert residual.abs().max() < 1e-5 * rhs.abs().max()
    r = random_like(op.A(rhs), gen)
    u = op.solve_gram(r, 0.3)
    residual = op.A(op.A_adjoint(u)) + 0.3 * u - r
    assert residual.abs().max() < 1e-5 * r.abs().max()


def test_conjugate_gradient_solves_each_image_as_if_alone():
    """A converged image is frozen while the others iterate (no blow-up from rank-deficient neighbours)."""
    from operators.base import conjugate_gradient

    gen = torch.Generator().manual_seed(7)
    diag = torch.rand(2, 1, 6, 6, generator=gen, dtype=torch.float64) + 0.1
    diag[0] = 1.0  # image 0: the identity, solved in one iteration
    diag[1, 0, :2] = 0.0  # image 1: rank-deficient, rhs in its range
    rhs = torch.randn(2, 1, 6, 6, generator=gen, dtype=torch.float64) * (diag > 0)
    batch = conjugate_gradient(lambda v: diag * v, rhs, tol=1e-12, max_iter=100)
    for b in range(2):
        alone = conjugate_gradient(lambda v: diag[b : b + 1] * v, rhs[b : b + 1], tol=1e-12, max_iter=100)
        assert torch.allclose(batch[b : b + 1], alone, atol=1e-10)
    assert torch.allclose(diag * batch, rhs, atol=1e-9)
