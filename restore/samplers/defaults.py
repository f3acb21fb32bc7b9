"""The tasks, each task's sampler, and default steps and hyperparameters per (sampler, task): the one
table the command line, the benchmarks and the Python API use.

Every entry has one line of provenance: the official configuration it comes from, and where it
differs, the sweep that changed it. The sweeps themselves (values tried, scores, images) are in
``benchmarks/RESULTS.md``, section "Provenance of the sampler defaults". Tuning used validation
images 40–47 of ``benchmarks/val_split.txt`` only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from restore.errors import RestoreError
from restore.samplers.daps import DAPSParams
from restore.samplers.ddnm import DDNMParams
from restore.samplers.ddrm import DDRMParams
from restore.samplers.deblock import DeblockParams
from restore.samplers.diffpir import DiffPIRParams
from restore.samplers.dpir import DPIRParams
from restore.samplers.dps import DPSParams
from restore.samplers.pigdm import PiGDMParams
from restore.samplers.pyramid import PyramidParams
from restore.samplers.reddiff import REDDiffParams
from restore.samplers.registry import check_num_samples, check_operator, get_sampler

#: the tasks of the command line; hyperparameters are tuned per task
TASKS = ("inpaint", "deblur", "superres", "denoise", "colorize", "mri", "ct", "dejpeg", "phase")

#: the sampler that does each task best per network evaluation (RESULTS.md, "Samplers on the task suite")
TASK_SAMPLER = {
    # by the mask's kind (operators.inpaint: Inpainting.kind); RESULTS.md "Session 18: mask-aware inpainting defaults"
    "inpaint": "diffpir",  # scratches, small boxes: hole PSNR 20.35 dB against DPIR's 14.62 (images 40–43)
    "inpaint/scattered": "dpir",  # random70: 23.92 dB in the holes against DiffPIR's 21.53 (images 40–43)
    # deep holes (40 validation images): texture 0.86 / 0.73 instead of DiffPIR's smudge (0.27 / 0.17) on freeform /
    # the 128-pixel box, at 0.69 / 0.65 dB less hole PSNR and 0.02 less SSIM (RESULTS.md "Session 21")
    "inpaint/large": "pyramid",
    "inpaint/huge": "pyramid",
    # both kinds of blur and both boundaries, each with its λ (deblur/motion below): RESULTS.md "Deblurring defaults"
    "deblur": "dpir",
    "superres": "dpir",  # sr4: +0.86 dB over bicubic against DDRM's +0.20 (validation images 0–7)
    "denoise": "ddrm",
    "colorize": "diffpir",  # 18.33 dB against DDRM's 17.27 (tuning images 40–45), before the cast was removed
    "mri": "dpir",  # mri4x: +2.15 dB over zero-filled against DiffPIR's +1.37
    "ct": "dpir",  # ct60: +7.44 dB over FBP against DiffPIR's +6.67, at 12 NFE instead of 20
    # the prior's network fine-tuned on JPEG files: +1.61 / +1.54 dB over the decoded file at quality 10 / 30 against
    # DPIR's +0.46 / +0.52 (40 validation images), one pass instead of 12 (RESULTS.md "Session 20: the JPEG deblocker")
    "dejpeg": "deblock",
    # validation images 0–7: 15.17 dB against RED-Diff's 15.01 and HIO's 14.81, and the scene's shapes where RED-Diff
    # gives blobs (RESULTS.md "Phase retrieval"; on tuning images 40–43 RED-Diff led, 15.34 to 14.05: runs vary by dB)
    "phase": "daps",
}
#: when posterior samples are asked for (--num-samples > 1) and the task's sampler gives one estimate
POSTERIOR_SAMPLER = {"inpaint": "diffpir", "deblur": "ddrm", "superres": "ddrm", "mri": "diffpir", "ct": "diffpir",
                     "dejpeg": "reddiff"}  # dejpeg: the one measured (1–1.7 dB under the decoded file: RESULTS "JPEG")
#: when the task's sampler needs an SVD the operator lacks (e.g. blur with reflecting boundaries)
NO_SVD_SAMPLER = "diffpir"
#: tasks whose measurement holds no colour, where the result's colour cast is removed unless asked otherwise: the
#: prior's global tint is a guess (RESULTS.md "Session 21: colourisation without a cast")
CAST_REMOVED = frozenset({"colorize"})


def cast_removal(task: str, requested: bool | None) -> bool:
    """Whether the task's results have their colour cast removed: ``requested``, or by default for CAST_REMOVED."""
    if requested and task not in CAST_REMOVED:
        raise RestoreError(f"removing the colour cast is for {', '.join(sorted(CAST_REMOVED))} only, where the "
                           f"measurement holds no colour; {task}'s measurement holds its colours")
    return task in CAST_REMOVED if requested is None else requested


@dataclass(frozen=True)
class Defaults:
    steps: int
    params: Any


def problem_kind(task: str, operator=None) -> str | None:
    """A finer key of the tables where one task covers problems that want other settings: the kind of a blur
    (``gaussian`` or ``motion``, from its kernel's shape: operators.blur.kernel_kind), of a mask (``scattered``,
    ``small``, ``large`` or ``huge``, from the depth of its holes: operators.inpaint.Inpainting.kind). None: the
    task's own."""
    if task in ("deblur", "inpaint") and operator is not None:
        return getattr(operator, "kind", None)
    return None


def _entry(table: dict[str, Any], task: str, kind: str | None) -> Any:
    """``table[task/kind]`` where the table has that variant, else ``table[task]``."""
    return table[f"{task}/{kind}"] if kind is not None and f"{task}/{kind}" in table else table[task]


def defaults_for(sampler: str, task: str, kind: str | None = None) -> Defaults:
    """The (sampler, task) entry, or its ``task/kind`` variant where the table has one."""
    try:
        return _entry(TABLE.get(sampler, {}), task, kind)
    except KeyError:
        raise RestoreError(f"no defaults for sampler '{sampler}' on task '{task}'") from None


def choose_sampler(task: str, operator=None, requested: str | None = None, num_samples: int = 1,
                   kind: str | None = None) -> str:
    """The requested sampler, checked against the operator and the samples asked for, or the task's choice
    (for the problem's kind: ``kind``, else the operator's, :func:`problem_kind`).

    ``operator`` None: checked against what does not depend on it (the operator is not known yet).
    """
    if task not in TASKS:
        raise RestoreError(f"unknown task '{task}'; the tasks are: {', '.join(TASKS)}")
    if requested is not None:
        name = requested
    else:
        name = _entry(TASK_SAMPLER, task, kind or problem_kind(task, operator))
        if num_samples > 1 and not get_sampler(name).samples_posterior:
            name = POSTERIOR_SAMPLER[task]
        if operator is not None and get_sampler(name).needs_svd and not operator.has_svd:
            name = NO_SVD_SAMPLER
    info = get_sampler(name)
    check_num_samples(info, num_samples)
    if operator is not None:
        check_operator(info, operator)
    return name


def parse_value(text: str, like: Any) -> Any:
    """``text`` as a value of the type of ``like`` (a field's default); a number where the default is None;
    a tuple from comma-separated values (``0.9,0.99``, brackets allowed)."""
    if isinstance(like, tuple):  # any length: the dataclass checks how many it takes
        parts = [part for part in text.strip("()[] ").split(",") if part.strip()]
        if not parts or not like:
            raise ValueError(f"'{text}' is not a list of values")
        return tuple(parse_value(part.strip(), like[min(i, len(like) - 1)]) for i, part in enumerate(parts))
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
    """The hyperparameters ``params`` with ``NAME=VALUE`` settings applied (``--set lam=0.4``), checked by
    name, type and range (each dataclass checks its own values)."""
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
    try:
        return dataclasses.replace(params, **values)
    except RestoreError as err:
        raise RestoreError(f"--set {', '.join(options)}: {err}") from None


def every_task(steps: int, params: Any) -> dict[str, Defaults]:
    return {task: Defaults(steps, params) for task in TASKS}


# Step counts are cut from the papers' (DPS, RED-Diff 1000; DiffPIR 100 for deblurring) to the CPU speed
# targets. Provenance per entry; the sweeps: RESULTS.md "Provenance of the sampler defaults".
DPS_ZETA_SR, DPS_ZETA_DEBLUR = 40.0, 20.0  # per-step ζ for 100 steps (official 1000-step ζ: 0.3)
#: official pixel-space DAPS (configs/task/*.yaml "pixel": Langevin 100 steps, lr 1e-4, lr_min_ratio 0.01, τ 0.01;
#: configs/sampler/edm_daps.yaml: σ 100 → 0.1, poly-7), with 50 annealing × 2 ODE steps = 100 NFE instead of 200 × 5
DAPS_OFFICIAL = DAPSParams(ode_steps=2, langevin_steps=100, lr=1e-4, lr_min_ratio=0.01, sigma_y=0.01)
DPIR_HOLES = DPIRParams(lam=0.2, sigma_max=1.5)
DPIR_RENOISED = DPIRParams(lam=0.2, sigma_max=1.0, renoise=0.6)
TABLE: dict[str, dict[str, Defaults]] = {
    "dps": {
        "inpaint": Defaults(100, DPSParams(zeta=DPS_ZETA_SR * 0.5 / 0.3)),  # official configs' inpainting/SR ratio
        "deblur": Defaults(100, DPSParams(zeta=DPS_ZETA_DEBLUR)),  # sweep: gblur, tuning image 40
        "superres": Defaults(100, DPSParams(zeta=DPS_ZETA_SR)),  # sweep: sr4, tuning image 40
        "denoise": Defaults(100, DPSParams(zeta=DPS_ZETA_DEBLUR)),  # no official config: the deblurring value
        "colorize": Defaults(100, DPSParams(zeta=DPS_ZETA_DEBLUR)),  # no official config: the deblurring value
        "mri": Defaults(100, DPSParams(zeta=5.0)),  # no official config; sweep: mri4x, tuning image 40
        "ct": Defaults(100, DPSParams(zeta=0.05)),  # no official config; sweep: ct60, tuning image 40
        "dejpeg": Defaults(100, DPSParams(zeta=1.0)),  # no official config; sweep: jpeg10, tuning images
        "phase": Defaults(100, DPSParams(zeta=30.0)),  # official ζ 1.0 (133 per step here); sweep 10–260: ζ 30, images 40–41
    },
    "reddiff": {  # official _configs/algo/reddiff.yaml: λ 0.25, linear weighting; lr per sample_test.sh task
        "inpaint": Defaults(100, REDDiffParams(lam=0.25, lr=0.25)),  # sample_test.sh "inpaint + reddiff"
        "deblur": Defaults(100, REDDiffParams(lam=0.25, lr=0.5)),  # sample_test.sh "deblur_gauss + reddiff"
        "superres": Defaults(100, REDDiffParams(lam=0.25, lr=0.1)),  # sample_test.sh "sr4 + reddiff"; sweep at 100 steps
        "denoise": Defaults(100, REDDiffParams(lam=4.0, lr=0.5)),  # sweep: λ, tuning images 40–42
        "colorize": Defaults(100, REDDiffParams(lam=0.25, lr=0.5)),  # README example
        "mri": Defaults(100, REDDiffParams(lam=0.25, lr=0.5)),  # README example
        "ct": Defaults(100, REDDiffParams(lam=0.25, lr=0.5)),  # README example
        "dejpeg": Defaults(100, REDDiffParams(lam=0.25, lr=0.05)),  # no official config; sweep: jpeg10, tuning images
        "phase": Defaults(100, REDDiffParams(lam=0.25, lr=0.05)),  # no official config; sweep: lr 0.03–0.5, images 40–43
    },
    "diffpir": {  # official yuanzhi-zhu/DiffPIR scripts (quad grid); 20 steps everywhere
        "inpaint": Defaults(20, DiffPIRParams(lam=1.0, zeta=1.0)),  # official configs/inpaint.yaml
        "deblur": Defaults(20, DiffPIRParams(lam=7.0, zeta=0.6)),  # official λ 7; sweep: ζ, tuning images 40–41
        "superres": Defaults(20, DiffPIRParams(lam=1.0, zeta=0.25)),  # official ζ 0.25; sweep: λ, images 40–41
        "denoise": Defaults(20, DiffPIRParams(lam=7.0, zeta=0.3)),  # official deblurring values, not tuned
        # ζ 0.3 with the cast removed (CAST_REMOVED): the lowest chroma error with colourfulness ≥ 0.7, tuning images
        # 40–47; sweep: ζ 0.6 / 0.4 / 0.3 / 0.2 / 0 (RESULTS.md "Session 21: colourisation without a cast")
        "colorize": Defaults(20, DiffPIRParams(lam=7.0, zeta=0.3)),
        "mri": Defaults(20, DiffPIRParams(lam=1.0, zeta=1.0)),  # sweep: ζ, tuning images 40–41
        "ct": Defaults(20, DiffPIRParams(lam=7.0, zeta=1.0, cg_max_iter=10)),  # sweep: ζ and CG, tuning image 40
        "dejpeg": Defaults(20, DiffPIRParams()),  # (a linear-only sampler: refused for JPEG; keeps the table whole)
        "phase": Defaults(20, DiffPIRParams()),  # (refused for phase retrieval, a nonlinear measurement)
    },
    "pigdm": {  # NVlabs/RED-diff sample_test.sh ΠGDM runs: η 1, weight 1; 20 steps
        **every_task(20, PiGDMParams(eta=1.0, weight=1.0)),  # sweep: η, tuning images 40–41
        "superres": Defaults(20, PiGDMParams(eta=1.0, weight=2.0)),  # sweep: weight, tuning images 40–41
        "ct": Defaults(20, PiGDMParams(eta=1.0, weight=1.0, cg_max_iter=5)),  # sweep: CG, tuning image 40
    },
    "ddrm": {  # the paper's setting for every task (bahjat-kawar/ddrm README: 20 steps, η 0.85, η_b 1)
        **every_task(20, DDRMParams(eta=0.85, eta_b=1.0)),  # (MRI, CT: no SVD, refused; rows keep the table whole)
        "deblur": Defaults(20, DDRMParams(eta=0.5, eta_b=1.0)),  # sweep: η, tuning images 40–41
        "denoise": Defaults(20, DDRMParams(eta=0.0, eta_b=1.0)),  # sweep: η, tuning images 40–41
    },
    "ddnm": {  # official wyhuai/DDNM defaults: 100 steps, η 0.85, no time travel
        **every_task(100, DDNMParams(eta=0.85)),
        "ct": Defaults(100, DDNMParams(eta=0.85, cg_max_iter=5)),  # sweep: CG iterations, tuning image 40
    },
    "pyramid": {  # this project's coarse-to-fine sampler (no official configuration); sweeps: RESULTS.md "Large holes"
        **every_task(20, PyramidParams()),
        # ζ 1 at the coarse levels (their mean: a coherent layout), less at the fine ones (texture); sweep: ζ per
        # level × restart σ × levels, freeform / box, tuning images 40–43 (RESULTS.md "Session 18"). 80 steps at the
        # full size, 20 at each coarser one: more texture and SSIM than 20 everywhere (RESULTS.md "Session 21")
        "inpaint": Defaults(80, PyramidParams(zeta=(1.0, 0.7, 0.4), restart_sigma=0.8, coarse_steps=0.25)),
        "inpaint/huge": Defaults(80, PyramidParams(factors=(8, 4, 2, 1), zeta=(1.0, 0.5, 0.3), restart_sigma=1.0,
                                                   coarse_steps=0.25)),
    },
    # DAPS_OFFICIAL; lr swept over 3e-5 / 1e-4 / 1.8e-4 on tuning images 40–41 (RESULTS.md "Session 19: DAPS")
    "daps": {
        "inpaint": Defaults(50, DAPS_OFFICIAL),  # inpainting_rand.yaml; sweep: 3e-5 ahead by 0.04 (box), 0.15 dB (random70)
        "deblur": Defaults(50, DAPS_OFFICIAL),  # gaussian_blur.yaml; sweep (gblur): the official lr best
        "superres": Defaults(50, DAPS_OFFICIAL),  # down_sampling.yaml; sweep (sr4): the official lr best
        # no official config: σ_y the measured σ (τ 0.01 would hand back the noisy y); lr 1e-3 from Langevin's bound
        # lr/σ_y² < 2 (stable for σ_y > 0.012 on [0, 1]; official 1e-4 barely moves x0 at σ_y 0.1), not tuned
        "denoise": Defaults(50, dataclasses.replace(DAPS_OFFICIAL, sigma_y=None, lr=1e-3)),
        "colorize": Defaults(50, DAPS_OFFICIAL),  # no official config: the gaussian_blur.yaml values; sweep: lr 1e-4 best
        "mri": Defaults(50, dataclasses.replace(DAPS_OFFICIAL, lr=3e-5)),  # no official config; sweep (mri4x): 3e-5, +0.28 dB
        # no official config: ‖A‖² ≈ 1.5e4 on 256², so σ_y 2 (sinogram units, ~ct60's simulated noise) keeps lr 1e-4
        # stable (lr ‖A‖²/σ_y² ≈ 0.4); 20 Langevin steps, each a Radon transform and its adjoint (~80 ms); not tuned
        "ct": Defaults(50, dataclasses.replace(DAPS_OFFICIAL, sigma_y=2.0, langevin_steps=20)),
        "dejpeg": Defaults(50, dataclasses.replace(DAPS_OFFICIAL, sigma_y=None)),  # σ_y: the rounding's Q/√12; not tuned
        # official phase_retrieval.yaml (lr 5e-5); sweep 5e-5–1e-3, images 40–43: within noise up to 7e-4, 1e-3 diverges
        "phase": Defaults(50, dataclasses.replace(DAPS_OFFICIAL, lr=5e-5)),
    },
    "dpir": {  # the paper's λ 0.23, σ_1 49/255 were the start; periodical self-ensemble on
        "inpaint": Defaults(16, DPIRParams(lam=0.02, sigma_max=1.5)),  # sweep: steps × λ, random70, images 40–47
        "deblur": Defaults(16, dataclasses.replace(DPIR_RENOISED, sigma_min=0.01)),  # sweep: σ_min, gblur/mblur 40–47
        "deblur/motion": Defaults(16, dataclasses.replace(DPIR_RENOISED, sigma_min=0.01, lam=0.4)),  # sweep: λ, mblur 40–47
        # a kernel estimated from the image (--kernel auto): camera shake's setting, the blur blind users bring
        "deblur/blind": Defaults(16, dataclasses.replace(DPIR_RENOISED, sigma_min=0.01, lam=0.4)),
        "superres": Defaults(16, DPIR_RENOISED),  # sweep: renoise, σ_1, steps, sr4, images 40–47
        "denoise": Defaults(8, DPIRParams(lam=0.2, sigma_max=0.4)),  # sweep: λ, steps, images 40–43
        "colorize": Defaults(12, dataclasses.replace(DPIR_HOLES, renoise=0.6)),  # sweep: renoise, images 40–45
        "mri": Defaults(12, DPIR_HOLES),  # sweep: the random70 setting, mri4x
        "ct": Defaults(12, dataclasses.replace(DPIR_HOLES, sigma_min=0.02, cg_max_iter=10)),  # sweep: σ_min, 40–41
        # the ladder must end in the image domain (JPEG's σ is in coefficient units): σ_min 0.02; jpeg10/30, 40–43
        "dejpeg": Defaults(12, dataclasses.replace(DPIR_HOLES, sigma_min=0.02)),
        "phase": Defaults(12, DPIR_HOLES),  # (refused for phase retrieval: it has no data-consistency step)
    },
    "deblock": {  # JPEG files only: one pass of the network per turn of the self-ensemble; sweep: ensemble, tile (40–43)
        "dejpeg": Defaults(1, DeblockParams()),
    },
}
