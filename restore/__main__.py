"""``python -m restore`` (and ``torchrun -m restore ...``): the command line, as the ``restore`` script runs it.

The one module of the package that reaches up to the CLI: an entry point, not a dependency.
"""

from cli import app

app(prog_name="restore")
