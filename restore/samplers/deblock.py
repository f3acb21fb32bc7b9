"""The JPEG deblocker as a method of the ``dejpeg`` task: the decoded file through the prior's network
fine-tuned on JPEG artifacts (:mod:`restore.prior.deblocker`), at the strength the file's tables say.

Not a posterior sampler and not a use of the prior: one estimate from its own network (``denoiser``, the
prior, goes unused). With ``ensemble`` n > 1 the network also sees the file turned by the first n of the
8 flips and rotations of the square and the n results, turned back, are averaged (the geometric
self-ensemble of restoration networks, n network evaluations). The block grid is kept under every turn by
padding the file, as a JPEG encoder pads, to whole 16-pixel blocks first. Large files go through the
network in overlapping tiles on the block grid (``tile``), blended linearly across the overlaps: memory stays
that of one tile whatever the photograph's size, and the network sees inputs of about the size it was trained on. The task then projects the result onto the file's
quantisation bins (``restore dejpeg``'s ``--project``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from restore.prior.deblocker import SHIPPED_WEIGHTS, deblock, load_deblocker
from restore.samplers.base import Callback, Generators, require
from restore.samplers.dpir import dihedral, dihedral_inverse

#: JPEG's largest block (a 4:2:0 MCU): padding to it keeps the block grid in place under flips and turns
MCU = 16
#: pixels two neighbouring tiles share, over which the one's result fades into the other's
OVERLAP = 32


@dataclass(frozen=True)
class DeblockParams:
    #: how many of the 8 flips and rotations to average (1: the file as it is; more buy little for their time:
    #: RESULTS.md "Session 20: the JPEG deblocker")
    ensemble: int = 1
    #: the deblocker's weights: "shipped" (those restore ships) or a file written by ``restore train-deblocker``
    weights: str = "shipped"
    #: side of the square tiles the file is deblocked in (a multiple of 16). Small, near the 64-pixel crops the network
    #: was trained on: its GroupNorm layers normalise over the whole input, and over a whole photograph their
    #: statistics are not those of training (a whole large file comes out worse than the decoded one: RESULTS.md
    #: "Session 20: the JPEG deblocker")
    tile: int = 128

    def __post_init__(self) -> None:
        require(type(self.ensemble) is int and 1 <= self.ensemble <= 8, f"deblock needs ensemble in 1..8, got {self.ensemble!r}")
        require(type(self.tile) is int and self.tile % MCU == 0 and self.tile > 2 * OVERLAP,
                f"deblock needs a tile that is a multiple of {MCU} above {2 * OVERLAP}, got {self.tile!r}")
        require(self.weights == "shipped" or Path(self.weights).is_file(),
                f"deblock: no weights file {self.weights} (--set weights=FILE takes one written by restore train-deblocker)")


def tile_starts(size: int, tile: int) -> list[int]:
    """First rows (or columns) of tiles covering ``size`` (a multiple of 16), each a multiple of 16, neighbours
    sharing at least OVERLAP pixels."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - OVERLAP))
    return starts + [size - tile]


def fade(length: int, first: bool, last: bool, like: Tensor) -> Tensor:
    """A tile's weights along one side: rising over the overlap it shares with the tile before, falling over the next's."""
    ramp = (torch.arange(OVERLAP, dtype=like.dtype, device=like.device) + 0.5) / OVERLAP
    w = torch.ones(length, dtype=like.dtype, device=like.device)
    if not first:
        w[:OVERLAP] = ramp
    if not last:
        w[-OVERLAP:] = torch.minimum(w[-OVERLAP:], ramp.flip(0))
    return w


def tiled(restore_tile, image: Tensor, tile: int) -> Tensor:
    """``restore_tile`` applied to overlapping tiles of ``image`` (sides multiples of 16), blended across the overlaps."""
    height, width = image.shape[-2:]
    rows, cols = tile_starts(height, tile), tile_starts(width, tile)
    if len(rows) == len(cols) == 1:
        return restore_tile(image)
    total, weight = torch.zeros_like(image), torch.zeros_like(image[:1, :1])
    h, w = min(tile, height), min(tile, width)
    for i, top in enumerate(rows):
        for j, left in enumerate(cols):
            part = restore_tile(image[..., top : top + h, left : left + w])
            mask = fade(h, i == 0, i == len(rows) - 1, image)[:, None] * fade(w, j == 0, j == len(cols) - 1, image)[None, :]
            total[..., top : top + h, left : left + w] += part * mask
            weight[..., top : top + h, left : left + w] += mask
    return total / weight


def deblock_jpeg(denoiser, operator, y: Tensor, *, noise=None, steps: int = 1, generator: Generators = None,
                 callback: Callback | None = None, params: DeblockParams | None = None) -> Tensor:
    """The deblocked decoded file, (B, C, H, W) in [-1, 1]; ``steps``, ``noise`` and ``generator`` are not used."""
    params = params or DeblockParams()
    precision = getattr(denoiser, "precision", "fp32")
    network = load_deblocker(str(y.device), precision, str(SHIPPED_WEIGHTS) if params.weights == "shipped" else params.weights)
    decoded = operator.pinv(y).clamp(-1, 1)
    height, width = decoded.shape[-2:]
    padded = F.pad(decoded, (0, -width % MCU, 0, -height % MCU), mode="replicate")
    quant = operator.quant

    def ensemble(part: Tensor) -> Tensor:
        turns = [dihedral_inverse(deblock(network, dihedral(part, k), quant), k) for k in range(params.ensemble)]
        return torch.stack(turns).mean(dim=0)

    x = tiled(ensemble, padded, params.tile)[..., :height, :width]
    if callback is not None:
        callback({"step": 0, "total": 1, "t": 0.0, "x": x, "x0": x})
    return x


def deblock_nfe(steps: int, params: DeblockParams) -> int:
    return params.ensemble
