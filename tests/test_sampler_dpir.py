"""DPIR on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

For a Gaussian prior the MMSE denoiser is also the MAP denoiser, so half-quadratic splitting with
λ = 1 solves the MAP problem — whose answer is the posterior mean — as the ladder of noise levels
goes down and the iterations up. The tolerances are measured ones with margin (each test says what).
"""

from __future__ import annotations

import pytest
import torch

from restore.noise import GaussianNoise, NoNoise
from restore.samplers.dpir import DPIRParams, dihedral, dihedral_inverse, dpir, noise_ladder
from sampler_helpers import pinv, rms

SIGMA = 0.05
# λ = 1 is the exact splitting; the self-ensemble is off because the toy prior (random mean) is not
# symmetric under flips and rotations
EXACT = DPIRParams(lam=1.0, sigma_max=2.0, sigma_min=0.01, clip=False, self_ensemble=False)

pytestmark = pytest.mark.usefixtures("one_thread")


def run(p, steps: int, params=EXACT, y=None, operator=None, denoiser=None, generator=None, noise=None):
    return dpir(p.denoiser if denoiser is None else denoiser, p.operator if operator is None else operator,
                p.y if y is None else y, noise=GaussianNoise(SIGMA) if noise is None else noise, steps=steps,
                generator=generator, params=params)


@pytest.mark.parametrize("spec, tol", [
    # measured error to the posterior mean after 50 / 200 steps: 0.037 / 0.015 (A⁺y: 0.34)
    ("random:0.5:seed=1", 0.03),
    # measured 0.0036 / 0.0011 (A⁺y: 0.19)
    ("bicubic:2", 0.003),
    # measured 0.0028 / 0.0017 (the noisy image: 0.029)
    ("identity", 0.003),
])
def test_exact_splitting_converges_to_the_posterior_mean(gaussian_problem, spec, tol):
    p = gaussian_problem(spec, SIGMA)
    short, long = rms(run(p, 50), p.post_mean), rms(run(p, 200), p.post_mean)
    assert long < tol and long < 0.7 * short, (short, long)
    assert long < 0.1 * rms(pinv(p.operator, p.y), p.post_mean)


def test_self_ensemble_changes_nothing_under_a_symmetric_prior(gaussian_problem):
    from conftest import smooth_covariance
    from restore.prior.gaussian import GaussianDenoiser

    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    symmetric = GaussianDenoiser(torch.zeros(36, dtype=torch.float64), smooth_covariance(p.shape), p.shape)
    on = run(p, 12, DPIRParams(clip=False), denoiser=symmetric)
    off = run(p, 12, DPIRParams(clip=False, self_ensemble=False), denoiser=symmetric)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-10)
    # and it does turn the images: under the toy prior (random mean, not symmetric) the results differ
    assert not torch.allclose(run(p, 12, DPIRParams(clip=False)), run(p, 12, DPIRParams(clip=False, self_ensemble=False)))


def test_dihedral_views_are_the_eight_symmetries_and_invert():
    x = torch.randn(1, 2, 4, 6)
    views = [dihedral(x, k) for k in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert all(torch.equal(dihedral_inverse(v, k), x) for k, v in enumerate(views))
    assert torch.equal(dihedral(x, 9), dihedral(x, 1))


def test_default_parameters_beat_the_pseudo_inverse(gaussian_problem):
    # λ = 0.23, the ladder down to σ_n, 20 steps (no self-ensemble: the toy prior is not symmetric): measured error to the posterior mean 0.049 (A⁺y: 0.34)
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    x = run(p, 20, DPIRParams(clip=False, sigma_max=2.0, self_ensemble=False))
    assert rms(x, p.post_mean) < 0.08


def test_noiseless_inpainting_keeps_observed_pixels(gaussian_problem):
    # σ_n floored at 0.002: the last data step nearly projects onto A x = y (ρ = λ 4e-6 / σ_K² ≈ 0.009 at
    # σ_K = 0.01), and the last prior step, at σ 0.01, moves the observed pixels little: measured 0.0019
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.operator.A(p.x)
    x = run(p, 20, DPIRParams(clip=False, sigma_max=2.0, self_ensemble=False), y=y, noise=NoNoise())
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    assert (p.operator.A(x) - y)[observed].abs().max().item() < 0.005


def test_noise_ladder_is_geometric_from_sigma_max_to_the_noise_level(gaussian_problem):
    den = gaussian_problem("identity", SIGMA).denoiser
    ladder = noise_ladder(den, SIGMA, 5, DPIRParams(sigma_max=0.8))
    assert ladder[0] == pytest.approx(0.8) and ladder[-1] == pytest.approx(SIGMA)
    ratios = [a / b for a, b in zip(ladder, ladder[1:])]
    assert all(r == pytest.approx(ratios[0]) for r in ratios) and ratios[0] > 1
    # within the schedule's σ range (linear schedule: 0.01 … ~157); one step: the last level only
    assert noise_ladder(den, 0.002, 3, DPIRParams(sigma_max=1e4))[::2] == pytest.approx([float(den.sigma(999)), float(den.sigma(0))], rel=1e-6)
    assert noise_ladder(den, SIGMA, 1, DPIRParams()) == pytest.approx([SIGMA])
    assert noise_ladder(den, SIGMA, 4, DPIRParams(sigma_min=0.2))[-1] == pytest.approx(0.2)


def test_callback_sees_every_step_at_its_noise_level(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []
    dpir(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=6, params=DPIRParams(clip=False),
         callback=lambda info: seen.append((info["step"], info["total"], info["t"], info["x0"].shape)))
    assert [s[0] for s in seen] == list(range(6)) and all(s[1] == 6 for s in seen)
    ts = [s[2] for s in seen]
    assert all(a > b for a, b in zip(ts, ts[1:])) and seen[0][3] == (1, *p.shape)
    assert float(p.denoiser.sigma(ts[-1])) == pytest.approx(SIGMA, rel=1e-3)

