"""What every posterior sampler shares: the call signature, progress callbacks, seeded noise,
the numerical guard, and drawing several posterior samples at once.

A sampler is a plain function (k-diffusion style)::

    x = sampler(denoiser, operator, y, noise=GaussianNoise(0.05), steps=100,
                generator=torch.Generator().manual_seed(0), callback=None, params=None)

``denoiser`` is a :class:`~restore.prior.denoiser.Denoiser` (images in [-1, 1]), ``operator`` a
:class:`~operators.LinearOperator` built for the image shape, ``y`` a batch of measurements,
``params`` the sampler's frozen hyperparameter dataclass (None: the sampler's defaults). The
result has shape (B, *operator.in_shape). Randomness comes only from ``generator``: one CPU
generator, or a list of one per image (see :func:`randn`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from restore.errors import NumericalError, RestoreError
from restore.prior.schedule import respaced_timesteps, strided_timesteps

#: callback(info) with info keys: "step" (0-based), "total", "t" (timestep), "x" (current iterate), "x0" (current x̂0)
Callback = Callable[[dict[str, Any]], None]


class Sampler(Protocol):
    def __call__(self, denoiser, operator, y: Tensor, *, noise, steps: int, generator: torch.Generator | None = None,
                 callback: Callback | None = None, params: Any = None) -> Tensor: ...


Generators = torch.Generator | list[torch.Generator] | None


def randn(shape: tuple[int, ...], generator: Generators, like: Tensor) -> Tensor:
    """Standard normal noise drawn on CPU generators, then moved to ``like``'s device and dtype.

    ``generator`` may be one generator for the whole batch or a list with one per image (the
    diffusers convention): then image b's noise comes from generator b alone, so a batch gives
    exactly the results of its images run one by one — and results never depend on the device.
    """
    if isinstance(generator, list | tuple):
        if len(generator) != shape[0]:
            raise RestoreError(f"got {len(generator)} generators for a batch of {shape[0]}")
        z = torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float32) for g in generator])
    else:
        z = torch.randn(shape, generator=generator, dtype=torch.float32)
    return z.to(device=like.device, dtype=like.real.dtype)


def require(condition: bool, message: str) -> None:
    """A hyperparameter check: RestoreError(message) unless ``condition`` (NaN compares false, so it fails too).

    Every ``…Params.__post_init__`` checks its values this way, so a bad ``--set`` fails before any work.
    """
    if not condition:
        raise RestoreError(message)


def check_steps(sampler: str, steps: int, denoiser) -> None:
    require(isinstance(steps, int) and 1 <= steps <= denoiser.num_timesteps,
            f"{sampler}: steps must be in 1..{denoiser.num_timesteps}, got {steps}")


@dataclass(frozen=True)
class Grid:
    """The timesteps a sampler visits (descending) and ᾱ at each, with ᾱ = 1 appended: the clean image,
    σ = 0, where the last step lands. ``alpha_bars[i]`` belongs to ``timesteps[i]``."""

    timesteps: tuple[float, ...]
    alpha_bars: tuple[float, ...]

    @classmethod
    def of(cls, denoiser, timesteps: Sequence[float]) -> Grid:
        table = denoiser.alphas_cumprod.double().cpu()
        whole = all(float(t).is_integer() for t in timesteps)
        if whole:
            alpha_bars = [float(table[int(t)]) for t in timesteps]
        else:  # fractional timesteps (DPIR's noise ladder): ᾱ interpolated as the denoiser does
            alpha_bars = denoiser.alpha_bar(torch.tensor(timesteps, dtype=torch.float64), table).reshape(-1).tolist()
        return cls(tuple(int(t) if whole else float(t) for t in timesteps), tuple(alpha_bars) + (1.0,))

    @classmethod
    def respaced(cls, denoiser, steps: int, strided: bool = False) -> Grid:
        """``steps`` timesteps evenly spaced over [T-1, 0] (999, 946, …, 0 for 20 steps), or with ``strided`` every
        T // steps from below T (950, 900, …, 0: the official DDRM / DDNM respacing)."""
        timesteps = (strided_timesteps if strided else respaced_timesteps)(denoiser.num_timesteps, steps)
        return cls.of(denoiser, timesteps.tolist())

    def __len__(self) -> int:
        return len(self.timesteps)

    def sigma(self, i: int) -> float:
        """σ = sqrt((1 - ᾱ) / ᾱ) of grid point i (0 at the appended end, i = len(grid))."""
        a = self.alpha_bars[i]
        return math.sqrt((1 - a) / a)

    def steps(self) -> Iterator[tuple[int, float, float, float]]:
        """(i, t, ᾱ_t, ᾱ of the level the step goes to) for every step."""
        for i, t in enumerate(self.timesteps):
            yield i, t, self.alpha_bars[i], self.alpha_bars[i + 1]


#: no iterate of a working sampler comes near this: images live in [-1, 1], and the noisiest state any
#: sampler here keeps (DDRM's σ-space x_T / sqrt(ᾱ_T), σ_T ≈ 157 for the linear schedule) stays below 10³
DIVERGED = 1e4


def check_finite(x: Tensor, sampler: str, step: int, total: int, hint: str) -> None:
    """Stop with a clear error instead of carrying NaN/Inf — or an iterate that has run away — into the result
    (a diverged run can end inside [-1, 1] again, e.g. through clipping, as a saturated picture)."""
    if not torch.isfinite(x).all():
        raise NumericalError(f"{sampler} produced NaN or Inf at step {step + 1} of {total}; {hint}")
    if x.abs().max() > DIVERGED:
        raise NumericalError(f"{sampler} diverged at step {step + 1} of {total} (values of {float(x.abs().max()):.2g}); {hint}")


def image_shape(operator, y: Tensor) -> tuple[int, ...]:
    return (y.shape[0], *operator.in_shape)


def gaussian_sigma(noise) -> float:
    """σ of the measurement noise in library units (Poisson noise gives its mid-grey equivalent)."""
    return float(getattr(noise, "sigma", 0.0))


@dataclass
class PosteriorSamples:
    """K posterior samples per image, their mean and per-pixel standard deviation (the uncertainty map)."""

    samples: Tensor  # (K, B, C, H, W)
    mean: Tensor  # (B, C, H, W)
    std: Tensor  # (B, C, H, W); zeros when K = 1

    @classmethod
    def of(cls, samples: Tensor) -> PosteriorSamples:
        """The samples (K, B, C, H, W) with their mean and standard deviation."""
        return cls(samples, samples.mean(dim=0), samples.std(dim=0) if samples.shape[0] > 1 else torch.zeros_like(samples[0]))


def draw_samples(sampler: Sampler, denoiser, operator, y: Tensor, *, num_samples: int = 1, **kwargs) -> PosteriorSamples:
    """Run ``sampler`` once on a batch of K copies of every image (per-image operators stacked alike)."""
    if num_samples < 1:
        raise RestoreError(f"num_samples must be at least 1, got {num_samples}")
    batch = y.shape[0]
    if num_samples == 1:
        return PosteriorSamples.of(sampler(denoiser, operator, y, **kwargs)[None])
    ys = y.repeat(num_samples, *([1] * (y.dim() - 1)))
    ops = type(operator).stack([operator] * num_samples) if operator.batch_size > 1 else operator
    x = sampler(denoiser, ops, ys, **kwargs)
    samples = operator.align_samples(x.reshape(num_samples, batch, *x.shape[1:]))
    return PosteriorSamples.of(samples)
