"""Figures a person looks at: labelled side-by-side grids, and the uncertainty map with a stated scale.

Every panel of a grid is shown at the restoration's size (a 4× low-resolution input is enlarged with
nearest neighbours, so its pixels show), with its name and, where a reference exists, its PSNR / SSIM
beneath. The uncertainty (the per-pixel std of the posterior samples) is drawn on a fixed scale, so that
two maps compare: black is 0 and the brightest colour is STD_FULL_SCALE of the pixel range, with a colour
bar that says so. Text is drawn with Pillow's built-in font (no matplotlib).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from restore.io import to_display

#: the std (on the [0, 1] pixel scale) shown at the top of the uncertainty colour scale
STD_FULL_SCALE = 0.25
#: an inferno-like ramp (black → purple → red → orange → pale yellow), RGB in [0, 1]
RAMP = np.array([[0.0, 0.0, 0.02], [0.34, 0.06, 0.43], [0.73, 0.21, 0.33], [0.98, 0.55, 0.04], [0.99, 1.0, 0.64]])
CAPTION_HEIGHT, GAP = 30, 4


def colour_map(values: Tensor) -> Tensor:
    """(H, W) values in [0, 1] (clipped) → (3, H, W) RGB in [-1, 1] along RAMP."""
    v = values.detach().float().cpu().clamp(0, 1).numpy()
    position = v * (len(RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(RAMP) - 2)
    frac = (position - low)[..., None]
    rgb = RAMP[low] * (1 - frac) + RAMP[low + 1] * frac
    return torch.from_numpy(rgb.transpose(2, 0, 1)).float() * 2 - 1


def uncertainty_image(std: Tensor) -> Tensor:
    """The std map of (C, H, W) samples in library units as a colour image on the fixed scale (channel mean)."""
    return colour_map(std.float().mean(dim=0) / 2 / STD_FULL_SCALE)  # library units are twice the [0, 1] scale


def kernel_picture(kernel: Tensor) -> Tensor:
    """A blur kernel (k, k) as a (1, k, k) grayscale image in [-1, 1], its peak white (``--kernel`` reads it back
    normalised to sum 1, so the picture is the kernel up to the quantisation of the file)."""
    k = kernel.detach().double().cpu()
    return (2 * k / k.max().clamp_min(1e-30) - 1).float()[None]


def colour_bar(height: int) -> Tensor:
    """A vertical bar (3, height, 40): the colour scale of :func:`uncertainty_image` with its end values."""
    ramp = torch.linspace(1, 0, height)[:, None].expand(height, 12)
    bar = torch.cat([colour_map(ramp), torch.ones(3, height, 28)], dim=2)
    return _draw_text(bar, [(14, 0, f"{STD_FULL_SCALE:g}"), (14, height - 12, "0")], size=10)


def grid(panels: Sequence[Tensor], labels: Sequence[str], captions: Sequence[str] | None = None,
         size: tuple[int, int] | None = None, bar: bool = False) -> Tensor:
    """Panels (C, H, W) side by side at ``size`` (default: the second panel's — the restoration's), each with its
    label and optional caption (e.g. "24.1 dB / 0.81") beneath; ``bar`` appends the uncertainty colour bar."""
    height, width = size or tuple(panels[min(1, len(panels) - 1)].shape[-2:])
    tiles = []
    captions = list(captions or [""] * len(panels))
    for image, label, caption in zip(panels, labels, captions):
        tile = to_display(image, (height, width))
        tile = tile.expand(3, -1, -1) if tile.shape[0] == 1 else tile
        text = torch.ones(3, CAPTION_HEIGHT, width)
        text = _draw_text(text, [(2, 1, label), (2, 15, caption)], size=11)
        tiles.append(torch.cat([tile, text], dim=1))
        tiles.append(torch.ones(3, height + CAPTION_HEIGHT, GAP))
    if bar:
        tiles.append(torch.cat([colour_bar(height), torch.ones(3, CAPTION_HEIGHT, 40)], dim=1))
    else:
        tiles = tiles[:-1]
    return torch.cat(tiles, dim=2)


def _draw_text(image: Tensor, texts: list[tuple[int, int, str]], size: int) -> Tensor:
    """Black text drawn onto a (3, H, W) image in [-1, 1] at (x, y) pixel positions."""
    from PIL import Image, ImageDraw, ImageFont

    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    canvas = Image.fromarray(np.ascontiguousarray(array))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=size)
    for x, y, text in texts:
        if text:
            draw.text((x, y), text, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 127.5 - 1
