"""DDRM: Denoising Diffusion Restoration Models (Kawar, Elad, Ermon & Song, NeurIPS 2022).

DDRM works in the spectral coordinates of the operator A = U diag(s) Vᵀ, where the measurement
y = A x + σ_y n decouples: for every singular value s_i > 0, ȳ_i = (Uᵀy)_i / s_i is a noisy
observation of x̄_i = (Vᵀx)_i with noise level σ_y / s_i; coordinates with s_i = 0 (and the null
space beyond the m singular values) are not observed at all.

Everything here is written in σ-space, the variance-exploding view of the VP diffusion:
z_t = x_t / sqrt(ᾱ_t) = x_0 + σ_t ε with σ_t = sqrt((1 - ᾱ_t) / ᾱ_t). The paper's eq. 7-8 are in
this form; the official code (``efficient_generalized_steps``) computes them on x_t / sqrt(ᾱ_t) as
well but initialises x_T as V(x̄_T) / σ_T ≈ sqrt(ᾱ_T) V(x̄_T) — here x_T = sqrt(ᾱ_T) V(z̄_T)
exactly. One step from σ_t to the next level σ' (z̄ = Vᵀz, x̄0 = Vᵀx̂0, ε̄ = (z̄ - x̄0) / σ_t):

* missing (s_i = 0, or i beyond m):  z̄'_i = x̄0_i + sqrt(1 - η²) σ' ε̄_i + η σ' n_i   (DDIM-like)
* observed, σ' < σ_y / s_i:          z̄'_i = x̄0_i + sqrt(1 - η²) σ' (ȳ_i - x̄0_i) / (σ_y / s_i) + η σ' n_i
* observed, σ' ≥ σ_y / s_i:          z̄'_i = (1 - η_b) x̄0_i + η_b ȳ_i + sqrt(σ'² - η_b² σ_y² / s_i²) n_i

The comparisons are made as s_i σ' ≥ σ_y, so σ_y = 0 (noiseless) needs no infinite ratio: every
observed coordinate is then in the third case, and at the final level σ' = 0 it is set to ȳ_i
exactly (η_b = 1). The last step goes to σ' = 0 (ᾱ = 1), so the result is V(z̄).

(The official code compares strictly, s σ' > σ_y and s σ' < σ_y, so with σ_y = 0 its last step puts the
observed coordinates in the missing case and returns x̄0 there; here they are ȳ exactly, as eq. 8 gives
for σ' ≥ σ_y / s with η_b = 1.) With σ_y > 0 the last step is the low-noise case with σ' = 0: x̄0.

x_T comes from the measurement as in the paper: z̄_T,i = ȳ_i + sqrt(σ_T² - σ_y²/s_i²) n_i where
s_i σ_T ≥ σ_y, pure noise σ_T n_i elsewhere. Singular values below ``operator.rcond`` times the
largest count as zero, as in ``A_pinv``. Each image has its own singular values when the operator
holds one parameter set per image (shape (B, m)).

Timesteps: ``steps`` levels evenly spaced over [T-1, 0] (999, 946, ..., 0 for 20 steps), then σ = 0;
the official code uses range(0, T, T // steps) (950, 900, ..., 0): ``strided_grid``. η is the official ``etaA`` and
``etaC`` alike (the paper has one η). Poisson noise enters through its mid-grey σ (DDRM is derived
for Gaussian noise). One network evaluation per step, no gradients through the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from restore.errors import RestoreError
from restore.samplers.base import Callback, Generators, Grid, check_finite, check_steps, gaussian_sigma, image_shape, randn, require


@dataclass(frozen=True)
class DDRMParams:
    """Hyperparameters of DDRM (paper defaults: η = 0.85, η_b = 1, 20 steps)."""

    #: η: share of fresh noise (vs. the model's ε̂ or the measurement residual) in missing and
    #: low-noise coordinates; 0 is deterministic (DDIM-like), 1 fully re-noises
    eta: float = 0.85
    #: η_b: how far high-noise observed coordinates move toward ȳ (1: replaced by ȳ plus noise)
    eta_b: float = 1.0
    #: the official code's timesteps, every T // steps from below T (950, 900, …, 0), instead of evenly over
    #: [T-1, 0] (999, 946, …, 0)
    strided_grid: bool = False

    def __post_init__(self) -> None:
        require(0.0 <= self.eta <= 1.0 and 0.0 <= self.eta_b <= 1.0,
                f"ddrm needs 0 <= eta <= 1 and 0 <= eta_b <= 1, got eta={self.eta}, eta_b={self.eta_b}")


def spectral_measurement(operator, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """s (1|B, m) in y's dtype, the mask of s_i counted as nonzero, s with ones where zero, and Uᵀy (B, m)."""
    s = operator.singular_values().to(device=y.device, dtype=y.dtype)
    keep = s > operator.rcond * s.amax(dim=1, keepdim=True)
    s_safe = torch.where(keep, s, torch.ones_like(s))
    return s, keep, s_safe, operator.Ut(y)


def ddrm(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
         callback: Callback | None = None, params: DDRMParams | None = None) -> Tensor:
    """DDRM, Kawar et al. 2022 (eq. 7-8 and the x_T initialisation of Appendix; official ``efficient_generalized_steps``).

    Needs an operator with an SVD. ``steps`` timesteps are respaced over the prior's schedule
    (20 in the paper); one network evaluation per step.
    """
    p = params or DDRMParams()
    check_steps("ddrm", steps, denoiser)
    if not operator.has_svd:
        raise RestoreError(f"ddrm needs an operator with an SVD, and '{operator.spec}' has none")
    if y.is_complex():
        raise RestoreError("ddrm takes real measurements only (SVD operators are real)")

    sigma_y = gaussian_sigma(noise)
    shape = image_shape(operator, y)
    batch, n = shape[0], math.prod(shape[1:])
    s, keep, s_safe, ut_y = spectral_measurement(operator, y)
    m = s.shape[1]
    y_bar = torch.where(keep, ut_y / s_safe, torch.zeros_like(ut_y))  # ȳ = Σ⁺Uᵀy, (B, m)
    ratio_b = p.eta_b * sigma_y / s_safe  # η_b σ_y / s_i (only used where s_i σ' ≥ σ_y)
    sigma_y_safe = sigma_y if sigma_y > 0 else 1.0  # the low-noise case never happens when σ_y = 0
    grid = Grid.respaced(denoiser, steps, p.strided_grid)

    # x_T from the measurement: z̄_T = ȳ + sqrt(σ_T² - σ_y²/s²) n where s σ_T ≥ σ_y, else σ_T n.
    sigma_T = grid.sigma(0)
    start = randn((batch, n), generator, like=y)
    from_y = keep & (s * sigma_T >= sigma_y)
    init = y_bar + (sigma_T**2 - (sigma_y / s_safe) ** 2).clamp_min(0).sqrt() * start[:, :m]
    z_bar = torch.cat([torch.where(from_y, init, sigma_T * start[:, :m]), sigma_T * start[:, m:]], dim=1)

    hint = "the denoiser returned NaN/Inf, or y / the operator's singular values hold non-finite values"
    for i, t, a_t, a_next in grid.steps():
        sigma_t, sigma_next = grid.sigma(i), grid.sigma(i + 1)
        x0 = denoiser(math.sqrt(a_t) * operator.V(z_bar).reshape(shape), t)
        x0_bar = operator.Vt(x0)
        eps_bar = (z_bar - x0_bar) / sigma_t
        fresh = randn((batch, n), generator, like=y)

        # missing coordinates (all of them first; the observed ones are overwritten below)
        z_next = x0_bar + math.sqrt(1 - p.eta**2) * sigma_next * eps_bar + p.eta * sigma_next * fresh
        x0_m, fresh_m = x0_bar[:, :m], fresh[:, :m]
        # observed, less noisy than y (s σ' < σ_y): move along the measurement residual
        low = x0_m + math.sqrt(1 - p.eta**2) * sigma_next * (ut_y - s * x0_m) / sigma_y_safe + p.eta * sigma_next * fresh_m
        # observed, noisier than y (s σ' ≥ σ_y): move toward ȳ
        high = (1 - p.eta_b) * x0_m + p.eta_b * y_bar + (sigma_next**2 - ratio_b**2).clamp_min(0).sqrt() * fresh_m
        # coordinates with s = 0 take the missing ones' DDIM step; the official code gives them the low-noise step
        # (along y's residual, pure noise there): −1.25 dB on gblur (RESULTS.md "Session 18: DDRM")
        observed = torch.where(keep, torch.where(s * sigma_next >= sigma_y, high, low), z_next[:, :m])
        z_bar = torch.cat([observed, z_next[:, m:]], dim=1)

        check_finite(z_bar, "ddrm", i, steps, hint)
        if callback is not None:
            x_next = math.sqrt(a_next) * operator.V(z_bar).reshape(shape)
            callback({"step": i, "total": steps, "t": t, "x": x_next, "x0": x0})

    return operator.V(z_bar).reshape(shape)
