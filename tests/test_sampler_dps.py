"""DPS on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

DPS is an approximate posterior sampler (x̂0's likelihood stands in for p(y | x_t)), so the
tolerances here are measured ones with margin, not exactness claims: see each test.
"""

from __future__ import annotations

import pytest
import torch

from restore.errors import NumericalError, RestoreError
from restore.noise import GaussianNoise, NoNoise, PoissonNoise
from restore.prior.denoiser import Denoiser
from restore.samplers import dps as dps_module
from restore.samplers.base import draw_samples
from restore.samplers.dps import DPSParams, dps
from sampler_helpers import NaNDenoiser, assert_batch_equals_one_by_one

SIGMA = 0.05


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


def pinv(problem) -> torch.Tensor:
    x = problem.operator.A_pinv(problem.y)
    return x.real if x.is_complex() else x


def run(problem, k: int, steps: int, zeta: float, seed: int = 0, noise=None, y=None, clip_x0: bool = False):
    y = problem.y if y is None else y
    return dps(problem.denoiser, problem.operator, y.repeat(k, *([1] * (y.dim() - 1))),
               noise=GaussianNoise(SIGMA) if noise is None else noise, steps=steps,
               generator=torch.Generator().manual_seed(seed), params=DPSParams(zeta=zeta, clip_x0=clip_x0))


@pytest.mark.parametrize("spec, zeta, tol", [
    # measured: mean error 0.03 (A⁺y: 0.37), sample std / posterior std 0.7
    ("random:0.5:seed=1", 0.5, 0.08),
    # measured: mean error 0.02 (A⁺y: 0.4), std ratio 1.1
    ("blur:gaussian:3:0.8", 1.0, 0.06),
])
def test_mean_of_samples_approaches_posterior_mean(gaussian_problem, spec, zeta, tol):
    p = gaussian_problem(spec, SIGMA)
    samples = draw_samples(dps, p.denoiser, p.operator, p.y, num_samples=512, noise=GaussianNoise(SIGMA), steps=100,
                           generator=torch.Generator().manual_seed(0), params=DPSParams(zeta=zeta, clip_x0=False))
    err, err_pinv = rms(samples.mean, p.post_mean), rms(pinv(p), p.post_mean)
    assert err < tol and err < 0.25 * err_pinv, (err, err_pinv)
    # DPS is approximate: its spread is only checked to be of the right order (measured 0.7 and 1.1)
    ratio = (samples.std / p.post_std).mean().item()
    assert 0.4 < ratio < 2.0, ratio


def test_noiseless_inpainting_keeps_observed_pixels(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.operator.A(p.x)  # noiseless
    # the gradient of the norm (not its square) moves x by about ζ per step however small the
    # residual, so exact consistency needs a small ζ and many steps: measured max error 0.015
    x = run(p, 16, 1000, 0.05, noise=NoNoise(), y=y)
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    err = (p.operator.A(x) - y)[observed].abs()
    assert err.max().item() < 0.05, err.max().item()


def test_same_seed_same_output_and_seeds_differ(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    a, b, c = run(p, 4, 20, 0.5, seed=3), run(p, 4, 20, 0.5, seed=3), run(p, 4, 20, 0.5, seed=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_with_per_image_generators_and_operators_equals_one_by_one(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    assert_batch_equals_one_by_one(dps, p, noise=GaussianNoise(SIGMA), steps=30, params=DPSParams(zeta=0.5))


def test_beats_pseudo_inverse(gaussian_problem):
    for spec in ("random:0.5:seed=1", "blur:gaussian:3:0.8"):
        p = gaussian_problem(spec, SIGMA)
        x = run(p, 64, 100, 0.5, clip_x0=True)  # with the official clamp of x̂0
        mse, mse_pinv = (x - p.x).pow(2).mean().item(), (pinv(p) - p.x).pow(2).mean().item()
        assert mse < 0.5 * mse_pinv, (spec, mse, mse_pinv)


def test_non_finite_measurement_raises_numerical_error_naming_the_step(gaussian_problem):
    # (a huge ζ gives huge but finite values on the linear toy prior: the gradient of the norm has
    # unit length, so the guard is exercised with NaN inputs and a NaN denoiser instead)
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.y.clone()
    y[..., 0, 0] = float("nan")
    with pytest.raises(NumericalError, match=r"dps produced NaN or Inf at step 1 of 50; the step size zeta=0.5"):
        run(p, 2, 50, 0.5, y=y)


def test_nan_denoiser_raises_numerical_error_naming_the_step(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    bad = NaNDenoiser(p.denoiser, from_t=500)  # timesteps 999, 899, ..., 0: t ≤ 500 from step 6
    with pytest.raises(NumericalError, match="at step 6 of 11"):
        dps(bad, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=11, generator=torch.Generator().manual_seed(0))


class LearnedVariance(Denoiser):
    """The toy prior with a constant 'learned variance' output v."""

    def __init__(self, inner: Denoiser, v: float) -> None:
        super().__init__(inner.betas)
        self.inner, self.v = inner, v

    def eps(self, x_t, t):
        return self.inner.eps(x_t, t)

    def eps_and_v(self, x_t, t):
        return self.inner.eps(x_t, t), torch.full_like(x_t, self.v)


def test_learned_variance_range(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)

    def go(denoiser):
        return dps(denoiser, p.operator, p.y.repeat(256, 1, 1, 1), noise=GaussianNoise(SIGMA), steps=20,
                   generator=torch.Generator().manual_seed(0), params=DPSParams(zeta=0.5))

    fixed = go(p.denoiser)
    # v = -1 is the fixed small variance β̃ exactly; v = 1 the larger β (more noise in each step)
    torch.testing.assert_close(go(LearnedVariance(p.denoiser, -1.0)), fixed, rtol=0, atol=1e-12)
    large = go(LearnedVariance(p.denoiser, 1.0))
    assert torch.isfinite(large).all() and not torch.allclose(large, fixed)


def test_poisson_noise_beats_pseudo_inverse(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    noise = PoissonNoise(50.0)
    y = noise(p.operator.A(p.x), generator=torch.Generator().manual_seed(1))
    x = run(p, 64, 100, 0.5, noise=noise, y=y)
    x_pinv = p.operator.A_pinv(y)
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (x_pinv - p.x).pow(2).mean().item()
    assert mse < 0.5 * mse_pinv, (mse, mse_pinv)
    # the Λ-weighted norm of Algorithm 2 is a different guidance than the Gaussian norm
    assert not torch.allclose(x, run(p, 64, 100, 0.5, noise=GaussianNoise(noise.sigma), y=y))


@pytest.mark.parametrize("spec", ["blur:gaussian:3:0.8:boundary=reflect", "mri:equispaced:2:center_lines=2"])
def test_operators_without_svd_run_and_beat_pseudo_inverse(gaussian_problem, spec):
    import operators

    p = gaussian_problem("identity", SIGMA, shape=(1, 8, 8))  # the prior and x; the operator below
    op = operators.build(spec, p.shape).double()
    assert not op.has_svd
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    x = dps(p.denoiser, op, y.repeat(8, *([1] * (y.dim() - 1))), noise=GaussianNoise(SIGMA), steps=50,
            generator=torch.Generator().manual_seed(0), params=DPSParams(zeta=0.5))
    assert x.dtype == torch.float64 and x.shape == (8, *p.shape)
    x_pinv = op.A_pinv(y)
    x_pinv = x_pinv.real if x_pinv.is_complex() else x_pinv
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (x_pinv - p.x).pow(2).mean().item()
    assert mse < mse_pinv, (spec, mse, mse_pinv)


def test_callback_and_registry(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []
    dps(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=7, generator=torch.Generator().manual_seed(0),
        callback=lambda info: seen.append((info["step"], info["total"], info["t"], info["x"].shape, info["x0"].shape)))
    assert [s[0] for s in seen] == list(range(7)) and all(s[1] == 7 for s in seen)
    assert seen[0][2] == 999 and seen[-1][2] == 0
    info = dps_module.INFO
    assert info.name == "dps" and info.backprop_network and not info.needs_svd and info.nfe(100) == 100


def test_bad_parameters(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    for zeta in (-1.0, float("inf"), float("nan")):
        with pytest.raises(RestoreError, match="zeta"):
            dps(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=5, params=DPSParams(zeta=zeta))
    with pytest.raises(RestoreError, match="steps"):
        dps(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=0)
