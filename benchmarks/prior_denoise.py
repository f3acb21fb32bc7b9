"""Denoising quality of a prior: PSNR of x̂0 at the measurement's noise level, per σ.

    python benchmarks/prior_denoise.py --prior default --images ../shared/datasets/bsds500/test --limit 50

The images are 256×256 centre crops of the first ``--limit`` files (sorted) of the folder — with
the BSDS500 test folder and --limit 50 that is the validation split the default prior never saw
(benchmarks/val_split.txt). σ is on the [0, 1] scale; the noise is seeded by image index.
"""

from __future__ import annotations

import argparse
import time

import torch

from restore.bench.suite import centre_crop
from restore.io import list_images, read_image
from restore.metrics import psnr
from restore.prior.registry import load_prior
from restore.prior.schedule import timestep_for_sigma


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default="default")
    parser.add_argument("--images", default="../shared/datasets/bsds500/test")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--sigmas", default="0.025,0.05,0.1,0.2")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    denoiser = load_prior(args.prior, device=args.device, precision=args.precision)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    files = list_images(args.images)[: args.limit]
    totals = {s: 0.0 for s in sigmas}
    start = time.time()
    for i, path in enumerate(files):
        x = centre_crop(read_image(path).pixels, args.crop)[None]
        for s in sigmas:
            gen = torch.Generator().manual_seed(i)
            noisy = (x + 2 * s * torch.randn(x.shape, generator=gen)).to(args.device)
            t = timestep_for_sigma(denoiser.alphas_cumprod, 2 * s).float()
            ab = denoiser.alpha_bar(t, noisy)
            with torch.no_grad():
                x0 = denoiser(ab.sqrt() * noisy, t).clamp(-1, 1)
            totals[s] += float(psnr(x0.float().cpu(), x).mean())
    n = len(files)
    print(f"prior={args.prior} images={n} crop={args.crop} precision={args.precision} device={args.device} "
          f"seconds={time.time() - start:.0f}")
    print("| σ (on [0,1]) | PSNR (dB) |")
    print("| --- | --- |")
    for s in sigmas:
        print(f"| {s:g} | {totals[s] / n:.2f} |")


if __name__ == "__main__":
    main()
