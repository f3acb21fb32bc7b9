"""The README's large-holes and colour pictures: the sample images restored before and after this project's changes.

    python docs/make_holes_figures.py        # writes docs/holes_sample_data.png and docs/colour_sample_data.png
                                             # (a few minutes on CPU)

Each row, one sample image: measurement | before | after (what ``restore inpaint`` / ``restore colorize`` runs now) |
reference. Inpainting, the quick start: before is the old default, DiffPIR ζ 1 for every mask; beneath, hole PSNR
and texture ratio (restore.metrics). Colourisation (the colour sample images): before is the old default, DiffPIR
ζ 0.6 with the prior's colour cast kept; beneath, colourfulness ratio and chroma error.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from operators.inpaint import read_mask
from restore.figures import grid
from restore.io import read_image, write_image
from restore.metrics import chroma_error, colourfulness, hole_psnr, texture_ratio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAMES = ("astronaut", "camera", "chelsea", "coffee", "rocket")
COLOUR_NAMES = ("astronaut", "chelsea", "coffee", "rocket")  # camera.png is gray already


def restore(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "restore", *args, "--quiet"], check=True, cwd=ROOT)


def stacked(rows: list[torch.Tensor]) -> torch.Tensor:
    """Rows of panels one above the other, right-padded with white to the widest."""
    width = max(row.shape[-1] for row in rows)
    return torch.cat([torch.nn.functional.pad(row, (0, width - row.shape[-1]), value=1.0) for row in rows], dim=-2)


def figure(names, before: Path, after: Path, labels: list[str], captions, out: Path) -> None:
    """One row per name: measurement | before | after | reference; ``captions(name, restorations, reference)``."""
    rows = []
    for name in names:
        reference = read_image(ROOT / "sample_data" / "images" / f"{name}.png").pixels
        panels = [read_image(before / "measurement" / f"{name}.png").pixels.expand(3, -1, -1)]
        panels += [read_image(folder / f"{name}.png").pixels for folder in (before, after)]
        rows.append(grid(panels + [reference], ["measurement", *labels, "reference"],
                         ["", *captions(name, panels[1:], reference), ""], size=tuple(reference.shape[-2:])))
    write_image(out, stacked(rows))


def hole_captions(name: str, restorations, reference) -> list[str]:
    missing = read_mask(ROOT / "sample_data" / "masks" / f"{name}.png", tuple(reference.shape)) < 0.5
    return [f"hole {float(hole_psnr(x[None], reference[None], missing)):.2f} dB, "
            f"texture {float(texture_ratio(x[None], reference[None], missing)):.2f}" for x in restorations]


def colour_captions(name: str, restorations, reference) -> list[str]:
    return [f"colourfulness {float(colourfulness(x[None]) / colourfulness(reference[None])):.2f}, "
            f"chroma error {float(chroma_error(x[None], reference[None])):.3f}" for x in restorations]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images, masks = "sample_data/images", "sample_data/masks"
        restore("inpaint", images, "--mask", masks, "--sampler", "diffpir", "--out", str(work / "inpaint_before"))
        restore("inpaint", images, "--mask", masks, "--out", str(work / "inpaint_after"))
        figure(NAMES, work / "inpaint_before", work / "inpaint_after",
               ["before: DiffPIR (the default until session 18)", "after: the default now"], hole_captions,
               HERE / "holes_sample_data.png")
        colour = work / "colour_images"
        colour.mkdir()
        for name in COLOUR_NAMES:
            (colour / f"{name}.png").symlink_to(ROOT / images / f"{name}.png")
        restore("colorize", str(colour), "--simulate", "--keep-cast", "--set", "zeta=0.6", "--out", str(work / "colour_before"))
        restore("colorize", str(colour), "--simulate", "--out", str(work / "colour_after"))
        figure(COLOUR_NAMES, work / "colour_before", work / "colour_after",
               ["before: cast kept (old default)", "after: the default now"],
               colour_captions, HERE / "colour_sample_data.png")
    print(f"wrote {HERE / 'holes_sample_data.png'} and {HERE / 'colour_sample_data.png'}")


if __name__ == "__main__":
    main()
