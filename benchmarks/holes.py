"""Large holes: hole PSNR, texture ratio and whole-image SSIM of inpainting methods on tuning images, with grids.

    python benchmarks/holes.py --first 40 --count 4 --methods "diffpir" "ddnm:ddnm:100" "dps:dps:100" --out runs/holes

Each method is ``LABEL[:SAMPLER[:STEPS[:NAME=VALUE+NAME=VALUE...]]]`` (SAMPLER defaults to LABEL). Tasks: ``box`` (the
protocol's 128-pixel box) and ``freeform`` (thick strokes over 25–40 % of the image); 256² centre crops of
the BSDS500 test folder (tuning images 40–47 are inside the validation split, after the ones bench reports).
Prints a Markdown table; writes measurement | each method | reference grids per image under --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


import operators
from restore.api import load_denoiser
from restore.bench.suite import PROTOCOL_SIZE, load_reference
from restore.figures import grid
from restore.io import list_images, write_image
from restore.metrics import hole_psnr, ssim, texture_ratio
from restore.noise import NoNoise, simulate
from restore.plan import Request, make_plan, solve

TASKS = {"box": lambda i: f"box:128:seed={i}", "freeform": lambda i: f"freeform:seed={i}"}


def parse_method(text: str) -> tuple[str, Request]:
    label, _, rest = text.partition(":")
    sampler, _, rest = rest.partition(":")
    steps, _, options = rest.partition(":")
    return label, Request(sampler or label, int(steps) if steps else None, tuple(o for o in options.split("+") if o))


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
        for task in args.tasks.split(","):
            op = operators.build(TASKS[task](index), tuple(x.shape[1:]))
            y = simulate(x, op, NoNoise(), [index])
            missing = op.mask[:, :1] < 0.5
            panels, labels, captions = [y[0]], ["measurement"], [""]
            for label, request in methods:
                start = time.time()
                plan = make_plan("inpaint", request, op)
                x_hat = solve(plan, denoiser, op, y, noise=NoNoise(), indices=[index]).mean.float().clamp(-1, 1)
                seconds = time.time() - start
                scores = (float(hole_psnr(x_hat, x, missing)), float(texture_ratio(x_hat, x, missing)), float(ssim(x_hat, x)), seconds)
                table.setdefault((task, label), []).append(scores)
                panels.append(x_hat[0])
                labels.append(label)
                captions.append(f"hole {scores[0]:.2f} dB, texture {scores[1]:.2f}")
                print(f"{path.stem} {task} {label}: hole PSNR {scores[0]:.2f}, texture {scores[1]:.2f}, SSIM {scores[2]:.4f}, "
                      f"{seconds:.0f} s", flush=True)
            panels.append(x[0])
            labels.append("reference")
            captions.append("")
            write_image(args.out / f"{task}_{path.stem}.png", grid(panels, labels, captions, size=tuple(x.shape[-2:])))
    print(f"\nTuning images {args.first}..{args.first + len(files) - 1}, 256² crops, noiseless; means\n")
    print("| task | method | hole PSNR | texture ratio | SSIM | s/image |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (task, label), rows in table.items():
        means = [sum(r[i] for r in rows) / len(rows) for i in range(4)]
        print(f"| {task} | {label} | {means[0]:.2f} | {means[1]:.2f} | {means[2]:.4f} | {means[3]:.0f} |")


if __name__ == "__main__":
    main()
