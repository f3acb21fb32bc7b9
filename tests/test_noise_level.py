"""The noise level estimated from an image (restore.noise_level): synthetic noise at known levels."""

from __future__ import annotations

import pytest
import torch

from restore.noise_level import estimate_sigma


def structured_image(size: int = 96, channels: int = 3) -> torch.Tensor:
    """(C, size, size) in [-1, 1]: a smooth gradient, sharp-edged shapes and a fine stripe texture."""
    ii, jj = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    x = 0.6 * ii - 0.3 * jj
    x = torch.where((ii - 0.35) ** 2 + (jj - 0.6) ** 2 < 0.04, torch.full_like(x, 0.7), x)
    x = torch.where((ii > 0.6) & (jj < 0.4), -0.5 + 0.3 * torch.sin(40 * jj), x)
    return torch.stack([x * (1 - 0.2 * c) for c in range(channels)])


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])  # library units: 0.005, 0.025, 0.1 on the [0, 1] scale
@pytest.mark.parametrize("channels", [1, 3])
def test_known_noise_levels_are_recovered_within_five_percent(sigma, channels):
    x = structured_image(channels=channels)
    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.05)


def test_a_noise_free_image_reads_as_almost_noise_free():
    assert estimate_sigma(structured_image()) < 0.004  # edges and texture are not taken for noise
    assert estimate_sigma(structured_image(channels=1)) < 0.01
    assert estimate_sigma(torch.zeros(3, 32, 32)) == 0.0


def test_too_small_or_misshapen_images_are_refused():
    with pytest.raises(ValueError, match="at least"):
        estimate_sigma(torch.zeros(1, 1, 40))
    with pytest.raises(ValueError):
        estimate_sigma(torch.zeros(40, 40))
