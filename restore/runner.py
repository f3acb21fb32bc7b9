"""Running a task over many inputs: batching, resuming, writing outputs, metrics and reports.

Outputs of input ``photos/cat.jpg`` under ``--out restored/``; the restorations alone at the top, so
that ``restored/`` holds the same names as ``photos/`` (``restore metrics restored/ photos/``), and
every side file in a folder of its kind, under the input's own name::

    restored/cat.png                      the restoration (posterior mean when --num-samples > 1)
    restored/measurement/cat.png          the measurement when simulated, in the form the command reads
                                          (.npy k-space or sinogram for mri / ct): restore it again with it
    restored/samples/1/cat.png, 2/, ...   posterior samples (--num-samples > 1)
    restored/std/cat.png, cat.npy         their per-pixel standard deviation (the uncertainty map)
    restored/grid/cat.png                 --save-grid;  restored/progress/cat.gif  --save-progress
    restored/report.csv, report.json      per-image metrics and the exact settings
    restored/.records/cat.json            what resuming needs: this image's record, plan and outputs

A folder run resumes: an image whose record exists with the same settings and plan is skipped; a
record made with others stops the run (use --overwrite, or another --out). Nothing restore did not
write is ever overwritten: not an input, mask or reference, and not a file it finds in --out without
a record of its own.
"""

from __future__ import annotations

import csv
import glob
import io as _io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from restore import __version__
from restore.errors import Interrupted, RestoreError
from restore.figures import STD_FULL_SCALE, grid, kernel_picture, uncertainty_image
from restore.io import atomic_write, make_folder, remove_stale_temporaries, save_array, save_arrays, write_gif, write_image
from restore.metrics import compute_metrics
from restore.plan import Plan, Request, make_plan, solve
from restore.records import as_float, check_same_settings, failure_text, json_text, nan_mean
from restore.shard import Shard, claim, release, stale
from restore.tasks import Item, Prepare

RECORDS = ".records"


@dataclass
class Record:
    """One input's outcome: what the report tables list."""

    name: str
    source: str
    status: str  # "ok", "failed", "skipped" (done by an earlier run)
    output: str = ""
    error: str = ""
    psnr: float = math.nan
    ssim: float = math.nan
    lpips: float = math.nan
    seconds: float = math.nan
    nfe: int = 0
    operator: str = ""
    sampler: str = ""
    steps: int = 0
    #: the plan it ran with (``Plan.to_dict()``): sampler, steps, hyperparameters, samples, seed, NFE
    plan: dict = field(default_factory=dict)
    #: every file written for it (kind → path), which a later run may replace
    outputs: dict = field(default_factory=dict)
    #: what was converted or assumed about the input (e.g. a k-space layout)
    notes: str = ""
    #: the blur kernel estimated from the input (blind deblurring; rows of floats summing to 1), else None
    kernel: list | None = None

    @classmethod
    def from_dict(cls, values: dict) -> Record:
        """A record as a record file stores it (missing metrics as null)."""
        return cls(**{k: as_float(v) if k in ("psnr", "ssim", "lpips", "seconds") else v for k, v in values.items()})


@dataclass
class RunOptions:
    task: str
    out: Path
    request: Request
    #: what decides the results besides the plan and the inputs: prior, device, precision, and the task's
    #: own options (mask, kernel, noise, ...); a folder made with other settings is not resumed into
    settings: dict = field(default_factory=dict)
    batch_size: int = 1
    overwrite: bool = False
    save_grid: bool = False
    save_progress: bool = False
    #: files and folders the command reads besides the inputs (masks, references, kernels): never written
    reads: tuple[Path, ...] = ()
    #: this process's images (image i when i mod N == I): see restore.shard
    shard: Shard = Shard()


@dataclass
class Progress:
    """Hooks for the CLI's progress bars; all optional."""

    on_image_start: Callable[[str], None] = lambda name: None
    on_image_done: Callable[[Record], None] = lambda record: None
    on_steps: Callable[[int, int], None] = lambda step, total: None
    on_message: Callable[[str], None] = lambda text: None


def settings_record(options: RunOptions, denoiser_info: dict) -> dict:
    return json.loads(json_text({"task": options.task, **options.settings, "prior_info": denoiser_info,
                                 "version": __version__}))  # as it reads back from a record


def default_out(images: str) -> Path:
    """A new 'restored' folder beside the input (a file's folder, a folder's parent, a glob's folder)."""
    path = Path(images)
    base = path.parent if path.is_file() or glob.has_magic(images) else path.resolve().parent
    return base / "restored"


def output_paths(out: Path, name: str, num_samples: int = 1) -> dict[str, Path]:
    """Every file a folder run may write for the input named ``name`` (see the module docstring)."""
    paths = {
        "restoration": out / f"{name}.png",
        "record": out / RECORDS / f"{name}.json",
        "measurement": out / "measurement" / f"{name}.png",
        "measurement_array": out / "measurement" / f"{name}.npy",
        "measurement_arrays": out / "measurement" / f"{name}.npz",
        "measurement_jpeg": out / "measurement" / f"{name}.jpg",
        "std": out / "std" / f"{name}.png",
        "std_array": out / "std" / f"{name}.npy",
        "grid": out / "grid" / f"{name}.png",
        "kernel": out / "kernel" / f"{name}.png",
        "kernel_array": out / "kernel" / f"{name}.npy",
        "progress": out / "progress" / f"{name}.gif",
    }
    return paths | {f"sample{k}": out / "samples" / str(k) / f"{name}.png" for k in range(1, num_samples + 1)}


def being_written(record: Path) -> bool:
    """Whether a live restore process has claimed the image whose record is ``record`` (restore.shard)."""
    claim_file = record.with_suffix(".claim")
    return claim_file.exists() and not stale(claim_file)


def check_outputs(out: Path, inputs: Sequence[Path], reads: Sequence[Path] = (), num_samples: int = 1) -> None:
    """Refuse, before any work, an output folder whose files would overwrite anything restore did not write.

    ``reads``: the other files and folders the command reads (masks, references, kernels). An input's
    folder or a folder read is never an output folder (outputs would mix with the inputs and be read as
    inputs next time); no output may be a file read; a file already in ``out`` may be replaced only when
    a record of restore's says it wrote it.
    """
    if out.exists() and not out.is_dir():
        raise RestoreError(f"--out {out} is a file; give a folder for the outputs")
    target = out.resolve()
    folders = {p.resolve().parent for p in inputs} | {r.resolve() for r in reads if r.is_dir()}
    if target in folders:
        raise RestoreError(f"--out {out} is a folder restore reads from; outputs there would mix with (and could "
                           "overwrite) its files: choose another folder")
    read_files = {p.resolve() for p in [*inputs, *reads] if p.is_file()}
    check_unique_names(inputs)
    for path in inputs:
        paths = output_paths(out, path.stem, num_samples)
        if being_written(paths["record"]):
            continue  # another restore process holds it (a shard of this run): its record follows its files
        ours = written_by_restore(paths["record"])
        for kind, file in paths.items():
            if file.resolve() in read_files:
                raise RestoreError(f"--out {out} would overwrite {file}, which this command reads; choose another folder")
            if file.exists() and kind != "record" and file.name not in ours.get(kind, ()) and file.is_file():
                if paths["record"].exists() and not ours:
                    raise RestoreError(f"{file} exists and its record {paths['record']} is damaged, so restore cannot tell "
                                       "it wrote the file; move one of them away or choose another --out")
                raise RestoreError(f"{file} exists and restore has no record of writing it; move it away or choose another --out")


def written_by_restore(record_path: Path) -> dict[str, list[str]]:
    """The outputs a record says restore wrote (kind → file names); empty when there is no readable record."""
    try:
        outputs = json.loads(record_path.read_text())["record"]["outputs"]
        return {kind: [Path(name).name] for kind, name in outputs.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def check_unique_names(inputs: Sequence[Path]) -> None:
    """Outputs are named after the inputs' stems, so two inputs may not share one."""
    seen: dict[str, Path] = {}
    for path in inputs:
        if path.stem in seen:
            raise RestoreError(f"{seen[path.stem]} and {path} would both be written as {path.stem}.png; rename one")
        seen[path.stem] = path


def previous_record(paths: dict[str, Path], settings: dict, plan: Plan, overwrite: bool) -> Record | None:
    """The record of an earlier run with the same settings and plan, or None if the image must be (re)done."""
    record_path = paths["record"]
    if overwrite or not record_path.exists():
        return None
    try:
        saved = json.loads(record_path.read_text())
        check_same_settings({**saved["settings"], "plan": saved["record"]["plan"]}, {**settings, "plan": plan.to_dict()},
                            record_path.parent.parent)
        record = Record.from_dict(saved["record"])
    except (ValueError, KeyError, TypeError):  # a damaged record (an interrupted write of an old version): redo
        return None
    if record.status != "ok" or not paths["restoration"].exists():
        return None  # failed or incomplete before: try again
    record.status = "skipped"
    return record


def run(
    inputs: Sequence[Path],
    prepare: Prepare,
    denoiser,
    options: RunOptions,
    *,
    lpips=None,
    progress: Progress = Progress(),
) -> list[Record]:
    """Restore every input; a failing image is recorded with its reason and the run goes on."""
    out = options.out
    check_outputs(out, inputs, options.reads, options.request.num_samples)
    make_folder(out)
    remove_stale_temporaries(out)
    settings = settings_record(options, getattr(denoiser, "info", {}))
    records: dict[int, Record] = {}
    pending: list[tuple[Item, Plan]] = []
    claims: dict[int, Path] = {}

    def done(index: int, record: Record) -> None:
        records[index] = record
        release(claims.pop(index, None))
        progress.on_image_done(record)

    def flush() -> None:
        if not pending:
            return
        for (item, _), record in zip(pending, restore_batch(pending, denoiser, options, settings, lpips, progress)):
            done(item.index, record)
        pending.clear()

    try:
        for index, path in options.shard.items(inputs):
            try:
                item = prepare(path, index)
                plan = make_plan(options.task, options.request, item.operator, kind=item.kind)
            except Exception as err:  # noqa: BLE001 - one image's problem is that image's failure
                done(index, Record(path.stem, str(path), "failed", error=failure_text(err)))
                continue
            paths = output_paths(out, item.name)
            previous = previous_record(paths, settings, plan, options.overwrite)
            if previous is not None:
                done(index, previous)
                continue
            if (held := claim(paths["record"])) is None:
                continue  # another process is restoring it
            claims[index] = held
            if item.estimate is not None:
                try:
                    run_estimate(item, denoiser, progress)
                except Exception as err:  # noqa: BLE001 - as above
                    done(index, Record(path.stem, str(path), "failed", error=failure_text(err), plan=plan.to_dict()))
                    continue
            if pending and (item.shape_key != pending[0][0].shape_key or plan != pending[0][1]):
                flush()
            pending.append((item, plan))
            if len(pending) >= options.batch_size:
                flush()
        flush()
    except KeyboardInterrupt:
        for held in claims.values():
            release(held)
        kept = [records[i] for i in sorted(records)]
        write_reports(out, folder_records(out, settings, kept), settings)
        restored = sum(r.status in ("ok", "skipped") for r in kept)
        raise Interrupted(f"{restored} of {len(inputs)} images are restored and kept in {out} (report written); "
                          "run the same command again to resume") from None
    ordered = [records[i] for i in sorted(records)]
    write_reports(out, folder_records(out, settings, ordered), settings)
    return ordered


def run_estimate(item: Item, denoiser, progress: Progress) -> None:
    """The item's step that needs the prior (blind deblurring's kernel), timed."""
    progress.on_image_start(f"{item.name}: estimating the blur kernel")
    start = time.time()
    with torch.no_grad():
        item.estimate(denoiser)
    item.estimate_seconds = time.time() - start


def report_folder(out: Path) -> list[Record]:
    """Rewrite report.csv / report.json from every record in ``out`` (``restore report``; a folder a crashed or
    partial run left, or one that several processes wrote): the records of the newest settings. Returns them."""
    newest: tuple[float, dict] | None = None
    for path in (out / RECORDS).glob("*.json"):
        try:
            settings = json.loads(path.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if newest is None or path.stat().st_mtime > newest[0]:
            newest = (path.stat().st_mtime, settings)
    if newest is None:
        raise RestoreError(f"{out} holds no records of restore's (no {RECORDS}/*.json)")
    records = folder_records(out, newest[1], [])
    for record in records:
        record.status = "ok"  # as each was recorded
    records.sort(key=lambda r: r.name)
    write_reports(out, records, newest[1])
    return records


def folder_records(out: Path, settings: dict, current: Sequence[Record]) -> list[Record]:
    """This run's records, then those of every other image the folder holds from earlier runs with the same
    settings (a report covers the whole folder, not only the last command's images)."""
    names = {r.name for r in current}
    earlier = []
    for path in sorted((out / RECORDS).glob("*.json")):
        try:
            saved = json.loads(path.read_text())
            if path.stem in names or saved["settings"] != settings or saved["record"]["status"] != "ok":
                continue
            record = Record.from_dict(saved["record"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged record is not reported; its image is redone when asked for again
        record.status = "skipped"
        earlier.append(record)
    return [*current, *earlier]


def restore_batch(batch: list[tuple[Item, Plan]], denoiser, options: RunOptions, settings: dict, lpips,
                  progress: Progress) -> list[Record]:
    """Solve one batch of same-shape items with one plan and write their outputs. When the batch fails,
    each image is tried alone, so one bad image fails only itself."""
    items, plan = [item for item, _ in batch], batch[0][1]
    progress.on_image_start(", ".join(item.name for item in items))
    try:
        return solve_and_write(items, plan, denoiser, options, settings, lpips, progress)
    except Exception as err:  # noqa: BLE001 - the images' failure, not the run's
        if len(items) > 1:
            return [record for one in batch for record in restore_batch([one], denoiser, options, settings, lpips, progress)]
        return [Record(items[0].name, str(items[0].source), "failed", error=failure_text(err), operator=items[0].operator.spec,
                       sampler=plan.sampler, steps=plan.steps, plan=plan.to_dict())]


def solve_and_write(items: list[Item], plan: Plan, denoiser, options: RunOptions, settings: dict, lpips,
                    progress: Progress) -> list[Record]:
    device = denoiser.alphas_cumprod.device
    operator = items[0].operator if len(items) == 1 else type(items[0].operator).stack([i.operator for i in items])
    y = torch.cat([item.y for item in items]).to(device)
    frames: list[torch.Tensor] = []

    def callback(info: dict) -> None:
        progress.on_steps(info["step"] + 1, info["total"])
        if options.save_progress and (info["step"] % max(1, info["total"] // 40) == 0 or info["step"] + 1 == info["total"]):
            frames.append(info["x0"].detach().float().clamp(-1, 1).cpu())

    start = time.time()
    result = solve(plan, denoiser, operator, y, noise=items[0].noise, indices=[item.index for item in items], callback=callback)
    seconds = (time.time() - start) / len(items)
    records = []
    for b, item in enumerate(items):
        restoration = result.mean[b].float().cpu().clamp(-1, 1)  # what the saved image holds
        if item.finish is not None:
            restoration, note = item.finish(restoration)
            item.notes = [*item.notes, note] if note else item.notes
        record = Record(
            item.name, str(item.source), "ok", seconds=round(seconds + item.estimate_seconds, 3), nfe=plan.nfe + item.estimate_nfe,
            operator=item.operator.spec, sampler=plan.sampler, steps=plan.steps, plan=plan.to_dict(),
            notes="; ".join(item.notes),
            kernel=None if item.estimated_kernel is None else [[round(v, 6) for v in row] for row in item.estimated_kernel.tolist()],
        )
        metrics = None
        if item.reference is not None:
            metrics = compute_metrics(restoration[None], item.reference.float(), lpips=lpips)
            record.psnr, record.ssim, record.lpips = (round(float(metrics[k]), 4) for k in ("psnr", "ssim", "lpips"))
        written = write_outputs(item, restoration, result, b, options, frames, metrics)
        record.output = str(written["restoration"])
        record.outputs = {kind: str(path) for kind, path in written.items()}
        payload = json_text({"settings": settings, "record": asdict(record)})
        atomic_write(output_paths(options.out, item.name)["record"], lambda f, text=payload: f.write(text.encode()))
        records.append(record)
    return records


def result_grid(item: Item, restoration: torch.Tensor, std: torch.Tensor | None, metrics: dict | None) -> torch.Tensor:
    """measurement | restoration (its PSNR / SSIM) | reference | uncertainty with its colour bar, all at the restoration's size."""
    panels, labels = [item.operator.picture(item.y)[0].detach().cpu(), restoration], ["measurement", "restoration"]
    captions = ["", f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}" if metrics else ""]
    if item.reference is not None:
        panels.append(item.reference[0].float())
        labels.append("reference")
        captions.append("")
    if item.estimated_kernel is not None:
        panels.append(kernel_picture(item.estimated_kernel))
        labels.append("estimated kernel")
        captions.append(f"{item.estimated_kernel.shape[-1]}x{item.estimated_kernel.shape[-2]} px")
    if std is not None:
        panels.append(uncertainty_image(std.float().cpu()))
        labels.append("uncertainty (std)")
        captions.append(f"0 to {STD_FULL_SCALE:g} of the pixel range")
    return grid(panels, labels, captions, size=tuple(restoration.shape[-2:]), bar=std is not None)


def write_outputs(item: Item, restoration: torch.Tensor, result, b: int, options: RunOptions, frames: list,
                  metrics: dict | None = None) -> dict[str, Path]:
    """Write the restoration and its side files; returns what was written (kind → path)."""
    num_samples = result.samples.shape[0]
    paths = output_paths(options.out, item.name, num_samples)
    alpha = None if item.alpha is None else item.alpha[0] if item.alpha.dim() == 4 else item.alpha
    written = {"restoration": paths["restoration"]}
    write_image(paths["restoration"], restoration, alpha=alpha, bit_depth=item.bit_depth)
    if num_samples > 1:
        for k in range(1, num_samples + 1):
            written[f"sample{k}"] = paths[f"sample{k}"]
            write_image(paths[f"sample{k}"], result.samples[k - 1, b].float().cpu(), bit_depth=item.bit_depth)
        std = result.std[b].float().cpu()
        written |= {"std": paths["std"], "std_array": paths["std_array"]}
        write_image(paths["std"], uncertainty_image(std))  # colour scale: 0 (black) → STD_FULL_SCALE (pale yellow)
        save_array(paths["std_array"], (std / 2).numpy())  # exact, on the [0, 1] pixel scale
    saved = item.saved_measurement
    if isinstance(saved, bytes):  # a JPEG file, exactly as encoded
        written["measurement_jpeg"] = paths["measurement_jpeg"]
        atomic_write(paths["measurement_jpeg"], lambda f: f.write(saved))
    elif isinstance(saved, torch.Tensor):
        written["measurement"] = paths["measurement"]
        write_image(paths["measurement"], saved.float().clamp(-1, 1), bit_depth=16)  # 16-bit: restores again to the same result
    elif isinstance(saved, dict):
        written["measurement_arrays"] = paths["measurement_arrays"]
        save_arrays(paths["measurement_arrays"], saved)
    elif saved is not None:
        written["measurement_array"] = paths["measurement_array"]
        save_array(paths["measurement_array"], saved)
    if item.estimated_kernel is not None:
        written |= {"kernel": paths["kernel"], "kernel_array": paths["kernel_array"]}
        save_array(paths["kernel_array"], item.estimated_kernel.numpy())  # exact: --kernel kernel/NAME.npy
        write_image(paths["kernel"], kernel_picture(item.estimated_kernel), bit_depth=16)  # peak white; also a --kernel
    if options.save_grid:
        written["grid"] = paths["grid"]
        write_image(paths["grid"], result_grid(item, restoration, result.std[b] if num_samples > 1 else None, metrics))
    if options.save_progress and frames:
        written["progress"] = paths["progress"]
        write_gif(paths["progress"], [f[b] for f in frames])
    return written


COLUMNS = ["name", "status", "psnr", "ssim", "lpips", "seconds", "nfe", "sampler", "steps", "operator", "output", "error", "source"]


def write_reports(out: Path, records: list[Record], settings: dict) -> None:
    """report.csv (one row per image, then the means) and report.json (settings, rows, means)."""
    rows = [asdict(r) for r in records]
    means = summary(records)
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    if means:
        writer.writerow({"name": "mean", "status": f"{means['images']} images", **{k: means[k] for k in ("psnr", "ssim", "lpips", "seconds")}})
    atomic_write(out / "report.csv", lambda f: f.write(buffer.getvalue().encode()))
    payload = json_text({"settings": settings, "images": rows, "mean": means})
    atomic_write(out / "report.json", lambda f: f.write(payload.encode()))


def summary(records: list[Record]) -> dict:
    """Means over the images that have each metric (NaN-free), and counts by status."""
    done = [r for r in records if r.status in ("ok", "skipped")]
    means = {key: round(nan_mean(getattr(r, key) for r in done), 4) for key in ("psnr", "ssim", "lpips", "seconds")}
    return {"images": len(done), "failed": sum(r.status == "failed" for r in records), **means}
