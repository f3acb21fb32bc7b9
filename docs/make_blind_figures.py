"""The README's blind-deblurring pictures: restore deblur with no kernel on two blurry photographs.

    python docs/make_blind_figures.py        # writes docs/blind_clock.png and docs/blind_chelsea.png (a few minutes on CPU)

1. ``clock_motion.png`` as scikit-image ships it (``skimage.data.clock()``): a real motion-blurred
   photograph, no ground truth; its blur is longer than the default 31 px support, hence ``auto:61``.
2. ``sample_data/images/chelsea.png`` blurred (reflecting borders, noise σ 0.01) by a synthetic camera
   shake that is not one of the Levin et al. kernels (``motion:21:0.6``, restore's random-trajectory
   generator), then restored without the kernel; the reference gives the PSNR.

Each figure is the command's own ``--save-grid`` picture: measurement | restoration | (reference) | estimated kernel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def restore(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "restore", *args, "--quiet"], check=True, cwd=ROOT)


def main() -> None:
    from skimage import data

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clock = work / "clock_motion.png"
        iio.imwrite(clock, data.clock())
        restore("deblur", str(clock), "--kernel", "auto:61", "--out", str(work / "clock"), "--save-grid")
        shutil.copy(work / "clock" / "grid" / "clock_motion.png", HERE / "blind_clock.png")

        restore("deblur", "sample_data/images/chelsea.png", "--simulate", "--kernel", "motion:21:0.6", "--noise-sigma", "0.01",
                "--out", str(work / "shaken"))
        blurry = work / "shaken" / "measurement" / "chelsea.png"
        restore("deblur", str(blurry), "--reference", "sample_data/images/chelsea.png", "--out", str(work / "chelsea"), "--save-grid")
        shutil.copy(work / "chelsea" / "grid" / "chelsea.png", HERE / "blind_chelsea.png")
    print(f"wrote {HERE / 'blind_clock.png'} and {HERE / 'blind_chelsea.png'}")


if __name__ == "__main__":
    main()
