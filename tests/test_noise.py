"""Noise models: levels, seeding, units and specs."""

from __future__ import annotations

import pytest
import torch

from restore.errors import RestoreError
from restore.noise import GaussianNoise, NoNoise, PoissonNoise, noise_from_spec


def test_gaussian_level_and_seed():
    y = torch.zeros(1, 3, 64, 64, dtype=torch.float64)
    a = GaussianNoise(0.1)(y, torch.Generator().manual_seed(1))
    b = GaussianNoise(0.1)(y, torch.Generator().manual_seed(1))
    c = GaussianNoise(0.1)(y, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.std().item() == pytest.approx(0.1, rel=0.05) and a.dtype == torch.float64


def test_complex_gaussian_sigma_is_per_complex_sample():
    y = torch.zeros(1, 1, 128, 128, dtype=torch.complex64)
    n = GaussianNoise(0.2)(y, torch.Generator().manual_seed(0))
    assert n.abs().pow(2).mean().sqrt().item() == pytest.approx(0.2, rel=0.05)
    assert n.real.std().item() == pytest.approx(0.2 / 2**0.5, rel=0.05)


def test_poisson_mean_and_variance_follow_the_photon_count():
    rate = 50.0
    y = torch.full((1, 1, 200, 200), 0.0)  # intensity 0.5 on [0, 1]
    out = PoissonNoise(rate)(y, torch.Generator().manual_seed(0))
    counts = (out + 1) / 2 * rate
    assert counts.mean().item() == pytest.approx(25.0, rel=0.02)
    assert counts.var().item() == pytest.approx(25.0, rel=0.05)
    assert torch.allclose(counts, counts.round())
    assert PoissonNoise(rate).sigma == pytest.approx(out.std().item(), rel=0.05)


def test_none_and_specs():
    y = torch.randn(2, 3)
    assert torch.equal(NoNoise()(y), y)
    assert noise_from_spec("gaussian:0.025") == GaussianNoise(0.05)
    assert noise_from_spec("gaussian:0.025").spec == "gaussian:0.025"
    assert noise_from_spec("poisson:100") == PoissonNoise(100.0) and noise_from_spec("none") == NoNoise()
    for bad in ["gaussian:abc", "laplace:1", "gaussian:-1", "poisson:0"]:
        with pytest.raises(RestoreError):
            noise_from_spec(bad)
