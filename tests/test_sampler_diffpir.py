"""DiffPIR on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

DiffPIR is a plug-and-play scheme, not an exact posterior sampler: with ζ = 1 (the official
inpainting setting) every step re-noises x̂0' with fresh noise and the outputs spread like
samples; with ζ < 1 part of the noise is the model's ε̂. The tolerances are measured ones with
margin (each test says what was measured).
"""

from __future__ import annotations

import pytest
import torch

from restore.errors import RestoreError
from restore.noise import GaussianNoise, NoNoise
from restore.prior.schedule import respaced_timesteps
from restore.samplers.base import draw_samples
from restore.samplers.diffpir import DiffPIRParams, diffpir, quad_timesteps
from sampler_helpers import pinv, rms

SIGMA = 0.05
SAMPLING = DiffPIRParams(clip_x0=False, lam=7.0, zeta=1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def run(p, k: int, steps: int, params=None, seed: int = 0, noise=None, y=None, operator=None, denoiser=None):
    y = p.y if y is None else y
    return diffpir(p.denoiser if denoiser is None else denoiser, p.operator if operator is None else operator,
                   y.repeat(k, *([1] * (y.dim() - 1))), noise=GaussianNoise(SIGMA) if noise is None else noise,
                   steps=steps, generator=torch.Generator().manual_seed(seed), params=params)


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

