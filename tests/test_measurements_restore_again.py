"""Outputs feed back in: every measurement restore saves (--simulate) restores again, as a real measurement,
to the same result — for every task.

The saved measurement is what the command reads (a 16-bit picture, an .npz of k-space with its mask and
intensity scale, a sinogram of the [0, 1] image, Fourier magnitudes). Between the two runs only float rounding differs (the
saved values pass through [0, 1] units and 16 bits), so the two restorations agree to a few 1e-3.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from restore.io import read_image, write_image
from restore.metrics import psnr

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "images"

TASKS = [
    (["inpaint"], ["--mask", "box:6"], "png"),
    (["deblur", "--kernel", "gaussian:5:1.0"], [], "png"),
    (["deblur", "--kernel", "gaussian:5:1.0", "--boundary", "valid"], [], "png"),
    (["superres", "--scale", "2"], [], "png"),
    (["denoise", "--noise-sigma", "0.1"], [], "png"),
    (["colorize"], [], "png"),
    (["mri", "--acceleration", "2"], [], "npz"),
    (["ct", "--angles", "12"], [], "npy"),
    (["phase"], [], "npy"),
]


@pytest.mark.parametrize("command, extra, suffix", TASKS, ids=[" ".join(t[0]) for t in TASKS])
def test_a_saved_measurement_restores_again_to_the_same_result(tmp_path, command, extra, suffix, one_thread):
    image = tmp_path / "x.png"
    photo = read_image(SAMPLE / "chelsea.png").pixels[:, 60:84, 100:132]  # a natural crop (24 × 32; square for CT)
    write_image(image, photo[:, :, :24] if command[0] == "ct" else photo)
    common = ["--precision", "fp32", "--quiet"]  # the shipped prior at its default steps: a random one (or 2 steps) is chaotic
    simulate = [] if command[0] == "inpaint" else ["--simulate"]
    first = CliRunner().invoke(app, [command[0], str(image), *command[1:], *extra, *simulate, *common, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    measurement = tmp_path / "a" / "measurement" / f"x.{suffix}"
    assert measurement.is_file()
    if command[0] == "ct":
        extra = [*extra, "--size", "24"]  # a sinogram does not say its image size (it holds 35 detectors: √2 · 24)
    if command[0] == "phase":
        extra = [*extra, "--reference", str(image)]  # as --simulate did: the result turned to match it (or not) alike
    if command[0] in ("deblur", "superres"):
        extra = [*extra, "--noise-sigma", "0.01"]  # the simulation's σ: a real input's would be estimated, on 768 pixels
    again = CliRunner().invoke(app, [command[0], str(measurement), *command[1:], *extra, *common, "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    one, two = (read_image(tmp_path / d / "x.png").pixels.float() for d in ("a", "b"))
    assert one.shape == two.shape
    assert float(psnr(two[None], one[None])) > 40, float(psnr(two[None], one[None]))


def test_a_saved_jpeg_restores_again_to_the_same_result(tmp_path, one_thread):
    """dejpeg --simulate saves the JPEG file itself (Pillow's, bit-exact with restore's encoder): its coefficients
    are the measurement, so a second run on the file restores the same image, and the result re-encodes to them."""
    image = tmp_path / "x.png"
    write_image(image, read_image(SAMPLE / "chelsea.png").pixels[:, 60:92, 100:148])
    common = ["--steps", "10", "--precision", "fp32", "--quiet", "--json"]
    first = CliRunner().invoke(app, ["dejpeg", str(image), "--simulate", "--quality", "10", *common, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    note = json.loads(first.stdout)["images"][0]["notes"]
    share = float(re.search(r"re-encodes ([0-9.]+)% of them exactly", note).group(1))
    assert share >= 99.0, note  # the saved 8-bit picture's rounding may move a few coefficients out of their bins
    again = CliRunner().invoke(app, ["dejpeg", str(tmp_path / "a" / "measurement" / "x.jpg"), *common, "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    one, two = (read_image(tmp_path / d / "x.png").pixels.float() for d in ("a", "b"))
    assert float(psnr(two[None], one[None])) > 40


def test_linear_only_samplers_refuse_a_jpeg_naming_those_that_can(tmp_path):
    image = tmp_path / "x.png"
    write_image(image, read_image(SAMPLE / "chelsea.png").pixels[:, :16, :16])
    result = CliRunner().invoke(app, ["dejpeg", str(image), "--simulate", "--quality", "30", "--sampler", "ddrm",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "ddrm needs a linear operator" in result.stderr
    assert "dps" in result.stderr and "reddiff" in result.stderr and "daps" in result.stderr
