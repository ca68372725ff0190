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


def test_the_console_script_re_run_by_a_worker_imports_no_command_line(tmp_path: Path) -> None:
    # A pool's worker re-runs the main script of the program that started it (as "__mp_main__"): for `iracdb
    # reduce`, the console script, written as pip writes it from pyproject's [project.scripts]. Importing the
    # command line there (typer, click, rich) would cost each worker ~0.13 s before its first chunk.
    import tomllib

    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as handle:
        target = tomllib.load(handle)["project"]["scripts"]["iracdb"]
    module, function = target.split(":")
    script = tmp_path / "iracdb"
    script.write_text(f"import sys\nfrom {module} import {function}\nif __name__ == '__main__':\n"
                      f"    sys.exit({function}())\n")
    probe = ("import json, runpy, sys; runpy.run_path(sys.argv[1], run_name='__mp_main__'); "
             "print(json.dumps(sorted(m for m in ('typer', 'click', 'rich', 'iracdb.cli') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe, str(script)], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == []
    # and run as the program itself, the same script is the command line
    done = subprocess.run([sys.executable, str(script), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
