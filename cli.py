"""The ``restore`` command line: thin Typer commands over restore.api, restore.tasks and restore.runner.

Heavy imports (torch and everything numeric) happen inside the commands, so ``restore --help``
stays fast. Any RestoreError becomes one line on stderr and exit code 1 (``--debug`` shows the
traceback); a folder run in which some images failed exits with 1 after restoring the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import sys
import threading
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

app = typer.Typer(
    name="restore",
    help="Solve imaging inverse problems (inpainting, deblurring, super-resolution, denoising, "
    "colorization, MRI, CT) with diffusion priors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
priors_app = typer.Typer(help="List, inspect, download and verify priors.", no_args_is_help=True)
app.add_typer(priors_app, name="priors")

console = Console(stderr=True)
DEBUG = {"on": False}


def say(text: str, label: str = "", style: str = "") -> None:
    """One line on stderr: an optional coloured label, then ``text`` exactly as given — never read as rich
    markup, since file names and messages hold brackets (``photo[1].png``, ``pip install 'restore[diffusers]'``)."""
    line = Text()
    if label:
        line.append(f"{label}:", style=style)
        line.append(" ")
    line.append(text)
    console.print(line, highlight=False, soft_wrap=True)


def user_errors(command):
    """Any error becomes one line on stderr and exit 1 (``--debug`` shows the traceback); Ctrl-C or SIGTERM
    says what was kept and exits 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from restore.errors import Interrupted
        from restore.records import failure_text

        previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except (KeyboardInterrupt, Interrupted) as err:
            say(str(err) if isinstance(err, Interrupted) else "stopped before anything was saved", "interrupted", "yellow")
            raise typer.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - the edge of the program
            if DEBUG["on"]:
                raise
            say(failure_text(err), "error", "red")
            raise typer.Exit(1) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _interrupt(signum, frame) -> None:
    """SIGTERM (a scheduler's stop, ``kill``) is handled like Ctrl-C: work in progress is saved first."""
    raise KeyboardInterrupt


def version_callback(value: bool) -> None:
    if value:
        from restore import __version__

        typer.echo(f"restore {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")] = None,
) -> None:
    """restore: image restoration with diffusion priors. Run `restore COMMAND --help` for a command's options."""
    DEBUG["on"] = debug


# ---- options shared by the task commands -------------------------------------------------------
Images = Annotated[str, typer.Argument(help="An image file, a folder of images, or a glob such as 'photos/*.png' (quote it).", show_default=False)]
Steps = Annotated[Optional[int], typer.Option(min=1, help="Sampler steps (respaced schedule). Default: the sampler's default for the task.", show_default=False)]
Prior = Annotated[str, typer.Option(help="Prior: a name from `restore priors list` or a weights file (.safetensors/.pt).")]
Seed = Annotated[int, typer.Option(help="Random seed; image i of a folder uses seed + i.")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
Precision = Annotated[str, typer.Option(help="auto (bf16 on GPUs and on CPUs with native bf16, else fp32), fp32, bf16 or fp16.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the network (CUDA graphs on a GPU): pays for many images of one size; the first image waits about a minute.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Images restored together (same size only).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or table.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]
NOISE_HELP = "Measurement noise σ on the [0, 1] pixel scale (e.g. 0.025). Default: estimated from each real input (noted in the report); 0.01 with --simulate."
#: restore bench's default tasks (restore.bench.suite.PROTOCOL; spelled here so --help needs no torch import)
PROTOCOL_TASKS = ("sr4", "gblur", "mblur", "box", "random70", "denoise", "mri4x", "ct60")


@dataclass(frozen=True)
class TaskOptions:
    """The options every task command takes, declared once (``task_command`` adds them to each command)."""

    sampler: Annotated[Optional[str], typer.Option(help="Posterior sampler: ddrm, dps, reddiff, diffpir, ddnm, pigdm, daps, pyramid (coarse to fine); or dpir (one deterministic estimate, no posterior samples); deblock (JPEG files only: a trained deblocker). Default: the best per network evaluation for the task (and for inpainting, the mask: see the command's help).", show_default=False)] = None
    steps: Steps = None
    hyperparameters: Annotated[Optional[list[str]], typer.Option("--set", metavar="NAME=VALUE", help="A sampler hyperparameter NAME=VALUE over the task's default, e.g. --set lam=0.4 (dpir) or --set eta=0.5 (ddrm); repeatable. A wrong name lists the sampler's hyperparameters.", show_default=False)] = None
    prior: Prior = "default"
    noise_sigma: Annotated[Optional[float], typer.Option(min=0.0, help=NOISE_HELP, show_default=False)] = None
    seed: Seed = 0
    num_samples: Annotated[int, typer.Option(min=1, help="Posterior samples per image; >1 also writes their mean and an uncertainty (std) map.")] = 1
    device: Device = "auto"
    precision: Precision = "auto"
    compile_network: Compile = False
    batch_size: BatchSize = 1
    out: Annotated[Optional[Path], typer.Option(help="Output folder. Default: a 'restored' folder beside the input.", show_default=False)] = None
    simulate: Annotated[bool, typer.Option(help="Treat the input as the clean image: simulate the measurement, restore it, report metrics.")] = False
    reference: Annotated[Optional[Path], typer.Option(help="Ground truth for metrics: a file, or a folder matched by file name.", show_default=False)] = None
    overwrite: Annotated[bool, typer.Option(help="Redo images already restored in the output folder.")] = False
    save_grid: Annotated[bool, typer.Option(help="Also write a side-by-side figure: measurement | restoration | reference | uncertainty.")] = False
    save_progress: Annotated[bool, typer.Option(help="Also write an animated GIF of the estimate x̂0 over the steps.")] = False
    shard: Annotated[Optional[str], typer.Option(help="I/N: restore only image i of the sorted inputs where i mod N = I (a SLURM array, independent jobs). Under torchrun, RANK/WORLD_SIZE give it.", show_default=False)] = None
    quiet: Quiet = False
    json_out: JsonOut = False


def task_command(*, simulate: bool = True, noise_help: str = NOISE_HELP):
    """Register a task command: its own options, then every TaskOptions field, gathered into ``options``.

    ``simulate=False`` leaves out --simulate (inpainting always simulates); ``noise_help`` words --noise-sigma.
    """
    import inspect

    def decorate(command):
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
        hints = typing.get_type_hints(TaskOptions, include_extras=True)
        shared = []
        for f in dataclasses.fields(TaskOptions):
            if f.name == "simulate" and not simulate:
                continue
            annotation = hints[f.name]
            if f.name == "noise_sigma":
                annotation = Annotated[Optional[float], typer.Option(min=0.0, help=noise_help, show_default=False)]
            shared.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=annotation))
        names = {p.name for p in shared}

        @functools.wraps(command)
        def wrapper(**values):
            options = TaskOptions(**{k: values.pop(k) for k in list(values) if k in names})
            return command(**values, options=options)

        wrapper.__signature__ = inspect.Signature(own + shared)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + shared}
        return app.command(name=command.__name__)(user_errors(wrapper))

    return decorate


def run_task(setup, images: str, options: TaskOptions) -> None:
    """What every task command does: list inputs, check the request, load the prior, run with progress, report.

    Under torchrun each process takes its share of the images (restore.shard) on its own GPU, and rank 0
    writes the folder's report once all have finished; only rank 0 shows progress.
    """
    from restore import api, runner
    from restore.io import list_images
    from restore.plan import Request, make_plan
    from restore.shard import Shard

    group = distributed_group()
    shard = Shard.parse(options.shard) if options.shard else Shard.from_environment()
    inputs = list_images(images, setup.suffixes)
    out = options.out or runner.default_out(images)
    runner.check_outputs(out, inputs, setup.reads, options.num_samples)  # before the prior loads
    request = Request(options.sampler, options.steps, tuple(options.hyperparameters or ()), options.num_samples, options.seed,
                      setup.remove_cast)
    make_plan(setup.task, request)  # names, samples and hyperparameter values fail before the prior loads
    check_against_first_input(setup, inputs[0], request)
    follower = group is not None and shard.index != 0  # torchrun's other ranks: rank 0 speaks for the job
    quiet = options.quiet or options.json_out or follower
    denoiser = load_prior(options.prior, local_device(options.device), options.precision, options.compile_network, quiet)
    lpips = load_lpips(denoiser, quiet)
    device = denoiser.alphas_cumprod.device
    settings = {"prior": options.prior, "device": device.type, "precision": api.resolve_precision(options.precision, device),
                **setup.settings}
    run_options = runner.RunOptions(setup.task, out, request, settings, options.batch_size, options.overwrite,
                                    options.save_grid, options.save_progress, setup.reads, shard)
    records = run_with_progress(inputs, setup.prepare, denoiser, run_options, lpips, quiet)
    if group is not None:  # every rank's records are written: rank 0 reports the whole folder
        import torch.distributed as dist

        dist.barrier()
        if shard.index == 0:
            records = runner.report_folder(out)
        dist.destroy_process_group()
    finish(records, out, quiet, options.json_out and not follower)


def distributed_group():
    """Join torchrun's process group (gloo: it only carries the end-of-run barrier), or None outside torchrun."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    import torch.distributed as dist

    dist.init_process_group("gloo")
    return dist.group.WORLD


def local_device(device: str) -> str:
    """``auto`` under torchrun with GPUs: this process's own GPU (LOCAL_RANK), not everyone's first."""
    import os

    import torch

    if device == "auto" and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            from restore.errors import RestoreError

            raise RestoreError(f"rank {os.environ.get('RANK')}: LOCAL_RANK {local} has no GPU (this machine has "
                               f"{torch.cuda.device_count()}); start at most that many processes per node")
        return f"cuda:{local}"
    return device


def check_against_first_input(setup, first: Path, request) -> None:
    """What the operator decides (a sampler that needs an SVD on a reflect-boundary blur) fails before the prior
    loads too, checked on the first input; a first input that cannot be read is that image's failure, later."""
    from restore.plan import make_plan

    try:
        item = setup.prepare(first, 0)
    except Exception:  # noqa: BLE001 - reported for that image by the run
        return
    make_plan(setup.task, request, item.operator, kind=item.kind)


def load_prior(prior: str, device: str, precision: str, compile_network: bool, quiet: bool):
    """The prior as a denoiser (with a spinner), and a warning when its own record says it is barely trained."""
    from restore import api
    from restore.prior.registry import training_warning

    with console.status("loading prior", spinner="dots") if not quiet else contextlib.nullcontext():
        denoiser = api.load_denoiser(prior, device, precision, compile_mode="auto" if compile_network else None)
    if warning := training_warning(denoiser):
        say(f"{prior}: {warning}", "warning", "yellow")
    return denoiser


def load_lpips(denoiser, quiet: bool):
    from restore.metrics import load_lpips as load

    model, reason = load(denoiser.alphas_cumprod.device)
    if model is None and not quiet:
        say(f"{reason}; reporting PSNR and SSIM only", "note", "yellow")
    return model


def run_with_progress(inputs, prepare, denoiser, options, lpips, quiet):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from restore import runner

    if quiet:
        return runner.run(inputs, prepare, denoiser, options, lpips=lpips)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bars:
        images_bar = bars.add_task("images", total=len(inputs))
        steps_bar = bars.add_task("steps", total=1, visible=False)

        def on_image_start(name: str) -> None:
            bars.update(steps_bar, description=f"  {name}", completed=0, total=1, visible=True)

        def on_steps(step: int, total: int) -> None:
            bars.update(steps_bar, completed=step, total=total)

        def on_image_done(record) -> None:
            if options.shard.count > 1:  # the whole job's progress: every process's records so far
                bars.update(images_bar, completed=len(list((options.out / runner.RECORDS).glob("*.json"))))
            else:
                bars.advance(images_bar)

        hooks = runner.Progress(on_image_start=on_image_start, on_image_done=on_image_done, on_steps=on_steps)
        records = runner.run(inputs, prepare, denoiser, options, lpips=lpips, progress=hooks)
        bars.update(steps_bar, visible=False)
    return records


def fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def finish(records, out: Path, quiet: bool, json_out: bool) -> None:
    """Summary table (stderr), JSON report (stdout) if asked, and the exit code."""
    from rich.table import Table

    from restore.runner import summary

    means = summary(records)
    if json_out:
        typer.echo((out / "report.json").read_text())
    for r in records:
        if r.notes:
            say(f"{r.name}: {r.notes}", "note", "yellow")
    if not quiet:
        table = Table(title=f"restored → {out}", title_justify="left")
        for column in ("image", "status", "PSNR", "SSIM", "LPIPS", "s/image", "NFE"):
            table.add_column(column, justify="left" if column in ("image", "status") else "right")
        for r in records:
            table.add_row(Text(r.name), r.status, fmt(r.psnr), fmt(r.ssim, 4), fmt(r.lpips, 4), fmt(r.seconds, 1), str(r.nfe or "–"))
        table.add_section()
        table.add_row("mean", f"{means['images']} ok", fmt(means["psnr"]), fmt(means["ssim"], 4), fmt(means["lpips"], 4), fmt(means["seconds"], 1), "")
        console.print(table)
        say(f"report: {out / 'report.csv'}, {out / 'report.json'}")
    if means["failed"]:
        for r in records:
            if r.status == "failed":
                say(r.error if r.source in r.error else f"{r.source}: {r.error}", "failed", "red")
        say(f"{means['failed']} of {len(records)} images failed", "error", "red")
        raise typer.Exit(1)


# ---- task commands ---------------------------------------------------------------------------------
@task_command(simulate=False, noise_help="Noise σ on the [0, 1] scale added to the image before restoring (a simulation). Default: none added, and the photograph's own σ estimated (noted in the report).")
def inpaint(
    images: Images,
    mask: Annotated[str, typer.Option(help="Mask file (white = missing), a folder of masks matched by file name, or a spec: box:128 (a 128-pixel square at a random position, seeded by the image's index), box:128@X,Y (its top-left corner at column X, row Y), random:0.7, strokes, freeform.", show_default=False)],
    invert_mask: Annotated[bool, typer.Option(help="The mask's white pixels are the KEPT ones.")] = False,
    *, options: TaskOptions,
) -> None:
    """Fill in the masked pixels of images. The input is the ground truth: metrics compare against it.

    The default follows the mask: DPIR for scattered missing pixels (random:0.7), DiffPIR for scratches and small
    boxes, and for holes 16 or more pixels deep (thick strokes, large boxes) the coarse-to-fine pyramid sampler
    (1/4, 1/2, full size; from 48 pixels deep also 1/8). The report names the sampler that ran.
    """
    from restore import tasks

    run_task(tasks.inpaint(mask, options.noise_sigma, options.reference, invert_mask), images, options)


@task_command()
def deblur(
    images: Images,
    kernel: Annotated[str, typer.Option(help="Blur kernel: gaussian:SIZE:STD, motion:SIZE:INTENSITY, levin:1..8, a .npy/.npz/.png file, or auto[:SIZE] (unknown: estimated from each image on a SIZE×SIZE support, default 31).")] = "auto",
    boundary: Annotated[str, typer.Option(help="circular (periodic; SVD, fastest), reflect or valid (real photographs).")] = "reflect",
    *, options: TaskOptions,
) -> None:
    """Remove a blur from images: a known kernel, or (no --kernel) one estimated from each image.

    Default: DPIR, with λ 0.2 for a Gaussian-like (smooth, round) kernel and 0.4 for camera shake and other
    blurs — the kernel's shape decides; with --num-samples > 1, DDRM (circular boundary) or DiffPIR. Without
    --kernel the kernel is estimated first (coarse to fine, the prior's DPIR alternating with a kernel fit on
    edges: restore.blind) and written to kernel/NAME.npy and .png; the noise σ is estimated from each image
    unless --noise-sigma is given.
    """
    from restore import tasks

    run_task(tasks.deblur(kernel, boundary, options.noise_sigma, options.simulate, options.reference), images, options)


@task_command()
def superres(
    images: Images,
    scale: Annotated[int, typer.Option(min=2, max=8, help="Upscaling factor (2–8).")] = 4,
    kernel: Annotated[str, typer.Option(help="Downsampling model: bicubic (MATLAB imresize), avgpool or nearest.")] = "bicubic",
    *, options: TaskOptions,
) -> None:
    """Upscale low-resolution images by an integer factor."""
    from restore import tasks

    run_task(tasks.superres(scale, kernel, options.noise_sigma, options.simulate, options.reference), images, options)


@task_command(noise_help="Noise σ on the [0, 1] scale. Default: 0.1 with --simulate, else estimated from each image.")
def denoise(images: Images, *, options: TaskOptions) -> None:
    """Remove Gaussian noise from images."""
    from restore import tasks

    run_task(tasks.denoise(options.noise_sigma, options.simulate, options.reference), images, options)


@task_command(noise_help="Noise σ on the [0, 1] scale of the gray input. Default: 0 (noise-free).")
def colorize(
    images: Images,
    remove_cast: Annotated[bool, typer.Option("--remove-cast/--keep-cast", help="Move each result's mean colour to gray (the gray-world assumption): the prior cannot know a photograph's overall tint, and guesses one (a green sky, a yellow page). --keep-cast keeps its guess.")] = True,
    *, options: TaskOptions,
) -> None:
    """Colorize grayscale images (an RGB input is reduced to its luminance first).

    Each result's overall colour cast is removed (its mean colour made gray, every pixel's luminance kept)
    unless --keep-cast is given.
    """
    from restore import tasks

    run_task(tasks.colorize(options.noise_sigma, options.simulate, options.reference, remove_cast), images, options)


@task_command(noise_help="Noise σ of the k-space on the [0, 1] image scale. Default: 0.01.")
def mri(
    kspace: Annotated[str, typer.Argument(help="k-space: .npy (complex, H×W), .npz (restore's own measurements) or fastMRI .h5; with --simulate, images.", show_default=False)],
    mask: Annotated[Optional[str], typer.Option(help="Sampling mask .npy/.png (non-zero = sampled). Default: where the k-space is non-zero.", show_default=False)] = None,
    acceleration: Annotated[Optional[int], typer.Option(min=1, help="Equispaced Cartesian sampling with this acceleration (with a fully sampled centre).", show_default=False)] = None,
    center_lines: Annotated[Optional[int], typer.Option(min=0, help="Fully sampled central columns for --acceleration (default 8% of the width).", show_default=False)] = None,
    intensity_scale: Annotated[Optional[float], typer.Option(help="The k-space value of white: the image is the zero-filled reconstruction over it. Default: the file's own (restore's .npz), else the largest zero-filled magnitude (about ±11 %% of the true white on simulated photographs; noted per image).", show_default=False)] = None,
    *, options: TaskOptions,
) -> None:
    """Reconstruct an MR image from undersampled single-coil k-space.

    k-space as fastMRI stores it: centred and orthonormal, fftshift(fft2(ifftshift(x)), norm="ortho") of the image;
    numpy's plain fft2(x) and fftshift(fft2(x)) are recognised and converted (with a note). Unsampled entries are 0.
    """
    from restore import tasks

    run_task(tasks.mri(mask, acceleration, center_lines, options.noise_sigma, options.simulate, options.reference, intensity_scale),
             kspace, options)


@task_command(noise_help="Noise σ relative to each sinogram's maximum (the ct60 protocol uses 0.005).")
def ct(
    sinogram: Annotated[str, typer.Argument(help="Sinogram .npy (angles × detectors), a folder or glob of them; with --simulate, images.", show_default=False)],
    angles: Annotated[int, typer.Option(min=1, help="Number of projection angles, evenly spaced over the arc.")] = 60,
    arc: Annotated[float, typer.Option(min=1.0, max=360.0, help="Angular range in degrees (180 = full; less = limited angle).")] = 180.0,
    size: Annotated[Optional[int], typer.Option(min=8, help="Side of the square image a measured sinogram shows (default: from the detector count).", show_default=False)] = None,
    *, options: TaskOptions,
) -> None:
    """Reconstruct a CT image from a parallel-beam sinogram (sparse-view or limited-angle)."""
    from restore import tasks

    run_task(tasks.ct(angles, arc, size, options.noise_sigma, options.simulate, options.reference), sinogram, options)


@task_command(noise_help="Unused: a JPEG's only noise is its rounding, whose size its tables give.")
def dejpeg(
    images: Annotated[str, typer.Argument(help="JPEG files (baseline, as cameras and most software write them), a folder or glob; with --simulate, clean images.", show_default=False)],
    quality: Annotated[Optional[int], typer.Option(min=1, max=100, help="With --simulate: the IJG quality to encode at (4:2:0).", show_default=False)] = None,
    project: Annotated[bool, typer.Option(help="Project the result onto the file's quantisation bins, so that it re-encodes to the same coefficients.")] = True,
    *, options: TaskOptions,
) -> None:
    """Remove JPEG artifacts, from the file's own quantisation tables and chroma subsampling (nothing to guess).

    Default: the JPEG deblocker (--sampler deblock), the prior's network fine-tuned on JPEG files of photographs
    (restore train-deblocker), in 128-pixel tiles; --prior is not used by it. The diffusion samplers take the prior:
    dpir (its data step the projection onto the file's bins), ddnm (through the decoder), reddiff, dps, daps.
    Progressive, arithmetic-coded, 12-bit and CMYK JPEGs are refused with a line saying so.
    """
    from restore import tasks

    run_task(tasks.dejpeg(quality, options.simulate, options.reference, project), images, options)


@task_command(noise_help="Noise σ of the Fourier magnitudes, in the [0, 1] image's units. Default: 0.05 (the DPS and DAPS benchmark).")
def phase(
    magnitudes: Annotated[str, typer.Argument(help="Fourier magnitudes .npy ((N_h, N_w) or (channels, N_h, N_w)), a folder or glob of them; with --simulate, images.", show_default=False)],
    oversample: Annotated[float, typer.Option(min=0.0, help="Zero padding of the measurement: int(oversample / 8 · side) pixels on each side (2: 64 on a 256-pixel side, as DPS and DAPS).")] = 2.0,
    *, options: TaskOptions,
) -> None:
    """Recover an image from the magnitudes of its zero-padded Fourier transform (phase retrieval; nonlinear).

    The magnitudes are those of the centred, orthonormal DFT of the [0, 1] image, zero-padded (DAPS's convention).
    Default: DAPS (100 network evaluations); DPS and RED-Diff also take it, the linear samplers refuse it. The
    magnitudes cannot tell an image from its 180° rotation: with --reference (or --simulate) the result is turned to
    match, and --num-samples turns the samples to agree before their mean and uncertainty map. On photographs expect
    the scene's large shapes at best; the papers report this task as the best of 4 runs.
    """
    from restore import tasks

    run_task(tasks.phase(oversample, options.noise_sigma, options.simulate, options.reference), magnitudes, options)


# ---- metrics, reports, priors, training -----------------------------------------------------------
@app.command()
@user_errors
def report(
    folder: Annotated[Path, typer.Argument(help="A folder restore wrote (its .records/ hold one record per image).", show_default=False)],
    quiet: Quiet = False, json_out: JsonOut = False,
) -> None:
    """Rewrite a folder's report.csv and report.json from its records: after a crashed or partial run, or while
    several processes (torchrun, --shard) are still writing it. For a `restore bench` folder: merge the shards'
    results into results.csv and write summary.md."""
    from restore import runner

    if not folder.is_dir():
        from restore.errors import RestoreError

        raise RestoreError(f"{folder} is not a folder")
    if (folder / "settings.json").is_file() and not (folder / runner.RECORDS).is_dir():  # a restore bench folder
        from restore.bench.report import run_in_folder
        from restore.bench.run import merge_results

        rows = merge_results(folder)
        files, tasks, methods, settings = run_in_folder(folder, rows)
        report_bench(folder, rows, files, tasks, methods, settings, quiet or json_out, json_out)
        return
    finish(runner.report_folder(folder), folder, quiet or json_out, json_out)


@app.command()
@user_errors
def metrics(
    restored: Annotated[Path, typer.Argument(help="A restored image or a folder of them.", show_default=False)],
    reference: Annotated[Path, typer.Argument(help="The reference image, or a folder matched by file name.", show_default=False)],
    json_out: JsonOut = False,
) -> None:
    """PSNR, SSIM and LPIPS of restored images against references."""
    from rich.table import Table

    from restore import tasks
    from restore.io import list_images, read_image
    from restore.metrics import compute_metrics, load_lpips
    from restore.records import json_text

    files = list_images(str(restored))
    match = tasks.references_from(reference)
    lpips, reason = load_lpips("cpu")
    if lpips is None and not json_out:
        say(f"{reason}; reporting PSNR and SSIM only", "note", "yellow")
    rows = []
    for path in files:
        ref = match(path)
        values = compute_metrics(read_image(path).pixels[None], read_image(ref).pixels[None], lpips=lpips)
        rows.append({"image": path.name, "reference": str(ref), **{k: float(v) for k, v in values.items()}})
    means = {k: sum(r[k] for r in rows) / len(rows) for k in ("psnr", "ssim", "lpips")}
    if json_out:
        typer.echo(json_text({"images": rows, "mean": means}))
        return
    table = Table()
    for column in ("image", "PSNR", "SSIM", "LPIPS"):
        table.add_column(column, justify="left" if column == "image" else "right")
    for r in rows:
        table.add_row(Text(r["image"]), fmt(r["psnr"]), fmt(r["ssim"], 4), fmt(r["lpips"], 4))
    table.add_section()
    table.add_row(f"mean of {len(rows)}", fmt(means["psnr"]), fmt(means["ssim"], 4), fmt(means["lpips"], 4))
    Console().print(table)


@app.command()
@user_errors
def bench(
    images: Annotated[Path, typer.Argument(help="Folder of evaluation photographs (image i = i-th file in sorted order).", show_default=False)],
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks: the suite of ../shared/protocol.md (sr4, gblur, mblur, box, random70, denoise, mri4x, ct60, the default); also freeform (large free-form holes), colorize, jpeg10, jpeg30 (JPEG artifacts), phase (Fourier phase retrieval, scored after the better of the image and its 180° rotation) and mblur-blind (mblur with the kernel hidden: estimated, scored after the best shift).")] = ",".join(PROTOCOL_TASKS),
    samplers: Annotated[str, typer.Option(help="Comma-separated samplers (ddrm, dps, reddiff, diffpir, ddnm, pigdm, dpir, daps, pyramid, deblock); NAME:STEPS sets one's steps, e.g. dps:100.")] = "ddrm,diffpir,dpir",
    baselines: Annotated[bool, typer.Option(help="Also run each task's classical baseline (bicubic, Wiener, biharmonic, TV, zero-filled, FBP).")] = True,
    samples: Annotated[int, typer.Option(min=1, help="Posterior samples per image; >1 scores their mean (the MMSE estimate, labelled NAME+meanN) at N times the cost.")] = 1,
    best_of: Annotated[int, typer.Option(min=1, help="Posterior samples per image of which the one closest to the truth is scored (an oracle choice, labelled NAME+bestN: DPS and DAPS report phase retrieval as the best of 4).")] = 1,
    best_fit_of: Annotated[int, typer.Option(min=1, help="Posterior samples per image of which the one that fits the measurement best (lowest ‖A(x) − y‖) is scored: a choice without the truth, labelled NAME+fitN.")] = 1,
    prior: Prior = "default",
    out: Annotated[Path, typer.Option(help="Results folder: results.csv, summary.md, a picture per task. Rerunning resumes.")] = Path("bench_results"),
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N images.", show_default=False)] = None,
    steps: Steps = None,
    size: Annotated[int, typer.Option(min=16, help="Centre-crop size (the protocol's is 256; smaller for quick checks).")] = 256,
    seed: Seed = 0, device: Device = "auto", precision: Precision = "auto", compile_network: Compile = False, batch_size: BatchSize = 1,
    overwrite: Annotated[bool, typer.Option(help="Discard results in --out made with other settings and start again.")] = False,
    shard: Annotated[Optional[str], typer.Option(help="I/N: run only image i of the sorted images where i mod N = I, into its own results part; `restore report OUT` merges the parts once all have run. Under torchrun, RANK/WORLD_SIZE give it and rank 0 merges.", show_default=False)] = None,
    quiet: Quiet = False, json_out: JsonOut = False,
) -> None:
    """Run the standard task suite (samplers beside classical baselines) on a folder: PSNR, SSIM, LPIPS, NFE, time."""
    from restore import api
    from restore.bench import suite
    from restore.bench.run import BenchOptions, check_out, merge_results
    from restore.io import list_images
    from restore.shard import Shard

    task_list = suite.parse_tasks(tasks)
    methods = suite.parse_methods(samplers, baselines, samples, best_of, best_fit_of)
    files = list_images(images)[:limit]
    check_out(out, images)
    group = distributed_group()
    part = Shard.parse(shard) if shard else Shard.from_environment()
    follower = group is not None and part.index != 0
    quiet = quiet or json_out or follower
    denoiser = load_prior(prior, local_device(device), precision, compile_network, quiet)
    settings = {"images": str(images.resolve()), "prior": prior, "prior_info": getattr(denoiser, "info", {}),
                "precision": api.resolve_precision(precision, denoiser.alphas_cumprod.device), "size": size, "seed": seed,
                "steps": steps}
    options = BenchOptions(out, size, seed, steps, batch_size, overwrite, settings, part)
    lpips = load_lpips(denoiser, quiet) if any(m.sampler for m in methods) or baselines else None
    rows = bench_with_progress(files, task_list, methods, denoiser, options, lpips, quiet)
    if group is not None:  # every rank's part is written: rank 0 merges and reports the whole suite
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        if follower:
            return
        rows = merge_results(out)
    elif part.count > 1:
        say(f"shard {part.index}/{part.count} done: {out / f'results.part{part.index}of{part.count}.csv'}; once every shard "
            f"has run, `restore report {out}` merges them and writes summary.md")
        return
    report_bench(out, rows, files, task_list, methods, settings, quiet, json_out)


def report_bench(out: Path, rows, files, task_list, methods, settings: dict, quiet: bool, json_out: bool) -> None:
    """summary.md and the pictures, the table (stderr), JSON means (stdout) if asked, and the exit code."""
    from restore.bench import report
    from restore.records import json_text

    summary = report.write_reports(out, rows, files, task_list, methods, settings["size"], settings)
    table = report.mean_table(rows)
    if json_out:
        means = [{k: v for k, v in e.items() if k not in ("images_set", "rows")} for e in table]
        typer.echo(json_text({"settings": settings, "means": means}))
    if not quiet:
        from rich.table import Table

        view = Table(title=f"restore bench → {out}", title_justify="left")
        for column in ("task", "method", "images", "PSNR", "SSIM", "LPIPS", "NFE", "s/image"):
            view.add_column(column, justify="left" if column in ("task", "method") else "right")
        for e in table:
            view.add_row(e["task"], e["method"], str(e["images"]), fmt(e["psnr"]), fmt(e["ssim"], 4), fmt(e["lpips"], 4),
                         str(e["nfe"] or "–"), fmt(e["seconds"], 1))
        console.print(view)
        say(f"summary: {summary}; per image: {out / 'results.csv'}")
    failed = [r for r in rows if r.status == "failed"]
    for error in dict.fromkeys(r.error for r in failed):  # each distinct reason once, with where it happened
        where = [f"{r.task} · {r.method} · {r.image}" for r in failed if r.error == error]
        more = f" (and {len(where) - 1} more)" if len(where) > 1 else ""
        say(f"{where[0]}{more}: {error}", "failed", "red")
    if failed:
        raise typer.Exit(1)


def bench_with_progress(files, tasks, methods, denoiser, options, lpips, quiet):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from restore.bench import run

    if quiet:
        return run.run_suite(files, tasks, methods, denoiser, options, lpips=lpips)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console) as bars:
        bar = bars.add_task("bench", total=1)
        hooks = run.BenchProgress(
            on_start=lambda total: bars.update(bar, total=total),
            on_work=lambda description: bars.update(bar, description=description),
            on_row=lambda row: bars.advance(bar),
        )
        rows = run.run_suite(files, tasks, methods, denoiser, options, lpips=lpips, progress=hooks)
        bars.update(bar, description="bench")
    return rows


@priors_app.command("list")
@user_errors
def priors_list() -> None:
    """The named priors, where their files are, and whether they are present."""
    from rich.table import Table

    from restore.prior import registry

    table = Table()
    for column in ("name", "description", "status", "file"):
        table.add_column(column, overflow="fold")
    for entry in registry.PRIORS.values():
        path = registry.weights_path(entry)
        table.add_row(entry.name, Text(entry.description), "present" if path.is_file() else "not downloaded", Text(str(path)))
    Console().print(table)


@priors_app.command("info")
@user_errors
def priors_info(
    name: Annotated[str, typer.Argument(help="A prior name from `restore priors list`, or a weights file (.safetensors/.pt).")],
    json_out: JsonOut = False,
) -> None:
    """A prior's source, file, checksum status, network and training record."""
    from rich.table import Table

    from restore.prior import registry
    from restore.records import json_text

    info = registry.describe(name)
    if json_out:
        typer.echo(json_text(info))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(key.replace("_", " "), Text(str(value)))
    Console().print(table)


@priors_app.command("download")
@user_errors
def priors_download(name: Annotated[str, typer.Argument(help="A prior name from `restore priors list`.")]) -> None:
    """Fetch a public checkpoint into the cache (resumes an interrupted download; verifies it)."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from restore.errors import RestoreError
    from restore.prior import registry

    if name not in registry.PRIORS:
        raise RestoreError(f"unknown prior '{name}'; known: {', '.join(registry.PRIORS)}")
    entry = registry.PRIORS[name]
    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console) as bars:
        task = bars.add_task(entry.filename, total=entry.size)
        path = registry.download(entry, lambda done, total: bars.update(task, completed=done, total=total))
    say(f"{name}: {path} ({registry.verify(entry)})")


@priors_app.command("verify")
@user_errors
def priors_verify() -> None:
    """Check every prior file present against its recorded size and SHA-256."""
    from restore.prior import registry

    bad = 0
    for entry in registry.PRIORS.values():
        status = registry.verify(entry)
        bad += not (status == "ok" or status == "missing" or status.startswith("unverified"))
        say(f"{entry.name:14} {status}")
    if bad:
        raise typer.Exit(1)


@app.command()
@user_errors
def train(
    images: Annotated[list[Path], typer.Argument(help="Folders (or files) of training photographs.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Weights file to write (.safetensors); a resumable .ckpt and a .json go beside it.")],
    exclude: Annotated[Optional[Path], typer.Option(help="A text file of image file names to leave out (a validation split).", show_default=False)] = None,
    minutes: Annotated[Optional[float], typer.Option(min=0.0, help="Stop after this many minutes.", show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Stop at this many total steps.", show_default=False)] = None,
    channels: Annotated[int, typer.Option(min=32, help="Base channel count of the UNet (multiple of 32).")] = 32,
    channel_mult: Annotated[str, typer.Option(help="Channel multiplier of each UNet level, comma-separated (one level per halving of the resolution).")] = "1,2,3,4",
    res_blocks: Annotated[int, typer.Option(min=1, help="Residual blocks per UNet level (depth at every resolution).")] = 1,
    crop: Annotated[int, typer.Option(min=16, help="Training crop size in pixels.")] = 64,
    scales: Annotated[str, typer.Option(help="Also train on the photographs shrunk by these factors (comma-separated; 1 = full size), so that crops span larger structure.")] = "1",
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per step.")] = 16,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 3e-4,
    low_t_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of crops noised at a low level (t < --low-t-max of 1000) rather than uniformly: weight on denoising quality.")] = 0.5,
    low_t_max: Annotated[int, typer.Option(min=1, max=1000, help="Upper end of the low noise levels (timesteps of 1000).")] = 300,
    loss_weight: Annotated[str, typer.Option(help="eps: the DDPM ε-loss at every noise level; min-snr: Min-SNR-5 weighting (Hang et al. 2023), less weight on near-noiseless steps.")] = "eps",
    anneal_to: Annotated[Optional[int], typer.Option(min=1, help="Anneal the learning rate to zero (cosine) by this total step, then stop.", show_default=False)] = None,
    anneal: Annotated[bool, typer.Option("--anneal", help="With --minutes: anneal the learning rate to zero (cosine) over those minutes (for a machine whose speed is not known ahead).")] = False,
    device: Annotated[str, typer.Option(help="auto (a CUDA GPU when there is one), cpu or cuda.")] = "auto",
    seed: Seed = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT's .ckpt when it exists.")] = True,
    init_from: Annotated[Optional[Path], typer.Option(help="Without a .ckpt: start from these weights (e.g. the shipped prior's) with a fresh optimizer.", show_default=False)] = None,
    compile_network: Annotated[bool, typer.Option("--compile", help="torch.compile the network (faster steps on a GPU after a minute or two of compiling).")] = False,
    quiet: Quiet = False,
) -> None:
    """Train an ADM-architecture prior on random crops of photographs (CPU or GPU; bf16 where it pays)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from restore.api import resolve_device
    from restore.prior.train import check_request, train as run_training, train_config

    train_device = resolve_device(device)
    names = set(exclude.read_text().split()) if exclude else set()
    config = train_config(channels=channels, channel_mult=channel_mult, res_blocks=res_blocks, crop=crop, scales=scales,
                          batch_size=batch_size, lr=lr, seed=seed, low_t_fraction=low_t_fraction, low_t_max=low_t_max,
                          loss_weight=loss_weight, anneal_end=anneal_to or 0)
    check_request(config, minutes, anneal, steps, out, images)
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("step {task.completed:.0f}"),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=quiet) as bars:
        task = bars.add_task("training", total=anneal_to or steps, loss=float("nan"))
        state = run_training(images, out, config=config, exclude=names, steps=steps, minutes=minutes, resume=resume,
                             init_from=init_from, anneal_over_minutes=anneal, device=train_device,
                             compile_network=compile_network, on_step=lambda step, loss: bars.update(task, completed=step, loss=loss))
    say(f"{state.step} steps; EMA weights → {out} (config {out.with_suffix('.json')}, resume from {out.with_suffix('.ckpt')})")


@app.command("train-deblocker")
@user_errors
def train_deblocker(
    images: Annotated[list[Path], typer.Argument(help="Folders (or files) of training photographs.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Weights file to write (.safetensors); a resumable .ckpt and a .json go beside it.")],
    minutes: Annotated[float, typer.Option(min=0.0, help="Train for this many minutes (the learning rate anneals to zero over them).")],
    init_from: Annotated[str, typer.Option(help="The prior to start from: a name (restore priors) or a weights file of the same architecture.")] = "default",
    exclude: Annotated[Optional[Path], typer.Option(help="A text file of image file names to leave out (a validation split).", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the crops, qualities and subsamplings.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Fine-tune a prior into the JPEG deblocker of restore dejpeg (--sampler deblock --set weights=OUT): crops of the
    photographs saved as JPEG at random qualities (5–100) and subsamplings, the network trained to give back the
    photograph. Resumes from OUT's .ckpt when it exists."""
    import dataclasses

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from restore.prior.deblocker import DeblockerTrainConfig, check_deblocker_request, train_deblocker as run_training
    from restore.prior.registry import resolve

    names = set(exclude.read_text().split()) if exclude else set()
    start = resolve(init_from)[0]
    check_deblocker_request(out, images, minutes, start)
    config = dataclasses.replace(DeblockerTrainConfig(), seed=seed)
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("step {task.completed:.0f}"),
               TextColumn("loss {task.fields[loss]:.5f}"), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=quiet) as bars:
        task = bars.add_task("training", total=None, loss=float("nan"))
        steps = run_training(images, out, init_from=start, minutes=minutes, config=config, exclude=names,
                             on_step=lambda step, loss: bars.update(task, completed=step, loss=loss))
    say(f"{steps} steps; EMA weights → {out} (use them: restore dejpeg FILE.jpg --sampler deblock --set weights={out})")


if __name__ == "__main__":
    sys.exit(app())
