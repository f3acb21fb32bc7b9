"""ΠGDM: pseudoinverse-guided diffusion models (Song, Vahdat, Mardani & Kautz, ICLR 2023).

A DDIM sampler whose every step adds a guidance term, a vector-Jacobian product through the
denoiser (Algorithm 1, with the noisy-measurement likelihood of eq. 8):

    x̂0  = D(x_t, t),  ε̂ = ε_θ(x_t, t)
    g   = (∂x̂0/∂x_t)ᵀ Aᵀ (A Aᵀ + (σ_y²/r_t²) I)⁻¹ (y - A x̂0),          r_t² = 1 - ᾱ_t
    c1  = η sqrt((1 - ᾱ_t/ᾱ_s)(1 - ᾱ_s)/(1 - ᾱ_t)),  c2 = sqrt(1 - ᾱ_s - c1²)
    x_s = sqrt(ᾱ_s) x̂0 + c1 ε + c2 ε̂ + w sqrt(ᾱ_s ᾱ_t) g,            ε ~ N(0, I)

g is r_t² times eq. 8's score ∇ log p(y | x_t) ≈ (∂x̂0/∂x_t)ᵀ Aᵀ (r_t² A Aᵀ + σ_y² I)⁻¹ (y - A x̂0)
(with the paper's r_t² = σ̄_t²/(1 + σ̄_t²) for data of unit variance, which is 1 - ᾱ_t in the VP
parametrisation). Written so, g is Algorithm 1's noiseless guidance ((A⁺y - A⁺A x̂0)ᵀ ∂x̂0/∂x_t)ᵀ
exactly when σ_y = 0 — the paper drops r_t⁻² there — and stays bounded for σ_y > 0: with eq. 8's
literal r_t⁻², the last steps (r_t² ~ 1e-4) would multiply the residual by ~1/σ_y² and diverge. The inverse is
``operator.solve_gram`` (closed form for SVD operators, conjugate gradients otherwise); for σ_y = 0
its shift is floored at (0.002)²/r_t² (σ_y = 0.001 on the [0, 1] scale, DiffPIR's official
floor), which keeps (A Aᵀ + c I) invertible for operators with zero singular values (inpainting
keeps y at full size with zeros). For complex measurements (MRI) g is the gradient of
Re⟨A x̂0, u⟩ with u = (A Aᵀ + c I)⁻¹(y - A x̂0) held fixed, so images stay real.

Following NVlabs/RED-diff ``algos/pgdm.py`` (maintained by the paper's authors): ε̂ is the
network's own (not recomputed from a guided x̂0), the timesteps are the uniform respaced grid,
and the last step goes to ᾱ_s = 1 (c1 = c2 = 0), so the result is x̂0 + w sqrt(ᾱ_0) g. Their runs
use η = 1.0 (``sample_test.sh``), the default here. The guidance weight is RED-diff's
sqrt(ᾱ_s) sqrt(ᾱ_t), not the paper's sqrt(ᾱ_t): since ∂x̂0/∂x_t ≈ I / sqrt(ᾱ_t), the latter adds
about A⁺(y - A x̂0) to x_s itself, which the next step divides by sqrt(ᾱ_s) ~ 0.01 at high noise —
on real images it diverged (sr4 crop: x ~ 1e11 at step 5, 1.9 dB), while sqrt(ᾱ_s ᾱ_t) moves the
next x̂0 by about A⁺(y - A x̂0), a pseudo-inverse correction (33.6 dB at 20 steps). RED-diff
ignores σ_y (noiseless A⁺ only); here σ_y enters through eq. 8. x_T is pure noise (RED-diff starts
from sqrt(ᾱ_T) A⁺y + noise, the same up to ᾱ_T ~ 4e-5).

One network evaluation per step with backpropagation through the network (memory for one step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from restore.samplers.base import Callback, Generators, Grid, check_finite, check_steps, gaussian_sigma, image_shape, randn, require

#: floor on σ_y (library units; 0.001 on the [0, 1] scale) that keeps the Gram system invertible when noiseless
SIGMA_FLOOR = 0.002


@dataclass(frozen=True)
class PiGDMParams:
    """Hyperparameters of ΠGDM (RED-diff's runs: η = 1, guidance weight 1, 100 steps)."""

    #: η in [0, 1]: share of fresh noise in the DDIM step (0: deterministic DDIM, 1: DDPM-like)
    eta: float = 1.0
    #: w: multiplies the guidance sqrt(ᾱ_s ᾱ_t) g (RED-diff's ``grad_term_weight``)
    weight: float = 1.0
    #: conjugate-gradient tolerance and iterations of the Gram solve (operators without an SVD)
    cg_tol: float = 1e-6
    cg_max_iter: int = 100
    #: timesteps every T // steps from below T (950, 900, …, 0 for 20 of 1000: the official DDRM respacing) instead
    #: of evenly over [T-1, 0] (999, 946, …, 0); measured in RESULTS.md "Session 18: DDRM's timesteps"
    strided_grid: bool = False

    def __post_init__(self) -> None:
        require(0 <= self.eta <= 1, f"pigdm needs eta in [0, 1], got {self.eta}")
        require(self.weight >= 0 and math.isfinite(self.weight), f"pigdm needs a finite weight >= 0, got {self.weight}")
        require(self.cg_tol > 0 and type(self.cg_max_iter) is int and self.cg_max_iter >= 1,
                f"pigdm needs cg_tol > 0 and an integer cg_max_iter >= 1, got {self.cg_tol}, {self.cg_max_iter!r}")


def real_inner(a: Tensor, b: Tensor) -> Tensor:
    """Re⟨a, b⟩ summed over the batch (its gradient in a real image is Aᵀ b through a = A x)."""
    return (torch.conj(b) * a).real.sum() if a.is_complex() or b.is_complex() else (a * b).sum()


def pigdm(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
          callback: Callback | None = None, params: PiGDMParams | None = None) -> Tensor:
    """ΠGDM, Song et al. 2023 (Algorithm 1 with eq. 8's noisy guidance; RED-diff ``algos/pgdm.py``).

    Any differentiable operator (no SVD needed). ``steps`` network evaluations (100 in the paper),
    each with a vector-Jacobian product through the network.
    """
    p = params or PiGDMParams()
    check_steps("pigdm", steps, denoiser)

    shape = image_shape(operator, y)
    like = y.real if y.is_complex() else y
    grid = Grid.respaced(denoiser, steps, p.strided_grid)
    sigma_y = max(gaussian_sigma(noise), SIGMA_FLOOR)
    hint = (f"the guidance weight={p.weight:g} is probably too large for this task and {steps} steps, "
            "or the denoiser returned NaN/Inf")

    x = randn(shape, generator, like=like)
    for i, t, a_t, a_s in grid.steps():
        r2 = 1 - a_t
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = denoiser.eps(x_in, t)
            x0 = (x_in - r2**0.5 * eps) / a_t**0.5
            ax0 = operator.A(x0)
            u = operator.solve_gram((y - ax0).detach(), sigma_y**2 / r2, tol=p.cg_tol, max_iter=p.cg_max_iter)
            (g,) = torch.autograd.grad(real_inner(ax0, u), x_in)
        x0, eps = x0.detach(), eps.detach()

        c1 = p.eta * ((1 - a_t / a_s) * (1 - a_s) / (1 - a_t)) ** 0.5
        c2 = max(1 - a_s - c1 * c1, 0.0) ** 0.5
        x = a_s**0.5 * x0 + c2 * eps + (p.weight * (a_t * a_s) ** 0.5) * g
        if c1 > 0:
            x = x + c1 * randn(shape, generator, like=like)

        check_finite(x, "pigdm", i, steps, hint)
        if callback is not None:
            callback({"step": i, "total": steps, "t": t, "x": x, "x0": x0})
    return x

