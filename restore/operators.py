"""``restore.operators`` is the top-level ``operators`` package under the library's namespace."""

from operators import *  # noqa: F401,F403
from operators import __all__  # noqa: F401
