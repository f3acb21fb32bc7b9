"""Regenerate sample_data/: five public-domain test images shipped with scikit-image, inpainting masks
(white = missing) matched to them by file name, and two blur kernels.

    python sample_data/make_sample_data.py

Images are scaled so that their longer side is 256 pixels (odd sizes on purpose: restore handles any
size); ``camera`` stays grayscale. Masks are free-form brush strokes plus a box, drawn by the
library's own seeded ``strokes`` operator, so the same files come out every time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from skimage import data
from skimage.transform import resize

import operators
from restore.io import write_image

HERE = Path(__file__).parent
IMAGES = ["astronaut", "camera", "chelsea", "coffee", "rocket"]
LONG_SIDE = 256


def load(name: str) -> torch.Tensor:
    """(C, H, W) in [-1, 1], the longer side scaled to LONG_SIDE with antialiasing."""
    image = getattr(data, name)().astype(np.float64) / 255.0
    scale = LONG_SIDE / max(image.shape[:2])
    shape = (round(image.shape[0] * scale), round(image.shape[1] * scale))
    image = resize(image, shape, anti_aliasing=True)
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float() * 2 - 1


def mask_for(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """(1, H, W) with 1 = missing: brush strokes from the ``strokes`` operator plus a box from ``box``."""
    missing = torch.zeros(1, *shape[1:])
    for spec in (f"strokes:seed={seed}", f"box:{min(shape[1:]) // 4}:seed={seed}"):
        kept = operators.build(spec, (1, *shape[1:])).A(torch.ones(1, 1, *shape[1:]))[0]
        missing = torch.maximum(missing, 1 - kept)
    return missing


def main() -> None:
    for index, name in enumerate(IMAGES):
        image = load(name)
        write_image(HERE / "images" / f"{name}.png", image)
        write_image(HERE / "masks" / f"{name}.png", mask_for(tuple(image.shape), index) * 2 - 1)
    (HERE / "kernels").mkdir(exist_ok=True)
    kernels = np.load(Path(operators.__file__).parent / "data" / "levin09_motion_kernels.npz")
    np.save(HERE / "kernels" / "levin_k3.npy", kernels["k3"])
    x = np.arange(15) - 7
    gaussian = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 2.0**2))
    write_image(HERE / "kernels" / "gaussian_15_2.png", torch.from_numpy(gaussian / gaussian.max())[None].float() * 2 - 1)
    print(f"wrote {len(IMAGES)} images, masks and 2 kernels under {HERE}")


if __name__ == "__main__":
    main()
