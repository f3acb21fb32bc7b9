"""Super-resolution: downsampling an image by an integer factor F (2 to 8).

The measurement is y = A x with y of shape (B, C, H/F, W/F). Every kernel here is
separable, so per channel A = A_h ⊗ A_w: the image X (H × W) is mapped to
A_h X A_wᵀ with small 1-D resampling matrices A_h (H/F × H) and A_w (W/F × W).

Kernels (registered spec names, argument = the factor F):

* ``bicubic:F`` — bicubic with antialiasing exactly as MATLAB's ``imresize(x, 1/F)``
  computes it, the convention of super-resolution benchmarks and of DDRM
  (Kawar et al., "Denoising Diffusion Restoration Models", NeurIPS 2022): Keys'
  cubic kernel with a = -0.5 (R. Keys, IEEE TASSP 1981) stretched by F (support
  4F input pixels), output pixel i centred at (i + 0.5)·F - 0.5 in input
  coordinates, weights normalised to sum 1, and input indices outside the
  image mirrored (symmetric padding, the edge pixel repeated) with their weights
  folded onto the mirrored pixels. PyTorch's and PIL's antialiased bicubic use
  the same kernel but renormalise the weights at the border instead of
  mirroring, so they agree with this operator only on interior pixels (those
  whose 4F-tap support lies inside the image: output rows/columns 2 .. H/F - 3).
* ``avgpool:F`` — the mean of each F × F block (``avg_pool2d(x, F)``); this is
  also MATLAB's ``imresize(x, 1/F, 'box')``.
* ``nearest:F`` — keeps one pixel per F × F block: as MATLAB's
  ``imresize(x, 1/F, 'nearest')``, the input pixel containing the output pixel
  centre, index floor((i + 0.5)·F) = i·F + floor(F/2) (the lower-right of the two
  middle pixels when F is even), i.e. ``x[..., F//2::F, F//2::F]``.

SVD: with A_h = U_h S_h V_hᵀ and A_w = U_w S_w V_wᵀ (full V_h: H × H, V_w: W × W),
A = (U_h ⊗ U_w)(S_h ⊗ S_w)(V_h ⊗ V_w)ᵀ per channel, so the singular values are
the products s_h[i]·s_w[j]. ``Vt(x)`` computes Z = V_hᵀ X V_w per channel
(C × H × W) and returns, flattened in this order, Z[:, :H/F, :W/F] (the
C·(H/F)·(W/F) coefficients paired with the singular values, in the order of
``singular_values()`` and ``Ut``), then Z[:, :H/F, W/F:] and Z[:, H/F:, :] (the
null space). Buffers are stored in float64 (they are small) and cast to the
input's dtype on the fly; ``.to(torch.float32)`` converts them once.

:func:`bicubic_upsample` is the classical super-resolution baseline, MATLAB's
``imresize(y, F)``, and :func:`resize_matrix` builds the 1-D matrices of both.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import torch
from torch import Tensor

from operators.base import LinearOperator, SVDOperator
from operators.errors import OperatorError
from operators.registry import parse_args, read_integer, register

#: allowed downsampling factors
MIN_FACTOR, MAX_FACTOR = 2, 8


def cubic_kernel(t: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), support [-2, 2]."""
    a = t.abs()
    inner = (1.5 * a - 2.5) * a * a + 1.0
    outer = ((-0.5 * a + 2.5) * a - 4.0) * a + 2.0
    return torch.where(a <= 1, inner, torch.where(a <= 2, outer, torch.zeros_like(a)))


def box_kernel(t: Tensor) -> Tensor:
    """The box kernel 1 on [-0.5, 0.5) (MATLAB's ``box``, half-open so that ties pick one pixel)."""
    return ((t >= -0.5) & (t < 0.5)).to(t.dtype)


#: kernel name -> (kernel function, width of its support in input pixels at scale 1)
KERNELS: dict[str, tuple[Callable[[Tensor], Tensor], float]] = {
    "cubic": (cubic_kernel, 4.0),
    "box": (box_kernel, 1.0),
}


def resize_matrix(in_length: int, out_length: int, kernel: str = "cubic", antialias: bool = True) -> Tensor:
    """The float64 (out_length × in_length) 1-D matrix of MATLAB ``imresize`` along one axis.

    Follows MATLAB's ``contributions`` with scale = out_length / in_length:
    output pixel i (0-based) sits at u = (i + 0.5) / scale - 0.5 in input
    coordinates; when shrinking with ``antialias`` the kernel is stretched by
    1/scale; the weights of the ceil(width) + 2 taps around u are normalised to
    sum 1, and taps outside [0, in_length) are mirrored (symmetric padding) and
    added to their mirror pixel. The lengths are integers rather than a scale so
    that integer factors are exact in floating point.
    """
    if kernel not in KERNELS:
        raise OperatorError(f"unknown resampling kernel '{kernel}'; known: {', '.join(sorted(KERNELS))}")
    func, width = KERNELS[kernel]
    stretch = in_length / out_length if (out_length < in_length and antialias) else 1.0
    width *= stretch

    u = (torch.arange(out_length, dtype=torch.float64) + 0.5) * in_length / out_length - 0.5
    left = torch.floor(u - width / 2)
    taps = left[:, None] + torch.arange(math.ceil(width) + 2, dtype=torch.float64)
    weights = func((u[:, None] - taps) / stretch)
    weights = weights / weights.sum(dim=1, keepdim=True)

    # Symmetric mirroring with period 2N: -1 -> 0, -2 -> 1, N -> N-1, ... (MATLAB's aux indexing).
    period = 2 * in_length
    index = taps.long() % period
    index = torch.where(index < in_length, index, period - 1 - index)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, index, weights)
    return matrix


def bicubic_upsample(y: Tensor, factor: int) -> Tensor:
    """Upsample (B, C, h, w) by the integer ``factor`` as MATLAB ``imresize(y, factor)`` (bicubic, a = -0.5)."""
    factor = _check_factor(factor)
    a_h = resize_matrix(y.shape[-2], y.shape[-2] * factor).to(dtype=y.dtype, device=y.device)
    a_w = resize_matrix(y.shape[-1], y.shape[-1] * factor).to(dtype=y.dtype, device=y.device)
    return a_h @ y @ a_w.mT


def _check_factor(factor) -> int:
    """The factor as an int, or OperatorError if it is not an integer in [MIN_FACTOR, MAX_FACTOR]."""
    return read_integer(factor, "resize factor", minimum=MIN_FACTOR, maximum=MAX_FACTOR)


class SeparableDownsample(SVDOperator):
    """Downsampling by an integer factor with a separable kernel, y = A_h X A_wᵀ per channel."""

    #: MATLAB kernel name and whether it is stretched for antialiasing (set by subclasses)
    kernel: ClassVar[str] = ""
    antialias: ClassVar[bool] = True

    def __init__(self, factor: int, in_shape: tuple[int, int, int]) -> None:
        factor = _check_factor(factor)
        super().__init__(f"{self.name}:{factor}", in_shape)
        c, h, w = self.in_shape
        if h % factor or w % factor:
            raise OperatorError(f"{self.name}: image size {h}x{w} is not divisible by the factor {factor}")
        self.factor = factor
        self.out_shape = (c, h // factor, w // factor)

        # A leading batch dim of 1 on every buffer so that stacked operators hold one set per image.
        a_h = resize_matrix(h, h // factor, self.kernel, self.antialias)
        a_w = resize_matrix(w, w // factor, self.kernel, self.antialias)
        u_h, s_h, vt_h = torch.linalg.svd(a_h, full_matrices=True)
        u_w, s_w, vt_w = torch.linalg.svd(a_w, full_matrices=True)
        singular = (s_h[:, None] * s_w[None, :]).flatten().repeat(c)
        buffers = {
            "a_h": a_h,
            "a_w": a_w,
            "pinv_h": torch.linalg.pinv(a_h),
            "pinv_w": torch.linalg.pinv(a_w),
            "u_h": u_h,
            "u_w": u_w,
            "vt_h": vt_h,
            "vt_w": vt_w,
            "singular": singular,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.unsqueeze(0))

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> SeparableDownsample:
        positional, keywords = parse_args(args)
        if len(positional) != 1 or keywords:
            raise OperatorError(
                f"{cls.name} takes exactly one argument, the factor (e.g. '{cls.name}:4'), got '{args}'"
            )
        return cls(positional[0], in_shape)

    def _sandwich(self, left: Tensor, x: Tensor, right: Tensor) -> Tensor:
        """left @ X @ right on every channel X of x; the (1 or B, ., .) matrices are cast to x's dtype and device."""
        left = left.to(dtype=x.dtype, device=x.device).unsqueeze(1)
        right = right.to(dtype=x.dtype, device=x.device).unsqueeze(1)
        return left @ x @ right

    def A(self, x: Tensor) -> Tensor:
        return self._sandwich(self.a_h, x, self.a_w.mT)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self._sandwich(self.a_h.mT, y, self.a_w)

    def A_pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> Tensor:
        """A⁺ y = A_h⁺ Y A_w⁺ᵀ: the pseudo-inverse of a Kronecker product is the product of pseudo-inverses."""
        return self._sandwich(self.pinv_h, y, self.pinv_w.mT)

    def singular_values(self) -> Tensor:
        return self.singular

    def Vt(self, x: Tensor) -> Tensor:
        _, h, w = self.out_shape
        z = self._sandwich(self.vt_h, x, self.vt_w.mT)
        return torch.cat([z[..., :h, :w].flatten(1), z[..., :h, w:].flatten(1), z[..., h:, :].flatten(1)], dim=1)

    def V(self, z: Tensor) -> Tensor:
        c, big_h, big_w = self.in_shape
        _, h, w = self.out_shape
        batch = z.shape[0]
        kept, right, below = torch.split(z, [c * h * w, c * h * (big_w - w), c * (big_h - h) * big_w], dim=1)
        top = torch.cat([kept.reshape(batch, c, h, w), right.reshape(batch, c, h, big_w - w)], dim=-1)
        coeffs = torch.cat([top, below.reshape(batch, c, big_h - h, big_w)], dim=-2)
        return self._sandwich(self.vt_h.mT, coeffs, self.vt_w)

    def Ut(self, y: Tensor) -> Tensor:
        return self._sandwich(self.u_h.mT, y, self.u_w).flatten(1)

    def U(self, z: Tensor) -> Tensor:
        return self._sandwich(self.u_h, z.reshape(z.shape[0], *self.out_shape), self.u_w.mT)


@register
class Bicubic(SeparableDownsample):
    """MATLAB ``imresize(x, 1/F)``: antialiased bicubic (a = -0.5) with symmetric border."""

    name = "bicubic"
    kernel = "cubic"
    antialias = True


@register
class AvgPool(SeparableDownsample):
    """Mean of each F × F block (MATLAB ``imresize(x, 1/F, 'box')``)."""

    name = "avgpool"
    kernel = "box"
    antialias = True


@register
class Nearest(SeparableDownsample):
    """Pixel i·F + F//2 of each F × F block (MATLAB ``imresize(x, 1/F, 'nearest')``)."""

    name = "nearest"
    kernel = "box"
    antialias = False


class Upsample(LinearOperator):
    """MATLAB-bicubic enlargement of (C, h, w) images to ``out_shape`` (C, H, W), any sizes: y = A_h x A_wᵀ.

    Not a measurement model but a change of variables: a problem y = A x at full size, solved for a smaller
    image z with x = U z, is the problem of ``Composed(A, Upsample(...))`` (restore's coarse-to-fine sampler).
    """

    name = "upsample"

    def __init__(self, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> None:
        super().__init__(f"{self.name}:{out_shape[1]}x{out_shape[2]}", in_shape)
        self.out_shape = tuple(int(v) for v in out_shape)
        self.register_buffer("a_h", resize_matrix(in_shape[1], out_shape[1]).unsqueeze(0))
        self.register_buffer("a_w", resize_matrix(in_shape[2], out_shape[2]).unsqueeze(0))

    def A(self, x: Tensor) -> Tensor:
        return self.a_h[0].to(x.dtype) @ x @ self.a_w[0].to(x.dtype).mT

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.a_h[0].to(y.dtype).mT @ y @ self.a_w[0].to(y.dtype)
