"""RED-Diff on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

RED-Diff is a mean-seeking optimiser, not a sampler: its output approaches the posterior mean
(which is also the MAP of a Gaussian posterior) and varies little with the seed. The tolerances are
measured ones with margin. The toy uses a smaller Adam learning rate (0.05) than the paper's
ImageNet setting (0.25–0.5): with Adam every pixel moves by about lr per step, which on a 6×6
toy with 300 steps leaves the iterate jittering by about lr.
"""

from __future__ import annotations

import pytest
import torch

from restore.errors import NumericalError, RestoreError
from restore.noise import GaussianNoise
from restore.samplers import reddiff as reddiff_module
from restore.samplers.reddiff import REDDiffParams, reddiff
from sampler_helpers import NaNDenoiser, assert_batch_equals_one_by_one

SIGMA = 0.05
TOY = REDDiffParams(lam=0.25, lr=0.05)


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


def pinv(operator, y) -> torch.Tensor:
    x = operator.A_pinv(y)
    return x.real if x.is_complex() else x


def run(p, k: int, steps: int, params=TOY, seed: int = 0, denoiser=None, operator=None, y=None):
    y = p.y if y is None else y
    return reddiff(p.denoiser if denoiser is None else denoiser, p.operator if operator is None else operator,
                   y.repeat(k, *([1] * (y.dim() - 1))), noise=GaussianNoise(SIGMA), steps=steps,
                   generator=torch.Generator().manual_seed(seed), params=params)


@pytest.mark.parametrize("spec, tol_mean, tol_single", [
    # measured over 3 problems × 2 seeds: seed-mean error 0.036–0.052, per-run 0.074–0.082 (A⁺y:
    # 0.28–0.37), spread 0.05 (posterior std 0.09)
    ("random:0.5:seed=1", 0.08, 0.13),
    # measured over 3 problems × 2 seeds: seed-mean error 0.06–0.08, per-run 0.06–0.08 (A⁺y: 5–6,
    # noise amplified), spread 0.015 (posterior std 0.09): the data term ends up fitting y's noise a little
    ("blur:gaussian:3:0.8", 0.12, 0.13),
])
def test_output_approaches_posterior_mean_with_small_spread(gaussian_problem, spec, tol_mean, tol_single):
    p = gaussian_problem(spec, SIGMA)
    x = run(p, 32, 300)
    err_mean, err_single = rms(x.mean(0, keepdim=True), p.post_mean), rms(x, p.post_mean.expand_as(x))
    err_pinv = rms(pinv(p.operator, p.y), p.post_mean)
    assert err_mean < tol_mean and err_single < tol_single and err_single < 0.4 * err_pinv, (err_mean, err_single, err_pinv)
    # an optimiser, not a sampler: the spread over seeds stays well below the posterior std
    spread = x.std(0).mean().item()
    assert spread < 0.75 * p.post_std.mean().item(), (spread, p.post_std.mean().item())


def test_same_seed_same_output_and_seeds_differ(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    a, b, c = run(p, 4, 20, seed=3), run(p, 4, 20, seed=3), run(p, 4, 20, seed=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_with_per_image_generators_and_operators_equals_one_by_one(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    assert_batch_equals_one_by_one(reddiff, p, noise=GaussianNoise(SIGMA), steps=30, params=TOY)


def test_beats_pseudo_inverse_with_paper_learning_rate(gaussian_problem):
    for spec in ("random:0.5:seed=1", "blur:gaussian:3:0.8"):
        p = gaussian_problem(spec, SIGMA)
        x = run(p, 16, 100, params=REDDiffParams())  # λ = 0.25, lr = 0.5
        mse, mse_pinv = (x - p.x).pow(2).mean().item(), (pinv(p.operator, p.y) - p.x).pow(2).mean().item()
        assert mse < 0.5 * mse_pinv, (spec, mse, mse_pinv)


def test_nan_raises_numerical_error_naming_the_step(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    # timesteps 999, 899, ..., 0: t ≤ 500 from step 6
    with pytest.raises(NumericalError, match="reddiff produced NaN or Inf at step 6 of 11"):
        run(p, 1, 11, denoiser=NaNDenoiser(p.denoiser, 500))


@pytest.mark.parametrize("spec", ["blur:gaussian:3:0.8:boundary=reflect", "mri:equispaced:2:center_lines=2"])
def test_operators_without_svd_run_and_beat_pseudo_inverse(gaussian_problem, spec):
    import operators

    p = gaussian_problem("identity", SIGMA, shape=(1, 8, 8))  # the prior and x; the operator below
    op = operators.build(spec, p.shape).double()
    assert not op.has_svd
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    x = run(p, 4, 100, operator=op, y=y)
    assert x.dtype == torch.float64 and x.shape == (4, *p.shape)
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (pinv(op, y) - p.x).pow(2).mean().item()
    assert mse < mse_pinv, (spec, mse, mse_pinv)


def test_callback_defaults_and_registry(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []
    reddiff(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=7, generator=torch.Generator().manual_seed(0),
            callback=lambda info: seen.append((info["step"], info["total"], info["t"], info["x"].shape, info["x0"].shape)))
    assert [s[0] for s in seen] == list(range(7)) and seen[0][2] == 999 and seen[-1][2] == 0
    assert REDDiffParams().lam == 0.25 and REDDiffParams().weighting == "linear"
    info = reddiff_module.INFO
    assert info.name == "reddiff" and not info.backprop_network and not info.needs_svd and info.nfe(50) == 50


def test_bad_parameters(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    with pytest.raises(RestoreError, match="weighting"):
        run(p, 1, 5, params=REDDiffParams(weighting="cubic"))
    with pytest.raises(RestoreError, match="lr"):
        run(p, 1, 5, params=REDDiffParams(lr=0.0))
    with pytest.raises(RestoreError, match="steps"):
        run(p, 1, 0)


def test_starts_from_a_regularised_inverse_on_an_ill_conditioned_blur(gaussian_problem):
    """Gaussian blur singular values fall to ~1e-7: the exact A⁺y amplifies the noise a million-fold.
    RED-Diff's start (AᵀA + σ_y² I)⁻¹Aᵀy keeps it bounded, so even one step lands near the image."""
    p = gaussian_problem("blur:gaussian:5:2.0", SIGMA, shape=(1, 8, 8))
    start = pinv(p.operator, p.y)
    assert rms(start, p.x) > 1.0  # the exact pseudo-inverse is useless here
    one_step = run(p, 1, 1, params=REDDiffParams(lam=0.25, lr=1e-6))
    assert rms(one_step, p.x) < 0.5
