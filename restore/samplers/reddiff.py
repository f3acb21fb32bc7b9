"""RED-Diff: regularisation by denoising diffusion (Mardani, Song, Kautz & Vahdat, ICLR 2024).

A variational method, not a sampler: with q(x_0 | y) = δ(x_0 - μ) the KL objective becomes

    min_μ  ‖y - A μ‖² / 2  +  λ E_{t, ε} [ w(t) ⟨sg(ε̂(x_t, t) - ε), μ⟩ ],   x_t = sqrt(ᾱ_t) μ + sqrt(1 - ᾱ_t) ε,

optimised with Adam, one timestep per iteration, t descending over the schedule (Algorithm 1).
The regulariser's gradient is λ w(t) (ε̂ - ε): no backpropagation through the network. The weight
is w(t) = σ_t = sqrt((1 - ᾱ_t)/ᾱ_t), the inverse square-root SNR (the official ``denoise_term_weight:
linear``; the paper's other choices are available through ``weighting``).

Following the official ``algos/reddiff.py``:

* μ starts at A⁺y (``initialize``) — here regularised, (AᵀA + ρI)⁻¹Aᵀy with ρ = max(σ_y², 10⁻³): the
  official code's A⁺ for deblurring is DDRM's SVD with small singular values zeroed, and the exact
  A⁺ of a Gaussian blur amplifies the noise by up to 10⁶ (RED-Diff then ended at 5 dB on gblur);
  for masks and SR the two agree up to a factor 1/(1 + ρ). The timesteps run from the top of the
  schedule down to 0;
* both terms are means, not sums: the data term is ‖y - A μ‖² / (2 m) with m the number of
  entries of one measurement, the regulariser ⟨ε̂ - ε, μ⟩ / n with n the number of pixels, so
  per image g = obs_weight · Aᵀ(A μ - y) / m + λ w(t) (ε̂ - ε) / n. (The official code also divides
  by the batch size, which Adam's per-pixel normalisation almost cancels; here every image's
  gradient is its own, so a batch equals its images run one by one.) Inpainting measurements here
  keep the full image size (zeros where pixels are missing), so m counts missing pixels too and
  the data term is weaker by the observed fraction than in the official code (which keeps only
  observed pixels); ``obs_weight`` compensates where wanted.
* Adam with betas (0.9, 0.99), no weight decay;
* the result is μ as the last step sees it — before that step's Adam update — as the official ``x0_pred``
  (there with σ_x0 = 10⁻⁴ noise added), not clamped (the official code clamps only when saving images).

The data gradient is A_adjoint(A μ - y) (real part for complex measurements: the gradient of the
real objective with respect to a real μ), so any linear operator works. A nonlinear operator
(``operator.linear`` False, e.g. JPEG) has no adjoint or proximal step: its data gradient is the
autograd gradient of ½‖A(μ) - y‖² (|·|² for complex residuals; for a linear A the same Aᵀ(Aμ - y)),
and μ starts from the operator's own inverse ``operator.pinv(y)`` (JPEG: the decoder) where it has
one, else from zeros. NFE = steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from restore.samplers.base import Callback, Generators, Grid, check_finite, check_steps, gaussian_sigma, image_shape, randn, require

#: w(t) as a function of σ_t = sqrt((1 - ᾱ_t)/ᾱ_t): the official ``denoise_term_weight`` choices
WEIGHTINGS = {
    "linear": lambda s: s,
    "sqrt": math.sqrt,
    "square": lambda s: s * s,
    "log": lambda s: math.log(s + 1.0),
    "trunc_linear": lambda s: min(s, 1.0),
    "power2over3": lambda s: s ** (2 / 3),
    "const": lambda s: 1.0,
}


@dataclass(frozen=True)
class REDDiffParams:
    """Hyperparameters of RED-Diff (official config: λ = 0.25, linear weighting, Adam; lr 0.25 inpainting, 0.5 others)."""

    #: λ: weight of the score-matching regulariser (official ``grad_term_weight``)
    lam: float = 0.25
    #: Adam's learning rate (official ``lr``; 0.5 in the README and the deblurring / SR runs)
    lr: float = 0.5
    #: weight of the data term (official ``obs_weight``)
    obs_weight: float = 1.0
    #: w(t) in terms of σ_t: linear (the paper's sqrt((1 - ᾱ)/ᾱ)), sqrt, square, log, trunc_linear, power2over3, const
    weighting: str = "linear"
    #: Adam's β1, β2 and ε (official: 0.9, 0.99 and torch's default 1e-8)
    adam_betas: tuple[float, float] = (0.9, 0.99)
    adam_eps: float = 1e-8
    #: timesteps every T // steps from below T (950, 900, …, 0 for 20 of 1000: the official DDRM respacing) instead
    #: of evenly over [T-1, 0] (999, 946, …, 0); measured in RESULTS.md "Session 18: DDRM's timesteps"
    strided_grid: bool = False

    def __post_init__(self) -> None:
        require(self.weighting in WEIGHTINGS, f"reddiff: unknown weighting '{self.weighting}'; use one of {', '.join(WEIGHTINGS)}")
        require(self.lr > 0 and self.lam >= 0 and self.obs_weight >= 0 and all(map(math.isfinite, (self.lr, self.lam, self.obs_weight))),
                f"reddiff needs finite lr > 0, lam >= 0, obs_weight >= 0; got lr={self.lr}, lam={self.lam}, obs_weight={self.obs_weight}")
        require(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas) and self.adam_eps > 0,
                f"reddiff needs two adam_betas in [0, 1) and adam_eps > 0, got {self.adam_betas}, {self.adam_eps}")


def start(operator, y: Tensor, shape: tuple[int, ...], noise) -> Tensor:
    """μ's start: (AᵀA + ρI)⁻¹Aᵀy for a linear operator; a nonlinear one's ``pinv(y)`` if it has one, else zeros."""
    zeros = torch.zeros(shape, dtype=y.real.dtype, device=y.device)
    if operator.linear:
        return operator.prox_l2(zeros, y, max(gaussian_sigma(noise) ** 2, 1e-3)).detach()
    if hasattr(operator, "pinv"):
        return operator.pinv(y).to(dtype=zeros.dtype).reshape(shape).detach()
    return zeros


def data_gradient(operator, y: Tensor, mu: Tensor) -> Tensor:
    """∇_μ ½‖A(μ) - y‖²: Aᵀ(Aμ - y) by the adjoint (linear operators), by autograd otherwise."""
    if operator.linear:
        grad = operator.A_adjoint(operator.A(mu) - y)
        return grad.real if grad.is_complex() else grad
    with torch.enable_grad():
        x = mu.detach().requires_grad_(True)
        r = operator.A(x) - y
        loss = 0.5 * (r.abs() if r.is_complex() else r).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def reddiff(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
            callback: Callback | None = None, params: REDDiffParams | None = None) -> Tensor:
    """RED-Diff, Mardani et al. 2024 (Algorithm 1; official ``algos/reddiff.py``).

    A MAP-like optimiser of μ with Adam, one network evaluation per step and no backpropagation
    through the network; deterministic apart from the ε drawn at every step. Any operator, linear or
    differentiable nonlinear.
    """
    p = params or REDDiffParams()
    check_steps("reddiff", steps, denoiser)

    shape = image_shape(operator, y)
    n = math.prod(shape[1:])
    m = y[0].numel()
    weight = WEIGHTINGS[p.weighting]
    beta1, beta2 = p.adam_betas
    grid = Grid.respaced(denoiser, steps, p.strided_grid)
    hint = (f"the learning rate lr={p.lr:g} or lam={p.lam:g} is probably too large, "
            "or the denoiser returned NaN/Inf")

    mu = start(operator, y, shape, noise)
    m1 = torch.zeros_like(mu)  # Adam's first and second moments
    m2 = torch.zeros_like(mu)
    for i, t, a_t, _ in grid.steps():
        eps = randn(shape, generator, like=mu)
        x_t = a_t**0.5 * mu + (1 - a_t) ** 0.5 * eps
        eps_hat = denoiser.eps(x_t, t).detach()

        data_grad = data_gradient(operator, y, mu)
        w_t = p.lam * weight(math.sqrt((1 - a_t) / a_t))
        grad = p.obs_weight * data_grad.reshape(shape) / m + w_t * (eps_hat - eps) / n

        # Adam (torch.optim.Adam's update, written out so every image is its own problem); the official code returns
        # x0_pred, the μ the last step saw, so that step's update is not applied
        if i < steps - 1:
            m1 = beta1 * m1 + (1 - beta1) * grad
            m2 = beta2 * m2 + (1 - beta2) * grad * grad
            step = i + 1
            denom = (m2 / (1 - beta2**step)).sqrt() + p.adam_eps
            mu = mu - (p.lr / (1 - beta1**step)) * m1 / denom

        check_finite(mu, "reddiff", i, steps, hint)
        if callback is not None:
            x0 = (x_t - (1 - a_t) ** 0.5 * eps_hat) / a_t**0.5
            callback({"step": i, "total": steps, "t": t, "x": mu, "x0": x0})
    return mu

