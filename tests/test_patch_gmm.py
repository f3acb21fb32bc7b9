"""The patch-GMM prior: exact against the Gaussian denoiser and Monte Carlo, EM recovery, I/O, sizes, registry."""

from __future__ import annotations

import math

import pytest
import torch

from restore.prior import registry
from restore.prior.gaussian import GaussianDenoiser
from restore.prior.patch_gmm import PatchGMMDenoiser, fit_patch_gmm, gmm_posterior, luma_marginal


def random_lowrank(K: int, D: int, d: int, gen: torch.Generator, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    means = scale * torch.randn(K, D, generator=gen, dtype=torch.float64)
    bases = torch.linalg.qr(torch.randn(K, D, d, generator=gen, dtype=torch.float64))[0]
    eigvals = 0.2 + torch.rand(K, d, generator=gen, dtype=torch.float64)
    delta = torch.full((K,), 0.01, dtype=torch.float64)
    weights = torch.rand(K, generator=gen, dtype=torch.float64) + 0.5
    return weights / weights.sum(), means, bases, eigvals, delta


def covariance(bases, eigvals, delta, k):
    return bases[k] @ torch.diag(eigvals[k]) @ bases[k].T + delta[k] * torch.eye(bases.shape[1], dtype=torch.float64)


def small_model(channels=3, patch=3, K=3, d=4, stride=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w, mu, U, lam, delta = random_lowrank(K, channels * patch * patch, d, gen, scale=0.3)
    return PatchGMMDenoiser(w, mu, U, lam, delta, patch=patch, channels=channels, stride=stride)


@pytest.mark.parametrize("channels, size", [(1, 4), (3, 3)])
def test_one_component_with_patch_equal_to_image_is_the_exact_gaussian_denoiser(channels, size):
    gen = torch.Generator().manual_seed(1)
    D = channels * size * size
    w, mu, U, lam, delta = random_lowrank(1, D, 5, gen)
    gmm = PatchGMMDenoiser(w, mu, U, lam, delta, patch=size, channels=channels, stride=1)
    exact = GaussianDenoiser(mu[0], covariance(U, lam, delta, 0), (channels, size, size))
    x_t = torch.randn(3, channels, size, size, generator=gen, dtype=torch.float64)
    for t in (0.0, 10.0, 137.5, 600.0, 999.0):
        torch.testing.assert_close(gmm(x_t, t), exact(x_t, t), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(gmm.eps(x_t, t), exact.eps(x_t, t), rtol=1e-7, atol=1e-7)
    # float32 path agrees to float32 accuracy
    torch.testing.assert_close(gmm(x_t.float(), 200.0), exact(x_t, 200.0).float(), rtol=1e-4, atol=1e-4)


def test_patch_posterior_mean_matches_importance_sampling_for_two_components():
    gen = torch.Generator().manual_seed(2)
    K, D, d = 2, 4, 2
    w, mu, U, lam, delta = random_lowrank(K, D, d, gen)
    mu[1] = -mu[0] + 1.0  # well apart
    n = 400_000
    comp = torch.multinomial(w, n, replacement=True, generator=gen)
    chol = torch.linalg.cholesky(torch.stack([covariance(U, lam, delta, k) for k in range(K)]))
    x = mu[comp] + (chol[comp] @ torch.randn(n, D, 1, generator=gen, dtype=torch.float64)).squeeze(-1)
    sigma = 0.6
    z = torch.stack([x[0] + sigma * torch.randn(D, generator=gen, dtype=torch.float64),
                     0.5 * (mu[0] + mu[1]) + 0.3 * torch.randn(D, generator=gen, dtype=torch.float64)])
    resp, mean, _ = gmm_posterior(z, w.log(), mu, U, lam, delta, sigma**2)
    for i in range(z.shape[0]):
        logw = -0.5 * ((x - z[i]) ** 2).sum(1) / sigma**2
        weights = (logw - logw.max()).exp()
        mc_mean = (weights[:, None] * x).sum(0) / weights.sum()
        mc_resp = torch.stack([(weights * (comp == k)).sum() for k in range(K)]) / weights.sum()
        ess = weights.sum() ** 2 / (weights**2).sum()
        assert ess > 2000
        torch.testing.assert_close(mean[i], mc_mean, atol=0.03, rtol=0)
        torch.testing.assert_close(resp[i], mc_resp, atol=0.02, rtol=0)


def test_em_recovers_weights_and_means_of_a_known_two_component_lowrank_gmm():
    gen = torch.Generator().manual_seed(3)
    K, C, p, d = 2, 2, 2, 2
    D = C * p * p
    _, mu, U, lam, delta = random_lowrank(K, D, d, gen, scale=2.0)
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    n = 4000
    comp = torch.multinomial(w, n, replacement=True, generator=gen)
    chol = torch.linalg.cholesky(torch.stack([covariance(U, lam, delta, k) for k in range(K)]))
    x = mu[comp] + (chol[comp] @ torch.randn(n, D, 1, generator=gen, dtype=torch.float64)).squeeze(-1)
    model = fit_patch_gmm(x.float(), K=2, patch=p, rank=d, iters=10, generator=torch.Generator().manual_seed(0))
    got_w, got_mu = model.log_pi.exp(), model.mu
    order = [0, 1] if (got_mu[0] - mu[0]).norm() < (got_mu[1] - mu[0]).norm() else [1, 0]
    torch.testing.assert_close(got_w[order], w, atol=0.03, rtol=0)
    torch.testing.assert_close(got_mu[order], mu, atol=0.1, rtol=0)
    for j, k in enumerate(order):  # the fitted subspaces are the true ones (principal angles near 0)
        overlap = torch.linalg.svdvals(model.U[k].T @ U[j])
        assert overlap.min() > 0.95
        assert abs(float(model.delta[k]) - 0.01) < 0.005


def test_save_load_round_trip(tmp_path):
    model = small_model()
    x_t = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(4))
    path = tmp_path / "gmm.safetensors"
    model.save(path)
    loaded = PatchGMMDenoiser.load(path)
    assert loaded.config() == model.config()
    torch.testing.assert_close(loaded(x_t, 250), model(x_t, 250), rtol=1e-5, atol=1e-5)
    model.save(path, dtype=torch.float16)  # the compact form: fp16 bases, re-orthonormalised on load
    assert PatchGMMDenoiser.load(path, stride=2).stride == 2
    half = PatchGMMDenoiser.load(path)
    torch.testing.assert_close(half.U.transpose(1, 2) @ half.U, torch.eye(4, dtype=torch.float64).expand(3, 4, 4), atol=1e-12, rtol=0)
    assert (half(x_t, 250) - model(x_t, 250)).abs().max() < 5e-3


@pytest.mark.parametrize("shape, stride, dtype", [((1, 3, 5, 7), 1, torch.float32), ((2, 3, 13, 17), 2, torch.float64),
                                                  ((1, 3, 2, 1), 3, torch.float32), ((2, 1, 10, 9), 2, torch.float32)])
def test_any_image_size_batch_and_dtype(shape, stride, dtype):
    model = small_model(stride=stride)
    x_t = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    out = model(x_t, torch.tensor([300.0] * shape[0]))
    assert out.shape == x_t.shape and out.dtype == dtype and torch.isfinite(out).all()
    # batched with per-image timesteps equals one image at a time
    t = torch.tensor([100.0, 700.0][: shape[0]])
    together = model(x_t, t)
    for b in range(shape[0]):
        torch.testing.assert_close(together[b : b + 1], model(x_t[b : b + 1], t[b]))
    assert model.eps(x_t, 300.0).shape == x_t.shape


def test_nearly_noiseless_input_is_returned_and_heavy_noise_gives_the_prior_mean():
    model = small_model(stride=1)
    x = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert (model.denoise_image(x, 1e-12) - x).abs().max() < 1e-6
    far = model.denoise_image(x[..., :3, :3], 1e8)  # responsibilities → π, Wiener gains → 0: the patch is Σ π_k μ_k
    prior_mean = (model.log_pi.exp()[:, None] * model.mu).sum(0).reshape(3, 3, 3)
    torch.testing.assert_close(far[0], prior_mean, atol=1e-6, rtol=0)


def test_grayscale_uses_the_luma_marginal_of_the_rgb_model():
    model = small_model(channels=3, patch=2, d=3)
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    P = torch.kron(w[None], torch.eye(4, dtype=torch.float64))  # (4, 12): luma of each pixel
    mu_g, U_g, lam_g, delta_g = luma_marginal(model.mu, model.U, model.lam, model.delta, 2)
    for k in range(model.num_components):
        want = P @ covariance(model.U, model.lam, model.delta, k) @ P.T
        got = U_g[k] @ torch.diag(lam_g[k]) @ U_g[k].T + delta_g[k] * torch.eye(4, dtype=torch.float64)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(mu_g[k], P @ model.mu[k])
    gray = torch.randn(1, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    exact = gmm_posterior(gray.reshape(1, 4), model.log_pi, mu_g, U_g, lam_g, delta_g, 0.3)[1]
    torch.testing.assert_close(model.denoise_image(gray, 0.3).reshape(1, 4), exact)
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(1, 2, 4, 4), 10.0)


def test_registry_loads_the_shipped_patch_gmm():
    entry = registry.PRIORS["patch-gmm"]
    assert entry.embedded
    if not registry.weights_path(entry).is_file():
        pytest.skip("patch_gmm.safetensors not shipped")
    prior = registry.load_prior("patch-gmm")
    assert isinstance(prior, PatchGMMDenoiser) and prior.channels == 3
    assert registry.weights_path(entry).stat().st_size < 5e6
    x_t = torch.rand(1, 3, 12, 10) * 2 - 1
    assert torch.isfinite(prior(x_t, 50.0)).all()
    assert math.isfinite(float(prior.eps(x_t, 50.0).abs().max()))


def test_load_prior_dispatches_a_patch_gmm_file_by_its_metadata(tmp_path):
    path = tmp_path / "mine.safetensors"
    small_model().save(path)
    assert isinstance(registry.load_prior(str(path)), PatchGMMDenoiser)
