"""Running the suite: every image × task × method not done already, resumable, one row per result.

Outputs under ``out``: ``results.csv`` (one row per image × task × method, appended as each finishes),
``settings.json`` (what decides the numbers; a rerun with the same settings resumes) and
``{task}/{method}/{image}.png`` (every restoration, 8-bit; the metrics use the float result).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor

import operators

from restore.bench.suite import (PROTOCOL_SIZE, TV_WEIGHT, WIENER_BALANCE, BenchTask, Method, Problem, blind_operator, load_reference,
                                 best_fit, make_problem, method_plan, scored_estimate, solve_problems)
from restore.blind import estimate_nfe, kernel_size_for
from restore.errors import USER_ERRORS, RestoreError
from restore.io import atomic_write, write_image
from restore.metrics import chroma_error, colourfulness, hole_psnr, lpips_distance, psnr, ssim, texture_ratio
from restore.plan import Request, make_plan
from restore.records import check_same_settings, failure_text, json_text
from restore.samplers import get_sampler
from restore.shard import Shard

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
    #: inpainting: detail inside the holes over the truth's (restore.metrics.texture_ratio), and PSNR there
    texture: float = math.nan
    hole_psnr: float = math.nan
    #: colorization: colourfulness over the truth's (Hasler & Süsstrunk 2003), and the chroma's RMS error
    colourfulness: float = math.nan
    chroma_error: float = math.nan


#: the measures only some tasks have
EXTRA_METRICS = ("texture", "hole_psnr", "colourfulness", "chroma_error")
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
    #: this process's images (image i when i mod N == I: restore.shard); with N > 1 its rows go to its own
    #: results.partIofN.csv, which merge_results folds into results.csv
    shard: Shard = Shard()


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
                    **{k: float(record.get(k) or "nan") for k in EXTRA_METRICS},
                )
            except (KeyError, TypeError, ValueError):
                continue
            rows.pop((row.task, row.method, row.image), None)
            rows[(row.task, row.method, row.image)] = row
    return list(rows.values())


def check_out(out: Path, images: Path) -> None:
    """Refuse a results folder that is the images' folder, a file, or a folder of other files than a bench run's."""
    if out.exists() and not out.is_dir():
        raise RestoreError(f"--out {out} is a file; give a folder for the results")
    if out.resolve() == Path(images).resolve():
        raise RestoreError(f"--out {out} is the images folder: the results would be read as images next time; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "settings.json").is_file():
        raise RestoreError(f"--out {out} already holds files that are not a restore bench run's; choose another folder")


def prepare_out(options: BenchOptions) -> list[Row]:
    """Create ``out`` and return the rows to keep: an earlier run's (every shard's), when its settings match."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    settings_file, results = out / "settings.json", out / "results.csv"
    settings = json.loads(json_text(options.settings))  # as it reads back from the file
    sharded = options.shard.count > 1
    if sharded and options.overwrite:
        raise RestoreError("--overwrite restarts the whole folder: run it in one process (no --shard, no torchrun)")
    if settings_file.is_file() and not options.overwrite:
        check_same_settings(json.loads(settings_file.read_text()), settings, out)
        rows = result_rows(out)
    else:
        rows = []
    atomic_write(settings_file, lambda f: f.write(json_text(settings).encode()))  # shards write the same text
    if not sharded:
        _write_rows(results, rows)
    return rows


def part_path(out: Path, shard: Shard) -> Path:
    """Where a process appends its rows: results.csv alone, or its shard's part."""
    return out / "results.csv" if shard.count == 1 else out / f"results.part{shard.index}of{shard.count}.csv"


def result_rows(out: Path) -> list[Row]:
    """Every row the folder holds, results.csv and the shards' parts, the last one per (task, method, image)."""
    rows: dict[tuple[str, str, str], Row] = {}
    for path in [out / "results.csv", *sorted(out.glob("results.part*.csv"))]:
        for row in read_rows(path):
            rows.pop((row.task, row.method, row.image), None)
            rows[(row.task, row.method, row.image)] = row
    return list(rows.values())


def merge_results(out: Path) -> list[Row]:
    """Fold the shards' parts into results.csv (rank 0 after every rank finished, or ``restore report``)."""
    rows = result_rows(out)
    _write_rows(out / "results.csv", rows)
    for part in out.glob("results.part*.csv"):
        part.unlink()
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
    mine = [(i, path) for i, path in options.shard.items(files)]
    progress.on_start(len(mine) * len(tasks) * len(methods))
    written = part_path(options.out, options.shard)
    references: dict[int, Tensor] = {}
    for task in tasks:
        for method in methods:
            config = method_config(task, method, options)
            kept = {image for (t, m, image), row in rows.items() if t == task.name and m == method.label and row.config == config}
            todo = [(i, path) for i, path in mine if path.stem not in kept]
            for _ in range(len(mine) - len(todo)):
                progress.on_row(None)
            for start in range(0, len(todo), options.batch_size):
                chunk = todo[start : start + options.batch_size]
                problems, new_rows = [], []
                for index, path in chunk:
                    try:
                        if index not in references:
                            references[index] = load_reference(path, options.size)
                        problems.append(make_problem(task, references[index], index, path.stem))
                    except Exception as err:  # noqa: BLE001 - this image cannot enter the task (size, kernel, …)
                        new_rows.append(Row(task.name, method.label, path.stem, index, "failed", error=failure_text(err), config=config))
                if problems:
                    progress.on_work(f"{task.name} · {method.label} · {', '.join(p.name for p in problems)}")
                    new_rows += run_method(task, method, config, problems, denoiser, options, lpips)
                for row in new_rows:
                    rows[(row.task, row.method, row.image)] = row
                    with open(written, "a", newline="") as f:
                        f.write(_csv_text([row], header=not f.tell()))
                    progress.on_row(row)
    if options.shard.count == 1:
        _write_rows(written, list(rows.values()))  # one row per key, superseded rows dropped
    return list(rows.values())


def method_config(task: BenchTask, method: Method, options: BenchOptions) -> str:
    """What decides a method's numbers besides the problem: its plan (sampler, steps, hyperparameters,
    samples), or the baseline's parameters."""
    if method.sampler is None:
        return f"{task.baseline_name}; Wiener balance {WIENER_BALANCE}; TV weight {TV_WEIGHT}"
    request = Request(method.sampler, method.steps or options.steps, (), method.samples, options.seed)
    channels = 1 if task.luminance else 3
    operator = operators.build(task.spec(0, options.size), (channels, options.size, options.size))  # its kind decides
    try:
        plan = make_plan(task.family, request, operator, kind="blind" if task.hidden_kernel else None)
    except USER_ERRORS:  # a sampler this task's operator cannot take: its rows are n/a
        plan = make_plan(task.family, request)
    return json.dumps(plan.to_dict(), sort_keys=True)


def run_method(task: BenchTask, method: Method, config: str, problems: list[Problem], denoiser, options: BenchOptions,
               lpips) -> list[Row]:
    """Restore a batch of problems with one method (batches split where the noise level differs);
    ``config`` is the method's :func:`method_config`, recorded in every row. A failing batch is retried
    image by image, so one bad problem fails only its own row."""
    if len(problems) > 1 and (method.sampler is not None and len({p.noise.sigma for p in problems}) > 1):
        return [row for p in problems for row in run_method(task, method, config, [p], denoiser, options, lpips)]
    start = time.time()
    steps, nfe = 0, 0
    try:
        if method.sampler is None:
            samples = torch.cat([task.baseline(p) for p in problems])[None]
        else:
            if method.pick is best_fit and task.hidden_kernel:
                return [Row(task.name, method.label, p.name, p.index, "n/a", config=config,
                            error="the best fit needs the operator, which this task hides") for p in problems]
            if get_sampler(method.sampler).needs_svd and not problems[0].operator.has_svd:
                return [Row(task.name, method.label, p.name, p.index, "n/a", error=f"{method.sampler} needs an SVD",
                            config=config) for p in problems]
            plan = method_plan(task, method, problems[0], options.steps, options.seed)
            steps, nfe = plan.steps, plan.nfe
            if task.hidden_kernel:  # each problem on the kernel estimated from its own measurement
                nfe += estimate_nfe(tuple(problems[0].y.shape[-2:]), kernel_size_for(problems[0].y.shape))
                samples = torch.cat([solve_problems(plan, denoiser, [dataclasses.replace(p, operator=blind_operator(denoiser, p))]).samples
                                     for p in problems], dim=1)
            else:
                samples = solve_problems(plan, denoiser, problems).samples
    except Exception as err:  # noqa: BLE001 - the problems' failure, not the run's
        if len(problems) > 1:
            return [row for p in problems for row in run_method(task, method, config, [p], denoiser, options, lpips)]
        return [Row(task.name, method.label, p.name, p.index, "failed", error=failure_text(err), config=config) for p in problems]
    seconds = (time.time() - start) / len(problems)
    x = torch.cat([p.x for p in problems])
    x_hat = scored_estimate(task, method, samples, problems)
    values = {"psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x)}
    values["lpips"] = lpips_distance(lpips, x_hat, x) if lpips is not None else torch.full((len(problems),), math.nan)
    values |= task_measures(task.family, [p.operator for p in problems], x_hat, x)
    rows = []
    for b, p in enumerate(problems):
        write_image(restoration_path(options.out, task.name, method.label, p.name), x_hat[b])
        rows.append(Row(task.name, method.label, p.name, p.index, "ok",
                        **{k: round(float(v[b]), 4) for k, v in values.items()},
                        nfe=nfe, steps=steps, seconds=round(seconds, 3), config=config))
    return rows


def task_measures(family: str, operators: list, x_hat: Tensor, x: Tensor) -> dict[str, Tensor]:
    """The measures PSNR misses, per image of the batch (image b measured by ``operators[b]``): texture and PSNR in
    the holes for inpainting, colourfulness and chroma for colorization; nothing for the other tasks."""
    if family == "inpaint":
        missing = torch.cat([op.mask[:, :1] < 0.5 for op in operators])
        return {"texture": texture_ratio(x_hat, x, missing), "hole_psnr": hole_psnr(x_hat, x, missing)}
    if family == "colorize":
        return {"colourfulness": colourfulness(x_hat) / colourfulness(x).clamp_min(1e-9), "chroma_error": chroma_error(x_hat, x)}
    return {}
