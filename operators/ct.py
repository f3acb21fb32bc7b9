"""Computed tomography: the parallel-beam Radon transform and filtered back-projection.

Spec: ``ct:ANGLES[:arc=DEG][:detectors=N][:start=DEG]``

* ANGLES projection angles θ_k = start + k·arc/ANGLES (degrees, k = 0 .. ANGLES-1,
  the end of the arc excluded). The default arc of 180° is sparse-view CT; an arc
  below 180° is limited-angle CT (a missing wedge of directions); up to 360°.
* N detector bins of width 1 pixel. Default ceil(√2·max(H, W)), the diagonal of
  the image, so that every projection sees the whole image: 363 bins for the
  256 × 256 images of our ``ct60`` protocol. N must be at least min(H, W), so that
  the detector covers the disc inscribed in the image from every direction.

The measurement of an image x (B, C, H, W), each channel separately, is the
sinogram y of shape (B, C, ANGLES, N): ``y[b, c, k]`` is the projection at angle
θ_k. (scikit-image's ``radon`` returns the transpose, (N, ANGLES), for one image.)

Geometry, chosen to be exactly that of ``skimage.transform.radon(x, θ, circle=False)``
(which zero-pads x to a square of side ceil(√2·max(H, W)) and rotates it): with
pixel (i, j) = (row, column) and the rotation centre at pixel (H//2, W//2), detector
bin d sits at offset t = d - N//2 and ray sample k at s = k - S//2, k = 0 .. S-1 with
S = ceil(√2·max(H, W)) unit steps, and the sample lies at

    j = W//2 + t·cos θ + s·sin θ,        i = H//2 - t·sin θ + s·cos θ,

so θ = 0 integrates along columns (y[..., d] is the sum of column W//2 + t) and θ
turns the rays anticlockwise as displayed (rows pointing down). The image is read
at each sample by bilinear interpolation with zeros outside (``F.grid_sample`` with
``align_corners=False``, which puts pixel j at the normalised coordinate
(2j + 1)/W - 1) and the samples of a ray are summed: a ray-driven discretisation
(Joseph-like, P. M. Joseph, IEEE TMI 1982) in which the line integral is the sum of
unit-step samples. With the default N this equals scikit-image's sinogram up to
rounding, because its ``warp`` uses the same bilinear interpolation.

The sampling grid (ANGLES, N, S, 2) is precomputed as a float32 buffer (60 angles
on 256 × 256: 60·363·363·2 floats ≈ 63 MB) with a leading batch dimension of 1;
stacking per-image operators (:meth:`LinearOperator.stack`) concatenates it, so a
stacked operator holds one grid per image. The forward pass runs over chunks of
angles so that the intermediate samples stay below :data:`CHUNK_ELEMENTS` values.
The adjoint, a bilinear back-projection, is the exact transpose of this map: the
input gradient of ``grid_sample`` (what autograd computes, called directly to skip
the forward pass). ``A_pinv`` is the base class's conjugate gradients on the normal
equations with a tighter tolerance and more iterations by default (:data:`PINV_TOL`,
:data:`PINV_MAX_ITER`), since sparse-view and limited-angle CT are ill-conditioned.

:func:`fbp` is the classical baseline, filtered back-projection (A. C. Kak and
M. Slaney, "Principles of Computerized Tomographic Imaging", IEEE Press 1988,
chapter 3): each projection is filtered by the ramp |ω| built from its band-limited
spatial kernel (their eq. 61), optionally apodised, after zero-padding to a power
of two, then back-projected with linear interpolation and weighted by the angular
step; for ``filter="ramp"`` it reproduces ``skimage.transform.iradon(..., circle=False)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from operators.base import LinearOperator
from operators.errors import OperatorError
from operators.registry import check_keywords, format_number, parse_args, read_integer, read_number, register

#: angles keyword defaults: a half turn from 0°
DEFAULT_ARC, DEFAULT_START = 180.0, 0.0
#: the largest sampling grid an operator may hold, in bytes (float32)
MAX_GRID_BYTES = 4 * 1024**3
#: the forward pass samples at most this many values at once (per chunk of angles)
CHUNK_ELEMENTS = 1 << 24
#: defaults of A_pinv's conjugate gradients (the base class uses 1e-6 and 200; see A_pinv)
PINV_TOL, PINV_MAX_ITER = 1e-8, 500
#: apodisation windows of fbp, as functions of the frequency f in cycles per bin (|f| <= 1/2)
FILTERS = {
    "ramp": lambda f: torch.ones_like(f),
    "shepp-logan": lambda f: torch.sinc(f),
    "cosine": lambda f: torch.cos(math.pi * f),
    "hann": lambda f: 0.5 + 0.5 * torch.cos(2 * math.pi * f),
    "hamming": lambda f: 0.54 + 0.46 * torch.cos(2 * math.pi * f),
}


def diagonal_length(height: int, width: int) -> int:
    """ceil(√2·max(H, W)): the default number of detector bins and of samples along each ray."""
    return math.ceil(math.sqrt(2) * max(height, width))


def sampling_grid(angles: Tensor, height: int, width: int, detectors: int, samples: int) -> Tensor:
    """The (ANGLES, N, S, 2) grid_sample coordinates (x, y) of every ray sample, from angles in radians."""
    t = torch.arange(detectors, dtype=torch.float64) - detectors // 2
    s = torch.arange(samples, dtype=torch.float64) - samples // 2
    cos, sin = torch.cos(angles).view(-1, 1, 1), torch.sin(angles).view(-1, 1, 1)
    col = width // 2 + cos * t[:, None] + sin * s[None, :]
    row = height // 2 - sin * t[:, None] + cos * s[None, :]
    # align_corners=False: pixel j of W sits at (2j + 1)/W - 1.
    return torch.stack([(2 * col + 1) / width - 1, (2 * row + 1) / height - 1], dim=-1)


@register
class ParallelBeamCT(LinearOperator):
    """Parallel-beam Radon transform: (B, C, H, W) images to (B, C, ANGLES, N) sinograms."""

    name = "ct"

    def __init__(
        self,
        angles: int,
        in_shape: tuple[int, int, int],
        *,
        arc: float = DEFAULT_ARC,
        detectors: int | None = None,
        start: float = DEFAULT_START,
    ) -> None:
        c, h, w = (int(v) for v in in_shape)
        angles = read_integer(angles, "ct: the number of angles")
        if angles < 1:
            raise OperatorError(f"ct: the number of angles must be at least 1, got {angles}")
        arc, start = float(arc), float(start)
        if not (math.isfinite(arc) and 0 < arc <= 360):
            raise OperatorError(f"ct: arc must be in (0, 360] degrees, got {arc:g}")
        if not math.isfinite(start):
            raise OperatorError(f"ct: start must be finite, got {start}")
        default_detectors = diagonal_length(h, w)
        detectors = default_detectors if detectors is None else read_integer(detectors, "ct: detectors")
        if detectors < min(h, w):
            raise OperatorError(
                f"ct: {detectors} detectors are too few for a {h}x{w} image; "
                f"at least min(H, W) = {min(h, w)} are needed to cover it from every angle"
            )
        samples = diagonal_length(h, w)
        grid_bytes = angles * detectors * samples * 2 * 4
        if grid_bytes > MAX_GRID_BYTES:
            raise OperatorError(
                f"ct: {angles} angles x {detectors} detectors x {samples} samples need a "
                f"{grid_bytes / 1024**3:.1f} GiB sampling grid, more than {MAX_GRID_BYTES / 1024**3:.0f} GiB"
            )

        spec = f"{self.name}:{angles}"
        if arc != DEFAULT_ARC:
            spec += f":arc={format_number(arc)}"
        if detectors != default_detectors:
            spec += f":detectors={detectors}"
        if start != DEFAULT_START:
            spec += f":start={format_number(start)}"
        super().__init__(spec, in_shape)

        self.num_angles, self.arc, self.start = angles, arc, start
        self.detectors, self.samples = detectors, samples
        self.out_shape = (c, angles, detectors)

        radians = torch.deg2rad(start + arc * torch.arange(angles, dtype=torch.float64) / angles)
        # Leading batch dim 1 on every buffer: a stacked operator holds one geometry per image.
        self.register_buffer("angles", radians.unsqueeze(0))
        self.register_buffer("arc_radians", torch.tensor([math.radians(arc)], dtype=torch.float64))
        grid = sampling_grid(radians, h, w, detectors, samples)
        self.register_buffer("grid", grid.to(torch.float32).unsqueeze(0))

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> ParallelBeamCT:
        positional, keywords = parse_args(args)
        if len(positional) != 1:
            raise OperatorError(f"ct takes one positional argument, the number of angles (e.g. 'ct:60'), got '{args}'")
        check_keywords("ct", keywords, ("arc", "detectors", "start"))
        return cls(
            positional[0],
            in_shape,
            arc=read_number(keywords.get("arc", str(DEFAULT_ARC)), "ct: arc"),
            detectors=keywords.get("detectors"),
            start=read_number(keywords.get("start", str(DEFAULT_START)), "ct: start"),
        )

    def _check_batch(self, t: Tensor, shape: tuple[int, ...], what: str) -> None:
        """OperatorError unless t is (B, *shape), with B compatible with the geometries held (1 or B)."""
        if t.dim() != 4 or tuple(t.shape[1:]) != tuple(shape):
            raise OperatorError(f"ct: expected {what} (B, {', '.join(map(str, shape))}), got {tuple(t.shape)}")
        if self.grid.shape[0] not in (1, t.shape[0]):
            stacked = self.grid.shape[0]
            raise OperatorError(f"ct: operator stacked for {stacked} images applied to a batch of {t.shape[0]}")

    def _chunks(self, images: int) -> list[tuple[int, int]]:
        """(first angle, count) of chunks that keep each grid_sample call below CHUNK_ELEMENTS samples."""
        step = max(1, CHUNK_ELEMENTS // (images * self.detectors * self.samples))
        return [(first, min(step, self.num_angles - first)) for first in range(0, self.num_angles, step)]

    def _points(self, first: int, count: int, like: Tensor) -> Tensor:
        """The grid of angles first .. first + count - 1 as (1 or B, count·N, S, 2), in like's dtype and device."""
        piece = self.grid[:, first : first + count].to(dtype=like.dtype, device=like.device)
        return piece.reshape(piece.shape[0], count * self.detectors, self.samples, 2)

    def A(self, x: Tensor) -> Tensor:
        self._check_batch(x, self.in_shape, "images")
        batch, channels, height, width = x.shape
        # A shared grid samples all images at once, with the batch folded into the channels.
        images = x.reshape(1, batch * channels, height, width) if self.grid.shape[0] == 1 else x
        parts = []
        for first, count in self._chunks(batch * channels):
            points = self._points(first, count, x)
            sampled = F.grid_sample(images, points, mode="bilinear", padding_mode="zeros", align_corners=False)
            parts.append(sampled.sum(dim=-1).reshape(batch, channels, count, self.detectors))
        return torch.cat(parts, dim=2)

    def A_adjoint(self, y: Tensor) -> Tensor:
        """Bilinear back-projection: the input gradient of grid_sample, i.e. the exact transpose of A.

        Calling grid_sample's backward kernel directly skips the forward pass that the
        autograd route of the base class spends; when y itself requires grad (a graph
        through the adjoint is wanted) the base class's autograd route is used.
        """
        if y.requires_grad and torch.is_grad_enabled():
            return super().A_adjoint(y)
        self._check_batch(y, self.out_shape, "sinograms")
        batch, channels = y.shape[:2]
        _, height, width = self.in_shape
        shared = self.grid.shape[0] == 1
        shape = (1, batch * channels, height, width) if shared else (batch, channels, height, width)
        # Only the shape and dtype of grid_sample's input matter for its input gradient.
        template = y.new_zeros(shape)
        x = y.new_zeros(shape)
        for first, count in self._chunks(batch * channels):
            # d(sum over the S samples of a ray)/d(sample) = 1: each ray's value goes to all its samples.
            rays = y[:, :, first : first + count].reshape(shape[0], shape[1], count * self.detectors, 1)
            grad_out = rays.expand(-1, -1, -1, self.samples)
            points = self._points(first, count, y)
            grad_in, _ = torch.ops.aten.grid_sampler_2d_backward(grad_out, template, points, 0, 0, False, [True, False])
            x = x + grad_in
        return x.reshape(batch, channels, height, width)

    def A_pinv(self, y: Tensor, *, tol: float = PINV_TOL, max_iter: int = PINV_MAX_ITER) -> Tensor:
        """A⁺ y by the base class's conjugate gradients on AᵀA x = Aᵀy, with tighter defaults.

        Sparse-view and limited-angle sinograms are nearly dependent (the projections of one
        image share their mass and moments), so A has singular values down to ~1e-6 of the
        largest: CG needs about as many iterations as A has independent rows, and a relative
        normal-equation residual of 1e-6 can still leave 1e-4 of the sinogram unfitted.
        Each iteration costs one A and one Aᵀ; pass a smaller max_iter for a cheaper,
        regularised (truncated) solution.
        """
        return super().A_pinv(y, tol=tol, max_iter=max_iter)


def ramp_filter(size: int, filter: str = "ramp", *, dtype=torch.float64, device=None) -> Tensor:
    """The (size // 2 + 1,) real-FFT response of the ramp filter for projections zero-padded to ``size``.

    The ramp is the discrete Fourier transform of the band-limited ramp kernel
    h[0] = 1/4, h[n] = -1/(π n)² for odd n, 0 for even n (Kak & Slaney eq. 61),
    which avoids the DC bias of sampling |ω| directly; it is scaled by 2 (about 1 at
    the Nyquist frequency) as in scikit-image, and multiplied by the named window.
    """
    if filter not in FILTERS:
        raise OperatorError(f"fbp: unknown filter '{filter}'; known: {', '.join(FILTERS)}")
    n = torch.arange(size, dtype=torch.float64)
    n = torch.minimum(n, size - n)  # the kernel is circular: index n and size - n are the same lag
    odd = n % 2 == 1
    kernel = torch.where(odd, -1.0 / (math.pi * n.clamp_min(1)) ** 2, torch.zeros_like(n))
    kernel[0] = 0.25
    response = 2 * torch.fft.rfft(kernel).real
    frequency = torch.fft.rfftfreq(size, dtype=torch.float64)
    return (response * FILTERS[filter](frequency)).to(dtype=dtype, device=device)


def fbp(sinogram: Tensor, op: ParallelBeamCT, filter: str = "ramp") -> Tensor:
    """Filtered back-projection of (B, C, ANGLES, N) sinograms of ``op`` to (B, C, H, W) images.

    Each projection is zero-padded to max(64, the power of two >= 2N), filtered by
    :func:`ramp_filter`, and back-projected: pixel (i, j) takes the linear
    interpolation (zero outside the detector) at t = (j - W//2)·cos θ - (i - H//2)·sin θ,
    summed over angles with weight min(arc, π)/ANGLES / 2 (the angular step, each
    line counted once when the arc exceeds a half turn; the 2 undoes the filter's
    scale). Without noise and with many angles over 180° this reproduces the image.
    ``filter`` is one of :data:`FILTERS`: "ramp", "shepp-logan" and "cosine" equal
    scikit-image's; "hann" and "hamming" are exact functions of frequency where
    scikit-image samples numpy's windows (a relative difference of ~1e-4).
    """
    if not isinstance(op, ParallelBeamCT):
        raise OperatorError(f"fbp needs a ct operator, got {type(op).__name__}")
    channels, angles, detectors = op.out_shape
    if sinogram.dim() != 4 or tuple(sinogram.shape[1:]) != op.out_shape:
        expected = f"(B, {channels}, {angles}, {detectors})"
        raise OperatorError(f"fbp: expected sinograms {expected}, got {tuple(sinogram.shape)}")
    batch = sinogram.shape[0]
    if op.angles.shape[0] not in (1, batch):
        raise OperatorError(f"fbp: operator stacked for {op.angles.shape[0]} images applied to a batch of {batch}")
    dtype, device = sinogram.dtype, sinogram.device
    _, height, width = op.in_shape

    size = max(64, 2 ** math.ceil(math.log2(2 * detectors)))
    response = ramp_filter(size, filter, dtype=dtype, device=device)
    filtered = torch.fft.irfft(torch.fft.rfft(sinogram, n=size, dim=-1) * response, n=size, dim=-1)[..., :detectors]

    # Back-projection as bilinear grid_sample of the filtered sinogram seen as an ANGLES × N image:
    # the point (u, k) lies exactly on row k, so it interpolates linearly along the detector index u.
    rows = (torch.arange(height, dtype=torch.float64, device=device) - height // 2).view(-1, 1)
    cols = (torch.arange(width, dtype=torch.float64, device=device) - width // 2).view(1, -1)
    theta = op.angles.to(dtype=torch.float64, device=device).view(-1, angles, 1, 1)
    u = (cols * torch.cos(theta) - rows * torch.sin(theta) + detectors // 2).flatten(2)  # (1 or B, ANGLES, H·W)
    # As numpy.interp (and iradon), a projection is zero outside [0, N - 1]: moving such points far
    # out stops grid_sample from blending the end bins with its zero padding.
    u = torch.where((u >= 0) & (u <= detectors - 1), u, torch.full_like(u, -2.0 * detectors))
    x_norm = ((2 * u + 1) / detectors - 1).to(dtype)

    shared = u.shape[0] == 1
    planes = filtered.reshape(1, batch * channels, angles, detectors) if shared else filtered
    chunk = max(1, CHUNK_ELEMENTS // (batch * channels * height * width))
    image = sinogram.new_zeros(planes.shape[0], planes.shape[1], height * width)
    for first in range(0, angles, chunk):
        count = min(chunk, angles - first)
        y_norm = ((2 * torch.arange(count, dtype=dtype, device=device) + 1) / count - 1).view(1, -1, 1)
        points = torch.stack([x_norm[:, first : first + count], y_norm.expand(u.shape[0], -1, height * width)], -1)
        rows_in_chunk = planes[:, :, first : first + count]
        sampled = F.grid_sample(rows_in_chunk, points, mode="bilinear", padding_mode="zeros", align_corners=False)
        image = image + sampled.sum(dim=2)

    # Angular quadrature: the step arc/ANGLES, capped at a half turn in all (a line seen twice counts
    # once); the 2 undoes the factor 2 in ramp_filter.
    weight = torch.clamp(op.arc_radians.to(dtype=dtype, device=device), max=math.pi) / (2 * angles)
    return (image.reshape(batch, channels, height, width)) * weight.view(-1, 1, 1, 1)
