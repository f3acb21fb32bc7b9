"""DDRM on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

DDRM is an approximate posterior sampler (eq. 7-8 are a variational family fitted per spectral
coordinate, with 20 coarse steps by default), so the tolerances are measured values with margin, not
exactness claims: see each test. What is exact: noiseless measurements are met exactly (A x = y).
"""

from __future__ import annotations


import pytest
import torch

from operators.base import SVDOperator
from restore.errors import RestoreError
from restore.noise import GaussianNoise, NoNoise
from restore.prior.gaussian import dense_matrix, gaussian_posterior
from restore.samplers.base import draw_samples
from restore.samplers.ddrm import DDRMParams, ddrm
from sampler_helpers import rms

SIGMA = 0.05


def run(p, k: int, steps: int = 20, seed: int = 0, sigma: float = SIGMA, y=None, operator=None, params=None,
        denoiser=None):
    y = p.y if y is None else y
    return ddrm(p.denoiser if denoiser is None else denoiser, p.operator if operator is None else operator,
                y.repeat(k, *([1] * (y.dim() - 1))), noise=GaussianNoise(sigma), steps=steps,
                generator=torch.Generator().manual_seed(seed), params=params)


class PixelMask(SVDOperator):
    """Test operator: y = mask ⊙ x at full image size, one mask per image (a stackable inpainting SVD)."""

    def __init__(self, mask: torch.Tensor, spec: str = "pixelmask") -> None:
        super().__init__(spec, tuple(mask.shape[1:]))
        self.register_buffer("mask", mask.double())

    def singular_values(self):
        return self.mask.flatten(1)

    def V(self, z):
        return z.reshape(z.shape[0], *self.in_shape)

    def Vt(self, x):
        return x.flatten(1)

    U, Ut = V, Vt

    def A(self, x):
        return self.mask.to(x.dtype) * x


def problem_with(p, op, sigma: float, seed: int = 1):
    """The toy prior and x of ``p`` measured through ``op``: (y, exact posterior mean, exact posterior std)."""
    ax = op.A(p.x)
    y = ax + sigma * torch.randn(ax.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    mean, cov = gaussian_posterior(p.denoiser.mean, p.denoiser.cov, dense_matrix(op, p.shape), y, sigma)
    return y, mean.reshape(p.x.shape), cov.diagonal().clamp_min(0).sqrt().reshape(p.x.shape)


@pytest.mark.parametrize("spec, shape, tol, ratio_range", [
    # measured (256 samples): mean error 0.020 (A⁺y: 0.19), sample std / posterior std 0.76
    ("bicubic:2", (1, 6, 6), 0.05, (0.5, 1.3)),
    # measured: mean error 0.023 (A⁺y: 0.16), std ratio 0.79
    ("gray", (3, 6, 6), 0.05, (0.5, 1.3)),
    # measured: mean error 0.136 (A⁺y: 0.34), std ratio 1.86. Pixel observations are DDRM's weak case
    # with 20 steps: observed pixels are re-noised with fresh noise at every step (η_b = 1), which the
    # missing pixels see as a noisier measurement; it shrinks with more steps (next test)
    ("random:0.5:seed=1", (1, 6, 6), 0.2, (0.5, 2.5)),
])
def test_mean_of_samples_approaches_posterior_mean(gaussian_problem, spec, shape, tol, ratio_range):
    p = gaussian_problem(spec, SIGMA, shape=shape)
    samples = draw_samples(ddrm, p.denoiser, p.operator, p.y, num_samples=256, noise=GaussianNoise(SIGMA), steps=20,
                           generator=torch.Generator().manual_seed(0))
    err, err_pinv = rms(samples.mean, p.post_mean), rms(p.operator.A_pinv(p.y), p.post_mean)
    assert err < tol and err < 0.5 * err_pinv, (err, err_pinv)
    # a sampler: its spread is of the order of the posterior std (DDRM with 20 steps: measured above)
    ratio = (samples.std / p.post_std).mean().item()
    assert ratio_range[0] < ratio < ratio_range[1], ratio


@pytest.mark.parametrize("spec, tol", [
    # inpainting: mean error 0.136 with 20 steps, measured 0.058 with 200 (std ratio 0.94)
    ("random:0.5:seed=1", 0.09),
    # denoising: 20 steps leave the result close to a one-step estimate (measured error 0.047, worse
    # than A⁺y = y: 0.029); 200 steps refine it (measured 0.0036)
    ("identity", 0.012),
])
def test_more_steps_approach_the_posterior_mean(gaussian_problem, spec, tol):
    p = gaussian_problem(spec, SIGMA)
    samples = draw_samples(ddrm, p.denoiser, p.operator, p.y, num_samples=256, noise=GaussianNoise(SIGMA), steps=200,
                           generator=torch.Generator().manual_seed(0))
    assert rms(samples.mean, p.post_mean) < tol


def test_noiseless_inpainting_keeps_observed_pixels_exactly(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.operator.A(p.x)
    x = run(p, 8, sigma=0.0, y=y)
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    assert (x - p.x.expand_as(x))[observed].abs().max().item() < 1e-12
    assert x[~observed].std().item() > 0.01  # the missing pixels are sampled, not copied


@pytest.mark.parametrize("spec", ["bicubic:2", "nearest:2"])
def test_noiseless_measurement_is_met_exactly(gaussian_problem, spec):
    p = gaussian_problem(spec, 0.0)
    x = run(p, 8, sigma=0.0)
    assert (p.operator.A(x) - p.y).abs().max().item() < 1e-12


def test_per_coordinate_cases_against_a_test_operator(gaussian_problem):
    # singular values spanning the three cases of eq. 8, including exact zeros inside the first m
    p = gaussian_problem("identity", SIGMA)
    mask = torch.linspace(0, 1, 36, dtype=torch.float64).reshape(1, 1, 6, 6) ** 2
    mask[..., 0, :3] = 0.0
    op = PixelMask(mask)
    y, post_mean, _ = problem_with(p, op, SIGMA)
    samples = draw_samples(ddrm, p.denoiser, op, y, num_samples=256, noise=GaussianNoise(SIGMA), steps=20,
                           generator=torch.Generator().manual_seed(0))
    # measured: mean error 0.088 (A⁺y: 0.52, the tiny singular values amplify the noise); pixel-wise
    # observations are DDRM's weak case with 20 steps (see the inpainting case above)
    err, err_pinv = rms(samples.mean, post_mean), rms(op.A_pinv(y), post_mean)
    assert err < 0.15 and err < 0.3 * err_pinv, (err, err_pinv)
    assert torch.isfinite(samples.samples).all()


def test_defaults_table_has_every_task():
    from restore.samplers.defaults import TASKS, defaults_for

    for task in TASKS:
        d = defaults_for("ddrm", task)
        assert d.steps == 20 and d.params.eta_b == 1.0 and 0 <= d.params.eta <= 1
    assert defaults_for("ddrm", "superres").params.eta == 0.85  # the paper's η where tuning kept it


def test_complex_measurements_are_refused(gaussian_problem):
    p = gaussian_problem("bicubic:2", SIGMA)
    with pytest.raises(RestoreError, match="real measurements"):
        ddrm(p.denoiser, p.operator, p.y.to(torch.complex128), noise=NoNoise(), steps=5)


def test_the_strided_grid_visits_the_official_timesteps(gaussian_problem):
    """strided_grid: the official code's range(0, T, T // steps) (950, 900, …, 0 of 1000), one evaluation each."""
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    visited = {}
    for strided in (False, True):
        seen = []
        ddrm(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=8, generator=torch.Generator().manual_seed(0),
             callback=lambda info: seen.append(info["t"]), params=DDRMParams(strided_grid=strided))
        visited[strided] = seen
    total = p.denoiser.num_timesteps
    assert visited[True] == list(range(0, total, total // 8))[:8][::-1]
    assert visited[False][0] == total - 1 and visited[True][0] < total - 1 and visited[False][-1] == visited[True][-1] == 0
