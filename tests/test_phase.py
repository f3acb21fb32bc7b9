"""Fourier phase retrieval (operators/phase.py): the DPS / DAPS measurement and its HIO baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import operators
from operators import NonlinearOperator, OperatorError, phase
from operators.phase import PhaseRetrieval, best_of_ambiguities, hio, misfit, padding, safe_abs

torch.set_num_threads(1)


def rand(shape, seed=0, batch=2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *shape), generator=gen, dtype=dtype) * 2 - 1


def blob(h=16, w=16) -> torch.Tensor:
    """A smooth gray test image (1, 1, H, W) in [-0.6, 1]: two Gaussian bumps on a gray floor.

    Its object (x + 1) / 2 is at least 0.2 everywhere, so it fills the support and translations
    are not an ambiguity; it is not symmetric, so its 180° rotation is a different image.
    """
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    a = torch.exp(-((ii - 6.0) ** 2 / (2 * 3.0**2) + (jj - 9.0) ** 2 / (2 * 2.5**2)))
    b = torch.exp(-((ii - 11.0) ** 2 / (2 * 2.0**2) + (jj - 4.0) ** 2 / (2 * 2.0**2)))
    return (-0.6 + 1.2 * a + 0.8 * b).clamp(-1, 1)[None, None]


def numpy_reference(x: np.ndarray, oversample: float, signed: bool) -> np.ndarray:
    """|fftshift(fft2(ifftshift(pad(o))))| with fastMRI's centring, as DPS and DAPS compute it."""
    o = x if signed else (x + 1) / 2
    ph, pw = int(oversample / 8 * x.shape[-2]), int(oversample / 8 * x.shape[-1])
    padded = np.pad(o, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    axes = (-2, -1)
    spectrum = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(padded, axes=axes), axes=axes, norm="ortho"), axes=axes)
    return np.abs(spectrum)


# -- the forward map ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape,oversample", [((1, 16, 16), 2.0), ((3, 12, 20), 1.0), ((1, 9, 14), 3.3)])
@pytest.mark.parametrize("signed", [False, True])
def test_matches_numpy_reference(shape, oversample, signed):
    op = PhaseRetrieval(shape, oversample, "signed" if signed else "unit")
    x = rand(shape, seed=1)
    y = op.A(x)
    ref = numpy_reference(x.numpy(), oversample, signed)
    assert y.dtype == torch.float64 and tuple(y.shape) == (2, *op.out_shape) == ref.shape
    assert np.abs(y.numpy() - ref).max() < 1e-10


def test_padding_is_that_of_the_references():
    # DPS / DAPS: int((oversample / 8) * 256) = 64 on every side of 256 x 256, a 384 x 384 array
    op = PhaseRetrieval((3, 256, 256))
    assert op.pad == (64, 64) and op.out_shape == (3, 384, 384)
    assert padding(1.0, 20) == 2 and padding(1.0, 12) == 1  # int() truncates 2.5 and 1.5
    op = PhaseRetrieval((1, 12, 20), 1.0)
    assert op.pad == (1, 2) and op.out_shape == (1, 14, 24)
    assert PhaseRetrieval.linear is False and isinstance(op, NonlinearOperator)


def test_precision_follows_the_input():
    op = PhaseRetrieval((1, 8, 8))
    x = rand((1, 8, 8))
    y32 = op.A(x.float())
    assert y32.dtype == torch.float32
    assert torch.allclose(y32.double(), op.A(x), atol=1e-5)


def test_invariances():
    x = rand((3, 10, 14), seed=2)
    for range_ in ("unit", "signed"):
        op = PhaseRetrieval((3, 10, 14), 2.0, range_)
        y = op.A(x)
        # the 180° rotation of the image is the rotation of the padded array about its centre
        assert torch.allclose(op.A(torch.flip(x, dims=(-2, -1))), y, atol=1e-12, rtol=0)
        # and so is rotating one channel alone: channels are measured separately
        mixed = x.clone()
        mixed[:, 1] = torch.flip(x[:, 1], dims=(-2, -1))
        assert torch.allclose(op.A(mixed), y, atol=1e-12, rtol=0)
        # a flip of one axis is not an invariance
        assert (op.A(torch.flip(x, dims=(-1,))) - y).abs().max() > 1e-3
    # the global sign: an invariance of the DPS convention (o = x), not of the DAPS one (o ≥ 0)
    signed, unit = PhaseRetrieval((3, 10, 14), 2.0, "signed"), PhaseRetrieval((3, 10, 14), 2.0, "unit")
    assert torch.allclose(signed.A(-x), signed.A(x), atol=1e-12, rtol=0)
    assert (unit.A(-x) - unit.A(x)).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("range_", ["unit", "signed"])
def test_gradient_is_finite_everywhere(dtype, range_):
    op = PhaseRetrieval((1, 8, 8), 2.0, range_)
    y = op.A(rand((1, 8, 8), seed=3, dtype=dtype))
    # zeros: a constant object whose spectrum has (numerically) vanishing entries;
    # -1: with range=unit the object is 0 and its whole spectrum is exactly 0
    for x0 in (torch.zeros(2, 1, 8, 8, dtype=dtype), -torch.ones(2, 1, 8, 8, dtype=dtype),
               rand((1, 8, 8), seed=4, dtype=dtype)):
        x = x0.clone().requires_grad_()
        loss = (op.A(x) - y).square().sum() + op.A(x).sum()
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(grad).all()


def test_safe_abs_value_and_gradient():
    z = torch.tensor([0j, 3 + 4j, -1e-20 + 0j, 1e-200j], dtype=torch.complex128, requires_grad=True)
    value = safe_abs(z)
    assert torch.equal(value.detach(), z.detach().abs())
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert torch.isfinite(torch.view_as_real(grad)).all()
    assert grad[0] == 0 and torch.allclose(grad[1], torch.tensor(0.6 + 0.8j, dtype=torch.complex128))
    # away from spectral zeros the gradient is the exact one
    op = PhaseRetrieval((1, 5, 6), 2.0)
    assert torch.autograd.gradcheck(op.A, (rand((1, 5, 6), seed=5, batch=1).requires_grad_(),))


# -- specs, batches, stacks --------------------------------------------------------------------


def test_spec_round_trips_through_build():
    shape = (3, 16, 16)
    assert PhaseRetrieval.from_spec("", shape).spec == "phase:oversample=2"
    assert operators.build("phase", shape).spec == "phase:oversample=2"
    for spec in ("phase:oversample=2", "phase:oversample=1.5:range=signed", "phase:oversample=3"):
        op = operators.build(spec, shape)
        assert isinstance(op, PhaseRetrieval) and op.spec == spec
        again = operators.build(op.spec, shape)
        assert (again.pad, again.object_range, again.out_shape) == (op.pad, op.object_range, op.out_shape)
    assert operators.build("phase:oversample=2.0:range=unit", shape).spec == "phase:oversample=2"
    x = rand(shape, seed=6)
    assert torch.equal(operators.build("phase:oversample=1.5:range=signed", shape).A(x),
                       PhaseRetrieval(shape, 1.5, "signed").A(x))


def test_batch_equals_images_one_by_one():
    op = PhaseRetrieval((3, 10, 12), 2.0)
    x = rand((3, 10, 12), seed=7, batch=3)
    y = op.A(x)
    for b in range(3):
        assert torch.equal(y[b:b + 1], op.A(x[b:b + 1]))


def test_stacked_per_image_operators():
    shape = (1, 10, 12)
    stacked = operators.build("phase:oversample=2;phase", shape)
    assert stacked.batch_size == 2 and stacked.spec == "phase:oversample=2;phase:oversample=2"
    x = rand(shape, seed=8)
    single = PhaseRetrieval(shape)
    assert torch.equal(stacked.A(x), torch.cat([single.A(x[:1]), single.A(x[1:])]))
    with pytest.raises(OperatorError, match="stacked"):
        operators.build("phase:oversample=2;phase:oversample=3", shape)
    with pytest.raises(OperatorError, match="stacked"):
        operators.build("phase;phase:range=signed", shape)


@pytest.mark.parametrize("args,message", [
    ("oversample=0", "oversample must be positive"),
    ("oversample=-1", "oversample must be positive"),
    ("oversample=nan", "oversample must be finite"),
    ("oversample=inf", "oversample must be finite"),
    ("oversample=two", "oversample must be a number"),
    ("oversample=0.1", "must pad at least 1 pixel"),
    ("factor=2", "unknown argument"),
    ("2", "keyword fields only"),
    ("range=positive", "range must be unit or signed"),
])
def test_bad_specs(args, message):
    with pytest.raises(OperatorError, match=message):
        PhaseRetrieval.from_spec(args, (1, 16, 16))


def test_wrong_image_shape():
    op = PhaseRetrieval((1, 8, 8))
    with pytest.raises(OperatorError, match=r"built for images \(1, 8, 8\)"):
        op.A(torch.zeros(1, 3, 8, 8))


# -- the ambiguity-resolved comparison ---------------------------------------------------------


def test_best_of_ambiguities():
    ref = rand((2, 6, 7), seed=9, batch=3)
    x_hat = ref.clone()
    x_hat[1] = torch.flip(ref[1], dims=(-2, -1))
    x_hat[2, 0] = torch.flip(ref[2, 0], dims=(-2, -1))  # one channel turned
    best = best_of_ambiguities(x_hat, ref)
    assert torch.equal(best[:2], ref[:2])
    assert not torch.equal(best[2], ref[2])  # per image: a mixed image cannot be fixed whole
    assert torch.equal(best_of_ambiguities(x_hat, ref, per_channel=True), ref)
    # the sign ambiguity of range=signed only with sign=True
    negated = -torch.flip(ref, dims=(-2, -1))
    assert torch.equal(best_of_ambiguities(negated, ref, sign=True), ref)
    assert not torch.equal(best_of_ambiguities(negated, ref), ref)
    with pytest.raises(OperatorError, match="one shape"):
        best_of_ambiguities(x_hat, ref[:1])


def test_posterior_samples_agree_on_the_turn_before_their_mean():
    """Samples of one image that came out turned 180° are turned back to the first before mean and std (a mean over
    both turns would describe no image); other operators leave samples as they are."""
    from restore.samplers.base import draw_samples

    truth = rand((3, 8, 8), seed=4, batch=2)
    op = PhaseRetrieval((3, 8, 8))

    def sampler(denoiser, operator, y, **kwargs):  # K = 2 copies of the batch: sample 1 of every image turned
        return torch.cat([truth, torch.flip(truth, dims=(-2, -1)) + 0.01])

    result = draw_samples(sampler, None, op, op.A(truth), num_samples=2)
    assert torch.allclose(result.mean, truth + 0.005) and float(result.std.max()) < 0.01
    samples = torch.stack([truth, torch.flip(truth, dims=(-2, -1))])
    assert torch.equal(operators.build("identity", (3, 8, 8)).align_samples(samples), samples)


# -- hybrid input-output -----------------------------------------------------------------------


def rmse(a, b):
    return (a - b).square().flatten(1).mean(dim=1).sqrt()


def test_hio_recovers_a_smooth_blob():
    # measured: RMSE 0.0037 ([-1, 1] scale) after the 180° choice, 0.196 for the wrong orientation
    x = blob()
    op = PhaseRetrieval((1, 16, 16))
    y = op.A(x)
    x_hat = hio(y, op, iterations=300, generator=torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape and x_hat.min() >= -1 and x_hat.max() <= 1
    error = rmse(best_of_ambiguities(x_hat, x), x).item()
    assert error < 0.02
    assert (misfit(x_hat, y, op) / y.norm()).item() < 1e-3  # measured 8.3e-5
    # generator seed 3 converges to the rotated twin (RMSE 0.196 as is, 0.0035 resolved)
    twin = hio(y, op, iterations=300, generator=torch.Generator().manual_seed(3))
    assert rmse(twin, x).item() > 0.1 and rmse(best_of_ambiguities(twin, x), x).item() < 0.02


def test_hio_signed_convention():
    # DPS's convention: no positivity, and the sign is ambiguous too; measured RMSE 0.0037
    x = blob()
    op = PhaseRetrieval((1, 16, 16), 2.0, "signed")
    y = op.A(x)
    x_hat = hio(y, op, iterations=300, generator=torch.Generator().manual_seed(0))
    assert rmse(best_of_ambiguities(x_hat, x, sign=True), x).item() < 0.02


def test_hio_aligns_colour_channels(monkeypatch):
    # three correlated channels recovered separately, then turned to agree with channel 0
    base = blob()
    x = torch.cat([base, 0.8 * base + 0.1, 0.6 * base - 0.2], dim=1)
    op = PhaseRetrieval((3, 16, 16))
    y = op.A(x)
    x_hat = hio(y, op, iterations=300, generator=torch.Generator().manual_seed(0))
    with monkeypatch.context() as patch:  # without the alignment, channel 0 comes out upright, 1 and 2 turned
        patch.setattr(phase, "_align_channels", lambda obj, sign: obj)
        raw = hio(y, op, iterations=300, generator=torch.Generator().manual_seed(0))
    upright = [rmse(raw[:, c:c + 1], x[:, c:c + 1]).item() < 0.02 for c in range(3)]
    assert upright == [True, False, False]
    per_image = best_of_ambiguities(x_hat, x)
    assert torch.equal(per_image, best_of_ambiguities(x_hat, x, per_channel=True))
    assert rmse(per_image, x).item() < 0.02  # measured 0.0035


def test_hio_best_of_restarts_never_worse_than_the_first():
    x = rand((3, 12, 12), seed=10, batch=2)  # noise: hard, so restarts differ
    op = PhaseRetrieval((3, 12, 12))
    y = op.A(x)
    x_hat, misfits = hio(y, op, iterations=100, er_iterations=10, restarts=4,
                         generator=torch.Generator().manual_seed(0), return_misfits=True)
    assert misfits.shape == (4, 2, 3)
    kept = misfit(x_hat, y, op)
    first = misfits[0].square().sum(dim=1).sqrt()
    assert torch.allclose(kept, misfits.amin(dim=0).square().sum(dim=1).sqrt(), rtol=1e-9, atol=0)
    assert (kept <= first * (1 + 1e-12)).all()
    assert (misfits.amin(dim=0) < misfits[0]).any()  # the restarts did change something
    # restart 0 is the run of restarts=1 with the same generator
    alone = hio(y, op, iterations=100, er_iterations=10, restarts=1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(misfit(alone, y, op), first, rtol=1e-9, atol=0)


def test_hio_init_and_arguments():
    x = blob()
    op = PhaseRetrieval((1, 16, 16))
    y = op.A(x)
    # from the truth with no iterations, HIO returns the truth: it is a fixed point
    same = hio(y, op, iterations=0, er_iterations=0, restarts=1, init=x)
    assert torch.allclose(same, x, atol=1e-12)
    with pytest.raises(OperatorError, match="beta"):
        hio(y, op, beta=1.5)
    with pytest.raises(OperatorError, match="restarts"):
        hio(y, op, restarts=0)
    with pytest.raises(OperatorError, match="measurements"):
        hio(y[..., 1:], op)
    with pytest.raises(OperatorError, match="init"):
        hio(y, op, init=x[..., 1:])
    assert math.isfinite(misfit(hio(y, op, iterations=5, restarts=1), y, op).item())
