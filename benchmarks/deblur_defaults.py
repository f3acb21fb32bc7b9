"""Which sampler and λ deblur best, by kernel kind and boundary, on tuning images (not the validation ones).

    python benchmarks/deblur_defaults.py --first 40 --count 8

Gaussian blur (gaussian:61:3.0) and camera shake (Levin kernel (i mod 8) + 1), each simulated with circular and
with reflecting borders, noise σ 0.025 (the protocol's); every method on the same problems. Prints a Markdown
table of mean PSNR per (kernel, boundary, method) and what `restore deblur` should run by default.
"""

from __future__ import annotations

import argparse
import time


import operators
from restore.api import load_denoiser
from restore.bench.suite import PROTOCOL_SIZE, load_reference
from restore.io import list_images
from restore.metrics import psnr
from restore.noise import GaussianNoise, simulate
from restore.plan import Request, make_plan, solve

METHODS = {"ddrm": Request("ddrm"), "diffpir": Request("diffpir"), "dpir λ0.2": Request("dpir", options=("lam=0.2",)),
           "dpir λ0.4": Request("dpir", options=("lam=0.4",))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="../shared/datasets/bsds500/test")
    parser.add_argument("--first", type=int, default=40)
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args()
    denoiser = load_denoiser("default", "cpu", "auto")
    files = list_images(args.images)[args.first : args.first + args.count]
    noise = GaussianNoise(0.05)
    scores: dict[tuple[str, str, str], list[float]] = {}
    seconds: dict[tuple[str, str, str], float] = {}
    for offset, path in enumerate(files):
        index = args.first + offset
        x = load_reference(path, PROTOCOL_SIZE)
        for kind, kernel in (("gaussian", "gaussian:61:3.0"), ("motion", f"levin:{index % 8 + 1}")):
            for boundary in ("circular", "reflect"):
                op = operators.build(f"blur:{kernel}:boundary={boundary}", tuple(x.shape[1:]))
                y = simulate(x, op, noise, [index])
                for name, request in METHODS.items():
                    if name == "ddrm" and boundary != "circular":
                        continue
                    start = time.time()
                    plan = make_plan("deblur", request, op)
                    x_hat = solve(plan, denoiser, op, y, noise=noise, indices=[index]).mean.float().clamp(-1, 1)
                    key = (kind, boundary, name)
                    scores.setdefault(key, []).append(float(psnr(x_hat, x)))
                    seconds[key] = seconds.get(key, 0.0) + time.time() - start
                    print(f"{path.stem} {kind} {boundary} {name}: {scores[key][-1]:.2f} dB", flush=True)
    print(f"\nTuning images {args.first}..{args.first + len(files) - 1}, 256² crops, σ 0.025; mean PSNR (s/image)\n")
    print("| kernel | boundary | " + " | ".join(METHODS) + " |")
    print("| --- | --- |" + " --- |" * len(METHODS))
    for kind in ("gaussian", "motion"):
        for boundary in ("circular", "reflect"):
            cells = []
            for name in METHODS:
                key = (kind, boundary, name)
                cells.append(f"{sum(scores[key]) / len(scores[key]):.2f} ({seconds[key] / len(scores[key]):.0f} s)" if key in scores else "–")
            print(f"| {kind} | {boundary} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
