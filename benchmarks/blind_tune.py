"""Tuning the kernel estimate of restore.blind on TRAINING images only: mean kernel NCC per setting.

    nice -n 5 python benchmarks/blind_tune.py --levin 8 --motion 8 "" "edge_fraction=0.02" "iterations=10,estep_steps=6"

Each positional argument is one setting (comma-separated BlindParams field=value overrides; "" for
the defaults). Problems: train images 0..L-1 with Levin kernel (i mod 8) + 1 and train images
100..100+M-1 with ``motion_kernel(25, intensity, seed=i)`` synthetic camera shake, 256² centre crops
(``--size``), circular blur, σ 0.025 ([0, 1] scale). Prints one line per setting: mean NCC (Levin,
motion, all) and seconds per image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from blind_dev import DATA, parse_set  # noqa: E402
from operators.blur import levin_kernel, make_blur, motion_kernel  # noqa: E402
from restore.api import load_denoiser  # noqa: E402
from restore.bench.suite import load_reference  # noqa: E402
from restore.blind import BlindParams, align_to_reference, estimate_kernel, kernel_ncc, restore_with_kernel  # noqa: E402
from restore.metrics import psnr  # noqa: E402
from restore.noise import GaussianNoise, simulate  # noqa: E402

MOTION_START = 100


def problems(levin: int, motion: int, size: int, sigma: float):
    files = sorted(p for p in (DATA / "train").iterdir() if p.is_file())
    noise = GaussianNoise(2 * sigma)
    picks = [(i, levin_kernel(i % 8 + 1), "levin") for i in range(levin)]
    picks += [(i, motion_kernel(25, 0.3 + 0.6 * ((i * 0.618) % 1), seed=i), "motion")
              for i in range(MOTION_START, MOTION_START + motion)]
    for i, kernel, family in picks:
        x = load_reference(files[i], size)
        op = make_blur(kernel, tuple(x.shape[1:]), "circular").to(x.dtype)
        yield i, family, kernel, simulate(x, op, noise, [i]), noise.sigma, x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", nargs="*", default=[""])
    ap.add_argument("--levin", type=int, default=8)
    ap.add_argument("--motion", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--sigma", type=float, default=0.025)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--psnr", action="store_true", help="also restore (blind_deblur) and report the aligned PSNR")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    denoiser = load_denoiser("default", "cpu")
    cases = list(problems(args.levin, args.motion, args.size, args.sigma))
    for setting in args.settings:
        params = BlindParams(**{"periodic": True, **parse_set([s for s in setting.split(",") if s])})
        scores, start = {"levin": [], "motion": []}, time.perf_counter()
        quality = {"levin": [], "motion": []}
        for i, family, kernel, y, sigma, x in cases:
            with torch.no_grad():
                estimate = estimate_kernel(y, denoiser, 31, noise_sigma=sigma, params=params)
                if args.psnr:
                    x_hat = restore_with_kernel(y, denoiser, estimate, noise_sigma=sigma, params=params)
                    quality[family].append(psnr(align_to_reference(x_hat, x), x).item())
            scores[family].append(kernel_ncc(estimate, kernel))
        per_image = (time.perf_counter() - start) / len(cases)
        every = scores["levin"] + scores["motion"]
        mean = {f: sum(v) / len(v) if v else float("nan") for f, v in scores.items()}
        print(f"{setting or 'defaults':50s} levin {mean['levin']:.3f} motion {mean['motion']:.3f} all {sum(every) / len(every):.3f}"
              f"  min {min(every):.3f}  {per_image:.1f} s/img  [{' '.join(f'{v:.2f}' for v in every)}]", flush=True)
        if args.psnr:
            q = quality["levin"] + quality["motion"]
            print(f"{'':50s} aligned PSNR levin {sum(quality['levin']) / max(1, len(quality['levin'])):.2f} "
                  f"motion {sum(quality['motion']) / max(1, len(quality['motion'])):.2f} all {sum(q) / len(q):.2f}"
                  f"  [{' '.join(f'{v:.1f}' for v in q)}]", flush=True)


if __name__ == "__main__":
    main()
