"""Small helpers shared by the sampler test files (imported by name; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from operators import LinearOperator


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
