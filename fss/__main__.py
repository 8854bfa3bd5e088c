"""``python -m fss`` = the ``fss`` command."""

from fss.cli import app

app()
