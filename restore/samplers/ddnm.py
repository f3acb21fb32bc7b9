"""DDNM and DDNM+: the Denoising Diffusion Null-Space Model (Wang, Yu & Zhang, ICLR 2023).

Every step splits the denoiser's estimate x̂0 into its range and null-space parts and replaces the
range part by the measurement's: x̂0 ← x̂0 - Σ_t A⁺(A x̂0 - y). Noiseless (σ_y = 0) this is
Algorithm 1 exactly, x̂0 ← A⁺y + (I - A⁺A) x̂0, followed by a DDIM step with η (the official code's
choice, "DDIM instead of DDPM"):  x_{t'} = sqrt(ᾱ_{t'}) x̂0 + sqrt(1 - ᾱ_{t'}) (η n + sqrt(1 - η²) ε̂).

DDNM+ (Algorithm 2, Appendix I) handles noisy y: A⁺y carries noise of level σ_y / s_i in spectral
coordinate i, so the correction is scaled (Σ_t) and the fresh noise reduced (Φ_t) where the
measurement is noisier than the current diffusion level. In σ-space (σ' = sqrt((1 - ᾱ_{t'}) / ᾱ_{t'})
the level reached by the step, x_{t'} = sqrt(ᾱ_{t'}) (x̂0 + Φ_t-noise)), per coordinate with s_i > 0:

* σ' ≥ σ_y / s_i:  λ_i = 1, noise sqrt(σ'² - σ_y²/s_i²) n_i (no ε̂ term)
* σ' < σ_y / s_i:  λ_i = s_i σ' sqrt(1 - η²) / σ_y, noise σ' η n_i
* s_i = 0 (null space) and σ_y = 0 everywhere: λ_i = 1 and the plain DDIM noise,

which is the official ``Lambda`` / ``Lambda_noise`` of the SVD operators (and, in this form, the
same update as DDRM with η_b = 1). For operators with an SVD this is done coordinate-wise with
``Vt`` / ``V`` (the closed-form A⁺). Other operators (reflect-boundary blur, MRI, CT) use ``A_pinv``
(conjugate gradients) and the scalar version of the paper's eq. 19: Σ_t = λ_t I and the DDIM noise
scaled by γ_t, with every singular value taken equal to one effective value s_eff per image,

* σ' ≥ σ_y/s_eff: λ_t = 1, noise sqrt(σ'² - σ_y²/s_eff²) (η n + sqrt(1 - η²) ε̂)
* σ' < σ_y/s_eff: λ_t = σ' sqrt(1 - η²) / (σ_y/s_eff), noise σ' η n.

s_eff is the ``effective_singular_value`` parameter, or (None) measured once per image with one
fixed probe n ~ N(0, I) in measurement space: s_eff² = ‖A A⁺ n‖² / ‖A⁺ n‖², so that σ_y / s_eff is
the RMS noise A⁺ puts on each range coordinate (1 for masks and the orthonormal MRI Fourier
operator). For complex measurements σ_y is per complex sample, i.e. σ_y/√2 per real part, and the
scalar noise level is scaled accordingly. This approximation treats the null space like the range
(it gets the reduced noise too) — exact only when all nonzero singular values are equal.

A nonlinear operator with a decoder h† (a JPEG: dequantise and inverse DCT) takes the same scalar step with
h†(h(x̂0)) - h†(y) for A⁺(A x̂0 - y) and σ_y = 0: x̂0's quantised coefficients are swapped for the file's, the
JPEG variant of DDRM (Kawar, Song, Ermon & Elad 2022, "JPEG Artifact Correction using Denoising Diffusion
Restoration Models").

The last step goes to σ' = 0 (ᾱ = 1): the result is the corrected x̂0 of the last evaluation, so a
noiseless result satisfies A x = y exactly (SVD operators) or to the CG tolerance of ``A_pinv``.

Time travel (Section 3.3, Algorithm 3 with RePaint's jump schedule, the official ``get_schedule_jump``):
with ``travel_repeat`` r > 1, on reaching every ``travel_length``-th level (L steps of the respaced grid)
the chain is diffused forward L levels, x_{t+L} ~ q(x_{t+L} | x_t) (in σ-space z' = z + sqrt(σ'² - σ²) n,
one level at a time), and denoised again; this happens r - 1 times per level. As in the paper, the
forward jump starts from the current x_t (the official code instead re-noises the last raw x̂0, before
its range-space correction). The official default is no time travel (L = r = 1). Time travel costs
extra network evaluations: :func:`ddnm_nfe` counts them.
Callbacks and the step numbers of errors count network evaluations; the forward jumps are silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from restore.samplers.base import Callback, Generators, Grid, check_finite, check_steps, gaussian_sigma, image_shape, randn, require


@dataclass(frozen=True)
class DDNMParams:
    """Hyperparameters of DDNM / DDNM+ (official defaults: η = 0.85, 100 steps, no time travel)."""

    #: η of the DDIM step: share of fresh noise vs. the model's ε̂ (0 deterministic, 1 fully stochastic)
    eta: float = 0.85
    #: operators without an SVD only, σ_y > 0: the one singular value of the scalar DDNM+
    #: approximation; None measures it once per image with a fixed probe (see the module docstring)
    effective_singular_value: float | None = None
    #: timesteps every T // steps from below T (990, 980, …, 0 for 100), the official DDRM code's respacing,
    #: instead of evenly over [T-1, 0] (999, 989, …, 0)
    strided_grid: bool = False
    #: time travel (Section 3.3): L, how many respaced steps each jump goes back (official ``travel_length``)
    travel_length: int = 1
    #: time travel: r, how often every L-th level is visited (official ``travel_repeat``; 1 = no time travel)
    travel_repeat: int = 1
    #: operators without an SVD: conjugate-gradient iterations of each step's A⁺ (None: the operator's
    #: own default, e.g. 500 for CT); a few iterations from zero also regularise an ill-posed A⁺
    cg_max_iter: int | None = None

    def __post_init__(self) -> None:
        require(0.0 <= self.eta <= 1.0, f"ddnm needs 0 <= eta <= 1, got eta={self.eta}")
        s_eff = self.effective_singular_value
        require(s_eff is None or (s_eff > 0 and math.isfinite(s_eff)),
                f"ddnm: effective_singular_value must be a finite number > 0 (or None), got {s_eff}")
        for name in ("travel_length", "travel_repeat", "cg_max_iter"):
            value = getattr(self, name)
            require((name == "cg_max_iter" and value is None) or (type(value) is int and value >= 1),
                    f"ddnm: {name} must be an integer >= 1, got {value!r}")


def travel_schedule(steps: int, travel_length: int = 1, travel_repeat: int = 1) -> list[int]:
    """The levels the chain visits: indices into the ascending respaced grid, steps - 1 first, -1 (σ = 0) last.

    RePaint's ``get_schedule_jump`` (as in the official DDNM code): descending by one, and after arriving at
    each level j = 0, L, 2L, ... (j < steps - L) climbing back L levels, r - 1 times. Without time travel it is
    steps - 1, steps - 2, ..., 0, -1.
    """
    jumps = {j: travel_repeat - 1 for j in range(0, steps - travel_length, travel_length)}
    level, levels = steps, []
    while level >= 1:
        level -= 1
        levels.append(level)
        if jumps.get(level, 0) > 0:
            jumps[level] -= 1
            for _ in range(travel_length):
                level += 1
                levels.append(level)
    levels.append(-1)
    return levels


def ddnm_nfe(steps: int, params: DDNMParams | None = None) -> int:
    """Network evaluations of one run: ``steps`` plus those of time travel."""
    p = params or DDNMParams()
    levels = travel_schedule(steps, p.travel_length, p.travel_repeat)
    return sum(1 for a, b in zip(levels, levels[1:]) if b < a)


def effective_singular_value(operator, y: Tensor) -> Tensor:
    """s_eff per image (B,): ‖A A⁺ n‖ / ‖A⁺ n‖ for one fixed standard normal probe n shaped like y[0].

    The probe is drawn from its own seeded generator (not the sampler's), the same for every image,
    so results do not depend on the batch. One ``A_pinv`` (CG for operators without an SVD).
    """
    probe_gen = torch.Generator().manual_seed(0)
    real = torch.randn((1, *y.shape[1:], *((2,) if y.is_complex() else ())), generator=probe_gen, dtype=torch.float64)
    probe = (torch.view_as_complex(real) / math.sqrt(2)) if y.is_complex() else real
    probe = probe.to(device=y.device, dtype=y.dtype).expand(y.shape).contiguous()
    back = operator.A_pinv(probe)
    range_part = operator.A(back)
    num = range_part.abs().pow(2).flatten(1).sum(dim=1)
    den = back.abs().pow(2).flatten(1).sum(dim=1)
    return (num / den.clamp_min(torch.finfo(den.dtype).tiny)).sqrt()


class SpectralCorrection:
    """DDNM+ coordinate by coordinate on the singular values (operators with an SVD): the state is z̄ = Vᵀz."""

    def __init__(self, operator, y: Tensor, sigma_y: float, p: DDNMParams) -> None:
        self.operator, self.shape, self.sigma_y, self.eta = operator, image_shape(operator, y), sigma_y, p.eta
        s = operator.singular_values().to(device=y.device, dtype=y.dtype)
        self.keep = s > operator.rcond * s.amax(dim=1, keepdim=True)
        self.s_safe = torch.where(self.keep, s, torch.ones_like(s))
        self.y_bar = torch.where(self.keep, operator.Ut(y) / self.s_safe, torch.zeros_like(self.s_safe))  # Vᵀ A⁺ y
        self.noisy = self.keep if sigma_y > 0 else torch.zeros_like(self.keep)  # where DDNM+ differs from DDNM
        self.noise_level = sigma_y / self.s_safe  # σ_y / s_i
        self.state_shape = (self.shape[0], math.prod(self.shape[1:]))

    def image(self, state: Tensor) -> Tensor:
        return self.operator.V(state).reshape(self.shape)

    def step(self, state: Tensor, x0: Tensor, fresh: Tensor, sigma_t: float, sigma_next: float) -> Tensor:
        m, keep_eps = self.s_safe.shape[1], math.sqrt(1 - self.eta**2)
        x0_bar = self.operator.Vt(x0)
        ddim = sigma_next * (self.eta * fresh + keep_eps * (state - x0_bar) / sigma_t)  # σ' (η n + sqrt(1-η²) ε̂)
        x0_m = x0_bar[:, :m]
        above = sigma_next >= self.noise_level  # σ' ≥ σ_y / s_i (always true when σ_y = 0)
        lam = torch.where(above, torch.ones_like(self.s_safe), self.s_safe * sigma_next * keep_eps / (self.sigma_y or 1.0))
        corrected = torch.where(self.keep, x0_m - lam * (x0_m - self.y_bar), x0_m)  # x̄0 - Σ_t Vᵀ A⁺(A x̂0 - y)
        plus = torch.where(above, (sigma_next**2 - self.noise_level**2).clamp_min(0).sqrt(), sigma_next * self.eta)
        observed = corrected + torch.where(self.noisy, plus * fresh[:, :m], ddim[:, :m])
        return torch.cat([observed, x0_bar[:, m:] + ddim[:, m:]], dim=1)


class ScalarCorrection:
    """The scalar DDNM+ of eq. 19 through ``A_pinv`` (any operator): one effective singular value per image."""

    def __init__(self, operator, y: Tensor, sigma_y: float, p: DDNMParams) -> None:
        self.operator, self.y, self.shape, self.eta = operator, y, image_shape(operator, y), p.eta
        self.pinv_options = {} if p.cg_max_iter is None else {"max_iter": p.cg_max_iter}
        dtype, batch = y.real.dtype, self.shape[0]
        self.noise_level = torch.zeros(batch, *([1] * len(self.shape[1:])), dtype=dtype, device=y.device)
        if sigma_y > 0 and operator.linear:  # a decoder's (JPEG's) rounding is taken as exact, as Kawar et al. 2022 do
            s_eff = (torch.full((batch,), float(p.effective_singular_value), dtype=dtype, device=y.device)
                     if p.effective_singular_value is not None else effective_singular_value(operator, y))
            per_real_part = sigma_y / math.sqrt(2) if y.is_complex() else sigma_y
            self.noise_level = (per_real_part / s_eff).to(dtype).reshape(self.noise_level.shape)
        self.state_shape = self.shape

    def image(self, state: Tensor) -> Tensor:
        return state

    def back_projection(self, x0: Tensor) -> Tensor:
        """What x̂0 has of the range of A beyond what y says: A⁺(A x̂0 - y); for a nonlinear operator with a decoder
        h† (a JPEG's), h†(h(x̂0)) - h†(y), which swaps x̂0's quantised coefficients for the file's (DDRM-JPEG)."""
        if self.operator.linear:
            return self.operator.A_pinv(self.operator.A(x0) - self.y, **self.pinv_options)
        return self.operator.pinv(self.operator.A(x0)) - self.operator.pinv(self.y)

    def step(self, state: Tensor, x0: Tensor, fresh: Tensor, sigma_t: float, sigma_next: float) -> Tensor:
        keep_eps = math.sqrt(1 - self.eta**2)
        above = sigma_next >= self.noise_level  # (B, 1, 1, 1)
        lam = torch.where(above, torch.ones_like(self.noise_level), sigma_next * keep_eps / self.noise_level.clamp_min(1e-30))
        correction = self.back_projection(x0)
        x0_hat = x0 - lam * (correction.real if correction.is_complex() else correction)
        gamma = torch.where(above, (sigma_next**2 - self.noise_level**2).clamp_min(0).sqrt(), torch.zeros_like(self.noise_level))
        eps = (state - x0) / sigma_t
        return x0_hat + torch.where(above, gamma * (self.eta * fresh + keep_eps * eps), sigma_next * self.eta * fresh)


def ddnm(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
         callback: Callback | None = None, params: DDNMParams | None = None) -> Tensor:
    """DDNM / DDNM+, Wang et al. 2023 (Algorithm 1; Algorithm 2 and Appendix I for noisy y; official ``ddnm_plus_diffusion``).

    Starts from pure noise; each of ``steps`` respaced timesteps evaluates the network once, applies
    the (noise-aware) range-null-space correction and takes a DDIM step with η. Any operator: closed
    form on the SVD where there is one, else ``A_pinv`` (conjugate gradients) and the scalar DDNM+.
    """
    p = params or DDNMParams()
    check_steps("ddnm", steps, denoiser)
    require(p.travel_repeat == 1 or p.travel_length < steps,
            f"ddnm: travel_length={p.travel_length} must be smaller than steps={steps} for time travel (travel_repeat > 1)")
    spectral = operator.has_svd and not y.is_complex()
    correction = (SpectralCorrection if spectral else ScalarCorrection)(operator, y, gaussian_sigma(noise), p)
    grid = Grid.respaced(denoiser, steps, p.strided_grid)

    def alpha_bar(level: int) -> float:  # levels count up from the clean end; level -1 is ᾱ = 1
        return grid.alpha_bars[steps - 1 - level] if level >= 0 else 1.0

    def sigma(level: int) -> float:
        return math.sqrt((1 - alpha_bar(level)) / alpha_bar(level))

    levels = travel_schedule(steps, p.travel_length, p.travel_repeat)
    total = ddnm_nfe(steps, p)
    state = randn(correction.state_shape, generator, like=y.real) / math.sqrt(alpha_bar(levels[0]))  # x_T ~ N(0, I)
    hint = "the denoiser returned NaN/Inf, or y / the operator hold non-finite values"
    step = 0
    for level, level_next in zip(levels, levels[1:]):
        if level_next > level:  # time travel: x_{t'} ~ q(x_{t'} | x_t), i.e. z' = z + sqrt(σ'² - σ²) n
            state = state + math.sqrt(sigma(level_next) ** 2 - sigma(level) ** 2) * randn(correction.state_shape, generator, like=y.real)
            continue
        t = grid.timesteps[steps - 1 - level]
        x0 = denoiser(math.sqrt(alpha_bar(level)) * correction.image(state), t)
        fresh = randn(correction.state_shape, generator, like=y.real)
        state = correction.step(state, x0, fresh, sigma(level), sigma(level_next))
        check_finite(state, "ddnm", step, total, hint)
        if callback is not None:
            callback({"step": step, "total": total, "t": t, "x": math.sqrt(alpha_bar(level_next)) * correction.image(state), "x0": x0})
        step += 1
    return correction.image(state)
