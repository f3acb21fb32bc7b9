"""Base classes of all measurement operators.

An operator is a linear map ``A`` from images ``x`` of shape (B, C, H, W) to
measurements ``y``. Subclasses implement the minimal set and the base class
derives the rest (the DeepInverse pattern):

* :class:`LinearOperator` — implement ``A``; ``A_adjoint`` is derived by
  autograd (override it where a closed form is faster) and ``A_pinv`` is
  computed by conjugate gradients on the normal equations.
* :class:`SVDOperator` — implement ``V``, ``Vt``, ``U``, ``Ut`` and
  ``singular_values``; ``A``, ``A_adjoint`` and ``A_pinv`` follow in closed form.

Parameters (masks, kernels, ...) are buffers fixed at construction, with a
leading batch dimension of 1 (shared by the batch) or B (one per image), so
``.to(device)`` and ``.double()`` work and nothing changes state after
construction. Images live in [-1, 1] inside the library; operators do not
care about the range, but noise models and I/O do.

Inner products are real: for complex measurements (MRI k-space) the adjoint
satisfies Re<A x, y> = <x, A_adjoint(y)> for real x.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import Tensor, nn

from operators.errors import OperatorError


def inner(a: Tensor, b: Tensor) -> Tensor:
    """Per-image real inner product Re<a, b>, summed over all but the batch dimension."""
    prod = torch.conj(a) * b if a.is_complex() or b.is_complex() else a * b
    return prod.real.flatten(1).sum(dim=1)


class Operator(nn.Module):
    """A measurement model y = A(x) on image batches (B, C, H, W), built for one image shape.

    ``in_shape`` = (C, H, W); subclasses check their parameters against it at construction and raise
    :class:`OperatorError`. :class:`LinearOperator` and :class:`NonlinearOperator` say what else a
    sampler may use.
    """

    #: registry key, the first field of the spec string (e.g. ``"bicubic"``)
    name: ClassVar[str] = ""
    #: whether A is linear (adjoint, pseudo-inverse and proximal steps exist)
    linear: ClassVar[bool] = False
    #: whether ``prox_l2(z, y, rho)``, the data-consistency step of plug-and-play samplers, exists
    has_prox: ClassVar[bool] = False
    #: True for subclasses of SVDOperator (what DDRM needs)
    has_svd: ClassVar[bool] = False
    #: a nonlinear operator's ``pinv(y)``: the image its measurement decodes to (a JPEG's decoder), which DDNM's
    #: null-space step uses as h† (Kawar et al. 2022, "JPEG Artifact Correction using DDRM"); linear ones have A_pinv
    has_decoder: ClassVar[bool] = False
    #: True when images are complex (e.g. MRI with complex images); real otherwise
    complex_input: bool = False

    def __init__(self, spec: str, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self._specs = [spec]
        #: (C, H, W) of the images this operator was built for
        self.in_shape = tuple(int(v) for v in in_shape)

    @property
    def spec(self) -> str:
        """String that rebuilds this operator with :func:`operators.build` (``;`` joins per-image specs)."""
        return ";".join(self._specs)

    @property
    def batch_size(self) -> int:
        """Number of per-image parameter sets held (1 means shared by any batch)."""
        return len(self._specs)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}"

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> Operator:
        """Build from the part of a spec after ``name:`` (see operators.registry)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def picture(self, y: Tensor) -> Tensor:
        """The measurement as figures show it: y itself where it is an image, k-space or a sinogram (the figure
        scales it); a JPEG's coefficients decoded, phase retrieval's magnitudes on a log scale."""
        return y

    def align_samples(self, samples: Tensor) -> Tensor:
        """Posterior samples (K, B, C, H, W) turned to agree on what the measurement cannot tell, so that their mean
        and spread describe one image: each of them alike here; phase retrieval turns every sample 180° where that
        brings it closer to the first."""
        return samples

    @classmethod
    def stack(cls, ops: list[Operator]) -> Operator:
        """One operator applying ``ops[b]`` to image b: buffers are concatenated along the batch dimension."""
        if not ops:
            raise OperatorError("cannot stack an empty list of operators")
        first = ops[0]
        if any(type(op) is not type(first) for op in ops):
            raise OperatorError("only operators of one kind can be stacked: " + ", ".join(op.spec for op in ops))
        stacked = copy.deepcopy(first)
        for name, buf in first.named_buffers(recurse=False):
            parts = [getattr(op, name) for op in ops]
            if buf.dim() == 0 or any(p.shape[1:] != buf.shape[1:] for p in parts):
                if all(torch.equal(p, buf) for p in parts):
                    continue  # a shared buffer (e.g. a grid): keep one copy
                raise OperatorError(f"cannot stack operators whose '{name}' differ in shape: {first.spec}")
            setattr(stacked, name, torch.cat(parts, dim=0))
        stacked._specs = [s for op in ops for s in op._specs]
        return stacked


class NonlinearOperator(Operator):
    """y = A(x) for a differentiable, not necessarily linear A (JPEG, phase retrieval).

    Samplers that need nothing but A and its gradient (DPS, RED-Diff, DAPS) take any; those that need a
    data-consistency step (``has_prox``: DPIR, DiffPIR) or a decoder (``has_decoder``: DDNM) take one that has it.
    """

    linear: ClassVar[bool] = False


class LinearOperator(Operator):
    """A linear measurement model y = A x: implement ``A``; the adjoint, A⁺ and proximal steps follow."""

    linear: ClassVar[bool] = True
    has_prox: ClassVar[bool] = True

    def A_adjoint(self, y: Tensor) -> Tensor:
        """The adjoint, derived by autograd as the vector-Jacobian product of the linear map A.

        Exact for any A written in differentiable torch ops; subclasses override
        it where a closed form is faster.
        """
        real_dtype = y.real.dtype if y.is_complex() else y.dtype
        in_dtype = real_dtype.to_complex() if self.complex_input else real_dtype
        with torch.enable_grad():
            x = torch.zeros((y.shape[0], *self.in_shape), dtype=in_dtype, device=y.device, requires_grad=True)
            (grad,) = torch.autograd.grad(self.A(x), x, grad_outputs=y, create_graph=y.requires_grad)
        return grad

    def A_pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> Tensor:
        """Moore–Penrose pseudo-inverse by conjugate gradients on A^T A x = A^T y from x = 0.

        Starting from zero keeps every iterate in range(A^T), so CG converges to
        the minimum-norm least-squares solution, which is A⁺y.
        """
        rhs = self.A_adjoint(y)
        return conjugate_gradient(lambda v: self.A_adjoint(self.A(v)), rhs, tol=tol, max_iter=max_iter)

    def solve_normal(self, rhs: Tensor, rho: float | Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """x = (A^T A + ρ I)⁻¹ rhs per image (ρ > 0: a float or one per image), by conjugate gradients.

        The data-consistency step of proximal samplers: argmin ‖A x - y‖² + ρ ‖x - z‖² is
        ``solve_normal(A_adjoint(y) + ρ z, ρ)``.
        """
        rho = _per_image(rho, rhs)
        return conjugate_gradient(lambda v: self.A_adjoint(self.A(v)) + rho * v, rhs, tol=tol, max_iter=max_iter)

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """The data-consistency step argmin_x ‖y - A x‖² + ρ ‖x - z‖² = z + (A^T A + ρ I)⁻¹ A^T (y - A z).

        Solved as a correction to ``z`` (closed form on an SVD, else conjugate gradients from zero): where
        ρ is tiny and the system ill-conditioned, a truncated CG then stays near z instead of near 0. For
        real images measured in complex numbers (k-space) only the real part of the correction is kept.
        """
        rhs = self.A_adjoint(y - self.A(z))
        real = not (self.complex_input or z.is_complex())
        delta = self.solve_normal(rhs.real if real and rhs.is_complex() else rhs, rho, tol=tol, max_iter=max_iter)
        return z + (delta.real if real and delta.is_complex() else delta).reshape(z.shape)

    def solve_gram(self, r: Tensor, c: float | Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """u = (A A^T + c I)⁻¹ r in measurement space (c > 0), by conjugate gradients."""
        c = _per_image(c, r)
        return conjugate_gradient(lambda v: self.A(self.A_adjoint(v)) + c * v, r, tol=tol, max_iter=max_iter)

class Composed(LinearOperator):
    """y = outer(inner(x)): a linear measurement of a transformed image (e.g. of an upsampled smaller one).

    The adjoint is inner's after outer's; A⁺ and the proximal steps come by conjugate gradients. Not built
    from a spec: its spec names both parts and does not rebuild it.
    """

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        super().__init__(f"{outer.spec}∘{inner.spec}", inner.in_shape)
        self.outer, self.inner = outer, inner
        self.complex_input = inner.complex_input

    def A(self, x: Tensor) -> Tensor:
        return self.outer.A(self.inner.A(x))

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.inner.A_adjoint(self.outer.A_adjoint(y))


class SVDOperator(LinearOperator):
    """An operator given by its singular value decomposition A = U diag(s) V^T.

    With n = C·H·W input and m <= n measurement entries:

    * ``Vt(x)`` maps x to its n spectral coefficients, shape (B, n); the first m
      belong to the singular values, the rest span the null space;
    * ``V(z)`` is the inverse: (B, n) coefficients back to an image;
    * ``Ut(y)`` maps a measurement to (B, m) coefficients, ``U(z)`` back;
    * ``singular_values()`` has shape (1 or B, m) and may contain zeros (an
      inpainting mask keeps y at full size with zeros where pixels are missing).
    """

    has_svd: ClassVar[bool] = True
    #: singular values below rcond * max(s) are treated as zero by A_pinv
    rcond: ClassVar[float] = 1e-6

    def singular_values(self) -> Tensor:
        raise NotImplementedError

    def V(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def Vt(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def U(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def Ut(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def svd_apply(self, x: Tensor) -> Tensor:
        """A x computed from the decomposition, U diag(s) V^T x.

        Subclasses should override ``A`` with a direct computation (convolution,
        resampling, ...) so that tests can check the decomposition against it.
        """
        s = self.singular_values()
        return self.U(s * self.Vt(x)[:, : s.shape[1]])

    def A(self, x: Tensor) -> Tensor:
        return self.svd_apply(x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        coeffs = self.singular_values() * self.Ut(y)
        return self._null_padded(coeffs)

    def A_pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> Tensor:
        s = self.singular_values()
        keep = s > self.rcond * s.amax(dim=1, keepdim=True)
        inverse = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
        return self._null_padded(inverse * self.Ut(y))

    def solve_normal(self, rhs: Tensor, rho: float | Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """(A^T A + ρ I)⁻¹ rhs in closed form: V diag(1 / (s² + ρ)) V^T rhs (null space: 1 / ρ)."""
        coeffs = self.Vt(rhs)
        s = self.singular_values()
        rho = _per_image(rho, coeffs)
        m = s.shape[1]
        scaled = torch.cat([coeffs[:, :m] / (s * s + rho), coeffs[:, m:] / rho], dim=1)
        return self.V(scaled)

    def solve_gram(self, r: Tensor, c: float | Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """(A A^T + c I)⁻¹ r in closed form: U diag(1 / (s² + c)) U^T r."""
        s = self.singular_values()
        return self.U(self.Ut(r) / (s * s + _per_image(c, s)))

    def _null_padded(self, coeffs_m: Tensor) -> Tensor:
        n = self.input_numel()
        padded = coeffs_m.new_zeros(coeffs_m.shape[0], n)
        padded[:, : coeffs_m.shape[1]] = coeffs_m
        return self.V(padded)

    def input_numel(self) -> int:
        """n = C·H·W, the number of entries of one input image."""
        c, h, w = self.in_shape
        return c * h * w


class PixelDiagonalOperator(SVDOperator):
    """An operator that scales each pixel, y = s ⊙ x at the image's size: U = V = identity in pixel order.

    Subclasses give ``singular_values`` (the per-pixel factors, zeros allowed) and ``A``.
    """

    def Vt(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def V(self, z: Tensor) -> Tensor:
        return z.reshape(z.shape[0], *self.in_shape)

    def Ut(self, y: Tensor) -> Tensor:
        return y.flatten(1)

    def U(self, z: Tensor) -> Tensor:
        return z.reshape(z.shape[0], *self.in_shape)


def _per_image(value: float | Tensor, like: Tensor) -> Tensor | float:
    """A float as is; a per-image tensor (B,) reshaped to broadcast against ``like`` (B, ...)."""
    if isinstance(value, Tensor) and value.dim() > 0:
        return value.to(like.real.dtype).reshape(-1, *([1] * (like.dim() - 1)))
    return float(value)


def conjugate_gradient(normal_op, rhs: Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> Tensor:
    """Solve normal_op(x) = rhs per image by conjugate gradients, from x = 0.

    ``normal_op`` must be symmetric positive semi-definite (e.g. A^T A). Each image stops on its own
    once its residual norm is below ``tol`` times its right-hand side norm (or its search direction
    has no curvature left): a converged image is frozen, so a batch gives the results of its images
    solved one by one.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs_old = inner(r, r)
    tiny = torch.finfo(rs_old.dtype).tiny
    stop = (tol * tol) * rs_old.clamp_min(tiny)
    done = rs_old <= stop
    shape = (-1,) + (1,) * (rhs.dim() - 1)
    for _ in range(max_iter):
        if bool(done.all()):
            break
        Ap = normal_op(p)
        pAp = inner(p, Ap)
        done = done | (pAp <= 0)
        alpha = torch.where(done, torch.zeros_like(pAp), rs_old / pAp.clamp_min(tiny))
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * Ap
        rs_new = inner(r, r)
        beta = torch.where(done, torch.zeros_like(rs_old), rs_new / rs_old.clamp_min(tiny))
        p = torch.where(done.view(shape), p, r + beta.view(shape) * p)
        rs_old = torch.where(done, rs_old, rs_new)
        done = done | (rs_old <= stop)
    return x
