"""DAPS: Decoupled Annealing Posterior Sampling (Zhang, Chu, Berner, Meng, Anandkumar & Song, "Improving
Diffusion Inverse Problem Solving with Decoupled Noise Annealing", CVPR 2025; arXiv 2407.01521).

Work happens in σ-space, x = x_0 + σ ε (the VP x_t is sqrt(ᾱ) x, what the denoiser is given). Over a
decreasing annealing ladder σ_1 > … > σ_N (then 0), starting from x = σ_1 ε, each step (Algorithm 1):

    x̂0 = x̂0(x)                      the probability-flow ODE from σ_i to 0, a few Euler (DDIM) steps
    x0 ~ p(x0 | x, y) ∝ N(x0; x̂0, r_i² I) · exp(-‖y - A(x0)‖² / (2 σ_y²)),   r_i = r_scale · σ_i,
         by K steps of Langevin dynamics from x0 = x̂0 (step size η_i, fresh noise every step):
         x0 ← x0 + η_i (-∇ ½‖y - A(x0)‖² / σ_y² - (x0 - x̂0) / r_i²) + sqrt(2 η_i) ε
    x  = x0 + σ_{i+1} ε              re-noise to the next level (σ_{N+1} = 0: the result is x0)

Consecutive steps are coupled only through x0, so a step can move far from the last (the "decoupled"
annealing). The data gradient is autograd through the operator only (never through the network), so
any differentiable operator works, nonlinear ones included; complex measurements use |residual|².

Schedules, as in the official code (zhangbingliang2019/DAPS):

* annealing ladder: EDM's polynomial spacing ("poly-7"), σ_i = (σ_max^(1/ρ) + (i-1)/(N-1) (σ_min^(1/ρ)
  - σ_max^(1/ρ)))^ρ with σ_max = 100, σ_min = 0.1, ρ = 7 (``configs/sampler/edm_daps.yaml``), σ_min
  included and 0 appended, as the legacy branch (the paper's code) builds it. Each σ is run at the
  denoiser's fractional timestep of that σ, and the σ used is the denoiser's own at that timestep;
* ODE for x̂0: the same spacing over ``ode_steps`` + 1 levels from σ_i to ``ode_sigma_min`` = 0.01,
  Euler steps x ← x̂0(x) + (σ'/σ)(x - x̂0(x)), one network evaluation each;
* Langevin step size η_i = lr · (1 + (i-1)/N · (lr_min_ratio - 1)), linear decay (``get_lr``),
  r_i = σ_i (the official ``prior_solver: gaussian``), 100 steps per level.

Deviations from the official code:

* the ODE's last level is 0, not ``ode_sigma_min``: the main branch stops at σ = 0.01 and returns that
  slightly noisy state; the legacy branch appends 0 but spends its last evaluation at σ = 0.01, where
  the denoiser is nearly the identity. Here the ``ode_steps`` evaluations sit at the main branch's
  levels σ_i, …, and the last Euler step lands on x̂0 itself; ``ode_steps = 1`` is Tweedie's x̂0(x);
* the likelihood's σ_y is that of the paper and the legacy code, exp(-‖y - A x‖² / (2 τ²)) with τ = 0.01
  in every pixel-space config. The main branch's ``MCMCSampler`` uses -∇‖y - A x‖² / τ², twice that pull,
  with the same τ. ``sigma_y = None`` takes the measurement's σ (``gaussian_sigma(noise)``: Poisson noise
  by its mid-grey equivalent) floored at τ = 0.01, so noiseless problems work: then the target at each
  level is the Bayesian one. σ_y is in the units of y (e.g. sinogram or DCT units for CT and JPEG);
* the step-size ratio (i-1)/N is the legacy one (the main branch divides by N + 1);
* the main branch returns zeros when Langevin produces NaN; here the run stops with an error naming the
  annealing step. Only Langevin dynamics is implemented (not the main branch's HMC or
  Metropolis–Hastings options, nor its latent-space variant).

Per-image randomness (``randn``): the start, K Langevin draws per level, then the re-noising draw, so a
batch equals its images run one by one. NFE per image = steps × ode_steps (``daps_nfe``); the Langevin
steps cost operator evaluations and their gradients, not network evaluations. The official DAPS-1K is
200 annealing × 5 ODE steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from restore.prior.schedule import sigma_from_alpha_bar, timestep_for_sigma
from restore.samplers.base import Callback, Generators, check_finite, gaussian_sigma, image_shape, randn, require

#: σ_y floor (units of y) when it comes from the noise model: the official τ = 0.01 of every pixel-space task
SIGMA_Y_FLOOR = 0.01


@dataclass(frozen=True)
class DAPSParams:
    """Hyperparameters of DAPS (official pixel-space Langevin configs: 100 steps, lr 1e-4 (5e-5 box inpainting,
    motion blur), lr_min_ratio 0.01, τ = 0.01; ladder 100 → 0.1, poly-7; 5 ODE steps)."""

    #: Euler steps of the probability-flow ODE for x̂0 per annealing step (network evaluations; official 5).
    #: The default 1 is Tweedie's x̂0, one evaluation per step as every sampler's default
    ode_steps: int = 1
    #: Langevin steps per annealing step (0: x0 = x̂0, the unconditional sampler)
    langevin_steps: int = 100
    #: Langevin step size η at the first annealing step (absolute, in the units of x0²)
    lr: float = 1e-4
    #: η at the last step relative to the first (linear decay in between; 1: constant)
    lr_min_ratio: float = 0.01
    #: r_t / σ_t: standard deviation of the Gaussian p(x0 | x_t) ≈ N(x̂0, r_t² I) relative to σ_t (official 1)
    r_scale: float = 1.0
    #: σ_y of the likelihood, in the units of y; None: the measurement's σ floored at SIGMA_Y_FLOOR (official τ 0.01)
    sigma_y: float | None = None
    #: the annealing ladder: σ_max → σ_min in EDM's polynomial spacing with exponent ρ (official 100, 0.1, 7)
    sigma_max: float = 100.0
    sigma_min: float = 0.1
    rho: float = 7.0
    #: the level the ODE's spacing aims at (official 0.01); its last step goes to 0
    ode_sigma_min: float = 0.01

    def __post_init__(self) -> None:
        for name, lowest in (("ode_steps", 1), ("langevin_steps", 0)):
            value = getattr(self, name)
            require(type(value) is int and value >= lowest, f"daps needs an integer {name} >= {lowest}, got {value!r}")
        require(finite(self.lr) and self.lr > 0, f"daps needs a finite lr > 0, got {self.lr}")
        require(finite(self.lr_min_ratio) and 0 < self.lr_min_ratio <= 1,
                f"daps needs lr_min_ratio in (0, 1], got {self.lr_min_ratio}")
        require(finite(self.r_scale) and self.r_scale > 0, f"daps needs a finite r_scale > 0, got {self.r_scale}")
        require(self.sigma_y is None or (finite(self.sigma_y) and self.sigma_y > 0),
                f"daps needs sigma_y > 0 (or None: the measurement's), got {self.sigma_y}")
        require(finite(self.sigma_max) and finite(self.sigma_min) and finite(self.ode_sigma_min)
                and 0 < self.ode_sigma_min <= self.sigma_min <= self.sigma_max,
                f"daps needs 0 < ode_sigma_min <= sigma_min <= sigma_max, all finite; got ode_sigma_min="
                f"{self.ode_sigma_min}, sigma_min={self.sigma_min}, sigma_max={self.sigma_max}")
        require(finite(self.rho) and self.rho > 0, f"daps needs a finite rho > 0, got {self.rho}")


def finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def daps_nfe(steps: int, params: DAPSParams | None = None) -> int:
    """Network evaluations of one run: ``ode_steps`` per annealing step."""
    return steps * (params or DAPSParams()).ode_steps


def poly_sigmas(high: float, low: float, n: int, rho: float) -> list[float]:
    """``n`` levels from ``high`` to ``low`` (both included), evenly spaced in σ^(1/ρ) (EDM; the official 'poly-ρ')."""
    if n == 1:
        return [high]
    r = torch.linspace(0, 1, n, dtype=torch.float64)
    return ((high ** (1 / rho) + r * (low ** (1 / rho) - high ** (1 / rho))) ** rho).tolist()


def levels_for(denoiser, sigmas: list[float]) -> list[tuple[float, float]]:
    """(t, σ) per σ: its fractional timestep (clamped to the schedule) and the σ the denoiser has at t."""
    ts = timestep_for_sigma(denoiser.alphas_cumprod, torch.tensor(sigmas, dtype=torch.float64)).reshape(-1)
    ab = denoiser.alpha_bar(ts, torch.zeros(1, dtype=torch.float64)).reshape(-1)
    return list(zip(ts.cpu().tolist(), sigma_from_alpha_bar(ab).cpu().tolist()))


def annealing_levels(denoiser, steps: int, p: DAPSParams) -> list[tuple[float, float]]:
    """The ladder (t, σ) of the ``steps`` annealing levels, then (0, 0): the clean image."""
    return levels_for(denoiser, poly_sigmas(p.sigma_max, p.sigma_min, steps, p.rho)) + [(0.0, 0.0)]


def ode_levels(denoiser, level: tuple[float, float], p: DAPSParams) -> list[tuple[float, float]]:
    """The ODE's ``ode_steps`` + 1 levels from an annealing level down to σ = 0 (spaced toward ode_sigma_min)."""
    sigma = level[1]
    inner = poly_sigmas(sigma, min(p.ode_sigma_min, sigma), p.ode_steps + 1, p.rho)[1:-1]
    return [level] + (levels_for(denoiser, inner) if inner else []) + [(0.0, 0.0)]


def ode_x0(denoiser, x: Tensor, levels: list[tuple[float, float]]) -> Tensor:
    """x̂0 of the σ-space x by Euler steps of the probability-flow ODE over ``levels`` (σ descending to 0)."""
    with torch.no_grad():
        for (t, sigma), (_, sigma_next) in zip(levels, levels[1:]):
            x0 = denoiser.denoise(x / math.sqrt(1 + sigma**2), t)  # the VP input sqrt(ᾱ) x, ᾱ = 1/(1 + σ²)
            x = x0 + (sigma_next / sigma) * (x - x0)
    return x


def misfit(operator, y: Tensor, x: Tensor) -> Tensor:
    """Per-image ½‖y - A(x)‖² (B,); |·|² of complex residuals."""
    r = operator.A(x) - y
    return 0.5 * (r.abs() if r.is_complex() else r).pow(2).flatten(1).sum(dim=1)


def langevin(operator, y: Tensor, x0_hat: Tensor, *, r: float, sigma_y: float, lr: float, steps: int,
             generator: Generators) -> Tensor:
    """``steps`` Langevin steps from x̂0 targeting N(x0; x̂0, r² I) · exp(-‖y - A(x0)‖² / (2 σ_y²))."""
    x = x0_hat
    for _ in range(steps):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(misfit(operator, y, x_in).sum(), x_in)
        score = -grad / sigma_y**2 - (x - x0_hat) / r**2
        x = x + lr * score + math.sqrt(2 * lr) * randn(tuple(x.shape), generator, like=x)
    return x.detach()


def daps(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
         callback: Callback | None = None, params: DAPSParams | None = None) -> Tensor:
    """DAPS, Zhang et al. 2025 (Algorithm 1 with Langevin dynamics; official ``sampler.py``, ``cores/mcmc.py``).

    ``steps`` annealing levels (200 in the paper's DAPS-1K), ``ode_steps`` network evaluations each;
    any differentiable operator (only A and autograd through it), no SVD, no gradients through the network.
    """
    p = params or DAPSParams()
    require(type(steps) is int and steps >= 1, f"daps: steps must be an integer >= 1, got {steps!r}")
    shape = image_shape(operator, y)
    like = y.real if y.is_complex() else y
    sigma_y = p.sigma_y if p.sigma_y is not None else max(gaussian_sigma(noise), SIGMA_Y_FLOOR)
    levels = annealing_levels(denoiser, steps, p)
    hint = (f"lr={p.lr:g} is probably too large for sigma_y={sigma_y:g} and this operator's gain "
            "(Langevin needs lr · (‖A‖²/sigma_y² + 1/r²) < 2), or the denoiser returned NaN/Inf")

    x = levels[0][1] * randn(shape, generator, like=like)
    for i, ((t, sigma), (_, sigma_next)) in enumerate(zip(levels, levels[1:])):
        x0_hat = ode_x0(denoiser, x, ode_levels(denoiser, (t, sigma), p))
        lr = p.lr * (1 + i / steps * (p.lr_min_ratio - 1))
        x0 = langevin(operator, y, x0_hat, r=p.r_scale * sigma, sigma_y=sigma_y, lr=lr, steps=p.langevin_steps,
                      generator=generator)
        x = x0 + sigma_next * randn(shape, generator, like=like) if i < steps - 1 else x0
        check_finite(x, "daps", i, steps, hint)
        if callback is not None:
            callback({"step": i, "total": steps, "t": t, "x": x / math.sqrt(1 + sigma_next**2), "x0": x0})
    return x
