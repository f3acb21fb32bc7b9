"""DiffPIR: plug-and-play image restoration with a diffusion denoiser (Zhu, Zhang, Liang, Cao, Wen,
Timofte & Van Gool, "Denoising Diffusion Models for Plug-and-Play Image Restoration", CVPRW 2023).

Half-quadratic splitting with the diffusion model as the prior's proximal operator (Algorithm 1).
Every step, from timestep t to the next t' of the grid (σ̄_t = sqrt((1 - ᾱ_t)/ᾱ_t)):

    x̂0  = D(x_t, t)                                            (the denoiser: prior step)
    x̂0' = argmin_x ‖y - A x‖² + ρ_t ‖x - x̂0‖²,  ρ_t = λ σ_n² / σ̄_t²   (data step, eq. 13)
        = (AᵀA + ρ_t I)⁻¹ (Aᵀy + ρ_t x̂0)                       (``operator.solve_normal``)
    ε̂   = (x_t - sqrt(ᾱ_t) x̂0') / sqrt(1 - ᾱ_t)
    x_t' = sqrt(ᾱ_t') x̂0' + sqrt(1 - ᾱ_t') (sqrt(1 - ζ) ε̂ + sqrt(ζ) ε),   ε ~ N(0, I)

The data step is the minimiser of ‖y - A x‖²/(2σ_n²) + λ ‖x - x̂0‖²/(2σ̄_t²) multiplied through by
2σ_n², the form the official code solves: it stays finite as σ_n → 0, where it tends to the
projection of x̂0 onto {A x = y}. As in the official code (yuanzhi-zhu/DiffPIR ``main_ddpir_*.py``):

* σ_n is measured on the [0, 1] image scale (the noise specs' scale, half the library's σ) and
  floored at 0.001 (``sigma = max(0.001, noise_level_img)``), so noiseless measurements need no
  division by zero and ρ_t > 0 always; σ̄_t is the diffusion's own ([-1, 1] scale). The official
  code mixes the two scales this way, so λ here is the paper's λ (7 for deblurring) unchanged;
* the grid is "quad" by default: t = T-1 - floor(T sqrt(i/(N-1))) (last step t = 0), denser at
  low noise; ``skip="uniform"`` uses the respaced grid of the other samplers;
* x_T is pure noise (the official code starts from sqrt(ᾱ_T) A⁺y-ish + noise at t = T-1, where
  ᾱ is ~4e-5: the same up to the first decimal of a pixel).

Deviations: the official loop skips the data step at the last timestep and returns x_t at t = 0
(pasting y back into the observed pixels for inpainting); here every step takes the data step and
the last one goes to ᾱ = 1, so the result is x̂0' at t = 0, which is data-consistent up to the
proximal weight (noiseless inpainting keeps the observed pixels to about ρ_0/(1 + ρ_0), a ~1e-2
relative pull toward x̂0 at λ = 1). The DDIM-style η of the official code (0 in all its configs)
is not exposed. Complex measurements (MRI k-space) work through A_adjoint (real images); any
operator works: SVD operators solve the data step in closed form, the others by conjugate
gradients, solved as the correction x̂0' = x̂0 + (AᵀA + ρ_t I)⁻¹ Aᵀ(y - A x̂0) (CG warm-started at
x̂0: at high noise ρ_t is tiny and the system ill-conditioned, and a truncated CG then stays near
x̂0 instead of near 0). One network evaluation per step, no backpropagation through the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from restore.prior.schedule import respaced_timesteps
from restore.samplers.base import Callback, Generators, Grid, check_finite, check_steps, gaussian_sigma, image_shape, randn, require

#: the official code's floor on σ_n ([0, 1] scale): ``sigma = max(0.001, noise_level_img)``
SIGMA_FLOOR = 0.001


@dataclass(frozen=True)
class DiffPIRParams:
    """Hyperparameters of DiffPIR (official: λ = 7, ζ = 0.3 deblurring; λ = 1, ζ = 1 inpainting)."""

    #: λ: weight of the prior in the data step, ρ_t = λ σ_n² / σ̄_t² (larger: closer to the denoiser's x̂0)
    lam: float = 7.0
    #: ζ in [0, 1]: share of fresh noise in the re-noising step (0: DDIM-like, deterministic; 1: all fresh)
    zeta: float = 0.3
    #: instead of a constant ζ, each step's own DDPM share ζ_t = (1 - ᾱ_t/ᾱ_t') / (1 - ᾱ_t): the re-noising of the
    #: DDPM posterior q(x_t' | x_t, x̂0) (DDIM's η = 1), which keeps what earlier steps drew where ζ = 1 forgets it
    ancestral: bool = False
    #: timestep grid: "quad" (official, denser at low noise) or "uniform" (the respaced grid)
    skip: str = "quad"
    #: conjugate-gradient tolerance and iterations of the data step (operators without an SVD)
    cg_tol: float = 1e-6
    cg_max_iter: int = 100
    #: clip x̂0 after the data step to the image range [-1, 1]. Early data steps (tiny ρ) amplify the
    #: measurement noise at weakly observed frequencies by up to σ_y / (2 sqrt(ρ)); unclipped, that
    #: feeds back through the next steps (measured: 6 dB instead of 29 dB on gblur with 20 steps).
    #: Off only for priors that live outside the image range (the Gaussian toy problems of the tests).
    clip_x0: bool = True

    def __post_init__(self) -> None:
        require(self.lam > 0 and math.isfinite(self.lam), f"diffpir needs a finite lam > 0, got {self.lam}")
        require(0 <= self.zeta <= 1, f"diffpir needs zeta in [0, 1], got {self.zeta}")
        require(self.skip in ("quad", "uniform"), f"diffpir: skip must be 'quad' or 'uniform', got '{self.skip}'")
        require(self.cg_tol > 0 and type(self.cg_max_iter) is int and self.cg_max_iter >= 1,
                f"diffpir needs cg_tol > 0 and an integer cg_max_iter >= 1, got {self.cg_tol}, {self.cg_max_iter!r}")


def quad_timesteps(num_train_steps: int, steps: int) -> list[int]:
    """The official "quad" grid, descending from T-1 to 0: t_i = T-1 - floor(T sqrt(i/(N-1)))."""
    if steps == 1:
        return [num_train_steps - 1]
    seq = [int(math.sqrt(num_train_steps**2 * i / (steps - 1))) for i in range(steps)]
    seq[-1] = num_train_steps - 1  # the official code's seq[-1] - 1
    return [num_train_steps - 1 - s for s in seq]


def diffpir_timesteps(num_train_steps: int, steps: int, skip: str) -> list[int]:
    if skip == "uniform":
        return respaced_timesteps(num_train_steps, steps).tolist()
    ts = quad_timesteps(num_train_steps, steps)
    require(all(a > b for a, b in zip(ts, ts[1:])),
            f"diffpir: the quad grid of {steps} steps over {num_train_steps} timesteps repeats timesteps; "
            "use fewer steps or skip='uniform'")
    return ts


def diffpir(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
            callback: Callback | None = None, params: DiffPIRParams | None = None) -> Tensor:
    """DiffPIR, Zhu et al. 2023 (Algorithm 1; official ``main_ddpir_*.py``).

    ``steps`` network evaluations (100 in the paper for deblurring and SR, 20 for inpainting);
    any operator, no SVD needed.
    """
    p = params or DiffPIRParams()
    check_steps("diffpir", steps, denoiser)
    grid = Grid.of(denoiser, diffpir_timesteps(denoiser.num_timesteps, steps, p.skip))
    x = randn(image_shape(operator, y), generator, like=y.real if y.is_complex() else y)
    return diffpir_chain(denoiser, operator, y, x, grid, p, noise=noise, generator=generator, callback=callback)


def diffpir_chain(denoiser, operator, y: Tensor, x: Tensor, grid: Grid, p: DiffPIRParams, *, noise, generator: Generators,
                  callback: Callback | None = None, name: str = "diffpir", first_step: int = 0,
                  total: int | None = None) -> Tensor:
    """DiffPIR's steps over ``grid`` from the iterate ``x`` at its first timestep; the last step lands on x_0.

    ``first_step`` and ``total`` number the steps for callbacks and errors when the chain is part of a
    longer run (restore.samplers.pyramid).
    """
    shape = x.shape
    like = y.real if y.is_complex() else y
    sigma_n = max(gaussian_sigma(noise) / 2, SIGMA_FLOOR)  # [0, 1] scale, as the official code
    total = total or len(grid)
    hint = (f"lam={p.lam:g} may be too small for this noise level (an ill-conditioned data step), "
            "or the denoiser returned NaN/Inf")
    for i, t, a_t, a_next in grid.steps():
        x0 = denoiser.denoise(x, t).detach()
        rho = p.lam * sigma_n**2 * a_t / (1 - a_t)  # λ σ_n² / σ̄_t²
        x0 = operator.prox_l2(x0, y, rho, tol=p.cg_tol, max_iter=p.cg_max_iter)  # data step, eq. 13
        if p.clip_x0:
            x0 = x0.clamp(-1, 1)
        eps_hat = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
        if i < len(grid) - 1:
            zeta = min(1.0, (1 - a_t / a_next) / (1 - a_t)) if p.ancestral else p.zeta
            direction = (1 - zeta) ** 0.5 * eps_hat
            if zeta > 0:
                direction = direction + zeta**0.5 * randn(shape, generator, like=like)
            x = a_next**0.5 * x0 + (1 - a_next) ** 0.5 * direction
        else:
            x = x0
        check_finite(x, name, first_step + i, total, hint)
        if callback is not None:
            callback({"step": first_step + i, "total": total, "t": t, "x": x, "x0": x0})
    return x
