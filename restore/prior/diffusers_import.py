"""Priors saved as diffusers ``UNet2DModel`` folders (optional: ``pip install 'restore[diffusers]'``).

The folder is the model's (``config.json`` + weights); the DDPM schedule comes from a
``scheduler_config.json`` in it or in a sibling ``scheduler/`` folder (the pipeline layout), else
DDPM's linear schedule. Only ε-prediction models are accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from restore.errors import RestoreError
from restore.prior.denoiser import Denoiser
from restore.prior.schedule import make_betas


class DiffusersDenoiser(Denoiser):
    """ε from a diffusers UNet2DModel, padded to its size multiple like :class:`UNetDenoiser`."""

    def __init__(self, model, betas: Tensor) -> None:
        super().__init__(betas)
        self.model = model.eval().requires_grad_(False)
        self.multiple = 2 ** (len(model.config.block_out_channels) - 1)

    def eps(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        batch, channels, height, width = x_t.shape
        x_in = x_t.expand(-1, 3, -1, -1) if channels == 1 and self.model.config.in_channels == 3 else x_t
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h or pad_w:
            x_in = F.pad(x_in, (0, pad_w, 0, pad_h), mode="reflect")
        timesteps = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).reshape(-1).expand(batch)
        out = self.model(x_in.to(self.model.dtype), timesteps).sample[..., :height, :width].to(x_t.dtype)
        out = out[:, : x_in.shape[1]]
        return out.mean(dim=1, keepdim=True) if channels == 1 and out.shape[1] == 3 else out


def scheduler_betas(folder: Path) -> Tensor:
    for candidate in (folder / "scheduler_config.json", folder.parent / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            config = json.loads(candidate.read_text())
            if config.get("prediction_type", "epsilon") != "epsilon":
                raise RestoreError(f"{folder}: only ε-prediction models are supported, got {config['prediction_type']}")
            steps = int(config.get("num_train_timesteps", 1000))
            start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
            if config.get("beta_schedule", "linear") == "linear":
                return torch.linspace(start, end, steps, dtype=torch.float64)
            if config.get("beta_schedule") == "squaredcos_cap_v2":
                return make_betas("cosine")
            raise RestoreError(f"{candidate}: unsupported beta_schedule {config.get('beta_schedule')}")
    return make_betas("linear")


def load_diffusers_unet(folder: Path, *, device: str | torch.device = "cpu", precision: str = "fp32") -> DiffusersDenoiser:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise RestoreError(f"{folder} is a folder: loading diffusers models needs `pip install 'restore[diffusers]'`") from None
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    try:
        model = UNet2DModel.from_pretrained(str(folder), torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise RestoreError(f"cannot load a diffusers UNet2DModel from {folder}: {err}") from None
    return DiffusersDenoiser(model, scheduler_betas(folder)).to(device)
