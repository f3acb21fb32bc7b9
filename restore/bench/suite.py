"""The standard task suite of ``../shared/protocol.md``: its problems, its classical baselines and the
methods a run compares (samplers and baselines).

Image i of a folder is its i-th file in sorted order, centre-cropped to ``size`` × ``size`` (256 in the
protocol); every random choice for image i — mask, measurement noise, sampler noise — is seeded from i.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import operators
from operators.color import rgb_to_luminance
from operators.phase import best_of_ambiguities, hio
from restore.blind import BlindParams, align_to_reference, classical_blind_baseline, estimate_kernel, kernel_size_for
from restore.errors import RestoreError
from restore.io import read_image
from restore.noise import GaussianNoise, simulate
from restore.plan import Plan, Request, make_plan, solve
from restore.samplers import PosteriorSamples, get_sampler

SIGMA_Y = 0.05  # σ_y = 0.025 on [0, 1] is 0.05 on the library's [-1, 1]
PROTOCOL_SIZE = 256
PHASE_SIGMA = 0.05  # on the Fourier magnitudes, which are in the [0, 1] object's units (DAPS configs/task/phase_retrieval.yaml)

#: Wiener regularisation and TV weight, tuned on training images (benchmarks/tune_baselines.py)
WIENER_BALANCE = {"gblur": 0.03, "mblur": 0.1}
TV_WEIGHT = 0.08


@dataclass
class Problem:
    """One image of one task: ground truth, operator, noisy measurement."""

    index: int
    name: str
    x: Tensor  # (1, C, H, W) in [-1, 1]
    operator: operators.LinearOperator
    y: Tensor
    noise: GaussianNoise


# ---- classical baselines (protocol.md's table) ---------------------------------------------------
def _unit_hwc(image: Tensor) -> np.ndarray:
    return ((image[0] + 1) / 2).permute(1, 2, 0).double().numpy()


def _from_unit_hwc(array: np.ndarray) -> Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() * 2 - 1


def _missing(p: Problem) -> np.ndarray:
    return (p.operator.singular_values().reshape(p.x.shape) == 0)[0, 0].numpy()


def bicubic_baseline(p: Problem) -> Tensor:
    return operators.resize.bicubic_upsample(p.y, 4)


def wiener_baseline(balance: float) -> Callable[[Problem], Tensor]:
    return lambda p: operators.blur.wiener_deconvolve(p.y, p.operator, balance)


def biharmonic_baseline(p: Problem) -> Tensor:
    from skimage.restoration import inpaint_biharmonic

    return _from_unit_hwc(inpaint_biharmonic(_unit_hwc(p.y), _missing(p), channel_axis=-1))


def linear_interpolation_baseline(p: Problem) -> Tensor:
    """Piecewise-linear interpolation of the kept pixels (Delaunay, scipy), nearest outside their hull."""
    from scipy.interpolate import griddata

    unit, missing = _unit_hwc(p.y), _missing(p)
    known, holes = np.argwhere(~missing), np.argwhere(missing)
    out = unit.copy()
    for c in range(unit.shape[2]):
        values = unit[~missing, c]
        filled = griddata(known, values, holes, method="linear")
        outside = np.isnan(filled)
        filled[outside] = griddata(known, values, holes[outside], method="nearest")
        out[missing, c] = filled
    return _from_unit_hwc(out)


def tv_baseline(p: Problem, weight: float = TV_WEIGHT) -> Tensor:
    from skimage.restoration import denoise_tv_chambolle

    return _from_unit_hwc(denoise_tv_chambolle(_unit_hwc(p.y), weight=weight, channel_axis=-1))


def zero_filled_baseline(p: Problem) -> Tensor:
    return operators.mri.zero_filled(p.y, p.operator).real.float()


def hio_baseline(p: Problem) -> Tensor:
    """Fienup's hybrid input-output, 500 iterations and 4 random restarts (seeded by the image), the best fit kept."""
    return hio(p.y, p.operator, generator=torch.Generator().manual_seed(p.index)).float()


def fbp_baseline(p: Problem) -> Tensor:
    # FBP (ramp filter) of the [0, 1] image's sinogram: y = A(2u - 1) = 2 A u - A 1
    ones = p.operator.A(torch.ones_like(p.x))
    return operators.ct.fbp((p.y + ones) / 2, p.operator) * 2 - 1


# ---- the tasks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchTask:
    name: str
    family: str  # the CLI task whose sampler defaults apply (restore/samplers/defaults.py)
    spec: Callable[[int, int], str]  # (image index, size) → operator spec
    baseline_name: str
    baseline: Callable[[Problem], Tensor]
    luminance: bool = False
    noise_sigma: Callable[[Tensor, operators.Operator], float] = lambda x, op: SIGMA_Y
    #: False: the measurement is exact (a JPEG's rounding is its only noise), and ``noise_sigma`` only tells samplers its size
    added_noise: bool = True
    #: True: the methods do not see the blur kernel (blind deblurring): samplers run on the kernel that
    #: restore.blind estimates
    hidden_kernel: bool = False
    #: (x̂, x) → x̂ as it is scored: undoes what the measurement cannot tell — a blind estimate's shift (Levin et
    #: al. 2009 score after the best one), phase retrieval's 180° rotation; None: scored as it is
    align: Callable[[Tensor, Tensor], Tensor] | None = None


def _jpeg_sigma(x: Tensor, op: operators.Operator) -> float:
    return float(op.quant.float().mean()) / 12**0.5  # rounding to a bin of width Q: Q / √12, in coefficient units


def _ct_sigma(x: Tensor, op: operators.LinearOperator) -> float:
    return 2 * 0.005 * float(op.A((x + 1) / 2).abs().max())  # 0.005 × the [0, 1] image's sinogram maximum


TASKS: dict[str, BenchTask] = {t.name: t for t in [
    BenchTask("sr4", "superres", lambda i, n: "bicubic:4", "bicubic", bicubic_baseline),
    BenchTask("gblur", "deblur", lambda i, n: "blur:gaussian:61:3.0", "Wiener", wiener_baseline(WIENER_BALANCE["gblur"])),
    BenchTask("mblur", "deblur", lambda i, n: f"blur:levin:{i % 8 + 1}", "Wiener", wiener_baseline(WIENER_BALANCE["mblur"])),
    # mblur's problems with the kernel hidden; the mblur task's rows are the non-blind upper bound
    BenchTask("mblur-blind", "deblur", lambda i, n: f"blur:levin:{i % 8 + 1}", "classical blind: L0 edges + TV",
              lambda p: classical_blind_baseline(p.y, kernel_size_for(p.y.shape), p.noise.sigma)[0], hidden_kernel=True,
              align=align_to_reference),
    # 128 of 256 in the protocol; half the side for other --size values
    BenchTask("box", "inpaint", lambda i, n: f"box:{n // 2}:seed={i}", "biharmonic", biharmonic_baseline),
    # large free-form holes (25–40 % of the image), where texture matters: restore.metrics.texture_ratio
    BenchTask("freeform", "inpaint", lambda i, n: f"freeform:seed={i}", "biharmonic", biharmonic_baseline),
    BenchTask("random70", "inpaint", lambda i, n: f"random:0.7:seed={i}", "linear interpolation", linear_interpolation_baseline),
    BenchTask("denoise", "denoise", lambda i, n: "identity", "TV (Chambolle)", tv_baseline, noise_sigma=lambda x, op: 2 * 0.1),
    BenchTask("mri4x", "mri", lambda i, n: "mri:equispaced:4:center_lines=20", "zero-filled", zero_filled_baseline, luminance=True),
    BenchTask("ct60", "ct", lambda i, n: "ct:60", "FBP", fbp_baseline, luminance=True, noise_sigma=_ct_sigma),
    BenchTask("jpeg10", "dejpeg", lambda i, n: "jpeg:quality=10:subsampling=420", "decoded JPEG", lambda p: p.operator.pinv(p.y),
              noise_sigma=_jpeg_sigma, added_noise=False),
    BenchTask("jpeg30", "dejpeg", lambda i, n: "jpeg:quality=30:subsampling=420", "decoded JPEG", lambda p: p.operator.pinv(p.y),
              noise_sigma=_jpeg_sigma, added_noise=False),
    # Fourier phase retrieval as DPS and DAPS benchmark it: oversample 2, σ 0.05 on the magnitudes of the [0, 1] image
    BenchTask("phase", "phase", lambda i, n: "phase", "HIO", hio_baseline, noise_sigma=lambda x, op: PHASE_SIGMA,
              align=best_of_ambiguities),
    BenchTask("colorize", "colorize", lambda i, n: "gray", "gray (the luminance)", lambda p: p.y.expand(-1, 3, -1, -1).clone()),
]}


#: the standard suite of ../shared/protocol.md, what `restore bench` runs by default
PROTOCOL = ("sr4", "gblur", "mblur", "box", "random70", "denoise", "mri4x", "ct60")


def parse_tasks(names: str) -> list[BenchTask]:
    tasks = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in TASKS:
            raise RestoreError(f"unknown task '{name}'; the suite's tasks are: {', '.join(TASKS)}")
        tasks.append(TASKS[name])
    if not tasks:
        raise RestoreError(f"no tasks given; the suite's tasks are: {', '.join(TASKS)}")
    return tasks


@dataclass(frozen=True)
class Method:
    """A sampler with an optional step count (``dps:100``), or the task's classical ``baseline``."""

    label: str
    sampler: str | None = None  # None: the baseline
    steps: int | None = None  # None: the (sampler, task) default
    #: posterior samples per image; the restoration scored is their mean (the MMSE estimate)
    samples: int = 1
    #: (samples (K, B, C, H, W), problems) → the sample scored per image (B,) instead of their mean:
    #: :func:`closest_to_truth` (the oracle) or :func:`best_fit` (a choice without the truth); None: the mean
    pick: Callable[[Tensor, list[Problem]], Tensor] | None = None


def closest_to_truth(samples: Tensor, problems: list[Problem]) -> Tensor:
    """Per image, the sample of lowest squared error to the truth (highest PSNR): an oracle choice, the way DAPS's
    evaluation reports phase retrieval (the best of 4 runs)."""
    x = torch.cat([p.x for p in problems]).to(samples.dtype)
    return (samples - x).square().flatten(2).mean(dim=2).argmin(dim=0)


def best_fit(samples: Tensor, problems: list[Problem]) -> Tensor:
    """Per image, the sample whose measurement A(x̂) lies closest to y: a choice a user can make without the truth, as
    HIO keeps the restart of lowest misfit."""
    with torch.no_grad():
        misfits = [[float((p.operator.A(s[b : b + 1].to(p.y.dtype)) - p.y).abs().square().sum()) for b, p in enumerate(problems)]
                   for s in samples]
    return torch.tensor(misfits).argmin(dim=0)


def parse_methods(samplers: str, baselines: bool = True, samples: int = 1, best_of: int = 1, best_fit_of: int = 1) -> list[Method]:
    """The baseline (if asked) and each ``NAME[:STEPS]`` of ``samplers``, labelled ``NAME[:STEPS]+meanN`` when scored
    on the mean of ``samples`` > 1 posterior samples, ``+bestN`` on the one closest to the truth of ``best_of`` > 1,
    ``+fitN`` on the one that fits the measurement best of ``best_fit_of`` > 1."""
    ways = {"mean": (samples, None), "best": (best_of, closest_to_truth), "fit": (best_fit_of, best_fit)}
    chosen = [(suffix, n, pick) for suffix, (n, pick) in ways.items() if n > 1]
    if len(chosen) > 1:
        raise RestoreError("--samples (their mean), --best-of (the closest to the truth) and --best-fit-of (the best fit) "
                           "score the samples in different ways: give one of them")
    suffix, count, pick = chosen[0] if chosen else ("", 1, None)
    methods = [Method("baseline")] if baselines else []
    for item in (s.strip() for s in samplers.split(",") if s.strip()):
        name, _, steps = item.partition(":")
        get_sampler(name)  # an unknown name is an error that lists the samplers
        if steps and not (steps.isdigit() and int(steps) > 0):
            raise RestoreError(f"'{item}': the steps after ':' must be a positive whole number")
        label = f"{item}+{suffix}{count}" if suffix else item
        methods.append(Method(label, name, int(steps) if steps else None, count, pick))
    if not methods:
        raise RestoreError("nothing to run: give --samplers or keep --baselines")
    return methods


def centre_crop(x: Tensor, size: int) -> Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def load_reference(path: Path, size: int) -> Tensor:
    """The image as (1, 3, size, size) in [-1, 1]: centre crop, gray replicated to RGB, alpha dropped."""
    pixels = read_image(path).pixels
    if min(pixels.shape[-2:]) < size:
        raise RestoreError(f"{path.name} is {pixels.shape[-1]}×{pixels.shape[-2]}, smaller than the suite's "
                           f"{size}×{size} crop (use --size)")
    pixels = centre_crop(pixels, size)[None].float()
    return pixels.expand(-1, 3, -1, -1).clone() if pixels.shape[1] == 1 else pixels


def blind_operator(denoiser, problem: Problem) -> operators.LinearOperator:
    """The blur a blind method deblurs with: the kernel estimated from the measurement alone (restore.blind; a
    31 px support — the Levin kernels are 13–27 px — or half the image's side on smaller crops)."""
    periodic = problem.operator.boundary == "circular"
    kernel = estimate_kernel(problem.y, denoiser, kernel_size_for(problem.y.shape), noise_sigma=problem.noise.sigma,
                             params=BlindParams(periodic=periodic))
    return operators.blur.make_blur(kernel.float(), problem.operator.in_shape, problem.operator.boundary).to(problem.y.dtype)


def make_problem(task: BenchTask, x: Tensor, index: int, name: str = "") -> Problem:
    if task.luminance:
        x = rgb_to_luminance(x)
    op = operators.build(task.spec(index, x.shape[-1]), tuple(x.shape[1:])).to(x.dtype)
    noise = GaussianNoise(task.noise_sigma(x, op))
    y = simulate(x, op, noise, [index]) if task.added_noise else op.A_exact(x)
    return Problem(index, name, x, op, y, noise)


def method_plan(task: BenchTask, method: Method, problem: Problem, steps: int | None, seed: int) -> Plan:
    """The plan a sampler method runs with on a task: the task family's defaults, the method's steps."""
    request = Request(method.sampler, method.steps or steps, (), method.samples, seed)
    return make_plan(task.family, request, problem.operator, kind="blind" if task.hidden_kernel else None)


def solve_problems(plan: Plan, denoiser, problems: list[Problem]) -> PosteriorSamples:
    """The plan's posterior samples of a batch of problems, and their mean."""
    device = denoiser.alphas_cumprod.device
    ops = [p.operator for p in problems]
    operator = ops[0] if len(ops) == 1 else type(ops[0]).stack(ops)
    y = torch.cat([p.y for p in problems]).to(device)
    return solve(plan, denoiser, operator, y, noise=problems[0].noise, indices=[p.index for p in problems])


def scored_estimate(task: BenchTask, method: Method, samples: Tensor, problems: list[Problem]) -> Tensor:
    """The restoration a method is scored on, from its posterior samples (K, B, C, H, W) of the problems: their mean,
    or the sample ``method.pick`` chooses; in the image range, aligned to the truth (``task.align``)."""
    x = torch.cat([p.x for p in problems])

    def aligned(x_hat: Tensor) -> Tensor:
        x_hat = (x_hat.real if x_hat.is_complex() else x_hat).float().cpu().clamp(-1, 1)
        return x_hat if task.align is None else task.align(x_hat, x).clamp(-1, 1)

    if method.pick is None:
        return aligned(samples.mean(dim=0))
    candidates = torch.stack([aligned(s) for s in samples])  # the oracle compares them to the truth as they are scored
    return candidates[method.pick(candidates, problems), torch.arange(x.shape[0])]
