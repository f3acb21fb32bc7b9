"""Scale-out: one folder restored by one process, by N independent ``--shard I/N`` processes, and by torchrun,
on the same cores; wall time, images per minute and the speed-up over one process.

    nice python benchmarks/scale.py --images 8 --procs 2          # this machine: 2 CPU cores
    python benchmarks/scale.py --images 64 --procs 8 --device cuda  # a GPU node: one process per GPU

The folder holds ``--images`` 256² crops of the sample photographs (``sample_data/images``, cycled);
the job is the README's inpainting (``--mask box:64``, the embedded prior, the default sampler). Every
configuration writes its own folder; the outputs of all of them are compared pixel for pixel (a sharded
run must equal the single run). Threads: each process gets ``--threads-per-proc`` (default: cores / procs),
the single process also runs with all cores, so "one process, all cores" is the fair baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from restore.io import read_image, write_image  # noqa: E402

JOB = ["inpaint", "--mask", "box:64", "--noise-sigma", "0", "--quiet"]  # σ given: no per-image note lines


def make_folder(folder: Path, count: int, size: int) -> None:
    photos = sorted((ROOT / "sample_data" / "images").glob("*.png"))
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = read_image(photos[i % len(photos)]).pixels
        pixels = pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels
        h, w = pixels.shape[-2:]
        side = min(size, h, w)
        top, left = (h - side) // 2, (w - side) // 2
        write_image(folder / f"img{i:03d}.png", pixels[:, top : top + side, left : left + side])


def environment(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def timed(commands: list[list[str]], threads: int) -> float:
    """Start every command at once; seconds until the last one ends."""
    start = time.perf_counter()
    running = [subprocess.Popen(c, cwd=ROOT, env=environment(threads)) for c in commands]
    codes = [p.wait() for p in running]
    if any(codes):
        raise SystemExit(f"a command failed ({codes}): {commands}")
    return time.perf_counter() - start


def difference(a: Path, b: Path) -> str:
    """"equal" when every restoration of ``b`` is bit-identical to ``a``'s, else the largest difference in 8-bit levels."""
    names = sorted(p.name for p in a.glob("*.png"))
    if names != sorted(p.name for p in b.glob("*.png")):
        return "other files"
    worst = max(float(np.abs(read_image(a / n).pixels.numpy() - read_image(b / n).pixels.numpy()).max()) for n in names)
    return "equal" if worst == 0 else f"≤ {worst * 127.5:.0f} levels"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads-per-proc", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-torchrun", action="store_true")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    per_proc = args.threads_per_proc or max(1, cores // args.procs)
    restore = [sys.executable, "-m", "restore"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = work / "images"
        make_folder(images, args.images, args.size)
        rows = []
        base = [*restore, *JOB[:1], str(images), *JOB[1:], "--device", args.device]
        rows.append(("1 process, 1 thread" if per_proc == 1 else f"1 process, {per_proc} threads",
                     timed([[*base, "--out", str(work / "one_small")]], per_proc), work / "one_small"))
        if cores > per_proc:
            rows.append((f"1 process, {cores} threads", timed([[*base, "--out", str(work / "one")]], cores), work / "one"))
        shards = [[*base, "--out", str(work / "shards"), "--shard", f"{i}/{args.procs}"] for i in range(args.procs)]
        rows.append((f"{args.procs} × --shard I/{args.procs}, {per_proc} thread(s) each", timed(shards, per_proc), work / "shards"))
        if not args.no_torchrun:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.procs),
                        "-m", "restore", *JOB[:1], str(images), *JOB[1:], "--device", args.device, "--out", str(work / "torchrun")]
            rows.append((f"torchrun, {args.procs} processes × {per_proc} thread(s)", timed([torchrun], per_proc), work / "torchrun"))
        one_thread = rows[0][1]
        best_single = min(t for label, t, _ in rows if label.startswith("1 process"))
        print(f"\n{args.images} images of {args.size}², restore {' '.join(JOB)}, device {args.device}, {cores} cores\n")
        print(f"| configuration | wall s | images / min | × {rows[0][0]} | × the fastest single process | outputs vs {rows[0][0]} |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, seconds, out in rows:
            print(f"| {label} | {seconds:.1f} | {60 * args.images / seconds:.1f} | {one_thread / seconds:.2f}× | {best_single / seconds:.2f}× "
                  f"| {difference(rows[0][2], out)} |")
        shutil.rmtree(work / "images")


if __name__ == "__main__":
    main()
