"""ΠGDM on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

ΠGDM approximates p(y | x_t) by a Gaussian around x̂0 with an isotropic covariance r_t² I (data of
unit variance), which the toy prior (variance 0.16, correlated pixels) does not have, so it is an
approximate sampler: the tolerances are measured ones with margin (each test says what was measured).
With η = 1 (the default, RED-diff's runs) every step draws fresh noise and the outputs spread like samples.
"""

from __future__ import annotations

import pytest
import torch

from restore.noise import GaussianNoise, NoNoise
from restore.samplers.pigdm import pigdm

SIGMA = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


def run(p, k: int, steps: int, params=None, seed: int = 0, noise=None, y=None, operator=None, denoiser=None,
        callback=None):
    y = p.y if y is None else y
    return pigdm(p.denoiser if denoiser is None else denoiser, p.operator if operator is None else operator,
                 y.repeat(k, *([1] * (y.dim() - 1))), noise=GaussianNoise(SIGMA) if noise is None else noise,
                 steps=steps, generator=torch.Generator().manual_seed(seed), params=params, callback=callback)


def test_noiseless_inpainting_nearly_keeps_observed_pixels(gaussian_problem):
    # the guidance pulls x̂0 onto A x = y through the Jacobian (≈ I at low noise), not by
    # replacement: measured max error 0.004 at 100 steps (0.023 at 20 steps)
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.operator.A(p.x)  # noiseless: the Gram shift is floored (σ_y = 0.002), no division by zero
    x = run(p, 16, 100, noise=NoNoise(), y=y)
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    err = (p.operator.A(x) - y)[observed].abs()
    assert torch.isfinite(x).all() and err.max().item() < 0.02, err.max().item()


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

