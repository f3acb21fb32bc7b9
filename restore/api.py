"""Devices, precision and priors: what a restoration needs besides its inputs and its plan.

    from restore.api import load_denoiser
    from restore.noise import GaussianNoise, simulate
    from restore.plan import Request, make_plan, solve

    denoiser = load_denoiser("default")
    op = operators.build("random:0.7:seed=0", (3, 256, 256))
    noise = GaussianNoise(0.05)
    y = simulate(x, op, noise, seeds=0)                       # x: (1, 3, 256, 256) in [-1, 1]
    plan = make_plan("inpaint", Request(num_samples=4), op)
    result = solve(plan, denoiser, op, y, noise=noise)        # result.mean, result.std, result.samples

Images are (B, C, H, W) tensors in [-1, 1]; see restore.io for files.
"""

from __future__ import annotations

import torch

from restore.errors import RestoreError


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RestoreError("--device cuda was asked for, but no CUDA GPU is available (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise RestoreError(f"unknown device '{name}'; use auto, cpu or cuda") from None


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` → bf16 on a GPU and on CPUs with native bf16 (AVX-512 BF16 / AMX), else fp32.

    bf16 changes the restorations' PSNR by less than 0.01 dB on average (benchmarks/RESULTS.md, speed)
    and halves the network's time on such CPUs; ``fp32`` is the escape.
    """
    if name == "auto":
        return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()) else "fp32"
    if name not in ("fp32", "bf16", "fp16"):
        raise RestoreError(f"unknown precision '{name}'; use auto, fp32, bf16 or fp16")
    return name


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (emulated bf16 would be slower than fp32)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def load_denoiser(prior: str = "default", device: str = "auto", precision: str = "auto", compile_mode: str | None = None):
    """The prior ``prior`` (a registry name or a weights file) as a denoiser on ``device``.

    On a GPU, float32 matrix products and convolutions may use TF32 (what "fp32" means there in
    practice); ``compile_mode`` ("default", or "reduce-overhead" for CUDA graphs; "auto" picks CUDA
    graphs on a GPU) torch.compiles the network for the fixed-shape sampling steps.
    """
    from restore.prior.registry import load_prior

    dev = resolve_device(device)
    compile_mode = prepare_network_device(dev, compile_mode)
    return load_prior(prior, device=str(dev), precision=resolve_precision(precision, dev), compile_mode=compile_mode)



def prepare_network_device(dev: torch.device, compile_mode: str | None = None) -> str | None:
    """Allow TF32 on a GPU and resolve ``compile_mode`` "auto" (CUDA graphs on a GPU, plain compile on CPU)."""
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if compile_mode == "auto":
        return "reduce-overhead" if dev.type == "cuda" else "default"
    return compile_mode
