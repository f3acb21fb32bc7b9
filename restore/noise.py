"""Measurement noise models, separate from operators: y = noise(A x).

Values are in the library's [-1, 1] image range. Spec strings
(``gaussian:0.025``, ``poisson:100``, ``none``) quote σ on the [0, 1] scale
used by users and by the task protocol, so ``gaussian:0.025`` adds noise of
standard deviation 0.05 inside the library.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from restore.errors import RestoreError
from restore.seeds import MEASUREMENT, generators


@dataclass(frozen=True)
class NoNoise:
    """Noiseless measurements."""

    sigma: float = 0.0

    @property
    def spec(self) -> str:
        return "none"

    def __call__(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return y.clone()


@dataclass(frozen=True)
class GaussianNoise:
    """Additive white Gaussian noise of standard deviation ``sigma`` (library units, [-1, 1] range).

    For complex measurements (k-space) ``sigma`` is per complex sample:
    real and imaginary parts each get sigma / sqrt(2).
    """

    sigma: float

    def __post_init__(self) -> None:
        if not self.sigma >= 0:
            raise RestoreError(f"noise sigma must be >= 0, got {self.sigma}")

    @property
    def spec(self) -> str:
        return f"gaussian:{self.sigma / 2:g}"

    def __call__(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if y.is_complex():
            part = torch.view_as_real(y)
            noise = _randn(part.shape, generator, like=part)
            return torch.view_as_complex((part + noise * (self.sigma / 2**0.5)).contiguous())
        return y + self.sigma * _randn(y.shape, generator, like=y)


@dataclass(frozen=True)
class PoissonNoise:
    """Shot noise: intensities in [0, 1] become photon counts of mean ``rate`` × intensity.

    ``y`` in [-1, 1] is mapped to [0, 1], counted, rescaled and mapped back, so
    larger ``rate`` means less noise (the convention of DPS's Poisson tasks).
    """

    rate: float

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise RestoreError(f"Poisson rate (photon count) must be > 0, got {self.rate}")

    @property
    def sigma(self) -> float:
        """Noise standard deviation at mid-grey in library units (a scale for samplers that need one)."""
        return 2.0 * (0.5 / self.rate) ** 0.5

    @property
    def spec(self) -> str:
        return f"poisson:{self.rate:g}"

    def __call__(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if y.is_complex():
            raise RestoreError("Poisson noise applies to real, non-negative measurements, not complex ones")
        intensity = ((y + 1) / 2).clamp_min(0)
        device = generator.device if generator is not None else y.device
        counts = torch.poisson((intensity * self.rate).to(device), generator=generator).to(y.device)
        return counts / self.rate * 2 - 1


def _randn(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Noise drawn on the generator's device (so a CPU seed gives the same noise on any device), then moved."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


NoiseModel = NoNoise | GaussianNoise | PoissonNoise


def noise_from_spec(spec: str) -> NoiseModel:
    """``none``, ``gaussian:SIGMA`` (σ on the [0, 1] scale) or ``poisson:RATE``."""
    name, _, arg = spec.strip().partition(":")
    try:
        if name == "none" and not arg:
            return NoNoise()
        if name == "gaussian":
            return GaussianNoise(2 * float(arg))
        if name == "poisson":
            return PoissonNoise(float(arg))
    except ValueError:
        raise RestoreError(f"bad number in noise spec '{spec}'") from None
    raise RestoreError(f"unknown noise spec '{spec}'; use none, gaussian:SIGMA or poisson:RATE")


def simulate(x: Tensor, operator, noise: NoiseModel, seeds: list[int] | int = 0) -> Tensor:
    """y = noise(A x), the noise of image b seeded by ``seeds[b]`` (an int means 0, 1, ... added to it)."""
    indices = list(range(seeds, seeds + x.shape[0])) if isinstance(seeds, int) else list(seeds)
    with torch.no_grad():
        clean = operator.A(x)
    parts = [noise(clean[b : b + 1], gen) for b, gen in enumerate(generators(0, indices, purpose=MEASUREMENT))]
    return torch.cat(parts)
