"""`iracdb --help` starts quickly: the heavy libraries are imported only by the commands that use them.

Checked on the modules a fresh interpreter has loaded after the command (never on wall-clock time; the figure is
printed by ``scripts/bench_startup.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Libraries that take from tens to hundreds of milliseconds to import; `iracdb --help` needs none of them.
HEAVY = ("sqlalchemy", "alembic", "astropy", "scipy", "numpy", "pandas", "pyarrow", "matplotlib", "dask",
         "distributed", "psycopg", "photutils", "numba")

# Runs the command line in-process as `python -m iracdb ARGS` would, then prints which heavy libraries were loaded.
_PROBE = """
import json, runpy, sys
args, heavy = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["iracdb", *args]
try:
    runpy.run_module("iracdb", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & heavy)))
"""


def loaded_heavy_modules(*args: str) -> list[str]:
    """The heavy libraries a fresh interpreter has imported after running ``iracdb ARGS``."""
    probe = [sys.executable, "-c", _PROBE, json.dumps(list(args)), json.dumps(HEAVY)]
    result = subprocess.run(probe, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [("--help",), ("--version",), ("reduce", "--help"), ("db", "upgrade", "--help"), ("export", "--help"),
     ("plot", "--help"), ("demo", "--help"), ("aors", "--bogus")],
)
def test_help_and_usage_errors_import_no_heavy_library(args: tuple[str, ...]) -> None:
    assert loaded_heavy_modules(*args) == []


def test_the_probe_sees_a_command_that_does_import_them(tmp_path: Path) -> None:
    # A listing opens the database: SQLAlchemy is then loaded (so an empty answer above means something).
    assert "sqlalchemy" in loaded_heavy_modules("aors", "--db", str(tmp_path / "x.sqlite"))


def test_a_listing_of_an_up_to_date_database_imports_no_alembic(tmp_path: Path) -> None:
    # The schema version is checked with one query (migrate.ensure_schema); Alembic only migrates.
    database = tmp_path / "x.sqlite"
    subprocess.run([sys.executable, "-m", "iracdb", "db", "upgrade", "--db", str(database)], check=True,
                   capture_output=True)
    for command in ("runs", "aors"):
        loaded = loaded_heavy_modules(command, "--db", str(database))
        assert "sqlalchemy" in loaded and "alembic" not in loaded, (command, loaded)
