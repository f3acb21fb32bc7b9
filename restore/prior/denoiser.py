"""The one interface samplers see: a denoiser D(x_t, t) → x̂0 of a variance-preserving diffusion.

x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε with timesteps t in [0, T-1] (fractional t allowed; ᾱ is
interpolated). A subclass implements ``eps``; x̂0 and the score follow (Tweedie's formula). Network
details — padding to the UNet's multiple, grayscale through an RGB prior, mixed precision,
channels-last — stay inside :class:`UNetDenoiser`, the EDM-style preconditioning wrapper.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restore.prior.schedule import sigma_from_alpha_bar, timestep_for_sigma
from restore.prior.unet import UNetModel

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Denoiser(nn.Module):
    """Base class: ``eps(x_t, t)``; ``forward``/``denoise`` give x̂0 = E[x_0 | x_t]; ``score`` ∇ log p_t."""

    def __init__(self, betas: Tensor) -> None:
        super().__init__()
        alphas_cumprod = torch.cumprod(1 - betas.double(), dim=0)
        self.register_buffer("betas", betas.double(), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def alpha_bar(self, t: Tensor | float, like: Tensor) -> Tensor:
        """ᾱ at (possibly fractional) timesteps, shaped (B, 1, 1, 1) to broadcast against ``like``."""
        t = torch.as_tensor(t, dtype=torch.float64, device=self.alphas_cumprod.device).reshape(-1)
        lo = t.floor().long().clamp(0, self.num_timesteps - 1)
        hi = (lo + 1).clamp(max=self.num_timesteps - 1)
        frac = t - lo
        log_ab = self.alphas_cumprod.log()
        ab = torch.exp(log_ab[lo] * (1 - frac) + log_ab[hi] * frac)
        return ab.to(device=like.device, dtype=like.real.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def sigma(self, t: Tensor | float) -> Tensor:
        """Equivalent noise level σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) of x_t / sqrt(ᾱ_t)."""
        return sigma_from_alpha_bar(self.alpha_bar(t, torch.zeros(1, dtype=torch.float64)).reshape(-1))

    def eps(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        raise NotImplementedError

    def forward(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        ab = self.alpha_bar(t, x_t)
        return (x_t - (1 - ab).sqrt() * self.eps(x_t, t)) / ab.sqrt()

    denoise = forward

    def score(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """∇ log p_t(x_t) = -ε̂ / sqrt(1 - ᾱ_t)."""
        ab = self.alpha_bar(t, x_t)
        return -self.eps(x_t, t) / (1 - ab).sqrt()

    def eps_and_v(self, x_t: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor | None]:
        """ε̂ and, for priors with learned variance, v in [-1, 1] (else None) from one evaluation.

        v interpolates the reverse-step log-variance between log β̃ (v = -1) and log β (v = 1) of the
        sampler's own step (Nichol & Dhariwal 2021, eq. 15); the sampler knows its step, so it turns
        v into a variance.
        """
        return self.eps(x_t, t), None


class UNetDenoiser(Denoiser):
    """An ADM UNet predicting ε, wrapped for any image size, 1 or 3 channels and mixed precision."""

    def __init__(self, net: UNetModel, betas: Tensor, precision: str = "fp32", channels_last: bool = False,
                 compile_mode: str | None = None, clip_x0: bool = True) -> None:
        super().__init__(betas)
        #: clip x̂0 to the image range [-1, 1] (guided-diffusion's ``clip_denoised``), ε̂ following from
        #: the clipped x̂0. The projection onto the range can only bring x̂0 closer to any image; it
        #: matters at high noise, where ε̂ / sqrt(ᾱ) magnifies the network's error (x̂0 spread ±3.7 at t = 999).
        self.clip_x0 = clip_x0
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
        self.net = net.eval().requires_grad_(False)
        self.precision = precision
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        #: torch.compile of the network for fixed-shape steps ("default"; "reduce-overhead" adds CUDA
        #: graphs on a GPU); the eager module stays ``self.net`` (config, weights, state-dict names)
        self.compile_mode = compile_mode
        self._run = torch.compile(self.net, mode=compile_mode, dynamic=False) if compile_mode else self.net

    def _autocast(self, device: torch.device):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=PRECISIONS[self.precision])

    def _network(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """Raw network output (ε̂, and v when learned) at the input's size and dtype, for 1 or 3 channels."""
        channels = x_t.shape[1]
        if channels == 1:
            return self._gray(x_t, t)
        if channels != 3:
            raise ValueError(f"the prior takes 1 or 3 channels, got {channels}")
        return self._rgb(x_t, t)

    def _rgb(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        batch, _, height, width = x_t.shape
        multiple = self.net.config.size_multiple
        pad_h, pad_w = -height % multiple, -width % multiple
        x_in = x_t
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x_in = F.pad(x_t, (0, pad_w, 0, pad_h), mode=mode)
        if self.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        timesteps = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).reshape(-1).expand(batch)
        with self._autocast(x_t.device):
            out = self._run(x_in, timesteps)
        return out[..., :height, :width].to(x_t.dtype).contiguous()

    def _gray(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """A grayscale x_t through the RGB prior, as the gray image (x0, x0, x0) measured in one channel.

        Replicating x_t would put the same noise in all three channels — √3 times the noise the
        network expects along the luminance direction. Instead, one noisy channel is worth three at
        3× the variance: the RGB input is z = sqrt(ᾱ'/ᾱ) x_t in every channel plus fresh noise in the
        two chroma directions, at the timestep t' with σ_t' = √3 σ_t (ᾱ' = ᾱ / (3 - 2ᾱ)). Then the
        gray x̂0 is the channel mean of the RGB x̂0. The chroma noise is seeded from t, so the
        denoiser stays deterministic and a batch equals its images one by one.
        """
        batch, _, height, width = x_t.shape
        ab = self.alpha_bar(t, x_t).expand(batch, 1, 1, 1)
        ab3 = ab / (3 - 2 * ab)
        t3 = timestep_for_sigma(self.alphas_cumprod, sigma_from_alpha_bar(ab3.reshape(-1).double()))
        seed = int(float(torch.as_tensor(t, dtype=torch.float64).reshape(-1)[0]) * 1000) + 12345
        noise = torch.randn((3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
        chroma = (noise - noise.mean(dim=0, keepdim=True)).to(device=x_t.device, dtype=x_t.dtype)
        z = (ab3 / ab).sqrt() * x_t.expand(-1, 3, -1, -1) + (1 - ab3).sqrt() * chroma
        out = self._rgb(z, t3.to(torch.float32))
        x0 = ((z - (1 - ab3).sqrt() * out[:, :3]) / ab3.sqrt()).mean(dim=1, keepdim=True)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        if out.shape[1] > 3:  # learned variance: the channel mean of v (an approximation at t')
            return torch.cat([eps, out[:, 3:].mean(dim=1, keepdim=True)], dim=1)
        return eps

    def _clipped(self, x_t: Tensor, t: Tensor | float, eps: Tensor) -> Tensor:
        """ε̂ of the x̂0 clipped to [-1, 1] (unchanged where x̂0 is inside the range)."""
        if not self.clip_x0:
            return eps
        ab = self.alpha_bar(t, x_t)
        x0 = ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def eps(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        out = self._network(x_t, t)
        return self._clipped(x_t, t, out[:, : x_t.shape[1]])

    def eps_and_v(self, x_t: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor | None]:
        out = self._network(x_t, t)
        channels = x_t.shape[1]
        return self._clipped(x_t, t, out[:, :channels]), (out[:, channels:] if self.net.config.learn_sigma else None)
