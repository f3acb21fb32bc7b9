"""Small helpers shared by the sampler test files (imported by name; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from operators import LinearOperator
from restore.prior.denoiser import Denoiser


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square difference."""
    return (a - b).pow(2).mean().sqrt().item()


def pinv(operator, y: torch.Tensor) -> torch.Tensor:
    """A⁺y as a real image (the baseline every sampler must beat)."""
    x = operator.A_pinv(y)
    return x.real if x.is_complex() else x


class ReplicateBlur(LinearOperator):
    """A 3×3 binomial blur with replicate padding: no SVD, adjoint by autograd (the CG path)."""

    name = "test_replicate_blur"

    def __init__(self, in_shape) -> None:
        super().__init__(self.name, in_shape)
        k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64) / 16
        self.register_buffer("kernel", k.reshape(1, 1, 3, 3))

    def A(self, x):
        c = x.shape[1]
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.kernel.to(x.dtype).expand(c, 1, 3, 3), groups=c)


class MaskedFourier(LinearOperator):
    """Every other row of the orthonormal 2-D FFT: complex measurements of a real image, no SVD."""

    name = "test_masked_fourier"

    def __init__(self, in_shape) -> None:
        super().__init__(self.name, in_shape)
        rows = torch.zeros(in_shape[1], 1, dtype=torch.float64)
        rows[::2] = 1
        rows[1] = 1  # one more low frequency
        self.register_buffer("mask", rows)

    def A(self, x):
        return self.mask * torch.fft.fft2(x, norm="ortho")


def assert_batch_equals_one_by_one(sampler, problem, *, noise, steps: int, params=None, atol: float = 1e-10) -> None:
    """Three images with their own random masks and generators, run as one batch (stacked operators),
    give what each gives alone: per-image randomness never leaks across the batch."""
    import operators

    specs = ["random:0.5:seed=1", "random:0.3:seed=2", "random:0.7:seed=3"]
    ops = [operators.build(s, problem.shape).double() for s in specs]
    xs = torch.cat([problem.x, 0.5 * problem.x, -problem.x])
    ys = torch.cat([op.A(x[None]) for op, x in zip(ops, xs)])
    seeds = (5, 6, 7)
    batch = sampler(problem.denoiser, type(ops[0]).stack(ops), ys, noise=noise, steps=steps, params=params,
                    generator=[torch.Generator().manual_seed(s) for s in seeds])
    for b, s in enumerate(seeds):
        one = sampler(problem.denoiser, ops[b], ys[b:b + 1], noise=noise, steps=steps, params=params,
                      generator=[torch.Generator().manual_seed(s)])
        torch.testing.assert_close(batch[b:b + 1], one, rtol=0, atol=atol)


class NaNDenoiser(Denoiser):
    """``inner`` that returns NaN at timesteps t ≤ ``from_t``: samplers must name the step where it happened."""

    def __init__(self, inner: Denoiser, from_t: float) -> None:
        super().__init__(inner.betas)
        self.inner, self.from_t = inner, from_t

    def eps(self, x_t, t):
        e = self.inner.eps(x_t, t)
        return e * float("nan") if t <= self.from_t else e
