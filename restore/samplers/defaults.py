"""Default steps and hyperparameters per (sampler, task): the one table the CLI and the benchmarks use.

Tuned on the validation split (benchmarks/val_split.txt) of ../shared/datasets only; see
README "Sampler defaults" and benchmarks/RESULTS.md for how.
"""

from __future__ import annotations

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


# DPS (Chung et al. 2023): 1000 ancestral steps as in the paper; ζ from the official task configs
# (DPS2022/diffusion-posterior-sampling configs/*.yaml, "scale"). Tasks without an official config
# borrow the nearest one's value — to be tuned.
from restore.samplers.dps import DPSParams  # noqa: E402

TABLE["dps"] = {
    "inpaint": Defaults(1000, DPSParams(zeta=0.5)),  # inpainting_config.yaml (box and random masks)
    "deblur": Defaults(1000, DPSParams(zeta=0.3)),  # gaussian_deblur_config.yaml, motion_deblur_config.yaml
    "superres": Defaults(1000, DPSParams(zeta=0.3)),  # super_resolution_config.yaml
    "denoise": Defaults(1000, DPSParams(zeta=0.3)),  # no official config: the deblurring value
    "colorize": Defaults(1000, DPSParams(zeta=0.3)),  # no official config: the deblurring value
    "mri": Defaults(1000, DPSParams(zeta=0.5)),  # no official config: masked orthonormal Fourier ~ inpainting
    "ct": Defaults(1000, DPSParams(zeta=0.3)),  # no official config: placeholder
}

# RED-Diff (Mardani et al. 2024): 1000 Adam steps, λ = 0.25 (official _configs/algo/reddiff.yaml
# grad_term_weight, linear weighting); lr from NVlabs/RED-diff sample_test.sh per task, else the README's 0.5.
from restore.samplers.reddiff import REDDiffParams  # noqa: E402

TABLE["reddiff"] = {
    "inpaint": Defaults(1000, REDDiffParams(lam=0.25, lr=0.25)),  # sample_test.sh "inpaint + reddiff"
    "deblur": Defaults(1000, REDDiffParams(lam=0.25, lr=0.5)),  # sample_test.sh "deblur_gauss + reddiff"
    "superres": Defaults(1000, REDDiffParams(lam=0.25, lr=0.1)),  # sample_test.sh "sr4 + reddiff" (config lr)
    "denoise": Defaults(1000, REDDiffParams(lam=0.25, lr=0.5)),  # README example
    "colorize": Defaults(1000, REDDiffParams(lam=0.25, lr=0.5)),  # README example
    "mri": Defaults(1000, REDDiffParams(lam=0.25, lr=0.5)),  # README example
    "ct": Defaults(1000, REDDiffParams(lam=0.25, lr=0.5)),  # README example
}

# DiffPIR (Zhu et al. 2023): official yuanzhi-zhu/DiffPIR scripts (quad grid, σ_n floored at 0.001):
# main_ddpir_deblur.py λ = 7, ζ = 0.3, 100 steps; main_ddpir_inpainting.py / configs/inpaint.yaml
# λ = 1, ζ = 1, 20 steps; main_ddpir_sisr.py sweeps λ in 2..12 with ζ = 0.25 (λ = 7 taken). Other
# tasks borrow the nearest one's values — to be tuned.
from restore.samplers.diffpir import DiffPIRParams  # noqa: E402

TABLE["diffpir"] = {
    "inpaint": Defaults(20, DiffPIRParams(lam=1.0, zeta=1.0)),  # configs/inpaint.yaml
    "deblur": Defaults(100, DiffPIRParams(lam=7.0, zeta=0.3)),  # main_ddpir_deblur.py
    "superres": Defaults(100, DiffPIRParams(lam=7.0, zeta=0.25)),  # main_ddpir_sisr.py (λ swept 2..12)
    "denoise": Defaults(100, DiffPIRParams(lam=7.0, zeta=0.3)),  # no official config: the deblurring values
    "colorize": Defaults(100, DiffPIRParams(lam=7.0, zeta=0.3)),  # no official config: the deblurring values
    "mri": Defaults(100, DiffPIRParams(lam=1.0, zeta=1.0)),  # no official config: masked Fourier ~ inpainting
    "ct": Defaults(100, DiffPIRParams(lam=7.0, zeta=0.3)),  # no official config: placeholder
}

# ΠGDM (Song et al. 2023): 100 DDIM steps with η = 1 and guidance weight 1, as in every ΠGDM run of
# NVlabs/RED-diff sample_test.sh (sr4, deblur_gauss, in2_20ff); no per-task tuning there.
from restore.samplers.pigdm import PiGDMParams  # noqa: E402

TABLE["pigdm"] = {task: Defaults(100, PiGDMParams(eta=1.0, weight=1.0))
                  for task in ("inpaint", "deblur", "superres", "denoise", "colorize", "mri", "ct")}

# DDRM (Kawar et al. 2022): 20 steps, η = 0.85, η_b = 1 — the paper's setting for every task
# (Section 5; bahjat-kawar/ddrm README: --timesteps 20 --eta 0.85 --etaB 1). DDRM needs an SVD: on the
# MRI and CT operators (no SVD) check_operator refuses it; their rows only keep the table complete.
from restore.samplers.ddrm import DDRMParams  # noqa: E402

TABLE["ddrm"] = {task: Defaults(20, DDRMParams(eta=0.85, eta_b=1.0))
                 for task in ("inpaint", "deblur", "superres", "denoise", "colorize", "mri", "ct")}

# DDNM / DDNM+ (Wang et al. 2023): 100 DDIM steps with η = 0.85, no time travel — the official
# wyhuai/DDNM defaults (configs/*.yml time_travel: T_sampling 100, travel_length 1, travel_repeat 1;
# README --eta 0.85) for every task.
from restore.samplers.ddnm import DDNMParams  # noqa: E402

TABLE["ddnm"] = {task: Defaults(100, DDNMParams(eta=0.85))
                 for task in ("inpaint", "deblur", "superres", "denoise", "colorize", "mri", "ct")}
