"""DDRM on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

DDRM is an approximate posterior sampler (eq. 7-8 are a variational family fitted per spectral
coordinate, with 20 coarse steps by default), so the tolerances are measured values with margin, not
exactness claims: see each test. What is exact: noiseless measurements are met exactly (A x = y).
"""

from __future__ import annotations

import math

import pytest
import torch

import operators
from operators.base import LinearOperator, SVDOperator
from restore.errors import NumericalError, RestoreError
from restore.noise import GaussianNoise, NoNoise
from restore.prior.gaussian import dense_matrix, gaussian_posterior
from restore.samplers import ddrm as ddrm_module
from restore.samplers.base import draw_samples
from restore.samplers.ddrm import DDRMParams, ddrm
from sampler_helpers import NaNDenoiser, rms

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


class Dense(LinearOperator):
    """Test operator without an SVD: a dense matrix per image (adjoint by autograd, A⁺ by CG)."""

    def __init__(self, matrix: torch.Tensor, in_shape, spec: str = "dense") -> None:
        super().__init__(spec, in_shape)
        self.register_buffer("matrix", matrix.double())

    def A(self, x):
        return (self.matrix.to(x.dtype) @ x.flatten(1)[..., None])[..., 0]


def random_mask(seed: int, keep: float = 0.5, shape=(1, 6, 6)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((1, *shape), generator=g, dtype=torch.float64) < keep).double()


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


def test_same_seed_same_output_and_seeds_differ(gaussian_problem):
    p = gaussian_problem("bicubic:2", SIGMA)
    a, b, c = run(p, 4, seed=3), run(p, 4, seed=3), run(p, 4, seed=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("kind", ["test-mask", "random"])
def test_batch_with_per_image_generators_and_operators_equals_one_by_one(gaussian_problem, kind):
    p = gaussian_problem("identity", SIGMA)
    if kind == "test-mask":
        ops = [PixelMask(random_mask(s, keep)) for s, keep in ((1, 0.5), (2, 0.3), (3, 0.7))]
    else:
        ops = [operators.build(s, p.shape).double() for s in ("random:0.5:seed=1", "random:0.3:seed=2", "random:0.7:seed=3")]
    xs = torch.cat([p.x, 0.5 * p.x, -p.x])
    ys = torch.cat([op.A(x[None]) for op, x in zip(ops, xs)])
    ys = ys + SIGMA * torch.randn(ys.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    stacked = type(ops[0]).stack(ops)
    assert stacked.singular_values().shape[0] == 3
    batch = ddrm(p.denoiser, stacked, ys, noise=GaussianNoise(SIGMA), steps=20,
                 generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    for b, s in enumerate((5, 6, 7)):
        one = ddrm(p.denoiser, ops[b], ys[b:b + 1], noise=GaussianNoise(SIGMA), steps=20,
                   generator=[torch.Generator().manual_seed(s)])
        torch.testing.assert_close(batch[b:b + 1], one, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spec, shape, max_ratio", [
    # MSE to the truth of the mean of 32 samples / that of A⁺y, measured: 0.163 (the exact posterior mean: 0.113)
    ("random:0.5:seed=1", (1, 6, 6), 0.4),
    # measured 0.382 (posterior mean 0.377): on this toy A⁺y of a 2× bicubic is already fair
    ("bicubic:2", (1, 6, 6), 0.6),
    # circular blur (an SVD operator): A⁺y amplifies the noise, measured ratio 3e-4
    ("blur:gaussian:3:0.8", (1, 6, 6), 0.05),
    # colorization with independent channels: the chroma posterior is the prior, so even the
    # posterior mean gains little over A⁺y (zero chroma): measured 0.861 (posterior mean 0.890)
    ("gray", (3, 6, 6), 0.97),
])
def test_beats_pseudo_inverse(gaussian_problem, spec, shape, max_ratio):
    p = gaussian_problem(spec, SIGMA, shape=shape)
    x = run(p, 32).mean(0, keepdim=True)
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (p.operator.A_pinv(p.y) - p.x).pow(2).mean().item()
    assert mse < max_ratio * mse_pinv, (spec, mse, mse_pinv)


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


def test_nan_raises_numerical_error_naming_the_step(gaussian_problem):
    p = gaussian_problem("bicubic:2", SIGMA)
    # timesteps 999, 899, ..., 0: t ≤ 500 from step 6
    with pytest.raises(NumericalError, match="ddrm produced NaN or Inf at step 6 of 11"):
        run(p, 1, steps=11, denoiser=NaNDenoiser(p.denoiser, 500))
    y = p.y.clone()
    y[..., 0, 0] = float("nan")
    with pytest.raises(NumericalError, match="ddrm produced NaN or Inf at step 1 of 20"):
        run(p, 1, y=y)


def test_refuses_operators_without_svd_naming_the_samplers_that_can(gaussian_problem):
    import restore.samplers.defaults  # noqa: F401  registers every sampler

    p = gaussian_problem("identity", SIGMA)
    dense = Dense(torch.eye(36, dtype=torch.float64)[None], p.shape)
    for op in (dense, operators.build("blur:gaussian:3:0.8:boundary=reflect", p.shape).double()):
        assert not op.has_svd
        with pytest.raises(RestoreError, match=r"ddrm needs an operator with an SVD") as info:
            ddrm(p.denoiser, op, op.A(p.x), noise=GaussianNoise(SIGMA), steps=5)
        message = str(info.value)
        assert op.spec in message and "dps" in message and "ddnm" in message
        assert "ddrm" not in message.split("use one of:")[1]


def test_callback_and_registry(gaussian_problem):
    p = gaussian_problem("bicubic:2", SIGMA)
    seen = []
    ddrm(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=7, generator=torch.Generator().manual_seed(0),
         callback=lambda info: seen.append((info["step"], info["total"], info["t"], info["x"].shape, info["x0"].shape)))
    assert [s[0] for s in seen] == list(range(7)) and all(s[1] == 7 for s in seen)
    assert seen[0][2] == 999 and seen[-1][2] == 0
    assert all(s[3] == s[4] == (1, *p.shape) for s in seen)
    info = ddrm_module.INFO
    assert info.name == "ddrm" and info.needs_svd and not info.backprop_network and info.nfe(20) == 20
    assert DDRMParams() == DDRMParams(eta=0.85, eta_b=1.0)


def test_defaults_table_has_every_task():
    from restore.samplers.defaults import defaults_for
    from restore.samplers.registry import SAMPLERS, TASKS

    assert SAMPLERS["ddrm"] is ddrm_module.INFO
    for task in TASKS:
        d = defaults_for("ddrm", task)
        assert d.steps == 20 and d.params.eta_b == 1.0 and 0 <= d.params.eta <= 1
    assert defaults_for("ddrm", "superres").params.eta == 0.85  # the paper's η where tuning kept it


def test_bad_parameters(gaussian_problem):
    p = gaussian_problem("bicubic:2", SIGMA)
    for bad in (DDRMParams(eta=-0.1), DDRMParams(eta=1.5), DDRMParams(eta=math.nan), DDRMParams(eta_b=1.1),
                DDRMParams(eta_b=-1.0), DDRMParams(eta_b=math.nan)):
        with pytest.raises(RestoreError, match="eta"):
            run(p, 1, steps=5, params=bad)
    for steps in (0, 1001):
        with pytest.raises(RestoreError, match="steps"):
            run(p, 1, steps=steps)
    with pytest.raises(RestoreError, match="real measurements"):
        ddrm(p.denoiser, p.operator, p.y.to(torch.complex128), noise=NoNoise(), steps=5)
