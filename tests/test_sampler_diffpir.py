"""DiffPIR on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

DiffPIR is a plug-and-play scheme, not an exact posterior sampler: with ζ = 1 (the official
inpainting setting) every step re-noises x̂0' with fresh noise and the outputs spread like
samples; with ζ < 1 part of the noise is the model's ε̂. The tolerances are measured ones with
margin (each test says what was measured).
"""

from __future__ import annotations

import pytest
import torch

from operators import REGISTRY
from restore.errors import NumericalError, RestoreError
from restore.noise import GaussianNoise, NoNoise
from restore.prior.schedule import respaced_timesteps
from restore.samplers import TASKS
from restore.samplers import diffpir as diffpir_module
from restore.samplers.base import draw_samples
from restore.samplers.defaults import defaults_for
from restore.samplers.diffpir import DiffPIRParams, diffpir, quad_timesteps
from sampler_helpers import MaskedFourier, NaNDenoiser, ReplicateBlur, assert_batch_equals_one_by_one, pinv, rms

SIGMA = 0.05
SAMPLING = DiffPIRParams(clip_x0=False, lam=7.0, zeta=1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def run(p, k: int, steps: int, params=None, seed: int = 0, noise=None, y=None, operator=None, denoiser=None):
    y = p.y if y is None else y
    return diffpir(p.denoiser if denoiser is None else denoiser, p.operator if operator is None else operator,
                   y.repeat(k, *([1] * (y.dim() - 1))), noise=GaussianNoise(SIGMA) if noise is None else noise,
                   steps=steps, generator=torch.Generator().manual_seed(seed), params=params)


@pytest.mark.parametrize("spec, tol", [
    # measured (fixture problem, seeds 0 and 1): mean error 0.049–0.052 (A⁺y: 0.34), std ratio 0.83;
    # over 3 problems 0.041–0.074 against A⁺y 0.24–0.34
    ("random:0.5:seed=1", 0.09),
    # measured: mean error 0.010 (A⁺y: 0.19), std ratio 0.70; over 3 problems 0.008–0.011
    ("bicubic:2", 0.03),
])
def test_mean_of_samples_approaches_posterior_mean(gaussian_problem, spec, tol):
    p = gaussian_problem(spec, SIGMA)
    samples = draw_samples(diffpir, p.denoiser, p.operator, p.y, num_samples=256, noise=GaussianNoise(SIGMA),
                           steps=100, generator=torch.Generator().manual_seed(0), params=SAMPLING)
    err, err_pinv = rms(samples.mean, p.post_mean), rms(pinv(p.operator, p.y), p.post_mean)
    assert err < tol and err < 0.25 * err_pinv, (err, err_pinv)
    # with ζ = 1 DiffPIR samples (approximately): spread of the right order (measured 0.83 and 0.70)
    ratio = (samples.std / p.post_std).mean().item()
    assert 0.5 < ratio < 1.5, ratio


def test_default_parameters_mean(gaussian_problem):
    # λ = 7, ζ = 0.3 (the deblurring defaults): measured mean error 0.072 (A⁺y: 0.34), std ratio 1.28
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    samples = draw_samples(diffpir, p.denoiser, p.operator, p.y, num_samples=256, noise=GaussianNoise(SIGMA),
                           steps=100, generator=torch.Generator().manual_seed(0))
    err, err_pinv = rms(samples.mean, p.post_mean), rms(pinv(p.operator, p.y), p.post_mean)
    assert err < 0.12 and err < 0.35 * err_pinv, (err, err_pinv)


@pytest.mark.parametrize("params, steps, tol", [
    # official inpainting setting (λ = 1, ζ = 1, 20 steps): measured max error 3e-4
    (DiffPIRParams(clip_x0=False, lam=1.0, zeta=1.0), 20, 0.005),
    # defaults (λ = 7, ζ = 0.3, 100 steps): measured 0.0019; uniform grid 0.0019
    (DiffPIRParams(clip_x0=False), 100, 0.01),
    (DiffPIRParams(clip_x0=False, skip="uniform"), 100, 0.01),
])
def test_noiseless_inpainting_keeps_observed_pixels(gaussian_problem, params, steps, tol):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.operator.A(p.x)  # noiseless: σ_n is floored at 0.001, so the data step is a near-projection
    x = run(p, 16, steps, params=params, noise=NoNoise(), y=y)
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    err = (p.operator.A(x) - y)[observed].abs()
    assert torch.isfinite(x).all() and err.max().item() < tol, err.max().item()


def test_same_seed_same_output_and_seeds_differ(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    a, b, c = run(p, 4, 20, seed=3), run(p, 4, 20, seed=3), run(p, 4, 20, seed=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_with_per_image_generators_and_operators_equals_one_by_one(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    assert_batch_equals_one_by_one(diffpir, p, noise=GaussianNoise(SIGMA), steps=30)


def test_beats_pseudo_inverse(gaussian_problem):
    # measured MSE / MSE(A⁺y): 0.28 (defaults), 0.15 (λ = 1, ζ = 1) on the random mask
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    mse_pinv = (pinv(p.operator, p.y) - p.x).pow(2).mean().item()
    for params in (DiffPIRParams(clip_x0=False), DiffPIRParams(clip_x0=False, lam=1.0, zeta=1.0)):
        x = run(p, 64, 100, params=params)
        mse = (x - p.x).pow(2).mean().item()
        assert mse < 0.5 * mse_pinv, (params, mse, mse_pinv)


@pytest.mark.parametrize("make", [ReplicateBlur, MaskedFourier])
def test_operators_without_svd_run_and_beat_pseudo_inverse(gaussian_problem, make):
    p = gaussian_problem("identity", SIGMA, shape=(1, 8, 8))  # the prior and x; the operator below
    op = make(p.shape).double()
    assert not op.has_svd
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    x = run(p, 4, 20, operator=op, y=y)  # 20 steps: each data step runs up to 100 CG iterations
    assert x.dtype == torch.float64 and x.shape == (4, *p.shape)
    # measured MSE 0.0085 (blur; A⁺y: 14, noise amplified) and 0.0048 (Fourier; A⁺y: 0.019)
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (pinv(op, y) - p.x).pow(2).mean().item()
    assert mse < 0.03 and mse < mse_pinv, (make.__name__, mse, mse_pinv)


@pytest.mark.parametrize("spec", ["blur:gaussian:3:0.8:boundary=reflect", "mri:equispaced:2:center_lines=2"])
def test_library_operators_without_svd(gaussian_problem, spec):
    import operators

    if spec.split(":")[0] not in REGISTRY:
        pytest.skip(f"operator '{spec}' not available yet")
    p = gaussian_problem("identity", SIGMA, shape=(1, 8, 8))
    op = operators.build(spec, p.shape).double()
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    x = run(p, 4, 20, operator=op, y=y)
    assert x.dtype == torch.float64 and x.shape == (4, *p.shape)
    # measured MSE 0.012 (blur; A⁺y: 20) and 0.0045 (MRI; A⁺y: 0.012)
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (pinv(op, y) - p.x).pow(2).mean().item()
    assert mse < 0.03 and mse < mse_pinv, (spec, mse, mse_pinv)


def test_nan_raises_numerical_error_naming_the_step(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    # quad grid of 11 steps: 999, 683, 552, 452, ...: t ≤ 500 from step 4
    assert quad_timesteps(1000, 11)[:4] == [999, 683, 552, 452]
    with pytest.raises(NumericalError, match="diffpir produced NaN or Inf at step 4 of 11"):
        run(p, 1, 11, denoiser=NaNDenoiser(p.denoiser, 500))
    y = p.y.clone()
    y[..., 0, 0] = float("nan")
    with pytest.raises(NumericalError, match="at step 1 of 11; lam=7"):
        run(p, 1, 11, y=y)


def test_timestep_grids(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    quad = quad_timesteps(1000, 100)
    assert quad[0] == 999 and quad[-1] == 0 and all(a > b for a, b in zip(quad, quad[1:]))
    assert quad[:3] == [999, 899, 857]  # official: 999 - int(sqrt(linspace(0, 1000², 100)))
    assert quad[0] - quad[1] > 10 * (quad[-2] - quad[-1])  # dense at low noise
    seen = []

    def record(params, steps):
        seen.clear()
        diffpir(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=steps, params=params,
                generator=torch.Generator().manual_seed(0), callback=lambda info: seen.append(info["t"]))
        return list(seen)

    assert record(DiffPIRParams(clip_x0=False), 100) == quad
    assert record(DiffPIRParams(clip_x0=False, skip="uniform"), 10) == respaced_timesteps(1000, 10).tolist()
    assert record(DiffPIRParams(clip_x0=False), 1) == [999]
    with pytest.raises(RestoreError, match="repeats timesteps"):
        record(DiffPIRParams(clip_x0=False), 900)


def test_callback_defaults_and_registry(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []
    diffpir(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=7, generator=torch.Generator().manual_seed(0),
            callback=lambda info: seen.append((info["step"], info["total"], info["t"], info["x"].shape, info["x0"].shape)))
    assert [s[0] for s in seen] == list(range(7)) and all(s[1] == 7 for s in seen)
    assert seen[0][2] == 999 and seen[-1][2] == 0 and seen[0][3] == seen[0][4] == (1, *p.shape)
    assert DiffPIRParams(clip_x0=False).lam == 7.0 and DiffPIRParams(clip_x0=False).zeta == 0.3
    info = diffpir_module.INFO
    assert info.name == "diffpir" and not info.backprop_network and not info.needs_svd and info.nfe(100) == 100
    for task in TASKS:
        d = defaults_for("diffpir", task)
        assert isinstance(d.params, DiffPIRParams) and d.steps >= 1
    assert defaults_for("diffpir", "inpaint").steps == 20 and defaults_for("diffpir", "inpaint").params.zeta == 1.0


def test_bad_parameters(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    for lam in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(RestoreError, match="lam"):
            run(p, 1, 5, params=DiffPIRParams(clip_x0=False, lam=lam))
    for zeta in (-0.1, 1.5, float("nan")):
        with pytest.raises(RestoreError, match="zeta"):
            run(p, 1, 5, params=DiffPIRParams(clip_x0=False, zeta=zeta))
    with pytest.raises(RestoreError, match="skip"):
        run(p, 1, 5, params=DiffPIRParams(clip_x0=False, skip="cubic"))
    with pytest.raises(RestoreError, match="steps"):
        run(p, 1, 0)
