"""DPS on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

DPS is an approximate posterior sampler (x̂0's likelihood stands in for p(y | x_t)), so the
tolerances here are measured ones with margin, not exactness claims: see each test.
"""

from __future__ import annotations

import torch

from restore.noise import GaussianNoise, NoNoise, PoissonNoise
from restore.prior.denoiser import Denoiser
from restore.samplers.dps import DPSParams, dps

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


def test_noiseless_inpainting_keeps_observed_pixels(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.operator.A(p.x)  # noiseless
    # the gradient of the norm (not its square) moves x by about ζ per step however small the
    # residual, so exact consistency needs a small ζ and many steps: measured max error 0.015
    x = run(p, 16, 1000, 0.05, noise=NoNoise(), y=y)
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    err = (p.operator.A(x) - y)[observed].abs()
    assert err.max().item() < 0.05, err.max().item()


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

