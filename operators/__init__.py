"""Measurement operators y = A x for imaging inverse problems.

Build one from a spec string with :func:`build` (``build("bicubic:4", (3, 256, 256))``)
or construct a class directly. Every operator is an ``nn.Module`` with ``A``,
``A_adjoint`` and ``A_pinv``; the ones with a fast SVD (``has_svd``) also give
``U``, ``Ut``, ``V``, ``Vt`` and ``singular_values``.
"""

from operators.base import LinearOperator, NonlinearOperator, Operator, SVDOperator, conjugate_gradient, inner
from operators.errors import OperatorError
from operators.registry import REGISTRY, build, parse_args, register

# Importing the modules registers their operators.
from operators import inpaint, blur, resize, color, mri, ct, jpeg, phase  # noqa: E402,F401  isort: skip

__all__ = [
    "LinearOperator",
    "NonlinearOperator",
    "Operator",
    "SVDOperator",
    "OperatorError",
    "REGISTRY",
    "build",
    "conjugate_gradient",
    "inner",
    "parse_args",
    "register",
]
