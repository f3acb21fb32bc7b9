"""DPIR: plug-and-play image restoration with a denoiser prior (Zhang, Li, Zuo, Zhang, Van Gool &
Timofte, "Plug-and-Play Image Restoration with Deep Denoiser Prior", TPAMI 2021), here with the
diffusion model's x̂0 as the denoiser.

Half-quadratic splitting (the paper's eq. 6–7) over a decreasing ladder of noise levels σ_1 > … > σ_K
(geometric, from ``sigma_max`` down to the measurement's σ_n, as in the paper), starting from z = 0:

    x_k = argmin_x ‖y - A x‖² + ρ_k ‖x - z_{k-1}‖²,   ρ_k = λ σ_n² / σ_k²      (data step)
        = z_{k-1} + (AᵀA + ρ_k I)⁻¹ Aᵀ(y - A z_{k-1})                        (``operator.solve_normal``)
    z_k = D(x_k + r σ_k ε, σ_k)                                              (prior step)

and the last prior step's z_K is the result, as in the official code (a final data step would put
most of the measurement noise back: ρ_K = λ at σ_K = σ_n). As in the paper, step k denoises the
image turned by the k-th of the 8 flips and rotations and turns the output back (periodical
geometric self-ensemble: another view of the prior's errors every step, at no extra cost).

The first data step, from z = 0, is the Tikhonov reconstruction (AᵀA + ρ_1 I)⁻¹Aᵀy (for a blur: a
Wiener filter), so no task-specific initialisation is needed (the official deblurring script starts
from y itself, which only a same-size operator allows). λ = 1 is the exact splitting of the
MAP problem (ρ = σ_n² μ with μ = 1/σ_k², the penalty that makes the prior step a denoiser at σ_k);
the paper's λ = 0.23 trusts the denoiser more.

The denoiser is the diffusion x̂0 at the timestep whose σ̄_t equals σ_k (fractional timesteps), given
sqrt(ᾱ_t) x as its input. With ``renoise`` r = 0 that input carries no noise of its own, as DPIR feeds
its denoiser; r = 1 adds fresh noise of the level the network is told (the step DiffPIR takes with
ζ = 1), and the result becomes random. σ's are in the library's units (images on [-1, 1]: twice the
protocol's [0, 1] values); σ_n is floored at 0.002 (noiseless measurements) and the ladder ends at
``sigma_min`` or σ_n, never below the schedule's smallest σ (0.01 for the linear schedule).

Not a posterior sampler: with r = 0 one deterministic estimate aimed at the posterior mode, which
scores higher PSNR than a posterior sample (whose expected squared error is twice the MMSE) where the
measurement leaves texture undetermined. One network evaluation per step, no gradients through the
network; any operator (SVD operators solve the data step in closed form, others by conjugate gradients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from restore.prior.schedule import sigma_from_alpha_bar, timestep_for_sigma
from restore.samplers.base import Callback, Generators, check_finite, gaussian_sigma, image_shape, randn, require

#: σ_n floor (library units) for the data step's weight ρ = λ σ_n² / σ²: noiseless measurements stay finite
SIGMA_FLOOR = 0.002


@dataclass(frozen=True)
class DPIRParams:
    """Hyperparameters of DPIR (the paper: λ = 0.23, σ_1 = 49/255 on [0, 1], 8 to 40 iterations)."""

    #: λ: weight of the prior in the data step, ρ_k = λ σ_n² / σ_k² (1: the exact splitting; larger: smoother)
    lam: float = 0.23
    #: σ_1, the first (largest) noise level the denoiser is run at, in library units ([-1, 1] images)
    sigma_max: float = 0.4
    #: σ_K, the last level; None: the measurement's noise level σ_n — an image-domain level only for
    #: operators of about unit gain (masks, blur, SR, MRI); CT's sinogram is ~100× the image, so set it there
    sigma_min: float | None = None
    #: r in [0, 1]: fresh noise of r σ_k added before each prior step (0: deterministic DPIR)
    renoise: float = 0.0
    #: the paper's periodical geometric self-ensemble: prior step k denoises the image turned by the
    #: k-th of the 8 flips/rotations (mod 8) and turns the result back — no extra network evaluations
    self_ensemble: bool = True
    #: clip every data step's result to the image range [-1, 1] (off only for the Gaussian toy priors of the tests)
    clip: bool = True
    #: conjugate-gradient tolerance and iterations of the data step (operators without an SVD)
    cg_tol: float = 1e-6
    cg_max_iter: int = 100

    def __post_init__(self) -> None:
        require(self.lam > 0 and math.isfinite(self.lam), f"dpir needs a finite lam > 0, got {self.lam}")
        require(self.sigma_max > 0 and math.isfinite(self.sigma_max), f"dpir needs a finite sigma_max > 0, got {self.sigma_max}")
        require(self.sigma_min is None or 0 < self.sigma_min <= self.sigma_max,
                f"dpir needs 0 < sigma_min <= sigma_max, got {self.sigma_min}")
        require(0 <= self.renoise <= 1, f"dpir needs renoise in [0, 1], got {self.renoise}")
        require(type(self.cg_max_iter) is int and self.cg_max_iter >= 1 and self.cg_tol > 0,
                f"dpir needs an integer cg_max_iter >= 1 and cg_tol > 0, got {self.cg_max_iter!r}, {self.cg_tol}")


def noise_ladder(denoiser, sigma_n: float, steps: int, p: DPIRParams) -> list[float]:
    """σ_1 … σ_K, geometric from ``sigma_max`` to ``sigma_min`` (or σ_n), within the schedule's range."""
    sigmas = sigma_from_alpha_bar(denoiser.alphas_cumprod.double().cpu())
    lowest, highest = float(sigmas.min()), float(sigmas.max())
    top = min(p.sigma_max, highest)
    bottom = min(max(p.sigma_min if p.sigma_min is not None else sigma_n, lowest), top)
    if steps == 1:
        return [bottom]
    return torch.logspace(math.log10(top), math.log10(bottom), steps, dtype=torch.float64).tolist()


def dihedral(x: Tensor, k: int) -> Tensor:
    """The k-th (mod 8) of the 8 rotations / transpositions of the image plane."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.transpose(-2, -1) if k % 8 >= 4 else x


def dihedral_inverse(x: Tensor, k: int) -> Tensor:
    x = x.transpose(-2, -1) if k % 8 >= 4 else x
    return torch.rot90(x, -(k % 4), dims=(-2, -1))


def dpir(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
         callback: Callback | None = None, params: DPIRParams | None = None) -> Tensor:
    """DPIR, Zhang et al. 2021 (HQS with a denoiser prior, eq. 6–7), the diffusion x̂0 as denoiser.

    ``steps`` network evaluations (the paper uses 8 for deblurring, 24–40 for SR and demosaicking).
    """
    p = params or DPIRParams()
    require(isinstance(steps, int) and steps >= 1, f"dpir: steps must be at least 1, got {steps}")
    shape = image_shape(operator, y)
    like = y.real if y.is_complex() else y
    sigma_n = max(gaussian_sigma(noise), SIGMA_FLOOR)
    sigmas = noise_ladder(denoiser, sigma_n, steps, p)
    timesteps = timestep_for_sigma(denoiser.alphas_cumprod, torch.tensor(sigmas, dtype=torch.float64)).float()
    hint = f"lam={p.lam:g} may be too small for this noise level, or the denoiser returned NaN/Inf"

    z = torch.zeros(shape, dtype=like.dtype, device=like.device)
    for i, (sigma, t) in enumerate(zip(sigmas, timesteps)):
        x = operator.prox_l2(z, y, p.lam * sigma_n**2 / sigma**2, tol=p.cg_tol, max_iter=p.cg_max_iter)  # data step
        if p.clip:
            x = x.clamp(-1, 1)
        if p.renoise > 0:
            x = x + p.renoise * sigma * randn(shape, generator, like=like)
        k = i if p.self_ensemble else 0
        z = dihedral_inverse(denoiser.denoise(dihedral(denoiser.alpha_bar(t, x).sqrt() * x, k), t), k).detach()
        check_finite(z, "dpir", i, steps, hint)
        if callback is not None:
            callback({"step": i, "total": steps, "t": float(t), "x": x, "x0": z})
    return z
