"""The glue between the command line and the library — and the Python entry point.

    import restore.api as api
    denoiser = api.load_denoiser("default")
    op = operators.build("random:0.7:seed=0", (3, 256, 256))
    y = api.simulate(x, op, GaussianNoise(0.05), seeds=0)
    result = api.solve(denoiser, op, y, task="inpaint", noise=GaussianNoise(0.05))

Images are (B, C, H, W) tensors in [-1, 1]; see restore.io for files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor

from restore.errors import RestoreError
from restore.samplers import PosteriorSamples, check_num_samples, check_operator, draw_samples, get_sampler
from restore.samplers.defaults import defaults_for, with_options

#: the fastest sampler that does each task well (measured in benchmarks/RESULTS.md);
#: SVD_FALLBACK is used when the task's default needs an SVD the operator lacks
DEFAULT_SAMPLER = {
    "inpaint": "diffpir",  # at 20 NFE DDRM is biased on pixel masks (random70: 23.2 dB vs 26.9, RESULTS.md)
    # DPIR leads on both blurs, but with a different λ each (0.2 Gaussian, 0.4 motion: RESULTS.md session 15);
    # DDRM serves both with one setting
    "deblur": "ddrm",
    "superres": "dpir",  # sr4, validation images 0–7: +0.86 dB over bicubic against DDRM's +0.20 (RESULTS.md)
    "denoise": "ddrm",
    "colorize": "diffpir",  # luminance → RGB, σ_y 0.025: 18.33 dB against DDRM's 17.27 (tuning images 40–45)
    "mri": "dpir",  # mri4x: +2.15 dB over zero-filled against DiffPIR's +1.37 (+1.86 as the mean of 4 samples)
    "ct": "dpir",  # ct60: +7.44 dB over FBP against DiffPIR's +6.67, at 12 NFE instead of 20
}
#: the default when posterior samples are asked for (--num-samples > 1) and the task's default gives one estimate
POSTERIOR_DEFAULT = {"superres": "ddrm", "mri": "diffpir", "ct": "diffpir"}
SVD_FALLBACK = "diffpir"


@dataclass(frozen=True)
class SolveSettings:
    """What decides a restoration besides the inputs; written into every report."""

    sampler: str | None = None  # None: DEFAULT_SAMPLER of the task
    steps: int | None = None  # None: the (sampler, task) default
    prior: str = "default"
    seed: int = 0
    num_samples: int = 1
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on GPU and bf16-capable CPUs, else fp32
    options: tuple[str, ...] = ()  # NAME=VALUE hyperparameters over the (sampler, task) defaults

    def to_dict(self) -> dict:
        return {**asdict(self), "options": list(self.options)}  # as it reads back from a JSON report


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RestoreError("--device cuda was asked for, but no CUDA GPU is available (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise RestoreError(f"unknown device '{name}'; use auto, cpu or cuda") from None


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` → bf16 on a GPU and on CPUs with native bf16 (AVX-512 BF16 / AMX), else fp32.

    bf16 changes the restorations' PSNR by less than 0.01 dB on average (benchmarks/RESULTS.md, speed)
    and halves the network's time on such CPUs; ``fp32`` is the escape.
    """
    if name == "auto":
        return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()) else "fp32"
    if name not in ("fp32", "bf16", "fp16"):
        raise RestoreError(f"unknown precision '{name}'; use auto, fp32, bf16 or fp16")
    return name


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (emulated bf16 would be slower than fp32)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_sampler(task: str, operator, requested: str | None, num_samples: int = 1) -> str:
    """The requested sampler (checked against the operator and the samples asked for), or the task's default that can take it."""
    if requested is not None:
        info = get_sampler(requested)
        check_operator(info, operator)
        check_num_samples(info, num_samples)
        return requested
    name = task_default_sampler(task, num_samples)
    if get_sampler(name).needs_svd and not operator.has_svd:
        name = SVD_FALLBACK
    return name


def task_default_sampler(task: str, num_samples: int = 1) -> str:
    """The task's default sampler, or its posterior-sampling default when several samples are asked for."""
    name = DEFAULT_SAMPLER[task]
    if num_samples > 1 and not get_sampler(name).samples_posterior:
        name = POSTERIOR_DEFAULT[task]
    return name


def load_denoiser(prior: str = "default", device: str = "auto", precision: str = "auto", compile_mode: str | None = None):
    """The prior ``prior`` (a registry name or a weights file) as a denoiser on ``device``.

    On a GPU, float32 matrix products and convolutions may use TF32 (what "fp32" means there in
    practice); ``compile_mode`` ("default", or "reduce-overhead" for CUDA graphs; "auto" picks CUDA
    graphs on a GPU) torch.compiles the network for the fixed-shape sampling steps.
    """
    from restore.prior.registry import load_prior

    dev = resolve_device(device)
    compile_mode = prepare_network_device(dev, compile_mode)
    return load_prior(prior, device=str(dev), precision=resolve_precision(precision, dev), compile_mode=compile_mode)


def prepare_network_device(dev: torch.device, compile_mode: str | None = None) -> str | None:
    """Allow TF32 on a GPU and resolve ``compile_mode`` "auto" (CUDA graphs on a GPU, plain compile on CPU)."""
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if compile_mode == "auto":
        return "reduce-overhead" if dev.type == "cuda" else "default"
    return compile_mode


def generators(seed: int, indices: list[int], num_samples: int = 1, purpose: int = 0) -> list[torch.Generator]:
    """One CPU generator per (posterior sample, image), seeded from the run seed and the image index.

    Ordered sample-major to match :func:`restore.samplers.draw_samples`; ``purpose`` separates the
    streams for simulated noise (1) and sampling (0).
    """
    return [
        torch.Generator().manual_seed(seed + index + 100_003 * k + 1_000_000_007 * purpose)
        for k in range(num_samples)
        for index in indices
    ]


def simulate(x: Tensor, operator, noise, seeds: list[int] | int = 0) -> Tensor:
    """y = noise(A x), the noise of image b seeded by ``seeds[b]`` (an int means 0, 1, ... added to it)."""
    indices = list(range(seeds, seeds + x.shape[0])) if isinstance(seeds, int) else list(seeds)
    with torch.no_grad():
        clean = operator.A(x)
    parts = [noise(clean[b : b + 1], gen) for b, gen in enumerate(generators(0, indices, purpose=1))]
    return torch.cat(parts)


def solve(
    denoiser,
    operator,
    y: Tensor,
    *,
    task: str,
    noise,
    settings: SolveSettings = SolveSettings(),
    indices: list[int] | None = None,
    callback=None,
    params=None,
) -> PosteriorSamples:
    """Posterior samples of x given y for a batch (image b seeded by ``indices[b]``), with mean and std.

    ``params`` replaces the (sampler, task) defaults; ``settings.options`` are then applied over either.
    """
    sampler_name = choose_sampler(task, operator, settings.sampler, settings.num_samples)
    info = get_sampler(sampler_name)
    defaults = defaults_for(sampler_name, task)
    steps = settings.steps or defaults.steps
    indices = list(range(y.shape[0])) if indices is None else indices
    gens = generators(settings.seed, indices, settings.num_samples)
    operator = operator.to(y.device)
    return draw_samples(
        info.run, denoiser, operator, y,
        num_samples=settings.num_samples, noise=noise, steps=steps,
        generator=gens, callback=callback, params=with_options(params or defaults.params, settings.options, sampler_name),
    )


def resolved(settings: SolveSettings, task: str, operator) -> SolveSettings:
    """The settings with sampler and steps filled in, as they go into a report."""
    sampler = choose_sampler(task, operator, settings.sampler, settings.num_samples)
    return replace(settings, sampler=sampler, steps=settings.steps or defaults_for(sampler, task).steps)


def check_options(task: str, settings: SolveSettings) -> None:
    """Refuse, before any work, ``settings.options`` that the sampler a run would use does not take.

    Without ``--sampler`` that is the task's default; an operator without an SVD can still swap it for
    SVD_FALLBACK later, whose hyperparameters are checked when it runs.
    """
    if not settings.options:
        return
    sampler = settings.sampler or task_default_sampler(task, settings.num_samples)
    with_options(defaults_for(sampler, task).params, settings.options, sampler)
