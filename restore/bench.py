"""The standard task suite of ``../shared/protocol.md`` (``restore bench``): problems, classical
baselines, a resumable runner over images × tasks × methods, and its reports.

Image i of a folder is its i-th file in sorted order, centre-cropped to ``size`` × ``size`` (256 in the
protocol); every random choice for image i — mask, measurement noise, sampler noise — is seeded from i.

Outputs under ``out``::

    results.csv                    one row per image × task × method, appended as each finishes
    settings.json                  what decides the numbers; a rerun with the same settings resumes
    summary.md                     means per task × method (best in bold), Δ PSNR to the baseline, versions
    {task}.png                     measurement | baseline | each sampler | reference, first images
    {task}/{method}/{image}.png    every restoration (8-bit; the metrics use the float result)
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import operators
from operators.color import rgb_to_luminance
from restore import __version__
from restore.api import generators
from restore.errors import USER_ERRORS, RestoreError
from restore.io import atomic_write, make_grid, read_image, to_display, write_image
from restore.metrics import lpips_distance, psnr, ssim
from restore.noise import GaussianNoise
from restore.samplers import draw_samples, get_sampler
from restore.samplers.defaults import defaults_for

SIGMA_Y = 0.05  # σ_y = 0.025 on [0, 1] is 0.05 on the library's [-1, 1]
PROTOCOL_SIZE = 256
GRID_IMAGES = 4

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
    noise_sigma: Callable[[Tensor, operators.LinearOperator], float] = lambda x, op: SIGMA_Y


def _ct_sigma(x: Tensor, op: operators.LinearOperator) -> float:
    return 2 * 0.005 * float(op.A((x + 1) / 2).abs().max())  # 0.005 × the [0, 1] image's sinogram maximum


TASKS: dict[str, BenchTask] = {t.name: t for t in [
    BenchTask("sr4", "superres", lambda i, n: "bicubic:4", "bicubic", bicubic_baseline),
    BenchTask("gblur", "deblur", lambda i, n: "blur:gaussian:61:3.0", "Wiener", wiener_baseline(WIENER_BALANCE["gblur"])),
    BenchTask("mblur", "deblur", lambda i, n: f"blur:levin:{i % 8 + 1}", "Wiener", wiener_baseline(WIENER_BALANCE["mblur"])),
    # 128 of 256 in the protocol; half the side for other --size values
    BenchTask("box", "inpaint", lambda i, n: f"box:{n // 2}:seed={i}", "biharmonic", biharmonic_baseline),
    BenchTask("random70", "inpaint", lambda i, n: f"random:0.7:seed={i}", "linear interpolation", linear_interpolation_baseline),
    BenchTask("denoise", "denoise", lambda i, n: "identity", "TV (Chambolle)", tv_baseline, noise_sigma=lambda x, op: 2 * 0.1),
    BenchTask("mri4x", "mri", lambda i, n: "mri:equispaced:4:center_lines=20", "zero-filled", zero_filled_baseline, luminance=True),
    BenchTask("ct60", "ct", lambda i, n: "ct:60", "FBP", fbp_baseline, luminance=True, noise_sigma=_ct_sigma),
]}


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


def parse_methods(samplers: str, baselines: bool = True, samples: int = 1) -> list[Method]:
    """The baseline (if asked) and each ``NAME[:STEPS]`` of ``samplers``, labelled ``NAME[:STEPS]+meanN``
    when scored on the mean of ``samples`` > 1 posterior samples."""
    methods = [Method("baseline")] if baselines else []
    for item in (s.strip() for s in samplers.split(",") if s.strip()):
        name, _, steps = item.partition(":")
        get_sampler(name)  # an unknown name is an error that lists the samplers
        if steps and not (steps.isdigit() and int(steps) > 0):
            raise RestoreError(f"'{item}': the steps after ':' must be a positive whole number")
        label = item if samples == 1 else f"{item}+mean{samples}"
        methods.append(Method(label, name, int(steps) if steps else None, samples))
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


def make_problem(task: BenchTask, x: Tensor, index: int, name: str = "") -> Problem:
    if task.luminance:
        x = rgb_to_luminance(x)
    op = operators.build(task.spec(index, x.shape[-1]), tuple(x.shape[1:])).to(x.dtype)
    noise = GaussianNoise(task.noise_sigma(x, op))
    with torch.no_grad():
        y = noise(op.A(x), generators(0, [index], purpose=1)[0])
    return Problem(index, name, x, op, y, noise)


# ---- running -----------------------------------------------------------------------------------------
@dataclass
class Row:
    task: str
    method: str
    image: str
    index: int
    status: str  # ok, failed, n/a (the sampler cannot take this operator)
    psnr: float = math.nan
    ssim: float = math.nan
    lpips: float = math.nan
    nfe: int = 0
    steps: int = 0
    seconds: float = math.nan
    error: str = ""
    #: the method's full setting (steps and hyperparameters, or the baseline's parameters): a row made
    #: with another setting — e.g. before a default changed — is redone when the run resumes
    config: str = ""


ROW_FIELDS = [f.name for f in fields(Row)]


@dataclass
class BenchOptions:
    out: Path
    size: int = PROTOCOL_SIZE
    seed: int = 0
    steps: int | None = None  # every sampler's steps; None: per (sampler, task) defaults or Method.steps
    batch_size: int = 1
    overwrite: bool = False
    settings: dict = field(default_factory=dict)  # prior, precision, … : what a resumed run must share


@dataclass
class BenchProgress:
    """Hooks for the CLI's progress bar; all optional."""

    on_start: Callable[[int], None] = lambda total: None
    on_work: Callable[[str], None] = lambda description: None
    on_row: Callable[[Row | None], None] = lambda row: None  # None: a row kept from an earlier run
    on_message: Callable[[str], None] = lambda text: None


def restoration_path(out: Path, task: str, method: str, image: str) -> Path:
    return out / task / method.replace(":", "-") / f"{image}.png"


def read_rows(path: Path) -> list[Row]:
    """Rows of an earlier run's results.csv, the last one per (task, method, image); a line cut short
    by an interruption is dropped."""
    if not path.is_file():
        return []
    rows: dict[tuple[str, str, str], Row] = {}
    with open(path, newline="") as f:
        for record in csv.DictReader(f):
            try:
                row = Row(
                    task=record["task"], method=record["method"], image=record["image"], index=int(record["index"]),
                    status=record["status"], psnr=float(record["psnr"]), ssim=float(record["ssim"]),
                    lpips=float(record["lpips"]), nfe=int(record["nfe"]), steps=int(record["steps"]),
                    seconds=float(record["seconds"]), error=record["error"] or "", config=record.get("config") or "",
                )
            except (KeyError, TypeError, ValueError):
                continue
            rows.pop((row.task, row.method, row.image), None)
            rows[(row.task, row.method, row.image)] = row
    return list(rows.values())


def prepare_out(options: BenchOptions) -> list[Row]:
    """Create ``out`` and return the rows to keep: an earlier run's, when its settings match."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    settings_file, results = out / "settings.json", out / "results.csv"
    settings = json.loads(json.dumps(options.settings))  # as it reads back from the file
    if settings_file.is_file() and not options.overwrite:
        previous = json.loads(settings_file.read_text())
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise RestoreError(f"{out} holds results made with other settings ({', '.join(changed)}); "
                               "use another --out, or --overwrite to start again")
        rows = read_rows(results)
    else:
        rows = []
    atomic_write(settings_file, lambda f: f.write(json.dumps(settings, indent=2).encode()))
    _write_rows(results, rows)
    return rows


def _write_rows(path: Path, rows: Sequence[Row]) -> None:
    atomic_write(path, lambda f: f.write(_csv_text(rows, header=True).encode()))


def _csv_text(rows: Sequence[Row], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS)
    if header:
        writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    return buffer.getvalue()


def run_suite(
    files: Sequence[Path],
    tasks: Sequence[BenchTask],
    methods: Sequence[Method],
    denoiser,
    options: BenchOptions,
    *,
    lpips=None,
    progress: BenchProgress = BenchProgress(),
) -> list[Row]:
    """Every image × task × method not done already; rows are appended to results.csv as they finish."""
    rows = {(r.task, r.method, r.image): r for r in prepare_out(options)}
    progress.on_start(len(files) * len(tasks) * len(methods))
    references: dict[int, Tensor] = {}
    for task in tasks:
        for method in methods:
            config = method_config(task, method, options)
            kept = {image for (t, m, image), row in rows.items() if t == task.name and m == method.label and row.config == config}
            todo = [(i, path) for i, path in enumerate(files) if path.stem not in kept]
            for _ in range(len(files) - len(todo)):
                progress.on_row(None)
            for start in range(0, len(todo), options.batch_size):
                chunk = todo[start : start + options.batch_size]
                problems, new_rows = [], []
                for index, path in chunk:
                    try:
                        if index not in references:
                            references[index] = load_reference(path, options.size)
                        problems.append(make_problem(task, references[index], index, path.stem))
                    except USER_ERRORS as err:  # this image cannot enter the task (size, kernel, …)
                        new_rows.append(Row(task.name, method.label, path.stem, index, "failed", error=str(err), config=config))
                if problems:
                    progress.on_work(f"{task.name} · {method.label} · {', '.join(p.name for p in problems)}")
                    new_rows += run_method(task, method, config, problems, denoiser, options, lpips)
                for row in new_rows:
                    rows[(row.task, row.method, row.image)] = row
                    with open(options.out / "results.csv", "a", newline="") as f:
                        f.write(_csv_text([row], header=False))
                    progress.on_row(row)
    _write_rows(options.out / "results.csv", list(rows.values()))  # one row per key, superseded rows dropped
    return list(rows.values())


def method_config(task: BenchTask, method: Method, options: BenchOptions) -> str:
    """What decides a method's numbers besides the problem: steps and hyperparameters, or the baseline's."""
    if method.sampler is None:
        return f"{task.baseline_name}; Wiener balance {WIENER_BALANCE}; TV weight {TV_WEIGHT}"
    defaults = defaults_for(method.sampler, task.family)
    mean = f"; mean of {method.samples} samples" if method.samples > 1 else ""
    return f"{method.steps or options.steps or defaults.steps} steps; {defaults.params!r}{mean}"


def run_method(task: BenchTask, method: Method, config: str, problems: list[Problem], denoiser, options: BenchOptions,
               lpips) -> list[Row]:
    """Restore a batch of problems with one method (batches split where the noise level differs);
    ``config`` is the method's :func:`method_config`, recorded in every row."""
    if method.sampler is not None and len(problems) > 1 and len({p.noise.sigma for p in problems}) > 1:
        return [row for p in problems for row in run_method(task, method, config, [p], denoiser, options, lpips)]
    start = time.time()
    steps, nfe = 0, 0
    try:
        if method.sampler is None:
            x_hat = torch.cat([task.baseline(p) for p in problems])
        else:
            info = get_sampler(method.sampler)
            if info.needs_svd and not problems[0].operator.has_svd:
                return [Row(task.name, method.label, p.name, p.index, "n/a", error=f"{method.sampler} needs an SVD",
                            config=config) for p in problems]
            defaults = defaults_for(method.sampler, task.family)
            steps = method.steps or options.steps or defaults.steps
            nfe = info.nfe(steps) * method.samples
            x_hat = solve_batch(info, denoiser, problems, steps, defaults.params, options.seed, method.samples)
    except USER_ERRORS as err:
        return [Row(task.name, method.label, p.name, p.index, "failed", error=str(err), config=config) for p in problems]
    seconds = (time.time() - start) / len(problems)
    x_hat = (x_hat.real if x_hat.is_complex() else x_hat).float().cpu().clamp(-1, 1)
    x = torch.cat([p.x for p in problems])
    values = {"psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x)}
    values["lpips"] = lpips_distance(lpips, x_hat, x) if lpips is not None else torch.full((len(problems),), math.nan)
    rows = []
    for b, p in enumerate(problems):
        write_image(restoration_path(options.out, task.name, method.label, p.name), x_hat[b])
        rows.append(Row(task.name, method.label, p.name, p.index, "ok",
                        **{k: round(float(v[b]), 4) for k, v in values.items()},
                        nfe=nfe, steps=steps, seconds=round(seconds, 3), config=config))
    return rows


def solve_batch(info, denoiser, problems: list[Problem], steps: int, params, seed: int, num_samples: int = 1) -> Tensor:
    """The posterior mean of ``num_samples`` samples (one sample by default) for a batch of problems."""
    device = denoiser.alphas_cumprod.device
    ops = [p.operator for p in problems]
    operator = ops[0] if len(ops) == 1 else type(ops[0]).stack(ops)
    y = torch.cat([p.y for p in problems]).to(device)
    gens = generators(seed, [p.index for p in problems], num_samples)
    with torch.enable_grad() if info.backprop_network else torch.no_grad():
        result = draw_samples(info.run, denoiser, operator.to(device), y, num_samples=num_samples, noise=problems[0].noise,
                              steps=steps, generator=gens, params=params)
    return result.mean


# ---- reports -----------------------------------------------------------------------------------------
def mean_table(rows: Sequence[Row]) -> list[dict]:
    """Mean metrics per (task, method) over the rows that ran, in suite and method order."""
    order = list(TASKS)
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.task, r.method), []).append(r)
    table = []
    for (task, method), group in groups.items():
        ok = [r for r in group if r.status == "ok"]

        def mean(key: str, items=ok) -> float:
            values = [getattr(r, key) for r in items if not math.isnan(getattr(r, key))]
            return sum(values) / len(values) if values else math.nan

        table.append({"task": task, "method": method, "images": len(ok), "failed": sum(r.status == "failed" for r in group),
                      "na": sum(r.status == "n/a" for r in group), "psnr": mean("psnr"), "ssim": mean("ssim"),
                      "lpips": mean("lpips"), "nfe": max((r.nfe for r in ok), default=0), "seconds": mean("seconds"),
                      "images_set": {r.image for r in ok}, "rows": ok})
    table.sort(key=lambda e: (order.index(e["task"]) if e["task"] in order else len(order), e["method"] != "baseline", e["method"]))
    return table


def _format(value: float, digits: int, best: bool) -> str:
    if math.isnan(value):
        return "–"
    text = f"{value:.{digits}f}"
    return f"**{text}**" if best else text


def summary_markdown(rows: Sequence[Row], settings: dict, grids: dict[str, list[str]]) -> str:
    table = mean_table(rows)
    lines = ["# restore bench", "", "Mean over images per task and method; best per task in **bold**. "
             "Δ PSNR: the method minus the classical baseline on the same images.", "",
             "| task | method | images | PSNR | Δ PSNR | SSIM | LPIPS | NFE | s/image |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_task: dict[str, list[dict]] = {}
    for entry in table:
        by_task.setdefault(entry["task"], []).append(entry)
    for task, entries in by_task.items():
        ran = [e for e in entries if e["images"]]
        best_psnr = max((e["psnr"] for e in ran), default=math.nan)
        best_ssim = max((e["ssim"] for e in ran), default=math.nan)
        best_lpips = min((e["lpips"] for e in ran if not math.isnan(e["lpips"])), default=math.nan)
        baseline = next((e for e in entries if e["method"] == "baseline"), None)
        for e in entries:
            name = f"baseline ({TASKS[task].baseline_name})" if e["method"] == "baseline" and task in TASKS else e["method"]
            if not e["images"]:
                reason = "n/a (needs an SVD)" if e["na"] else f"failed on {e['failed']} images (see results.csv)"
                lines.append(f"| {task} | {name} | 0 | {reason} | | | | | |")
                continue
            delta = "–"
            if baseline is not None and e is not baseline:
                same = [r for r in baseline["rows"] if r.image in e["images_set"]]
                if len(same) == e["images"]:
                    delta = f"{e['psnr'] - sum(r.psnr for r in same) / len(same):+.2f}"
            failed = f" ({e['failed']} failed)" if e["failed"] else ""
            lines.append(f"| {task} | {name} | {e['images']}{failed} | {_format(e['psnr'], 2, e['psnr'] == best_psnr)} | {delta} | "
                         f"{_format(e['ssim'], 4, e['ssim'] == best_ssim)} | {_format(e['lpips'], 4, e['lpips'] == best_lpips)} | "
                         f"{e['nfe']} | {e['seconds']:.2f} |")
    if grids:
        lines += ["", "## Pictures", ""]
        for task, columns in grids.items():
            lines += [f"`{task}.png` — columns: {' | '.join(columns)}", "", f"![{task}]({task}.png)", ""]
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=2), "```", ""]
    return "\n".join(lines)


def versions() -> dict:
    return {"restore": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {torch.get_num_threads()} threads"}


def write_grids(out: Path, rows: Sequence[Row], files: Sequence[Path], tasks: Sequence[BenchTask],
                methods: Sequence[Method], size: int) -> dict[str, list[str]]:
    """``{task}.png`` for the first GRID_IMAGES images that some method restored (an image that could not
    be read or cropped has only failed rows): measurement | methods | reference; returns the column names."""
    ok = {(r.task, r.method, r.image) for r in rows if r.status == "ok"}
    grids = {}
    for task in tasks:
        restored = [(i, p) for i, p in enumerate(files) if any((task.name, m.label, p.stem) in ok for m in methods)]
        restored = restored[:GRID_IMAGES]
        shown = [m for m in methods if any((task.name, m.label, p.stem) in ok for _, p in restored)]
        if not shown:
            continue
        lines = []
        for index, path in restored:
            problem = make_problem(task, load_reference(path, size), index, path.stem)
            x = problem.x[0]
            columns = [to_display(problem.y[0], x.shape[-2:])]
            for m in shown:
                file = restoration_path(out, task.name, m.label, path.stem)
                columns.append(read_image(file).pixels if file.is_file() else torch.full_like(x, -1))
            columns.append(x)
            lines.append(make_grid(columns))
        gap = torch.ones(3, 4, lines[0].shape[-1])
        picture = torch.cat([part for line in lines for part in (line, gap)][:-1], dim=1)
        write_image(out / f"{task.name}.png", picture)
        grids[task.name] = ["measurement"] + [f"baseline ({task.baseline_name})" if m.sampler is None else m.label for m in shown] + ["reference"]
    return grids


def write_reports(out: Path, rows: Sequence[Row], files: Sequence[Path], tasks: Sequence[BenchTask],
                  methods: Sequence[Method], size: int, settings: dict) -> Path:
    grids = write_grids(out, rows, files, tasks, methods, size)
    text = summary_markdown(rows, settings | {"versions": versions()}, grids)
    atomic_write(out / "summary.md", lambda f: f.write(text.encode()))
    return out / "summary.md"
