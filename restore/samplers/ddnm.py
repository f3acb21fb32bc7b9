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

The time-travel trick (Section 3.3) is not implemented: NFE = steps.
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


def ddnm(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
         callback: Callback | None = None, params: DDNMParams | None = None) -> Tensor:
    """DDNM / DDNM+, Wang et al. 2023 (Algorithm 1; Algorithm 2 and Appendix I for noisy y; official ``ddnm_plus_diffusion``).

    Starts from pure noise; each of ``steps`` respaced timesteps evaluates the network once, applies
    the (noise-aware) range-null-space correction and takes a DDIM step with η.
    """
    p = params or DDNMParams()
    if not 0.0 <= p.eta <= 1.0:
        raise RestoreError(f"ddnm needs 0 <= eta <= 1, got eta={p.eta}")
    if p.effective_singular_value is not None and not p.effective_singular_value > 0:
        raise RestoreError(f"ddnm: effective_singular_value must be > 0, got {p.effective_singular_value}")
    if not 1 <= steps <= denoiser.num_timesteps:
        raise RestoreError(f"ddnm: steps must be in 1..{denoiser.num_timesteps}, got {steps}")

    sigma_y = gaussian_sigma(noise)
    shape = image_shape(operator, y)
    batch = shape[0]
    dtype = y.real.dtype
    eta, keep_eps = p.eta, math.sqrt(1 - p.eta**2)

    timesteps = respaced_timesteps(denoiser.num_timesteps, steps).tolist()
    alpha_bars = denoiser.alphas_cumprod.double().cpu()
    ab = [float(alpha_bars[t]) for t in timesteps] + [1.0]  # the last step goes to ᾱ = 1, σ = 0
    sig = [math.sqrt((1 - a) / a) for a in ab]

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
        noise_level = torch.zeros(batch, 1, 1, 1, dtype=dtype, device=y.device)
        if sigma_y > 0:
            s_eff = (torch.full((batch,), float(p.effective_singular_value), dtype=dtype, device=y.device)
                     if p.effective_singular_value is not None else effective_singular_value(operator, y))
            per_real_part = sigma_y / math.sqrt(2) if y.is_complex() else sigma_y
            noise_level = (per_real_part / s_eff).reshape(batch, 1, 1, 1)

    # the state is z = x_t / sqrt(ᾱ_t): its spectral coefficients z̄ = Vᵀz for SVD operators, else the image
    state_shape = (batch, n) if spectral else shape
    to_image = (lambda v: operator.V(v).reshape(shape)) if spectral else (lambda v: v)
    state = randn(state_shape, generator, like=y.real) / math.sqrt(ab[0])  # x_T ~ N(0, I)
    hint = "the denoiser returned NaN/Inf, or y / the operator hold non-finite values"
    for i, t in enumerate(timesteps):
        sigma_t, sigma_next = sig[i], sig[i + 1]
        x0 = denoiser(math.sqrt(ab[i]) * to_image(state), t)
        fresh = randn(state_shape, generator, like=y.real)

        if spectral:
            x0_bar = operator.Vt(x0)
            ddim = sigma_next * (eta * fresh + keep_eps * (state - x0_bar) / sigma_t)  # η n + sqrt(1-η²) ε̂
            x0_m = x0_bar[:, :m]
            above = sigma_next >= noise_level  # σ' ≥ σ_y / s_i (always true when σ_y = 0)
            lam = torch.where(above, torch.ones_like(s_safe), s_safe * sigma_next * keep_eps / (sigma_y or 1.0))
            corrected = torch.where(keep, x0_m - lam * (x0_m - y_bar), x0_m)  # x̄0 - Σ_t Vᵀ A⁺(A x̂0 - y)
            plus = torch.where(above, (sigma_next**2 - noise_level**2).clamp_min(0).sqrt(), sigma_next * eta) * fresh[:, :m]
            state = torch.cat([corrected + torch.where(noisy, plus, ddim[:, :m]), x0_bar[:, m:] + ddim[:, m:]], dim=1)
        else:
            above = sigma_next >= noise_level  # (B, 1, 1, 1)
            lam = torch.where(above, torch.ones_like(noise_level), sigma_next * keep_eps / noise_level.clamp_min(1e-30))
            x0_hat = x0 - lam * operator.A_pinv(operator.A(x0) - y)
            gamma = torch.where(above, (sigma_next**2 - noise_level**2).clamp_min(0).sqrt(), torch.zeros_like(noise_level))
            eps = (to_image(state) - x0) / sigma_t
            state = x0_hat + torch.where(above, gamma * (eta * fresh + keep_eps * eps), sigma_next * eta * fresh)

        check_finite(state, "ddnm", i, steps, hint)
        if callback is not None:
            callback({"step": i, "total": steps, "t": t, "x": math.sqrt(ab[i + 1]) * to_image(state), "x0": x0})

    return to_image(state)


INFO = register(SamplerInfo(
    name="ddnm",
    run=ddnm,
    params=DDNMParams,
    paper="Wang, Yu, Zhang. Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model. ICLR 2023",
))
