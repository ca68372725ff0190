"""The ``iracdb`` command line (typer only): parse, open the database, call one library function, print.

The commands live by subject (:mod:`~iracdb.cli.catalogue`, :mod:`~iracdb.cli.reduction`,
:mod:`~iracdb.cli.results`, :mod:`~iracdb.cli.demo`) on the one :data:`app` of :mod:`~iracdb.cli.app`; importing
them registers them, in the order ``iracdb --help`` lists them.
"""

# isort: off
# Importing a module registers its commands; this order is the order of `iracdb --help`.
from iracdb.cli import catalogue, reduction, results, demo  # noqa: F401
# isort: on
from iracdb.cli.app import EXIT_INTERRUPTED, EXIT_SOME_REJECTED, SUMMARY_TABLE_COLUMNS, app

__all__ = ["EXIT_INTERRUPTED", "EXIT_SOME_REJECTED", "SUMMARY_TABLE_COLUMNS", "app"]
