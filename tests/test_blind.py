"""Blind deblurring (restore.blind) on tiny images with an exact Gaussian-process denoiser — no network.

The prior is a stationary Gaussian process on the periodic grid (power spectrum ∝ 1 / (ε + |f|²)^α in
cycles per pixel), whose MMSE denoiser is a Wiener filter at every size, so the pyramid's levels all
have an exact denoiser. Test images are piecewise constant (a few rectangles and a disc): the strong
edges the kernel estimate relies on.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from operators.blur import make_blur, motion_kernel
from restore.blind import (BlindParams, align_to_reference, blind_deblur, classical_blind_baseline, estimate_kernel,
                           kernel_ncc)
from restore.errors import RestoreError
from restore.metrics import psnr
from restore.prior.denoiser import Denoiser
from restore.prior.schedule import linear_betas

SIZE = 48
KERNEL = 9
SIGMA = 0.02  # library units


class StationaryGPDenoiser(Denoiser):
    """Exact x̂0 = E[x0 | x_t] for x0 ~ mean + a periodic stationary Gaussian process, any image size."""

    def __init__(self, mean: float = 0.0, scale: float = 0.5, alpha: float = 1.0, eps: float = 1e-3) -> None:
        super().__init__(linear_betas())
        self.mean, self.scale, self.alpha, self.eps = mean, scale, alpha, eps

    def _spectrum(self, h: int, w: int) -> torch.Tensor:
        fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
        s = 1 / (self.eps + fx**2 + fy**2) ** self.alpha
        return self.scale**2 * s / s.mean()  # per-pixel variance about scale²

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        a = self.alpha_bar(t, x_t).sqrt().double()
        h, w = x_t.shape[-2:]
        s = self._spectrum(h, w)
        gain = a * s / (a * a * s + (1 - a * a))
        spectrum = torch.fft.rfft2(x_t.double() - a * self.mean) * gain
        return (self.mean + torch.fft.irfft2(spectrum, s=(h, w))).to(x_t.dtype)

    denoise = forward

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        ab = self.alpha_bar(t, x_t)
        return (x_t - ab.sqrt() * self.forward(x_t, t)) / (1 - ab).sqrt()


def shapes_image(size: int = SIZE, channels: int = 1) -> torch.Tensor:
    """(1, C, size, size) in [-1, 1]: rectangles at several orientations of edge and a disc."""
    ii, jj = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    x = torch.full((size, size), -0.6, dtype=torch.float64)
    x[6:20, 5:30] = 0.5
    x[26:42, 24:34] = 0.9
    x[((ii - 33) ** 2 + (jj - 12) ** 2) < 49] = 0.1
    x[((ii + jj) > 50) & ((ii + jj) < 58) & (jj > 30)] = -0.1  # a diagonal bar
    return x.float().expand(1, channels, size, size).clone()


def blur_problem(channels: int = 1, seed: int = 0):
    x = shapes_image(channels=channels)
    kernel = motion_kernel(7, 0.5, seed=3)
    op = make_blur(kernel, tuple(x.shape[1:]), "circular").float()
    gen = torch.Generator().manual_seed(seed)
    y = op.A(x) + SIGMA * torch.randn(x.shape, generator=gen)
    return x, y, kernel


#: fast settings for the tests: fewer iterations and steps than the defaults
#: (the Gaussian-process prior is a weak denoiser: its final DPIR wants a larger data weight than a network's)
FAST = BlindParams(iterations=4, estep_steps=3, final_steps=8, final_lam=4.0)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_kernel_estimate_recovers_a_synthetic_kernel():
    x, y, kernel = blur_problem()
    estimate = estimate_kernel(y, StationaryGPDenoiser(), KERNEL, noise_sigma=SIGMA, params=FAST)
    assert estimate.shape == (KERNEL, KERNEL)
    assert kernel_ncc(estimate, kernel) > 0.8


def test_kernel_constraints_hold():
    x, y, _ = blur_problem(channels=3)
    for estimate in (estimate_kernel(y, StationaryGPDenoiser(), KERNEL, noise_sigma=SIGMA, params=FAST),
                     classical_blind_baseline(y, KERNEL, SIGMA)[1]):
        assert estimate.shape == (KERNEL, KERNEL)
        assert torch.isfinite(estimate).all()
        assert (estimate >= 0).all()
        assert estimate.sum().item() == pytest.approx(1.0, abs=1e-9)


def test_blind_output_beats_the_blurry_input():
    x, y, _ = blur_problem(channels=3)
    x_hat, kernel = blind_deblur(y, StationaryGPDenoiser(), KERNEL, noise_sigma=SIGMA, params=FAST)
    assert x_hat.shape == x.shape and kernel.shape == (KERNEL, KERNEL)
    gain = psnr(align_to_reference(x_hat, x), x).item() - psnr(y, x).item()
    assert gain > 1.0


def test_classical_baseline_runs_and_helps():
    x, y, kernel = blur_problem()
    x_hat, estimate = classical_blind_baseline(y, KERNEL, SIGMA)
    assert x_hat.shape == x.shape
    assert kernel_ncc(estimate, kernel) > 0.6


@pytest.mark.parametrize("size", [4, 8, 0, -3, 1, 31.0, True, 27])
def test_bad_kernel_sizes_are_refused(size):
    y = torch.zeros(1, 1, SIZE, SIZE)  # 27 is odd but more than half of 48
    with pytest.raises(RestoreError, match="kernel"):
        estimate_kernel(y, StationaryGPDenoiser(), size, noise_sigma=SIGMA)
    with pytest.raises(RestoreError, match="kernel"):
        classical_blind_baseline(y, size, SIGMA)


def test_bad_inputs_are_refused():
    d = StationaryGPDenoiser()
    with pytest.raises(RestoreError, match="one image"):
        estimate_kernel(torch.zeros(2, 1, SIZE, SIZE), d, KERNEL, noise_sigma=SIGMA)
    with pytest.raises(RestoreError, match="noise_sigma"):
        estimate_kernel(torch.zeros(1, 1, SIZE, SIZE), d, KERNEL, noise_sigma=-1.0)
    with pytest.raises(RestoreError, match="NaN"):
        estimate_kernel(torch.full((1, 1, SIZE, SIZE), math.nan), d, KERNEL, noise_sigma=SIGMA)


@pytest.mark.parametrize("field, value", [("iterations", 0), ("estep_steps", 1.5), ("level_ratio", 1.0), ("coarsest_kernel", 4),
                                          ("edge_fraction", 0.0), ("prune", 1.0), ("estep_lam", -1.0), ("centre", "peak"),
                                          ("kernel_reg", math.nan)])
def test_bad_params_are_refused(field, value):
    with pytest.raises(RestoreError, match=field):
        dataclasses.replace(BlindParams(), **{field: value})


def test_kernel_ncc_is_one_for_a_shifted_copy():
    kernel = motion_kernel(11, 0.7, seed=1)
    shifted = torch.zeros(15, 15, dtype=torch.float64)
    shifted[3:14, 1:12] = kernel  # moved by (1, -1) from the centre of a larger grid
    assert kernel_ncc(shifted, kernel) == pytest.approx(1.0, abs=1e-9)
    assert kernel_ncc(kernel, shifted) == pytest.approx(1.0, abs=1e-9)
    other = torch.zeros(11, 11, dtype=torch.float64)
    other[5, :] = 1  # a horizontal line: a different kernel
    assert kernel_ncc(other, kernel) < 0.9


def test_align_to_reference_undoes_a_shift():
    x = shapes_image(channels=3)
    moved = torch.roll(x, (2, -3), dims=(-2, -1))
    assert psnr(align_to_reference(moved, x), x).item() > 60


# ---------------------------------------------------------------------------------------------
# The command line: restore deblur without a kernel.


def _blurry_file(folder, channels: int = 3):
    from restore.io import write_image

    x, y, kernel = blur_problem(channels=channels)
    path = folder / "shaky.png"
    write_image(path, y[0].clamp(-1, 1))
    return path, kernel


def test_deblur_without_a_kernel_estimates_it_and_writes_it(tmp_path, tiny_prior):
    import json

    import numpy as np
    from typer.testing import CliRunner

    from cli import app
    from operators.blur import load_kernel

    path, _ = _blurry_file(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["deblur", str(path), "--kernel", "auto:9", "--prior", tiny_prior, "--steps", "2",
                                      "--out", str(out), "--quiet", "--save-grid"])
    assert result.exit_code == 0, result.output
    array = np.load(out / "kernel" / "shaky.npy")
    assert array.shape == (9, 9) and (array >= 0).all() and abs(array.sum() - 1) < 1e-9
    assert (out / "kernel" / "shaky.png").is_file() and (out / "grid" / "shaky.png").is_file()
    picture = load_kernel(out / "kernel" / "shaky.png").double()  # the picture is the kernel up to 16-bit rounding
    assert torch.allclose(picture, torch.from_numpy(array), atol=1e-4)
    report = json.loads((out / "report.json").read_text())
    row = report["images"][0]
    assert np.allclose(np.array(row["kernel"]), array, atol=1e-6)
    assert "noise σ estimated" in row["notes"] and "kernel estimated" in row["notes"]
    assert report["settings"]["kernel"] == "auto:9" and report["settings"]["noise"] == "estimated"
    assert row["plan"]["sampler"] == "dpir"
    # the written kernel is a valid --kernel for a non-blind run of the same image
    again = CliRunner().invoke(app, ["deblur", str(path), "--kernel", str(out / "kernel" / "shaky.npy"), "--prior", tiny_prior,
                                     "--steps", "2", "--out", str(tmp_path / "again"), "--quiet"])
    assert again.exit_code == 0, again.output
    # a rerun resumes without estimating again
    rerun = CliRunner().invoke(app, ["deblur", str(path), "--kernel", "auto:9", "--prior", tiny_prior, "--steps", "2",
                                     "--out", str(out), "--quiet"])
    assert rerun.exit_code == 0, rerun.output
    assert json.loads((out / "report.json").read_text())["images"][0]["status"] == "skipped"


@pytest.mark.parametrize("spec, message", [("auto:4", "odd number"), ("auto:x", "odd number"), ("auto:1", "odd number"),
                                           ("auto:-3", "odd number"), ("auto:41", "needs an image of at least")])
def test_bad_auto_kernel_sizes_give_one_line(tmp_path, tiny_prior, spec, message):
    from typer.testing import CliRunner

    from cli import app

    path, _ = _blurry_file(tmp_path, channels=1)
    result = CliRunner().invoke(app, ["deblur", str(path), "--kernel", spec, "--prior", tiny_prior, "--steps", "2",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_blind_deblurring_refuses_simulate(tmp_path, tiny_prior):
    from typer.testing import CliRunner

    from cli import app

    path, _ = _blurry_file(tmp_path, channels=1)
    result = CliRunner().invoke(app, ["deblur", str(path), "--simulate", "--prior", tiny_prior, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "give --kernel" in result.output, result.output
