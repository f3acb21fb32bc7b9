"""MRI: undersampled Fourier measurements y = M ⊙ F(S_k ⊙ x).

Conventions (those of fastMRI, Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for
Accelerated MRI", arXiv:1811.08839):

* ``F`` is the orthonormal 2-D DFT over the last two dimensions (``torch.fft.fft2(norm="ortho")``),
  centred: ``fftshift(fft2(ifftshift(x)))``, so that the k-space centre (frequency 0) sits at
  array index (H // 2, W // 2) and frequency k at index k + N // 2 along an axis of length N.
  F is unitary (‖F x‖ = ‖x‖) and its inverse is ``fftshift(ifft2(ifftshift(y)))``.
* ``M`` is a 0/1 sampling mask of shape (H, W), stored as a buffer (1 or B, 1, H, W). The
  Cartesian masks sample whole phase-encode columns (the last dimension, W), as in fastMRI.
* The output k-space is complex (complex64 for float32 images, complex128 for float64).
* Single-coil: y = M ⊙ F x. Multi-coil with complex sensitivity maps S of shape (K, H, W):
  y_k = M ⊙ F(S_k ⊙ x) for every coil k.
* Images are real by default: the luminance image (C = 1). A C-channel real image is treated
  channel-wise, each channel measured independently with the same mask and maps. With
  ``complex=1`` the images are complex (``complex_input = True``). The output has shape
  (B, C·K, H, W), entry c·K + k holding channel c seen by coil k: (B, C, H, W) single-coil and
  (B, K, H, W) for a one-channel image with K coils.

Adjoint and pseudo-inverse. Inner products are real (see operators.base), so for real images
the adjoint is Aᵀ y = Re(Σ_k S̄_k ⊙ Fᴴ(M ⊙ y_k)); for complex images it is the same without Re.
For a single coil and complex images F is unitary and M a projection, so A⁺ y = Fᴴ(M ⊙ y)
exactly. For a single coil and real images Re(Fᴴ M y) is *not* A⁺ y in general: the spectrum
of a real image is Hermitian-symmetric (X(-k) = conj X(k)), so a frequency k is known from
either k or -k. On real images AᵀA = Fᴴ diag(w) F with the symmetrised mask
w = (M + M̃) / 2, M̃(k) = M(-k), w ∈ {0, ½, 1}, which gives the exact closed forms
A⁺ y = Re Fᴴ(w⁺ ⊙ (M y + (M y)˜*) / 2) (w⁺ = 1/w where w > 0, else 0; ˜* the conjugated
reflection) and (AᵀA + ρ I)⁻¹ = Fᴴ diag(1 / (w + ρ)) F. Multi-coil operators use the
conjugate-gradient solvers of the base class, which converge slowly when the problem is
ill-conditioned (heavy undersampling with few, smooth coil maps).

Mask families (spec ``mri:FAMILY:ARGS[:options]``, see :meth:`MRI.from_spec`):

* ``equispaced:R[:center=N|center_fraction=F][:offset=O]`` — fastMRI's EquispacedMaskFunc:
  every R-th column from ``offset`` (fastMRI draws it at random; here it is fixed, default 0)
  plus the N central columns (default: F = 0.08 of the width, rounded). The benchmark
  protocol's ``mri4x`` is ``mri:equispaced:4:center=20``.
* ``random:R[:center=N|center_fraction=F][:seed=S]`` — fastMRI's RandomMaskFunc: the central
  columns plus every other column kept with probability p = (W/R - N) / (W - N), so that the
  expected acceleration is R.
* ``poisson:R[:center=N|center_fraction=F][:seed=S]`` — 2-D variable-density Poisson-disc
  sampling (Lustig et al., "Sparse MRI", MRM 2007; Vasanawala et al., Radiology 2011): a fully
  sampled centred calibration region of N × N (or F·H × F·W) points, then points drawn in a
  random order and kept when no earlier point q lies within q's radius r(q) = s·(1 + 2ρ(q)),
  ρ the elliptical distance from the centre (1 at the edge midpoints); the density so falls
  about 9-fold from the centre to the edges. The scale s is found by bisection so that the
  acceleration H·W / #points is within 0.2 % of R (or as close as 24 steps get).
* ``radial:LINES`` — LINES lines through the k-space centre at angles π·i / LINES, rasterised
  by rounding points spaced half a pixel apart to the nearest pixel. The mask is point
  symmetric about the centre (where the mirror index lies in the array).
* ``mask:PATH`` — a 0/1 .npy mask of shape (H, W), or (W,) for columns (PATH cannot contain ':').
* ``bits:HEX`` — a mask written out in the spec (what :meth:`MRI.from_mask` produces): the
  (W,) column mask or the (H, W) mask in row-major order, packed 8 bits a byte, most
  significant first (``numpy.packbits``), as hexadecimal.

Options for every family: ``complex=1`` (complex images), ``coils=K`` (K smooth synthetic
sensitivity maps, see :func:`synthetic_maps`) or ``maps=PATH`` (a complex .npy of shape
(K, H, W) or (H, W)). Accepted aliases, rewritten to the canonical spec: ``center_lines=N``
for ``center=N`` and ``mri:mask=PATH`` for ``mri:mask:PATH``.

Helpers: :func:`zero_filled` (the classical baseline, the inverse FFT of the zero-filled
k-space) and :func:`read_kspace` (.npy or fastMRI .h5 k-space files).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from operators.base import LinearOperator, _per_image
from operators.errors import OperatorError
from operators.registry import format_number, parse_args, read_integer, read_number, read_seed, register

#: fraction of the columns fully sampled at the centre when a spec gives neither center nor center_fraction
DEFAULT_CENTER_FRACTION = 0.08
#: Poisson-disc radius growth: r = s·(1 + POISSON_SLOPE·ρ), ρ = 1 at the edges of k-space
POISSON_SLOPE = 2.0
#: at most this many bisection steps for the Poisson-disc scale, stopping once the number of
#: samples is within POISSON_TOLERANCE (relative) of H·W / R
POISSON_STEPS = 24
POISSON_TOLERANCE = 0.002


# ----------------------------------------------------------------------------------------------
# Centred orthonormal FFT


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two dimensions (fastMRI's ``fft2c``)."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def ifft2c(y: Tensor) -> Tensor:
    """Inverse of :func:`fft2c` (and its adjoint, since it is unitary)."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(y, dim=dims), norm="ortho"), dim=dims)


def standard_layout(kspace: Tensor) -> tuple[Tensor, str]:
    """k-space (…, H, W) in this module's layout — fastMRI's centred ``fft2c`` of an image stored centred — and a
    note when it came in another common one, converted: numpy's plain ``fft2(x)`` (the energy peak, the DC
    term, sits in a corner instead of the centre) or ``fftshift(fft2(x))`` without ``ifftshift`` (the image
    comes back with its quadrants swapped). The second is told from the image: a photograph or scan has no
    seam through its middle and its content is not pushed into the corners; a swapped one has both.
    """
    notes = []
    magnitude = kspace.abs().flatten(0, -3).sum(0)
    h, w = magnitude.shape
    row, col = divmod(int(magnitude.argmax()), w)
    near_corner = min(row, h - 1 - row) < h / 8 and min(col, w - 1 - col) < w / 8
    if near_corner:
        kspace = torch.fft.fftshift(kspace, dim=(-2, -1))
        notes.append("uncentred k-space (numpy's fft2): moved its centre to the middle")
    image = ifft2c(kspace).abs().flatten(0, -3).sum(0).double()
    swapped = torch.fft.ifftshift(image, dim=(-2, -1))
    if _looks_swapped(image, swapped):
        kspace = fft2c(torch.fft.ifftshift(ifft2c(kspace), dim=(-2, -1)))
        notes.append("k-space of an image with swapped quadrants (fftshift(fft2(x)) without ifftshift): unswapped")
    return kspace, "; ".join(notes)


def _looks_swapped(image: Tensor, other: Tensor) -> bool:
    """Whether ``image`` is the quadrant-swapped version of ``other`` rather than the other way round."""
    def seam(x: Tensor) -> float:
        """Mean jump across the central row and column, over the mean jump elsewhere."""
        h, w = x.shape
        dy, dx = (x[1:] - x[:-1]).abs(), (x[:, 1:] - x[:, :-1]).abs()
        centre = (dy[h // 2 - 1].mean() + dx[:, w // 2 - 1].mean()) / 2
        return float(centre / ((dy.mean() + dx.mean()) / 2).clamp_min(1e-12))

    def centre_share(x: Tensor) -> float:
        h, w = x.shape
        energy = x.pow(2)
        return float(energy[h // 4 : h - h // 4, w // 4 : w - w // 4].sum() / energy.sum().clamp_min(1e-12))

    if min(image.shape) < 8:
        return False
    return seam(image) > 1.5 * seam(other) or centre_share(other) > 2 * centre_share(image) + 0.1


def reflect_frequencies(k: Tensor) -> Tensor:
    """k̃(f) = k(-f) on centred arrays (last two dims), for any parity of H and W."""
    dims = (-2, -1)
    uncentred = torch.fft.ifftshift(k, dim=dims)
    # flip maps index i to N-1-i, the roll by one to N-i mod N, i.e. frequency f to -f
    reflected = torch.roll(torch.flip(uncentred, dims=dims), shifts=(1, 1), dims=dims)
    return torch.fft.fftshift(reflected, dim=dims)


# ----------------------------------------------------------------------------------------------
# Sampling masks (float64 0/1 tensors; column masks have shape (W,), 2-D masks (H, W))


def center_columns(length: int, count: int) -> Tensor:
    """0/1 mask of the ``count`` central entries of ``length`` (fastMRI: from (length - count + 1) // 2)."""
    mask = torch.zeros(length, dtype=torch.float64)
    start = (length - count + 1) // 2
    mask[start : start + count] = 1.0
    return mask


def equispaced_mask(width: int, acceleration: int, center: int, offset: int = 0) -> Tensor:
    """Every ``acceleration``-th column from ``offset`` plus the ``center`` central columns, shape (W,)."""
    mask = center_columns(width, center)
    mask[offset::acceleration] = 1.0
    return mask


def random_mask(width: int, acceleration: float, center: int, generator: torch.Generator) -> Tensor:
    """Central columns plus each other column with probability (W/R - N) / (W - N), shape (W,)."""
    mask = center_columns(width, center)
    if center < width:
        probability = (width / acceleration - center) / (width - center)
        draws = torch.rand(width, generator=generator, dtype=torch.float64)
        mask = torch.maximum(mask, (draws < probability).to(torch.float64))
    return mask


def poisson_disc_mask(height: int, width: int, acceleration: float, calibration: tuple[int, int],
                      generator: torch.Generator) -> Tensor:
    """Variable-density Poisson-disc mask (H, W) with a fully sampled central calibration rectangle."""
    rows = torch.arange(height, dtype=torch.float64) - height // 2
    cols = torch.arange(width, dtype=torch.float64) - width // 2
    ky, kx = torch.meshgrid(rows / (height / 2), cols / (width / 2), indexing="ij")
    profile = (1.0 + POISSON_SLOPE * torch.sqrt(ky * ky + kx * kx)).numpy()
    calib = (center_columns(height, calibration[0])[:, None] * center_columns(width, calibration[1])[None, :]).numpy()
    # One random order for every scale, so that the count falls (nearly) monotonically with the scale.
    order = torch.randperm(height * width, generator=generator).tolist()
    target = height * width / acceleration

    def sample(scale: float) -> np.ndarray:
        radius = scale * profile
        reach = int(math.ceil(radius.max()))
        offsets = np.arange(-reach, reach + 1, dtype=np.float64)
        distance2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
        mask = calib > 0
        blocked = np.zeros((height, width), dtype=bool)

        def stamp(i: int, j: int) -> None:
            # Block every pixel closer than this sample's radius (the sample keeps its own place).
            r = radius[i, j]
            i0, i1, j0, j1 = max(i - reach, 0), min(i + reach + 1, height), max(j - reach, 0), min(j + reach + 1, width)
            disc = distance2[i0 - i + reach : i1 - i + reach, j0 - j + reach : j1 - j + reach] < r * r
            blocked[i0:i1, j0:j1] |= disc

        for i, j in zip(*np.nonzero(mask)):
            stamp(i, j)
        for index in order:
            i, j = divmod(index, width)
            if not blocked[i, j] and not mask[i, j]:
                mask[i, j] = True
                stamp(i, j)
        return mask

    # Bisection on log(scale): radii below 1 pixel block nothing (every pixel sampled), radii of
    # the image size leave little beyond the calibration region.
    low, high = math.log(0.5 / POISSON_SLOPE), math.log(2.0 * max(height, width))
    best = sample(math.exp(low))
    for _ in range(POISSON_STEPS):
        if abs(best.sum() - target) <= POISSON_TOLERANCE * target:
            break
        middle = 0.5 * (low + high)
        mask = sample(math.exp(middle))
        if abs(mask.sum() - target) < abs(best.sum() - target):
            best = mask
        if mask.sum() > target:
            low = middle
        else:
            high = middle
    return torch.from_numpy(best.astype(np.float64))


def radial_mask(height: int, width: int, lines: int) -> Tensor:
    """``lines`` lines through the centre (H // 2, W // 2) at angles π·i / lines, nearest-pixel rasterised, (H, W)."""
    reach = max(height, width)
    t = torch.arange(-2 * reach, 2 * reach + 1, dtype=torch.float64) / 2  # half-pixel steps
    angles = torch.arange(lines, dtype=torch.float64) * math.pi / lines
    # torch.round rounds halves to even, so round(-v) = -round(v): the lines are point symmetric.
    rows = torch.round(t[None, :] * torch.sin(angles)[:, None]).long() + height // 2
    cols = torch.round(t[None, :] * torch.cos(angles)[:, None]).long() + width // 2
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    mask = torch.zeros(height, width, dtype=torch.float64)
    mask[rows[inside], cols[inside]] = 1.0
    return mask


def synthetic_maps(coils: int, height: int, width: int) -> Tensor:
    """K smooth complex sensitivity maps (K, H, W), complex128, with Σ_k |S_k|² = 1 at every pixel.

    A simple model for tests and simulations, not a physical coil model: coil k sits outside
    the image at angle 2πk/K (1.5 half-widths from the centre); its magnitude decays as
    1 / (1 + d²) with the distance d and its phase is 2πk/K plus a gentle ramp towards the coil.
    """
    rows = (torch.arange(height, dtype=torch.float64) - height // 2) / (height / 2)
    cols = (torch.arange(width, dtype=torch.float64) - width // 2) / (width / 2)
    ky, kx = torch.meshgrid(rows, cols, indexing="ij")
    angles = 2 * math.pi * torch.arange(coils, dtype=torch.float64) / coils
    dy, dx = torch.sin(angles)[:, None, None], torch.cos(angles)[:, None, None]
    magnitude = 1.0 / (1.0 + (ky - 1.5 * dy) ** 2 + (kx - 1.5 * dx) ** 2)
    phase = angles[:, None, None] + 0.5 * math.pi * (ky * dy + kx * dx)
    maps = torch.polar(magnitude, phase)
    return maps / magnitude.square().sum(dim=0).sqrt()


def pack_mask(mask: Tensor) -> str:
    """A 0/1 mask as hexadecimal, row-major, 8 bits a byte, most significant first (the ``bits`` family)."""
    return np.packbits(mask.flatten().numpy() > 0.5).tobytes().hex()


def unpack_mask(text: str, height: int, width: int) -> Tensor:
    """The mask of :func:`pack_mask`: (W,) or (H, W) depending on the number of hex digits."""
    try:
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8)).astype(np.float64)
    except ValueError:
        raise OperatorError(f"mri bits: '{text[:20]}...' is not a hexadecimal mask") from None
    for shape in ((width,), (height, width)):
        n = math.prod(shape)
        if len(text) == 2 * math.ceil(n / 8):
            return torch.from_numpy(bits[:n].reshape(shape).copy())
    raise OperatorError(f"mri bits: {len(text)} hex digits fit neither {width} columns nor a {height}x{width} mask")


# ----------------------------------------------------------------------------------------------
# Spec parsing helpers


def _center_option(keywords: dict[str, str], length: int) -> tuple[int, str]:
    """(number of central entries of ``length``, its canonical spec option) from center= or center_fraction=."""
    if "center_lines" in keywords:  # alias
        if "center" in keywords:
            raise OperatorError("mri: give center or center_lines, not both")
        keywords["center"] = keywords.pop("center_lines")
    if "center" in keywords and "center_fraction" in keywords:
        raise OperatorError("mri: give center or center_fraction, not both")
    if "center" in keywords:
        count = read_integer(keywords.pop("center"), "mri: center", minimum=0)
        option = f"center={count}"
    else:
        text = keywords.pop("center_fraction", str(DEFAULT_CENTER_FRACTION))
        fraction = read_number(text, "mri: center_fraction", minimum=0)
        if fraction > 1:
            raise OperatorError(f"mri: center_fraction must be in [0, 1], got {format_number(fraction)}")
        count = round(fraction * length)
        option = f"center_fraction={format_number(fraction)}"
    if count > length:
        raise OperatorError(f"mri: {count} central lines do not fit in {length}")
    return count, option


def _seed_option(keywords: dict[str, str]) -> tuple[torch.Generator, str]:
    seed = read_seed(keywords)
    keywords.pop("seed", None)
    return torch.Generator().manual_seed(seed), f"seed={seed}"


def _load_npy(path: str, what: str) -> np.ndarray:
    """A .npy array (no pickles) or OperatorError naming ``what`` and the path."""
    if Path(path).is_dir():
        raise OperatorError(f"mri: {what} {path} is a folder, not a .npy file")
    if not Path(path).is_file():
        raise OperatorError(f"mri: {what} file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001  any unreadable file is one clear error
        raise OperatorError(f"mri: cannot read {what} {path}: not a .npy array ({str(err).splitlines()[0]})") from None


def load_mask(path: str, height: int, width: int) -> Tensor:
    """A 0/1 mask from .npy: (H, W) or (W,) columns, float64."""
    array = _load_npy(path, "mask")
    if array.shape not in ((height, width), (width,)):
        raise OperatorError(
            f"mri: mask {path} has shape {array.shape}, the image needs ({height}, {width}) or ({width},)"
        )
    if np.iscomplexobj(array) or not np.isin(array, (0, 1)).all():
        raise OperatorError(f"mri: mask {path} must contain only 0 and 1")
    return torch.from_numpy(array.astype(np.float64))


def load_maps(path: str, height: int, width: int) -> Tensor:
    """Sensitivity maps from .npy: (K, H, W) or (H, W), complex128 (K, H, W)."""
    array = _load_npy(path, "sensitivity maps")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (height, width) or not np.issubdtype(array.dtype, np.number):
        raise OperatorError(f"mri: maps {path} have shape {array.shape}, the image needs (coils, {height}, {width})")
    if not np.isfinite(array).all() or not np.abs(array).any():
        raise OperatorError(f"mri: maps {path} must be finite and not all zero")
    return torch.from_numpy(array.astype(np.complex128))


# ----------------------------------------------------------------------------------------------
# The operator


@register
class MRI(LinearOperator):
    """y = M ⊙ F(S_k ⊙ x): centred orthonormal 2-D FFT, sampling mask, optional coil maps; complex output."""

    name = "mri"

    def __init__(self, spec: str, mask: Tensor, in_shape: tuple[int, int, int], *, complex_input: bool = False,
                 maps: Tensor | None = None) -> None:
        super().__init__(spec, in_shape)
        c, h, w = self.in_shape
        mask = torch.as_tensor(mask, dtype=torch.float64)
        if mask.dim() == 1:
            mask = mask[None, :].expand(h, w)
        if mask.shape != (h, w):
            raise OperatorError(f"mri: mask of shape {tuple(mask.shape)} does not match the image {h}x{w}")
        self.complex_input = bool(complex_input)
        self.coils = 1 if maps is None else int(maps.shape[0])
        self.out_shape = (c * self.coils, h, w)
        self.register_buffer("mask", mask.reshape(1, 1, h, w).clone())
        if maps is not None:
            if maps.shape[1:] != (h, w):
                raise OperatorError(f"mri: maps of shape {tuple(maps.shape)} do not match the image {h}x{w}")
            # Stored as real (…, 2) pairs: Module.to(dtype) would drop the imaginary part of a complex buffer.
            self.register_buffer("maps", torch.view_as_real(maps.to(torch.complex128)).unsqueeze(0).clone())
        else:
            self.register_buffer("maps", None)

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> MRI:
        """Build from ``FAMILY:ARGS[:key=value...]`` (families and options in the module docstring)."""
        positional, keywords = parse_args(args)
        if not positional and "mask" in keywords:  # alias mri:mask=PATH
            positional = ["mask", keywords.pop("mask")]
        if not positional:
            raise OperatorError(
                f"mri needs a mask family: equispaced, random, poisson, radial, mask or bits, got '{args}'"
            )
        c, h, w = (int(v) for v in in_shape)
        family, values = positional[0], positional[1:]
        builders = {"equispaced": _equispaced, "random": _random, "poisson": _poisson, "radial": _radial,
                    "mask": _from_file, "bits": _from_bits}
        if family not in builders:
            raise OperatorError(f"mri: unknown mask family '{family}'; known: {', '.join(builders)}")
        if len(values) != 1:
            raise OperatorError(f"mri:{family} takes one positional argument, got {len(values)} in '{args}'")
        mask, parts = builders[family](values[0], keywords, h, w)

        complex_input = read_integer(keywords.pop("complex", "0"), "mri: complex", minimum=0)
        if complex_input > 1:
            raise OperatorError(f"mri: complex must be 0 or 1, got {complex_input}")
        if complex_input:
            parts.append("complex=1")
        maps = None
        if "coils" in keywords and "maps" in keywords:
            raise OperatorError("mri: give coils or maps, not both")
        if "coils" in keywords:
            coils = read_integer(keywords.pop("coils"), "mri: coils", minimum=1)
            maps = synthetic_maps(coils, h, w)
            parts.append(f"coils={coils}")
        elif "maps" in keywords:
            path = keywords.pop("maps")
            maps = load_maps(path, h, w)
            parts.append(f"maps={path}")
        if keywords:
            raise OperatorError(f"mri:{family}: unknown option(s) {', '.join(sorted(keywords))} in '{args}'")
        return cls(":".join(["mri", family, *parts]), mask, in_shape, complex_input=bool(complex_input), maps=maps)

    @classmethod
    def from_mask(cls, mask: Tensor, in_shape: tuple[int, int, int], *, complex_input: bool = False) -> MRI:
        """Single-coil operator for a given 0/1 mask: shape (W,), (H, W) or with leading dims of size 1."""
        _, h, w = (int(v) for v in in_shape)
        mask = torch.as_tensor(mask).detach().cpu().to(torch.float64)
        while mask.dim() > 2 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.shape not in ((h, w), (1, w), (w,)):
            raise OperatorError(f"mri: mask of shape {tuple(mask.shape)} does not match the image {h}x{w}")
        if not ((mask == 0) | (mask == 1)).all():
            raise OperatorError("mri: a mask must contain only 0 and 1")
        mask = mask.expand(h, w)
        if (mask == mask[:1]).all():  # one value per column: spell out only the W columns
            mask = mask[0]
        spec = f"mri:bits:{pack_mask(mask)}" + (":complex=1" if complex_input else "")
        return cls(spec, mask, in_shape, complex_input=complex_input)

    @classmethod
    def stack(cls, ops: list[LinearOperator]) -> LinearOperator:
        """Stack per-image operators; all must agree on coils and image type (only masks and maps differ)."""
        kinds = {(type(op), getattr(op, "coils", None), op.complex_input, getattr(op, "maps", None) is None)
                 for op in ops}
        if len(kinds) > 1:
            raise OperatorError("only MRI operators with the same coils and image type can be stacked: "
                                + ", ".join(op.spec for op in ops))
        return super().stack(ops)

    # -- buffers cast on the fly ------------------------------------------------------------------

    def _mask(self, like: Tensor) -> Tensor:
        """The mask as (1|B, 1, 1, H, W) in ``like``'s real dtype and device."""
        return self.mask.to(dtype=like.real.dtype, device=like.device).unsqueeze(1)

    def _maps(self, like: Tensor) -> Tensor:
        """The complex maps as (1|B, 1, K, H, W) in ``like``'s precision and device."""
        pairs = self.maps.to(dtype=like.real.dtype, device=like.device).contiguous()
        return torch.view_as_complex(pairs).unsqueeze(1)

    def _normal_weights(self, like: Tensor) -> Tensor:
        """w with AᴴA = Fᴴ diag(w) F (single coil): the mask, symmetrised for real images; (1|B, 1, H, W)."""
        mask = self.mask.to(dtype=like.real.dtype, device=like.device)
        return mask if self.complex_input else 0.5 * (mask + reflect_frequencies(mask))

    # -- the operator -----------------------------------------------------------------------------

    def A(self, x: Tensor) -> Tensor:
        z = x if x.is_complex() else x.to(x.dtype.to_complex())
        z = z.unsqueeze(2)  # (B, C, 1, H, W): a coil dimension
        if self.maps is not None:
            z = z * self._maps(z)
        return (fft2c(z) * self._mask(z)).flatten(1, 2)

    def A_adjoint(self, y: Tensor) -> Tensor:
        k = y if y.is_complex() else y.to(y.dtype.to_complex())
        k = k.unflatten(1, (self.in_shape[0], self.coils)) * self._mask(k)
        z = ifft2c(k)
        z = (z * self._maps(z).conj()).sum(dim=2) if self.maps is not None else z.squeeze(2)
        return z if self.complex_input else z.real

    def A_pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> Tensor:
        """Closed form for a single coil (see the module docstring); conjugate gradients for multi-coil."""
        if self.maps is not None:
            return super().A_pinv(y, tol=tol, max_iter=max_iter)
        k = y if y.is_complex() else y.to(y.dtype.to_complex())
        k = k * self.mask.to(dtype=k.real.dtype, device=k.device)
        if self.complex_input:
            return ifft2c(k)
        weights = self._normal_weights(k)
        inverse = torch.where(weights > 0, 1.0 / weights.clamp_min(0.5), torch.zeros_like(weights))
        symmetric = 0.5 * (k + reflect_frequencies(k.conj()))  # F Aᵀ y
        return ifft2c(inverse * symmetric).real

    def solve_normal(self, rhs: Tensor, rho: float | Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """(AᴴA + ρ I)⁻¹ rhs: Fᴴ diag(1 / (w + ρ)) F rhs for one coil, conjugate gradients for multi-coil."""
        if self.maps is not None:
            return super().solve_normal(rhs, rho, tol=tol, max_iter=max_iter)
        rho = _per_image(rho, rhs)
        x = ifft2c(fft2c(rhs) / (self._normal_weights(rhs) + rho))
        return x if self.complex_input else x.real


# -- mask families: (argument, options, H, W) -> (mask, canonical spec parts); options consumed --


def _equispaced(value: str, keywords: dict[str, str], height: int, width: int) -> tuple[Tensor, list[str]]:
    acceleration = read_integer(value, "mri: equispaced acceleration", minimum=1)
    center, center_part = _center_option(keywords, width)
    offset = read_integer(keywords.pop("offset", "0"), "mri: offset", minimum=0)
    if offset >= acceleration:
        raise OperatorError(f"mri: offset must be below the acceleration {acceleration}, got {offset}")
    parts = [str(acceleration), center_part] + ([f"offset={offset}"] if offset else [])
    return equispaced_mask(width, acceleration, center, offset), parts


def _random(value: str, keywords: dict[str, str], height: int, width: int) -> tuple[Tensor, list[str]]:
    acceleration = read_number(value, "mri: random acceleration", minimum=1)
    center, center_part = _center_option(keywords, width)
    generator, seed_part = _seed_option(keywords)
    if center > width / acceleration:
        raise OperatorError(f"mri: {center} central columns already exceed {width}/{format_number(acceleration)} "
                            "sampled columns; lower center or the acceleration")
    return random_mask(width, acceleration, center, generator), [format_number(acceleration), center_part, seed_part]


def _poisson(value: str, keywords: dict[str, str], height: int, width: int) -> tuple[Tensor, list[str]]:
    acceleration = read_number(value, "mri: poisson acceleration", minimum=1)
    if "center" in keywords or "center_lines" in keywords:
        rows, center_part = _center_option(keywords, min(height, width))
        cols = rows
    else:
        rows, center_part = _center_option(dict(keywords), height)
        cols, _ = _center_option(keywords, width)
    generator, seed_part = _seed_option(keywords)
    if rows * cols > height * width / acceleration:
        raise OperatorError(f"mri: the {rows}x{cols} calibration region already exceeds "
                            f"1/{format_number(acceleration)} of the {height}x{width} k-space")
    mask = poisson_disc_mask(height, width, acceleration, (rows, cols), generator)
    return mask, [format_number(acceleration), center_part, seed_part]


def _radial(value: str, keywords: dict[str, str], height: int, width: int) -> tuple[Tensor, list[str]]:
    lines = read_integer(value, "mri: number of radial lines", minimum=1)
    return radial_mask(height, width, lines), [str(lines)]


def _from_file(value: str, keywords: dict[str, str], height: int, width: int) -> tuple[Tensor, list[str]]:
    return load_mask(value, height, width), [value]


def _from_bits(value: str, keywords: dict[str, str], height: int, width: int) -> tuple[Tensor, list[str]]:
    return unpack_mask(value, height, width), [value]


# ----------------------------------------------------------------------------------------------
# Helpers


def zero_filled(y: Tensor, op: MRI, *, magnitude: bool = False) -> Tensor:
    """The classical baseline: inverse FFT of the zero-filled k-space, coils combined with the maps.

    Returns (B, C, H, W): the real part for real images (the images live in [-1, 1], so the
    sign matters), the complex image for complex images, or the magnitude if ``magnitude``.
    Multi-coil data are combined as Σ_k S̄_k Fᴴ y_k / Σ_k |S_k|² (exact for full sampling).
    """
    k = y if y.is_complex() else y.to(y.dtype.to_complex())
    z = ifft2c(k.unflatten(1, (op.in_shape[0], op.coils)))
    if op.maps is not None:
        maps = op._maps(z)
        energy = maps.abs().square().sum(dim=2)
        z = (z * maps.conj()).sum(dim=2) / torch.where(energy > 0, energy, torch.ones_like(energy))
    else:
        z = z.squeeze(2)
    if magnitude:
        return z.abs()
    return z if op.complex_input else z.real


def read_kspace(path: str | Path, slice_index: int | None = None) -> tuple[Tensor, Tensor | None]:
    """(k-space (coils, H, W) complex, mask (W,) or (H, W) float or None) from .npy, .npz or fastMRI .h5.

    .npy: a complex (H, W) or (coils, H, W) array, no mask. .npz: arrays ``kspace`` and optionally ``mask``
    (what restore saves as an MRI measurement). .h5 (fastMRI): dataset ``kspace`` of
    shape (slices, H, W) single-coil or (slices, coils, H, W) multi-coil, of which slice
    ``slice_index`` is read (default: the middle one), and the optional dataset ``mask``. fastMRI
    stores k-space centred, as :func:`fft2c` makes it. complex64 and complex128 are kept.
    """
    path = Path(path)
    mask = None
    if path.suffix.lower() in (".h5", ".hdf5"):
        array, mask = _read_h5(path, slice_index)
    elif path.suffix.lower() == ".npz":  # restore's own saved measurements: kspace and its mask
        array, mask = _read_npz(path)
    else:
        array = _load_npy(str(path), "k-space")
        if array.ndim not in (2, 3):
            raise OperatorError(f"mri: k-space {path} must have shape (H, W) or (coils, H, W), got {array.shape}")
    if not np.iscomplexobj(array):
        raise OperatorError(f"mri: k-space {path} must be complex, got {array.dtype}")
    if not np.isfinite(array).all():
        raise OperatorError(f"mri: k-space {path} holds NaN or infinite values ({int((~np.isfinite(array)).sum())} of {array.size})")
    if not np.any(array):
        raise OperatorError(f"mri: k-space {path} is all zero: nothing was measured")
    if array.ndim == 2:
        array = array[None]
    dtype = np.complex128 if array.dtype == np.complex128 else np.complex64
    kspace = torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))
    if mask is not None:
        if mask.shape not in (kspace.shape[-1:], kspace.shape[-2:]):
            raise OperatorError(f"mri: mask in {path} has shape {mask.shape}, k-space {tuple(kspace.shape)}")
        mask = torch.from_numpy(mask.astype(np.float64))
    return kspace, mask


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(array 'kspace', array 'mask' or None) of an .npz file, as restore writes its MRI measurements."""
    if not path.is_file():
        raise OperatorError(f"mri: k-space file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "kspace" not in data.files:
                raise OperatorError(f"mri: {path} has no array 'kspace' (it has {', '.join(data.files) or 'none'})")
            return np.asarray(data["kspace"]), (np.asarray(data["mask"]) if "mask" in data.files else None)
    except OperatorError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged or non-.npz file
        raise OperatorError(f"mri: cannot read {path}: not an .npz archive ({str(err).splitlines()[0]})") from None


def _read_h5(path: Path, slice_index: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(one slice of dataset 'kspace', dataset 'mask' or None) of a fastMRI .h5 file."""
    try:
        import h5py
    except ImportError:
        raise OperatorError(f"mri: reading {path} needs h5py: pip install h5py") from None
    if not path.is_file():
        raise OperatorError(f"mri: k-space file not found: {path}")
    try:
        with h5py.File(path, "r") as handle:
            if "kspace" not in handle:
                raise OperatorError(f"mri: {path} has no dataset 'kspace' (fastMRI layout)")
            data = handle["kspace"]
            if not hasattr(data, "ndim"):  # an h5 group, not a dataset
                raise OperatorError(f"mri: 'kspace' in {path} is a group, not an array (fastMRI stores it as a dataset)")
            if data.ndim not in (3, 4):
                raise OperatorError(f"mri: 'kspace' in {path} must be (slices, [coils,] H, W), got {data.shape}")
            index = data.shape[0] // 2 if slice_index is None else slice_index
            if not -data.shape[0] <= index < data.shape[0]:
                raise OperatorError(f"mri: slice {index} out of range for {data.shape[0]} slices in {path}")
            array = np.asarray(data[index])
            mask = np.asarray(handle["mask"][()]) if "mask" in handle else None
    except OSError as err:
        raise OperatorError(f"mri: cannot read {path}: {err}") from None
    return array, mask
