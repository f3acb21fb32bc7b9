"""Blind motion deblurring on training images: the blind EM of restore.blind, the classical baseline,
and DPIR with the true kernel, on the protocol's mblur problems (kernel hidden from the blind methods).

    nice -n 5 python benchmarks/blind_dev.py --limit 8                       # Levin kernels, train images 0..7
    nice -n 5 python benchmarks/blind_dev.py --limit 8 --kernels motion      # synthetic camera shake instead
    nice -n 5 python benchmarks/blind_dev.py --limit 8 --set edge_fraction=0.03 --no-classical

Problems as the protocol's ``mblur``: 256×256 centre crop of image i (sorted files of the split),
Levin kernel k{(i mod 8) + 1} (or ``motion_kernel(--motion-size, intensity, seed=i)``), circular blur,
Gaussian noise σ 0.025 on the [0, 1] scale seeded by i. Tune on ``train`` only: the first 50 files of
``test`` are the validation split. PSNR is plain (the protocol's) and after the best sub-pixel
circular shift (``aligned``, restore.blind.align_to_reference), since a blind estimate is determined up
to a translation; the non-blind column uses the true kernel, so it needs no alignment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.blur import levin_kernel, make_blur, motion_kernel  # noqa: E402
from restore.api import load_denoiser  # noqa: E402
from restore.bench.suite import load_reference  # noqa: E402
from restore.blind import (BlindParams, align_to_reference, classical_blind_baseline, estimate_kernel,  # noqa: E402
                           kernel_ncc, restore_with_kernel)
from restore.metrics import psnr  # noqa: E402
from restore.noise import GaussianNoise, simulate  # noqa: E402
from restore.samplers.dpir import DPIRParams, dpir  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bsds500"


def parse_set(items: list[str]) -> dict:
    fields = {f.name: f.type for f in dataclasses.fields(BlindParams)}
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in fields:
            raise SystemExit(f"unknown BlindParams field {name}; known: {', '.join(fields)}")
        kind = str(fields[name])
        out[name] = (value.lower() in ("1", "true", "yes")) if kind == "bool" else int(value) if kind == "int" \
            else value if kind == "str" else float(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="train", choices=("train", "test"))
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--kernel-size", type=int, default=31)
    ap.add_argument("--kernels", default="levin", choices=("levin", "motion"))
    ap.add_argument("--motion-size", type=int, default=25)
    ap.add_argument("--sigma", type=float, default=0.025, help="noise σ on the [0, 1] scale")
    ap.add_argument("--set", action="append", default=[], help="BlindParams field=value (repeatable)")
    ap.add_argument("--no-classical", action="store_true")
    ap.add_argument("--no-nonblind", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--save-kernels", type=Path, help="write the true and estimated kernels to this .npz")
    args = ap.parse_args()
    if args.split == "test" and args.start < 50:
        print("warning: test files 0..49 are the validation split; do not tune on them", file=sys.stderr)
    torch.set_num_threads(args.threads)
    params = BlindParams(**{"periodic": True, **parse_set(args.set)})  # the problems are circular blurs
    denoiser = load_denoiser("default", "cpu")
    files = sorted(p for p in (DATA / args.split).iterdir() if p.is_file())[args.start : args.start + args.limit]
    noise = GaussianNoise(2 * args.sigma)
    rows, kernels = [], {}
    for offset, path in enumerate(files):
        i = args.start + offset
        x = load_reference(path, args.size)
        if args.kernels == "levin":
            k_true, kname = levin_kernel(i % 8 + 1), f"levin:{i % 8 + 1}"
        else:
            intensity = 0.3 + 0.6 * ((i * 0.618) % 1)
            k_true, kname = motion_kernel(args.motion_size, intensity, seed=i), f"motion:{args.motion_size}:{intensity:.2f}"
        op = make_blur(k_true, tuple(x.shape[1:]), "circular").to(x.dtype)
        y = simulate(x, op, noise, [i])
        row = {"index": i, "name": path.stem, "kernel": kname, "blurry": psnr(y, x).item()}
        with torch.no_grad():
            if not args.no_nonblind:
                row["nonblind"] = psnr(dpir(denoiser, op, y, noise=noise, steps=16, params=DPIRParams(lam=0.4)), x).item()
            if not args.no_classical:
                t = time.perf_counter()
                xc, kc = classical_blind_baseline(y, args.kernel_size, noise.sigma)
                row["classical_s"] = time.perf_counter() - t
                row["classical"], row["classical_aligned"] = psnr(xc, x).item(), psnr(align_to_reference(xc, x), x).item()
                row["classical_ncc"] = kernel_ncc(kc, k_true)
            t = time.perf_counter()
            kb = estimate_kernel(y, denoiser, args.kernel_size, noise_sigma=noise.sigma, params=params)
            row["estimate_s"] = time.perf_counter() - t
            xb = restore_with_kernel(y, denoiser, kb, noise_sigma=noise.sigma, params=params)
            row["blind_s"] = time.perf_counter() - t
        row["blind"], row["blind_aligned"] = psnr(xb, x).item(), psnr(align_to_reference(xb, x), x).item()
        row["blind_ncc"] = kernel_ncc(kb, k_true)
        kernels[f"true_{i}"], kernels[f"blind_{i}"] = k_true.numpy(), kb.numpy()
        if not args.no_classical:
            kernels[f"classical_{i}"] = kc.numpy()
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), file=sys.stderr, flush=True)
    print_table(rows, args, params)
    if args.save_kernels:
        import numpy as np

        np.savez(args.save_kernels, **kernels)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "params": dataclasses.asdict(params), "rows": rows}, indent=1))


def print_table(rows: list[dict], args, params: BlindParams) -> None:
    cols = [("blurry", "blurry"), ("classical", "classical"), ("classical_aligned", "classical (aligned)"),
            ("blind", "blind"), ("blind_aligned", "blind (aligned)"), ("nonblind", "DPIR true k"),
            ("classical_ncc", "NCC classical"), ("blind_ncc", "NCC blind"),
            ("classical_s", "s classical"), ("blind_s", "s blind")]
    cols = [(k, label) for k, label in cols if k in rows[0]]
    print(f"\n{args.split} images {args.start}..{args.start + len(rows) - 1}, {args.size}² crops, {args.kernels} kernels, "
          f"σ {args.sigma}, kernel size {args.kernel_size}, {args.threads} thread(s); params {params}\n")
    print("| image | kernel | " + " | ".join(label for _, label in cols) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
    for r in rows:
        print(f"| {r['index']} {r['name']} | {r['kernel']} | " + " | ".join(fmt(k, r[k]) for k, _ in cols) + " |")
    means = {k: sum(r[k] for r in rows) / len(rows) for k, _ in cols}
    print("| **mean** | | " + " | ".join(f"**{fmt(k, means[k])}**" for k, _ in cols) + " |")


def fmt(key: str, value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.3f}" if key.endswith("ncc") else f"{value:.1f}" if key.endswith("_s") else f"{value:.2f}"


if __name__ == "__main__":
    main()
