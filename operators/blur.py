"""Deblurring: y = k * x, a 2-D convolution with one kernel applied to every channel.

Convention: a TRUE convolution (the kernel is flipped), with the kernel's centre at
index (kh // 2, kw // 2)::

    y[i, j] = Σ_{a, b} k[a, b] · x[i - a + kh // 2, j - b + kw // 2]

This is ``scipy.ndimage.convolve`` (also for even sizes) and
``kornia.filters.filter2d(x, k, behaviour="conv")``; PyTorch's ``conv2d`` and
kornia's default are correlations, which equal it for symmetric kernels only.

Spec grammar (registered name ``blur``; every kernel is normalised to sum 1 and
stored in float64, cast to the input's dtype on the fly)::

    blur:KERNEL[:boundary=circular|reflect|valid]

where KERNEL is one of

* ``gaussian:SIZE:STD`` — the sampled isotropic Gaussian on a SIZE × SIZE grid
  (SIZE odd), e.g. ``gaussian:61:3.0``, the Gaussian deblurring task of DPS
  (Chung et al., "Diffusion Posterior Sampling for General Noisy Inverse
  Problems", ICLR 2023) and DDRM (Kawar et al., NeurIPS 2022). Sampled on the
  whole grid, not truncated at 4σ as ``scipy.ndimage.gaussian_filter``.
* ``motion:SIZE:INTENSITY[:seed=S]`` — a random camera-shake kernel in the
  spirit of the ``motionblur`` package (L. Borodenko) that DPS uses, itself
  after the trajectories of Boracchi & Foi, "Modeling the performance of image
  restoration from motion blur", IEEE TIP 2012: a constant-speed random walk
  whose velocity is shaken and occasionally jerked with a strength set by
  INTENSITY in [0, 1] (0 is a straight line), centred, scaled to fill the
  kernel, rasterised with bilinear weights, smoothed by a σ = 0.5 px Gaussian
  and normalised. Written here from that description; seed 0 by default.
* ``levin:I`` (I = 1..8) — the eight real camera-shake kernels recorded by
  Levin, Weiss, Durand & Freeman, "Understanding and evaluating blind
  deconvolution algorithms", CVPR 2009 (13 to 27 px, stored in
  ``operators/data/levin09_motion_kernels.npz`` as k1..k8).
* ``file=PATH[:key=K]`` (or ``kernel:PATH[:key=K]``) — a kernel from a ``.npy``
  or ``.npz`` file (a single array, or the array named K) or an image (``.png``
  and other formats imageio reads; the grayscale intensity). Negative, empty or
  all-zero kernels are refused. Paths cannot contain ':'.

Boundaries (default ``circular``):

* ``circular`` — periodic convolution by FFT, :class:`CircularBlur`. It has an
  exact REAL SVD: the orthonormal real Fourier basis diagonalises a real
  circulant operator up to a rotation per frequency. With X = rfft2(x, "ortho"),
  ``Vt`` returns per channel Re X of the self-conjugate frequencies (rows and
  columns 0 and Nyquist, where X is real), then √2·Re X and √2·Im X of one of
  each pair of conjugate frequencies f, -f: exactly C·H·W orthonormal
  coefficients. The singular values are |K̂(f)| (K̂ the kernel's transfer
  function; twice for a pair), and ``U`` is ``V`` after multiplying each
  frequency by the phase K̂(f) / |K̂(f)| (a sign where K̂ is real).
* ``reflect`` — the image is padded by reflection WITHOUT repeating the edge
  pixel (PyTorch's and kornia's ``reflect``, scipy's ``mirror``; scipy's
  ``reflect`` repeats it), then convolved; the output has the image's size.
* ``valid`` — no padding: the output has size (H - kh + 1, W - kw + 1) and pixel
  (i, j) sees input pixels i..i + kh - 1, j..j + kw - 1. This is the physically
  right model of a real photograph, which has no pixels beyond its border.

The reflect and valid operators have no SVD: their adjoint comes from autograd
and ``A_pinv`` from conjugate gradients (see operators.base). Large kernels are
applied by FFT of the padded image, small ones by ``conv2d``.

Per-image kernels: the kernel buffer has shape (1 or B, 1, kh, kw), so
``LinearOperator.stack`` (or a spec with ``;``) gives one kernel per image;
kernels stacked together must have the same size.

:func:`wiener_deconvolve` is the classical baseline, :func:`make_kernel` builds
a kernel from the KERNEL part of a spec, and :func:`load_kernel` reads a file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from operators.base import LinearOperator, SVDOperator
from operators.color import LUMA_WEIGHTS
from operators.errors import OperatorError
from operators.registry import parse_args, read_integer, read_number, read_seed, register

#: the boundary conditions a blur spec accepts, the first being the default
BOUNDARIES = ("circular", "reflect", "valid")
#: Levin et al. (CVPR 2009) kernels, keys k1..k8
LEVIN_KERNELS = Path(__file__).with_name("data") / "levin09_motion_kernels.npz"
#: kernels with more taps than this are applied by FFT rather than conv2d (reflect / valid)
FFT_MIN_TAPS = 15 * 15
#: standard deviation (px) of the Gaussian that smooths rasterised motion trajectories
MOTION_SMOOTHING = 0.5
#: file suffixes read as arrays; anything else is read as an image
ARRAY_SUFFIXES = (".npy", ".npz")
#: the KERNEL part of the spec of a blur built from a tensor, which no text rebuilds
ARRAY_KERNEL = "array"


# ---------------------------------------------------------------------------------------------
# Kernels: float64 (kh, kw) tensors, non-negative, summing to 1.


def gaussian_kernel(size: int, std: float) -> Tensor:
    """The isotropic Gaussian of standard deviation ``std`` sampled on an odd ``size`` × ``size`` grid, sum 1."""
    if size < 1 or size % 2 == 0:
        raise OperatorError(f"gaussian kernel size must be a positive odd integer, got {size}")
    if not (std > 0 and math.isfinite(std)):
        raise OperatorError(f"gaussian kernel std must be positive, got {std}")
    t = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-0.5 * (t / std) ** 2)
    kernel = g[:, None] * g[None, :]
    return kernel / kernel.sum()


def motion_kernel(size: int, intensity: float, seed: int = 0) -> Tensor:
    """A random camera-shake kernel (odd ``size``, ``intensity`` in [0, 1]) drawn from ``seed``, sum 1.

    The trajectory is a walk of 4·size unit steps: at every step the velocity
    gets a Gaussian kick of size 0.4·intensity and, with probability
    0.05·intensity, an abrupt turn; it is renormalised so that the camera moves
    at constant speed (equal exposure per unit length). The path is centred on
    its centroid (so the blur barely shifts the image) and scaled so that it
    spans (0.6 + 0.4·intensity) of the usable half-width.
    """
    if size < 3 or size % 2 == 0:
        raise OperatorError(f"motion kernel size must be an odd integer >= 3, got {size}")
    if not 0.0 <= intensity <= 1.0:
        raise OperatorError(f"motion kernel intensity must be in [0, 1], got {intensity}")
    gen = torch.Generator().manual_seed(seed)
    steps = 4 * size
    heading = 2 * math.pi * torch.rand((), generator=gen, dtype=torch.float64).item()
    kicks = (0.4 * intensity * torch.randn((steps, 2), generator=gen, dtype=torch.float64)).tolist()
    jerks = (torch.rand(steps, generator=gen, dtype=torch.float64) < 0.05 * intensity).tolist()
    turns = (0.5 * math.pi * torch.randn(steps, generator=gen, dtype=torch.float64)).tolist()

    # A scalar recurrence: plain floats are far faster than tensor ops here.
    vx, vy = math.cos(heading), math.sin(heading)
    px, py = 0.0, 0.0
    points = [(px, py)]
    for (kx, ky), jerk, turn in zip(kicks, jerks, turns):
        vx, vy = vx + kx, vy + ky
        if jerk:
            c, s = math.cos(turn), math.sin(turn)
            vx, vy = c * vx - s * vy, s * vx + c * vy
        speed = math.hypot(vx, vy) or 1.0
        vx, vy = vx / speed, vy / speed
        px, py = px + vx, py + vy
        points.append((px, py))
    path = torch.tensor(points, dtype=torch.float64)
    path = path - path.mean(dim=0)

    # Leave 1.5 px for the bilinear splat and the smoothing so that no mass falls off the grid.
    half_width = (size - 1) / 2 - 1.5
    extent = path.abs().max().clamp_min(1e-12)
    path = path * (half_width * (0.6 + 0.4 * intensity) / extent) + (size // 2)

    # Sample every segment densely (<= 0.25 px apart): equal time, hence equal weight per sample.
    seg_len = (path[1:] - path[:-1]).norm(dim=1).max().item()
    per_segment = max(1, math.ceil(seg_len / 0.25))
    t = torch.arange(per_segment, dtype=torch.float64) / per_segment
    samples = path[:-1, None, :] + t[None, :, None] * (path[1:] - path[:-1])[:, None, :]
    samples = torch.cat([samples.reshape(-1, 2), path[-1:]], dim=0)

    kernel = _splat_bilinear(samples, size)
    kernel = _smooth(kernel, MOTION_SMOOTHING)
    return kernel / kernel.sum()


def _splat_bilinear(points: Tensor, size: int) -> Tensor:
    """Histogram of (x, y) points on a size × size grid, each spread over its four neighbours."""
    base = points.floor()
    frac = points - base
    base = base.long()
    grid = torch.zeros(size * size, dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            wx = frac[:, 0] if dx else 1 - frac[:, 0]
            wy = frac[:, 1] if dy else 1 - frac[:, 1]
            col, row = base[:, 0] + dx, base[:, 1] + dy
            inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
            grid.index_add_(0, (row * size + col)[inside], (wx * wy)[inside])
    return grid.reshape(size, size)


def _smooth(kernel: Tensor, std: float) -> Tensor:
    """Separable Gaussian smoothing of a 2-D array, zero outside, same size."""
    radius = max(1, math.ceil(3 * std))
    taps = gaussian_kernel(2 * radius + 1, std)[radius]
    taps = taps / taps.sum()
    out = F.conv2d(kernel[None, None], taps.view(1, 1, -1, 1), padding=(radius, 0))
    out = F.conv2d(out, taps.view(1, 1, 1, -1), padding=(0, radius))
    return out[0, 0]


def levin_kernel(index: int) -> Tensor:
    """Kernel ``index`` (1..8) of Levin et al., CVPR 2009, renormalised in float64."""
    if not 1 <= index <= 8:
        raise OperatorError(f"levin kernel index must be in 1..8, got {index}")
    with np.load(LEVIN_KERNELS) as data:
        return normalise_kernel(data[f"k{index}"], f"levin:{index}")


def normalise_kernel(array, source: str) -> Tensor:
    """A float64 (kh, kw) tensor summing to 1 from a 2-D array; OperatorError if it is not a valid kernel."""
    kernel = torch.as_tensor(np.asarray(array, dtype=np.float64))
    while kernel.dim() > 2 and kernel.shape[0] == 1:
        kernel = kernel[0]
    if kernel.dim() != 2 or kernel.numel() == 0:
        raise OperatorError(f"kernel {source} must be a non-empty 2-D array, got shape {tuple(kernel.shape)}")
    if not torch.isfinite(kernel).all():
        raise OperatorError(f"kernel {source} has NaN or infinite values")
    if (kernel < 0).any():
        raise OperatorError(f"kernel {source} has negative values (min {kernel.min().item():.3g})")
    total = kernel.sum()
    if total <= 0:
        raise OperatorError(f"kernel {source} is all zero")
    return kernel / total


def kernel_kind(kernel: Tensor) -> str:
    """``"gaussian"`` for a smooth, round blur (out of focus, atmospheric), ``"motion"`` for the rest (camera shake,
    linear motion, a defocus disk): a kernel is Gaussian-like when the Gaussian with its own mean and covariance
    matches it (normalised cross-correlation ≥ 0.9) and that Gaussian is round (axes within a factor 2).

    Measured: sampled Gaussians 0.997–1.0; the 8 Levin et al. kernels 0.27–0.73; random shake 0.34–0.65; a
    straight line 0.94 but axes 10× apart.
    """
    k = kernel.double() / kernel.double().sum()
    h, w = k.shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    dr, dc = rows - (k * rows).sum(), cols - (k * cols).sum()
    cov = torch.stack([torch.stack([(k * dr * dr).sum(), (k * dr * dc).sum()]),
                       torch.stack([(k * dr * dc).sum(), (k * dc * dc).sum()])]) + 1e-6 * torch.eye(2, dtype=torch.float64)
    inverse = torch.linalg.inv(cov)
    fitted = torch.exp(-0.5 * (inverse[0, 0] * dr * dr + 2 * inverse[0, 1] * dr * dc + inverse[1, 1] * dc * dc))
    a, b = k - k.mean(), fitted / fitted.sum() - (fitted / fitted.sum()).mean()
    ncc = float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30))
    axes = torch.linalg.eigvalsh(cov)
    return "gaussian" if ncc >= 0.9 and float(axes[1] / axes[0]) <= 4.0 else "motion"


def load_kernel(path: str | Path, key: str | None = None) -> Tensor:
    """Read a blur kernel from .npy, .npz (the single array or ``key``) or an image (grayscale), normalised to sum 1."""
    path = Path(path)
    if not path.is_file():
        raise OperatorError(f"kernel file not found: {path}")
    suffix = path.suffix.lower()
    if key is not None and suffix != ".npz":
        raise OperatorError(f"key={key} only applies to .npz kernel files, not {path.name}")
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if key is None and len(data.files) != 1:
                    raise OperatorError(f"{path.name} holds {len(data.files)} arrays ({', '.join(data.files)}); pick one with key=NAME")
                name = key if key is not None else data.files[0]
                if name not in data.files:
                    raise OperatorError(f"{path.name} has no array '{name}'; it has {', '.join(data.files)}")
                array = data[name]
        else:
            array = _image_intensity(path)
    except OperatorError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad kernel file for the user
        raise OperatorError(f"cannot read kernel file {path}: {err}") from None
    return normalise_kernel(array, str(path))


def _image_intensity(path: Path) -> np.ndarray:
    """An image file as a float 2-D array: gray as is, RGB(A) by BT.601 luminance (alpha ignored)."""
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path), dtype=np.float64)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = image[..., :3] @ np.asarray(LUMA_WEIGHTS)
    elif image.ndim == 3 and image.shape[-1] in (1, 2):
        image = image[..., 0]
    return image


def make_kernel(spec: str) -> Tensor:
    """The float64 (kh, kw) kernel of the KERNEL part of a blur spec, e.g. ``"gaussian:61:3.0"``."""
    return parse_kernel(spec)[0]


def parse_kernel(spec: str) -> tuple[Tensor, str]:
    """(kernel, canonical KERNEL spec) of the KERNEL part of a blur spec, e.g. ``"gaussian:61:3.0"``."""
    positional, keywords = parse_args(spec)
    kernel, canonical = _kernel_from_args(positional, keywords)
    if keywords:
        raise OperatorError(f"unknown kernel option(s) {', '.join(sorted(keywords))} in '{spec}'")
    return kernel, canonical


def _kernel_from_args(positional: list[str], keywords: dict[str, str]) -> tuple[Tensor, str]:
    """(kernel, canonical KERNEL spec) from parsed fields; consumes the keywords it uses from ``keywords``."""
    if "file" in keywords:
        if positional:
            raise OperatorError(f"file= kernels take no positional arguments, got {':'.join(positional)}")
        path, key = keywords.pop("file"), keywords.pop("key", None)
        return load_kernel(path, key), f"file={path}" + (f":key={key}" if key is not None else "")
    if not positional:
        raise OperatorError("blur needs a kernel: gaussian:SIZE:STD, motion:SIZE:INTENSITY, levin:1..8 or file=PATH")
    family, values = positional[0], positional[1:]
    if family == "kernel":
        if len(values) != 1:
            raise OperatorError(f"kernel:PATH takes one path, got '{':'.join(values)}'")
        return _kernel_from_args([], {**_take(keywords, "key"), "file": values[0]})
    if family == "gaussian":
        if len(values) != 2:
            raise OperatorError(f"gaussian takes SIZE:STD (e.g. gaussian:61:3.0), got '{':'.join(values)}'")
        size, std = read_integer(values[0], "gaussian size"), read_number(values[1], "gaussian std")
        return gaussian_kernel(size, std), f"gaussian:{size}:{std!r}"
    if family == "motion":
        if len(values) != 2:
            raise OperatorError(f"motion takes SIZE:INTENSITY[:seed=S] (e.g. motion:61:0.5), got '{':'.join(values)}'")
        size, intensity = read_integer(values[0], "motion size"), read_number(values[1], "motion intensity")
        seed = read_seed(keywords)
        keywords.pop("seed", None)
        return motion_kernel(size, intensity, seed), f"motion:{size}:{intensity!r}:seed={seed}"
    if family == "levin":
        if len(values) != 1:
            raise OperatorError(f"levin takes one index 1..8 (e.g. levin:3), got '{':'.join(values)}'")
        index = read_integer(values[0], "levin index")
        return levin_kernel(index), f"levin:{index}"
    raise OperatorError(f"unknown blur kernel '{family}'; known: gaussian, motion, levin, file=PATH")


def _take(keywords: dict[str, str], name: str) -> dict[str, str]:
    """{name: value} popped from ``keywords`` if present, else {}."""
    return {name: keywords.pop(name)} if name in keywords else {}


# ---------------------------------------------------------------------------------------------
# Operators.


@register
class Blur(LinearOperator):
    """Convolution with a fixed kernel; ``from_spec`` picks the subclass of the spec's boundary."""

    name = "blur"
    #: the boundary condition this class implements (set by subclasses)
    boundary: ClassVar[str] = ""

    def __init__(self, kernel: Tensor, in_shape: tuple[int, int, int], *, kernel_spec: str = ARRAY_KERNEL) -> None:
        """Convolution by ``kernel`` (a non-negative 2-D array, normalised to sum 1 here) for images of ``in_shape``.

        ``kernel_spec`` is the KERNEL part of the spec that rebuilds it (``from_spec`` gives it); a kernel
        given as a tensor has the spec ``blur:array``, which no text rebuilds.
        """
        if not self.boundary:
            raise OperatorError("build a blur with operators.build('blur:...'), make_blur or a subclass such as CircularBlur")
        kernel = normalise_kernel(kernel.detach().cpu() if isinstance(kernel, Tensor) else kernel, kernel_spec)
        super().__init__(f"{self.name}:{kernel_spec}:boundary={self.boundary}", in_shape)
        _, h, w = self.in_shape
        kh, kw = kernel.shape
        if kh > h or kw > w:
            raise OperatorError(f"kernel {kh}x{kw} is larger than the image {h}x{w}")
        self.kernel_size = (kh, kw)
        self.register_buffer("kernel", kernel[None, None])

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> Blur:
        positional, keywords = parse_args(args)
        boundary = keywords.pop("boundary", BOUNDARIES[0])
        kernel, canonical = _kernel_from_args(positional, keywords)
        if keywords:
            raise OperatorError(f"unknown blur option(s) {', '.join(sorted(keywords))} in '{args}'")
        return make_blur(kernel, in_shape, boundary, kernel_spec=canonical)

    @property
    def kind(self) -> str:
        """``"gaussian"`` or ``"motion"``: what kind of blur this is (:func:`kernel_kind`), for the defaults."""
        return kernel_kind(self.kernel[0, 0])

    def _kernel_for(self, x: Tensor) -> Tensor:
        """The (1 or B, 1, kh, kw) kernel cast to x's dtype and device, checked against x's batch size."""
        if self.kernel.shape[0] not in (1, x.shape[0]):
            raise OperatorError(f"this blur holds {self.kernel.shape[0]} kernels but got a batch of {x.shape[0]} images")
        return self.kernel.to(dtype=x.dtype, device=x.device)

    def _convolve_valid(self, padded: Tensor) -> Tensor:
        """Valid part of the true convolution of (B, C, H', W') images with the kernel: (H' - kh + 1, W' - kw + 1)."""
        kernel = self._kernel_for(padded)
        kh, kw = self.kernel_size
        if kh * kw > FFT_MIN_TAPS:
            # Linear convolution as a circular one of the padded size: the valid outputs never wrap around.
            size = padded.shape[-2:]
            spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(kernel, s=size)
            return torch.fft.irfft2(spectrum, s=size)[..., kh - 1 :, kw - 1 :]
        # conv2d correlates, hence the flip; one group per (image, channel) lets every image have its kernel.
        batch, channels = padded.shape[:2]
        out = F.conv2d(padded.reshape(1, batch * channels, *padded.shape[-2:]), self._grouped(kernel, padded), groups=batch * channels)
        return out.reshape(batch, channels, *out.shape[-2:])

    def _convolve_valid_adjoint(self, y: Tensor, size: tuple[int, int]) -> Tensor:
        """Adjoint of :meth:`_convolve_valid` for inputs of spatial ``size``: a full correlation with the kernel."""
        kernel = self._kernel_for(y)
        kh, kw = self.kernel_size
        if kh * kw > FFT_MIN_TAPS:
            embedded = F.pad(y, (kw - 1, 0, kh - 1, 0))
            spectrum = torch.fft.rfft2(embedded) * torch.fft.rfft2(kernel, s=size).conj()
            return torch.fft.irfft2(spectrum, s=size)
        batch, channels = y.shape[:2]
        out = F.conv_transpose2d(y.reshape(1, batch * channels, *y.shape[-2:]), self._grouped(kernel, y), groups=batch * channels)
        return out.reshape(batch, channels, *size)

    def _grouped(self, kernel: Tensor, x: Tensor) -> Tensor:
        """conv2d weights (B·C, 1, kh, kw), one group per (image, channel); flipped because conv2d correlates."""
        batch, channels = x.shape[:2]
        kh, kw = self.kernel_size
        return kernel.flip(-2, -1).expand(batch, channels, kh, kw).reshape(batch * channels, 1, kh, kw)


class CircularBlur(Blur, SVDOperator):
    """Periodic convolution by FFT, with the exact real SVD of a circulant operator."""

    boundary = "circular"

    def _transfer(self, x: Tensor) -> Tensor:
        """K̂ = rfft2 of the kernel centred at pixel (0, 0), (1 or B, 1, H, W//2 + 1), in x's precision."""
        _, h, w = self.in_shape
        kh, kw = self.kernel_size
        kernel = self._kernel_for(x)
        psf = kernel.new_zeros(*kernel.shape[:2], h, w)
        psf[..., :kh, :kw] = kernel
        return torch.fft.rfft2(torch.roll(psf, (-(kh // 2), -(kw // 2)), dims=(-2, -1)))

    def A(self, x: Tensor) -> Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x) * self._transfer(x), s=x.shape[-2:])

    def A_adjoint(self, y: Tensor) -> Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(y) * self._transfer(y).conj(), s=y.shape[-2:])

    def singular_values(self) -> Tensor:
        transfer = self._transfer(self.kernel)[:, 0]
        layout = _RealFourierLayout(*self.in_shape[1:], device=self.kernel.device)
        # |Re K̂| where K̂ is real in exact arithmetic, so that s · phase reproduces K̂ there exactly.
        magnitude = torch.where(layout.self_conjugate, transfer.real.abs(), transfer.abs())
        return layout.magnitudes_of(magnitude).repeat(1, self.in_shape[0])

    def _phase(self, x: Tensor, layout: _RealFourierLayout) -> Tensor:
        """K̂ / |K̂| per frequency, exactly ±1 where K̂ is real (self-conjugate frequencies), 1 where K̂ = 0."""
        transfer = self._transfer(x)
        magnitude = transfer.abs()
        phase = torch.where(magnitude > 0, transfer / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny), 1)
        sign = torch.where(transfer.real < 0, -1.0, 1.0).to(phase.dtype)  # K̂ is real there up to rounding
        return torch.where(layout.self_conjugate, sign, phase)

    def Vt(self, x: Tensor) -> Tensor:
        layout = _RealFourierLayout(*x.shape[-2:], device=x.device)
        return layout.coefficients_of(torch.fft.rfft2(x, norm="ortho")).flatten(1)

    def V(self, z: Tensor) -> Tensor:
        c, h, w = self.in_shape
        layout = _RealFourierLayout(h, w, device=z.device)
        spectrum = layout.spectrum_of(z.reshape(z.shape[0], c, -1))
        return torch.fft.irfft2(spectrum, s=(h, w), norm="ortho")

    def Ut(self, y: Tensor) -> Tensor:
        layout = _RealFourierLayout(*y.shape[-2:], device=y.device)
        spectrum = torch.fft.rfft2(y, norm="ortho") * self._phase(y, layout).conj()
        return layout.coefficients_of(spectrum).flatten(1)

    def U(self, z: Tensor) -> Tensor:
        c, h, w = self.in_shape
        layout = _RealFourierLayout(h, w, device=z.device)
        spectrum = layout.spectrum_of(z.reshape(z.shape[0], c, -1)) * self._phase(z, layout)
        return torch.fft.irfft2(spectrum, s=(h, w), norm="ortho")


class ReflectBlur(Blur):
    """Convolution of the image padded by reflection (edge not repeated); output of the image's size."""

    boundary = "reflect"
    #: what to use where an SVD is needed (said by samplers that need one)
    svd_hint: ClassVar[str] = "the circular boundary has one: --boundary circular"

    def _padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom): output pixel i sees input pixels i - (kh - 1 - kh//2) .. i + kh//2."""
        kh, kw = self.kernel_size
        return (kw - 1 - kw // 2, kw // 2, kh - 1 - kh // 2, kh // 2)

    def A(self, x: Tensor) -> Tensor:
        return self._convolve_valid(F.pad(x, self._padding(), mode="reflect"))

    def A_adjoint(self, y: Tensor) -> Tensor:
        left, right, top, bottom = self._padding()
        _, h, w = self.in_shape
        grad = self._convolve_valid_adjoint(y, (h + top + bottom, w + left + right))
        return _fold_reflection(_fold_reflection(grad, top, bottom, dim=-2), left, right, dim=-1)


class ValidBlur(Blur):
    """Convolution without padding: only the outputs whose kernel support lies inside the image."""

    boundary = "valid"
    svd_hint: ClassVar[str] = "the circular boundary has one: --boundary circular"

    def __init__(self, kernel: Tensor, in_shape: tuple[int, int, int], *, kernel_spec: str = ARRAY_KERNEL) -> None:
        super().__init__(kernel, in_shape, kernel_spec=kernel_spec)
        c, h, w = self.in_shape
        kh, kw = self.kernel_size
        #: (C, H - kh + 1, W - kw + 1), the shape of a measurement
        self.out_shape = (c, h - kh + 1, w - kw + 1)

    def A(self, x: Tensor) -> Tensor:
        return self._convolve_valid(x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self._convolve_valid_adjoint(y, self.in_shape[1:])


def make_blur(kernel: Tensor, in_shape: tuple[int, int, int], boundary: str = BOUNDARIES[0], *,
              kernel_spec: str = ARRAY_KERNEL) -> Blur:
    """The blur by a kernel tensor with the named boundary (circular, reflect or valid)."""
    subclasses = {sub.boundary: sub for sub in (CircularBlur, ReflectBlur, ValidBlur)}
    if boundary not in subclasses:
        raise OperatorError(f"unknown blur boundary '{boundary}'; known: {', '.join(BOUNDARIES)}")
    return subclasses[boundary](kernel, in_shape, kernel_spec=kernel_spec)


def _fold_reflection(padded: Tensor, before: int, after: int, dim: int) -> Tensor:
    """Adjoint of reflect padding along ``dim``: add each padded entry back onto the pixel it mirrors."""
    length = padded.shape[dim] - before - after
    out = padded.narrow(dim, before, length).clone()
    # Padded entry i < before copies pixel before - i; entry before + length + j copies pixel length - 2 - j.
    if before:
        out.narrow(dim, 1, before).add_(padded.narrow(dim, 0, before).flip(dim))
    if after:
        out.narrow(dim, length - 1 - after, after).add_(padded.narrow(dim, before + length, after).flip(dim))
    return out


class _RealFourierLayout:
    """Where the n real orthonormal Fourier coefficients of an H × W image sit in its rfft2 half-plane.

    Columns 0 and W/2 (W even) of the rfft2 layout hold conjugate pairs (u, -u)
    within the column: only rows 0..H//2 are kept there, rows 0 and H/2 (H even)
    being self-conjugate (real). Every other column holds one member of a pair.
    Coefficients per channel: Re at the self-conjugate frequencies, then √2·Re
    and √2·Im at the pair representatives, in row-major order.
    """

    def __init__(self, h: int, w: int, device: torch.device | str) -> None:
        wr = w // 2 + 1
        u = torch.arange(h, device=device)[:, None]
        v = torch.arange(wr, device=device)[None, :]
        special = (v == 0) | ((w % 2 == 0) & (v == w // 2))
        self.self_conjugate = special & ((u == 0) | ((h % 2 == 0) & (u == h // 2)))
        pair = ~special | ((u >= 1) & (u <= (h - 1) // 2))
        mirrored = special & (u > h // 2)
        flat = torch.arange(h * wr, device=device).reshape(h, wr)
        self.self_index = flat[self.self_conjugate]
        self.pair_index = flat[pair.expand(h, wr)]
        self.mirror_index = flat[mirrored.expand(h, wr)]
        # The partner (-u mod H, v) of each mirrored entry is a pair representative.
        self.mirror_source = ((h - u) % h * wr + v).expand(h, wr)[mirrored.expand(h, wr)]
        self.shape = (h, wr)

    def coefficients_of(self, spectrum: Tensor) -> Tensor:
        """(B, C, n_c) real coefficients of a Hermitian half-spectrum (B, C, H, W//2 + 1)."""
        flat = spectrum.flatten(-2)
        pairs = math.sqrt(2.0) * flat[..., self.pair_index]
        return torch.cat([flat[..., self.self_index].real, pairs.real, pairs.imag], dim=-1)

    def magnitudes_of(self, values: Tensor) -> Tensor:
        """A real per-frequency quantity (B, H, W//2 + 1) in coefficient order (B, n_c), repeated for Re and Im of pairs."""
        flat = values.flatten(-2)
        pairs = flat[..., self.pair_index]
        return torch.cat([flat[..., self.self_index], pairs, pairs], dim=-1)

    def spectrum_of(self, coeffs: Tensor) -> Tensor:
        """The Hermitian half-spectrum (B, C, H, W//2 + 1) whose coefficients are ``coeffs`` (B, C, n_c)."""
        n_self, n_pair = self.self_index.numel(), self.pair_index.numel()
        real, re, im = torch.split(coeffs, [n_self, n_pair, n_pair], dim=-1)
        flat = coeffs.new_zeros(*coeffs.shape[:-1], self.shape[0] * self.shape[1], dtype=coeffs.dtype.to_complex())
        flat[..., self.self_index] = real.to(flat.dtype)
        flat[..., self.pair_index] = torch.complex(re, im) / math.sqrt(2.0)
        flat[..., self.mirror_index] = flat[..., self.mirror_source].conj()
        return flat.reshape(*coeffs.shape[:-1], *self.shape)


def wiener_deconvolve(y: Tensor, op: Blur, balance: float) -> Tensor:
    """Wiener deconvolution x = argmin ‖k * x - y‖² + balance·‖x‖² (balance > 0: noise-to-signal power ratio).

    For a circular blur this is the classical FFT filter
    X = conj(K̂) Y / (|K̂|² + balance); for reflect and valid boundaries the same
    regularised least squares is solved by conjugate gradients.
    """
    if not isinstance(op, Blur):
        raise OperatorError(f"Wiener deconvolution needs a blur operator, got {type(op).__name__}")
    if not (balance > 0 and math.isfinite(balance)):
        raise OperatorError(f"Wiener balance must be positive, got {balance}")
    if isinstance(op, CircularBlur):
        transfer = op._transfer(y)
        spectrum = torch.fft.rfft2(y) * transfer.conj() / (transfer.abs() ** 2 + balance)
        return torch.fft.irfft2(spectrum, s=y.shape[-2:])
    return op.solve_normal(op.A_adjoint(y), balance)
