"""Small helpers shared by the sampler test files (imported by name; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square difference."""
    return (a - b).pow(2).mean().sqrt().item()


def pinv(operator, y: torch.Tensor) -> torch.Tensor:
    """A⁺y as a real image (the baseline every sampler must beat)."""
    x = operator.A_pinv(y)
    return x.real if x.is_complex() else x
