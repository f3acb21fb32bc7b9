"""Shared fixtures: a Gaussian toy prior with an exact posterior (sampler tests), a tiny random network prior (CLI tests)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from restore.prior.gaussian import GaussianDenoiser, dense_matrix, gaussian_posterior


@dataclass
class GaussianProblem:
    """x ~ N(mean, cov) on images of ``shape``, y = A x + N(0, σ²): the exact posterior is known."""

    shape: tuple[int, int, int]
    denoiser: GaussianDenoiser
    operator: object
    x: torch.Tensor  # (1, C, H, W) ground truth drawn from the prior
    y: torch.Tensor  # (1, ...) its measurement
    sigma: float
    post_mean: torch.Tensor  # (1, C, H, W)
    post_std: torch.Tensor  # (1, C, H, W) marginal standard deviations


def smooth_covariance(shape: tuple[int, int, int], length: float = 1.5, scale: float = 0.4) -> torch.Tensor:
    """Squared-exponential covariance over pixel positions (channels independent) plus a small nugget."""
    c, h, w = shape
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pos = torch.stack([ii.reshape(-1), jj.reshape(-1)], dim=1)
    k = scale**2 * torch.exp(-torch.cdist(pos, pos) ** 2 / (2 * length**2))
    cov = torch.block_diag(*([k] * c))
    return cov + 1e-3 * torch.eye(cov.shape[0], dtype=torch.float64)


def make_gaussian_problem(operator_spec: str, sigma: float, shape=(1, 6, 6), seed: int = 0) -> GaussianProblem:
    import operators

    gen = torch.Generator().manual_seed(seed)
    n = shape[0] * shape[1] * shape[2]
    mean = 0.2 * torch.randn(n, generator=gen, dtype=torch.float64)
    cov = smooth_covariance(shape)
    denoiser = GaussianDenoiser(mean, cov, shape)
    op = operators.build(operator_spec, shape).double()
    x = (mean + torch.linalg.cholesky(cov) @ torch.randn(n, generator=gen, dtype=torch.float64)).reshape(1, *shape)
    ax = op.A(x)
    y = ax + sigma * torch.randn(ax.shape, generator=gen, dtype=torch.float64)
    A = dense_matrix(op, shape)
    post_mean, post_cov = gaussian_posterior(mean, cov, A, y, sigma)
    return GaussianProblem(
        shape, denoiser, op, x, y, sigma,
        post_mean.reshape(1, *shape), post_cov.diagonal().clamp_min(0).sqrt().reshape(1, *shape),
    )


@pytest.fixture
def gaussian_problem():
    """Factory: ``gaussian_problem("random:0.5:seed=1", sigma=0.05)``."""
    return make_gaussian_problem


@pytest.fixture
def one_thread():
    """For tests on tiny tensors: intra-op threads only add overhead and oversubscribe shared cores
    (CG tests measured 14 s with torch's default threads vs 0.7 s with one). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory) -> str:
    """A randomly initialised 2-level UNet saved as a prior file: fast end-to-end runs, meaningless images."""
    from restore.prior.unet import UNetConfig, UNetModel
    from restore.prior.weights import save_prior

    torch.manual_seed(0)
    net = UNetModel(UNetConfig(image_size=32, num_channels=32, channel_mult="1,2", num_res_blocks=1,
                               attention_resolutions="", resblock_updown=True))
    path = tmp_path_factory.mktemp("prior") / "tiny.safetensors"
    save_prior(net, path)
    return str(path)
