"""Spec strings: every operator has a name and a string that rebuilds it exactly.

Grammar: ``name[:arg[:arg...]]`` where each arg is positional or ``key=value``,
e.g. ``bicubic:4``, ``blur:gaussian:61:3.0:boundary=reflect``,
``random:0.7:seed=3``. Specs of per-image operators are joined by ``;``.
The image shape is not part of the spec; it is given alongside.
"""

from __future__ import annotations

from operators.base import LinearOperator
from operators.errors import OperatorError

REGISTRY: dict[str, type[LinearOperator]] = {}


def register(cls: type[LinearOperator]) -> type[LinearOperator]:
    """Class decorator: make ``cls`` buildable from specs starting with ``cls.name``."""
    if not cls.name or cls.name in REGISTRY:
        raise RuntimeError(f"operator name {cls.name!r} is empty or taken")
    REGISTRY[cls.name] = cls
    return cls


def parse_args(args: str) -> tuple[list[str], dict[str, str]]:
    """Split ``"61:3.0:boundary=reflect"`` into (["61", "3.0"], {"boundary": "reflect"})."""
    positional: list[str] = []
    keywords: dict[str, str] = {}
    for field in args.split(":") if args else []:
        key, eq, value = field.partition("=")
        if eq:
            keywords[key.strip()] = value.strip()
        elif keywords:
            raise OperatorError(f"positional argument '{field}' after keyword arguments in '{args}'")
        else:
            positional.append(field.strip())
    return positional, keywords


def build(spec: str, in_shape: tuple[int, int, int]) -> LinearOperator:
    """Build the operator named by ``spec`` for images of shape (C, H, W)."""
    if ";" in spec:
        parts = [build(part, in_shape) for part in spec.split(";")]
        return type(parts[0]).stack(parts)
    name, _, args = spec.strip().partition(":")
    if name not in REGISTRY:
        raise OperatorError(f"unknown operator '{name}' in spec '{spec}'; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name].from_spec(args, tuple(in_shape))
