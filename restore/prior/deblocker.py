"""A JPEG deblocker: the prior's network fine-tuned to map a decoded JPEG file to the image it was saved from.

The JPEG measurement is known exactly (the file's tables), but the prior is a Gaussian denoiser of white
noise, and JPEG's error is not white: run on a decoded file it reads the 8×8 block edges as image structure
(RESULTS.md, "Session 19: JPEG"). So the same network (same architecture, warm-started from the shipped
prior's weights) is trained on photographs encoded at random qualities and subsamplings. It keeps the
denoiser's interface: the decoded file is treated as x_t at the noise level σ that :func:`table_sigma`
reads from the file's quantisation tables (coarser tables, higher σ), and x̂0 is the restoration — so any
size, grayscale and mixed precision work as for the prior (:class:`~restore.prior.denoiser.UNetDenoiser`).

    deblocker = load_deblocker(device="cpu")
    x_hat = deblock(deblocker, decoded, quant)   # decoded: (B, C, H, W) in [-1, 1]; quant: (B, P, 8, 8)
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from restore.errors import Interrupted, RestoreError
from restore.prior.schedule import make_betas, timestep_for_sigma

#: the weights restore ships (trained by ``restore train-deblocker``; RESULTS.md "Session 20: the JPEG deblocker")
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "deblocker.safetensors"

#: σ at the coarsest baseline tables (every luma entry 255); finer tables scale it by sqrt(mean entry / 255)
SIGMA_AT_COARSEST = 0.14


def table_sigma(quant: Tensor) -> Tensor:
    """The noise level (σ of x_t / sqrt(ᾱ), image units [-1, 1]) the deblocker runs at for these tables.

    ``quant``: (B, P, 8, 8) per-plane tables, luma first. The decoded file's error grows with the
    quantisation step roughly as its square root (0.13 at IJG quality 10, 0.09 at 30, in these units),
    and σ only tells the network how strong the artifacts are: it is trained at these same values.
    """
    luma = quant[:, 0].double().flatten(1).mean(dim=1).clamp(min=1.0)
    return SIGMA_AT_COARSEST * (luma / 255).sqrt()


def input_level(alphas_cumprod: Tensor, quant: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """The timestep (B,) the network runs at for these tables, and ᾱ (B, 1, 1, 1) that scales the decoded file into x_t."""
    sigma = table_sigma(quant).expand(batch)
    t = timestep_for_sigma(alphas_cumprod, sigma).to(torch.float32)
    return t, (1 / (1 + sigma**2)).float().view(-1, 1, 1, 1)


def deblock(denoiser, decoded: Tensor, quant: Tensor) -> Tensor:
    """x̂ for decoded files (B, C, H, W) in [-1, 1] with their tables (B or 1, P, 8, 8): one network evaluation."""
    t, alpha_bar = input_level(denoiser.alphas_cumprod, quant.to(decoded.device), decoded.shape[0])
    x_t = alpha_bar.to(decoded.dtype).sqrt() * decoded
    if decoded.shape[1] == 1:  # a grayscale file's error is all luma: the gray image in all three channels
        return denoiser(x_t.expand(-1, 3, -1, -1), t).mean(dim=1, keepdim=True)
    return denoiser(x_t, t)


@functools.lru_cache(maxsize=4)
def load_deblocker(device: str = "cpu", precision: str = "fp32", path: str = str(SHIPPED_WEIGHTS)):
    """The shipped deblocker (or weights at ``path``) as a denoiser on ``device``, loaded once per process."""
    from restore.prior.registry import load_prior

    if not Path(path).is_file():
        if Path(path) == SHIPPED_WEIGHTS:
            raise RestoreError(f"the JPEG deblocker's weights are missing from the installation ({path}); reinstall restore")
        raise RestoreError(f"deblock: no weights file {path} (--set weights=FILE takes one written by restore train-deblocker)")
    return load_prior(path, device=device, precision=precision)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class DeblockerTrainConfig:
    """What decides a deblocker training run (saved beside the weights)."""

    crop: int = 64
    batch_size: int = 16
    lr: float = 5e-5
    warmup_steps: int = 100
    ema_decay: float = 0.999
    #: qualities drawn per crop: with probability ``low_quality_share`` uniform in low_quality, else in high_quality
    low_quality: tuple[int, int] = (5, 40)
    high_quality: tuple[int, int] = (41, 100)
    low_quality_share: float = 0.6
    #: subsampling of each batch, with these probabilities; grayscale batches on top of them
    subsampling_shares: tuple[tuple[str, float], ...] = (("4:2:0", 0.7), ("4:4:4", 0.2), ("4:2:2", 0.1))
    gray_share: float = 0.1
    precision: str = "bf16"
    seed: int = 0


def draw_tables(config: DeblockerTrainConfig, batch: int, generator: torch.Generator):
    """One batch's JPEG tables: a quality per crop, one subsampling (or grayscale) for the batch."""
    from operators.jpeg import JPEGTables

    gray = bool(torch.rand(1, generator=generator) < config.gray_share)
    shares = torch.tensor([share for _, share in config.subsampling_shares])
    subsampling = config.subsampling_shares[int(torch.multinomial(shares, 1, generator=generator))][0]
    tables = []
    for _ in range(batch):
        low, high = config.low_quality if torch.rand(1, generator=generator) < config.low_quality_share else config.high_quality
        quality = int(torch.randint(low, high + 1, (1,), generator=generator))
        tables.append(JPEGTables.standard(quality, subsampling, gray))
    return tables


def to_gray(x: Tensor) -> Tensor:
    """8-bit luma (ITU-R BT.601, as libjpeg) of RGB crops in [-1, 1], as (B, 1, H, W) in [-1, 1]."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    luma = ((x + 1) * 127.5 * weights).sum(dim=1, keepdim=True).round().clamp(0, 255)
    return luma / 127.5 - 1


def jpeg_pairs(clean: Tensor, tables) -> tuple[Tensor, Tensor, Tensor]:
    """(decoded, clean, quant): the crops saved as JPEG with each crop's tables and decoded as restore reads files."""
    from operators.jpeg import JPEG

    if tables[0].gray:
        clean = to_gray(clean)
    op = JPEG.stack([JPEG(t, tuple(clean.shape[1:])) for t in tables])
    return op.pinv(op.A_exact(clean)).clamp(-1, 1), clean, op.quant


def deblocker_loss(net, alphas_cumprod: Tensor, decoded: Tensor, clean: Tensor, quant: Tensor, precision: str) -> Tensor:
    """Mean squared error of x̂0 (as :func:`deblock` computes it, unclipped) against the clean crops."""
    t, alpha_bar = input_level(alphas_cumprod, quant, decoded.shape[0])
    channels = decoded.shape[1]
    x_t = (alpha_bar.sqrt() * decoded).expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        eps = net(x_t, t)[:, :3].float()
    x0 = (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    if channels == 1:
        x0 = x0.mean(dim=1, keepdim=True)
    return (x0 - clean).pow(2).mean()


def check_deblocker_request(out: Path, image_paths: Sequence[str | Path], minutes: float, init_from: Path) -> None:
    """What a deblocker training request cannot be, said before any work (the CLI calls it before its progress bar)."""
    from restore.prior.train import check_out
    from restore.prior.weights import read_info

    if not minutes > 0:
        raise RestoreError(f"--minutes must be more than 0, got {minutes}")
    info = read_info(init_from) if Path(init_from).suffix == ".safetensors" else None
    if not info or "unet" not in info:
        raise RestoreError(f"--init-from {init_from} is not a UNet prior written by restore (restore train); "
                           "the deblocker fine-tunes one, e.g. the default")
    check_out(Path(out), image_paths)


def train_deblocker(image_paths: Sequence[str | Path], out: Path, *, init_from: Path, minutes: float,
                    config: DeblockerTrainConfig = DeblockerTrainConfig(), exclude: set[str] = frozenset(),
                    checkpoint_minutes: float = 10.0, on_step: Callable[[int, float], None] | None = None) -> int:
    """Fine-tune the prior at ``init_from`` into a deblocker for ``minutes`` (resuming ``out.ckpt`` if there).

    The learning rate warms up, then follows a cosine to zero over the time budget (a resumed run: over its own
    ``minutes``, from where it stands); the EMA weights are written to ``out`` (with a JSON record) every
    ``checkpoint_minutes`` and at the end. Returns the total steps.
    """
    from restore.prior.train import CropSource, image_files, load_images_uint8, random_crops
    from restore.prior.weights import load_network, save_prior

    out = Path(out)
    check_deblocker_request(out, image_paths, minutes, Path(init_from))
    net, info = load_network(Path(init_from))
    net.to(memory_format=torch.channels_last).train()
    alphas_cumprod = torch.cumprod(1 - make_betas(info.get("schedule", "linear")), dim=0)
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    step, seconds, losses = 0, 0.0, []
    ckpt = out.with_suffix(".ckpt")
    if ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["net"])
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        step, seconds, losses = int(saved["step"]), float(saved["seconds"]), saved["losses"].tolist()
    files = image_files(image_paths, exclude)
    crops = CropSource.from_images(load_images_uint8(files, config.crop))

    def save() -> None:
        payload = {"net": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                   "generator": generator.get_state(), "step": step, "seconds": seconds, "losses": torch.tensor(losses)}
        torch.save(payload, ckpt.with_name(ckpt.name + ".tmp"))
        os.replace(ckpt.with_name(ckpt.name + ".tmp"), ckpt)
        recent = losses[-200:]
        training = {"kind": "jpeg-deblocker", "init_from": Path(init_from).name, "steps": step,
                    "cpu_seconds": round(seconds), "images": len(files),
                    "final_loss": round(sum(recent) / len(recent), 6) if recent else None,
                    "train_config": json.loads(json.dumps(asdict(config)))}
        save_prior(ema, out, schedule=info.get("schedule", "linear"), training=training)

    start = last_save = time.time()
    try:
        while time.time() - start < 60 * minutes:
            t0 = time.time()
            warmup = min(1.0, (step + 1) / config.warmup_steps)
            progress = (t0 - start) / (60 * minutes)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * warmup * 0.5 * (1 + math.cos(math.pi * progress))
            clean = random_crops(crops, config.batch_size, config.crop, generator)
            decoded, clean, quant = jpeg_pairs(clean, draw_tables(config, config.batch_size, generator))
            loss = deblocker_loss(net, alphas_cumprod, decoded, clean, quant, config.precision)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - decay)
            step += 1
            seconds += time.time() - t0
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise RestoreError(f"deblocker training diverged at step {step}; lower the learning rate")
            if on_step:
                on_step(step, losses[-1])
            if time.time() - last_save > 60 * checkpoint_minutes:
                save()
                last_save = time.time()
    except KeyboardInterrupt:
        save()
        raise Interrupted(f"saved step {step} to {out}; run the same command again to resume") from None
    save()
    return step
