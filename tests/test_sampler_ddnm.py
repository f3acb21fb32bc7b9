"""DDNM / DDNM+ on Gaussian toy problems (6×6 images, float64) whose exact posterior is known.

DDNM is an approximate posterior sampler (range-space replacement plus DDIM steps), so tolerances are
measured values with margin, not exactness claims: see each test. What is exact: noiseless
measurements are met exactly by the closed-form (SVD) path, and to CG tolerance by the A_pinv path.
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
from restore.samplers.base import draw_samples
from restore.samplers.ddnm import DDNMParams, ddnm, ddnm_nfe, effective_singular_value, travel_schedule
from sampler_helpers import NaNDenoiser, pinv, rms

SIGMA = 0.05


def run(p, k: int, steps: int = 100, seed: int = 0, sigma: float = SIGMA, y=None, operator=None, params=None,
        denoiser=None, callback=None):
    y = p.y if y is None else y
    return ddnm(p.denoiser if denoiser is None else denoiser, p.operator if operator is None else operator,
                y.repeat(k, *([1] * (y.dim() - 1))), noise=GaussianNoise(sigma), steps=steps,
                generator=torch.Generator().manual_seed(seed), params=params, callback=callback)


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


class HiddenMask(LinearOperator):
    """The same mask without an SVD: DDNM takes its A_pinv (CG) path."""

    def __init__(self, mask: torch.Tensor, spec: str = "hiddenmask") -> None:
        super().__init__(spec, tuple(mask.shape[1:]))
        self.register_buffer("mask", mask.double())

    def A(self, x):
        return self.mask.to(x.dtype) * x


class Dense(LinearOperator):
    """Test operator without an SVD: a dense matrix per image (A⁺ by CG)."""

    def __init__(self, matrix: torch.Tensor, in_shape, spec: str = "dense") -> None:
        super().__init__(spec, in_shape)
        self.register_buffer("matrix", matrix.double())

    def A(self, x):
        return (self.matrix.to(x.dtype) @ x.flatten(1)[..., None])[..., 0]

    def A_adjoint(self, y):
        return (self.matrix.mT.to(y.dtype) @ y[..., None])[..., 0].reshape(y.shape[0], *self.in_shape)


def random_mask(seed: int, keep: float = 0.5, shape=(1, 6, 6)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((1, *shape), generator=g, dtype=torch.float64) < keep).double()


def random_dense(seed: int, m: int = 24, n: int = 36) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((1, m, n), generator=g, dtype=torch.float64) / math.sqrt(n)


def problem_with(p, op, sigma: float, seed: int = 1):
    """The toy prior and x of ``p`` measured through ``op``: (y, exact posterior mean, exact posterior std)."""
    ax = op.A(p.x)
    y = ax + sigma * torch.randn(ax.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    mean, cov = gaussian_posterior(p.denoiser.mean, p.denoiser.cov, dense_matrix(op, p.shape), y, sigma)
    return y, mean.reshape(p.x.shape), cov.diagonal().clamp_min(0).sqrt().reshape(p.x.shape)


@pytest.mark.parametrize("spec, shape, tol, ratio_range", [
    # measured (256 samples, 100 steps): mean error 0.0088 (A⁺y: 0.19), sample std / posterior std 0.79
    ("bicubic:2", (1, 6, 6), 0.03, (0.5, 1.3)),
    # measured: mean error 0.014 (A⁺y: 0.16), std ratio 0.84
    ("gray", (3, 6, 6), 0.04, (0.5, 1.3)),
    # measured: mean error 0.065 (A⁺y: 0.34), std ratio 1.07 (pixel observations: replacing the range
    # part at every step biases the missing pixels a little; DDRM with 20 steps: 0.136)
    ("random:0.5:seed=1", (1, 6, 6), 0.1, (0.5, 1.6)),
])
def test_mean_of_samples_approaches_posterior_mean(gaussian_problem, spec, shape, tol, ratio_range):
    p = gaussian_problem(spec, SIGMA, shape=shape)
    samples = draw_samples(ddnm, p.denoiser, p.operator, p.y, num_samples=256, noise=GaussianNoise(SIGMA), steps=100,
                           generator=torch.Generator().manual_seed(0))
    err, err_pinv = rms(samples.mean, p.post_mean), rms(pinv(p.operator, p.y), p.post_mean)
    ratio = (samples.std / p.post_std).mean().item()
    assert err < tol and err < 0.3 * err_pinv, (err, err_pinv)
    assert ratio_range[0] < ratio < ratio_range[1], ratio


def test_scalar_ddnm_plus_without_svd_approaches_posterior_mean(gaussian_problem):
    # a dense 24×36 operator through A_pinv (CG) and the scalar DDNM+ (one effective singular value)
    p = gaussian_problem("identity", SIGMA)
    op = Dense(random_dense(3), p.shape)
    y, post_mean, post_std = problem_with(p, op, SIGMA)
    samples = draw_samples(ddnm, p.denoiser, op, y, num_samples=64, noise=GaussianNoise(SIGMA), steps=50,
                           generator=torch.Generator().manual_seed(0))
    err, err_pinv = rms(samples.mean, post_mean), rms(pinv(op, y), post_mean)
    ratio = (samples.std / post_std).mean().item()
    # measured: mean error 0.071 (A⁺y: 0.26), std ratio 0.89 (the scalar Σ_t / Φ_t is an approximation)
    assert err < 0.12 and err < 0.5 * err_pinv, (err, err_pinv)
    assert 0.3 < ratio < 2.0, ratio


def test_noiseless_inpainting_keeps_observed_pixels_exactly(gaussian_problem):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    y = p.operator.A(p.x)
    x = run(p, 8, sigma=0.0, y=y, steps=50)
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    assert (x - p.x.expand_as(x))[observed].abs().max().item() < 1e-12
    assert x[~observed].std().item() > 0.01  # the missing pixels are sampled, not copied


def test_noiseless_measurement_is_met_by_both_paths(gaussian_problem):
    p = gaussian_problem("bicubic:2", 0.0)
    x = run(p, 4, sigma=0.0, steps=50)
    assert (p.operator.A(x) - p.y).abs().max().item() < 1e-12
    op = Dense(random_dense(3), p.shape)  # no SVD: A_pinv by CG (relative tolerance 1e-6)
    y = op.A(p.x)
    x = run(p, 4, sigma=0.0, steps=50, operator=op, y=y)
    assert (op.A(x) - y).abs().max().item() < 1e-5 * y.abs().max().item()


def test_pinv_path_equals_closed_form_path_when_noiseless(gaussian_problem):
    # for a mask, V = I: the spectral state is the image, the random draws coincide, and CG's A⁺ is exact
    p = gaussian_problem("identity", SIGMA)
    mask = random_mask(1)
    y = mask * p.x
    a = run(p, 4, sigma=0.0, steps=30, operator=PixelMask(mask), y=y)
    b = run(p, 4, sigma=0.0, steps=30, operator=HiddenMask(mask), y=y)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_scalar_path_batch_with_per_image_operators_equals_one_by_one(gaussian_problem):
    """No SVD: per-image A_pinv by CG and per-image effective singular values (the contract suite checks
    the spectral path; full-rank matrices here, so CG converges for every image)."""
    p = gaussian_problem("identity", SIGMA)
    ops = [Dense(random_dense(s), p.shape) for s in (1, 2, 3)]
    xs = torch.cat([p.x, 0.5 * p.x, -p.x])
    ys = torch.cat([op.A(x[None]) for op, x in zip(ops, xs)])
    ys = ys + SIGMA * torch.randn(ys.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    stacked = type(ops[0]).stack(ops)
    assert stacked.batch_size == 3
    batch = ddnm(p.denoiser, stacked, ys, noise=GaussianNoise(SIGMA), steps=20,
                 generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    # CG runs until every image of the batch has converged, so the A_pinv path agrees to CG precision
    atol = 1e-6
    for b, s in enumerate((5, 6, 7)):
        one = ddnm(p.denoiser, ops[b], ys[b:b + 1], noise=GaussianNoise(SIGMA), steps=20,
                   generator=[torch.Generator().manual_seed(s)])
        torch.testing.assert_close(batch[b:b + 1], one, rtol=0, atol=atol)


# (the reflect-boundary blur is left out: its autograd adjoint makes each CG A⁺ of 200 iterations take
# seconds on CPU, too slow for a unit test; the Dense operator above covers the same A_pinv path)
def test_cg_max_iter_bounds_each_steps_pseudo_inverse(gaussian_problem, monkeypatch):
    p = gaussian_problem("identity", SIGMA, shape=(1, 8, 8))
    op = operators.build("mri:equispaced:2:center_lines=2", p.shape).double()
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    calls, pinv_of_op = [], op.A_pinv

    def counted(v, **kwargs):
        calls.append(kwargs.get("max_iter"))
        return pinv_of_op(v, **kwargs)

    monkeypatch.setattr(op, "A_pinv", counted)
    run(p, 2, steps=6, operator=op, y=y, params=DDNMParams(cg_max_iter=3))
    assert calls[1:] == [3] * 6  # the first call measures s_eff with the operator's own default
    calls.clear()
    run(p, 2, steps=6, operator=op, y=y)
    assert calls == [None] * 7


def test_effective_singular_value():
    shape = (1, 6, 6)
    assert torch.allclose(effective_singular_value(PixelMask(random_mask(1)), torch.zeros(1, *shape, dtype=torch.float64)),
                          torch.tensor([1.0], dtype=torch.float64))
    scaled = Dense(0.3 * torch.eye(36, dtype=torch.float64)[None], shape)
    assert torch.allclose(effective_singular_value(scaled, torch.zeros(1, 36, dtype=torch.float64)),
                          torch.tensor([0.3], dtype=torch.float64), atol=1e-8)
    stacked = Dense.stack([scaled, Dense(2.0 * torch.eye(36, dtype=torch.float64)[None], shape)])
    assert torch.allclose(effective_singular_value(stacked, torch.zeros(2, 36, dtype=torch.float64)),
                          torch.tensor([0.3, 2.0], dtype=torch.float64), atol=1e-8)


def test_time_travel_schedule_and_nfe(gaussian_problem):
    assert travel_schedule(5) == [4, 3, 2, 1, 0, -1]
    levels = travel_schedule(10, 3, 2)
    assert levels[0] == 9 and levels[-1] == -1
    assert all(abs(a - b) == 1 for a, b in zip(levels, levels[1:]))
    # jumps back L = 3 after arriving at levels 0, 3, 6 (< 10 - 3), once each (r - 1 = 1)
    turns = [levels[i] for i in range(1, len(levels) - 1) if levels[i - 1] > levels[i] < levels[i + 1]]
    assert turns == [6, 3, 0]
    assert ddnm_nfe(100) == 100 and ddnm_nfe(10, DDNMParams(travel_length=3, travel_repeat=2)) == 10 + 3 * 3
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []
    params = DDNMParams(travel_length=3, travel_repeat=2)
    x = run(p, 2, steps=10, sigma=0.0, y=p.operator.A(p.x), params=params, callback=lambda info: seen.append(info["step"]))
    assert seen == list(range(19))
    observed = (p.operator.A(torch.ones_like(p.x)) != 0).expand_as(x)
    assert (x - p.x.expand_as(x))[observed].abs().max().item() < 1e-12


def test_time_travel_helps_noiseless_inpainting(gaussian_problem):
    # pixel observations, noiseless (nearest:2 keeps one pixel in four; the posterior of a random mask
    # with σ = 0 is singular in the toy's closed form). Measured (128 samples, 50 steps): mean error
    # 0.077 without time travel, 0.046 with L = 5, r = 3
    p = gaussian_problem("nearest:2", 0.0)

    def err(params):
        s = draw_samples(ddnm, p.denoiser, p.operator, p.y, num_samples=128, noise=NoNoise(), steps=50,
                         generator=torch.Generator().manual_seed(0), params=params)
        return rms(s.mean, p.post_mean)

    plain, travel = err(None), err(DDNMParams(travel_length=5, travel_repeat=3))
    assert travel < 0.8 * plain, (plain, travel)


def test_nan_on_the_scalar_path_names_the_step(gaussian_problem):
    p = gaussian_problem("bicubic:2", SIGMA)
    op = Dense(random_dense(3), p.shape)  # timesteps 999, 899, ..., 0: t ≤ 500 from step 6
    with pytest.raises(NumericalError, match="ddnm produced NaN or Inf at step 6 of 11"):
        run(p, 1, steps=11, denoiser=NaNDenoiser(p.denoiser, 500), operator=op, y=op.A(p.x))
    # with time travel the steps count network evaluations: 10 steps, L = 3, r = 2 → 19
    with pytest.raises(NumericalError, match="at step 1 of 19"):
        run(p, 1, steps=10, denoiser=NaNDenoiser(p.denoiser, 1000), params=DDNMParams(travel_length=3, travel_repeat=2))


def test_defaults_table_has_every_task():
    from restore.samplers.defaults import TASKS, defaults_for

    for task in TASKS:
        d = defaults_for("ddnm", task)
        # the official 100 steps and η; CT's A⁺ capped at 5 CG iterations (RESULTS: tuned on image 40)
        expected = DDNMParams(eta=0.85, cg_max_iter=5 if task == "ct" else None)
        assert d.steps == 100 and d.params == expected


def test_time_travel_longer_than_the_run_is_refused(gaussian_problem):
    p = gaussian_problem("bicubic:2", SIGMA)
    with pytest.raises(RestoreError, match="travel_length=5 must be smaller than steps=5"):
        run(p, 1, steps=5, params=DDNMParams(travel_length=5, travel_repeat=2))


def test_on_a_jpeg_file_the_result_re_encodes_to_the_files_coefficients(tiny_prior):
    """DDRM-JPEG's step (h†(h(x̂0)) - h†(y) for A⁺(A x̂0 - y)) swaps x̂0's quantised coefficients for the file's, so
    whatever the prior draws (here a random network), the result lies in the file's quantisation bins."""
    from operators.jpeg import JPEG, JPEGTables
    from restore.prior.registry import load_prior
    from restore.samplers.ddnm import DDNMParams, ddnm

    x = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = ((x + 1) * 127.5).round() / 127.5 - 1
    op = JPEG(JPEGTables.standard(30), (3, 32, 32))
    y = op.A_exact(x)
    out = ddnm(load_prior(tiny_prior), op, y, noise=GaussianNoise(0.0), steps=5,
               generator=torch.Generator().manual_seed(0), params=DDNMParams())
    same = float((op.A_exact(out.clamp(-1, 1)) == y).float().mean())
    assert same > 0.9, same
    start = torch.randn((1, 3, 32, 32), generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    assert float((op.A_exact(start) == y).float().mean()) < same - 0.2  # an image from elsewhere does not (0.58)
