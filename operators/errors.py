"""The one exception operators raise for bad parameters."""

from restore.errors import RestoreError


class OperatorError(RestoreError, ValueError):
    """A measurement operator cannot be built or applied as asked (bad spec, size, kernel, ...)."""
