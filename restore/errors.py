"""The project's exceptions. The CLI turns any of ``USER_ERRORS`` into one line on stderr and exit code 1.

Operators live in their own package, below the library, with their own exception.
"""

from operators.errors import OperatorError


class RestoreError(Exception):
    """Something the user asked for cannot be done (missing file, bad option, unknown prior, ...)."""


class NumericalError(RestoreError):
    """A sampler produced NaN or Inf."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM, after saving what could be saved; the message says what was kept."""


#: what a request can fail with that the user can fix: reported in one line, never as a traceback
USER_ERRORS = (RestoreError, OperatorError)
