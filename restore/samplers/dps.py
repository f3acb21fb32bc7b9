"""DPS: Diffusion Posterior Sampling (Chung, Kim, Mccann, Klasky & Ye, ICLR 2023).

Each step is a DDPM ancestral step followed by a gradient step on the measurement residual of the
denoiser's estimate x̂0(x_t), differentiated through the network (Algorithm 1):

    x'_{t'} ~ q(x_{t'} | x_t, x̂0)                     (the DDPM posterior of the respaced schedule)
    x_{t'}  = x'_{t'} - ζ ∇_{x_t} ‖y - A x̂0(x_t)‖

As in the official code (``condition_methods.PosteriorSampling``) the gradient is that of the
residual's norm, not of its square, with a constant step ζ (the paper's ζ_i = ζ'/‖y - A x̂0‖ on the
squared norm, up to a factor 2). Norms are taken per image here (the official code takes one norm
over the whole batch, which couples the images of a batch). Complex measurements (MRI) use the
norm of the complex residual.

Poisson measurements (``noise`` a :class:`~restore.noise.PoissonNoise`) use Algorithm 2's weighted
norm ‖y - A x̂0‖_Λ, Λ = diag(1 / (2 ỹ_j)), with ỹ_j = (y_j + 1)/2 the measured intensity in [0, 1]
(floored at one photon, 1/rate): the Gaussian approximation of the Poisson likelihood, whose
variance grows with the intensity. The weight is 1 at mid-grey, so ζ is on the Gaussian scale.
(The official code's Poisson branch, ``mean(‖y - A x̂0‖ / |y|)``, is a rescaled unweighted norm.)

The ancestral step of a respaced grid t > t' uses β = 1 - ᾱ_t/ᾱ_{t'} and the posterior
q(x_{t'} | x_t, x̂0) with variance β̃ = β (1 - ᾱ_{t'})/(1 - ᾱ_t); priors with learned variance
(``eps_and_v`` returns v) use guided-diffusion's learned range, log σ² = (1+v)/2 log β + (1-v)/2
log β̃ (the official DPS runs ``learned_range``), and the last step adds no noise. With
``clip_x0`` the estimate x̂0 is clamped to [-1, 1] before both the ancestral step and the residual,
as the official ``clip_denoised=True`` does (clamped pixels then pass no gradient).

Steps: the paper uses all 1000. Fewer steps respace the grid; ζ is applied unchanged per step (no
automatic rescaling), so the total pull toward y, about ζ × steps, weakens with fewer steps and ζ
usually has to grow — the per-task defaults are tuned for their step counts. Because the gradient
of a norm has unit length however small the residual, each step moves x by about ζ: a large ζ leaves
the result jittering around data consistency, a small one needs many steps. One network evaluation
per step, with backpropagation through the network (memory for one step; nothing kept between steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from restore.errors import RestoreError
from restore.noise import PoissonNoise
from restore.samplers.base import Callback, Generators, Grid, check_finite, check_steps, image_shape, randn, require


@dataclass(frozen=True)
class DPSParams:
    """Hyperparameters of DPS (official configs: ζ = 0.5 random inpainting, 0.3 SR and deblurring)."""

    #: ζ: step size of the gradient of ‖y - A x̂0(x_t)‖ w.r.t. x_t, applied after every ancestral step
    zeta: float = 1.0
    #: timesteps every T // steps from below T (950, 900, …, 0 for 20 of 1000: the official DDRM respacing) instead
    #: of evenly over [T-1, 0] (999, 946, …, 0); measured in RESULTS.md "Session 18: DDRM's timesteps"
    strided_grid: bool = False
    #: clamp x̂0 to [-1, 1] for the ancestral step and the residual (official clip_denoised=True)
    clip_x0: bool = True

    def __post_init__(self) -> None:
        require(self.zeta >= 0 and math.isfinite(self.zeta), f"dps needs a finite zeta >= 0, got {self.zeta}")


def residual_norm(operator, y: Tensor, x0: Tensor, noise) -> Tensor:
    """Per-image ‖y - A x0‖ (B,), Λ-weighted as in Algorithm 2 when the noise is Poisson."""
    r = y - operator.A(x0)
    if isinstance(noise, PoissonNoise):
        intensity = ((y + 1) / 2).clamp_min(1.0 / noise.rate)
        r = r / (2 * intensity).sqrt()
    return torch.linalg.vector_norm(r.flatten(1), dim=1)  # its gradient is 0, not NaN, at r = 0


def step_std(v: Tensor | None, beta: float, beta_tilde: float) -> Tensor | float:
    """σ of the reverse step: sqrt(β̃) (fixed small), or guided-diffusion's learned range for v in [-1, 1]."""
    if v is None:
        return math.sqrt(beta_tilde)
    frac = (v + 1) / 2
    return torch.exp(0.5 * (frac * math.log(beta) + (1 - frac) * math.log(beta_tilde)))


def dps(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
        callback: Callback | None = None, params: DPSParams | None = None) -> Tensor:
    """DPS, Chung et al. 2023 (Algorithm 1, Gaussian; Algorithm 2, Poisson; official ``PosteriorSampling``).

    Works with any differentiable operator (no SVD). ``steps`` timesteps are respaced over the
    prior's schedule (1000 in the paper); ζ is not rescaled with the number of steps.
    """
    p = params or DPSParams()
    check_steps("dps", steps, denoiser)
    if isinstance(noise, PoissonNoise) and y.is_complex():
        raise RestoreError("dps: Poisson noise needs real measurements")

    shape = image_shape(operator, y)
    like = y.real if y.is_complex() else y
    grid = Grid.respaced(denoiser, steps, p.strided_grid)
    hint = (f"the step size zeta={p.zeta:g} is probably too large for this task and {steps} steps, "
            "or the denoiser returned NaN/Inf")

    x = randn(shape, generator, like=like)
    for i, t, a_t, a_prev in grid.steps():
        beta = 1 - a_t / a_prev  # of the respaced step; β̃ = β (1 - ᾱ_{t'}) / (1 - ᾱ_t)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps, v = denoiser.eps_and_v(x_in, t)
            x0 = (x_in - (1 - a_t) ** 0.5 * eps) / a_t**0.5
            if p.clip_x0:
                x0 = x0.clamp(-1, 1)
            norm = residual_norm(operator, y, x0, noise)
            (grad,) = torch.autograd.grad(norm.sum(), x_in)
        x0 = x0.detach()

        # DDPM posterior q(x_{t'} | x_t, x̂0) of the respaced step
        mean = (a_prev**0.5 * beta / (1 - a_t)) * x0 + ((1 - beta) ** 0.5 * (1 - a_prev) / (1 - a_t)) * x.detach()
        if i < steps - 1:  # the last step (to ᾱ = 1, where β̃ = 0) adds no noise
            std = step_std(None if v is None else v.detach(), beta, beta * (1 - a_prev) / (1 - a_t))
            x = mean + std * randn(shape, generator, like=like)
        else:
            x = mean
        x = (x - p.zeta * grad).detach()

        check_finite(x, "dps", i, steps, hint)
        if callback is not None:
            callback({"step": i, "total": steps, "t": t, "x": x, "x0": x0})
    return x

