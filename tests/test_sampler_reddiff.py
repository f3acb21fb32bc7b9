"""RED-Diff on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

RED-Diff is a mean-seeking optimiser, not a sampler: its output approaches the posterior mean
(which is also the MAP of a Gaussian posterior) and varies little with the seed. The tolerances are
measured ones with margin. The toy uses a smaller Adam learning rate (0.05) than the paper's
ImageNet setting (0.25–0.5): with Adam every pixel moves by about lr per step, which on a 6×6
toy with 300 steps leaves the iterate jittering by about lr.
"""

from __future__ import annotations

import torch

from restore.noise import GaussianNoise
from restore.samplers.reddiff import REDDiffParams, reddiff

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


def test_starts_from_a_regularised_inverse_on_an_ill_conditioned_blur(gaussian_problem):
    """Gaussian blur singular values fall to ~1e-7: the exact A⁺y amplifies the noise a million-fold.
    RED-Diff's start (AᵀA + σ_y² I)⁻¹Aᵀy keeps it bounded, so even one step lands near the image."""
    p = gaussian_problem("blur:gaussian:5:2.0", SIGMA, shape=(1, 8, 8))
    start = pinv(p.operator, p.y)
    assert rms(start, p.x) > 1.0  # the exact pseudo-inverse is useless here
    one_step = run(p, 1, 1, params=REDDiffParams(lam=0.25, lr=1e-6))
    assert rms(one_step, p.x) < 0.5
