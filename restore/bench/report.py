"""The suite's reports: ``summary.md`` (means per task × method, best in bold, Δ PSNR to the baseline,
settings and versions) and ``{task}.png`` (measurement | baseline | each sampler | reference, first images)."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

from restore import __version__
from restore.bench.run import EXTRA_METRICS, Row, restoration_path
from restore.bench.suite import TASKS, BenchTask, Method, load_reference, make_problem
from restore.io import atomic_write, make_grid, read_image, to_display, write_image
from restore.records import nan_mean

GRID_IMAGES = 4

def mean_table(rows: Sequence[Row]) -> list[dict]:
    """Mean metrics per (task, method) over the rows that ran, in suite and method order."""
    order = list(TASKS)
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.task, r.method), []).append(r)
    table = []
    for (task, method), group in groups.items():
        ok = [r for r in group if r.status == "ok"]

        def mean(key: str) -> float:
            return nan_mean(getattr(r, key) for r in ok)

        table.append({"task": task, "method": method, "images": len(ok), "failed": sum(r.status == "failed" for r in group),
                      "na": sum(r.status == "n/a" for r in group), "psnr": mean("psnr"), "ssim": mean("ssim"),
                      "lpips": mean("lpips"), "nfe": max((r.nfe for r in ok), default=0), "seconds": mean("seconds"),
                      **{k: mean(k) for k in EXTRA_METRICS},
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
    notes = []
    if any("+best" in e["method"] or "+fit" in e["method"] for e in table):
        notes.append("Of N posterior samples per image, NAME+bestN scores the one of highest PSNR against the truth — an "
                     "oracle choice, the way DPS and DAPS report phase retrieval — and NAME+fitN the one whose measurement "
                     "fits y best (no truth needed); NAME alone is one sample.")
    aligned = sorted({e["task"] for e in table if e["task"] in TASKS and TASKS[e["task"]].align is not None})
    if aligned:
        notes.append(f"{', '.join(aligned)}: scored after undoing what the measurement cannot tell (a blind estimate's "
                     "shift, phase retrieval's 180° turn).")
    lines += ["", *notes] if notes else []
    extra = [e for e in table if any(not math.isnan(e[k]) for k in EXTRA_METRICS)]
    if extra:
        lines += ["", "What PSNR misses: inside the holes, the texture ratio (mean gradient magnitude over the truth's: 1 is as "
                  "detailed, a blur ~0.4) and PSNR; for colorization, colourfulness over the truth's (Hasler & Süsstrunk) "
                  "and the RMS chroma error (Cb, Cr on [0, 1]).", "",
                  "| task | method | texture ratio | hole PSNR | colourfulness ratio | chroma error |", "| --- | --- | --- | --- | --- | --- |"]
        for e in extra:
            lines.append(f"| {e['task']} | {e['method']} | " + " | ".join(_format(e[k], 3 if k == "chroma_error" else 2, False)
                                                                     for k in EXTRA_METRICS) + " |")
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
            columns = [to_display(problem.operator.picture(problem.y)[0], x.shape[-2:])]
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


def run_in_folder(out: Path, rows: Sequence[Row]) -> tuple[list[Path], list[BenchTask], list[Method], dict]:
    """What a bench folder was run on, read back from it (``restore report``): its images (the sorted folder up
    to the last index with a row), tasks and methods in the order of its rows, and its settings."""
    from restore.io import list_images

    settings = json.loads((out / "settings.json").read_text())
    files = list_images(settings["images"])[: max((r.index for r in rows), default=-1) + 1]
    tasks = [TASKS[name] for name in dict.fromkeys(r.task for r in rows) if name in TASKS]
    methods = [Method(label, None if label == "baseline" else label.split(":")[0].split("+")[0])
               for label in dict.fromkeys(r.method for r in rows)]
    return files, tasks, methods, settings


def write_reports(out: Path, rows: Sequence[Row], files: Sequence[Path], tasks: Sequence[BenchTask],
                  methods: Sequence[Method], size: int, settings: dict) -> Path:
    grids = write_grids(out, rows, files, tasks, methods, size)
    text = summary_markdown(rows, settings | {"versions": versions()}, grids)
    atomic_write(out / "summary.md", lambda f: f.write(text.encode()))
    return out / "summary.md"
