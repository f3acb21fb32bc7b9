"""The catalogue of hostile inputs and faults: what restore says and does for each.

Every case runs the real command line (in process, tiny random prior, one or two steps) on files it
makes, and asserts: the exit code; one line on stderr that names the problem; no traceback; every
file it made (inputs, masks, kernels, references, priors) byte for byte unchanged; and no output that
looks finished but is not — a refused command writes no restoration at all, a failed image none of
its own. ``docs/bad_inputs.md`` is this table with what each case got
(``python docs/make_bad_inputs_table.py`` regenerates it). Interruption (SIGINT, SIGTERM, SIGKILL mid-folder,
then a resume) runs real processes at the end of the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

from cli import app
from restore.io import write_image

ROOT = Path(__file__).resolve().parents[1]


class World:
    """A scratch folder of inputs for one case: ``in/`` holds three small images (a, b RGB; g gray)."""

    def __init__(self, root: Path, prior: str) -> None:
        self.root, self.prior = root, prior
        self.inputs = root / "in"
        gen = torch.Generator().manual_seed(0)
        for name, shape in [("a", (3, 24, 32)), ("b", (3, 24, 32)), ("g", (1, 24, 32))]:
            write_image(self.inputs / f"{name}.png", torch.rand(shape, generator=gen) * 2 - 1)
        self.out = root / "out"

    def path(self, name: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, name: str, data: bytes) -> Path:
        path = self.path(name)
        path.write_bytes(data)
        return path

    def image(self, name: str, shape=(3, 24, 32), value: float | None = None) -> Path:
        pixels = torch.full(shape, value) if value is not None else torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
        path = self.path(name)
        write_image(path, pixels)
        return path

    def npy(self, name: str, array) -> Path:
        path = self.path(name)
        np.save(path, array, allow_pickle=True)
        return path

    def snapshot(self) -> dict[Path, str]:
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.root.rglob("*")
                if p.is_file() and self.out not in p.parents and "out" not in p.parts[len(self.root.parts):][:1]}


@dataclass(frozen=True)
class Case:
    id: str
    #: the command line (without --prior and --steps, which are added) for a World
    args: Callable[[World], list]
    #: a regular expression the one line naming the problem must match (case-insensitive)
    message: str
    exit_code: int = 1
    #: add the tiny prior and one step (False for commands that take neither)
    fast: bool = True
    #: images that must end restored (exit 0 or a partly failed folder); all others must not be
    restored: tuple[str, ...] = ()


def kspace(shape=(24, 32), value=None):
    if value is not None:
        return np.full(shape, value, dtype=np.complex64)
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def cmyk_jpeg(w: World) -> Path:
    path = w.path("in/c.jpg")
    PILImage.new("RGB", (32, 24), (200, 40, 40)).convert("CMYK").save(path)
    return path


def h5_with(w: World, name: str, build) -> Path:
    h5py = pytest.importorskip("h5py")
    path = w.path(name)
    with h5py.File(path, "w") as handle:
        build(handle)
    return path


def read_only_folder(w: World) -> Path:
    folder = w.path("locked")
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    w.out = folder / "out"
    return w.out


IN = "in/a.png"
CASES = [
    # ---- images ------------------------------------------------------------------------------
    Case("missing-input", lambda w: ["inpaint", w.root / "nope.png", "--mask", "box:8"], r"file not found: .*nope\.png"),
    Case("empty-file", lambda w: ["inpaint", w.write("e.png", b""), "--mask", "box:8"], r"e\.png: the file is empty"),
    Case("text-as-png", lambda w: ["inpaint", w.write("t.png", b"hello, world"), "--mask", "box:8"], r"t\.png: not an image file"),
    Case("truncated-png", lambda w: ["inpaint", w.write("tr.png", w.image("full.png").read_bytes()[:60]), "--mask", "box:8"],
         r"cannot read image .*tr\.png"),
    Case("brackets-in-name", lambda w: ["inpaint", w.write("photo[1].png", b"junk"), "--mask", "box:8"], r"photo\[1\]\.png"),
    Case("markup-like-name", lambda w: ["inpaint", w.write("[red]x[/red].png", b"junk"), "--mask", "box:8"], r"\[red\]x\[/red\]\.png"),
    Case("float-tiff-nan", lambda w: ["denoise", w.write("n.tif", _float_tiff(np.nan)), "--noise-sigma", "0.1"], r"NaN or infinite pixel"),
    Case("int32-tiff", lambda w: ["denoise", w.write("i.tif", _int32_tiff()), "--noise-sigma", "0.1"], r"unsupported pixel type int32"),
    Case("folder-without-images", lambda w: ["inpaint", w.path("empty_dir/x").parent, "--mask", "box:8"], r"no input files"),
    Case("glob-matches-nothing", lambda w: ["inpaint", str(w.root / "*.webp"), "--mask", "box:8"], r"no images match"),
    Case("two-inputs-one-stem", lambda w: ["inpaint", w.image("two/a.png").parent, "--mask", "box:8"] if w.image("two/a.jpg") else [],
         r"both be written as a\.png"),
    Case("cmyk-jpeg-converted", lambda w: ["inpaint", cmyk_jpeg(w), "--mask", "box:8"], r"restored", exit_code=0, restored=("c",)),
    Case("one-bad-image-in-folder", lambda w: ["inpaint", w.inputs, "--mask", "box:8"] if w.write("in/z.png", b"junk") else [],
         r"1 of 4 images failed", restored=("a", "b", "g")),
    Case("tiny-image-big-box", lambda w: ["inpaint", w.image("tiny.png", (3, 4, 4)), "--mask", "box:8"], r"box 8x8 is larger than the image 4x4"),
    Case("denoise-estimates-its-noise", lambda w: ["denoise", w.root / IN], r"restored", exit_code=0, restored=("a",)),
    Case("unicode-and-spaces", lambda w: ["inpaint", w.image("fotos/été à la plage.png"), "--mask", "box:8"], r"restored", exit_code=0,
         restored=("été à la plage",)),
    # ---- masks -------------------------------------------------------------------------------
    Case("mask-size-mismatch", lambda w: ["inpaint", w.root / IN, "--mask", w.image("m.png", (1, 5, 5), 1.0)], r"5x5 .* but the image is 24x32"),
    Case("mask-corrupt", lambda w: ["inpaint", w.root / IN, "--mask", w.write("m.png", b"\x89PNG\r\n\x1a\nxx")], r"cannot read mask image"),
    Case("mask-npy-not-binary", lambda w: ["inpaint", w.root / IN, "--mask", w.npy("m.npy", np.full((24, 32), 2))], r"booleans or 0/1"),
    Case("mask-name-with-colon", lambda w: ["inpaint", w.root / IN, "--mask", w.image("m:k=1.png", (1, 24, 32), -1.0)], r"restored",
         exit_code=0, restored=("a",)),
    Case("mask-unknown-spec", lambda w: ["inpaint", w.root / IN, "--mask", "circle:5"], r"mask not found: circle:5"),
    Case("mask-random-over-one", lambda w: ["inpaint", w.root / IN, "--mask", "random:1.5"], r"missing fraction must be in \[0, 1\)"),
    Case("mask-random-text", lambda w: ["inpaint", w.root / IN, "--mask", "random:lots"], r"missing fraction must be a number"),
    Case("mask-strokes-zero", lambda w: ["inpaint", w.root / IN, "--mask", "strokes:0"], r"number of strokes must be at least 1"),
    Case("mask-box-seed-negative", lambda w: ["inpaint", w.root / IN, "--mask", "box:8:seed=-1"], r"seed must be a non-negative"),
    Case("mask-folder-without-match", lambda w: ["inpaint", w.root / IN, "--mask", w.image("masks/other.png", (1, 24, 32)).parent],
         r"no mask named a\.\* in"),
    # ---- kernels -----------------------------------------------------------------------------
    Case("kernel-is-folder", lambda w: ["deblur", w.root / IN, "--kernel", w.path("kdir/x").parent], r"is a folder; give one kernel file"),
    Case("kernel-bad-number", lambda w: ["deblur", w.root / IN, "--kernel", "gaussian:x:1"], r"gaussian size must be an integer, got 'x'"),
    Case("kernel-even-size", lambda w: ["deblur", w.root / IN, "--kernel", "gaussian:4:1"], r"positive odd integer, got 4"),
    Case("kernel-negative", lambda w: ["deblur", w.root / IN, "--kernel", w.npy("k.npy", -np.ones((3, 3)))], r"negative values"),
    Case("kernel-all-zero", lambda w: ["deblur", w.root / IN, "--kernel", w.npy("k.npy", np.zeros((3, 3)))], r"all zero"),
    Case("kernel-nan", lambda w: ["deblur", w.root / IN, "--kernel", w.npy("k.npy", np.full((3, 3), np.nan))], r"NaN or infinite"),
    Case("kernel-name-with-colon", lambda w: ["deblur", w.root / IN, "--kernel", w.npy("k:v=2.npy", np.ones((3, 3))), "--simulate"],
         r"restored", exit_code=0, restored=("a",)),
    Case("kernel-larger-than-image", lambda w: ["deblur", w.root / IN, "--kernel", "gaussian:41:3"], r"kernel 41x41 is larger than the image"),
    Case("kernel-unknown-family", lambda w: ["deblur", w.root / IN, "--kernel", "wobbly:3"], r"unknown blur kernel 'wobbly'"),
    Case("kernel-levin-out-of-range", lambda w: ["deblur", w.root / IN, "--kernel", "levin:9"], r"levin kernel index must be in 1\.\.8"),
    Case("boundary-unknown", lambda w: ["deblur", w.root / IN, "--kernel", "gaussian:3:1", "--boundary", "wrap"], r"unknown blur boundary 'wrap'"),
    Case("kernel-npy-object", lambda w: ["deblur", w.root / IN, "--kernel", w.npy("k.npy", np.array([{"a": 1}], dtype=object))],
         r"cannot read kernel file"),
    # ---- options -----------------------------------------------------------------------------
    Case("noise-sigma-0-255", lambda w: ["deblur", w.root / IN, "--kernel", "gaussian:3:1", "--noise-sigma", "25"],
         r"\[0, 1\] pixel scale.*0\.098"),
    Case("noise-sigma-inf", lambda w: ["superres", w.root / IN, "--scale", "2", "--noise-sigma", "inf"], r"\[0, 1\] pixel scale.*got inf"),
    Case("noise-sigma-nan", lambda w: ["colorize", w.root / IN, "--noise-sigma", "nan"], r"Invalid value for '--noise-sigma'", exit_code=2),
    Case("set-out-of-range", lambda w: ["superres", w.root / IN, "--scale", "2", "--sampler", "ddrm", "--set", "eta=2"], r"eta=2.*0 <= eta <= 1"),
    Case("set-unknown-name", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--sampler", "dpir", "--set", "lamb=1"],
         r"dpir has no hyperparameter 'lamb'"),
    Case("set-without-value", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--set", "zeta"], r"--set takes NAME=VALUE"),
    Case("set-bad-value", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--sampler", "dpir", "--set", "lam=much"],
         r"'much' is not a valid value"),
    Case("sampler-unknown", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--sampler", "magic"], r"unknown sampler 'magic'"),
    Case("samples-from-one-estimate", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--sampler", "dpir", "--num-samples", "2"],
         r"dpir gives one estimate, not posterior samples"),
    Case("steps-zero", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--steps", "0"], r"Invalid value for '--steps'", exit_code=2,
         fast=False),
    Case("batch-size-zero", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--batch-size", "0"], r"Invalid value for '--batch-size'",
         exit_code=2),
    Case("device-cuda-without-gpu", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--device", "cuda"],
         r"no CUDA GPU is available" if not torch.cuda.is_available() else r"restored"),
    Case("device-unknown", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--device", "tpu"], r"unknown device 'tpu'"),
    Case("precision-unknown", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--precision", "fp64"], r"unknown precision 'fp64'"),
    Case("prior-missing", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--prior", w.root / "no.safetensors"],
         r"neither a known name .* nor an existing file", fast=False),
    Case("prior-garbage", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--prior", w.write("p.safetensors", b"garbage" * 10)],
         r"p\.safetensors", fast=False),
    Case("prior-is-an-image", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--prior", w.root / IN], r"a\.png", fast=False),
    Case("superres-not-divisible", lambda w: ["superres", w.root / IN, "--scale", "3", "--simulate"], r"not divisible by the factor 3"),
    Case("superres-unknown-kernel", lambda w: ["superres", w.root / IN, "--kernel", "lanczos"], r"unknown operator 'lanczos'"),
    Case("scale-out-of-range", lambda w: ["superres", w.root / IN, "--scale", "9"], r"Invalid value for '--scale'", exit_code=2),
    Case("svd-sampler-on-reflect-blur", lambda w: ["deblur", w.root / IN, "--kernel", "gaussian:3:1", "--sampler", "ddrm"],
         r"ddrm needs an operator with an SVD.*boundary=reflect", restored=()),
    Case("diverging-sampler", lambda w: ["superres", w.root / IN, "--scale", "2", "--simulate", "--sampler", "dps", "--set", "zeta=1e9"],
         r"dps diverged at step 1 .*zeta=1e\+09"),
    # ---- outputs -----------------------------------------------------------------------------
    Case("out-is-input-folder", lambda w: ["inpaint", w.inputs, "--mask", "box:8", "--out", w.inputs], r"is a folder restore reads from"),
    Case("out-is-mask-folder", lambda w: ["inpaint", w.inputs, "--mask", _mask_folder(w), "--out", w.root / "masks"],
         r"is a folder restore reads from"),
    Case("out-is-reference-folder", lambda w: ["deblur", w.inputs, "--kernel", "gaussian:3:1", "--reference", w.inputs, "--out", w.inputs],
         r"is a folder restore reads from"),
    Case("out-is-a-file", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--out", w.write("file.txt", b"mine")],
         r"--out .*file\.txt is a file"),
    Case("out-holds-a-foreign-file", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--out", w.image("theirs/a.png").parent],
         r"theirs/a\.png exists and restore has no record of writing it"),
    # (as root, permissions do not stop writes: the case then checks that the run simply works)
    Case("out-read-only", lambda w: ["inpaint", w.root / IN, "--mask", "box:8", "--out", read_only_folder(w)],
         r"cannot (write to|create) the output folder" if os.geteuid() != 0 else r"restored",
         exit_code=1 if os.geteuid() != 0 else 0, restored=() if os.geteuid() != 0 else ("a",)),
    Case("input-named-like-a-side-file", lambda w: ["inpaint", w.inputs, "--mask", "box:8", "--save-grid"] if w.image("in/a_grid.png") else [],
         r"restored", exit_code=0, restored=("a", "a_grid", "b", "g")),
    Case("resume-with-other-options", lambda w: _second_run(w, ["--steps", "2"]), r"other settings \(plan\)", restored=("a",)),
    Case("damaged-record", lambda w: _second_run(w, [], damage=True), r"a\.png exists and its record .*a\.json is damaged",
         restored=("a",)),
    # ---- arrays and h5 ------------------------------------------------------------------------
    Case("kspace-real", lambda w: ["mri", w.npy("k.npy", np.ones((24, 32)))], r"must be complex"),
    Case("kspace-nan", lambda w: ["mri", w.npy("k.npy", kspace(value=np.nan))], r"NaN or infinite values"),
    Case("kspace-all-zero", lambda w: ["mri", w.npy("k.npy", kspace(value=0))], r"all zero: nothing was measured"),
    Case("kspace-corrupt-npy", lambda w: ["mri", w.write("k.npy", b"\x93NUMPY garbage")], r"cannot read k-space"),
    Case("kspace-wrong-dims", lambda w: ["mri", w.npy("k.npy", kspace((2, 2, 3, 4)))], r"must have shape \(H, W\) or \(coils, H, W\)"),
    Case("kspace-multicoil", lambda w: ["mri", w.npy("k.npy", np.stack([kspace(), kspace()]))], r"multi-coil k-space"),
    Case("h5-without-kspace", lambda w: ["mri", h5_with(w, "k.h5", lambda h: h.create_dataset("other", data=np.zeros(3)))],
         r"has no dataset 'kspace'"),
    Case("h5-kspace-group", lambda w: ["mri", h5_with(w, "k.h5", lambda h: h.create_group("kspace"))], r"is a group, not an array"),
    Case("sinogram-inf", lambda w: ["ct", w.npy("s.npy", np.full((60, 34), np.inf)), "--size", "24"], r"NaN or infinite values"),
    Case("sinogram-3d", lambda w: ["ct", w.npy("s.npy", np.ones((2, 60, 34))), "--size", "24"], r"must be a real 2-D array"),
    Case("sinogram-wrong-angles", lambda w: ["ct", w.npy("s.npy", np.ones((40, 34))), "--angles", "60", "--size", "24"],
         r"has 40 angles .* --angles says 60"),
    Case("sinogram-no-detectors", lambda w: ["ct", w.npy("s.npy", np.ones((60, 0)))], r"is empty"),
    Case("sinogram-object-array", lambda w: ["ct", w.npy("s.npy", np.array([None, 1], dtype=object))], r"cannot read sinogram"),
    Case("sinogram-complex", lambda w: ["ct", w.npy("s.npy", kspace((60, 34))), "--size", "24"], r"must be a real 2-D array"),
    # ---- bench, train, metrics, priors ---------------------------------------------------------
    Case("bench-out-is-images", lambda w: ["bench", w.inputs, "--out", w.inputs, "--size", "16"], r"is the images folder", fast=False),
    Case("bench-out-foreign", lambda w: ["bench", w.inputs, "--out", w.image("theirs/x.png").parent, "--size", "16"],
         r"not a restore bench run", fast=False),
    Case("bench-unknown-task", lambda w: ["bench", w.inputs, "--tasks", "sr5", "--out", w.root / "b"], r"unknown task 'sr5'", fast=False),
    Case("bench-bad-steps", lambda w: ["bench", w.inputs, "--samplers", "dps:x", "--out", w.root / "b"], r"positive whole number", fast=False),
    Case("bench-unknown-sampler", lambda w: ["bench", w.inputs, "--samplers", "magic", "--out", w.root / "b"], r"unknown sampler", fast=False),
    Case("train-out-is-an-image", lambda w: ["train", w.inputs, "--out", w.root / IN, "--steps", "1"], r"must be a \.safetensors file", fast=False),
    Case("train-out-is-a-folder", lambda w: ["train", w.inputs, "--out", w.path("w.safetensors/x").parent, "--steps", "1"],
         r"is a folder", fast=False),
    Case("train-out-foreign-file", lambda w: ["train", w.inputs, "--out", w.write("w.safetensors", b"mine"), "--steps", "1"],
         r"exists and is not a prior written by restore", fast=False),
    Case("train-minutes-zero", lambda w: ["train", w.inputs, "--out", w.root / "w.safetensors", "--minutes", "0"],
         r"--minutes must be more than 0", fast=False),
    Case("train-no-stop", lambda w: ["train", w.inputs, "--out", w.root / "w.safetensors"], r"give --minutes, --steps or --anneal-to", fast=False),
    Case("train-channels", lambda w: ["train", w.inputs, "--out", w.root / "w.safetensors", "--steps", "1", "--channels", "40"],
         r"multiple of 32", fast=False),
    Case("train-scales", lambda w: ["train", w.inputs, "--out", w.root / "w.safetensors", "--steps", "1", "--scales", "1,x"],
         r"--scales must be comma-separated integers", fast=False),
    Case("train-images-too-small", lambda w: ["train", w.image("small/s.png", (3, 8, 8)).parent, "--out", w.root / "w.safetensors",
                                                "--steps", "1"], r"at least 64 px", fast=False),
    Case("metrics-no-reference", lambda w: ["metrics", w.inputs, w.image("refs/a.png").parent], r"no reference named b\.\*", fast=False),
    Case("metrics-size-mismatch", lambda w: ["metrics", w.root / IN, w.image("r.png", (3, 8, 8))], r"differ in size", fast=False),
    Case("metrics-on-restore-outputs", lambda w: ["metrics", _restored_folder(w), w.inputs], r"mean of 3", exit_code=0, fast=False),
    Case("priors-info-unknown", lambda w: ["priors", "info", "nope"], r"unknown prior 'nope'", fast=False),
]


def _float_tiff(value: float) -> bytes:
    import io

    buffer = io.BytesIO()
    PILImage.fromarray(np.full((8, 8), value, dtype=np.float32)).save(buffer, format="TIFF")
    return buffer.getvalue()


def _int32_tiff() -> bytes:
    import io

    buffer = io.BytesIO()
    PILImage.fromarray(np.arange(64, dtype=np.int32).reshape(8, 8)).save(buffer, format="TIFF")
    return buffer.getvalue()


def _mask_folder(w: World) -> Path:
    for name in ("a", "b", "g"):
        w.image(f"masks/{name}.png", (1, 24, 32), -1.0)
    return w.root / "masks"


def _restored_folder(w: World) -> Path:
    out = w.root / "restored"
    result = CliRunner().invoke(app, [str(a) for a in ["inpaint", w.inputs, "--mask", "box:8", "--save-grid",
                                                        "--out", out, "--prior", w.prior, "--steps", "1", "--quiet", "--num-samples", "2"]])
    assert result.exit_code == 0, result.output
    return out


def _second_run(w: World, extra: list, damage: bool = False) -> list:
    first = ["inpaint", w.root / IN, "--mask", "box:8", "--out", w.out, "--prior", w.prior, "--steps", "1", "--quiet"]
    assert CliRunner().invoke(app, [str(a) for a in first]).exit_code == 0
    if damage:
        (w.out / ".records" / "a.json").write_text('{"settings": {"ta')
    return ["inpaint", w.root / IN, "--mask", "box:8", "--out", w.out, *extra]


def run_case(case: Case, root: Path, prior: str):
    """Run one case in a fresh World; returns (world, result, snapshot before)."""
    world = World(root, prior)
    args = [str(a) for a in case.args(world)]
    if case.fast and "--prior" not in args:
        args += ["--prior", prior]
    if case.fast and "--steps" not in args and args[0] not in ("metrics", "priors", "train", "bench"):
        args += ["--steps", "1"]
    if "--out" not in args and args[0] not in ("metrics", "priors", "train", "bench"):
        args += ["--out", str(world.out)]
    before = world.snapshot()
    result = CliRunner().invoke(app, args)
    return world, result, before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tiny_prior, tmp_path, one_thread):
    world, result, before = run_case(case, tmp_path, tiny_prior)
    output = result.stderr + result.stdout
    assert "Traceback" not in output and result.exception is None or isinstance(result.exception, SystemExit), output
    assert result.exit_code == case.exit_code, output
    lines = [line for line in output.splitlines() if re.search(case.message, line, re.IGNORECASE)]
    if case.exit_code == 0:
        assert result.exit_code == 0
    else:
        assert lines, f"no line matches {case.message!r} in:\n{output}"
    assert world.snapshot() == before, "an input file was changed"
    restored = {p.stem for p in world.out.glob("*.png")} if world.out.is_dir() else set()
    assert restored == set(case.restored), (restored, output)


# ---- priors: checksums, hand-placed files, offline downloads ------------------------------------
def test_a_hand_placed_public_checkpoint_is_unverified_never_ok(tmp_path, monkeypatch):
    from restore.prior import registry

    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path))
    (tmp_path / "256x256_diffusion_uncond.pt").write_bytes(b"someone's file")
    result = CliRunner().invoke(app, ["priors", "verify"])
    assert result.exit_code == 0 and re.search(r"imagenet-256\s+unverified", result.stderr), result.stderr
    assert registry.verify(registry.PRIORS["imagenet-256"]).startswith("unverified")


def test_a_damaged_embedded_prior_is_refused(tmp_path, monkeypatch, images_for_priors):
    from restore.prior import registry

    bad = tmp_path / "default.safetensors"
    bad.write_bytes((registry.WEIGHTS_DIR / "default.safetensors").read_bytes()[:-10] + b"0123456789")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    result = CliRunner().invoke(app, ["inpaint", str(images_for_priors), "--mask", "box:8", "--out", str(tmp_path / "o"), "--steps", "1"])
    assert result.exit_code == 1 and "damaged (checksum mismatch" in result.stderr, result.stderr
    assert CliRunner().invoke(app, ["priors", "verify"]).exit_code == 1


def test_a_changed_download_is_moved_aside_and_refused(tmp_path, monkeypatch, images_for_priors):
    from restore.prior import registry

    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path))
    entry = registry.PRIORS["imagenet-256"]
    path = registry.weights_path(entry)
    path.write_bytes(b"the first file")
    registry.first_use_record(entry).write_text(f"{registry.sha256_of(path)}  {entry.filename}\n")
    path.write_bytes(b"another file")
    result = CliRunner().invoke(app, ["inpaint", str(images_for_priors), "--mask", "box:8", "--prior", "imagenet-256",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "changed since first use" in result.stderr and "moved it to" in result.stderr, result.stderr
    assert not path.exists() and path.with_name(path.name + ".rejected").is_file()


def test_offline_download_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    result = CliRunner().invoke(app, ["priors", "download", "imagenet-256"])
    assert result.exit_code == 1 and "256x256_diffusion_uncond.pt" in result.stderr and str(tmp_path) in result.stderr
    page_only = CliRunner().invoke(app, ["priors", "download", "ffhq-256"])
    assert page_only.exit_code == 1 and "drive.google.com" in page_only.stderr and "ffhq_10m.pt" in page_only.stderr


def test_a_barely_trained_prior_is_warned_about(tmp_path, images_for_priors):
    out = tmp_path / "w.safetensors"
    trained = CliRunner().invoke(app, ["train", str(images_for_priors), "--out", str(out), "--steps", "2", "--crop", "16",
                                       "--channel-mult", "1,2", "--batch-size", "2", "--quiet"])
    assert trained.exit_code == 0, trained.output
    info = json.loads(out.with_suffix(".json").read_text())["training"]
    assert info["steps"] == 2 and info["final_loss"] > 0
    result = CliRunner().invoke(app, ["inpaint", str(images_for_priors), "--mask", "box:8", "--prior", str(out), "--steps", "1",
                                      "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 0 and "trained for only 2 steps" in result.stderr, result.stderr


@pytest.fixture
def images_for_priors(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    write_image(folder / "a.png", torch.rand((3, 64, 64), generator=torch.Generator().manual_seed(0)) * 2 - 1)
    return folder


# ---- interruption: real processes ------------------------------------------------------------------
def interruptible() -> None:
    """In the child: Ctrl-C's default action, which a shell's background job (``… &``) inherits as ignored —
    and Python then installs no KeyboardInterrupt — so these tests work wherever the suite itself runs."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def start_folder_run(tmp_path: Path, prior: str, count: int = 6) -> tuple[subprocess.Popen, Path, list]:
    folder = tmp_path / "many"
    for i in range(count):
        write_image(folder / f"im{i}.png", torch.rand((3, 32, 32), generator=torch.Generator().manual_seed(i)) * 2 - 1)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "cli", "inpaint", str(folder), "--mask", "box:8", "--prior", prior, "--steps", "60",
            "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)
    return process, out, args


def wait_for_records(out: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    start = time.time()
    while len(list((out / ".records").glob("*.json"))) < count:
        assert process.poll() is None, process.communicate()
        assert time.time() - start < timeout, "the run made no progress"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_folder_run_resumes_and_finishes(tmp_path, tiny_prior, how):
    process, out, args = start_folder_run(tmp_path, tiny_prior)
    wait_for_records(out, 2, process)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=60)
    if how == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 130 and "interrupted:" in stderr and "run the same command again" in stderr, stderr
        report = json.loads((out / "report.json").read_text())  # written on the way out
        assert report["images"] and all(r["status"] in ("ok", "skipped") for r in report["images"])
    done_before = {p.stem for p in (out / ".records").glob("*.json")}
    resumed = subprocess.run(args, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((out / "report.json").read_text())
    status = {r["name"]: r["status"] for r in report["images"]}
    assert sorted(status) == [f"im{i}" for i in range(6)]
    assert all(status[name] == "skipped" for name in done_before) and list(status.values()).count("ok") == 6 - len(done_before)
    assert not list(out.rglob("*.tmp")) or how == signal.SIGKILL  # a killed write may leave one; it is stale, not an output


@pytest.mark.slow
def test_interrupted_training_saves_and_resumes(tmp_path):
    folder = tmp_path / "imgs"
    write_image(folder / "a.png", torch.rand((3, 64, 64), generator=torch.Generator().manual_seed(0)) * 2 - 1)
    out = tmp_path / "w.safetensors"
    common = [sys.executable, "-m", "cli", "train", str(folder), "--out", str(out), "--crop", "16", "--channel-mult", "1,2",
              "--batch-size", "2", "--quiet"]
    args = [*common, "--steps", "100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)
    time.sleep(12)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and re.search(r"saved step \d+ to .*w\.safetensors", stderr), stderr
    step = json.loads(out.with_suffix(".json").read_text())["training"]["steps"]
    assert step > 0 and out.with_suffix(".ckpt").is_file()
    again = subprocess.run([*common, "--steps", str(step + 1)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and f"{step + 1} steps" in again.stderr, again.stderr


# ---- faults inside a folder run -----------------------------------------------------------------
def folder_of(tmp_path: Path, names=("a", "b", "c", "d")) -> Path:
    folder = tmp_path / "in"
    for i, name in enumerate(names):
        write_image(folder / f"{name}.png", torch.rand((3, 16, 16), generator=torch.Generator().manual_seed(i)) * 2 - 1)
    return folder


def test_a_full_disk_fails_one_image_and_the_run_goes_on(tmp_path, tiny_prior, monkeypatch):
    import errno

    from restore import runner

    real = runner.write_image

    def write(path, *args, **kwargs):
        if Path(path).stem == "b":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runner, "write_image", write)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["inpaint", str(folder_of(tmp_path)), "--mask", "box:4", "--prior", tiny_prior, "--steps", "1",
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and re.search(r"b\.png: No space left on device", result.stderr), result.stderr
    report = json.loads((out / "report.json").read_text())
    assert {r["name"]: r["status"] for r in report["images"]} == {"a": "ok", "b": "failed", "c": "ok", "d": "ok"}


def test_one_bad_image_in_a_batch_fails_alone(tmp_path, tiny_prior, monkeypatch):
    from restore import plan as plan_module, runner
    from restore.errors import NumericalError

    real = plan_module.solve

    def solve(plan, denoiser, operator, y, *, noise, indices=None, callback=None):
        if 2 in indices:  # image c: as if the sampler met NaN in it
            raise NumericalError("diffpir produced NaN or Inf at step 1 of 1")
        return real(plan, denoiser, operator, y, noise=noise, indices=indices, callback=callback)

    monkeypatch.setattr(runner, "solve", solve)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["inpaint", str(folder_of(tmp_path)), "--mask", "box:4", "--prior", tiny_prior, "--steps", "1",
                                      "--batch-size", "4", "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and "produced NaN or Inf" in result.stderr
    status = {r["name"]: r["status"] for r in json.loads((out / "report.json").read_text())["images"]}
    assert status == {"a": "ok", "b": "ok", "c": "failed", "d": "ok"}
    assert sorted(p.stem for p in out.glob("*.png")) == ["a", "b", "d"]


def test_reports_are_strict_json_and_files_follow_the_umask(tmp_path, tiny_prior):
    out = tmp_path / "out"
    # a real measurement without a reference: no metrics, which JSON must say as null, not NaN
    result = CliRunner().invoke(app, ["denoise", str(folder_of(tmp_path, ("a",))), "--noise-sigma", "0.1", "--prior", tiny_prior,
                                      "--steps", "1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    for text in (result.stdout, (out / "report.json").read_text(), (out / ".records" / "a.json").read_text()):
        assert "NaN" not in text and "Infinity" not in text
        json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert json.loads(result.stdout)["images"][0]["psnr"] is None
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path, tiny_prior):
    out = tmp_path / "out"
    stale, fresh = out / ".a.png.x1.tmp", out / ".records" / ".a.json.x2.tmp"
    for path in (stale, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    result = CliRunner().invoke(app, ["inpaint", str(folder_of(tmp_path, ("a",))), "--mask", "box:4", "--prior", tiny_prior,
                                      "--steps", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and fresh.exists()  # a recent one may belong to another process still writing
