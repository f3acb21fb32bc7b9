"""The README's JPEG picture: a photograph saved at quality 15 by Pillow, restored by ``restore dejpeg``.

    python docs/make_jpeg_figure.py        # writes docs/dejpeg_chelsea.png (about a minute on CPU)

``sample_data/images/chelsea.png`` is saved as an ordinary JPEG file (Pillow, quality 15, its default 4:2:0
chroma), and ``restore dejpeg`` restores that file from its own tables, as it would any JPEG a user brings: with
DPIR over the diffusion prior (``--sampler dpir``) and with the default, the JPEG deblocker. The figure shows a
crop (the eye and the fur around it) enlarged 3× without smoothing: the decoded JPEG | DPIR | the deblocker |
the original, with PSNR and SSIM of the whole image under each.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image as PILImage

from restore.figures import grid
from restore.io import read_image, write_image
from restore.metrics import psnr, ssim

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ORIGINAL = ROOT / "sample_data" / "images" / "chelsea.png"
QUALITY = 15
#: top, left, size of the crop (the cat's left eye) and its enlargement
CROP, ZOOM = (35, 135, 90), 3
#: the diffusion prior's best method before the deblocker, and the deblocker (the default)
METHODS = ("dpir", "deblock")


def crop(pixels: torch.Tensor) -> torch.Tensor:
    top, left, size = CROP
    part = pixels[:, top : top + size, left : left + size]
    return part.repeat_interleave(ZOOM, dim=1).repeat_interleave(ZOOM, dim=2)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jpeg = work / f"chelsea_q{QUALITY}.jpg"
        PILImage.open(ORIGINAL).convert("RGB").save(jpeg, quality=QUALITY)
        results = []
        for method in METHODS:
            out = work / method
            subprocess.run([sys.executable, "-m", "restore", "dejpeg", str(jpeg), "--out", str(out), "--sampler", method,
                            "--quiet"], check=True, cwd=ROOT)
            results.append(read_image(out / f"{jpeg.stem}.png").pixels)
        decoded = read_image(jpeg).pixels
    original = read_image(ORIGINAL).pixels
    panels, captions = [], []
    for image in (decoded, *results, original):
        panels.append(crop(image))
        captions.append("" if image is original else
                        f"{float(psnr(image[None], original[None])):.2f} dB, SSIM {float(ssim(image[None], original[None])):.3f}")
    labels = [f"JPEG, quality {QUALITY} (Pillow)", "--sampler dpir", "restore dejpeg (deblock)", "original"]
    write_image(HERE / "dejpeg_chelsea.png", grid(panels, labels, captions))
    print(f"wrote {HERE / 'dejpeg_chelsea.png'}")


if __name__ == "__main__":
    main()
