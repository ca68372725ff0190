"""``python -m iracdb``: the same command line as the ``iracdb`` console script."""

from iracdb.cli import app

app(prog_name="iracdb")
