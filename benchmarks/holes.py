"""Large holes and colour: the measures PSNR misses, of inpainting and colourisation methods on tuning images, with grids.

    python benchmarks/holes.py --first 40 --count 4 --methods "diffpir" "ddnm:ddnm:100" "dps:dps:100" --out runs/holes

Each method is ``LABEL[:SAMPLER[:STEPS[:NAME=VALUE+NAME=VALUE...]]]`` (SAMPLER defaults to LABEL; ``default``: the
task's choice for the mask, as ``restore inpaint`` makes it; the option ``keep_cast``: colorize without removing the
colour cast, as ``restore colorize --keep-cast``). Tasks: ``box`` (the
protocol's 128-pixel box) and ``freeform`` (thick strokes over 25–40 % of the image), scored by hole PSNR, texture
ratio and SSIM, as are ``random70`` (scattered pixels) and ``scratches`` (thin strokes, 6 pixels wide); ``colorize``
(the luminance given), scored by PSNR, colourfulness ratio and chroma error. 256² centre crops of the BSDS500 test
folder (tuning images 40–47 are inside the validation split, after the ones bench reports).
Prints a Markdown table; writes measurement | each method | reference grids per image under --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import operators
from restore.api import load_denoiser
from restore.bench.run import task_measures
from restore.bench.suite import PROTOCOL_SIZE, load_reference
from restore.figures import grid
from restore.io import list_images, write_image
from restore.metrics import psnr, ssim
from restore.noise import NoNoise, simulate
from restore.plan import Request, make_plan, solve

#: bench task → (restore's task, the operator's spec for image i)
TASKS = {"box": ("inpaint", lambda i: f"box:128:seed={i}"), "freeform": ("inpaint", lambda i: f"freeform:seed={i}"),
         "random70": ("inpaint", lambda i: f"random:0.7:seed={i}"), "scratches": ("inpaint", lambda i: f"strokes:width=6:seed={i}"),
         "colorize": ("colorize", lambda i: "gray")}
COLUMNS = {"inpaint": ("hole PSNR", "texture ratio", "SSIM"), "colorize": ("PSNR", "colourfulness ratio", "chroma error")}


def scores(task: str, op, x_hat, x) -> tuple[float, float, float]:
    """The three measures of COLUMNS[task] (restore bench's, restore.bench.run.task_measures, with PSNR or SSIM)."""
    extra = {name: float(value) for name, value in task_measures(task, [op], x_hat, x).items()}
    if task == "colorize":
        return float(psnr(x_hat, x)), extra["colourfulness"], extra["chroma_error"]
    return extra["hole_psnr"], extra["texture"], float(ssim(x_hat, x))


def parse_method(text: str) -> tuple[str, Request]:
    label, _, rest = text.partition(":")
    sampler, _, rest = rest.partition(":")
    steps, _, options = rest.partition(":")
    sampler = sampler or label
    names = [o for o in options.split("+") if o]
    return label, Request(None if sampler == "default" else sampler, int(steps) if steps else None,
                          tuple(o for o in names if o != "keep_cast"), remove_cast=False if "keep_cast" in names else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="../shared/datasets/bsds500/test")
    parser.add_argument("--first", type=int, default=40)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--tasks", default="box,freeform")
    parser.add_argument("--methods", nargs="+", default=["diffpir"])
    parser.add_argument("--prior", default="default")
    parser.add_argument("--out", type=Path, default=Path("runs/holes"))
    args = parser.parse_args()
    denoiser = load_denoiser(args.prior, "cpu", "auto")
    methods = [parse_method(m) for m in args.methods]
    files = list_images(args.images)[args.first : args.first + args.count]
    table: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    for offset, path in enumerate(files):
        index = args.first + offset
        x = load_reference(path, PROTOCOL_SIZE)
        for name in args.tasks.split(","):
            task, spec = TASKS[name]
            op = operators.build(spec(index), tuple(x.shape[1:]))
            y = simulate(x, op, NoNoise(), [index])
            seen = y[0].expand(x.shape[1], -1, -1)  # the gray luminance of colorize shown as it is, not its A⁺y
            panels, labels, captions = [seen], ["measurement"], [""]
            for label, request in methods:
                start = time.time()
                plan = make_plan(task, request, op)
                x_hat = solve(plan, denoiser, op, y, noise=NoNoise(), indices=[index]).mean.float().clamp(-1, 1)
                row = (*scores(task, op, x_hat, x), time.time() - start)
                table.setdefault((name, label), []).append(row)
                panels.append(x_hat[0])
                labels.append(label)
                captions.append(f"{row[0]:.2f} dB, {row[1]:.2f}")
                print(f"{path.stem} {name} {label}: " + ", ".join(f"{c} {v:.4g}" for c, v in zip(COLUMNS[task], row))
                      + f", {row[3]:.0f} s", flush=True)
            panels.append(x[0])
            labels.append("reference")
            captions.append("")
            write_image(args.out / f"{name}_{path.stem}.png", grid(panels, labels, captions, size=tuple(x.shape[-2:])))
    print(f"\nTuning images {args.first}..{args.first + len(files) - 1}, 256² crops, noiseless; means\n")
    for task, columns in COLUMNS.items():
        rows = {key: value for key, value in table.items() if TASKS[key[0]][0] == task}
        if rows:
            print(f"| task | method | {' | '.join(columns)} | s/image |\n| --- | --- | --- | --- | --- | --- |")
            for (name, label), values in rows.items():
                means = [sum(r[i] for r in values) / len(values) for i in range(4)]
                print(f"| {name} | {label} | {means[0]:.2f} | {means[1]:.2f} | {means[2]:.4f} | {means[3]:.0f} |")
            print()


if __name__ == "__main__":
    main()
