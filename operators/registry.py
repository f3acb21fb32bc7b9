"""Spec strings: every operator has a name and a string that rebuilds it exactly.

Grammar: ``name[:arg[:arg...]]`` where each arg is positional or ``key=value``,
e.g. ``bicubic:4``, ``blur:gaussian:61:3.0:boundary=reflect``,
``random:0.7:seed=3``. Specs of per-image operators are joined by ``;``.
The image shape is not part of the spec; it is given alongside.
"""

from __future__ import annotations

import math

from operators.base import Operator
from operators.errors import OperatorError

REGISTRY: dict[str, type[Operator]] = {}


def register(cls: type[Operator]) -> type[Operator]:
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


def check_keywords(operator: str, keywords: dict[str, str], known: tuple[str, ...]) -> None:
    """OperatorError for keyword fields that ``operator`` does not take."""
    unknown = sorted(set(keywords) - set(known))
    if unknown:
        raise OperatorError(f"{operator}: unknown argument(s) {', '.join(unknown)}; known: {', '.join(known)}")


def read_number(text: str | float, what: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite number from a spec field (or a number given directly), or OperatorError naming ``what``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise OperatorError(f"{what} must be a number, got '{text}'") from None
    if not math.isfinite(value):
        raise OperatorError(f"{what} must be finite, got '{text}'")
    _check_range(value, text, what, "", minimum, maximum)
    return value


def read_integer(text: str | int, what: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number from a spec field ('4' and '4.0' alike), or OperatorError naming ``what``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not value.is_integer():
        raise OperatorError(f"{what} must be an integer, got '{text}'")
    _check_range(value, text, what, "an integer ", minimum, maximum)
    return int(value)


def _check_range(value: float, text, what: str, kind: str, minimum: float | None, maximum: float | None) -> None:
    if (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return
    if minimum is not None and maximum is not None:
        bounds = f"{kind}in {format_number(minimum)}..{format_number(maximum)}"
    else:
        bounds = f"at least {format_number(minimum)}" if minimum is not None else f"at most {format_number(maximum)}"
    raise OperatorError(f"{what} must be {bounds}, got '{text}'")


def read_seed(keywords: dict[str, str]) -> int:
    """The non-negative ``seed=`` field, 0 when absent."""
    seed = read_integer(keywords.get("seed", "0"), "seed")
    if seed < 0:
        raise OperatorError(f"seed must be a non-negative integer, got {seed}")
    return seed


def format_number(value: float) -> str:
    """A number as the shortest text that parses back to it ('4', '0.08', '22.5')."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def build(spec: str, in_shape: tuple[int, int, int]) -> Operator:
    """Build the operator named by ``spec`` for images of shape (C, H, W)."""
    if ";" in spec:
        parts = [build(part, in_shape) for part in spec.split(";")]
        return type(parts[0]).stack(parts)
    name, _, args = spec.strip().partition(":")
    if name not in REGISTRY:
        raise OperatorError(f"unknown operator '{name}' in spec '{spec}'; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name].from_spec(args, tuple(in_shape))
