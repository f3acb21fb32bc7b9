"""The noise σ estimated from the measurement (restore.noise_level) against the true σ, per task, and what
restoring with the estimate instead of the true σ costs in PSNR.

    nice python benchmarks/noise_estimate.py --limit 8                 # validation images 0..7, σ 0 / 0.01 / 0.025 / 0.05
    nice python benchmarks/noise_estimate.py --limit 8 --no-restore    # the estimator alone (seconds)

Problems as ``restore bench`` builds them (256² centre crops of the validation split, noise seeded by image
index) for the tasks whose real inputs get an estimated σ: denoise, deblur (gblur, mblur), superres (sr4),
inpaint (random70: σ read from the photograph, before its pixels are hidden) and colorize (the gray
input). Also noise-free JPEG files (quality 50, 75, 90) read as they would be for denoising. σ on the
[0, 1] scale. The restorations use each task's default plan (restore.plan.make_plan), once with the
true σ and once with the estimate.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import operators  # noqa: E402
from restore.api import load_denoiser  # noqa: E402
from restore.bench.suite import load_reference  # noqa: E402
from restore.metrics import psnr  # noqa: E402
from restore.noise import GaussianNoise, NoNoise  # noqa: E402
from restore.plan import Request, make_plan, solve  # noqa: E402
from restore.tasks import estimate_noise_sigma  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bsds500" / "test"
VALIDATION = (Path(__file__).resolve().parent / "val_split.txt").read_text().split()
#: (label, CLI task, operator spec for image i, measured on: "y" the measurement, "x" the photograph)
TASKS = [("denoise", "denoise", lambda i: "identity", "y"), ("gblur", "deblur", lambda i: "blur:gaussian:61:3.0", "y"),
         ("mblur", "deblur", lambda i: f"blur:levin:{i % 8 + 1}", "y"), ("sr4", "superres", lambda i: "bicubic:4", "y"),
         ("random70", "inpaint", lambda i: f"random:0.7:seed={i}", "x"), ("colorize", "colorize", lambda i: "gray", "y")]


def noise_model(sigma01: float):
    return NoNoise() if sigma01 == 0 else GaussianNoise(2 * sigma01)


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    array = ((x[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return torch.from_numpy(np.array(Image.open(io.BytesIO(buffer.getvalue())))).permute(2, 0, 1)[None].float() / 127.5 - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--sigmas", default="0,0.01,0.025,0.05")
    ap.add_argument("--no-restore", action="store_true", help="the estimator alone")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    denoiser = None if args.no_restore else load_denoiser("default", "cpu")
    images = [load_reference(DATA / name, 256) for name in VALIDATION[: args.limit]]
    sigmas = [float(s) for s in args.sigmas.split(",")]
    print(f"validation images 0..{len(images) - 1}, 256² crops; σ on the [0, 1] scale; estimate mean ± std over images;"
          " ΔPSNR = PSNR with the estimate − PSNR with the true σ\n")
    print("| task | true σ | estimated σ | bias | ΔPSNR (dB) |")
    print("| --- | --- | --- | --- | --- |")
    losses = []
    for label, task, spec, source in TASKS:
        for sigma in sigmas:
            estimates, deltas = [], []
            for i, x in enumerate(images):
                if task == "denoise" and sigma == 0:
                    continue  # nothing to denoise
                xi = x
                op = operators.build(spec(i), tuple(xi.shape[1:]))
                clean = op.A(xi)
                noise = 2 * sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(i))
                y = clean + noise
                seen = (xi + 2 * sigma * torch.randn(xi.shape, generator=torch.Generator().manual_seed(i))) if source == "x" else y
                if source == "x":
                    y = op.A(seen)  # the photograph's own noise, its pixels hidden
                estimate = estimate_noise_sigma(seen[0])
                estimates.append(estimate)
                if denoiser is not None:
                    scores = []
                    for s in (sigma, round(estimate, 4)):
                        plan = make_plan(task, Request(), op)
                        with torch.no_grad():
                            x_hat = solve(plan, denoiser, op, y, noise=noise_model(s), indices=[i]).mean.clamp(-1, 1)
                        scores.append(psnr(x_hat, xi).item())
                    deltas.append(scores[1] - scores[0])
            if not estimates:
                continue
            delta = f"{np.mean(deltas):+.2f} (worst {min(deltas):+.2f})" if deltas else "–"
            losses += deltas
            print(f"| {label} | {sigma:g} | {np.mean(estimates):.4f} ± {np.std(estimates):.4f} | {np.mean(estimates) - sigma:+.4f} | {delta} |",
                  flush=True)
    for quality in (50, 75, 90):
        estimates = [estimate_noise_sigma(jpeg_roundtrip(x, quality)[0]) for x in images]
        print(f"| JPEG q{quality}, no noise | 0 | {np.mean(estimates):.4f} ± {np.std(estimates):.4f} | {np.mean(estimates):+.4f} | – |")
    if losses:
        print(f"\nmean ΔPSNR over every restored problem: {np.mean(losses):+.3f} dB ({len(losses)} problems)")


if __name__ == "__main__":
    main()
