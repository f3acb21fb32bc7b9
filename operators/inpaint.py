"""Inpainting: y = m ⊙ x, where the mask m is 1 at kept pixels and 0 at missing ones.

The measurement keeps the full image size, with zeros at the missing pixels (the
convention of DDRM, Kawar et al. NeurIPS 2022, and DPS, Chung et al. ICLR 2023).
The mask is a float buffer ``mask`` of shape (1 or B, 1 or C, H, W): one channel
means the same pixels are missing in every channel, C channels a mask per channel.

SVD: A is diagonal in the pixel basis, so U = V = I (``Vt(x)`` is ``x.flatten(1)``,
``V(z)`` reshapes back) and the singular values are the mask itself expanded to
(1 or B, C·H·W), zeros included (m = n). A, its adjoint and its pseudo-inverse
are all the same map x ↦ m ⊙ x, computed directly.

Registered spec names (each a subclass of :class:`Inpainting`):

* ``box:SIZE[:WIDTH][:top=T:left=L][:seed=S]`` or ``box:SIZE[:WIDTH]@X,Y`` — a SIZE (rows) × WIDTH (columns,
  default SIZE) rectangle is missing, its top-left corner at column X (= left), row Y (= top) when given. Without ``top``/``left`` its top-left corner
  is drawn uniformly from [16, H - SIZE - 16] × [16, W - WIDTH - 16], the protocol
  of DPS's box inpainting (128 × 128 boxes in 256 × 256 images); along an axis too
  small for the 16-pixel margin the range is [0, H - SIZE].
* ``random:FRACTION[:channels=shared|per][:seed=S]`` — exactly round(FRACTION·H·W)
  pixel positions are missing, drawn uniformly without replacement, the same in
  every channel (``shared``, default) or drawn independently per channel (``per``).
* ``strokes[:COUNT][:width=W][:seed=S]`` — free-form brush strokes in the spirit of
  the irregular masks of DeepFill v2 (Yu et al., "Free-Form Image Inpainting with
  Gated Convolution", ICCV 2019) and LaMa (Suvorov et al., WACV 2022): COUNT random
  polylines (default 3 to 5), each of 4 to 8 segments of random direction and
  length, drawn with a round brush of diameter W pixels (default random per
  stroke); a stroke reaching the border bounces off it.
  Lengths and widths scale with sqrt(H·W) / 256, so the missing fraction does not
  depend on the image size: measured over 300 seeds, median 24 %, 90 % of the masks
  between 15 % and 34 %.
* ``mask:PATH[:invert=1]`` — a mask image read with imageio, where WHITE = MISSING
  (the convention of LaMa, IOPaint and OpenCV's ``inpaint``); ``invert=1`` reads
  white as kept. A pixel is white when any of its colour channels is above half the
  range (> 127 for 8 bits); an alpha channel is ignored. An RGB mask whose channels
  differ gives a mask per channel for 3-channel images. ``.npy`` files hold an
  (H, W) or (C, H, W) array of booleans or 0/1 with 1 = missing.

Random masks draw from a local ``torch.Generator`` seeded by ``seed`` (default 0),
so a spec always rebuilds the same mask for a given image size; every ``spec``
records its seed. :meth:`Inpainting.from_mask` wraps a mask tensor for library use;
such an operator has the spec ``mask:array``, which cannot be rebuilt from text.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from operators.base import LinearOperator, PixelDiagonalOperator
from operators.errors import OperatorError
from operators.registry import check_keywords, parse_args, read_integer, read_seed, register

#: distance in pixels between a random box and the image border (DPS's protocol)
BOX_MARGIN = 16
#: the spec of operators built from a tensor, which no string can rebuild
ARRAY_SPEC = "mask:array"


class Inpainting(PixelDiagonalOperator):
    """y = m ⊙ x with a 0/1 mask m of shape (1 or B, 1 or C, H, W), 1 = pixel kept."""

    def __init__(self, kept: Tensor, in_shape: tuple[int, int, int], spec: str = ARRAY_SPEC) -> None:
        super().__init__(spec, in_shape)
        mask = _as_mask(kept, self.in_shape)
        self.register_buffer("mask", mask)
        self._specs = [spec] * mask.shape[0]

    @classmethod
    def from_mask(cls, kept: Tensor, in_shape: tuple[int, int, int] | None = None) -> Inpainting:
        """An operator keeping the pixels where ``kept`` is True (or 1): (H, W), (1|C, H, W) or (B, 1|C, H, W).

        ``in_shape`` defaults to the mask's own (C, H, W); give it to apply a
        one-channel mask to colour images. Its spec is ``mask:array``.
        """
        if in_shape is None:
            if kept.dim() < 2:
                raise OperatorError(f"a mask needs at least 2 dimensions (H, W), got shape {tuple(kept.shape)}")
            channels = kept.shape[-3] if kept.dim() >= 3 else 1
            in_shape = (channels, kept.shape[-2], kept.shape[-1])
        return Inpainting(kept, in_shape)

    @property
    def kept(self) -> Tensor:
        """Boolean (1 or B, C, H, W): True where the pixel is observed."""
        return (self.mask > 0.5).expand(-1, *self.in_shape)

    def A(self, x: Tensor) -> Tensor:
        return self.mask.to(dtype=x.dtype, device=x.device) * x

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.A(y)

    def A_pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> Tensor:
        """m ⊙ y: observed pixels are kept, missing ones set to 0 (the minimum-norm solution)."""
        return self.A(y)

    def singular_values(self) -> Tensor:
        return self.mask.expand(-1, *self.in_shape).reshape(self.mask.shape[0], -1)

    @property
    def kind(self) -> str:
        """What the mask hides, for the defaults, by the depth of its deepest hole (:func:`hole_radius`) and the share
        hidden: ``"huge"`` (HUGE_HOLE_RADIUS or more: a 96-pixel box and up), ``"large"`` (LARGE_HOLE_RADIUS or
        more: thick strokes, where the prior's view holds no known pixel), else ``"scattered"`` (at least
        SCATTERED_SHARE of the pixels hidden, none far from a kept one: a sparse sampling) or ``"small"`` (scratches,
        small boxes). A batch takes its deepest hole's and its largest share's."""
        radius = hole_radius(self, HUGE_HOLE_RADIUS)
        if radius >= LARGE_HOLE_RADIUS:
            return "huge" if radius >= HUGE_HOLE_RADIUS else "large"
        return "scattered" if float(missing_fraction(self).max()) >= SCATTERED_SHARE else "small"

    @classmethod
    def stack(cls, ops: list[LinearOperator]) -> Inpainting:
        """One operator applying ``ops[b]`` to image b; any inpainting masks mix (box with strokes, ...)."""
        if not ops:
            raise OperatorError("cannot stack an empty list of operators")
        if not all(isinstance(op, Inpainting) for op in ops):
            raise OperatorError("only inpainting operators can be stacked together: " + ", ".join(op.spec for op in ops))
        shape = ops[0].in_shape
        if any(op.in_shape != shape for op in ops):
            raise OperatorError("cannot stack inpainting operators built for different image shapes: "
                                + ", ".join(str(op.in_shape) for op in ops))
        # Shared one-channel masks stay one channel; mixed with per-channel masks they are expanded.
        channels = 1 if all(op.mask.shape[1] == 1 for op in ops) else shape[0]
        first = ops[0].mask
        mask = torch.cat([op.mask.to(first).expand(-1, channels, -1, -1) for op in ops])
        stacked = Inpainting(mask, shape)
        stacked._specs = [spec for op in ops for spec in op._specs]
        return stacked


#: holes at least this deep (pixels from the nearest kept one; 32 wide, half the default prior's 64-pixel view) are
#: large, at least HUGE_HOLE_RADIUS deep huge (the protocol's 128-pixel box is 64 deep)
LARGE_HOLE_RADIUS, HUGE_HOLE_RADIUS = 16, 48
#: small holes hiding at least this share of the pixels are a sparse sampling (random:0.7), not scratches
SCATTERED_SHARE = 0.5


def hole_radius(op: Inpainting, limit: int | None = None) -> int:
    """The depth of the deepest hole, over the batch: how many pixels (chessboard distance) the missing pixel
    farthest from any kept one lies from them; 0 when nothing is missing. ``limit``: stop counting there."""
    covered = (op.mask > 0.5).any(dim=1, keepdim=True).to(torch.float32)
    if not bool(covered.flatten(1).any(dim=1).all()):
        return max(op.in_shape[1:]) if limit is None else limit  # an image with no kept pixel at all
    radius = 0
    while not bool(covered.all()) and (limit is None or radius < limit):
        covered = torch.nn.functional.max_pool2d(covered, 3, stride=1, padding=1)
        radius += 1
    return radius


def missing_fraction(op: LinearOperator) -> Tensor:
    """Fraction of the C·H·W image entries that an inpainting operator hides, one per image (1 or B,), float64."""
    if not isinstance(op, Inpainting):
        raise OperatorError(f"missing_fraction needs an inpainting operator, got '{op.spec}'")
    return 1.0 - op.mask.double().flatten(1).mean(dim=1)


@register
class BoxInpainting(Inpainting):
    """A SIZE × WIDTH rectangle is missing, at a given or a seeded random position."""

    name = "box"

    def __init__(
        self, in_shape: tuple[int, int, int], size: int, width: int | None = None,
        top: int | None = None, left: int | None = None, seed: int = 0,
    ) -> None:
        _, h, w = in_shape
        width = size if width is None else width
        if size < 1 or width < 1:
            raise OperatorError(f"box size must be at least 1 pixel, got {size}x{width}")
        if size > h or width > w:
            raise OperatorError(f"box {size}x{width} is larger than the image {h}x{w}")
        explicit = top is not None or left is not None
        if explicit:
            if top is None or left is None:
                raise OperatorError("box: give both top= and left=, or neither (then the position is random)")
            if not (0 <= top <= h - size and 0 <= left <= w - width):
                raise OperatorError(f"box {size}x{width} at top={top}, left={left} does not fit in the image {h}x{w}")
        else:
            generator = torch.Generator().manual_seed(seed)
            top = _uniform_position(h, size, generator)
            left = _uniform_position(w, width, generator)
        spec = f"{self.name}:{size}" + (f":{width}" if width != size else "")
        spec += f":top={top}:left={left}" if explicit else f":seed={seed}"

        kept = torch.ones(1, 1, h, w, dtype=torch.bool)
        kept[..., top : top + size, left : left + width] = False
        super().__init__(kept, in_shape, spec)
        #: the rectangle's rows top .. top + size - 1 and columns left .. left + width - 1
        self.top, self.left, self.size, self.box_width = top, left, size, width

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> BoxInpainting:
        positional, keywords = parse_args(args)
        check_keywords(cls.name, keywords, ("top", "left", "seed"))
        if positional and "@" in positional[-1]:  # box:SIZE@X,Y: the top-left corner at column X, row Y
            positional[-1], _, corner = positional[-1].partition("@")
            x, sep, y = corner.partition(",")
            if not sep or "top" in keywords or "left" in keywords:
                raise OperatorError(f"box: give the corner as SIZE@X,Y (column, row), e.g. box:128@64,32; got '{args}'")
            keywords |= {"left": x, "top": y}
        if not 1 <= len(positional) <= 2:
            raise OperatorError(f"box takes SIZE and optionally WIDTH (e.g. 'box:128' or 'box:64:96'), got '{args}'")
        size = read_integer(positional[0], "box size")
        width = read_integer(positional[1], "box width") if len(positional) == 2 else None
        top = read_integer(keywords["top"], "box top") if "top" in keywords else None
        left = read_integer(keywords["left"], "box left") if "left" in keywords else None
        if "seed" in keywords and (top is not None or left is not None):
            raise OperatorError("box: seed= has no effect when top= and left= fix the position")
        return cls(in_shape, size, width, top, left, read_seed(keywords))


def _uniform_position(length: int, extent: int, generator: torch.Generator) -> int:
    """A start index uniform in [margin, length - extent - margin], or in [0, length - extent] if that range is empty."""
    low, high = BOX_MARGIN, length - extent - BOX_MARGIN
    if high < low:
        low, high = 0, length - extent
    return int(torch.randint(low, high + 1, (1,), generator=generator))


@register
class RandomInpainting(Inpainting):
    """Exactly round(FRACTION·H·W) uniformly drawn pixel positions are missing (shared or per channel)."""

    name = "random"

    def __init__(self, in_shape: tuple[int, int, int], fraction: float, per_channel: bool = False, seed: int = 0) -> None:
        c, h, w = in_shape
        if not 0.0 <= fraction < 1.0:
            raise OperatorError(f"random: the missing fraction must be in [0, 1), got {fraction}")
        count = round(fraction * h * w)
        generator = torch.Generator().manual_seed(seed)
        layers = []
        for _ in range(c if per_channel else 1):
            layer = torch.ones(h * w, dtype=torch.bool)
            layer[torch.randperm(h * w, generator=generator)[:count]] = False
            layers.append(layer.reshape(h, w))
        spec = f"{self.name}:{fraction!r}" + (":channels=per" if per_channel else "") + f":seed={seed}"
        super().__init__(torch.stack(layers)[None], in_shape, spec)

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> RandomInpainting:
        positional, keywords = parse_args(args)
        check_keywords(cls.name, keywords, ("channels", "seed"))
        if len(positional) != 1:
            raise OperatorError(f"random takes one argument, the missing fraction (e.g. 'random:0.7'), got '{args}'")
        try:
            fraction = float(positional[0])
        except ValueError:
            raise OperatorError(f"random: the missing fraction must be a number in [0, 1), got '{positional[0]}'") from None
        channels = keywords.get("channels", "shared")
        if channels not in ("shared", "per"):
            raise OperatorError(f"random: channels must be 'shared' or 'per', got '{channels}'")
        return cls(in_shape, fraction, channels == "per", read_seed(keywords))


@register
class StrokesInpainting(Inpainting):
    """Free-form brush strokes (random polylines drawn with a round brush) are missing."""

    name = "strokes"

    def __init__(self, in_shape: tuple[int, int, int], count: int | None = None, width: int | None = None,
                 seed: int = 0) -> None:
        _, h, w = in_shape
        if count is not None and count < 1:
            raise OperatorError(f"strokes: the number of strokes must be at least 1, got {count}")
        if width is not None and width < 1:
            raise OperatorError(f"strokes: the brush width must be at least 1 pixel, got {width}")
        missing = stroke_mask(h, w, count, width, torch.Generator().manual_seed(seed))
        spec = self.name + (f":{count}" if count is not None else "")
        spec += (f":width={width}" if width is not None else "") + f":seed={seed}"
        super().__init__(~missing[None, None], in_shape, spec)

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> StrokesInpainting:
        positional, keywords = parse_args(args)
        check_keywords(cls.name, keywords, ("width", "seed"))
        if len(positional) > 1:
            raise OperatorError(f"strokes takes at most one argument, the number of strokes (e.g. 'strokes:3'), got '{args}'")
        count = read_integer(positional[0], "number of strokes") if positional else None
        width = read_integer(keywords["width"], "stroke width") if "width" in keywords else None
        return cls(in_shape, count, width, read_seed(keywords))


@register
class FreeformInpainting(Inpainting):
    """Large free-form holes: thick brush strokes added one by one until a seeded share in [25 %, 40 %] of the
    image is missing (the sample masks' look, bench task ``freeform``)."""

    name = "freeform"
    #: the missing share is drawn uniformly from this range
    COVERAGE = (0.25, 0.40)

    def __init__(self, in_shape: tuple[int, int, int], seed: int = 0) -> None:
        _, h, w = in_shape
        generator = torch.Generator().manual_seed(seed)
        target = self.COVERAGE[0] + (self.COVERAGE[1] - self.COVERAGE[0]) * float(torch.rand((), generator=generator))
        scale = math.sqrt(h * w) / 256
        missing = torch.zeros(h, w, dtype=torch.bool)
        for _ in range(200):  # a stroke that would go past the range is drawn again (another random stroke)
            width = max(1, round((16 + 20 * float(torch.rand((), generator=generator))) * scale))
            candidate = missing | stroke_mask(h, w, 1, width, generator)
            if candidate.float().mean() <= self.COVERAGE[1]:
                missing = candidate
            if missing.float().mean() >= target:
                break
        super().__init__(~missing[None, None], in_shape, f"{self.name}:seed={seed}")

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> FreeformInpainting:
        positional, keywords = parse_args(args)
        check_keywords(cls.name, keywords, ("seed",))
        if positional:
            raise OperatorError(f"freeform takes no positional arguments (only seed=S), got '{args}'")
        return cls(in_shape, read_seed(keywords))


def stroke_mask(h: int, w: int, count: int | None, width: int | None, generator: torch.Generator) -> Tensor:
    """Boolean (H, W), True on ``count`` random brush strokes of diameter ``width`` (None: random, see the module doc)."""
    scale = math.sqrt(h * w) / 256

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))

    def integer(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (), generator=generator))

    if count is None:
        count = integer(3, 5)
    segments = []  # (start, end, radius) with points as (row, column)
    for _ in range(count):
        radius = width / 2 if width is not None else uniform(8.0, 18.0) * scale
        point = (uniform(0, h - 1), uniform(0, w - 1))
        heading = uniform(0, 2 * math.pi)
        for _ in range(integer(4, 8)):
            # A random walk of the heading gives the bends of a hand-drawn stroke.
            heading += uniform(-0.4 * math.pi, 0.4 * math.pi)
            length = uniform(12.0, 42.0) * scale
            # A stroke heading out of the image bounces off the border instead of running along it.
            if not 0 <= point[0] + length * math.sin(heading) <= h - 1:
                heading = -heading
            if not 0 <= point[1] + length * math.cos(heading) <= w - 1:
                heading = math.pi - heading
            end = (min(max(point[0] + length * math.sin(heading), 0.0), h - 1.0),
                   min(max(point[1] + length * math.cos(heading), 0.0), w - 1.0))
            segments.append((point, end, radius))
            point = end

    missing = torch.zeros(h, w, dtype=torch.bool)
    for (r0, c0), (r1, c1), radius in segments:
        radius = max(radius, 0.5)
        # Only the pixels of the segment's bounding box (grown by the radius) can be within reach.
        top, bottom = max(math.floor(min(r0, r1) - radius), 0), min(math.ceil(max(r0, r1) + radius), h - 1)
        left, right = max(math.floor(min(c0, c1) - radius), 0), min(math.ceil(max(c0, c1) + radius), w - 1)
        rows = torch.arange(top, bottom + 1, dtype=torch.float64)[:, None]
        cols = torch.arange(left, right + 1, dtype=torch.float64)[None, :]
        # Distance of each pixel centre to the segment: project onto it, clamped to its ends.
        dr, dc = r1 - r0, c1 - c0
        length_sq = dr * dr + dc * dc
        t = ((rows - r0) * dr + (cols - c0) * dc) / max(length_sq, 1e-12)
        t = t.clamp(0.0, 1.0)
        distance_sq = (rows - r0 - t * dr) ** 2 + (cols - c0 - t * dc) ** 2
        missing[top : bottom + 1, left : right + 1] |= distance_sq <= radius**2
    return missing


@register
class FileMaskInpainting(Inpainting):
    """The mask of an image file (white = missing, or kept with invert=1) or a .npy array (1 = missing)."""

    name = "mask"

    def __init__(self, in_shape: tuple[int, int, int], path: str, invert: bool = False) -> None:
        kept = read_mask(path, in_shape, invert)
        super().__init__(kept, in_shape, f"{self.name}:{path}" + (":invert=1" if invert else ""))

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> FileMaskInpainting:
        positional, keywords = parse_args(args)
        check_keywords(cls.name, keywords, ("invert",))
        # A path may itself contain ':' (C:\masks\a.png), which the spec grammar splits on.
        path = ":".join(positional)
        if not path:
            raise OperatorError("mask needs a file: 'mask:PATH' (white = missing) or 'mask:PATH:invert=1'")
        if f"{cls.name}:{path}" == ARRAY_SPEC:
            raise OperatorError(f"'{ARRAY_SPEC}' names a mask given as a tensor (Inpainting.from_mask) and cannot be "
                                "rebuilt from a spec; save the mask to a .png or .npy file and use 'mask:PATH'")
        invert = keywords.get("invert", "0")
        if invert not in ("0", "1"):
            raise OperatorError(f"mask: invert must be 0 or 1, got '{invert}'")
        return cls(in_shape, path, invert == "1")


def read_mask(path: str | Path, in_shape: tuple[int, int, int], invert: bool = False) -> Tensor:
    """The kept-pixel mask (1, 1 or C, H, W) of a mask file for images of shape (C, H, W): white / 1 = missing.

    With ``invert`` white / 1 means kept. An image file counts a pixel as white when
    any colour channel is above half its range; RGB files whose channels differ give
    one mask per channel for 3-channel images.
    """
    c, h, w = in_shape
    path = Path(path)
    if path.suffix.lower() == ".npy":
        marked = _read_npy_mask(path, c)
    else:
        marked = _read_image_mask(path)
        if marked.shape[0] > 1 and c != marked.shape[0]:
            # Colour mask for images of another channel count: a pixel is marked if any channel is.
            marked = marked.any(dim=0, keepdim=True)
    if tuple(marked.shape[-2:]) != (h, w):
        raise OperatorError(f"mask {path} is {marked.shape[-2]}x{marked.shape[-1]} (HxW) but the image is {h}x{w}")
    if marked.shape[0] > 1 and bool((marked == marked[:1]).all()):
        marked = marked[:1]  # identical channels: one mask shared by all
    return (marked if invert else ~marked)[None]


def _read_image_mask(path: Path) -> Tensor:
    """Boolean (1 or 3, H, W): True where a mask image is white (any channel above half range)."""
    import imageio.v3 as iio

    try:
        pixels = np.asarray(iio.imread(path))
    except Exception:  # noqa: BLE001 - imageio raises many kinds (OSError, ValueError, plugin errors)
        raise OperatorError(f"cannot read mask image {path}: not an image file that can be decoded, or a damaged one") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] > 4:
        raise OperatorError(f"mask image {path} has unsupported shape {pixels.shape}; expected grayscale or RGB")
    # Drop alpha: gray+alpha keeps the gray channel, RGBA keeps RGB.
    pixels = pixels[:, :, :1] if pixels.shape[2] == 2 else pixels[:, :, :3]
    if pixels.dtype == np.bool_:
        white = pixels
    elif np.issubdtype(pixels.dtype, np.integer):
        white = pixels > np.iinfo(pixels.dtype).max // 2
    else:
        white = pixels > 0.5
    return torch.from_numpy(np.ascontiguousarray(white.transpose(2, 0, 1)))


def _read_npy_mask(path: Path, channels: int) -> Tensor:
    """Boolean (1 or C, H, W) from a .npy array of booleans or 0/1 values, (H, W) or (1 or C, H, W)."""
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:  # OSError, ValueError for a corrupt file or an object array
        raise OperatorError(f"cannot read mask array {path}: {err}") from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, channels):
        raise OperatorError(f"mask array {path} has shape {array.shape}; expected (H, W) or (C, H, W) with C = 1 or {channels}")
    if array.dtype != np.bool_:
        if not (np.issubdtype(array.dtype, np.number) and np.isin(array, (0, 1)).all()):
            raise OperatorError(f"mask array {path} must hold booleans or 0/1 values (1 = missing)")
        array = array != 0
    return torch.from_numpy(np.ascontiguousarray(array))


def _as_mask(kept: Tensor, in_shape: tuple[int, int, int]) -> Tensor:
    """A 0/1 float mask (1 or B, 1 or C, H, W), a copy of ``kept`` ((H, W), (1|C, H, W) or (B, 1|C, H, W))."""
    c, h, w = in_shape
    if not isinstance(kept, Tensor):
        raise OperatorError(f"a mask must be a torch.Tensor, got {type(kept).__name__}")
    mask = kept.detach()
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.dim() != 4 or tuple(mask.shape[-2:]) != (h, w) or mask.shape[1] not in (1, c):
        raise OperatorError(f"a mask of shape {tuple(kept.shape)} does not fit images of shape {in_shape}: "
                            f"expected (H, W), (1 or C, H, W) or (B, 1 or C, H, W) with H, W = {h}, {w} and C = {c}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise OperatorError("a mask must hold booleans or 0/1 values (1 = pixel kept)")
    dtype = mask.dtype if mask.is_floating_point() else torch.float32
    return mask.to(dtype=dtype, copy=True)
