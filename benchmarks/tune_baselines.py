"""Tune the classical baselines' one parameter each (Wiener balance, TV weight) on training images.

    python benchmarks/tune_baselines.py --images ../shared/datasets/bsds500/train --limit 8

Prints mean PSNR per candidate value for gblur, mblur (Wiener) and denoise (TV); copy the best into
restore/bench/suite.py (WIENER_BALANCE per task, TV_WEIGHT). Training images only: the validation split stays unseen.
"""

from __future__ import annotations

import argparse

import torch

import operators
from restore.bench import suite
from restore.io import list_images
from restore.metrics import psnr

CANDIDATES = {"gblur": [0.003, 0.01, 0.03, 0.1], "mblur": [0.01, 0.03, 0.1, 0.3],
              "denoise": [0.04, 0.06, 0.08, 0.1, 0.12, 0.15]}


def restore_with(task: str, problem: suite.Problem, value: float) -> torch.Tensor:
    if task == "denoise":
        return suite.tv_baseline(problem, weight=value)
    return operators.blur.wiener_deconvolve(problem.y, problem.operator, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="../shared/datasets/bsds500/train")
    parser.add_argument("--limit", type=int, default=8)
    args = parser.parse_args()
    files = list_images(args.images)[: args.limit]
    print("| task | value | mean PSNR |\n| --- | --- | --- |")
    for task, values in CANDIDATES.items():
        problems = [suite.make_problem(suite.TASKS[task], suite.load_reference(path, suite.PROTOCOL_SIZE), i)
                    for i, path in enumerate(files)]
        for value in values:
            scores = [float(psnr(restore_with(task, p, value).clamp(-1, 1), p.x)) for p in problems]
            print(f"| {task} | {value:g} | {sum(scores) / len(scores):.2f} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
