"""What folder runs and ``restore bench`` share about their results: strict JSON, the settings a folder
may be resumed with, NaN-free means, and one line for any failure."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from restore.errors import USER_ERRORS, RestoreError


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN / ±Inf float (also inside lists and dicts) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """Strict JSON (no NaN / Infinity tokens, which strict parsers reject: missing metrics are null)."""
    return json.dumps(finite_or_none(value), indent=2, default=str, allow_nan=False)


def as_float(value: Any) -> float:
    """A metric read back from a report: null → NaN."""
    return math.nan if value is None else float(value)


def check_same_settings(saved: dict, current: dict, folder: Path) -> None:
    """Refuse to add results to a folder made with other settings, naming what differs."""
    if saved != current:
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise RestoreError(f"{folder} holds results made with other settings ({', '.join(changed)}); "
                           "use --overwrite to redo them or --out for a new folder")


def nan_mean(values: Iterable[float]) -> float:
    """The mean of the finite values (NaN when there are none)."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else math.nan


def failure_text(err: BaseException) -> str:
    """One line for a failure: the message of an error the user can fix; for a file system error the file
    and the reason (a full disk, a read-only folder); else the error's type too."""
    text = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, USER_ERRORS):
        return text
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror}"
    return f"internal error: {type(err).__name__}{': ' + text if text else ''} (run with --debug for the traceback)"
