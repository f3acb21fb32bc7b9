"""JPEG artifact removal on tuning images: the decoded file against each sampler setting (restore bench's jpeg10/jpeg30,
or any quality, subsampling, or grayscale).

    python benchmarks/jpeg_samplers.py --first 40 --count 4 --quality 10 --methods "reddiff" "reddiff:reddiff:100:lr=0.2" "dps:dps:100:zeta=1"
    python benchmarks/jpeg_samplers.py --first 40 --count 4 --quality 90 --gray --methods "deblock"

Each method is ``LABEL[:SAMPLER[:STEPS[:NAME=VALUE+...]]]``; results are projected onto the quantisation bins as
`restore dejpeg` does. Prints a Markdown table of PSNR / SSIM (and s/image).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from operators.jpeg import quantisation_projection
from restore.api import load_denoiser
from restore.bench.suite import TASKS, BenchTask, load_reference, make_problem
from restore.io import list_images
from restore.metrics import psnr, ssim
from restore.plan import make_plan, solve

from holes import parse_method  # LABEL[:SAMPLER[:STEPS[:NAME=VALUE+...]]], as holes.py reads its methods


def problem_arguments(description: str) -> argparse.ArgumentParser:
    """The options that pick the problems: the images, the first and how many, the quality (jpeg10 or jpeg30)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="../shared/datasets/bsds500/test")
    parser.add_argument("--first", type=int, default=40)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--quality", type=int, default=10, help="IJG quality (10 and 30: restore bench's jpeg10, jpeg30)")
    parser.add_argument("--subsampling", default="420", choices=("420", "422", "444"))
    parser.add_argument("--gray", action="store_true", help="grayscale JPEGs of the images' luminance")
    return parser


def jpeg_task(args: argparse.Namespace) -> BenchTask:
    """restore bench's jpeg10 task at the quality, subsampling and colour asked for."""
    spec = f"jpeg:quality={args.quality}" + ("" if args.gray else f":subsampling={args.subsampling}")
    return dataclasses.replace(TASKS["jpeg10"], name=f"jpeg{args.quality}", spec=lambda i, n: spec, luminance=args.gray)


def main() -> None:
    parser = problem_arguments(__doc__)
    parser.add_argument("--methods", nargs="+", default=["reddiff"])
    args = parser.parse_args()
    denoiser = load_denoiser("default", "cpu", "auto")
    task = jpeg_task(args)
    files = list_images(args.images)[args.first : args.first + args.count]
    scores: dict[str, list[tuple[float, float, float]]] = {}
    for offset, path in enumerate(files):
        p = make_problem(task, load_reference(path, 256), args.first + offset, path.stem)
        decoded = p.operator.pinv(p.y).clamp(-1, 1)
        scores.setdefault("decoded JPEG", []).append((float(psnr(decoded, p.x)), float(ssim(decoded, p.x)), 0.0))
        for label, request in map(parse_method, args.methods):
            start = time.time()
            x_hat = solve(make_plan("dejpeg", request, p.operator), denoiser, p.operator, p.y, noise=p.noise, indices=[p.index]).mean
            x_hat, _ = quantisation_projection(x_hat.double().clamp(-1, 1), p.operator.coefficients(p.y.double()), p.operator.tables)
            x_hat = x_hat.float().clamp(-1, 1)
            scores.setdefault(label, []).append((float(psnr(x_hat, p.x)), float(ssim(x_hat, p.x)), time.time() - start))
            print(f"{path.stem} {label}: {scores[label][-1][0]:.2f} dB (decoded {scores['decoded JPEG'][-1][0]:.2f})", flush=True)
    kind = "gray" if args.gray else args.subsampling
    print(f"\njpeg{args.quality} ({kind}), images {args.first}..{args.first + len(files) - 1}, 256² crops; means\n")
    print("| method | PSNR | SSIM | s/image |\n| --- | --- | --- | --- |")
    for label, rows in scores.items():
        print(f"| {label} | {sum(r[0] for r in rows) / len(rows):.2f} | {sum(r[1] for r in rows) / len(rows):.4f} | "
              f"{sum(r[2] for r in rows) / len(rows):.0f} |")


if __name__ == "__main__":
    main()
