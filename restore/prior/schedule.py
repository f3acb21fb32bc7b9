"""Noise schedules of variance-preserving (DDPM) diffusion: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.

Timesteps are indices 0..T-1 into ``alphas_cumprod`` (ᾱ); σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) is the
equivalent noise level of x_t / sqrt(ᾱ_t) (the EDM / k-diffusion view). Samplers pick a subset of
timesteps (respacing) and never need β directly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear β schedule (Ho et al. 2020), scaled to ``num_steps`` as guided-diffusion does."""
    scale = 1000 / num_steps
    return torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Improved DDPM's cosine schedule (Nichol & Dhariwal 2021, eq. 17)."""
    def alpha_bar(u: float) -> float:
        return math.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


def make_betas(name: str, num_steps: int = 1000) -> Tensor:
    """β schedule by name: ``linear`` or ``cosine``."""
    if name == "linear":
        return linear_betas(num_steps)
    if name == "cosine":
        return cosine_betas(num_steps)
    raise ValueError(f"unknown noise schedule '{name}'; use linear or cosine")


def sigma_from_alpha_bar(alpha_bar: Tensor) -> Tensor:
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def respaced_timesteps(num_train_steps: int, steps: int) -> Tensor:
    """``steps`` timesteps evenly spaced over [0, T-1], descending (the DDIM / guided-diffusion respacing)."""
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must be in 1..{num_train_steps}, got {steps}")
    grid = torch.linspace(0, num_train_steps - 1, steps, dtype=torch.float64).round().long()
    return grid.flip(0)


def strided_timesteps(num_train_steps: int, steps: int) -> Tensor:
    """``steps`` timesteps every T // steps, descending from the last multiple below T to 0 (950, 900, …, 0 for 20
    of 1000): the official DDRM and DDNM respacing, ``range(0, T, T // steps)``, cut to ``steps`` entries."""
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must be in 1..{num_train_steps}, got {steps}")
    return (torch.arange(steps, dtype=torch.long) * (num_train_steps // steps)).flip(0)


def timestep_for_sigma(alphas_cumprod: Tensor, sigma: float | Tensor) -> Tensor:
    """The (fractional) timestep whose σ_t equals ``sigma``, by interpolation in log σ.

    Used to denoise a measurement with known noise level, and by samplers that start mid-way.
    """
    log_sigmas = sigma_from_alpha_bar(alphas_cumprod.double()).log()
    target = torch.as_tensor(sigma, dtype=torch.float64, device=log_sigmas.device).clamp(log_sigmas[0].exp(), log_sigmas[-1].exp()).log()
    idx = torch.searchsorted(log_sigmas, target.reshape(-1)).clamp(1, len(log_sigmas) - 1)
    lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
    frac = (target.reshape(-1) - lo) / (hi - lo)
    return (idx - 1 + frac).reshape(target.shape)
