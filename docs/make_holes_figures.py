"""The README's large-holes picture: the quick start's inpainting before and after the mask-aware defaults.

    python docs/make_holes_figures.py        # writes docs/holes_sample_data.png (about a minute on CPU)

Each row, one of the five sample images: measurement | before (the old default, DiffPIR ζ 1 for every mask) | after
(what ``restore inpaint`` runs now) | reference, with hole PSNR and texture ratio (restore.metrics) beneath.
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
from restore.metrics import hole_psnr, texture_ratio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAMES = ("astronaut", "camera", "chelsea", "coffee", "rocket")


def restore(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "restore", *args, "--quiet"], check=True, cwd=ROOT)


def stacked(rows: list[torch.Tensor]) -> torch.Tensor:
    """Rows of panels one above the other, right-padded with white to the widest."""
    width = max(row.shape[-1] for row in rows)
    return torch.cat([torch.nn.functional.pad(row, (0, width - row.shape[-1]), value=1.0) for row in rows], dim=-2)


def figure(before: Path, after: Path, out: Path) -> None:
    rows = []
    for name in NAMES:
        reference = read_image(ROOT / "sample_data" / "images" / f"{name}.png").pixels
        panels = [read_image(before / "measurement" / f"{name}.png").pixels]
        panels += [read_image(folder / f"{name}.png").pixels for folder in (before, after)]
        labels = ["measurement", "before: DiffPIR (the default until session 18)", "after: the default now", "reference"]
        rows.append(grid(panels + [reference], labels, ["", *hole_captions(name, panels[1:], reference), ""],
                         size=tuple(reference.shape[-2:])))
    write_image(out, stacked(rows))


def hole_captions(name: str, restorations, reference) -> list[str]:
    missing = read_mask(ROOT / "sample_data" / "masks" / f"{name}.png", tuple(reference.shape)) < 0.5
    return [f"hole {float(hole_psnr(x[None], reference[None], missing)):.2f} dB, "
            f"texture {float(texture_ratio(x[None], reference[None], missing)):.2f}" for x in restorations]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images, masks = "sample_data/images", "sample_data/masks"
        restore("inpaint", images, "--mask", masks, "--sampler", "diffpir", "--out", str(work / "inpaint_before"))
        restore("inpaint", images, "--mask", masks, "--out", str(work / "inpaint_after"))
        figure(work / "inpaint_before", work / "inpaint_after", HERE / "holes_sample_data.png")
    print(f"wrote {HERE / 'holes_sample_data.png'}")


if __name__ == "__main__":
    main()
