"""Training an ADM-architecture prior on random crops of a folder of images.

ε-prediction with the DDPM loss ‖ε̂ - ε‖² (Ho et al. 2020), timesteps drawn with extra weight on
low and middle noise levels (where restoration quality is decided), random crops with flips and
90° rotations, Adam, an exponential moving average of the weights, bf16 autocast where it pays,
and a resumable checkpoint written every few minutes. Runs on the CPU or a CUDA GPU: the images
live on the training device and a batch of crops is one gather there; the random draws that pick
crops and timesteps come from a CPU generator, the noise from one on the device. The exported
weights (EMA) load with :func:`restore.prior.registry.load_prior` and in guided-diffusion's
``create_model``.
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

from restore.errors import Interrupted, RestoreError
from restore.prior.schedule import make_betas
from restore.prior.unet import UNetConfig, UNetModel
from restore.prior.weights import read_info, save_prior


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
    #: "eps": the DDPM loss ‖ε̂ − ε‖² at every t; "min-snr": each t's term times min(SNR, 5) / SNR
    #: (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", γ = 5),
    #: which keeps the near-noiseless steps from dominating the gradient
    loss_weight: str = "eps"
    #: the training photographs are also shown shrunk by these factors (box-averaged), each scale as
    #: many images as the first: a 64-pixel crop of a ×4-shrunk photograph spans 256 of its pixels, so
    #: the prior learns structure larger than its crop (what a large hole must be filled with)
    scales: tuple[int, ...] = (1,)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The config a checkpoint or weights file recorded (JSON turned its tuples into lists)."""
        return cls(**{**values, "scales": tuple(values.get("scales", (1,)))})


@dataclass
class TrainState:
    step: int
    net: UNetModel
    ema: UNetModel
    optimizer: torch.optim.Optimizer
    #: crops and timesteps; on the CPU so that a run is the same on any device
    generator: torch.Generator
    #: the Gaussian noise, drawn where the network trains (the CPU generator itself on the CPU)
    noise_generator: torch.Generator
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


def load_images_uint8(files: Sequence[Path], min_side: int, scales: Sequence[int] = (1,)) -> list[Tensor]:
    """Decode images once into uint8 (3, H, W) tensors kept in memory (grayscale → RGB, alpha dropped).

    Decoding is :func:`restore.io.read_image`'s (16-bit files, one-line errors for unreadable ones).
    Each image comes once per factor in ``scales``, shrunk by box averaging; versions shorter than
    ``min_side`` are left out.
    """
    from restore.io import read_image

    images = []
    for f in files:
        pixels = read_image(f).pixels.expand(3, -1, -1)  # (3, H, W) in [-1, 1]
        for factor in scales:
            shrunk = torch.nn.functional.avg_pool2d(pixels[None], factor)[0] if factor > 1 else pixels
            if min(shrunk.shape[1:]) >= min_side:
                images.append(((shrunk + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).contiguous())
    if not images:
        raise RestoreError(f"no training image is at least {min_side} px on its shorter side")
    return images


@dataclass(frozen=True)
class CropSource:
    """Training images padded into one uint8 tensor, so that a whole batch of crops is one gather.

    Portrait images are turned landscape first (the crops get random 90° turns anyway), which makes a
    folder of same-sized photographs pad to nothing.
    """

    stack: Tensor  # (N, 3, H, W) uint8
    sizes: Tensor  # (N, 2) int64: each image's own height and width inside the padding

    @classmethod
    def from_images(cls, images: Sequence[Tensor]) -> CropSource:
        images = [img.transpose(1, 2) if img.shape[1] > img.shape[2] else img for img in images]
        height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
        stack = torch.zeros(len(images), 3, height, width, dtype=torch.uint8)
        for slot, img in zip(stack, images):
            slot[:, : img.shape[1], : img.shape[2]] = img
        return cls(stack, torch.tensor([i.shape[1:] for i in images]))

    def to(self, device: torch.device) -> CropSource:
        return CropSource(self.stack.to(device), self.sizes)


def random_crops(source: CropSource, batch: int, crop: int, generator: torch.Generator) -> Tensor:
    """A batch of random crops in [-1, 1], each under a random one of the 8 dihedral symmetries.

    Uniform over images, then over crop positions inside the image; made where ``source`` lives.
    """
    device = source.stack.device
    _, channels, height, width = source.stack.shape
    index = torch.randint(len(source.sizes), (batch,), generator=generator)
    room = source.sizes[index] - crop + 1  # (batch, 2) valid top/left positions per crop
    top, left = to_device((torch.rand(batch, 2, generator=generator) * room).long(), device).unbind(1)
    flips = torch.rand(batch, 3, 1, 1, generator=generator) < 0.5
    flip_h, flip_v, transpose = to_device(flips, device).unbind(1)
    # where each output pixel comes from inside its crop; the three flips generate the 8 symmetries
    # of the square, each with probability 1/8
    i, j = torch.meshgrid(torch.arange(crop, device=device), torch.arange(crop, device=device), indexing="ij")
    rows, cols = torch.where(transpose, j, i), torch.where(transpose, i, j)
    rows = torch.where(flip_v, crop - 1 - rows, rows)
    cols = torch.where(flip_h, crop - 1 - cols, cols)
    corner = to_device(index, device) * channels * height * width + top * width + left
    pixel = corner[:, None, None] + rows * width + cols
    offsets = pixel[:, None] + (torch.arange(channels, device=device) * height * width)[None, :, None, None]
    return source.stack.view(-1)[offsets].float() / 127.5 - 1


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """A CPU tensor on ``device`` without making the CPU wait for the GPU's queue (pinned, asynchronous copy)."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def sample_timesteps(config: TrainConfig, batch: int, num_steps: int, generator: torch.Generator) -> Tensor:
    low = torch.rand(batch, generator=generator) < config.low_t_fraction
    upper = torch.where(low, torch.full((batch,), float(config.low_t_max)), torch.full((batch,), float(num_steps)))
    return (torch.rand(batch, generator=generator) * upper).long()


LOSS_WEIGHTS = ("eps", "min-snr")
MIN_SNR_GAMMA = 5.0


def loss_weights(kind: str, alpha_bar: Tensor) -> Tensor:
    """Per-crop weight of the ε-loss at noise level ᾱ (see ``TrainConfig.loss_weight``)."""
    if kind == "eps":
        return torch.ones_like(alpha_bar)
    if kind == "min-snr":
        snr = alpha_bar / (1 - alpha_bar)
        return snr.clamp(max=MIN_SNR_GAMMA) / snr
    raise RestoreError(f"unknown loss weighting '{kind}'; use one of: {', '.join(LOSS_WEIGHTS)}")


def learning_rate_scale(config: TrainConfig, step: int, optimizer_steps: int, time_progress: float | None = None) -> float:
    """Linear warm-up over this optimizer's first steps, then constant or a cosine anneal to zero.

    The anneal runs over the steps ``config.anneal_start`` → ``anneal_end``, or, when ``time_progress``
    (the share of a time budget used, 0 → 1) is given, over that budget.
    """
    warmup = min(1.0, (optimizer_steps + 1) / max(config.warmup_steps, 1))
    if time_progress is not None:
        progress = time_progress
    elif config.anneal_end <= config.anneal_start:
        return warmup
    else:
        progress = (step - config.anneal_start) / (config.anneal_end - config.anneal_start)
    return warmup * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def new_state(config: TrainConfig, device: torch.device = torch.device("cpu")) -> TrainState:
    torch.manual_seed(config.seed)
    net = UNetModel(UNetConfig.from_dict(config.unet))
    net.to(device=device, memory_format=torch.channels_last)
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    return TrainState(0, net, ema, optimizer, generator, noise_generator_for(generator, device))


def noise_generator_for(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """The CPU generator itself on the CPU; elsewhere a device generator seeded from it."""
    if device.type == "cpu":
        return generator
    return torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))


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


def load_checkpoint(path: Path, device: torch.device = torch.device("cpu")) -> tuple[TrainState, TrainConfig]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RestoreError(f"cannot resume from {path}: {err}") from None
    config = TrainConfig.from_dict(json.loads(payload["train_config"]))
    state = new_state(config, device)
    state.net.load_state_dict(payload["net"])
    state.ema.load_state_dict(payload["ema"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.generator.set_state(payload["generator"])
    state.noise_generator = noise_generator_for(state.generator, device)  # continues, not restarts, the noise
    state.step, state.seconds = int(payload["step"]), float(payload["seconds"])
    state.losses = payload["losses"].tolist()
    return state, config


def train_step(state: TrainState, config: TrainConfig, crops: CropSource, alphas_cumprod: Tensor,
               lr_scale: float, network: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """One Adam step on a fresh batch at learning rate ``config.lr * lr_scale``; returns the loss.

    The loss stays a tensor on the training device: reading it would make the CPU wait for the GPU
    every step (see ``LOSS_READ_EVERY``). ``network``: ``state.net`` or a compiled version of it.
    """
    gen, device = state.generator, alphas_cumprod.device
    network = state.net if network is None else network
    x0 = random_crops(crops, config.batch_size, config.crop, gen).contiguous(memory_format=torch.channels_last)
    t = to_device(sample_timesteps(config, config.batch_size, len(alphas_cumprod), gen), device)
    noise = torch.randn(x0.shape, generator=state.noise_generator, device=device)
    noise = noise.contiguous(memory_format=torch.channels_last)
    ab = alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    for group in state.optimizer.param_groups:
        group["lr"] = config.lr * lr_scale
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        out = network(x_t, t.float())
    per_crop = (out[:, :3].float() - noise).pow(2).mean(dim=(1, 2, 3))
    loss = (loss_weights(config.loss_weight, ab.view(-1)) * per_crop).mean()
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.net.parameters(), 1.0)
    state.optimizer.step()
    # EMA with warm-up (decay grows from 0 towards ema_decay), as in many diffusion codebases
    decay = min(config.ema_decay, (1 + state.step) / (10 + state.step))
    with torch.no_grad():
        torch._foreach_lerp_(list(state.ema.parameters()), list(state.net.parameters()), 1 - decay)
    state.step += 1
    return loss.detach()


#: an ε-prediction loss starts near 1 and falls; far above that, training has diverged
DIVERGED_LOSS = 100.0
#: on a GPU, the losses of this many steps are read at once (and checked for divergence then); on the
#: CPU, where reading costs nothing, every step's
LOSS_READ_EVERY = 20


def record_losses(state: TrainState, pending: list[Tensor], on_step: Callable[[int, float], None] | None) -> None:
    """Move the losses of the last steps into ``state.losses``; a non-finite one stops training, naming its step."""
    if not pending:
        return
    values = torch.stack(pending).float().cpu().tolist()
    first_step = state.step - len(values)
    pending.clear()
    for i, value in enumerate(values):
        if not math.isfinite(value) or value > DIVERGED_LOSS:
            raise RestoreError(f"training diverged at step {first_step + i} (loss {value:.3g}); lower --lr "
                               "(the weights saved before it are kept)")
    state.losses.extend(values)
    if on_step:
        on_step(state.step, values[-1])


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
    anneal_over_minutes: bool = False,
    device: torch.device = torch.device("cpu"),
    compile_network: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainState:
    """Train (or resume) a prior; writes ``out`` (EMA weights, safetensors), its JSON config, and ``out.ckpt``.

    Stops after ``steps`` total steps or ``minutes`` of this call, whichever comes first. Without a
    checkpoint to resume, ``init_from`` (weights saved by an earlier run, e.g. the shipped prior)
    warm-starts the network and its EMA — with a fresh optimizer — and continues its step count.
    With ``anneal_over_minutes`` the learning rate anneals to zero over the ``minutes`` budget (for a
    fixed time on a machine whose speed is not known ahead); the final config records the steps.
    ``on_step(step, loss)`` is called every step on the CPU, every ``LOSS_READ_EVERY`` steps on a GPU.
    """
    out = Path(out)
    check_request(config or TrainConfig(), minutes, anneal_over_minutes, steps, out, image_paths)
    ckpt = out.with_suffix(".ckpt")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest convolutions once
    if resume and ckpt.exists():
        wanted_anneal_end = config.anneal_end if config else 0
        state, config = load_checkpoint(ckpt, device)
        if wanted_anneal_end and wanted_anneal_end != config.anneal_end:
            # a run trained at constant rate, now asked to anneal: the anneal starts where it stands
            if wanted_anneal_end <= state.step:
                raise RestoreError(f"cannot anneal to step {wanted_anneal_end}: {ckpt} is already at step {state.step}")
            config = dataclasses.replace(config, anneal_start=state.step, anneal_end=wanted_anneal_end)
    else:
        config = config or TrainConfig()
        state = new_state(config, device)
        if init_from is not None:
            warm_start(state, config, Path(init_from))
        if config.anneal_end:
            config = dataclasses.replace(config, anneal_start=state.step)
    if anneal_over_minutes:  # a new cosine over this call's minutes, also on a resumed (even annealed) run
        config = dataclasses.replace(config, anneal_start=state.step, anneal_end=0)
    if config.anneal_end:
        steps = config.anneal_end if steps is None else min(steps, config.anneal_end)
    files = image_files(image_paths, exclude)
    crops = CropSource.from_images(load_images_uint8(files, config.crop, config.scales)).to(device)
    alphas_cumprod = torch.cumprod(1 - make_betas(config.schedule), dim=0).to(device)
    # torch.compile fuses the network's many small normalisation and activation kernels (a first step of
    # a minute or two to compile; the crop size is fixed: static shapes); state.net stays the plain module that
    # is saved and averaged
    network = torch.compile(state.net, dynamic=False) if compile_network else state.net
    pending: list[Tensor] = []
    read_every = 1 if device.type == "cpu" else LOSS_READ_EVERY
    start = time.time()
    last_save = start
    try:
        while (steps is None or state.step < steps) and (minutes is None or time.time() - start < 60 * minutes):
            t0 = time.time()
            time_progress = (t0 - start) / (60 * minutes) if anneal_over_minutes else None
            lr_scale = learning_rate_scale(config, state.step, len(state.losses) + len(pending), time_progress)
            pending.append(train_step(state, config, crops, alphas_cumprod, lr_scale, network))
            if len(pending) == read_every:
                record_losses(state, pending, on_step)
            state.seconds += time.time() - t0
            if time.time() - last_save > 60 * checkpoint_minutes:
                record_losses(state, pending, on_step)
                export(state, config, out, len(files))
                last_save = time.time()
    except KeyboardInterrupt:
        record_losses(state, pending, None)
        export(state, config, out, len(files))
        raise Interrupted(f"saved step {state.step} to {out} and {out.with_suffix('.ckpt')}; "
                          "run the same command again to resume") from None
    record_losses(state, pending, on_step)
    if anneal_over_minutes:  # what the time budget came to, in steps
        config = dataclasses.replace(config, anneal_end=state.step)
    export(state, config, out, len(files))
    return state


def train_config(*, channels: int = 32, channel_mult: str = "1,2,3,4", res_blocks: int = 1, crop: int = 64,
                 scales: str = "1", **fields) -> TrainConfig:
    """A training config from the command line's network options (checked) and any other TrainConfig fields."""
    if channels % 32:
        raise RestoreError(f"--channels must be a multiple of 32 (GroupNorm uses 32 groups), got {channels}")
    try:
        levels = [int(m) for m in channel_mult.split(",")]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1 or crop % 2 ** (len(levels) - 1):
        raise RestoreError(f"--channel-mult must be positive integers, one per level, with --crop divisible by 2^(levels-1); got '{channel_mult}'")
    try:
        shrink_factors = tuple(int(f) for f in scales.split(","))
    except ValueError:
        raise RestoreError(f"--scales must be comma-separated integers such as 1,2,4; got '{scales}'") from None
    base = TrainConfig()
    unet = {**base.unet, "num_channels": channels, "image_size": crop, "channel_mult": ",".join(map(str, levels)),
            "num_res_blocks": res_blocks}
    return dataclasses.replace(base, unet=unet, crop=crop, scales=shrink_factors, **fields)


def check_request(config: TrainConfig, minutes: float | None, anneal_over_minutes: bool, steps: int | None = None,
                  out: Path | None = None, image_paths: Sequence[str | Path] = ()) -> None:
    """What a training request cannot be, said before any work (the CLI calls it before its progress bar)."""
    if minutes is None and steps is None and not config.anneal_end:
        raise RestoreError("give --minutes, --steps or --anneal-to to say when training stops")
    if minutes is not None and not minutes > 0:
        raise RestoreError(f"--minutes must be more than 0, got {minutes}")
    if out is not None:
        check_out(Path(out), image_paths)
    if config.loss_weight not in LOSS_WEIGHTS:
        raise RestoreError(f"unknown --loss-weight '{config.loss_weight}'; use one of: {', '.join(LOSS_WEIGHTS)}")
    if not config.scales or min(config.scales) < 1:
        raise RestoreError(f"--scales must be positive integers (1 = full size), got {config.scales}")
    if anneal_over_minutes and (minutes is None or config.anneal_end):
        raise RestoreError("--anneal needs --minutes (the time it anneals over) and no --anneal-to")


def check_out(out: Path, image_paths: Sequence[str | Path]) -> None:
    """The weights file must be a .safetensors that is not a training image, not something else already there,
    and writable — found out now, not after hours of training."""
    from restore.io import make_folder

    if out.suffix != ".safetensors":
        raise RestoreError(f"--out {out} must be a .safetensors file (the weights); a .ckpt and a .json go beside it")
    if out.is_dir():
        raise RestoreError(f"--out {out} is a folder; give the weights file to write, e.g. {out / 'prior.safetensors'}")
    inputs = {Path(p).resolve() for p in image_paths}
    if out.resolve() in inputs or out.resolve().parent in inputs and out.suffix in (".png", ".jpg"):
        raise RestoreError(f"--out {out} is one of the training images")
    if out.exists():
        try:
            ours = read_info(out) is not None
        except RestoreError:
            ours = False
        if not ours:
            raise RestoreError(f"{out} exists and is not a prior written by restore; choose another --out")
    make_folder(out.parent)


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
    device = next(state.net.parameters()).device
    training = {
        "steps": state.step,
        "cpu_seconds": round(state.seconds),  # seconds of training, on whatever device it ran
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "images": num_images,
        #: the mean of the last 100 losses: what a trained prior looks like (restore warns below 2000 steps or above 0.2)
        "final_loss": round(sum(state.losses[-100:]) / len(state.losses[-100:]), 5) if state.losses else None,
        "train_config": asdict(config),
    }
    save_prior(state.ema, out, schedule=config.schedule, training=training)
