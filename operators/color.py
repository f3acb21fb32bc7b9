"""Per-pixel colour operators: the identity (denoising) and RGB → luminance (colorisation).

* ``identity`` — y = x, the measurement model of denoising. SVD: U = V = I
  (flatten / unflatten), all singular values 1.
* ``gray`` — y = 0.299 R + 0.587 G + 0.114 B, the luma of ITU-R BT.601 (the
  weights of PIL's ``convert('L')`` and of ``kornia.color.rgb_to_grayscale``),
  from (B, 3, H, W) to (B, 1, H, W); colorisation recovers x from y. Per pixel
  A = wᵀ (1 × 3) with the single singular value ‖w‖: U = 1 and V an orthonormal
  3 × 3 basis whose first vector is w/‖w‖ (the luminance direction), the other
  two spanning the chroma directions of the null space. ``Vt(x)`` returns
  (B, 3·H·W): the H·W luminance-direction coefficients first (in pixel order,
  paired with ``singular_values()``), then the 2·H·W chroma coefficients.

:func:`rgb_to_luminance` is the same map as a plain function for other modules; :func:`remove_colour_cast`
moves an image's mean colour to the gray of the same luminance (the gray-world assumption).
"""

from __future__ import annotations

import torch
from torch import Tensor

from operators.base import PixelDiagonalOperator, SVDOperator
from operators.errors import OperatorError
from operators.registry import parse_args, register

#: ITU-R BT.601 luma weights of R, G, B
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def rgb_to_luminance(x: Tensor) -> Tensor:
    """BT.601 luminance 0.299 R + 0.587 G + 0.114 B of (B, 3, H, W) images, shape (B, 1, H, W)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise OperatorError(f"luminance needs (B, 3, H, W) RGB images, got shape {tuple(x.shape)}")
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device)
    return torch.einsum("c,bchw->bhw", weights, x).unsqueeze(1)


def remove_colour_cast(x: Tensor) -> Tensor:
    """Every pixel of each (…, 3, H, W) image shifted by one colour, so that the image's mean colour is the gray of
    its mean luminance: the mean chroma becomes 0 and each pixel's luminance stays exactly what it was.

    Colourisation leaves the chroma to the prior, and a prior of small crops guesses the whole photograph's tint
    (a green sky, a yellow page) where it knows nothing; gray world (Buchsbaum, "A spatial processor model for
    object colour perception", 1980) is the classical answer to an unknown cast.
    """
    if x.dim() < 3 or x.shape[-3] != 3:
        raise OperatorError(f"a colour cast needs (…, 3, H, W) RGB images, got shape {tuple(x.shape)}")
    mean = x.mean(dim=(-2, -1), keepdim=True)
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device)
    gray = (weights[:, None, None] * mean).sum(dim=-3, keepdim=True)
    return x - (mean - gray)


def _no_arguments(name: str, args: str) -> None:
    """Raise OperatorError if a spec that takes no arguments got some."""
    positional, keywords = parse_args(args)
    if positional or keywords:
        raise OperatorError(f"{name} takes no arguments, got '{args}'")


@register
class Identity(PixelDiagonalOperator):
    """y = x (denoising); every singular value is 1."""

    name = "identity"

    def __init__(self, in_shape: tuple[int, int, int]) -> None:
        super().__init__(self.name, in_shape)
        self.register_buffer("ones", torch.ones(1, self.input_numel(), dtype=torch.float64))

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> Identity:
        _no_arguments(cls.name, args)
        return cls(in_shape)

    def A(self, x: Tensor) -> Tensor:
        # A copy, so that callers adding noise in place cannot change x.
        return x.clone()

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y.clone()

    def A_pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> Tensor:
        return y.clone()

    def singular_values(self) -> Tensor:
        return self.ones


@register
class Gray(SVDOperator):
    """RGB → BT.601 luminance (colorisation): y = 0.299 R + 0.587 G + 0.114 B, shape (B, 1, H, W)."""

    name = "gray"

    def __init__(self, in_shape: tuple[int, int, int]) -> None:
        super().__init__(self.name, in_shape)
        c, h, w = self.in_shape
        if c != 3:
            raise OperatorError(f"gray needs 3-channel RGB images, got {c} channel(s) (image shape {self.in_shape})")
        weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64)
        # QR of [w | e_2 | e_3] gives an orthonormal basis whose first column is ±w/‖w‖;
        # the sign is fixed so that the singular value ‖w‖ comes out positive with U = 1.
        basis, _ = torch.linalg.qr(torch.cat([weights[:, None], torch.eye(3, dtype=torch.float64)[:, 1:]], dim=1))
        basis = basis * torch.sign(basis[:, :1].T @ weights)
        self.register_buffer("weights", weights.unsqueeze(0))
        self.register_buffer("basis", basis.unsqueeze(0))
        self.register_buffer("singular", torch.full((1, h * w), float(weights.norm()), dtype=torch.float64))

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> Gray:
        _no_arguments(cls.name, args)
        return cls(in_shape)

    def A(self, x: Tensor) -> Tensor:
        return rgb_to_luminance(x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        weights = self.weights.to(dtype=y.dtype, device=y.device)
        return weights[:, :, None, None] * y

    def A_pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> Tensor:
        """w y / ‖w‖²: per pixel the minimum-norm RGB value whose luminance is y."""
        weights = self.weights.to(dtype=y.dtype, device=y.device)
        return (weights / weights.square().sum())[:, :, None, None] * y

    def singular_values(self) -> Tensor:
        return self.singular

    def Vt(self, x: Tensor) -> Tensor:
        basis = self.basis.to(dtype=x.dtype, device=x.device)
        # (basisᵀ x) per pixel; channel k of the result is the coefficient on basis vector k.
        return (basis.mT @ x.flatten(2)).flatten(1)

    def V(self, z: Tensor) -> Tensor:
        basis = self.basis.to(dtype=z.dtype, device=z.device)
        _, h, w = self.in_shape
        return (basis @ z.reshape(z.shape[0], 3, h * w)).reshape(z.shape[0], 3, h, w)

    def Ut(self, y: Tensor) -> Tensor:
        return y.flatten(1)

    def U(self, z: Tensor) -> Tensor:
        _, h, w = self.in_shape
        return z.reshape(z.shape[0], 1, h, w)
