"""DAPS on Gaussian toy problems (float64) and on nonlinear operators; what the contract suite does not cover.

The pieces are checked against closed forms where they exist: the annealing ladder against EDM's
polynomial spacing, the ODE's x̂0 against the exact probability-flow map of a Gaussian prior, and one
level's Langevin dynamics against the exact Gaussian N(x̂0, r² I) × likelihood. Tolerances are measured
values with margin. The end of the file checks RED-Diff on nonlinear operators (the same change).
"""

from __future__ import annotations

import math

import pytest
import torch

import operators
from operators.base import NonlinearOperator
from operators.jpeg import JPEG, JPEGTables
from restore.noise import GaussianNoise, NoNoise
from restore.prior.denoiser import Denoiser
from restore.prior.gaussian import dense_matrix, gaussian_posterior
from restore.samplers import SAMPLERS, check_operator
from restore.samplers import daps as daps_module
from restore.samplers.daps import DAPSParams, annealing_levels, daps, daps_nfe, langevin, misfit, ode_levels, ode_x0, poly_sigmas
from restore.samplers.reddiff import REDDiffParams, data_gradient, reddiff

SIGMA = 0.05
TOY = DAPSParams(lr=1e-3, sigma_min=0.02, langevin_steps=50)  # the contract's toy setting
pytestmark = pytest.mark.usefixtures("one_thread")


def run(p, k: int, steps: int, params=TOY, operator=None, y=None, noise=None, denoiser=None, seed: int = 0, sampler=daps):
    y = p.y if y is None else y
    return sampler(p.denoiser if denoiser is None else denoiser, p.operator if operator is None else operator,
                   y.repeat(k, *([1] * (y.dim() - 1))), noise=GaussianNoise(SIGMA) if noise is None else noise,
                   steps=steps, generator=torch.Generator().manual_seed(seed), params=params)


class Counting(Denoiser):
    """``inner`` counting its network evaluations (calls, each on the whole batch)."""

    def __init__(self, inner: Denoiser) -> None:
        super().__init__(inner.betas)
        self.inner, self.calls = inner, 0

    def eps(self, x_t, t):
        self.calls += 1
        return self.inner.eps(x_t, t)


class Saturate(NonlinearOperator):
    """y = tanh(2x) on the pixels of a fixed random half-mask: nonlinear, differentiable, no pinv."""

    name = "test_saturate"

    def __init__(self, in_shape) -> None:
        super().__init__(self.name, in_shape)
        mask = (torch.rand(in_shape, generator=torch.Generator().manual_seed(3)) < 0.5).double()
        self.register_buffer("mask", mask[None])

    def A(self, x):
        return self.mask * torch.tanh(2 * x)


def test_annealing_ladder_is_the_official_poly7_ladder_then_zero(gaussian_problem):
    denoiser = gaussian_problem("identity", SIGMA).denoiser
    sigmas = poly_sigmas(100.0, 0.1, 200, 7.0)
    assert sigmas[0] == pytest.approx(100.0) and sigmas[-1] == pytest.approx(0.1)
    # evenly spaced in σ^(1/7)
    roots = torch.tensor(sigmas, dtype=torch.float64) ** (1 / 7)
    torch.testing.assert_close(roots.diff(), torch.full((199,), float(roots[1] - roots[0]), dtype=torch.float64))
    levels = annealing_levels(denoiser, 200, DAPSParams())
    assert len(levels) == 201 and levels[-1] == (0.0, 0.0)
    ts, sig = zip(*levels[:-1])
    assert all(a > b for a, b in zip(ts, ts[1:])) and all(a > b for a, b in zip(sig, sig[1:]))
    # the σ's are the denoiser's own at the fractional timesteps: the targets up to the interpolation (measured 2e-4)
    torch.testing.assert_close(torch.tensor(sig, dtype=torch.float64), torch.tensor(sigmas, dtype=torch.float64), rtol=2e-3, atol=0)
    # ODE levels: ode_steps + 1, starting at the annealing level itself, ending at 0
    ode = ode_levels(denoiser, levels[10], DAPSParams(ode_steps=5))
    assert len(ode) == 6 and ode[0] == levels[10] and ode[-1] == (0.0, 0.0)
    assert all(a[1] > b[1] for a, b in zip(ode, ode[1:]))
    assert ode_levels(denoiser, levels[10], DAPSParams()) == [levels[10], (0.0, 0.0)]


def test_ode_x0_is_tweedie_for_one_step_and_approaches_the_exact_flow(gaussian_problem):
    p = gaussian_problem("identity", SIGMA)
    d = p.denoiser
    t, sigma = annealing_levels(d, 10, DAPSParams())[3]  # σ ≈ 19
    x = d.mean.reshape(1, *p.shape) + sigma * torch.randn(1, *p.shape, generator=torch.Generator().manual_seed(1),
                                                          dtype=torch.float64)
    tweedie = d.denoise(x / math.sqrt(1 + sigma**2), t)
    torch.testing.assert_close(ode_x0(d, x, ode_levels(d, (t, sigma), DAPSParams(ode_steps=1))), tweedie, rtol=0, atol=0)
    # the probability-flow ODE of N(μ, Σ) maps x_σ to μ + V diag(sqrt(λ / (λ + σ²))) Vᵀ (x_σ - μ)
    coeffs = (x.reshape(-1) - d.mean) @ d.eigvecs
    exact = d.mean + (coeffs * (d.eigvals / (d.eigvals + sigma**2)).sqrt()) @ d.eigvecs.T
    errors = [(ode_x0(d, x, ode_levels(d, (t, sigma), DAPSParams(ode_steps=k))).reshape(-1) - exact).abs().max().item()
              for k in (1, 5, 50)]
    # measured 0.51, 0.17, 0.02 (Euler is first order)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.04, errors


def test_langevin_samples_the_gaussian_times_likelihood_at_one_level(gaussian_problem):
    """One level's target is N(x0; x̂0, r² I) · exp(-‖y - A x0‖² / (2 σ_y²)): Gaussian for a linear A, known exactly."""
    p = gaussian_problem("blur:gaussian:3:0.8", SIGMA)
    x0_hat = p.denoiser.mean.reshape(1, *p.shape) + 0.1
    r, sigma_y, chains = 0.2, SIGMA, 400
    n = x0_hat.numel()
    mean, cov = gaussian_posterior(x0_hat.reshape(-1), r**2 * torch.eye(n, dtype=torch.float64),
                                   dense_matrix(p.operator, p.shape), p.y, sigma_y)
    # lr (1/r² + ‖A‖²/σ_y²) ≈ 0.085: discretisation bias ~2% on the std; 1000 steps relax the slowest direction 5×
    x = langevin(p.operator, p.y.repeat(chains, 1, 1, 1), x0_hat.repeat(chains, 1, 1, 1), r=r, sigma_y=sigma_y,
                 lr=2e-4, steps=1000, generator=torch.Generator().manual_seed(0)).reshape(chains, -1)
    std_ratio = x.std(dim=0) / cov.diagonal().sqrt()
    # measured: max mean error 0.026 (MC error 0.156/√400 per pixel), std ratios 0.91–1.07, their mean ≈ 1.0
    assert (x.mean(dim=0) - mean).abs().max().item() < 0.045
    assert 0.95 < std_ratio.mean().item() < 1.06 and 0.8 < std_ratio.min().item() and std_ratio.max().item() < 1.2
    assert cov.diagonal().sqrt().max().item() < 0.8 * r  # the likelihood matters: the prior alone would give std r


def test_each_level_runs_langevin_with_the_decayed_step_and_r_scale(gaussian_problem, monkeypatch):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []

    def spy(operator, y, x0_hat, *, r, sigma_y, lr, steps, generator):
        seen.append((r, sigma_y, lr, steps))
        return x0_hat

    monkeypatch.setattr(daps_module, "langevin", spy)
    params = DAPSParams(lr=1e-3, lr_min_ratio=0.1, r_scale=0.5, langevin_steps=7)
    run(p, 1, 10, params=params)
    sigmas = [s for _, s in annealing_levels(p.denoiser, 10, params)[:-1]]
    assert [s[3] for s in seen] == [7] * 10 and all(s[1] == SIGMA for s in seen)
    assert [s[0] for s in seen] == pytest.approx([0.5 * s for s in sigmas])
    assert [s[2] for s in seen] == pytest.approx([1e-3 * (1 + i / 10 * (0.1 - 1)) for i in range(10)])  # legacy get_lr
    seen.clear()
    run(p, 1, 3, params=params, noise=NoNoise())
    assert all(s[1] == daps_module.SIGMA_Y_FLOOR for s in seen)  # noiseless: the official τ = 0.01
    seen.clear()
    run(p, 1, 3, params=DAPSParams(sigma_y=0.3))
    assert all(s[1] == 0.3 for s in seen)


def test_nfe_is_annealing_steps_times_ode_steps(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    params = DAPSParams(ode_steps=3, langevin_steps=2, lr=1e-4)
    counting = Counting(p.denoiser)
    run(p, 2, 7, params=params, denoiser=counting)
    assert counting.calls == 21 == daps_nfe(7, params) == SAMPLERS["daps"].nfe(7, params)
    assert daps_nfe(50, DAPSParams(ode_steps=2)) == 100


def test_noiseless_measurements_use_the_floor_and_keep_observed_pixels(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.operator.A(p.x)
    # σ_y = 0.01 (the floor) with the official lr 1e-4: measured max error 0.041, mean 0.015
    x = run(p, 8, 50, params=DAPSParams(langevin_steps=50), y=y, noise=NoNoise())
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    err = (p.operator.A(x) - y)[observed].abs()
    assert err.max().item() < 0.08 and err.mean().item() < 0.03


def test_runs_on_jpeg_and_lowers_the_misfit(gaussian_problem):
    p = gaussian_problem("identity", SIGMA, shape=(3, 16, 16))
    op = JPEG(JPEGTables.standard(50, "444"), (3, 16, 16)).double()
    check_operator(SAMPLERS["daps"], op)  # accepted: needs_linear is False
    y = op.A_exact(p.x.clamp(-1, 1)).repeat(2, 1)
    # y is on the DCT scale (‖A‖ ≈ 150): σ_y = 2 DCT units, lr 1e-4 keeps lr ‖A‖²/σ_y² below 1
    params = DAPSParams(sigma_y=2.0, lr=1e-4, lr_min_ratio=1.0, langevin_steps=15)
    x = run(p, 1, 12, params=params, operator=op, y=y, noise=NoNoise())
    prior_only = run(p, 1, 12, params=DAPSParams(langevin_steps=0), operator=op, y=y, noise=NoNoise())
    fit, free = misfit(op, y, x).sqrt(), misfit(op, y, prior_only).sqrt()
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    assert (fit < 0.15 * free).all(), (fit, free)  # measured 29–42 against 710–760


def test_runs_on_a_nonlinear_operator_without_pinv_and_lowers_the_misfit(gaussian_problem):
    p = gaussian_problem("identity", SIGMA)
    op = Saturate(p.shape).double()
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    x = run(p, 4, 30, operator=op, y=y)
    prior_only = run(p, 4, 30, params=DAPSParams(langevin_steps=0), operator=op, y=y)
    fit, free = misfit(op, y, x).sqrt(), misfit(op, y, prior_only).sqrt()
    assert (fit < 0.25 * free).all() and (fit < 0.3).all(), (fit, free)  # measured 0.19 against 2.1–3.5 (truth: 0.17)


# RED-Diff on nonlinear operators: the autograd data gradient, pinv (or zeros) as the start


def test_reddiff_autograd_gradient_equals_the_adjoint_for_a_linear_map(gaussian_problem):
    p = gaussian_problem("blur:gaussian:3:0.8", SIGMA)

    class AsNonlinear(NonlinearOperator):
        def __init__(self, inner) -> None:
            super().__init__("as-nonlinear", inner.in_shape)
            self.inner = inner

        def A(self, x):
            return self.inner.A(x)

    mu = torch.randn(2, *p.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = p.y.repeat(2, 1, 1, 1)
    torch.testing.assert_close(data_gradient(AsNonlinear(p.operator), y, mu), data_gradient(p.operator, y, mu))
    mri = operators.build("mri:equispaced:2:center_lines=2", p.shape).double()  # complex measurements
    ym = mri.A(p.x).repeat(2, 1, 1, 1)
    torch.testing.assert_close(data_gradient(AsNonlinear(mri), ym, mu), data_gradient(mri, ym, mu))


def test_reddiff_runs_on_a_nonlinear_operator_and_lowers_the_misfit(gaussian_problem):
    p = gaussian_problem("identity", SIGMA)
    op = Saturate(p.shape).double()
    check_operator(SAMPLERS["reddiff"], op)
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    x = run(p, 4, 100, params=REDDiffParams(lam=0.25, lr=0.05), operator=op, y=y, sampler=reddiff)
    start = misfit(op, y, torch.zeros_like(p.x)).sqrt()  # no pinv: μ starts at zeros
    fit = misfit(op, y, x).sqrt()
    assert torch.isfinite(x).all() and (fit < 0.15 * start).all(), (fit, start)  # measured 0.16–0.17 against 2.16


def test_reddiff_starts_a_jpeg_measurement_from_its_decoder(gaussian_problem):
    p = gaussian_problem("identity", SIGMA, shape=(3, 16, 16))
    op = JPEG(JPEGTables.standard(50, "444"), (3, 16, 16)).double()
    y = op.A_exact(p.x.clamp(-1, 1))
    one_step = run(p, 1, 1, params=REDDiffParams(lr=1e-9), operator=op, y=y, noise=NoNoise(), sampler=reddiff)
    torch.testing.assert_close(one_step, op.pinv(y), rtol=0, atol=1e-6)
    x = run(p, 2, 50, params=REDDiffParams(lr=0.05), operator=op, y=y, noise=NoNoise(), sampler=reddiff)
    assert torch.isfinite(x).all() and (misfit(op, y.repeat(2, 1), x).sqrt() < 50).all()  # measured 0–8.5 (y ~ 10³)
