"""The standard task suite of ../shared/protocol.md: samplers and classical baselines, PSNR / SSIM / NFE / time.

    python benchmarks/protocol.py --images ../shared/datasets/bsds500/test --limit 5 \
        --tasks sr4,gblur,box --samplers ddrm,diffpir --baselines

Image i is the i-th file (sorted) of --images, centre-cropped to 256×256; with the BSDS500 test folder
and --limit ≤ 50 these are validation images the default prior never saw (benchmarks/val_split.txt).
Every random choice for image i (mask, noise, sampler noise) is seeded from i. Steps default to the
sampler's per-task defaults (restore/samplers/defaults.py); --steps overrides them for all.
Prints a Markdown table (mean over images) and writes every per-image number to --json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import operators
from operators.color import rgb_to_luminance
from restore.api import SolveSettings, generators
from restore.io import list_images, read_image
from restore.metrics import psnr, ssim
from restore.noise import GaussianNoise
from restore.samplers import draw_samples, get_sampler
from restore.samplers.defaults import defaults_for

SIGMA_Y = 0.05  # σ_y = 0.025 on [0, 1] = 0.05 on the library's [-1, 1]


@dataclass
class Problem:
    x: torch.Tensor  # (1, C, 256, 256) ground truth
    operator: operators.LinearOperator
    y: torch.Tensor
    noise: GaussianNoise


@dataclass(frozen=True)
class Task:
    name: str
    cli_task: str  # the row of the defaults table
    spec: Callable[[int], str]  # image index → operator spec
    luminance: bool = False


TASKS = {t.name: t for t in [
    Task("sr4", "superres", lambda i: "bicubic:4"),
    Task("gblur", "deblur", lambda i: "blur:gaussian:61:3.0"),
    Task("mblur", "deblur", lambda i: f"blur:levin:{i % 8 + 1}"),
    Task("box", "inpaint", lambda i: f"box:128:seed={i}"),
    Task("random70", "inpaint", lambda i: f"random:0.7:seed={i}"),
    Task("denoise", "denoise", lambda i: "identity"),
    Task("mri4x", "mri", lambda i: "mri:equispaced:4:center_lines=20", luminance=True),
    Task("ct60", "ct", lambda i: "ct:60", luminance=True),
]}


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def make_problem(task: Task, x: torch.Tensor, index: int) -> Problem:
    if task.luminance:
        x = rgb_to_luminance(x)
    op = operators.build(task.spec(index), tuple(x.shape[1:])).to(x.dtype)
    clean = op.A(x)
    if task.name == "denoise":
        sigma = 2 * 0.1
    elif task.name == "ct60":
        sigma = 2 * 0.005 * float(op.A((x + 1) / 2).abs().max())  # 0.005 × the [0, 1] image's sinogram maximum
    else:
        sigma = SIGMA_Y
    noise = GaussianNoise(sigma)
    y = noise(clean, generators(0, [index], purpose=1)[0])
    return Problem(x, op, y, noise)


def baseline(task: Task, p: Problem) -> torch.Tensor:
    """The classical method protocol.md sets against each task."""
    from skimage.restoration import denoise_tv_chambolle, inpaint_biharmonic

    if task.name == "sr4":
        return operators.resize.bicubic_upsample(p.y, 4)
    if task.name in ("gblur", "mblur"):
        return operators.blur.wiener_deconvolve(p.y, p.operator, WIENER_BALANCE[task.name])
    if task.name in ("box", "random70"):
        missing = (p.operator.singular_values().reshape(p.x.shape) == 0)[0, 0].numpy()
        unit = ((p.y[0] + 1) / 2).permute(1, 2, 0).double().numpy()
        if task.name == "box":
            filled = inpaint_biharmonic(unit, missing, channel_axis=-1)
        else:
            filled = linear_interpolation(unit, missing)
        return torch.from_numpy(filled).permute(2, 0, 1)[None].float() * 2 - 1
    if task.name == "denoise":
        unit = ((p.y[0] + 1) / 2).permute(1, 2, 0).double().numpy()
        return torch.from_numpy(denoise_tv_chambolle(unit, weight=TV_WEIGHT, channel_axis=-1)).permute(2, 0, 1)[None].float() * 2 - 1
    if task.name == "mri4x":
        return operators.mri.zero_filled(p.y, p.operator).real.float()
    if task.name == "ct60":
        # FBP of the [0, 1] sinogram: y = A(2u - 1) = 2 A u - A 1
        ones = p.operator.A(torch.ones_like(p.x))
        return operators.ct.fbp((p.y + ones) / 2, p.operator) * 2 - 1
    raise ValueError(task.name)


#: Wiener regularisation and TV weight, tuned on training images (benchmarks/tune_baselines.py)
WIENER_BALANCE = {"gblur": 0.03, "mblur": 0.1}
TV_WEIGHT = 0.08


def linear_interpolation(unit: np.ndarray, missing: np.ndarray) -> np.ndarray:
    from scipy.interpolate import griddata

    known = np.argwhere(~missing)
    holes = np.argwhere(missing)
    out = unit.copy()
    for c in range(unit.shape[2]):
        values = unit[~missing, c]
        filled = griddata(known, values, holes, method="linear")
        nearest = griddata(known, values, holes[np.isnan(filled)], method="nearest")
        filled[np.isnan(filled)] = nearest
        out[missing, c] = filled
    return out


def score(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    x_hat = x_hat.real if x_hat.is_complex() else x_hat
    x_hat = x_hat.float().clamp(-1, 1)
    return float(psnr(x_hat, x)), float(ssim(x_hat, x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="../shared/datasets/bsds500/test")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--samplers", default="ddrm,diffpir",
                        help="comma-separated; NAME:STEPS overrides that sampler's default steps (e.g. dps:100)")
    parser.add_argument("--steps", type=int, default=None, help="override every sampler's default steps")
    parser.add_argument("--baselines", action="store_true", help="also run the classical baselines")
    parser.add_argument("--prior", default="default")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from restore.prior.registry import load_prior

    denoiser = load_prior(args.prior, precision=args.precision)
    files = list_images(args.images)[: args.limit]
    tasks = [TASKS[name] for name in args.tasks.split(",")]
    samplers = [s for s in args.samplers.split(",") if s]
    step_override = {name: int(steps) for name, _, steps in (s.partition(":") for s in samplers) if steps}
    rows: list[dict] = []
    for task in tasks:
        for index, path in enumerate(files):
            x = centre_crop(read_image(path).pixels, 256)[None]
            p = make_problem(task, x, index)
            methods: list[str] = (["baseline"] if args.baselines else []) + samplers
            for method in methods:
                start = time.time()
                if method == "baseline":
                    x_hat, nfe = baseline(task, p), 0
                else:
                    name = method.partition(":")[0]
                    info = get_sampler(name)
                    if info.needs_svd and not p.operator.has_svd:
                        continue
                    defaults = defaults_for(name, task.cli_task)
                    steps = step_override.get(name) or args.steps or defaults.steps
                    with torch.no_grad() if not info.backprop_network else torch.enable_grad():
                        result = draw_samples(info.run, denoiser, p.operator, p.y, noise=p.noise, steps=steps,
                                              generator=generators(SolveSettings().seed, [index]), params=defaults.params)
                    x_hat, nfe = result.mean, info.nfe(steps)
                seconds = time.time() - start
                value_psnr, value_ssim = score(x_hat, p.x)
                rows.append({"task": task.name, "method": method, "image": path.name, "psnr": value_psnr,
                             "ssim": value_ssim, "nfe": nfe, "seconds": seconds})
                print(f"{task.name:8} {method:9} {path.name:14} PSNR {value_psnr:6.2f}  SSIM {value_ssim:.4f}  "
                      f"NFE {nfe:4d}  {seconds:6.1f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))
    print_table(rows, len(files), args)


def print_table(rows: list[dict], num_images: int, args) -> None:
    print(f"\nprior={args.prior} images={num_images} (first {num_images} of {args.images}, 256×256 centre crops)")
    print("| task | method | PSNR | SSIM | NFE | s/image |")
    print("| --- | --- | --- | --- | --- | --- |")
    keys = sorted({(r["task"], r["method"]) for r in rows}, key=lambda k: (list(TASKS).index(k[0]), k[1] != "baseline", k[1]))
    for task, method in keys:
        sel = [r for r in rows if r["task"] == task and r["method"] == method]
        mean = {k: sum(r[k] for r in sel) / len(sel) for k in ("psnr", "ssim", "seconds")}
        print(f"| {task} | {method} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | {sel[0]['nfe']} | {mean['seconds']:.1f} |")


if __name__ == "__main__":
    main()
