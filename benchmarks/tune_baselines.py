"""Tune the classical baselines' one parameter each (Wiener balance, TV weight) on training images.

    python benchmarks/tune_baselines.py --images ../shared/datasets/bsds500/train --limit 8

Prints mean PSNR per candidate value for gblur, mblur (Wiener) and denoise (TV); copy the best into
benchmarks/protocol.py (WIENER_BALANCE per task, TV_WEIGHT). Training images only: the validation split stays unseen.
"""

from __future__ import annotations

import argparse

import torch

import protocol
from restore.io import list_images, read_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="../shared/datasets/bsds500/train")
    parser.add_argument("--limit", type=int, default=8)
    args = parser.parse_args()
    files = list_images(args.images)[: args.limit]
    grids = {"gblur": [0.003, 0.01, 0.03, 0.1], "mblur": [0.01, 0.03, 0.1, 0.3],
             "denoise": [0.04, 0.06, 0.08, 0.1, 0.12, 0.15]}
    for task_name, values in grids.items():
        task = protocol.TASKS[task_name]
        problems = [protocol.make_problem(task, protocol.centre_crop(read_image(p).pixels, 256)[None], i)
                    for i, p in enumerate(files)]
        for value in values:
            if task_name == "denoise":
                protocol.TV_WEIGHT = value
            else:
                protocol.WIENER_BALANCE[task_name] = value
            scores = [protocol.score(protocol.baseline(task, p), p.x)[0] for p in problems]
            print(f"{task_name:8} {value:<6g} PSNR {sum(scores) / len(scores):.2f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
