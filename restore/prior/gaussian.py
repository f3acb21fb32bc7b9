"""A Gaussian prior x_0 ~ N(μ, Σ) over images of one fixed shape, with its exact denoiser.

E[x_0 | x_t] = μ + Σ a (a² Σ + (1 - ᾱ) I)⁻¹ (x_t - a μ) with a = sqrt(ᾱ_t). It implements the
:class:`~restore.prior.denoiser.Denoiser` interface, so every sampler runs on it unchanged; under a
linear operator with Gaussian noise its posterior is Gaussian and known in closed form
(:func:`gaussian_posterior`), which is how the samplers are tested.
"""

from __future__ import annotations

import torch
from torch import Tensor

from restore.prior.denoiser import Denoiser
from restore.prior.schedule import linear_betas


class GaussianDenoiser(Denoiser):
    """Exact denoiser of N(mean, cov) for images of shape ``shape`` (C, H, W); cov is n×n, n = C·H·W."""

    def __init__(self, mean: Tensor, cov: Tensor, shape: tuple[int, int, int], betas: Tensor | None = None) -> None:
        super().__init__(linear_betas() if betas is None else betas)
        n = mean.numel()
        if cov.shape != (n, n) or n != shape[0] * shape[1] * shape[2]:
            raise ValueError(f"mean of {n} entries, cov {tuple(cov.shape)} and shape {shape} do not fit together")
        eigvals, eigvecs = torch.linalg.eigh(cov.double())
        self.shape = tuple(shape)
        self.register_buffer("mean", mean.double().reshape(-1))
        self.register_buffer("cov", cov.double())
        self.register_buffer("eigvals", eigvals.clamp_min(0))
        self.register_buffer("eigvecs", eigvecs)

    def forward(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        a = self.alpha_bar(t, x_t).sqrt().reshape(-1, 1).double()
        flat = x_t.reshape(x_t.shape[0], -1).double()
        coeffs = (flat - a * self.mean) @ self.eigvecs
        gain = a * self.eigvals / (a * a * self.eigvals + (1 - a * a))
        x0 = self.mean + (gain * coeffs) @ self.eigvecs.T
        return x0.to(x_t.dtype).reshape(x_t.shape)

    denoise = forward

    def eps(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        ab = self.alpha_bar(t, x_t)
        return (x_t - ab.sqrt() * self.forward(x_t, t)) / (1 - ab).sqrt()


def gaussian_posterior(mean: Tensor, cov: Tensor, A: Tensor, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """Mean and covariance of x | y for x ~ N(mean, cov), y = A x + N(0, σ² I), with dense A (m × n).

    Written in the covariance form (no inverse of cov), so it also holds for σ = 0 when A cov Aᵀ is invertible.
    """
    mean, cov, A, y = mean.double(), cov.double(), A.double(), y.double().reshape(-1)
    gram = A @ cov @ A.T + sigma**2 * torch.eye(A.shape[0], dtype=torch.float64)
    gain = torch.linalg.solve(gram, A @ cov).T
    post_mean = mean + gain @ (y - A @ mean)
    post_cov = cov - gain @ A @ cov
    return post_mean, (post_cov + post_cov.T) / 2


def dense_matrix(operator, shape: tuple[int, int, int]) -> Tensor:
    """The m × n matrix of a (real) linear operator on one image of ``shape``, column by column."""
    n = shape[0] * shape[1] * shape[2]
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    return operator.double().A(basis).reshape(n, -1).T
