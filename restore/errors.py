"""The project's exceptions. The CLI turns a RestoreError into one line on stderr and exit code 1.

This module imports nothing, so every part of the project (operators included) can raise these
without import cost or cycles.
"""


class RestoreError(Exception):
    """Something the user asked for cannot be done (missing file, bad option, unknown prior, ...)."""


class NumericalError(RestoreError):
    """A sampler produced NaN or Inf."""
