"""The one exception operators raise for bad parameters (``restore`` adds it to the errors it reports in one line)."""


class OperatorError(ValueError):
    """A measurement operator cannot be built or applied as asked (bad spec, size, kernel, ...)."""
