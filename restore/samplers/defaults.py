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
