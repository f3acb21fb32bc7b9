"""From files to (measurement, operator, reference) for each task of the command line.

Every task turns one input file into an :class:`Item`: the measurement y in library units, the
operator that produced it (built for that image's size), and the ground truth when one is known
(``--simulate``, inpainting, ``--reference``). Simulated noise of image i is seeded from i. Each
task's constructor (:func:`inpaint`, :func:`deblur`, …) takes the command's options and returns a
:class:`TaskSetup`: how to prepare one input, and the options as reports record them.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import operators
from operators.color import rgb_to_luminance
from operators.mri import read_kspace
from restore.errors import RestoreError
from restore.io import IMAGE_SUFFIXES, read_array, read_image, read_sinogram
from restore.noise import GaussianNoise, NoNoise, simulate
from restore.noise_level import estimate_sigma

#: σ of the measurement noise on the [0, 1] scale when --noise-sigma is not given, as (simulated input,
#: real measurement); None: estimated from each measurement. CT's σ is relative to each sinogram's maximum.
DEFAULT_NOISE_SIGMA = {
    "inpaint": (None, None),  # the input is the photograph: its own noise, estimated
    "deblur": (0.01, None),
    "superres": (0.01, None),
    "denoise": (0.1, None),
    # not estimated: a gray picture's texture reads as noise (σ̂ 0.016 ± 0.012 on noise-free inputs), which cost
    # 0.22 dB on average and 2.3 dB at worst (benchmarks/RESULTS.md, "Noise level estimated from the measurement")
    "colorize": (0.0, 0.0),
    "mri": (0.01, 0.01),
    "ct": (0.005, 0.005),
    "dejpeg": (0.0, 0.0),  # the rounding is the only noise; the task sets its σ from the tables
    "phase": (0.05, 0.05),  # on the Fourier magnitudes; DPS's and DAPS's phase-retrieval benchmark
}


def noise_sigma_for(task: str, noise_sigma: float | None, simulated: bool) -> float | None:
    """The σ a task runs with: the one given, else the task's default for simulated or real inputs."""
    if noise_sigma is not None:
        return noise_sigma
    return DEFAULT_NOISE_SIGMA[task][0 if simulated else 1]


@dataclass
class Item:
    """One input ready to restore."""

    index: int
    name: str  # output stem
    source: Path
    y: Tensor  # (1, ...) measurement, library units
    operator: operators.Operator  # built for this image, batch 1
    noise: object  # the noise model of y
    reference: Tensor | None = None  # (1, C, H, W) ground truth in [-1, 1]
    alpha: Tensor | None = None  # (1, H, W) alpha channel carried to the output
    bit_depth: int = 8
    #: a simulated measurement as the command reads it back — pixels (C, H, W) in [-1, 1] for a picture, a
    #: NumPy array (.npy: a sinogram) or arrays by name (.npz: k-space with its mask and intensity scale) —
    #: so that it can be restored again; None for real measurements
    saved_measurement: Tensor | np.ndarray | dict | None = None
    #: what was converted or assumed about this input (said with the results)
    notes: list[str] = field(default_factory=list)
    #: applied to the restoration before it is saved: (image (C, H, W) in [-1, 1]) → (image, a note or "")
    finish: Callable[[Tensor], tuple[Tensor, str]] | None = None
    #: the problem's kind for the defaults table when the operator cannot tell it yet (samplers.defaults.problem_kind)
    kind: str | None = None
    #: a step that needs the prior before the item can be solved — blind deblurring's kernel estimate: called
    #: with the denoiser, it sets the real operator (and ``estimated_kernel``); None for every other task
    estimate: Callable[[object], None] | None = None
    #: the blur kernel estimated from the measurement itself (float64 (k, k), sum 1), written with the results
    estimated_kernel: Tensor | None = None
    #: seconds and network evaluations spent on ``estimate`` (added to the image's in the report)
    estimate_seconds: float = 0.0
    estimate_nfe: int = 0

    @property
    def shape_key(self) -> tuple:
        """Items with equal keys can share a batch."""
        return (tuple(self.y.shape), self.operator.in_shape, type(self.operator).__name__, self.y.dtype, self.noise)


Prepare = Callable[[Path, int], Item]
References = Callable[[Path], "Path | None"]


@dataclass(frozen=True)
class TaskSetup:
    """A task as the command line asked for it: how to prepare each input, and its options for the reports."""

    task: str
    prepare: Prepare
    settings: dict  # the task's options (mask, kernel, noise, ...) as reports record them
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES  # the input files it takes in a folder
    #: the files and folders it reads besides the inputs (masks, kernels, references): never written to
    reads: tuple[Path, ...] = ()
    #: colorize: whether the results' colour cast is removed (restore.plan.Request.remove_cast); None: the default
    remove_cast: bool | None = None


def existing(*paths: str | Path | None) -> tuple[Path, ...]:
    """The given paths that name existing files or folders (a mask spec such as box:64 names none)."""
    return tuple(Path(p) for p in paths if p is not None and Path(p).exists())


def references_from(reference: Path | None) -> References:
    """path → its reference file (same stem in a folder, or the one file), or None."""
    if reference is None:
        return lambda path: None
    if reference.is_dir():
        def match(path: Path) -> Path:
            found = sorted(p for p in reference.iterdir() if p.stem == path.stem and p.is_file())
            if not found:
                raise RestoreError(f"no reference named {path.stem}.* in {reference}")
            return found[0]
        return match
    if not reference.is_file():
        raise RestoreError(f"reference not found: {reference}")
    return lambda path: reference


def gaussian_noise(sigma01: float | None) -> GaussianNoise | NoNoise:
    """A noise model from a σ on the [0, 1] scale (None or 0: noiseless)."""
    check_noise_sigma(sigma01)
    if sigma01 is None or sigma01 == 0:
        return NoNoise()
    return GaussianNoise(2 * sigma01)


def check_noise_sigma(sigma01: float | None) -> None:
    """σ is on the [0, 1] pixel scale: refuse what cannot be one (a 0–255 habit, inf, NaN, negative)."""
    if sigma01 is None:
        return
    if not 0 <= sigma01 <= 1:  # NaN fails too
        hint = f" (on 0–255 pixel values that is {sigma01 / 255:.3g} here)" if 1 < sigma01 <= 255 else ""
        raise RestoreError(f"--noise-sigma is on the [0, 1] pixel scale, e.g. 0.025; got {sigma01}{hint}")


def reference_for(path: Path | None, shape: tuple[int, ...]) -> Tensor | None:
    """A reference image for metrics, checked against the restoration's shape (C, H, W)."""
    if path is None:
        return None
    ref = read_image(path).pixels
    if ref.shape[-2:] != tuple(shape[-2:]):
        raise RestoreError(f"reference {path} is {ref.shape[-1]}x{ref.shape[-2]}, the restoration is {shape[-1]}x{shape[-2]}")
    if ref.shape[0] != shape[0]:
        ref = rgb_to_luminance(ref[None])[0] if ref.shape[0] == 3 else ref.expand(shape[0], -1, -1)
    return ref[None]


def inpaint(mask: str, noise_sigma: float | None, reference: Path | None = None, invert: bool = False) -> TaskSetup:
    """Inpainting: the input is the ground truth; the mask (file, or spec like box:128) hides pixels. With a σ
    noise of that σ is added (a simulation); without, the photograph's own noise level is estimated and
    the samplers told it (nothing added)."""
    noise_sigma = noise_sigma_for("inpaint", noise_sigma, True)
    noise = gaussian_noise(noise_sigma) if noise_sigma is not None else None
    references = references_from(reference)

    def prepare(path: Path, index: int) -> Item:
        image = read_image(path)
        shape = tuple(image.pixels.shape)
        mask_path = Path(mask)
        if mask_path.is_dir() or glob.has_magic(mask):
            pool = mask_path.iterdir() if mask_path.is_dir() else map(Path, glob.glob(mask))
            candidates = sorted(p for p in pool if p.stem == path.stem and p.is_file())
            if not candidates:
                raise RestoreError(f"no mask named {path.stem}.* in {mask} for {path.name}")
            mask_path = candidates[0]
        if mask_path.is_file():  # built from the file itself: its name may hold ':' or '=', which a spec splits on
            op = operators.inpaint.FileMaskInpainting(shape, str(mask_path), invert)
        elif mask.split(":")[0] in ("box", "random", "strokes"):
            spec = mask if "seed=" in mask or mask.startswith("box:") and "top=" in mask else f"{mask}:seed={index}"
            op = operators.build(spec, shape)
        else:
            raise RestoreError(f"mask not found: {mask} (give a file, a folder of masks, or box:SIZE, random:FRACTION, strokes)")
        x = image.pixels[None]
        notes = []
        if noise is None:  # the photograph's own noise
            sigma = round(estimate_noise_sigma(image.pixels), 4)
            item_noise, y = gaussian_noise(sigma), op.A(x)
            notes.append(f"noise σ estimated {sigma:g}")
        else:
            item_noise, y = noise, simulate(x, op, noise, [index])
        ref = reference_for(references(path), shape) if references(path) else x
        return Item(index, path.stem, path, y, op, item_noise, ref, image.alpha, image.bit_depth, y[0], notes=notes)

    return TaskSetup("inpaint", prepare, {"mask": mask, "invert_mask": invert, "noise": noise_or_estimated(noise_sigma)},
                     reads=existing(mask, reference))


def _simulated_or_measured(
    image_pixels: Tensor, op_for: Callable[[tuple[int, int, int]], operators.Operator], simulate_input: bool,
    noise, index: int, measured_shape: Callable[[tuple[int, int, int]], tuple[int, int, int]],
) -> tuple[Tensor, operators.Operator, Tensor | None]:
    """(y, operator, ground truth or None): simulate from a clean image, or take the image as the measurement."""
    if simulate_input:
        op = op_for(tuple(image_pixels.shape))
        x = image_pixels[None]
        return simulate(x, op, noise, [index]), op, x
    op = op_for(measured_shape(tuple(image_pixels.shape)))
    return image_pixels[None], op, None


def image_task(
    make_operator: Callable[[tuple[int, int, int]], operators.Operator],
    measured_to_clean_shape: Callable[[tuple[int, int, int]], tuple[int, int, int]],
    noise_sigma: float | None,
    simulate_input: bool,
    references: References,
    measured: Callable[[Tensor], Tensor] | None = None,
) -> Prepare:
    """Tasks whose measurement is a picture (deblur, super-resolution, denoise, colorize).

    ``measured`` converts a real measurement file's pixels first (colorize: RGB → luminance).
    """
    noise = gaussian_noise(noise_sigma)

    def prepare(path: Path, index: int) -> Item:
        image = read_image(path)
        pixels = measured(image.pixels) if measured is not None and not simulate_input else image.pixels
        y, op, truth = _simulated_or_measured(pixels, make_operator, simulate_input, noise, index, measured_to_clean_shape)
        ref_path = references(path)
        ref = reference_for(ref_path, op.in_shape) if ref_path else truth
        alpha = image.alpha if image.alpha is not None and tuple(image.alpha.shape[-2:]) == op.in_shape[1:] else None
        return Item(index, path.stem, path, y, op, noise, ref, alpha, image.bit_depth, y[0] if simulate_input else None)

    return prepare


def colorize_input(pixels: Tensor) -> Tensor:
    return pixels if pixels.shape[0] == 1 else rgb_to_luminance(pixels[None])[0]


def deblur(kernel: str, boundary: str, noise_sigma: float | None, simulate_input: bool,
           reference: Path | None = None) -> TaskSetup:
    """Deblurring by a known kernel (a kernel file of any name, or a spec such as gaussian:61:3.0 or levin:3), or
    blind (``auto`` or ``auto:SIZE``): the kernel estimated from each blurry image with the prior (restore.blind)."""
    if Path(kernel).is_dir():
        raise RestoreError(f"--kernel {kernel} is a folder; give one kernel file (.npy, .npz or an image) or a spec")
    blind_size = None if Path(kernel).is_file() else parse_auto_kernel(kernel)
    if blind_size is not None:
        return blind_deblur(blind_size, boundary, noise_sigma, simulate_input, reference, kernel)
    if Path(kernel).is_file():  # a file first: its name may hold ':' or '=', which a spec would split on
        kernel_tensor, kernel_spec = operators.blur.load_kernel(kernel), f"file={kernel}"
    else:
        kernel_tensor, kernel_spec = operators.blur.parse_kernel(kernel)
    kh, kw = kernel_tensor.shape
    noise_sigma = noise_sigma_for("deblur", noise_sigma, simulate_input)

    def make_operator(shape: tuple[int, int, int]) -> operators.Operator:
        return operators.blur.make_blur(kernel_tensor, shape, boundary, kernel_spec=kernel_spec)

    make_operator((1, max(kh, 2), max(kw, 2)))  # an unknown boundary fails now, not per image
    prepare = image_task(make_operator, lambda blurred: valid_blur_input(blurred, (kh, kw), boundary), noise_sigma,
                         simulate_input, references_from(reference))
    if noise_sigma is None:
        prepare = with_estimated_noise(prepare)
    return TaskSetup("deblur", prepare, {"kernel": kernel, "boundary": boundary, "noise": noise_or_estimated(noise_sigma),
                                         "simulate": simulate_input}, reads=existing(kernel, reference))


def valid_blur_input(blurred: tuple[int, int, int], kernel_shape: tuple[int, int], boundary: str) -> tuple[int, int, int]:
    """The image shape behind a blurred picture: a 'valid' blur's picture is smaller by the kernel's size less one."""
    c, h, w = blurred
    return (c, h + kernel_shape[0] - 1, w + kernel_shape[1] - 1) if boundary == "valid" else blurred


def parse_auto_kernel(spec: str) -> int | None:
    """The kernel support asked for by ``auto`` (0: restore.blind's default for each image) or ``auto:SIZE``; None for a
    known kernel. A bad SIZE is one clear error."""
    head, colon, size = spec.partition(":")
    if head.strip().lower() != "auto":
        return None
    if not colon:
        return 0
    try:
        value = int(size)
    except ValueError:
        value = None
    if value is None or value < 3 or value % 2 == 0:
        raise RestoreError(f"--kernel auto:SIZE takes the kernel's support as an odd number of pixels >= 3, e.g. auto:31; got '{spec}'")
    return value


def blind_deblur(size: int, boundary: str, noise_sigma: float | None, simulate_input: bool, reference: Path | None,
                 kernel_option: str) -> TaskSetup:
    """Blind deblurring: each blurry image's kernel estimated with the prior (restore.blind.estimate_kernel), then
    the image deblurred with it by the deblur defaults for an estimated kernel (samplers.defaults, ``deblur/blind``)."""
    from restore import blind

    if simulate_input:
        raise RestoreError("--simulate blurs the input with a known kernel: give --kernel (blind deblurring takes a blurry photograph)")
    operators.blur.make_blur(torch.ones(1, 1), (1, 2, 2), boundary)  # an unknown boundary fails now, not per image
    noise_sigma = noise_sigma_for("deblur", noise_sigma, False)
    references = references_from(reference)

    def prepare(path: Path, index: int) -> Item:
        image = read_image(path)
        k = blind.kernel_size_for(tuple(image.pixels.shape), size)
        y = image.pixels[None]
        shape = valid_blur_input(tuple(image.pixels.shape), (k, k), boundary)
        placeholder = operators.blur.make_blur(torch.ones(1, 1), shape, boundary, kernel_spec=f"auto:{k}")
        ref = reference_for(references(path), shape) if references(path) else None
        alpha = image.alpha if image.alpha is not None and tuple(image.alpha.shape[-2:]) == shape[1:] else None
        item = Item(index, path.stem, path, y, placeholder, gaussian_noise(noise_sigma), ref, alpha, image.bit_depth, kind="blind")

        def estimate(denoiser) -> None:
            sigma = float(getattr(item.noise, "sigma", 0.0))  # library units
            params = blind.BlindParams(periodic=boundary == "circular")
            kernel = blind.estimate_kernel(item.y, denoiser, k, noise_sigma=sigma, params=params)
            item.operator = operators.blur.make_blur(kernel.float(), shape, boundary, kernel_spec=f"estimated:{k}")
            item.estimated_kernel = kernel
            item.estimate_nfe = blind.estimate_nfe(tuple(item.y.shape[-2:]), k)
            item.notes = [*item.notes, f"kernel estimated on a {k}x{k} support ({operators.blur.kernel_kind(kernel)} blur)"]

        item.estimate = estimate
        return item

    if noise_sigma is None:
        prepare = with_estimated_noise(prepare)
    return TaskSetup("deblur", prepare, {"kernel": kernel_option, "boundary": boundary, "noise": noise_or_estimated(noise_sigma),
                                         "simulate": False}, reads=existing(reference))


def noise_or_estimated(noise_sigma: float | None) -> float | str:
    """A task's noise setting as reports record it."""
    return noise_sigma if noise_sigma is not None else "estimated"


def superres(scale: int, kernel: str, noise_sigma: float | None, simulate_input: bool,
             reference: Path | None = None) -> TaskSetup:
    """Super-resolution by an integer factor under a downsampling model (bicubic, avgpool, nearest)."""
    spec = f"{kernel}:{scale}"
    noise_sigma = noise_sigma_for("superres", noise_sigma, simulate_input)
    prepare = image_task(lambda shape: operators.build(spec, shape), lambda shape: (shape[0], shape[1] * scale, shape[2] * scale),
                         noise_sigma, simulate_input, references_from(reference))
    if noise_sigma is None:
        prepare = with_estimated_noise(prepare)
    return TaskSetup("superres", prepare, {"scale": scale, "kernel": kernel, "noise": noise_or_estimated(noise_sigma),
                                           "simulate": simulate_input},
                     reads=existing(reference))


def denoise(noise_sigma: float | None, simulate_input: bool, reference: Path | None = None) -> TaskSetup:
    """Gaussian denoising; without a σ a real measurement's noise level is estimated from each image."""
    noise_sigma = noise_sigma_for("denoise", noise_sigma, simulate_input)
    prepare = image_task(lambda shape: operators.build("identity", shape), lambda shape: shape,
                         noise_sigma, simulate_input, references_from(reference))
    if noise_sigma is None:
        prepare = with_estimated_noise(prepare)
    return TaskSetup("denoise", prepare, {"noise": noise_or_estimated(noise_sigma),
                                          "simulate": simulate_input}, reads=existing(reference))


def colorize(noise_sigma: float | None, simulate_input: bool, reference: Path | None = None,
             remove_cast: bool = True) -> TaskSetup:
    """Colorization: a gray image (an RGB input's luminance) → RGB; ``remove_cast``: with the mean colour gray."""
    noise_sigma = noise_sigma_for("colorize", noise_sigma, simulate_input)
    prepare = image_task(lambda shape: operators.build("gray", (3, *shape[1:])), lambda shape: (3, *shape[1:]),
                         noise_sigma, simulate_input, references_from(reference), measured=colorize_input)
    return TaskSetup("colorize", prepare, {"noise": noise_sigma, "simulate": simulate_input}, reads=existing(reference),
                     remove_cast=remove_cast)


def mri(mask: str | None, acceleration: int | None, center_lines: int | None, noise_sigma: float | None,
        simulate_input: bool, reference: Path | None = None, intensity_scale: float | None = None) -> TaskSetup:
    """MRI: k-space (.npy/.npz/.h5) and a sampling mask, or --simulate from an image (its luminance).

    k-space is expected in fastMRI's convention — centred, orthonormal ``fftshift(fft2(ifftshift(x)))`` — and
    numpy's uncentred ``fft2(x)`` or quadrant-swapped ``fftshift(fft2(x))`` are converted with a note. Its
    intensity scale (the image's white) is ``intensity_scale``, or, when None, the file's own (restore's
    .npz) or the largest magnitude of the zero-filled image (within about ±11 % of the true white on BSDS
    images, 4× and 8× sampling: benchmarks/RESULTS.md).
    """
    noise_sigma = noise_sigma_for("mri", noise_sigma, simulate_input)
    noise = gaussian_noise(noise_sigma)
    references = references_from(reference)
    if intensity_scale is not None and not (intensity_scale > 0 and math.isfinite(intensity_scale)):
        raise RestoreError(f"--intensity-scale must be a number > 0 (the k-space value of white), got {intensity_scale}")

    def mask_spec(height: int, width: int, kspace: Tensor | None) -> str:
        if mask is not None:
            return f"mri:mask={mask}"
        if acceleration is not None:
            lines = center_lines if center_lines is not None else max(1, round(0.08 * width))
            return f"mri:equispaced:{acceleration}:center_lines={lines}"
        if kspace is None:
            raise RestoreError("give --mask or --acceleration to simulate MRI sampling")
        return ""  # sampled where the k-space is non-zero

    def prepare(path: Path, index: int) -> Item:
        if simulate_input:
            image = read_image(path)
            x = colorize_input(image.pixels)[None]
            op = operators.build(mask_spec(*x.shape[-2:], None), tuple(x.shape[1:]))
            y = simulate(x, op, noise, [index])
            # saved as the k-space of the [0, 1] image (centred, orthonormal), the form real k-space comes in
            kspace = ((y + op.A(torch.ones_like(x))) / 2)[0, 0].numpy()
            saved = {"kspace": kspace, "mask": op.mask[0, 0].numpy(), "intensity_scale": np.array(1.0)}
            return Item(index, path.stem, path, y, op, noise, x, None, image.bit_depth, saved)
        kspace, stored_mask = read_kspace(path)  # (coils, H, W) complex; fastMRI files may carry their mask
        if kspace.shape[0] != 1:
            raise RestoreError(f"{path.name}: multi-coil k-space ({kspace.shape[0]} coils) needs sensitivity maps; the command line takes single-coil k-space")
        kspace, note = operators.mri.standard_layout(kspace)
        height, width = kspace.shape[-2:]
        spec = mask_spec(height, width, kspace)
        if spec:
            op = operators.build(spec, (1, height, width))
        else:
            sampled = stored_mask if stored_mask is not None else (kspace[0].abs() > 0).to(torch.float64)
            op = operators.mri.MRI.from_mask(sampled, (1, height, width))
        # k-space of an image with intensities in [0, scale] → library range [-1, 1]: A(2x - 1) = 2 A(x) - A(1)
        notes = [note] if note else []
        scale = intensity_scale or stored_intensity_scale(path)
        if scale is None:
            scale = float(op.A_adjoint(kspace[None].to(torch.complex64)).abs().max().clamp_min(1e-12))
            notes.append(f"white taken as the largest zero-filled magnitude, {scale:.4g} (within about "
                         "±11 % of the true white on simulated photographs); give --intensity-scale if it is known")
        ones = torch.ones((1, 1, height, width))
        y = 2 * kspace[None].to(torch.complex64) / scale - op.A(ones)
        ref_path = references(path)
        ref = reference_for(ref_path, (1, height, width)) if ref_path else None
        return Item(index, path.stem, path, y, op, noise, ref, None, 8, None, notes=notes)

    settings = {"mask": mask, "acceleration": acceleration, "center_lines": center_lines, "noise": noise_sigma,
                "simulate": simulate_input, "intensity_scale": intensity_scale or "auto"}
    return TaskSetup("mri", prepare, settings, IMAGE_SUFFIXES if simulate_input else (".npy", ".npz", ".h5", ".hdf5"),
                     existing(mask, reference))


def dejpeg(quality: int | None, simulate_input: bool, reference: Path | None = None, project: bool = True) -> TaskSetup:
    """JPEG artifact removal: the measurement is the file's own quantised DCT coefficients, read exactly with its
    tables and chroma subsampling (no quality factor to guess); ``--simulate`` encodes a clean image at
    ``quality`` with the IJG tables, 4:2:0. With ``project`` the result is projected onto the images whose
    coefficients fall in the file's quantisation bins (it re-encodes to the same file), noted per image."""
    from operators.jpeg import JPEG, JPEGTables, quantisation_projection

    if simulate_input and quality is None:
        raise RestoreError("--simulate needs --quality Q (1..100): the JPEG quality to encode the clean images at")
    if quality is not None and not 1 <= quality <= 100:
        raise RestoreError(f"--quality must be in 1..100, got {quality}")
    references = references_from(reference)

    def prepare(path: Path, index: int) -> Item:
        if simulate_input:
            image = read_image(path)
            x = image.pixels[None]
            tables = JPEGTables.standard(quality, "4:2:0", gray=x.shape[1] == 1)
            op = JPEG(tables, tuple(x.shape[1:]))
            y = op.A_exact(x)
            saved, truth, depth = jpeg_bytes(x[0], tables), x, image.bit_depth
        else:
            op, y = JPEG.from_jpeg_file(path)
            saved, truth, depth = None, None, 8
        ref_path = references(path)
        ref = reference_for(ref_path, op.in_shape) if ref_path else truth
        noise = GaussianNoise(float(op.quant.float().mean()) / math.sqrt(12))  # rounding to a bin of width Q: Q / √12

        def finish(restoration: Tensor) -> tuple[Tensor, str]:
            if not project:
                return restoration, ""
            projected, moved = quantisation_projection(restoration[None].double(), op.coefficients(y.double()), op.tables)
            again = op.A_exact(projected.clamp(-1, 1).float())
            same = float((again == y).float().mean())
            return projected[0].float().clamp(-1, 1), (f"projected onto the file's quantisation bins ({int(moved)} "
                                                       f"coefficients moved); re-encodes {same:.1%} of them exactly")

        return Item(index, path.stem, path, y, op, noise, ref, None, depth, saved, finish=finish)

    settings = {"quality": quality, "simulate": simulate_input, "project": project}
    return TaskSetup("dejpeg", prepare, settings, IMAGE_SUFFIXES if simulate_input else (".jpg", ".jpeg"), existing(reference))


def jpeg_bytes(pixels: Tensor, tables) -> bytes:
    """The JPEG file Pillow (libjpeg) writes for (C, H, W) pixels with these tables: restore's measurement, saved."""
    import io

    from PIL import Image as PILImage

    from restore.io import to_array

    buffer = io.BytesIO()
    subsampling = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}[tables.subsampling]
    qtables = [tables.luma.flatten().tolist()] + ([] if tables.gray else [tables.chroma.flatten().tolist()])
    PILImage.fromarray(to_array(pixels)).save(buffer, "JPEG", qtables=qtables, subsampling=subsampling)
    return buffer.getvalue()


def stored_intensity_scale(path: Path) -> float | None:
    """The intensity scale an .npz measurement of restore's carries, else None."""
    if path.suffix.lower() != ".npz":
        return None
    with np.load(path, allow_pickle=False) as data:
        return float(data["intensity_scale"]) if "intensity_scale" in data.files else None


def ct(angles: int, arc: float, size: int | None, noise_sigma: float | None, simulate_input: bool,
       reference: Path | None = None) -> TaskSetup:
    """CT: a sinogram (.npy, angles × detectors), or --simulate from an image (its luminance).

    A measured sinogram's image is square; its side is ``size``, else the reference's, else the
    largest side whose default detector count ⌈√2·side⌉ equals the sinogram's. For CT,
    --noise-sigma is relative to the maximum of each image's sinogram (the protocol's ct60: 0.005).
    """
    spec = f"ct:{angles}" + (f":arc={arc:g}" if arc != 180 else "")
    noise_sigma = noise_sigma_for("ct", noise_sigma, simulate_input)
    references = references_from(reference)

    check_noise_sigma(noise_sigma)

    def noise_for(sinogram01: Tensor):
        sigma = (noise_sigma or 0.0) * float(sinogram01.abs().max())
        return GaussianNoise(2 * sigma) if sigma > 0 else NoNoise()

    def prepare(path: Path, index: int) -> Item:
        if simulate_input:
            image = read_image(path)
            x = colorize_input(image.pixels)[None]
            op = operators.build(spec, tuple(x.shape[1:]))
            noise = noise_for(op.A((x + 1) / 2))
            y = simulate(x, op, noise, [index])
            sinogram = ((y + op.A(torch.ones_like(x))) / 2)[0, 0].numpy()  # of the [0, 1] image, angles × detectors
            return Item(index, path.stem, path, y, op, noise, x, None, image.bit_depth, sinogram)
        sinogram = read_sinogram(path)  # (1, angles, detectors)
        if sinogram.shape[1] != angles:
            raise RestoreError(f"{path.name}: the sinogram has {sinogram.shape[1]} angles (rows), --angles says {angles}")
        ref_path = references(path)
        detectors = sinogram.shape[2]
        side = size or (read_image(ref_path).pixels.shape[-1] if ref_path else math.floor(detectors / math.sqrt(2)))
        op = operators.build(spec + f":detectors={detectors}", (1, side, side))
        ref = reference_for(ref_path, op.in_shape) if ref_path else None
        # the sinogram of an image u in [0, 1]; the library's image is x = 2u - 1, so A x = 2 A u - A 1
        y = 2 * sinogram[None].float() - op.A(torch.ones((1, *op.in_shape)))
        noise = noise_for(sinogram)
        return Item(index, path.stem, path, y, op, noise, ref, None, 8)

    settings = {"angles": angles, "arc": arc, "size": size, "noise": noise_sigma, "simulate": simulate_input}
    return TaskSetup("ct", prepare, settings, IMAGE_SUFFIXES if simulate_input else (".npy",), existing(reference))


def phase(oversample: float, noise_sigma: float | None, simulate_input: bool, reference: Path | None = None) -> TaskSetup:
    """Fourier phase retrieval: an image from the magnitudes of its zero-padded Fourier transform (operators.phase).

    A measurement is a .npy of magnitudes, (N_h, N_w) or (channels, N_h, N_w): the centred orthonormal DFT of the
    [0, 1] image padded by ``int(oversample / 8 · side)`` zeros on each side (DAPS's convention), as ``--simulate``
    saves them. The magnitudes cannot tell an image from its 180° rotation: with a reference, the restoration is
    turned to whichever matches it (noted); without one it may come out upside down. ``noise_sigma``: σ of the
    magnitudes, in the [0, 1] image's units.
    """
    from operators.phase import best_of_ambiguities, padding

    if not (oversample > 0 and math.isfinite(oversample)):
        raise RestoreError(f"--oversample must be a number > 0 (2: a quarter of the side padded on each side), got {oversample:g}")
    sigma = noise_sigma_for("phase", noise_sigma, simulate_input)
    check_noise_sigma(sigma)
    noise = GaussianNoise(sigma) if sigma else NoNoise()  # the magnitudes are already in the [0, 1] image's units
    spec = f"phase:oversample={oversample:g}"
    references = references_from(reference)

    def image_side(padded: int, name: str) -> int:
        side = next((n for n in range(1, padded) if n + 2 * padding(oversample, n) == padded), None)  # at most one
        if side is None:
            raise RestoreError(f"{name}: no image side pads to {padded} at oversample {oversample:g}; give the "
                               "--oversample the magnitudes were measured with")
        return side

    def prepare(path: Path, index: int) -> Item:
        if simulate_input:
            image = read_image(path)
            x = image.pixels[None]
            op = operators.build(spec, tuple(x.shape[1:]))
            y = simulate(x, op, noise, [index])
            saved, truth, depth = y[0].numpy(), x, image.bit_depth
        else:
            array = read_array(path, "Fourier magnitudes")
            array = array[None] if array.ndim == 2 else array
            if array.ndim != 3 or array.shape[0] not in (1, 3) or np.iscomplexobj(array):
                raise RestoreError(f"{path.name}: Fourier magnitudes must be a real (N_h, N_w) or (1 or 3, N_h, N_w) "
                                   f"array, got {array.dtype} {array.shape}")
            shape = (array.shape[0], image_side(array.shape[1], path.name), image_side(array.shape[2], path.name))
            op = operators.build(spec, shape)
            y, saved, truth, depth = torch.from_numpy(array.astype(np.float32))[None], None, None, 8
        ref_path = references(path)
        ref = reference_for(ref_path, op.in_shape) if ref_path else truth

        def finish(restoration: Tensor) -> tuple[Tensor, str]:
            if ref is None:
                return restoration, ""
            turned = best_of_ambiguities(restoration[None], ref.to(restoration.dtype))[0]
            rotated = not torch.equal(turned, restoration)
            return turned, "turned 180° to match the reference (the magnitudes cannot tell the two apart)" if rotated else ""

        return Item(index, path.stem, path, y, op, noise, ref, None, depth, saved, finish=finish)

    settings = {"oversample": oversample, "noise": sigma, "simulate": simulate_input}
    return TaskSetup("phase", prepare, settings, IMAGE_SUFFIXES if simulate_input else (".npy",), existing(reference))


def with_estimated_noise(prepare: Prepare) -> Prepare:
    """Wrap a task whose noise level is unknown: estimate σ from each measurement itself."""

    def wrapped(path: Path, index: int) -> Item:
        item = prepare(path, index)
        sigma = round(estimate_noise_sigma(item.y[0]), 4)
        item.noise = gaussian_noise(sigma)
        item.notes = [*item.notes, f"noise σ estimated {sigma:g}"]
        return item

    return wrapped


def estimate_noise_sigma(pixels: Tensor) -> float:
    """σ on the [0, 1] scale estimated from the image itself (patch PCA, Chen et al. 2015: restore.noise_level)."""
    return estimate_sigma(pixels) / 2  # library pixels span [-1, 1], twice the [0, 1] scale
