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

The last step goes to σ' = 0 (ᾱ = 1): the result is the corrected x̂0 of the last evaluation, so a
noiseless result satisfies A x = y exactly (SVD operators) or to the CG tolerance of ``A_pinv``.

Time travel (Section 3.3, Algorithm 3 with RePaint's jump schedule, the official ``get_schedule_jump``):
with ``travel_repeat`` r > 1, on reaching every ``travel_length``-th level (L steps of the respaced grid)
the chain is diffused forward L levels, x_{t+L} ~ q(x_{t+L} | x_t) (in σ-space z' = z + sqrt(σ'² - σ²) n,
one level at a time), and denoised again; this happens r - 1 times per level. As in the paper, the
forward jump starts from the current x_t (the official code instead re-noises the last raw x̂0, before
its range-space correction). The official default is no time travel (L = r = 1). Time travel costs
extra network evaluations: :func:`ddnm_nfe` counts them (the registry's ``nfe(steps)`` assumes none).
Callbacks and the step numbers of errors count network evaluations; the forward jumps are silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from restore.errors import RestoreError
from restore.prior.schedule import respaced_timesteps
from restore.samplers.base import Callback, Generators, check_finite, gaussian_sigma, image_shape, randn
from restore.samplers.registry import SamplerInfo, register


@dataclass(frozen=True)
class DDNMParams:
    """Hyperparameters of DDNM / DDNM+ (official defaults: η = 0.85, 100 steps, no time travel)."""

    #: η of the DDIM step: share of fresh noise vs. the model's ε̂ (0 deterministic, 1 fully stochastic)
    eta: float = 0.85
    #: operators without an SVD only, σ_y > 0: the one singular value of the scalar DDNM+
    #: approximation; None measures it once per image with a fixed probe (see the module docstring)
    effective_singular_value: float | None = None
    #: time travel (Section 3.3): L, how many respaced steps each jump goes back (official ``travel_length``)
    travel_length: int = 1
    #: time travel: r, how often every L-th level is visited (official ``travel_repeat``; 1 = no time travel)
    travel_repeat: int = 1
    #: operators without an SVD: conjugate-gradient iterations of each step's A⁺ (None: the operator's
    #: own default, e.g. 500 for CT); a few iterations from zero also regularise an ill-posed A⁺
    cg_max_iter: int | None = None


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


def check_params(p: DDNMParams, steps: int, num_timesteps: int) -> None:
    if not 0.0 <= p.eta <= 1.0:
        raise RestoreError(f"ddnm needs 0 <= eta <= 1, got eta={p.eta}")
    s_eff = p.effective_singular_value
    if s_eff is not None and not (s_eff > 0 and math.isfinite(s_eff)):
        raise RestoreError(f"ddnm: effective_singular_value must be a finite number > 0 (or None), got {s_eff}")
    if not 1 <= steps <= num_timesteps:
        raise RestoreError(f"ddnm: steps must be in 1..{num_timesteps}, got {steps}")
    for name in ("travel_length", "travel_repeat", "cg_max_iter"):
        value = getattr(p, name)
        if name == "cg_max_iter" and value is None:  # the operator's own default
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RestoreError(f"ddnm: {name} must be an integer >= 1, got {value!r}")
    if p.travel_repeat > 1 and p.travel_length >= steps:
        raise RestoreError(f"ddnm: travel_length={p.travel_length} must be smaller than steps={steps} "
                           "for time travel (travel_repeat > 1)")


def ddnm(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
         callback: Callback | None = None, params: DDNMParams | None = None) -> Tensor:
    """DDNM / DDNM+, Wang et al. 2023 (Algorithm 1; Algorithm 2 and Appendix I for noisy y; official ``ddnm_plus_diffusion``).

    Starts from pure noise; each of ``steps`` respaced timesteps evaluates the network once, applies
    the (noise-aware) range-null-space correction and takes a DDIM step with η. Any operator: closed
    form on the SVD where there is one, else ``A_pinv`` (conjugate gradients) and the scalar DDNM+.
    """
    p = params or DDNMParams()
    check_params(p, steps, denoiser.num_timesteps)

    sigma_y = gaussian_sigma(noise)
    shape = image_shape(operator, y)
    batch = shape[0]
    dtype = y.real.dtype
    eta, keep_eps = p.eta, math.sqrt(1 - p.eta**2)

    ascending = respaced_timesteps(denoiser.num_timesteps, steps).flip(0).tolist()
    alpha_bars = denoiser.alphas_cumprod.double().cpu()

    def alpha_bar(level: int) -> float:  # level -1 is the end of the chain, ᾱ = 1 (σ = 0)
        return 1.0 if level < 0 else float(alpha_bars[ascending[level]])

    def sigma(level: int) -> float:
        a = alpha_bar(level)
        return math.sqrt((1 - a) / a)

    spectral = operator.has_svd and not y.is_complex()
    n = math.prod(shape[1:])
    if spectral:  # coordinate-wise DDNM+ on the singular values
        s = operator.singular_values().to(device=y.device, dtype=dtype)
        keep = s > operator.rcond * s.amax(dim=1, keepdim=True)
        s_safe = torch.where(keep, s, torch.ones_like(s))
        y_bar = torch.where(keep, operator.Ut(y) / s_safe, torch.zeros_like(s_safe))  # Vᵀ A⁺ y on the first m
        m = s.shape[1]
        noisy = keep if sigma_y > 0 else torch.zeros_like(keep)  # coordinates where DDNM+ differs from DDNM
        noise_level = sigma_y / s_safe  # σ_y / s_i
    else:  # scalar DDNM+ (eq. 19) with one effective singular value per image
        pinv_options = {} if p.cg_max_iter is None else {"max_iter": p.cg_max_iter}
        noise_level = torch.zeros(batch, *([1] * len(shape[1:])), dtype=dtype, device=y.device)
        if sigma_y > 0:
            s_eff = (torch.full((batch,), float(p.effective_singular_value), dtype=dtype, device=y.device)
                     if p.effective_singular_value is not None else effective_singular_value(operator, y))
            per_real_part = sigma_y / math.sqrt(2) if y.is_complex() else sigma_y
            noise_level = (per_real_part / s_eff).to(dtype).reshape(noise_level.shape)

    # the state is z = x_t / sqrt(ᾱ_t): its spectral coefficients z̄ = Vᵀz for SVD operators, else the image
    state_shape = (batch, n) if spectral else shape
    to_image = (lambda v: operator.V(v).reshape(shape)) if spectral else (lambda v: v)
    levels = travel_schedule(steps, p.travel_length, p.travel_repeat)
    total = sum(1 for a, b in zip(levels, levels[1:]) if b < a)
    state = randn(state_shape, generator, like=y.real) / math.sqrt(alpha_bar(levels[0]))  # x_T ~ N(0, I)
    hint = "the denoiser returned NaN/Inf, or y / the operator hold non-finite values"
    step = 0
    for level, level_next in zip(levels, levels[1:]):
        sigma_t, sigma_next = sigma(level), sigma(level_next)
        if level_next > level:  # time travel: x_{t'} ~ q(x_{t'} | x_t), i.e. z' = z + sqrt(σ'² - σ²) n
            state = state + math.sqrt(sigma_next**2 - sigma_t**2) * randn(state_shape, generator, like=y.real)
            continue
        t = ascending[level]
        x0 = denoiser(math.sqrt(alpha_bar(level)) * to_image(state), t)
        fresh = randn(state_shape, generator, like=y.real)

        if spectral:
            x0_bar = operator.Vt(x0)
            ddim = sigma_next * (eta * fresh + keep_eps * (state - x0_bar) / sigma_t)  # σ' (η n + sqrt(1-η²) ε̂)
            x0_m = x0_bar[:, :m]
            above = sigma_next >= noise_level  # σ' ≥ σ_y / s_i (always true when σ_y = 0)
            lam = torch.where(above, torch.ones_like(s_safe), s_safe * sigma_next * keep_eps / (sigma_y or 1.0))
            corrected = torch.where(keep, x0_m - lam * (x0_m - y_bar), x0_m)  # x̄0 - Σ_t Vᵀ A⁺(A x̂0 - y)
            plus = torch.where(above, (sigma_next**2 - noise_level**2).clamp_min(0).sqrt(), sigma_next * eta) * fresh[:, :m]
            state = torch.cat([corrected + torch.where(noisy, plus, ddim[:, :m]), x0_bar[:, m:] + ddim[:, m:]], dim=1)
        else:
            above = sigma_next >= noise_level  # (B, 1, 1, 1)
            lam = torch.where(above, torch.ones_like(noise_level), sigma_next * keep_eps / noise_level.clamp_min(1e-30))
            correction = operator.A_pinv(operator.A(x0) - y, **pinv_options)
            x0_hat = x0 - lam * (correction.real if correction.is_complex() else correction)
            gamma = torch.where(above, (sigma_next**2 - noise_level**2).clamp_min(0).sqrt(), torch.zeros_like(noise_level))
            eps = (state - x0) / sigma_t
            state = x0_hat + torch.where(above, gamma * (eta * fresh + keep_eps * eps), sigma_next * eta * fresh)

        check_finite(state, "ddnm", step, total, hint)
        if callback is not None:
            callback({"step": step, "total": total, "t": t,
                      "x": math.sqrt(alpha_bar(level_next)) * to_image(state), "x0": x0})
        step += 1

    return to_image(state)


INFO = register(SamplerInfo(
    name="ddnm",
    run=ddnm,
    params=DDNMParams,
    paper="Wang, Yu, Zhang. Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model. ICLR 2023",
))
