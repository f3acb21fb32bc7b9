"""ΠGDM on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

ΠGDM approximates p(y | x_t) by a Gaussian around x̂0 with an isotropic covariance r_t² I (data of
unit variance), which the toy prior (variance 0.16, correlated pixels) does not have, so it is an
approximate sampler: the tolerances are measured ones with margin (each test says what was measured).
With η = 1 (the default, RED-diff's runs) every step draws fresh noise and the outputs spread like samples.
"""

from __future__ import annotations

import pytest
import torch

from operators import REGISTRY
from restore.errors import NumericalError, RestoreError
from restore.noise import GaussianNoise, NoNoise
from restore.samplers import TASKS
from restore.samplers import pigdm as pigdm_module
from restore.samplers.base import draw_samples
from restore.samplers.defaults import defaults_for
from restore.samplers.pigdm import PiGDMParams, pigdm
from sampler_helpers import MaskedFourier, NaNDenoiser, ReplicateBlur, assert_batch_equals_one_by_one, pinv, rms

SIGMA = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


def run(p, k: int, steps: int, params=None, seed: int = 0, noise=None, y=None, operator=None, denoiser=None,
        callback=None):
    y = p.y if y is None else y
    return pigdm(p.denoiser if denoiser is None else denoiser, p.operator if operator is None else operator,
                 y.repeat(k, *([1] * (y.dim() - 1))), noise=GaussianNoise(SIGMA) if noise is None else noise,
                 steps=steps, generator=torch.Generator().manual_seed(seed), params=params, callback=callback)


@pytest.mark.parametrize("spec, tol", [
    # measured (fixture problem, seeds 0 and 1): mean error 0.035–0.037 (A⁺y: 0.34), std ratio 0.75;
    # over 3 problems 0.031–0.080 against A⁺y 0.24–0.34
    ("random:0.5:seed=1", 0.08),
    # measured: mean error 0.018–0.020 (A⁺y: 0.19), std ratio 0.79–0.82; over 3 problems 0.010–0.020
    ("bicubic:2", 0.04),
])
def test_mean_of_samples_approaches_posterior_mean(gaussian_problem, spec, tol):
    p = gaussian_problem(spec, SIGMA)
    samples = draw_samples(pigdm, p.denoiser, p.operator, p.y, num_samples=256, noise=GaussianNoise(SIGMA),
                           steps=100, generator=torch.Generator().manual_seed(0))
    err, err_pinv = rms(samples.mean, p.post_mean), rms(pinv(p.operator, p.y), p.post_mean)
    assert err < tol and err < 0.25 * err_pinv, (err, err_pinv)
    # with η = 1 ΠGDM samples (approximately): spread of the right order (measured 0.75 and 0.79)
    ratio = (samples.std / p.post_std).mean().item()
    assert 0.5 < ratio < 1.5, ratio


def test_noiseless_inpainting_nearly_keeps_observed_pixels(gaussian_problem):
    # the guidance pulls x̂0 onto A x = y through the Jacobian (≈ I at low noise), not by
    # replacement: measured max error 0.004 at 100 steps (0.023 at 20 steps)
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.operator.A(p.x)  # noiseless: the Gram shift is floored (σ_y = 0.002), no division by zero
    x = run(p, 16, 100, noise=NoNoise(), y=y)
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    err = (p.operator.A(x) - y)[observed].abs()
    assert torch.isfinite(x).all() and err.max().item() < 0.02, err.max().item()


def test_same_seed_same_output_and_seeds_differ(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    for params in (PiGDMParams(), PiGDMParams(eta=0.0)):  # η = 0: x_T is the only randomness
        a, b, c = run(p, 4, 20, params, seed=3), run(p, 4, 20, params, seed=3), run(p, 4, 20, params, seed=4)
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)


def test_batch_with_per_image_generators_and_operators_equals_one_by_one(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    assert_batch_equals_one_by_one(pigdm, p, noise=GaussianNoise(SIGMA), steps=30)


def test_beats_pseudo_inverse(gaussian_problem):
    # measured MSE / MSE(A⁺y): 0.15 (η = 1), 0.14 (η = 0) on the random mask
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    mse_pinv = (pinv(p.operator, p.y) - p.x).pow(2).mean().item()
    for params in (PiGDMParams(), PiGDMParams(eta=0.0)):
        x = run(p, 64, 100, params=params)
        mse = (x - p.x).pow(2).mean().item()
        assert mse < 0.5 * mse_pinv, (params, mse, mse_pinv)


def test_measurement_noise_enters_the_guidance(gaussian_problem):
    # σ_y in (r_t² A Aᵀ + σ_y² I)⁻¹ weakens the guidance: a much larger σ_y trusts y less
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    a, b = run(p, 8, 30), run(p, 8, 30, noise=GaussianNoise(1.0))
    assert not torch.allclose(a, b)
    fit = lambda x: (p.operator.A(x) - p.y).pow(2).mean().item()  # noqa: E731
    assert fit(a) < fit(b), (fit(a), fit(b))


def test_last_step_adds_the_guidance_to_x0(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []
    x = run(p, 2, 10, callback=seen.append)
    # the last step lands on ᾱ = 1: x = x̂0 + sqrt(ᾱ_0) g, which fits y better than x̂0
    fit = lambda v: (p.operator.A(v) - p.y).pow(2).mean().item()  # noqa: E731
    assert seen[-1]["x"] is x and fit(x) < fit(seen[-1]["x0"])


@pytest.mark.parametrize("make", [ReplicateBlur, MaskedFourier])
def test_operators_without_svd_run_and_beat_pseudo_inverse(gaussian_problem, make):
    p = gaussian_problem("identity", SIGMA, shape=(1, 8, 8))  # the prior and x; the operator below
    op = make(p.shape).double()
    assert not op.has_svd
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    x = run(p, 4, 20, operator=op, y=y)  # 20 steps: each Gram solve runs up to 100 CG iterations
    assert x.dtype == torch.float64 and x.shape == (4, *p.shape)
    # measured MSE 0.0068 (blur; A⁺y: 14, noise amplified) and 0.0047 (Fourier; A⁺y: 0.019)
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
    # measured MSE 0.009 (blur; A⁺y: 20) and 0.005 (MRI; A⁺y: 0.012)
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (pinv(op, y) - p.x).pow(2).mean().item()
    assert mse < 0.03 and mse < mse_pinv, (spec, mse, mse_pinv)


def test_nan_raises_numerical_error_naming_the_step(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    # timesteps 999, 899, ..., 0: t ≤ 500 from step 6
    with pytest.raises(NumericalError, match="pigdm produced NaN or Inf at step 6 of 11"):
        run(p, 1, 11, denoiser=NaNDenoiser(p.denoiser, 500))
    y = p.y.clone()
    y[..., 0, 0] = float("nan")
    with pytest.raises(NumericalError, match="at step 1 of 11; the guidance weight=1"):
        run(p, 1, 11, y=y)
    with pytest.raises(NumericalError, match="pigdm produced NaN or Inf at step"):
        run(p, 1, 11, params=PiGDMParams(weight=1e200))


def test_callback_defaults_and_registry(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []
    pigdm(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=7, generator=torch.Generator().manual_seed(0),
          callback=lambda info: seen.append((info["step"], info["total"], info["t"], info["x"].shape, info["x0"].shape)))
    assert [s[0] for s in seen] == list(range(7)) and all(s[1] == 7 for s in seen)
    assert seen[0][2] == 999 and seen[-1][2] == 0 and seen[0][3] == seen[0][4] == (1, *p.shape)
    assert PiGDMParams().eta == 1.0 and PiGDMParams().weight == 1.0
    info = pigdm_module.INFO
    assert info.name == "pigdm" and info.backprop_network and not info.needs_svd and info.nfe(100) == 100
    for task in TASKS:
        d = defaults_for("pigdm", task)
        assert isinstance(d.params, PiGDMParams) and d.steps == 20 and d.params.eta == 1.0


def test_bad_parameters(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    for eta in (-0.1, 1.5, float("nan")):
        with pytest.raises(RestoreError, match="eta"):
            run(p, 1, 5, params=PiGDMParams(eta=eta))
    for weight in (-1.0, float("inf"), float("nan")):
        with pytest.raises(RestoreError, match="weight"):
            run(p, 1, 5, params=PiGDMParams(weight=weight))
    with pytest.raises(RestoreError, match="steps"):
        run(p, 1, 0)
