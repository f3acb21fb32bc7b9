"""The ADM UNet of guided-diffusion (Dhariwal & Nichol, "Diffusion Models Beat GANs on Image
Synthesis", NeurIPS 2021), written anew with the same module tree and parameter names, so that
the public checkpoints (``ffhq_10m.pt`` of DPS, ``256x256_diffusion_uncond.pt`` of DDRM and RED-Diff)
load unchanged and our own weights load in guided-diffusion's ``create_model``.

The network maps (x_t, t) to ε̂ (3 channels) or to ε̂ and the variance interpolation v (6 channels
when ``learn_sigma``). It knows nothing of noise schedules; see :mod:`restore.prior.denoiser`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    """guided-diffusion's ``model_and_diffusion_defaults`` keys that shape the network.

    Same names and meanings as ``guided_diffusion.script_util.create_model``, so a saved config
    can be passed to it as keyword arguments.
    """

    image_size: int = 256
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: str = ""
    learn_sigma: bool = False
    class_cond: bool = False
    use_checkpoint: bool = False
    attention_resolutions: str = "16,8"
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    dropout: float = 0.0
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False

    @classmethod
    def from_dict(cls, config: dict) -> UNetConfig:
        """Build from a guided-diffusion config dict; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown UNet config keys: {', '.join(sorted(unknown))}")
        values = dict(config)
        for key in ("channel_mult", "attention_resolutions"):
            value = values.get(key, "")
            if isinstance(value, int):  # guided-diffusion configs may give a single resolution as a number
                values[key] = str(value)
            elif not isinstance(value, str):
                values[key] = ",".join(str(v) for v in value)
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def multipliers(self) -> tuple[int, ...]:
        """Channel multiplier per resolution level (guided-diffusion's defaults when empty)."""
        if self.channel_mult:
            return tuple(int(m) for m in self.channel_mult.split(","))
        defaults = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if self.image_size not in defaults:
            raise ValueError(f"no default channel_mult for image_size {self.image_size}; give channel_mult")
        return defaults[self.image_size]

    @property
    def attention_downsamplings(self) -> tuple[int, ...]:
        """Downsampling factors at which attention is applied (image_size // resolution)."""
        if not self.attention_resolutions:
            return ()
        return tuple(self.image_size // int(r) for r in str(self.attention_resolutions).split(","))

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_sigma else 3

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (one halving per level below the top)."""
        return 2 ** (len(self.multipliers) - 1)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, guided-diffusion's layout: [cos, sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input precision (as guided-diffusion does)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 or x.dtype == torch.float64:
            return super().forward(x)
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).type(x.dtype)


def normalization(channels: int) -> nn.GroupNorm:
    return GroupNorm32(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer so that a fresh residual branch starts as the identity."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class TimestepBlock(nn.Module):
    """A module that takes the timestep embedding as a second input."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that passes the timestep embedding to the children that take it."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then optionally a 3×3 convolution (parameter name ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3×3 convolution or 2×2 average pooling (parameter name ``op``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep by scale-shift (FiLM) of its second normalisation."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(
            normalization(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions, computed with PyTorch's fused attention.

    ``legacy_order`` selects guided-diffusion's QKVAttentionLegacy layout of the qkv channels
    (heads outermost, then q/k/v) used by its public checkpoints; otherwise q, k, v outermost.
    """

    def __init__(self, channels: int, num_heads: int, num_head_channels: int, legacy_order: bool = True) -> None:
        super().__init__()
        self.num_heads = channels // num_head_channels if num_head_channels != -1 else num_heads
        self.legacy_order = legacy_order
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length, head_ch = qkv.shape[-1], c // self.num_heads
        if self.legacy_order:
            q, k, v = qkv.reshape(b, self.num_heads, 3 * head_ch, length).split(head_ch, dim=2)
        else:
            q, k, v = (part.reshape(b, self.num_heads, head_ch, length) for part in qkv.chunk(3, dim=1))
        # (b, heads, length, head_ch) contiguous: strided inputs send SDPA on CPU to its math kernel, which
        # materialises the length² matrix (1024² image: 10 GB, 21 s per call; contiguous: 1–2 s, no matrix)
        q, k, v = (part.transpose(-1, -2).contiguous() for part in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        h = self.proj_out(out.transpose(-1, -2).reshape(b, c, length))
        return (x + h).reshape(b, c, *spatial)


class UNetModel(nn.Module):
    """guided-diffusion's UNetModel (unconditional, 2-D, RGB in)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.class_cond:
            raise ValueError("class-conditional ADM models are not supported (restore uses unconditional priors)")
        self.config = config
        mc = config.num_channels
        mults = config.multipliers
        attention_ds = config.attention_downsamplings
        heads_up = config.num_heads if config.num_heads_upsample == -1 else config.num_heads_upsample
        legacy = not config.use_new_attention_order
        emb_dim = 4 * mc

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, config.num_head_channels, legacy)

        def resblock(ch: int, out: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch, emb_dim, config.dropout, out, config.use_scale_shift_norm, up=up, down=down)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        ch = int(mults[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(3, ch, 3, padding=1))])
        skip_channels = [ch]
        ds = 1
        for level, mult in enumerate(mults):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [resblock(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in attention_ds:
                    layers.append(attention(ch, config.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(mults) - 1:
                down = resblock(ch, ch, down=True) if config.resblock_updown else Downsample(ch, True)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(resblock(ch, ch), attention(ch, config.num_heads), resblock(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(mults))[::-1]:
            for i in range(config.num_res_blocks + 1):
                layers = [resblock(ch + skip_channels.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in attention_ds:
                    layers.append(attention(ch, heads_up))
                if level and i == config.num_res_blocks:
                    layers.append(resblock(ch, ch, up=True) if config.resblock_updown else Upsample(ch, True))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(int(mults[0] * mc), config.out_channels, 3, padding=1)))

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        """ε̂ (and v when learn_sigma) for images x at (possibly fractional) timesteps of shape (B,)."""
        emb = self.time_embed(timestep_embedding(timesteps, self.config.num_channels).to(self.time_embed[0].weight.dtype))
        h = x.type(self.time_embed[0].weight.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h).type(x.dtype)
