"""DPIR on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

For a Gaussian prior the MMSE denoiser is also the MAP denoiser, so half-quadratic splitting with
λ = 1 solves the MAP problem — whose answer is the posterior mean — as the ladder of noise levels
goes down and the iterations up. The tolerances are measured ones with margin (each test says what).
"""

from __future__ import annotations

import pytest
import torch

from restore.errors import NumericalError, RestoreError
from restore.noise import GaussianNoise, NoNoise
from restore.prior.schedule import timestep_for_sigma
from restore.samplers import TASKS
from restore.samplers import dpir as dpir_module
from restore.samplers.defaults import defaults_for
from restore.samplers.dpir import DPIRParams, dihedral, dihedral_inverse, dpir, noise_ladder
from sampler_helpers import MaskedFourier, NaNDenoiser, ReplicateBlur, assert_batch_equals_one_by_one, pinv, rms

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


def test_deterministic_without_renoise_and_seeded_with_it(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    gen = torch.Generator().manual_seed
    assert torch.equal(run(p, 10, generator=gen(1)), run(p, 10, generator=gen(2)))
    noisy = DPIRParams(lam=1.0, sigma_max=2.0, renoise=0.5, clip=False)
    a, b, c = (run(p, 10, noisy, generator=gen(s)) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_batch_with_per_image_generators_and_operators_equals_one_by_one(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    assert_batch_equals_one_by_one(dpir, p, noise=GaussianNoise(SIGMA), steps=10, params=DPIRParams(renoise=0.5, clip=False))


@pytest.mark.parametrize("make", [ReplicateBlur, MaskedFourier])
def test_operators_without_svd_run_and_beat_pseudo_inverse(gaussian_problem, make):
    p = gaussian_problem("identity", SIGMA, shape=(1, 8, 8))  # the prior and x; the operator below
    op = make(p.shape).double()
    assert not op.has_svd
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    x = run(p, 20, DPIRParams(clip=False, self_ensemble=False), operator=op, y=y)
    assert x.dtype == torch.float64 and x.shape == (1, *p.shape)
    # measured MSE 0.0061 (blur; A⁺y: 14, noise amplified) and 0.0025 (Fourier; A⁺y: 0.019)
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (pinv(op, y) - p.x).pow(2).mean().item()
    assert mse < 0.015 and mse < mse_pinv, (make.__name__, mse, mse_pinv)


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


def test_registry_and_defaults():
    info = dpir_module.INFO
    assert info.name == "dpir" and not info.backprop_network and not info.needs_svd and info.nfe(20) == 20
    for task in TASKS:
        d = defaults_for("dpir", task)
        assert isinstance(d.params, DPIRParams) and d.steps >= 1


def test_nan_raises_numerical_error_naming_the_step(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    params = DPIRParams(clip=False, sigma_max=0.8)  # ladder of 5: 0.8, 0.4, 0.2, 0.1, 0.05
    with pytest.raises(NumericalError, match="dpir produced NaN or Inf at step 4 of 5"):
        # NaN below σ 0.15: the last two levels
        run(p, 5, params, denoiser=NaNDenoiser(p.denoiser, float(timestep_for_sigma(p.denoiser.alphas_cumprod, 0.15))))


def test_bad_parameters(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    bad = [dict(lam=0.0), dict(lam=float("nan")), dict(sigma_max=-1.0), dict(sigma_max=float("inf")),
           dict(sigma_min=0.0), dict(sigma_min=1.0, sigma_max=0.5), dict(renoise=1.5), dict(renoise=-0.1),
           dict(cg_max_iter=0)]
    for kwargs in bad:
        name = next(iter(kwargs)).split("_")[0]
        with pytest.raises(RestoreError, match=name):
            run(p, 5, DPIRParams(clip=False, **kwargs))
    with pytest.raises(RestoreError, match="steps"):
        run(p, 0, DPIRParams(clip=False))


def test_task_defaults_fall_back_to_a_posterior_sampler_when_samples_are_asked_for():
    import operators
    from restore import api
    from restore.samplers import get_sampler

    op = operators.build("bicubic:2", (3, 8, 8))
    for task, name in api.DEFAULT_SAMPLER.items():
        fallback = api.POSTERIOR_DEFAULT.get(task, name)
        assert get_sampler(fallback).samples_posterior, task
        if not get_sampler(name).samples_posterior:
            assert task in api.POSTERIOR_DEFAULT, task
    assert api.choose_sampler("superres", op, None) == "dpir"
    assert api.choose_sampler("superres", op, None, num_samples=4) == "ddrm"
    with pytest.raises(RestoreError, match="dpir gives one estimate, not posterior samples"):
        api.choose_sampler("superres", op, "dpir", num_samples=4)
