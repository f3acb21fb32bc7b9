"""Training an ADM-architecture prior on random crops of a folder of images.

ε-prediction with the DDPM loss ‖ε̂ - ε‖² (Ho et al. 2020), timesteps drawn with extra weight on
low and middle noise levels (where restoration quality is decided), random crops with flips and
90° rotations, Adam, an exponential moving average of the weights, bf16 autocast where it pays,
and a resumable checkpoint written every few minutes. The exported weights (EMA) load with
:func:`restore.prior.registry.load_prior` and in guided-diffusion's ``create_model``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from restore.errors import RestoreError
from restore.prior.schedule import make_betas
from restore.prior.unet import UNetConfig, UNetModel
from restore.prior.weights import save_prior


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (saved in the checkpoint and beside the weights)."""

    unet: dict = field(default_factory=lambda: UNetConfig(
        image_size=64, num_channels=32, channel_mult="1,2,3,4", num_res_blocks=1,
        attention_resolutions="", resblock_updown=True, learn_sigma=False,
    ).to_dict())
    schedule: str = "linear"
    crop: int = 64
    batch_size: int = 16
    lr: float = 3e-4
    warmup_steps: int = 500
    ema_decay: float = 0.999
    #: fraction of timesteps drawn uniformly from the low-noise range [0, low_t_max) instead of [0, T)
    low_t_fraction: float = 0.5
    low_t_max: int = 300
    #: when > 0: the learning rate follows a cosine from ``lr`` down to 0 between these total steps
    #: (a final annealing phase; ``train`` sets the start to the step it begins at)
    anneal_start: int = 0
    anneal_end: int = 0
    precision: str = "bf16"
    seed: int = 0


@dataclass
class TrainState:
    step: int
    net: UNetModel
    ema: UNetModel
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)


def image_files(paths: Sequence[str | Path], exclude: set[str] = frozenset()) -> list[Path]:
    """Image files under the given files/folders (sorted), leaving out names listed in ``exclude``."""
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        elif path.is_file():
            files.append(path)
        else:
            raise RestoreError(f"training images not found: {path}")
    files = [f for f in files if f.name not in exclude]
    if not files:
        raise RestoreError("no training images found in " + ", ".join(map(str, paths)))
    return files


def load_images_uint8(files: Sequence[Path], min_side: int) -> list[Tensor]:
    """Decode images once into uint8 (3, H, W) tensors kept in memory (grayscale → RGB, alpha dropped)."""
    import imageio.v3 as iio

    images = []
    for f in files:
        try:
            arr = iio.imread(f)
        except Exception as err:  # imageio raises many kinds
            raise RestoreError(f"cannot read training image {f}: {err}") from None
        if arr.ndim == 2:
            arr = arr[..., None].repeat(3, axis=2)
        arr = arr[..., :3]
        if arr.dtype != "uint8":
            arr = (arr.astype("float64") / arr.max() * 255).round().astype("uint8")
        img = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
        if min(img.shape[1:]) >= min_side:
            images.append(img)
    if not images:
        raise RestoreError(f"no training image is at least {min_side} px on its shorter side")
    return images


def random_crops(images: Sequence[Tensor], batch: int, crop: int, generator: torch.Generator) -> Tensor:
    """A batch of random crops in [-1, 1] with random flips and 90° rotations (the 8 dihedral symmetries)."""
    out = torch.empty(batch, 3, crop, crop)
    for b in range(batch):
        img = images[int(torch.randint(len(images), (1,), generator=generator))]
        top = int(torch.randint(img.shape[1] - crop + 1, (1,), generator=generator))
        left = int(torch.randint(img.shape[2] - crop + 1, (1,), generator=generator))
        patch = img[:, top : top + crop, left : left + crop]
        if torch.rand((), generator=generator) < 0.5:
            patch = patch.flip(-1)
        patch = torch.rot90(patch, int(torch.randint(4, (1,), generator=generator)), dims=(1, 2))
        out[b] = patch.float() / 127.5 - 1
    return out


def sample_timesteps(config: TrainConfig, batch: int, num_steps: int, generator: torch.Generator) -> Tensor:
    low = torch.rand(batch, generator=generator) < config.low_t_fraction
    upper = torch.where(low, torch.full((batch,), float(config.low_t_max)), torch.full((batch,), float(num_steps)))
    return (torch.rand(batch, generator=generator) * upper).long()


def learning_rate_scale(config: TrainConfig, step: int, optimizer_steps: int) -> float:
    """Linear warm-up over this optimizer's first steps, then constant or a cosine anneal to zero."""
    warmup = min(1.0, (optimizer_steps + 1) / max(config.warmup_steps, 1))
    if config.anneal_end <= config.anneal_start:
        return warmup
    progress = min(1.0, max(0.0, (step - config.anneal_start) / (config.anneal_end - config.anneal_start)))
    return warmup * 0.5 * (1 + math.cos(math.pi * progress))


def new_state(config: TrainConfig) -> TrainState:
    torch.manual_seed(config.seed)
    net = UNetModel(UNetConfig.from_dict(config.unet))
    net.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    return TrainState(0, net, ema, optimizer, torch.Generator().manual_seed(config.seed))


def save_checkpoint(state: TrainState, config: TrainConfig, path: Path) -> None:
    """Everything needed to resume, as tensors and plain values (loads with weights_only=True); atomic."""
    payload = {
        "train_config": json.dumps(asdict(config)),
        "step": state.step,
        "seconds": state.seconds,
        "net": state.net.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
        "losses": torch.tensor(state.losses[-10000:]),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[TrainState, TrainConfig]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RestoreError(f"cannot resume from {path}: {err}") from None
    config = TrainConfig(**json.loads(payload["train_config"]))
    state = new_state(config)
    state.net.load_state_dict(payload["net"])
    state.ema.load_state_dict(payload["ema"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.generator.set_state(payload["generator"])
    state.step, state.seconds = int(payload["step"]), float(payload["seconds"])
    state.losses = payload["losses"].tolist()
    return state, config


def train_step(state: TrainState, config: TrainConfig, images: Sequence[Tensor], alphas_cumprod: Tensor) -> float:
    gen = state.generator
    x0 = random_crops(images, config.batch_size, config.crop, gen).contiguous(memory_format=torch.channels_last)
    t = sample_timesteps(config, config.batch_size, len(alphas_cumprod), gen)
    noise = torch.randn(x0.shape, generator=gen).contiguous(memory_format=torch.channels_last)
    ab = alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    lr_scale = learning_rate_scale(config, state.step, optimizer_steps=len(state.losses))
    for group in state.optimizer.param_groups:
        group["lr"] = config.lr * lr_scale
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        out = state.net(x_t, t.float())
    loss = (out[:, :3].float() - noise).pow(2).mean()
    if not math.isfinite(loss.item()):
        raise RestoreError(f"training diverged at step {state.step} (loss {loss.item()}); lower --lr")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.net.parameters(), 1.0)
    state.optimizer.step()
    # EMA with warm-up (decay grows from 0 towards ema_decay), as in many diffusion codebases
    decay = min(config.ema_decay, (1 + state.step) / (10 + state.step))
    with torch.no_grad():
        for e, p in zip(state.ema.parameters(), state.net.parameters()):
            e.lerp_(p, 1 - decay)
    state.step += 1
    return loss.item()


def train(
    image_paths: Sequence[str | Path],
    out: Path,
    *,
    config: TrainConfig | None = None,
    exclude: set[str] = frozenset(),
    steps: int | None = None,
    minutes: float | None = None,
    checkpoint_minutes: float = 10.0,
    resume: bool = True,
    init_from: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainState:
    """Train (or resume) a prior; writes ``out`` (EMA weights, safetensors), its JSON config, and ``out.ckpt``.

    Stops after ``steps`` total steps or ``minutes`` of this call, whichever comes first. Without a
    checkpoint to resume, ``init_from`` (weights saved by an earlier run, e.g. the shipped prior)
    warm-starts the network and its EMA — with a fresh optimizer — and continues its step count.
    """
    out = Path(out)
    ckpt = out.with_suffix(".ckpt")
    if resume and ckpt.exists():
        wanted_anneal_end = config.anneal_end if config else 0
        state, config = load_checkpoint(ckpt)
        if wanted_anneal_end and wanted_anneal_end != config.anneal_end:
            # a run trained at constant rate, now asked to anneal: the anneal starts where it stands
            if wanted_anneal_end <= state.step:
                raise RestoreError(f"cannot anneal to step {wanted_anneal_end}: {ckpt} is already at step {state.step}")
            config = dataclasses.replace(config, anneal_start=state.step, anneal_end=wanted_anneal_end)
    else:
        config = config or TrainConfig()
        state = new_state(config)
        if init_from is not None:
            warm_start(state, config, Path(init_from))
        if config.anneal_end:
            config = dataclasses.replace(config, anneal_start=state.step)
    if config.anneal_end:
        steps = config.anneal_end if steps is None else min(steps, config.anneal_end)
    files = image_files(image_paths, exclude)
    images = load_images_uint8(files, config.crop)
    alphas_cumprod = torch.cumprod(1 - make_betas(config.schedule), dim=0)
    start = time.time()
    last_save = start
    while (steps is None or state.step < steps) and (minutes is None or time.time() - start < 60 * minutes):
        t0 = time.time()
        loss = train_step(state, config, images, alphas_cumprod)
        state.seconds += time.time() - t0
        state.losses.append(loss)
        if on_step:
            on_step(state.step, loss)
        if time.time() - last_save > 60 * checkpoint_minutes:
            export(state, config, out, len(files))
            last_save = time.time()
    export(state, config, out, len(files))
    return state


def warm_start(state: TrainState, config: TrainConfig, path: Path) -> None:
    """Copy weights (and the step count and CPU time) of an exported prior into a new training state."""
    from restore.prior.weights import load_network

    net, info = load_network(path)
    if net.config.to_dict() != UNetConfig.from_dict(config.unet).to_dict():
        raise RestoreError(f"--init-from {path} has another network config than this training run")
    state.net.load_state_dict(net.state_dict())
    state.ema.load_state_dict(net.state_dict())
    training = info.get("training", {})
    state.step = int(training.get("steps", 0))
    state.seconds = float(training.get("cpu_seconds", 0))


def export(state: TrainState, config: TrainConfig, out: Path, num_images: int) -> None:
    """Write the resumable checkpoint and the EMA weights with their config."""
    save_checkpoint(state, config, out.with_suffix(".ckpt"))
    training = {
        "steps": state.step,
        "cpu_seconds": round(state.seconds),
        "images": num_images,
        "train_config": asdict(config),
    }
    save_prior(state.ema, out, schedule=config.schedule, training=training)
