"""Default steps and hyperparameters per (sampler, task): the one table the CLI and the benchmarks use.

Tuned on the validation split (benchmarks/val_split.txt) of ../shared/datasets only; see
README "Sampler defaults" and benchmarks/RESULTS.md for how.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from restore.errors import RestoreError


@dataclass(frozen=True)
class Defaults:
    steps: int
    params: Any


# sampler -> task -> Defaults; filled in per sampler below
TABLE: dict[str, dict[str, Defaults]] = {}


def defaults_for(sampler: str, task: str) -> Defaults:
    try:
        return TABLE[sampler][task]
    except KeyError:
        raise RestoreError(f"no defaults for sampler '{sampler}' on task '{task}'") from None


def parse_value(text: str, like: Any) -> Any:
    """``text`` as a value of the type of ``like`` (a field's default); a number where the default is None;
    a tuple from comma-separated values (``0.9,0.99``, brackets allowed)."""
    if isinstance(like, tuple):
        parts = [part for part in text.strip("()[] ").split(",") if part.strip()]
        if len(parts) != len(like):
            raise ValueError(f"'{text}' does not have {len(like)} values")
        return tuple(parse_value(part.strip(), item) for part, item in zip(parts, like))
    if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"'{text}' is not true or false")
        return text.lower() in ("true", "1")
    if isinstance(like, int):
        return int(text)
    if isinstance(like, float) or like is None:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    return type(like)(text)


def with_options(params: Any, options: tuple[str, ...] | list[str], sampler: str) -> Any:
    """The hyperparameters ``params`` with ``NAME=VALUE`` settings applied (``--set lam=0.4``), checked by name."""
    values = {}
    for option in options:
        name, sep, text = option.partition("=")
        name = name.strip()
        if not sep or not name:
            raise RestoreError(f"--set takes NAME=VALUE, got '{option}'")
        fields = [f.name for f in dataclasses.fields(params)]
        if name not in fields:
            known = ", ".join(f"{field}={getattr(params, field)}" for field in fields)
            raise RestoreError(f"{sampler} has no hyperparameter '{name}'; its hyperparameters: {known}")
        try:
            values[name] = parse_value(text.strip(), getattr(params, name))
        except ValueError:
            raise RestoreError(f"--set {name}: '{text}' is not a valid value (the default is {getattr(params, name)})") from None
    return dataclasses.replace(params, **values)


# DPS (Chung et al. 2023): the paper runs 1000 ancestral steps with ζ from the official task configs
# (DPS2022/diffusion-posterior-sampling configs/*.yaml "scale": 0.5 inpainting, 0.3 deblurring and SR).
# Here 100 steps (the CPU speed target: about 3 network evaluations' time per step), where the
# per-step ζ must be far larger: on tuning image 40, sr4, ζ = 1 / 3 / 10 / 20 / 40 / 80 gave
# 17.41 / 18.72 / 20.18 / 21.37 / 21.78 / 21.70 dB (bicubic 21.65); gblur, ζ = 5 / 10 / 20 / 40 gave
# 19.88 / 20.43 / 20.71 / 11.32 dB. SR takes 40, deblurring 20; inpainting and MRI scale the SR value
# by the official configs' ratio (not tuned separately). With --steps 1000, ζ stays
# the 100-step value, i.e. far too strong: pass DPSParams(zeta=...) from Python for the paper's runs.
from restore.samplers.dps import DPSParams  # noqa: E402

DPS_ZETA_SR, DPS_ZETA_DEBLUR = 40.0, 20.0
TABLE["dps"] = {
    "inpaint": Defaults(100, DPSParams(zeta=DPS_ZETA_SR * 0.5 / 0.3)),  # official inpainting 0.5 vs SR 0.3
    "deblur": Defaults(100, DPSParams(zeta=DPS_ZETA_DEBLUR)),
    "superres": Defaults(100, DPSParams(zeta=DPS_ZETA_SR)),
    "denoise": Defaults(100, DPSParams(zeta=DPS_ZETA_DEBLUR)),  # no official config: the deblurring value
    "colorize": Defaults(100, DPSParams(zeta=DPS_ZETA_DEBLUR)),  # no official config: the deblurring value
    # no official configs; tuning image 40: mri4x ζ = 5 / 20 → 20.82 / 9.06 dB; ct60 (sinogram values are
    # ~100× the image's, so is the gradient) ζ = 0.05 / 0.2 / 1 → 18.70 / 11.23 / 7.67 dB (FBP 18.04)
    "mri": Defaults(100, DPSParams(zeta=5.0)),
    "ct": Defaults(100, DPSParams(zeta=0.05)),
}

# RED-Diff (Mardani et al. 2024): the paper's 1000 Adam steps cut to 100 (speed target; on tuning image 40, sr4,
# 100 steps: lr 0.1 / 0.25 / 0.5 → 21.81 / 21.74 / 21.64 dB, bicubic 21.65), λ = 0.25 (official _configs/algo/reddiff.yaml
# grad_term_weight, linear weighting); lr from NVlabs/RED-diff sample_test.sh per task, else the README's 0.5.
from restore.samplers.reddiff import REDDiffParams  # noqa: E402

TABLE["reddiff"] = {
    "inpaint": Defaults(100, REDDiffParams(lam=0.25, lr=0.25)),  # sample_test.sh "inpaint + reddiff"
    "deblur": Defaults(100, REDDiffParams(lam=0.25, lr=0.5)),  # sample_test.sh "deblur_gauss + reddiff"
    "superres": Defaults(100, REDDiffParams(lam=0.25, lr=0.1)),  # sample_test.sh "sr4 + reddiff" (config lr)
    # denoising: the data term has no 1/σ_y², so λ is the whole trade-off between y and the prior; λ 0.25 / 1 / 4 / 16
    # → 20.52 / 23.10 / 24.31 / 17.13 dB on tuning images 40–42 (TV 25.62)
    "denoise": Defaults(100, REDDiffParams(lam=4.0, lr=0.5)),
    "colorize": Defaults(100, REDDiffParams(lam=0.25, lr=0.5)),  # README example
    "mri": Defaults(100, REDDiffParams(lam=0.25, lr=0.5)),  # README example
    "ct": Defaults(100, REDDiffParams(lam=0.25, lr=0.5)),  # README example
}

# DiffPIR (Zhu et al. 2023): official yuanzhi-zhu/DiffPIR scripts (quad grid, σ_n floored at 0.001):
# main_ddpir_deblur.py λ = 7, ζ = 0.3, 100 steps; configs/inpaint.yaml λ = 1, ζ = 1, 20 steps;
# main_ddpir_sisr.py λ in 2..12, ζ = 0.25. Here 20 steps everywhere (quality per NFE; the speed
# targets), λ and ζ swept at 20 steps on tuning images 40–41 of the validation split
# (benchmarks/tune_samplers.py; RESULTS.md "Tuning"): deblurring prefers ζ = 0.6 (gblur 22.87 /
# mblur 24.23 dB against 22.42 / 22.86 at ζ = 0.3), SR λ = 1 (23.08 vs 22.96 at λ = 7), inpainting
# and MRI ζ = 1 (random70 23.63 vs 22.44 at ζ = 0.6; mri4x 23.81 vs 23.09 at ζ = 0.3; λ hardly matters).
from restore.samplers.diffpir import DiffPIRParams  # noqa: E402

TABLE["diffpir"] = {
    "inpaint": Defaults(20, DiffPIRParams(lam=1.0, zeta=1.0)),
    "deblur": Defaults(20, DiffPIRParams(lam=7.0, zeta=0.6)),
    "superres": Defaults(20, DiffPIRParams(lam=1.0, zeta=0.25)),
    "denoise": Defaults(20, DiffPIRParams(lam=7.0, zeta=0.3)),  # not tuned: DDRM is the denoising default
    "colorize": Defaults(20, DiffPIRParams(lam=7.0, zeta=0.6)),  # not tuned: the deblurring values
    "mri": Defaults(20, DiffPIRParams(lam=1.0, zeta=1.0)),
    # CT: ζ = 1 and a 10-iteration CG data step: 22.47 dB on image 40 against 21.61 at ζ = 0.3, and
    # 34 s instead of 359 s per image with the 100-iteration default (which also scored lower, 20.42 at
    # λ = 1, ζ = 0.3: a few CG steps from x̂0 regularise the 60-angle data step)
    "ct": Defaults(20, DiffPIRParams(lam=7.0, zeta=1.0, cg_max_iter=10)),
}

# ΠGDM (Song et al. 2023): DDIM steps with η = 1 and guidance weight 1, as in every ΠGDM run of
# NVlabs/RED-diff sample_test.sh (sr4, deblur_gauss, in2_20ff; 100 steps). Here 20 steps; on tuning
# images 40–41 η = 1 beat 0.5 everywhere, and SR prefers weight 2 (22.81 dB against 22.62 at 1;
# box: 20.60 at 1 against 19.19 at 0.5).
from restore.samplers.pigdm import PiGDMParams  # noqa: E402

TABLE["pigdm"] = {task: Defaults(20, PiGDMParams(eta=1.0, weight=1.0))
                  for task in ("inpaint", "deblur", "superres", "denoise", "colorize", "mri", "ct")}
TABLE["pigdm"]["superres"] = Defaults(20, PiGDMParams(eta=1.0, weight=2.0))
# CT: a 5-iteration CG Gram solve (ct60, image 40: 21.62 dB at 5, 21.52 at 10, 21.55 at 20 iterations;
# the 100-iteration default took 339 s per image on images 0–1)
TABLE["pigdm"]["ct"] = Defaults(20, PiGDMParams(eta=1.0, weight=1.0, cg_max_iter=5))

# DDRM (Kawar et al. 2022): 20 steps, η = 0.85, η_b = 1 — the paper's setting for every task
# (Section 5; bahjat-kawar/ddrm README: --timesteps 20 --eta 0.85 --etaB 1). η re-tuned on images
# 40–41 of the validation split: deblurring η = 0.5 (gblur 22.88 / mblur 26.03 dB against 23.01 /
# 25.55 at 0.85), denoising η = 0 (28.43 against 26.31 at 0.85); SR keeps 0.85 (22.85; 22.81 at 0.5,
# 21.63 at 0). DDRM needs an SVD: on MRI and CT (none) check_operator refuses it; those rows only
# keep the table complete.
from restore.samplers.ddrm import DDRMParams  # noqa: E402

TABLE["ddrm"] = {task: Defaults(20, DDRMParams(eta=0.85, eta_b=1.0))
                 for task in ("inpaint", "deblur", "superres", "denoise", "colorize", "mri", "ct")}
TABLE["ddrm"]["deblur"] = Defaults(20, DDRMParams(eta=0.5, eta_b=1.0))
TABLE["ddrm"]["denoise"] = Defaults(20, DDRMParams(eta=0.0, eta_b=1.0))

# DDNM / DDNM+ (Wang et al. 2023): 100 DDIM steps with η = 0.85, no time travel — the official
# wyhuai/DDNM defaults (configs/*.yml time_travel: T_sampling 100, travel_length 1, travel_repeat 1;
# README --eta 0.85) for every task.
from restore.samplers.ddnm import DDNMParams  # noqa: E402

TABLE["ddnm"] = {task: Defaults(100, DDNMParams(eta=0.85))
                 for task in ("inpaint", "deblur", "superres", "denoise", "colorize", "mri", "ct")}
# CT has no SVD: each step's A⁺ is conjugate gradients, 500 iterations by the operator's default.
# 5 / 10 / 20 iterations gave 18.20 / 18.09 / 18.10 dB at 80 / 88 / 112 s per image (20 steps,
# tuning image 40; FBP 18.04, DiffPIR 22.47): the fewest is best — and DDNM is not the sampler for CT.
TABLE["ddnm"]["ct"] = Defaults(100, DDNMParams(eta=0.85, cg_max_iter=5))

# DPIR (Zhang et al. 2021): HQS with the diffusion x̂0 as the denoiser, periodical self-ensemble on. The paper's
# λ = 0.23 and σ_1 = 49/255 (0.38 here) were the start; swept on tuning images 40–47 (benchmarks/tune_samplers.py,
# RESULTS.md "Session 13: DPIR"): random70 prefers 12 steps from σ 1.5 with λ 0.2 (25.52 dB; 16 steps 25.36,
# 24 steps 25.20; without the self-ensemble 25.33; linear 23.78 — all with a final data step; returning the
# last denoiser output as the paper does: 25.43); deblurring and SR prefer fresh noise before each prior step
# (renoise 0.6, from σ 1.0, 16 steps: gblur 22.85, sr4 22.83 dB; deterministic gblur 21.43 on images 44–47
# against 22.48 with renoise 0.5), λ 0.12–0.3 within 0.1 dB, 24 steps no better. Denoising (images 40–43):
# λ 0.2 27.05 dB at 8 steps, 26.80 at 4; λ 1 21.91, λ 4 20.38 (a strong prior weight keeps the iterate near
# its start z = 0); TV 25.14 — DDRM stays the denoising default. Large holes want fresh noise (box, images 40–43:
# renoise 0 / 0.3 / 0.6 / 1 → 18.33 / 19.79 / 20.11 / 20.13 dB, biharmonic 18.82) where scattered pixels do not
# (random70, 40–47: renoise 0 / 0.3 → 25.43 / 25.26): the inpainting default serves scattered masks, and large
# holes are DiffPIR's (the CLI's inpainting default).
from restore.samplers.dpir import DPIRParams  # noqa: E402

DPIR_HOLES = DPIRParams(lam=0.2, sigma_max=1.5)
DPIR_RENOISED = DPIRParams(lam=0.2, sigma_max=1.0, renoise=0.6)
TABLE["dpir"] = {
    # scattered pixels (random70, images 40–47, session 14): λ 0.2 / 0.05 / 0.02 at 12 steps 25.43 / 25.53 / 25.55 dB,
    # at 16 steps – / 25.60 / 25.62, at 24 steps – / 25.51 / 25.53 (σ_1 2.5 instead of 1.5: −0.06 at 16 steps) —
    # the data step all but replaces the kept pixels (ρ = λσ_n²/σ_k² ≪ 1)
    "inpaint": Defaults(16, DPIRParams(lam=0.02, sigma_max=1.5)),
    # deblurring ends its ladder at the schedule's floor σ 0.01 instead of σ_n (session 15, images 40–47, 16 steps):
    # sigma_min 0.01 / 0.02 / 0.05 (σ_n) / 0.08 → gblur 22.88 / 22.88 / 22.85 / 22.78 dB, mblur 26.14 / 25.95 / 25.69 / –
    # (no change for sr4: 22.84 / 22.85 / 22.85). Motion blur wants a larger λ (σ_min 0.01: λ 0.2 / 0.3 / 0.4 / 0.8 →
    # 26.14 / 27.37 / 27.60 / 26.80; DDRM 26.96), Gaussian blur does not (22.88 / 22.80 / 22.71): λ stays at 0.2
    "deblur": Defaults(16, dataclasses.replace(DPIR_RENOISED, sigma_min=0.01)),
    "superres": Defaults(16, DPIR_RENOISED),
    "denoise": Defaults(8, DPIRParams(lam=0.2, sigma_max=0.4)),
    # colorization (gray → RGB, σ_y 0.025, images 40–45): renoise 0 / 0.6 / 1 → 17.46 / 18.16 / 17.94 dB
    "colorize": Defaults(12, dataclasses.replace(DPIR_HOLES, renoise=0.6)),
    "mri": Defaults(12, DPIR_HOLES),
    # CT: σ_n is in sinogram units (~100× the image's), so the ladder's end is set in image units: sigma_min
    # 0.02 / 0.05 / 0.1 gave 24.95 / 24.77 / 24.04 dB on images 40–41 (FBP 19.42); with σ_n, 9.6 dB
    "ct": Defaults(12, dataclasses.replace(DPIR_HOLES, sigma_min=0.02, cg_max_iter=10)),
}
