"""Speed of the samplers: seconds per image, images/s, peak memory, and agreement with the float32 path.

    python benchmarks/speed.py                                   # CPU, default prior, ddrm/reddiff/dps defaults
    python benchmarks/speed.py --samplers ddrm,dps:100 --precision fp32,bf16 --batch 1,2
    python benchmarks/speed.py --device cuda --arch ffhq-256 --samplers dps:1000 --batch 1,8 --compile
    python benchmarks/speed.py --deepinv --steps 20             # DeepInverse 0.5 on the same network
    python benchmarks/speed.py --network --compile --batch 1,4   # one network call: what each CPU setting buys

Task: ×4 super-resolution (protocol.md's sr4: bicubic, σ_y = 0.025) of 256×256 centre crops of the
first --images validation photographs (sample_data/ without ../shared). Every configuration runs in
its own process, so "peak memory" is that process's (CPU: max RSS; GPU: max allocated). The PSNR
column is the mean against the ground truth; Δ fp32 compares it with the float32 row of the same
sampler and batch (the fast path must stay within 0.1 dB). "network %" is the share of the time spent in
the network (NFE × one evaluation timed alone, with its backward pass where the sampler needs it);
the rest is operators, data-fidelity updates and Python. --arch ffhq-256 uses DPS's FFHQ network
(config from ../shared/fixtures, random weights: time does not depend on them, PSNR does).

--deepinv times DeepInverse's DDRM and DPS against restore's on the same network (wrapped as a
deepinv denoiser, as its DiffUNet wraps the ADM checkpoints) and the same Gaussian deblurring task
(BlurFFT ↔ blur:gaussian:61:3.0, circular): seconds per image for DDRM and per step for DPS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def image_files(count: int) -> list[Path]:
    from restore.io import list_images

    folder = SHARED / "datasets/bsds500/test"
    return list_images(folder if folder.is_dir() else ROOT / "sample_data/images")[:count]


def load_denoiser(arch: str, device: str, precision: str, compile_network: bool):
    from restore import api

    if arch == "default":
        return api.load_denoiser("default", device, precision, compile_mode="auto" if compile_network else None)
    # a public architecture with random weights (the fixtures give its exact config)
    from restore.prior.denoiser import UNetDenoiser
    from restore.prior.schedule import make_betas
    from restore.prior.unet import UNetConfig, UNetModel

    compile_mode = api.prepare_network_device(torch.device(device), "auto" if compile_network else None)
    fixture = {"ffhq-256": "adm_ffhq256_keys.json", "imagenet-256": "adm_imagenet256_uncond_keys.json"}[arch]
    config = json.loads((SHARED / "fixtures" / fixture).read_text())["config"]
    torch.manual_seed(0)
    net = UNetModel(UNetConfig.from_dict(config))
    return UNetDenoiser(net.to(device), make_betas("linear"), precision=precision, channels_last=True,
                        compile_mode=compile_mode).to(device)


def markdown_row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def print_header(*columns: str) -> None:
    print(markdown_row(*columns))
    print(markdown_row(*["---"] * len(columns)))


def run_one(config: dict) -> dict:
    """One (sampler, batch, precision) on sr4: time, memory and PSNR. Runs in a child process."""
    from restore.bench import suite
    from restore.metrics import psnr
    from restore.samplers import get_sampler
    from restore.plan import Plan, Request, make_plan

    torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    denoiser = load_denoiser(config["arch"], config["device"], config["precision"], config["compile"])
    name, _, steps = config["sampler"].partition(":")
    info = get_sampler(name)
    plan = make_plan("superres", Request(name, int(steps) if steps else None))
    steps = plan.steps
    files = image_files(config["images"])
    problems = [suite.make_problem(suite.TASKS["sr4"], suite.load_reference(f, 256), i, f.stem) for i, f in enumerate(files)]
    batch = config["batch"]
    # warm-up (kernels, allocator, compile) on a 2-step run, not timed
    suite.solve_problems(Plan("superres", name, 2, plan.params), denoiser, problems[:1] * batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    scores, seconds = [], 0.0
    for start in range(0, len(problems), batch):
        chunk = problems[start : start + batch]
        chunk = chunk + chunk[:1] * (batch - len(chunk))  # keep the batch shape fixed
        t0 = time.perf_counter()
        x_hat = suite.solve_problems(plan, denoiser, chunk).mean
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        x_hat = x_hat.float().cpu().clamp(-1, 1)
        scores += [float(psnr(x_hat[b : b + 1], p.x)) for b, p in enumerate(chunk)]
    timed_images = len(scores)
    scores = scores[: len(problems)]  # padding copies are timed but not scored
    network_seconds = network_call_seconds(denoiser, problems[0].x.shape[1:], batch, info.backprop_network, device)
    network_share = plan.nfe * network_seconds * (timed_images // batch) / seconds
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {**config, "steps": steps, "nfe": plan.nfe, "s_per_image": seconds / timed_images,
            "images_per_s": timed_images / seconds, "peak_gb": peak / 2**30, "psnr": sum(scores) / len(scores),
            "network_share": network_share}


def network_call_seconds(denoiser, shape, batch: int, backprop: bool, device, repeats: int = 3) -> float:
    """Seconds of one network evaluation alone (with its backward pass for DPS-like samplers), at mid-schedule.

    NFE × this, against the sampler's measured time, says where a step's time goes: the rest is the
    operator, the data-fidelity update and Python overhead.
    """
    x = torch.randn(batch, *shape, device=device)
    t = torch.full((batch,), denoiser.num_timesteps / 2, device=device)

    def call():
        if backprop:
            x_in = x.clone().requires_grad_(True)
            torch.autograd.grad(denoiser(x_in, t).sum(), x_in)
        else:
            with torch.no_grad():
                denoiser(x, t)
        if device.type == "cuda":
            torch.cuda.synchronize()

    call()
    t0 = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - t0) / repeats


def run_network(config: dict) -> dict:
    """Seconds per network evaluation of one (precision, channels-last, compile, threads, batch): without gradients,
    and with its backward pass (a DPS / ΠGDM step)."""
    from restore.api import prepare_network_device
    from restore.prior.registry import load_prior

    torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    compile_mode = prepare_network_device(device, "auto" if config["compile"] else None)
    denoiser = load_prior("default", device=config["device"], precision=config["precision"],
                          channels_last=config["channels_last"], compile_mode=compile_mode)
    x = torch.randn(config["batch"], 3, 256, 256, generator=torch.Generator().manual_seed(0)).to(config["device"])
    t = torch.full((config["batch"],), 200.0)
    t0 = time.perf_counter()
    with torch.no_grad():
        first = denoiser(x, t)  # warm-up: kernels, allocator, compilation
        if device.type == "cuda":
            torch.cuda.synchronize()
        warmup = time.perf_counter() - t0
        reference = load_prior("default", device=config["device"], precision="fp32", channels_last=False)(x, t)
    seconds = network_call_seconds(denoiser, x.shape[1:], config["batch"], False, device, config["repeats"])
    backprop = network_call_seconds(denoiser, x.shape[1:], config["batch"], True, device, config["repeats"])
    return {**config, "s_per_call": seconds, "s_per_image": seconds / config["batch"], "s_backprop": backprop, "warmup_s": warmup,
            "max_diff_fp32": float((first - reference).abs().max())}


def network_table(args) -> list[dict]:
    """Every combination of the --network options, each in its own process; prints a Markdown table."""
    rows = []
    for threads in (int(n) for n in args.network_threads.split(",")):
        for precision in args.precision.split(","):
            for channels_last in (True, False):
                for compiled in ((False, True) if args.compile else (False,)):
                    for batch in (int(b) for b in args.batch.split(",")):
                        config = {"mode": "network", "device": args.device, "precision": precision, "threads": threads,
                                  "channels_last": channels_last, "compile": compiled, "batch": batch, "repeats": 5}
                        rows.append(child(config))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"default prior, one network evaluation at 256×256, {args.device}, torch {torch.__version__}")
    print_header("threads", "precision", "channels-last", "compile", "batch", "s/evaluation", "s/image",
                 "s/evaluation with backward", "warm-up s", "max |Δ| vs fp32")
    for r in rows:
        setting = (r["threads"], r["precision"], "yes" if r["channels_last"] else "no", "yes" if r["compile"] else "no", r["batch"])
        if "error" in r:
            print(markdown_row(*setting, f"error: {r['error']}", "", "", "", ""))
            continue
        print(markdown_row(*setting, f"{r['s_per_call']:.3f}", f"{r['s_per_image']:.3f}", f"{r['s_backprop']:.3f}",
                           f"{r['warmup_s']:.1f}", f"{r['max_diff_fp32']:.4f}"))
    return rows


def child(config: dict) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps(config)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        return {**config, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    reference = {(r["sampler"], r["batch"]): r["psnr"] for r in rows if r.get("precision") == "fp32" and "psnr" in r}
    print_header("sampler", "NFE", "batch", "precision", "device", "s/image", "images/s", "network %", "peak GB", "PSNR",
                 "Δ fp32")
    for r in rows:
        precision = r["precision"] + (" +compile" if r["compile"] else "")
        if "error" in r:
            print(markdown_row(r["sampler"], "", r["batch"], precision, r["device"], f"error: {r['error']}", "", "", "", "", ""))
            continue
        ref = reference.get((r["sampler"], r["batch"]))
        delta = f"{r['psnr'] - ref:+.3f}" if ref is not None else "–"
        print(markdown_row(r["sampler"], r["nfe"], r["batch"], precision, r["device"], f"{r['s_per_image']:.2f}",
                           f"{r['images_per_s']:.3f}", f"{100 * r['network_share']:.0f}", f"{r['peak_gb']:.2f}",
                           f"{r['psnr']:.2f}", delta))


# ---- DeepInverse side by side ---------------------------------------------------------------------------
def deepinv_comparison(args) -> None:
    import deepinv as dinv
    import numpy as np

    import operators
    from restore.bench import suite
    from restore.noise import GaussianNoise
    from restore.prior.schedule import respaced_timesteps
    from restore.samplers import draw_samples, get_sampler
    from restore.samplers.ddrm import DDRMParams
    from restore.samplers.dps import DPSParams

    torch.set_num_threads(args.threads)
    denoiser = load_denoiser(args.arch, args.device, "fp32", False)

    class SameNetwork(dinv.models.Denoiser):
        """restore's network as a deepinv denoiser D(x, σ) on [0, 1] (deepinv's DiffUNet convention)."""

        calls = 0

        def forward(self, x, sigma, *unused, **unused_keywords):
            SameNetwork.calls += 1
            sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1)
            ab = 1 / (1 + 4 * sigma**2)  # σ on [0, 1] is 2σ on [-1, 1]; ᾱ = 1 / (1 + σ²)
            t = torch.searchsorted(-denoiser.alphas_cumprod, -ab).clamp(0, denoiser.num_timesteps - 1)
            x_t = ab.sqrt().view(-1, 1, 1, 1).to(torch.float32) * (2 * x.float() - 1)
            return ((denoiser(x_t, t.float()) + 1) / 2).to(x.dtype)

    network = SameNetwork()
    file = image_files(1)[0]
    x = suite.load_reference(file, 256)
    kernel = operators.blur.make_kernel("gaussian:61:3.0")
    physics = dinv.physics.BlurFFT(img_size=(3, 256, 256), filter=kernel[None, None].float(),
                                   noise_model=dinv.physics.GaussianNoise(0.025))
    y_unit = physics((x + 1) / 2)
    op = operators.build("blur:gaussian:61:3.0", (3, 256, 256))
    y = op.A(x) + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    steps = args.steps
    rows = []

    def timed(fn) -> tuple[float, int]:
        """Seconds and deepinv network evaluations of one call."""
        SameNetwork.calls = 0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, SameNetwork.calls

    # DDRM: restore vs deepinv, both `steps` network evaluations
    sigmas = (denoiser.sigma(respaced_timesteps(denoiser.num_timesteps, steps)).numpy() / 2).tolist()
    ddrm = dinv.sampling.DDRM(denoiser=network, sigmas=np.array(sigmas), eta=0.85, etab=1.0)
    with torch.no_grad():
        ddrm(y_unit, physics)  # warm-up
        s_deepinv, nfe_deepinv = timed(lambda: ddrm(y_unit, physics))
    info = get_sampler("ddrm")
    gen = [torch.Generator().manual_seed(0)]
    for precision in ("fp32", "bf16"):
        denoiser.precision = precision
        with torch.no_grad():
            s_restore, _ = timed(lambda: draw_samples(info.run, denoiser, op, y, noise=GaussianNoise(0.05), steps=steps,
                                                      generator=gen, params=DDRMParams()))
        rows.append(("DDRM", precision, s_restore, steps, s_deepinv, nfe_deepinv))
    # DPS: per step (one network evaluation and its backward pass)
    denoiser.precision = "fp32"
    dps = dinv.sampling.DPS(network, num_steps=steps, weight=1.0, dtype=torch.float32)
    dps(y_unit, physics)  # warm-up
    s_deepinv, nfe_deepinv = timed(lambda: dps(y_unit, physics))
    info = get_sampler("dps")
    for precision in ("fp32", "bf16"):
        denoiser.precision = precision
        s_restore, _ = timed(lambda: draw_samples(info.run, denoiser, op, y, noise=GaussianNoise(0.05), steps=steps,
                                                  generator=gen, params=DPSParams(zeta=1.0)))
        rows.append(("DPS", precision, s_restore, steps, s_deepinv, nfe_deepinv))
    print(f"\nDeepInverse {dinv.__version__} vs restore, same network ({args.arch}), gblur 256×256, {steps} steps, "
          f"{args.threads} threads, {args.device}; seconds per network evaluation (DPS: with its backward pass)")
    print("| sampler | restore precision | restore s/image | NFE | restore s/NFE | DeepInverse s/image (fp32) | NFE | DeepInverse s/NFE | speed-up per NFE |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, precision, ours, nfe_ours, theirs, nfe_theirs in rows:
        per_ours, per_theirs = ours / nfe_ours, theirs / nfe_theirs
        print(f"| {name} | {precision} | {ours:.2f} | {nfe_ours} | {per_ours:.3f} | {theirs:.2f} | {nfe_theirs} | "
              f"{per_theirs:.3f} | {per_theirs / per_ours:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="default", choices=["default", "ffhq-256", "imagenet-256"])
    parser.add_argument("--samplers", default="ddrm,reddiff,dps", help="NAME[:STEPS], comma-separated (default steps: the superres defaults)")
    parser.add_argument("--batch", default="1", help="batch sizes, comma-separated")
    parser.add_argument("--precision", default="fp32,bf16", help="precisions, comma-separated")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--deepinv", action="store_true", help="time DeepInverse on the same network instead")
    parser.add_argument("--steps", type=int, default=20, help="--deepinv: steps of DDRM and DPS")
    parser.add_argument("--network", action="store_true",
                        help="time one network evaluation instead: precision × channels-last (on/off) × --compile (off/on) × threads × batch")
    parser.add_argument("--network-threads", default="1,2", help="--network: thread counts, comma-separated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        config = json.loads(args.child)
        print(json.dumps(run_network(config) if config.get("mode") == "network" else run_one(config)))
        return
    if args.deepinv:
        deepinv_comparison(args)
        return
    if args.network:
        rows = network_table(args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    rows = []
    for sampler in args.samplers.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            for precision in args.precision.split(","):
                config = {"sampler": sampler, "batch": batch, "precision": precision, "device": args.device,
                          "arch": args.arch, "images": args.images, "threads": args.threads, "compile": args.compile}
                rows.append(child(config))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"sr4, 256×256, {args.images} images, {args.threads} threads, torch {torch.__version__}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
