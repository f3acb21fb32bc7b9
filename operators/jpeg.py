"""JPEG compression as a measurement: y = the dequantised DCT coefficients of a baseline JPEG.

A baseline (sequential, Huffman-coded, 8-bit) JPEG stores, for each colour plane, the
integers q = round(C / Q) of the 8 × 8 block DCT C of the level-shifted plane, one
quantisation table Q per plane. Everything before the rounding is linear, so the
measurement model is

    y = Q ⊙ round(D P(x) / Q),

with P(x) the libjpeg pre-processing (colour transform, chroma subsampling, edge padding),
D the blockwise orthonormal 8 × 8 DCT-II, and y on the DCT scale (what a decoder feeds its
IDCT). The forward map here reproduces libjpeg-turbo (what Pillow links) BIT FOR BIT; the
tests check it against the coefficients decoded from files that Pillow wrote.

The encoder, step by step as libjpeg does it (jccolor.c, jcprepct.c, jcsample.c,
jfdctint.c, jcdctmgr.c), on integer samples:

* 8-bit samples: x in [-1, 1] becomes round((x + 1) / 2 · 255) clipped to 0..255, the
  rounding of :func:`restore.io.to_array`.
* Colour (JFIF, full range): Y = 0.299 R + 0.587 G + 0.114 B,
  Cb = -0.16874 R - 0.33126 G + 0.5 B + 128, Cr = 0.5 R - 0.41869 G - 0.08131 B + 128, in
  16-bit fixed point; Y rounds half up, Cb and Cr with a fudge of 0.5 - 2⁻¹⁶ (jccolor.c).
  Grayscale images are their own Y plane.
* Subsampling: ``4:2:0`` averages 2 × 2 luma-resolution chroma samples, (a+b+c+d+bias) >> 2
  with bias 1, 2, 1, 2, ... along each output row; ``4:2:2`` averages 2 × 1 pairs,
  (a+b+bias) >> 1 with bias 0, 1, 0, 1, ... (h2v2_downsample / h2v1_downsample; Pillow's
  libjpeg-turbo runs SIMD versions of these, and of the colour transform and the DCT, which
  give the same integers: the tests match its files coefficient for coefficient). No
  smoothing (Pillow's default).
* Padding (by edge replication): a plane of a component with sampling factors (h, v) has
  ⌈W·h / (8·h_max)⌉ × ⌈H·v / (8·v_max)⌉ blocks. Before downsampling the full-resolution
  image is replicated to the right up to twice the chroma block width and downwards to a
  whole row group (an even height for 4:2:0); after downsampling every plane is replicated
  downwards to whole blocks. So the padded chroma columns are averages of replicated
  pixels while the padded chroma rows repeat the last downsampled row, as in jcprepct.c.
  Blocks that only fill an MCU (the "dummy blocks" of jccoefct.c) are not stored.
* DCT: libjpeg's accurate integer DCT (``JDCT_ISLOW``, jfdctint.c, 13-bit constants,
  output 8 × the orthonormal DCT) on samples - 128.
* Quantisation: q = sign(t) ⌊(|t| + 4Q) / (8Q)⌋ for the islow output t: rounding half away
  from zero of t / (8Q) ≈ C / Q. libjpeg-turbo divides by a reciprocal, which is exact
  in this range.

Coefficient planes are int32 tensors (B, block rows, block columns, 8, 8), each block in
NATURAL order: element [i, j] is vertical frequency i, horizontal frequency j (libjpeg's
JBLOCK index 8 i + j). Quantisation tables are (8, 8) in the same order. Pillow's
``Image.quantization`` and its ``save(qtables=...)`` both use natural order too (checked: a
table 1..64 given to ``save`` comes back as 1..64 while the DQT segment holds it in
zigzag order), so no reordering is needed between them and these tensors.

Differentiable forward. :meth:`JPEG.A` has the exact value of :meth:`JPEG.A_exact` and the
gradient of the same pipeline in floating point without any rounding (colour matrix, plain
2 × 2 or 2 × 1 means, orthonormal DCT as a matrix product, no clipping): a straight-through
estimator, ``c + (exact - c).detach()``. It was chosen over the smooth surrogate
x - sin(2πx)/(2π) because (1) the value is the true measurement, so the misfit the sampler
sees is the real one; (2) its gradient is the Jacobian of a fixed linear map, finite and
bounded everywhere, and for ‖A(x) - y‖² it is Jᵀ(A(x) - y), which moves each coefficient
towards its target; the smooth surrogate's derivative 1 - cos(2πx) VANISHES at every
integer, so the many coefficients that quantise to 0 (c/Q near 0) would get no gradient at
all; (3) no 8-bit or integer step in the chain has a useful derivative either, and the
straight-through estimator covers them all at once. Outside [-1, 1] the exact value clips
while the gradient stays that of the unclipped map.

Decoding (:func:`decode`, :meth:`JPEG.pinv`) is the floating-point inverse, the
"pseudo-inverse" of the measurement: dequantise, orthonormal IDCT, + 128, clip to 0..255
(libjpeg range-limits its IDCT output), chroma upsampling by libjpeg's "fancy" triangle
filter (weights 3/4 and 1/4 per axis, edges replicated, as jdsample.c does in Pillow's
default decoder), the exact inverse of the colour matrix, crop, clip to 0..255 and map to
[-1, 1]. It differs from Pillow's integer decoder by its intermediate roundings only: at
most 1 level (gray) to 3 levels (4:2:2) out of 255, about 0.4 on average in colour (the
tests measure it).

:func:`quantisation_projection` moves an image onto the set of images whose coefficients
fall into the bins of given quantised coefficients; :func:`read_coefficients` reads the
quantised coefficients of a baseline JPEG file exactly (its own Huffman decoder, since
Pillow does not expose them), which gives the measurement y of ``restore dejpeg``.

Spec grammar (registered name ``jpeg``; ``:`` separates fields, so subsampling is spelled
``444``, ``422`` or ``420`` there)::

    jpeg:quality=Q[:subsampling=420]   the IJG standard tables at quality Q (1..100)
    jpeg:file=PATH                      the tables and subsampling of a JPEG file

Grayscale images (C = 1) take one plane and ignore the subsampling. Paths cannot contain
``:``. A ``;``-joined spec stacks per-image tables (same subsampling): the ``quant`` buffer
holds one set of tables per image.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from operators.base import NonlinearOperator
from operators.errors import OperatorError
from operators.registry import check_keywords, parse_args, read_integer, register

#: luma sampling factors (h, v) of each subsampling, chroma being 1 × 1
SUBSAMPLINGS = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}
#: how specs spell the subsampling (":" separates spec fields)
SPEC_SUBSAMPLING = {"444": "4:4:4", "422": "4:2:2", "420": "4:2:0"}
#: the spec of operators built from tables that no string rebuilds
TABLES_SPEC = "jpeg:tables"

#: IJG / JPEG Annex K example tables in natural order (libjpeg's jcparam.c)
IJG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
IJG_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32  # fmt: skip


def _zigzag() -> tuple[int, ...]:
    """Natural index of the k-th coefficient in zigzag order: anti-diagonals, alternating direction."""
    cells = [(i, j) for i in range(8) for j in range(8)]
    # Odd anti-diagonals run down-left (row increasing), even ones up-right (row decreasing).
    cells.sort(key=lambda c: (c[0] + c[1], c[0] if (c[0] + c[1]) % 2 else -c[0]))
    return tuple(8 * i + j for i, j in cells)


#: ZIGZAG[k] = natural index of the k-th coefficient of a block in file (zigzag) order
ZIGZAG = _zigzag()


# ---------------------------------------------------------------------------------------------
# Tables


def _subsampling(text: str) -> str:
    """'4:2:0' or '420' → '4:2:0'; anything else is refused."""
    value = SPEC_SUBSAMPLING.get(str(text).strip(), str(text).strip())
    if value not in SUBSAMPLINGS:
        raise OperatorError(f"jpeg: chroma subsampling must be 4:4:4, 4:2:2 or 4:2:0 (444, 422, 420 in specs), got '{text}'")
    return value


def _table(values, what: str) -> Tensor:
    table = torch.as_tensor(values).detach().cpu()
    if table.numel() != 64:
        raise OperatorError(f"jpeg: a {what} quantisation table needs 64 entries, got {table.numel()}")
    if table.is_floating_point() and not bool((table == table.round()).all()):
        raise OperatorError(f"jpeg: the {what} quantisation table must hold integers")
    table = table.to(torch.int64).reshape(8, 8)
    if int(table.min()) < 1 or int(table.max()) > 65535:
        low, high = int(table.min()), int(table.max())
        raise OperatorError(f"jpeg: {what} quantisation table entries must be in 1..65535, got {low}..{high}")
    return table


@dataclass(frozen=True, eq=False)
class JPEGTables:
    """Quantisation tables (8 × 8 int64, natural order), chroma subsampling and grayscale flag of a JPEG.

    For grayscale (one plane) the subsampling is "4:4:4" and ``chroma`` is a copy of ``luma``
    (unused), which is what a grayscale file holds: a single table.
    """

    luma: Tensor
    chroma: Tensor
    subsampling: str = "4:2:0"
    gray: bool = False

    def __post_init__(self) -> None:
        luma = _table(self.luma, "luma")
        object.__setattr__(self, "luma", luma)
        object.__setattr__(self, "gray", bool(self.gray))
        object.__setattr__(self, "chroma", luma.clone() if self.gray else _table(self.chroma, "chroma"))
        object.__setattr__(self, "subsampling", "4:4:4" if self.gray else _subsampling(self.subsampling))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JPEGTables):
            return NotImplemented
        return (self.gray == other.gray and self.subsampling == other.subsampling
                and torch.equal(self.luma, other.luma) and torch.equal(self.chroma, other.chroma))

    def __hash__(self) -> int:
        return hash((self.gray, self.subsampling, tuple(self.luma.flatten().tolist()), tuple(self.chroma.flatten().tolist())))

    def __repr__(self) -> str:
        kind = "gray" if self.gray else self.subsampling
        return f"JPEGTables({kind}, luma[0,0]={int(self.luma[0, 0])}, chroma[0,0]={int(self.chroma[0, 0])})"

    @property
    def channels(self) -> int:
        """Image channels these tables are for: 1 (grayscale) or 3 (RGB)."""
        return 1 if self.gray else 3

    @property
    def factors(self) -> tuple[int, int]:
        """Luma sampling factors (h, v) relative to chroma: (2, 2) for 4:2:0."""
        return SUBSAMPLINGS[self.subsampling]

    def quant(self) -> Tensor:
        """One table per plane, (P, 8, 8) int64: [luma] or [luma, chroma, chroma]."""
        return self.luma[None] if self.gray else torch.stack([self.luma, self.chroma, self.chroma])

    @classmethod
    def standard(cls, quality: int, subsampling: str = "4:2:0", gray: bool = False) -> JPEGTables:
        """The IJG tables scaled to ``quality`` 1..100 exactly as libjpeg's jpeg_set_quality (and Pillow) do.

        Scale s = 5000 / quality below 50, else 200 - 2·quality (percent); entries
        (t·s + 50) // 100 clamped to 1..255 (baseline). Quality 100 gives all ones.
        """
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise OperatorError(f"jpeg: quality must be an integer in 1..100, got {quality!r}")
        scale = 5000 // quality if quality < 50 else 200 - 2 * quality

        def scaled(base: tuple[int, ...]) -> Tensor:
            return ((torch.tensor(base, dtype=torch.int64) * scale + 50) // 100).clamp(1, 255).reshape(8, 8)

        return cls(scaled(IJG_LUMA), scaled(IJG_CHROMA), subsampling, gray)

    @classmethod
    def from_file(cls, path: str | Path) -> JPEGTables:
        """The tables and subsampling of a baseline JPEG file, read with Pillow.

        Refused (OperatorError): files that are not JPEG, progressive, lossless, hierarchical,
        arithmetic-coded or 12-bit JPEGs, CMYK / YCCK and RGB-stored (no YCbCr transform)
        JPEGs, sampling factors other than 4:4:4, 4:2:2 and 4:2:0, and Cb and Cr quantised with
        different tables (this model has one chroma table).
        """
        from PIL import Image, JpegImagePlugin

        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise OperatorError(f"jpeg: cannot read '{path}': {err.strerror or err}") from None
        try:
            with Image.open(path) as im:
                im_format, mode, info = im.format, im.mode, dict(im.info)
                layer = list(getattr(im, "layer", []))
                tables = dict(getattr(im, "quantization", None) or {})
                sampling = JpegImagePlugin.get_sampling(im) if im_format in ("JPEG", "MPO") else -1
        except (OSError, ValueError, SyntaxError) as err:
            raise OperatorError(f"jpeg: '{path}' is not a readable image: {err}") from None
        if im_format not in ("JPEG", "MPO"):
            raise OperatorError(f"jpeg: '{path}' is a {im_format} file, not a JPEG")
        if info.get("progressive") or info.get("progression"):
            raise OperatorError(f"jpeg: '{path}' is a progressive JPEG; only baseline (sequential) JPEGs are supported")
        frame = _frame_header(data, path)  # arithmetic, lossless, hierarchical, 12-bit
        if mode == "CMYK" or len(layer) == 4:
            raise OperatorError(f"jpeg: '{path}' is a CMYK/YCCK JPEG; only grayscale and YCbCr JPEGs are supported")
        if len(layer) not in (1, 3) or mode not in ("L", "RGB"):
            raise OperatorError(f"jpeg: '{path}' has {len(layer)} components (mode {mode}); expected 1 (gray) or 3 (YCbCr)")
        if len(layer) == 3 and (info.get("adobe_transform") == 0
                                or ("adobe" not in info and "jfif" not in info and frame["ids"] == (82, 71, 66))):
            raise OperatorError(f"jpeg: '{path}' stores RGB without the YCbCr transform; only YCbCr JPEGs are supported")
        for _, _, _, table_id in layer:
            if table_id not in tables:
                raise OperatorError(f"jpeg: '{path}' uses quantisation table {table_id}, which it does not define")
        luma = tables[layer[0][3]]
        if len(layer) == 1:
            return cls(luma, luma, "4:4:4", gray=True)
        cb, cr = tables[layer[1][3]], tables[layer[2][3]]
        if list(cb) != list(cr):
            raise OperatorError(f"jpeg: '{path}' quantises Cb and Cr with different tables "
                                f"({layer[1][3]} and {layer[2][3]}); this model has a single chroma table")
        names = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
        if sampling not in names:
            factors = ", ".join(f"{h}x{v}" for _, h, v, _ in layer)
            raise OperatorError(f"jpeg: '{path}' has sampling factors {factors}; only 4:4:4, 4:2:2 and 4:2:0 are supported")
        return cls(luma, cb, names[sampling], gray=False)


def _frame_header(data: bytes, path) -> dict:
    """The frame header (SOFn) of a JPEG: refuses all but 8-bit Huffman sequential (SOF0, SOF1)."""
    if data[:2] != b"\xff\xd8":
        raise OperatorError(f"jpeg: '{path}' is not a JPEG file (no start-of-image marker)")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise OperatorError(f"jpeg: '{path}' is a damaged JPEG (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xCC:
            raise OperatorError(f"jpeg: '{path}' uses arithmetic coding; only Huffman-coded baseline JPEGs are supported")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            kind = None
            if marker in (0xC2, 0xC6, 0xCA, 0xCE):
                kind = "a progressive"
            elif marker in (0xC3, 0xC7, 0xCB, 0xCF):
                kind = "a lossless"
            elif marker in (0xC5, 0xCD):
                kind = "a hierarchical"
            elif marker == 0xC9:
                kind = "an arithmetic-coded"
            if kind is not None:
                raise OperatorError(f"jpeg: '{path}' is {kind} JPEG; only baseline (sequential, Huffman) JPEGs are supported")
            seg = data[pos + 4 : pos + 2 + length]
            if len(seg) < 6 or len(seg) < 6 + 3 * seg[5]:
                raise OperatorError(f"jpeg: '{path}' has a damaged frame header")
            if seg[0] != 8:
                raise OperatorError(f"jpeg: '{path}' has {seg[0]}-bit samples; only 8-bit JPEGs are supported")
            height, width, count = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"), seg[5]
            comps = [(seg[6 + 3 * k], seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15, seg[8 + 3 * k]) for k in range(count)]
            return {"marker": marker, "height": height, "width": width, "components": comps,
                    "ids": tuple(c[0] for c in comps), "end": pos + 2 + length}
        if marker in (0xD9, 0xDA):
            break
        pos += 2 + length
    raise OperatorError(f"jpeg: '{path}' has no frame header")


# ---------------------------------------------------------------------------------------------
# Geometry: planes, padding and blocks


def plane_blocks(tables: JPEGTables, height: int, width: int) -> list[tuple[int, int]]:
    """(block rows, block columns) of each plane for an H × W image: libjpeg's height/width_in_blocks."""
    luma = (math.ceil(height / 8), math.ceil(width / 8))
    if tables.gray:
        return [luma]
    h, v = tables.factors
    chroma = (math.ceil(height / (8 * v)), math.ceil(width / (8 * h)))
    return [luma, chroma, chroma]


def _replicate(plane: Tensor, rows: int, cols: int) -> Tensor:
    """Edge-replicate the last two dims of ``plane`` (any dtype, differentiable) up to rows × cols."""
    h, w = plane.shape[-2:]
    if (rows, cols) == (h, w):
        return plane
    r = torch.arange(rows, device=plane.device).clamp_(max=h - 1)
    c = torch.arange(cols, device=plane.device).clamp_(max=w - 1)
    return plane[..., r, :][..., c]


def _chroma_plane(plane: Tensor, factors: tuple[int, int], blocks: tuple[int, int], exact: bool) -> Tensor:
    """libjpeg's path of one full-resolution chroma plane (B, H, W) to its padded, subsampled plane.

    Exact: integer means with libjpeg's alternating bias; otherwise plain means (the bias
    alternates so that it averages out).
    """
    h, v = factors
    rows, cols = 8 * blocks[0], 8 * blocks[1]
    if (h, v) == (1, 1):
        return _replicate(plane, rows, cols)
    height = plane.shape[-2]
    # Before downsampling: replicate right to h × the padded chroma width, down to a whole row group.
    full = _replicate(plane, v * math.ceil(height / v), h * cols)
    b, fr, fc = full.shape
    groups = full.reshape(b, fr // v, v, fc // h, h)
    if exact:
        col = torch.arange(fc // h, device=plane.device) % 2
        bias = col if v == 1 else col + 1  # h2v1: 0,1,0,1..., h2v2: 1,2,1,2...
        low = (groups.sum(dim=(2, 4)) + bias) >> ((h * v).bit_length() - 1)  # / 2 or / 4
    else:
        low = groups.mean(dim=(2, 4))
    # After downsampling: the last subsampled row is repeated down to whole blocks.
    return _replicate(low, rows, cols)


def _planes(ycc: Tensor, tables: JPEGTables, exact: bool) -> list[Tensor]:
    """Padded planes (B, 8·rows, 8·cols) of a (B, P, H, W) YCbCr (or Y) image, as libjpeg lays them out."""
    height, width = ycc.shape[-2:]
    blocks = plane_blocks(tables, height, width)
    planes = [_replicate(ycc[:, 0], 8 * blocks[0][0], 8 * blocks[0][1])]
    for p in range(1, len(blocks)):
        planes.append(_chroma_plane(ycc[:, p], tables.factors, blocks[p], exact))
    return planes


def _to_blocks(plane: Tensor) -> Tensor:
    """(B, 8R, 8C) → (B, R, C, 8, 8)."""
    b, h, w = plane.shape
    return plane.reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)


def _from_blocks(blocks: Tensor) -> Tensor:
    """(B, R, C, 8, 8) → (B, 8R, 8C)."""
    b, r, c = blocks.shape[:3]
    return blocks.transpose(2, 3).reshape(b, 8 * r, 8 * c)


# ---------------------------------------------------------------------------------------------
# Colour


#: libjpeg's RGB → YCbCr coefficients (jccolor.c), rows Y, Cb, Cr; chroma is offset by 128
YCC_MATRIX = ((0.29900, 0.58700, 0.11400), (-0.16874, -0.33126, 0.50000), (0.50000, -0.41869, -0.08131))


def _fix(value: float) -> int:
    return int(value * 65536 + 0.5)


def _rgb_to_ycc_exact(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) int64 0..255 → YCbCr int64 0..255 in libjpeg's 16-bit fixed point (jccolor.c)."""
    r, g, b = rgb.unbind(1)
    half = 1 << 15
    offset = (128 << 16) + half - 1  # chroma: +128 and a rounding fudge of 0.5 - 2⁻¹⁶
    y = (_fix(0.299) * r + _fix(0.587) * g + _fix(0.114) * b + half) >> 16
    cb = (-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * b + offset) >> 16
    cr = (_fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * b + offset) >> 16
    return torch.stack([y, cb, cr], dim=1)


def _ycc_matrix(like: Tensor) -> Tensor:
    return torch.tensor(YCC_MATRIX, dtype=torch.float64).to(dtype=like.dtype, device=like.device)


def _rgb_to_ycc(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) float on the 0..255 scale → YCbCr (chroma + 128), the same matrix in floating point."""
    ycc = torch.einsum("pc,bchw->bphw", _ycc_matrix(rgb), rgb)
    return ycc + torch.tensor([0.0, 128.0, 128.0], dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)


def _ycc_to_rgb(ycc: Tensor) -> Tensor:
    """The exact inverse of :func:`_rgb_to_ycc` (1.402, 0.34414, 0.71414, 1.772 to 5 digits, as jdcolor.c)."""
    centred = ycc - torch.tensor([0.0, 128.0, 128.0], dtype=ycc.dtype, device=ycc.device).view(1, 3, 1, 1)
    inverse = torch.linalg.inv(_ycc_matrix(ycc).double()).to(ycc.dtype)
    return torch.einsum("cp,bphw->bchw", inverse, centred)


def _samples(x: Tensor) -> Tensor:
    """[-1, 1] images → int64 8-bit samples, rounded and clipped as restore.io.to_array does."""
    return (((x.detach().double() + 1) / 2).clamp(0, 1) * 255).round().to(torch.int64)


def _ycc_float(x: Tensor) -> Tensor:
    """[-1, 1] images → YCbCr (or Y) planes on the 0..255 scale, floating point, no clipping."""
    levels = (x + 1) * 127.5
    return levels if x.shape[1] == 1 else _rgb_to_ycc(levels)


# ---------------------------------------------------------------------------------------------
# DCT


# libjpeg's jfdctint.c constants: round(c · 2¹³)
_CONST_BITS, _PASS1_BITS = 13, 2
_F0298, _F0390, _F0541, _F0765 = 2446, 3196, 4433, 6270
_F0899, _F1175, _F1501, _F1847 = 7373, 9633, 12299, 15137
_F1961, _F2053, _F2562, _F3072 = 16069, 16819, 20995, 25172


def _descale(v: Tensor, n: int) -> Tensor:
    return (v + (1 << (n - 1))) >> n


def _islow_pass(d: list[Tensor], first: bool) -> list[Tensor]:
    """One 1-D pass of libjpeg's accurate integer forward DCT (Loeffler–Ligtenberg–Moschytz)."""
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    out: list[Tensor] = [None] * 8  # type: ignore[list-item]
    if first:  # rows: keep PASS1_BITS extra bits of precision
        out[0], out[4] = (tmp10 + tmp11) << _PASS1_BITS, (tmp10 - tmp11) << _PASS1_BITS
        shift = _CONST_BITS - _PASS1_BITS
    else:  # columns: drop them again, leaving the output scaled by 8
        out[0], out[4] = _descale(tmp10 + tmp11, _PASS1_BITS), _descale(tmp10 - tmp11, _PASS1_BITS)
        shift = _CONST_BITS + _PASS1_BITS
    z1 = (tmp12 + tmp13) * _F0541
    out[2] = _descale(z1 + tmp13 * _F0765, shift)
    out[6] = _descale(z1 - tmp12 * _F1847, shift)
    z1, z2, z3, z4 = tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7
    z5 = (z3 + z4) * _F1175
    tmp4, tmp5, tmp6, tmp7 = tmp4 * _F0298, tmp5 * _F2053, tmp6 * _F3072, tmp7 * _F1501
    z1, z2 = z1 * -_F0899, z2 * -_F2562
    z3, z4 = z3 * -_F1961 + z5, z4 * -_F0390 + z5
    out[7] = _descale(tmp4 + z1 + z3, shift)
    out[5] = _descale(tmp5 + z2 + z4, shift)
    out[3] = _descale(tmp6 + z2 + z3, shift)
    out[1] = _descale(tmp7 + z1 + z4, shift)
    return out


def _fdct_islow(blocks: Tensor) -> Tensor:
    """libjpeg's JDCT_ISLOW on int64 blocks (..., 8, 8) of samples - 128: 8 × the orthonormal DCT, rounded."""
    rows = torch.stack(_islow_pass(list(blocks.unbind(-1)), first=True), dim=-1)
    return torch.stack(_islow_pass(list(rows.unbind(-2)), first=False), dim=-2)


def dct_matrix(dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """The orthonormal 8-point DCT-II matrix D (D Dᵀ = I): D[k, n] = α(k) cos((2n + 1) k π / 16)."""
    k = torch.arange(8, dtype=torch.float64)[:, None]
    n = torch.arange(8, dtype=torch.float64)[None, :]
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(dtype=dtype, device=device)


def _dct(blocks: Tensor) -> Tensor:
    d = dct_matrix(blocks.dtype, blocks.device)
    return d @ blocks @ d.T


def _idct(coefficients: Tensor) -> Tensor:
    d = dct_matrix(coefficients.dtype, coefficients.device)
    return d.T @ coefficients @ d


# ---------------------------------------------------------------------------------------------
# Encoder and decoder


def _check_image(x: Tensor, tables: JPEGTables) -> None:
    if x.dim() != 4 or x.shape[1] != tables.channels:
        kind = "grayscale (1 channel)" if tables.gray else "colour (3 channels)"
        raise OperatorError(f"jpeg: the tables are for {kind} images (B, C, H, W), got shape {tuple(x.shape)}")
    if x.is_complex():
        raise OperatorError("jpeg: images must be real")


def _quant(tables: JPEGTables | Tensor, like: Tensor) -> Tensor:
    """Tables as a (1 or B, P, 8, 8) tensor of ``like``'s device (per-image tables come as a tensor)."""
    quant = tables.quant()[None] if isinstance(tables, JPEGTables) else tables
    return quant.to(device=like.device)


def _encode(x: Tensor, tables: JPEGTables, quant: Tensor) -> list[Tensor]:
    samples = _samples(x)
    ycc = samples if tables.gray else _rgb_to_ycc_exact(samples)
    out = []
    for p, plane in enumerate(_planes(ycc, tables, exact=True)):
        t = _fdct_islow(_to_blocks(plane) - 128)
        q8 = 8 * quant[:, p].to(torch.int64)[:, None, None]  # islow's output is scaled by 8
        out.append((torch.sign(t) * ((t.abs() + q8 // 2) // q8)).to(torch.int32))
    return out


def encode(x: Tensor, tables: JPEGTables) -> list[Tensor]:
    """libjpeg's quantised coefficients of images x (B, C, H, W) in [-1, 1]: int32 (B, R, C, 8, 8) per plane.

    Bit-identical to what libjpeg-turbo (Pillow) writes for the 8-bit image
    round((x + 1) / 2 · 255) with these tables (see the module docstring). Not differentiable:
    :meth:`JPEG.A` is.
    """
    _check_image(x, tables)
    with torch.no_grad():
        return _encode(x, tables, _quant(tables, x))


def dct_planes(x: Tensor, tables: JPEGTables) -> list[Tensor]:
    """The unquantised orthonormal block DCT of x's padded YCbCr planes, floating point and differentiable.

    The floating-point twin of :func:`encode` without any rounding or clipping (plain means for
    the subsampling): (B, R, C, 8, 8) per plane, on the scale of dequantised coefficients.
    """
    _check_image(x, tables)
    return [_dct(_to_blocks(p) - 128) for p in _planes(_ycc_float(x), tables, exact=False)]


def dequantise(coefficients: list[Tensor], tables: JPEGTables | Tensor, dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """q · Q per plane, as floating point (what a decoder feeds to its IDCT)."""
    quant = _quant(tables, coefficients[0])
    return [c.to(dtype) * quant[:, p].to(dtype)[:, None, None] for p, c in enumerate(coefficients)]


def _upsample_fancy(plane: Tensor, factor: int, dim: int, size: int) -> Tensor:
    """libjpeg's "fancy" upsampling by 2 along ``dim``: each output is 3/4 of its nearer, 1/4 of its farther input."""
    if factor == 1:
        return plane.narrow(dim, 0, size)
    n = plane.shape[dim]
    prev = plane.index_select(dim, (torch.arange(n, device=plane.device) - 1).clamp_(min=0))
    nxt = plane.index_select(dim, (torch.arange(n, device=plane.device) + 1).clamp_(max=n - 1))
    even, odd = 0.75 * plane + 0.25 * prev, 0.75 * plane + 0.25 * nxt
    both = torch.stack([even, odd], dim=dim + 1)
    shape = list(plane.shape)
    shape[dim] = 2 * n
    return both.reshape(shape).narrow(dim, 0, size)


def _decode(planes: list[Tensor], tables: JPEGTables, size: tuple[int, int]) -> Tensor:
    """Dequantised planes → images in [-1, 1] (floating point)."""
    height, width = size
    h, v = tables.factors
    # libjpeg range-limits the IDCT output to 0..255 before upsampling and colour conversion.
    samples = [(_from_blocks(_idct(c)) + 128).clamp(0, 255) for c in planes]
    channels = [samples[0][:, :height, :width]]
    for plane in samples[1:]:
        # libjpeg upsamples from the component's real samples, edges replicated (jdsample.c).
        low = plane[:, : math.ceil(height / v), : math.ceil(width / h)]
        channels.append(_upsample_fancy(_upsample_fancy(low, v, 1, height), h, 2, width))
    ycc = torch.stack(channels, dim=1)
    levels = ycc if tables.gray else _ycc_to_rgb(ycc)
    return levels.clamp(0, 255) / 127.5 - 1


def _check_planes(coefficients: list[Tensor], tables: JPEGTables, size: tuple[int, int]) -> None:
    expected = plane_blocks(tables, *size)
    got = [tuple(c.shape[1:3]) for c in coefficients]
    if len(coefficients) != len(expected) or got != expected or any(c.shape[-2:] != (8, 8) for c in coefficients):
        raise OperatorError(f"jpeg: coefficients for a {size[0]}x{size[1]} image need planes of {expected} blocks, got {got}")


def decode(coefficients: list[Tensor], tables: JPEGTables, size: tuple[int, int], dtype: torch.dtype = torch.float32) -> Tensor:
    """Quantised coefficients → images (B, C, H, W) in [-1, 1]: the floating-point JPEG decoder.

    Dequantise, orthonormal IDCT, + 128 and clip to 0..255 (libjpeg's range limit), fancy chroma
    upsampling (libjpeg's triangle filter), YCbCr → RGB, crop to ``size`` = (H, W), clip to
    0..255. Within 1 to 3 levels of libjpeg's integer decoder (the tests measure it).
    """
    size = (int(size[0]), int(size[1]))
    _check_planes(coefficients, tables, size)
    return _decode(dequantise(coefficients, tables, dtype), tables, size)


# ---------------------------------------------------------------------------------------------
# Projection onto the quantisation constraint set


def _bins(coefficients: list[Tensor], quant: Tensor, margin: float, dtype) -> list[tuple[Tensor, Tensor]]:
    bins = []
    for p, c in enumerate(coefficients):
        q = quant[:, p].to(dtype)[:, None, None]
        centre = c.to(dtype) * q
        bins.append((centre - (0.5 - margin) * q, centre + (0.5 - margin) * q))
    return bins


def quantisation_projection(
    x: Tensor, coefficients: list[Tensor], tables: JPEGTables, *,
    margin: float = 0.0, tol: float = 1e-3, max_iter: int = 1000,
) -> tuple[Tensor, Tensor]:
    """Project x onto the images whose DCT coefficients lie in the bins [(q - ½)Q, (q + ½)Q] of ``coefficients``.

    Returns (image, moved): the projected images (B, C, H, W), not clipped, and per image the
    number of coefficients that were more than ``tol`` outside their bins (int64, (B,)); ``tol``
    is on the DCT scale (dequantised coefficients, 0..255 samples). ``margin`` in [0, ½)
    shrinks every bin to [(q - ½ + margin)Q, (q + ½ - margin)Q].

    The coefficients are those of :func:`dct_planes` (floating point, libjpeg's edge
    replication); the projection is Euclidean in YCbCr on the 0..255 scale (not in RGB: the
    colour matrix is not orthogonal), where the planes are independent and so are the MCUs.
    In YCbCr each plane's block DCT is orthonormal, so clipping the coefficients projects the
    plane; a subsampled chroma plane S c (S the 2 × 2 or 2 × 1 mean, S Sᵀ = I / 4 or I / 2) is
    projected as c + Sᵀ(S Sᵀ)⁻¹(P(S c) - S c): each chroma pixel gets the correction of its
    subsampled sample. That one step is exact for every MCU the padding does not reach, so for
    an image of whole MCUs (8 × 8; 16 × 16 for 4:2:0, 16 wide × 8 high for 4:2:2) it is the
    whole projection.

    In the last, partial MCU row and column the padding replicates edge pixels into the
    blocks, which ties coefficients together: there each MCU is projected exactly by solving
    its small quadratic programme (min ‖u - u₀‖² s.t. L u in the bins, L the MCU's dense
    pixels-to-coefficients map) with ADMM, to ``tol`` on the DCT scale, at most ``max_iter``
    iterations. With ``margin`` > 0 an edge MCU's constraints can be infeasible; it then gets
    ADMM's compromise after ``max_iter`` iterations.

    Re-encoding the result with :func:`encode` is exact only up to what the floating-point
    model leaves out: rounding to 8 bits and clipping to 0..255, libjpeg's fixed-point colour
    transform and biased subsampling, and its integer DCT; coefficients the projection left on
    a bin edge can land on either side (``margin`` keeps them away from the edges).
    """
    _check_image(x, tables)
    height, width = x.shape[-2:]
    _check_planes(coefficients, tables, (height, width))
    if not 0.0 <= margin < 0.5:
        raise OperatorError(f"jpeg: the projection margin must be in [0, 0.5), got {margin}")
    quant = _quant(tables, x).to(x.dtype)
    bins = _bins(coefficients, quant, margin, x.dtype)
    ycc = _ycc_float(x)
    delta, moved = _clip_step(ycc, bins, tables, tol)
    out = ycc + delta
    h, v = tables.factors
    mcu_h, mcu_w = 8 * v, 8 * h
    top, left = height - height % mcu_h, width - width % mcu_w  # where partial MCUs start
    edges = [(top, height, 0, left, height - top, mcu_w),  # bottom MCU row
             (0, top, left, width, mcu_h, width - left),  # right MCU column
             (top, height, left, width, height - top, width - left)]  # corner
    for r0, r1, c0, c1, th, tw in edges:
        if r1 <= r0 or c1 <= c0:
            continue
        tiles = _tiles(ycc, r0, r1, c0, c1, th, tw)
        lo, hi = [], []
        for p, (plo, phi) in enumerate(bins):
            fv, fh = (1, 1) if p == 0 else (v, h)
            cut = (r0 // (8 * fv), math.ceil(r1 / (8 * fv)), c0 // (8 * fh), math.ceil(c1 / (8 * fh)),
                   math.ceil(th / (8 * fv)), math.ceil(tw / (8 * fh)))
            lo.append(_block_tiles(plo, *cut))
            hi.append(_block_tiles(phi, *cut))
        projected = _project_tiles(tiles, lo, hi, tables, tol, max_iter)
        out[..., r0:r1, c0:c1] = _untile(projected, x.shape[0], (r1 - r0) // th, (c1 - c0) // tw)
    image = out if tables.gray else _ycc_to_rgb(out)
    return image / 127.5 - 1, moved


def _clip_step(ycc: Tensor, bins, tables: JPEGTables, tol: float) -> tuple[Tensor, Tensor]:
    """(correction of ycc clipping every coefficient into its bin, count per image of those more than tol outside)."""
    height, width = ycc.shape[-2:]
    h, v = tables.factors
    corrections, outside = [], torch.zeros(ycc.shape[0], dtype=torch.int64, device=ycc.device)
    for p, plane in enumerate(_planes(ycc, tables, exact=False)):
        c = _dct(_to_blocks(plane) - 128)
        lo, hi = bins[p]
        outside += ((c < lo - tol) | (c > hi + tol)).flatten(1).sum(dim=1)
        delta = _from_blocks(_idct(torch.minimum(torch.maximum(c, lo), hi) - c))
        if p > 0 and (h, v) != (1, 1):
            # Each full-resolution chroma pixel takes the correction of its subsampled sample.
            delta = delta[:, : math.ceil(height / v)].repeat_interleave(v, dim=1).repeat_interleave(h, dim=2)
        corrections.append(delta[:, :height, :width])
    return torch.stack(corrections, dim=1), outside


def _tiles(t: Tensor, r0: int, r1: int, c0: int, c1: int, th: int, tw: int) -> Tensor:
    """(B, P, H, W) → (B·n, P, th, tw): the th × tw tiles of t[..., r0:r1, c0:c1], raster order per image."""
    part = t[..., r0:r1, c0:c1]
    b, p = part.shape[:2]
    nr, nc = (r1 - r0) // th, (c1 - c0) // tw
    return part.reshape(b, p, nr, th, nc, tw).permute(0, 2, 4, 1, 3, 5).reshape(b * nr * nc, p, th, tw)


def _untile(tiles: Tensor, batch: int, nr: int, nc: int) -> Tensor:
    """The inverse of :func:`_tiles`: (B·n, P, th, tw) → (B, P, nr·th, nc·tw)."""
    _, p, th, tw = tiles.shape
    return tiles.reshape(batch, nr, nc, p, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(batch, p, nr * th, nc * tw)


def _block_tiles(blocks: Tensor, r0: int, r1: int, c0: int, c1: int, th: int, tw: int) -> Tensor:
    """The same tiling on a block grid (1 or B, R, C, 8, 8) → (B·n, th, tw, 8, 8)."""
    grid = blocks.permute(0, 3, 4, 1, 2)  # (B, 8, 8, R, C)
    tiles = _tiles(grid.reshape(grid.shape[0], 64, *grid.shape[3:]), r0, r1, c0, c1, th, tw)
    return tiles.reshape(-1, 8, 8, th, tw).permute(0, 3, 4, 1, 2)


#: ADMM penalty and over-relaxation of the edge-MCU projection (tuned on 81 cases: mean ~180 iterations to 1e-4)
ADMM_RHO, ADMM_ALPHA = 3.0, 1.6


def _project_tiles(u0: Tensor, lo: list[Tensor], hi: list[Tensor], tables: JPEGTables, tol: float, max_iter: int) -> Tensor:
    """Exact projection of small YCbCr images (N, P, th, tw), each one MCU, onto their bins: ADMM per plane.

    min ½‖u - u₀‖² s.t. lo ≤ L u + o ≤ hi, with L (m × n) the linear map from the plane's
    pixels to its coefficients (built by pushing the unit images through the pipeline) and o
    the DCT of the -128 level shift. Over-relaxed ADMM on the split z = L u (Boyd et al. 2011,
    §3.4.3): u ← (I + ρLᵀL)⁻¹(u₀ + ρLᵀ(z - w)), r = α L u + (1 - α) z, z ← clip(r + w),
    w ← w + r - z; it stops when the primal and dual residuals are below ``tol``. A feasible u₀
    comes back unchanged after one iteration.
    """
    n_tiles, planes, th, tw = u0.shape
    n = th * tw
    rho, alpha = ADMM_RHO, ADMM_ALPHA
    out = torch.empty_like(u0)
    eye = torch.eye(n, dtype=u0.dtype, device=u0.device)
    for p in range(planes):
        if p < 2:  # Cr has Cb's map
            probe = u0.new_zeros(n, planes, th, tw)
            probe[:, p] = eye.reshape(n, th, tw)
            lmap = _dct(_to_blocks(_planes(probe, tables, exact=False)[p])).reshape(n, -1).T  # (m, n)
            offset = _dct(u0.new_full((lmap.shape[0] // 64, 8, 8), -128.0)).flatten()
            inverse = torch.linalg.inv(eye + rho * lmap.T @ lmap)
        low = lo[p].reshape(n_tiles, -1) - offset
        high = hi[p].reshape(n_tiles, -1) - offset
        target = u0[:, p].reshape(n_tiles, n)
        z = torch.minimum(torch.maximum(target @ lmap.T, low), high)
        w = torch.zeros_like(z)
        u = target
        for it in range(max_iter):
            u = (target + rho * (z - w) @ lmap) @ inverse
            lu = u @ lmap.T
            z_old = z
            relaxed = alpha * lu + (1 - alpha) * z
            z = torch.minimum(torch.maximum(relaxed + w, low), high)
            w = w + relaxed - z
            if it % 10 == 0 or it == max_iter - 1:  # a host sync: not every iteration
                residual = torch.maximum((lu - z).abs().max(), (rho * (z - z_old) @ lmap).abs().max())
                if float(residual) <= tol:
                    break
        out[:, p] = u.reshape(n_tiles, th, tw)
    return out


# ---------------------------------------------------------------------------------------------
# The operator


def _spec_for(tables: JPEGTables) -> str:
    """``jpeg:quality=Q[:subsampling=S]`` if the tables are IJG tables at some quality, else ``jpeg:tables``."""
    for quality in range(1, 101):
        if JPEGTables.standard(quality, tables.subsampling, tables.gray) == tables:
            return _quality_spec(quality, tables)
    return TABLES_SPEC


def _quality_spec(quality: int, tables: JPEGTables) -> str:
    spec = f"jpeg:quality={quality}"
    return spec if tables.gray else spec + ":subsampling=" + tables.subsampling.replace(":", "")


@register
class JPEG(NonlinearOperator):
    """y = Q ⊙ round(D P(x) / Q) flattened: the dequantised coefficients libjpeg would store for x.

    ``y`` is (B, N) with N = 64 × the number of blocks of all planes, plane after plane (Y, Cb,
    Cr), blocks in raster order, each block's 64 coefficients in natural order
    (:meth:`unpack` gives the planes back). ``A`` is exact in value and straight-through in
    gradient, ``A_exact`` is the exact value alone, ``pinv`` the floating-point decoder.
    """

    name: ClassVar[str] = "jpeg"

    def __init__(self, tables: JPEGTables, in_shape: tuple[int, int, int], spec: str | None = None) -> None:
        super().__init__(spec or _spec_for(tables), in_shape)
        c, height, width = self.in_shape
        if c != tables.channels:
            kind = "grayscale (1 channel)" if tables.gray else "colour (3 channels)"
            raise OperatorError(f"jpeg: the tables are for {kind} images, but the images have {c} channels")
        if height < 1 or width < 1 or height > 65535 or width > 65535:
            raise OperatorError(f"jpeg: image size {height}x{width} is outside 1..65535")
        #: tables of the first image (a stacked operator holds every image's in ``quant``)
        self.tables = tables
        #: (block rows, block columns) per plane
        self.blocks = plane_blocks(tables, height, width)
        # (1 or B, P, 8, 8); integer, so that .half() or .double() on the module leaves it exact
        self.register_buffer("quant", tables.quant()[None].to(torch.int32))

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> JPEG:
        if re.search(r"subsampling=\d:\d", args):
            raise OperatorError("jpeg: write the subsampling without colons in specs (420, 422 or 444; ':' separates fields)")
        positional, keywords = parse_args(args)
        if positional:
            raise OperatorError(f"jpeg takes quality=Q[:subsampling=420] or file=PATH (e.g. 'jpeg:quality=75'), got '{args}'")
        check_keywords("jpeg", keywords, ("quality", "subsampling", "file"))
        gray = int(in_shape[0]) == 1
        if "file" in keywords:
            if "quality" in keywords or "subsampling" in keywords:
                raise OperatorError("jpeg: file= sets the tables and subsampling; "
                                    "do not combine it with quality= or subsampling=")
            tables = JPEGTables.from_file(keywords["file"])
            return cls(tables, in_shape, f"jpeg:file={keywords['file']}")
        if "quality" not in keywords:
            raise OperatorError(f"jpeg needs quality=Q (1..100) or file=PATH, got '{args}'")
        quality = read_integer(keywords["quality"], "jpeg: quality", minimum=1, maximum=100)
        subsampling = keywords.get("subsampling", "420")
        if subsampling not in SPEC_SUBSAMPLING:
            raise OperatorError(f"jpeg: subsampling must be 444, 422 or 420 in specs, got '{subsampling}'")
        tables = JPEGTables.standard(quality, subsampling, gray)
        return cls(tables, in_shape, _quality_spec(quality, tables))

    @classmethod
    def stack(cls, ops: list[JPEG]) -> JPEG:
        """One operator applying ``ops[b]``'s tables to image b (same image shape and subsampling)."""
        if ops and all(isinstance(op, JPEG) for op in ops):
            first = ops[0]
            if any(op.in_shape != first.in_shape or op.tables.subsampling != first.tables.subsampling for op in ops):
                raise OperatorError("jpeg: only operators with one image shape and one subsampling can be stacked: "
                                    + ", ".join(op.spec for op in ops))
        return super().stack(ops)

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.in_shape:
            raise OperatorError(f"jpeg: operator built for images {self.in_shape}, got {tuple(x.shape[1:])}")

    def pack(self, planes: list[Tensor]) -> Tensor:
        """Per-plane (B, R, C, 8, 8) → (B, N), the layout of y."""
        return torch.cat([p.flatten(1) for p in planes], dim=1)

    def unpack(self, y: Tensor) -> list[Tensor]:
        """(B, N) → per-plane (B, R, C, 8, 8)."""
        sizes = [64 * r * c for r, c in self.blocks]
        if y.dim() != 2 or y.shape[1] != sum(sizes):
            raise OperatorError(f"jpeg: measurements for {self.in_shape} have shape (B, {sum(sizes)}), got {tuple(y.shape)}")
        return [part.reshape(y.shape[0], r, c, 8, 8) for part, (r, c) in zip(y.split(sizes, dim=1), self.blocks)]

    def measurement(self, coefficients: list[Tensor], dtype: torch.dtype = torch.float32) -> Tensor:
        """y for quantised coefficients (e.g. from :func:`read_coefficients`): their dequantised values, packed."""
        _check_planes(coefficients, self.tables, self.in_shape[1:])
        return self.pack(dequantise(coefficients, self.quant, dtype))

    def coefficients(self, y: Tensor) -> list[Tensor]:
        """The quantised coefficients (int32 planes) of a measurement y: round(y / Q)."""
        quant = self.quant.to(device=y.device, dtype=y.dtype)
        return [(p / quant[:, i][:, None, None]).round().to(torch.int32) for i, p in enumerate(self.unpack(y))]

    def A_exact(self, x: Tensor) -> Tensor:
        """The exact measurement (libjpeg's q · Q), x's dtype; no gradient."""
        self._check(x)
        with torch.no_grad():
            return self.pack(dequantise(_encode(x, self.tables, _quant(self.quant, x)), self.quant.to(x.device), x.dtype))

    def A(self, x: Tensor) -> Tensor:
        """The exact value of :meth:`A_exact` with the gradient of the unrounded linear model (straight-through)."""
        self._check(x)
        smooth = self.pack(dct_planes(x, self.tables))
        return smooth + (self.A_exact(x) - smooth).detach()

    has_prox: ClassVar[bool] = True
    has_decoder: ClassVar[bool] = True

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor = 0.0, *, tol: float = 1e-3, max_iter: int = 1000) -> Tensor:
        """The data-consistency step of plug-and-play samplers: z projected onto the images y's coefficients allow
        (each in its quantisation bin). A JPEG's measurement is exact up to its rounding, so this is the limit
        ρ → 0 of argmin ‖y - A x‖² + ρ ‖x - z‖² over that set: ``rho`` is not used."""
        projected, _ = quantisation_projection(z, self.coefficients(y.to(z.dtype)), self.tables, tol=tol, max_iter=max_iter)
        return projected

    def picture(self, y: Tensor) -> Tensor:
        """The decoded file."""
        return self.pinv(y)

    def pinv(self, y: Tensor) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] decoded from y: :func:`decode` of the dequantised coefficients."""
        dtype = y.dtype if y.is_floating_point() else torch.float32
        return _decode([p.to(dtype) for p in self.unpack(y)], self.tables, self.in_shape[1:])

    @classmethod
    def from_jpeg_file(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[JPEG, Tensor]:
        """The operator of a JPEG file (its tables and image shape) and its measurement y (1, N), read exactly."""
        tables, coefficients, (height, width) = read_coefficients(path)
        op = cls(tables, (tables.channels, height, width), f"jpeg:file={path}")
        return op, op.measurement(coefficients, dtype)


# ---------------------------------------------------------------------------------------------
# Reading the coefficients of a file: a baseline Huffman decoder (Pillow does not expose them)


_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # the end of entropy-coded data
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


def _huffman_lookup(counts: bytes, symbols: bytes) -> list[int]:
    """A 16-bit lookup table: entry = (code length << 8) | symbol for every 16-bit window starting with a code."""
    lut = [0] * 65536
    code, k = 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            lo = code << (16 - length)
            lut[lo : lo + (1 << (16 - length))] = [(length << 8) | symbols[k]] * (1 << (16 - length))
            code, k = code + 1, k + 1
        code <<= 1
    return lut


def read_coefficients(path: str | Path) -> tuple[JPEGTables, list[Tensor], tuple[int, int]]:
    """(tables, quantised coefficients, (H, W)) of a baseline JPEG file, exactly as stored.

    The coefficients are int32 planes (1, R, C, 8, 8) in natural order, laid out as
    :func:`encode` returns them (dummy MCU blocks dropped). The tables come from
    :meth:`JPEGTables.from_file`, which refuses what this model cannot describe. Pure Python:
    0.17 s for a 512 × 512 noise image at quality 90, 0.06 s for a smooth one at 75.
    """
    tables = JPEGTables.from_file(path)
    data = Path(path).read_bytes()
    frame = _frame_header(data, path)
    height, width, comps = frame["height"], frame["width"], frame["components"]
    if height == 0:
        raise OperatorError(f"jpeg: '{path}' defines its height after the first scan (DNL), which is not supported")
    hmax, vmax = max(c[1] for c in comps), max(c[2] for c in comps)
    dims = [(math.ceil(math.ceil(height * v / vmax) / 8), math.ceil(math.ceil(width * h / hmax) / 8)) for _, h, v, _ in comps]
    planes = [[0] * (64 * r * c) for r, c in dims]
    index = {c[0]: k for k, c in enumerate(comps)}
    dc_tables: dict[int, list[int]] = {}
    ac_tables: dict[int, list[int]] = {}
    restart, seen = 0, set()
    pos = 2
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        if data[pos] != 0xFF or marker == 0xD9:
            break
        if marker == 0xFF:
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        seg = data[pos + 4 : pos + 2 + length]
        pos += 2 + length
        if marker == 0xC4:  # DHT: one or more tables
            k = 0
            while k < len(seg):
                kind, ident, counts = seg[k] >> 4, seg[k] & 15, seg[k + 1 : k + 17]
                symbols = seg[k + 17 : k + 17 + sum(counts)]
                (ac_tables if kind else dc_tables)[ident] = _huffman_lookup(counts, symbols)
                k += 17 + sum(counts)
        elif marker == 0xDD:  # DRI
            restart = int.from_bytes(seg[:2], "big")
        elif marker == 0xDA:  # SOS, then entropy-coded data up to the next marker
            scan = [(index[seg[1 + 2 * k]], seg[2 + 2 * k] >> 4, seg[2 + 2 * k] & 15) for k in range(seg[0])]
            end = _MARKER.search(data, pos)
            stop = end.start() if end else len(data)
            pieces = [p.replace(b"\xff\x00", b"\xff") + b"\xff\xff\xff\xff" for p in _RESTART.split(data[pos:stop])]
            try:
                _decode_scan(pieces, scan, comps, dims, planes, dc_tables, ac_tables, restart, height, width, hmax, vmax)
            except (IndexError, KeyError, ValueError) as err:
                raise OperatorError(f"jpeg: '{path}' has damaged entropy-coded data ({err})") from None
            seen.update(c for c, _, _ in scan)
            pos = stop
    if len(seen) != len(comps):
        raise OperatorError(f"jpeg: '{path}' ends before every component was coded")
    out = [torch.tensor(p, dtype=torch.int32).reshape(1, r, c, 8, 8) for p, (r, c) in zip(planes, dims)]
    return tables, out, (height, width)


def _decode_scan(pieces, scan, comps, dims, planes, dc_tables, ac_tables, restart, height, width, hmax, vmax) -> None:
    """Huffman-decode one sequential scan into ``planes`` (flat lists of natural-order coefficients)."""
    if len(scan) == 1:  # non-interleaved: the component's own blocks, raster order
        ci = scan[0][0]
        rows, cols = dims[ci]
        units = [[(ci, r, c)] for r in range(rows) for c in range(cols)]
    else:  # interleaved: MCUs of h × v blocks per component; blocks past the plane are dummies
        mcu_rows, mcu_cols = math.ceil(height / (8 * vmax)), math.ceil(width / (8 * hmax))
        units = []
        for mr in range(mcu_rows):
            for mc in range(mcu_cols):
                unit = []
                for ci, _, _ in scan:
                    h, v = comps[ci][1], comps[ci][2]
                    unit += [(ci, mr * v + by, mc * h + bx) for by in range(v) for bx in range(h)]
                units.append(unit)
    coding = {ci: (dc_tables[td], ac_tables[ta]) for ci, td, ta in scan}
    zigzag = ZIGZAG
    piece, buf, bit = 0, pieces[0], 0
    pred = dict.fromkeys(coding, 0)
    for n, unit in enumerate(units):
        if restart and n and n % restart == 0:  # a restart marker: byte-aligned, predictors reset
            piece += 1
            buf, bit = pieces[piece], 0
            pred = dict.fromkeys(coding, 0)
        for ci, r, c in unit:
            dc, ac = coding[ci]
            block = [0] * 64
            i = bit >> 3
            entry = dc[(((buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]) >> (8 - (bit & 7))) & 0xFFFF]
            if not entry:
                raise ValueError("invalid Huffman code")
            bit += entry >> 8
            size = entry & 255
            if size:
                i = bit >> 3
                value = ((((buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]) >> (8 - (bit & 7))) & 0xFFFF) >> (16 - size)
                bit += size
                pred[ci] += value - (1 << size) + 1 if value < 1 << (size - 1) else value
            block[0] = pred[ci]
            k = 1
            while k < 64:
                i = bit >> 3
                entry = ac[(((buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]) >> (8 - (bit & 7))) & 0xFFFF]
                if not entry:
                    raise ValueError("invalid Huffman code")
                bit += entry >> 8
                run, size = (entry >> 4) & 15, entry & 15
                if size:
                    k += run
                    i = bit >> 3
                    value = ((((buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]) >> (8 - (bit & 7))) & 0xFFFF) >> (16 - size)
                    bit += size
                    block[zigzag[k]] = value - (1 << size) + 1 if value < 1 << (size - 1) else value
                    k += 1
                elif run == 15:  # ZRL: sixteen zeros
                    k += 16
                else:  # EOB
                    break
            rows, cols = dims[ci]
            if r < rows and c < cols:
                start = 64 * (r * cols + c)
                planes[ci][start : start + 64] = block
