#!/usr/bin/env python
"""Benchmark how fast the ``iracdb`` command line starts: ``--help`` and two listings, against a bare typer + rich.

Each command runs ``--repeat`` times (default 10) in a fresh interpreter (``python -m iracdb ...``, the code this
Python imports); the best and the median wall times are printed, with ``iracdb --help`` as a multiple of
``python -c "import typer, rich"`` (the floor: the libraries every command needs). The aim (issue 14): ``--help``
within 3x of that floor. ``runs`` and ``aors`` run on an empty SQLite database in a temporary folder (removed at the
end): they open the database, so they import SQLAlchemy and Alembic, but not the photometry's libraries.

Prints the figures and the aim; never asserts on them.

Usage:
    .venv/bin/python scripts/bench_startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AIM_HELP_OVER_FLOOR = 3.0


def wall_times(command: list[str], repeat: int, cwd: str) -> list[float]:
    """Wall time (s) of each of ``repeat`` runs of ``command``; output discarded, a failure raised."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, metavar="N", help="Runs of each command (default 10).")
    options = parser.parse_args()

    python = sys.executable
    iracdb = [python, "-m", "iracdb"]
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as folder:
        subprocess.run([*iracdb, "db", "upgrade", "--db", "bench.sqlite"], cwd=folder, check=True,
                       stdout=subprocess.DEVNULL)
        commands = {
            'python -c "import typer, rich"': [python, "-c", "import typer, rich"],
            "iracdb --help": [*iracdb, "--help"],
            "iracdb reduce --help": [*iracdb, "reduce", "--help"],
            "iracdb runs (empty SQLite)": [*iracdb, "runs", "--db", "bench.sqlite"],
            "iracdb aors (empty SQLite)": [*iracdb, "aors", "--db", "bench.sqlite"],
        }
        figures = {name: wall_times(command, options.repeat, folder) for name, command in commands.items()}

    print(f"python {platform.python_version()} on {platform.machine()}, best and median of {options.repeat} runs")
    print(f"{'command':<34} {'best s':>8} {'median s':>9}")
    for name, times in figures.items():
        print(f"{name:<34} {min(times):8.3f} {statistics.median(times):9.3f}")
    floor, help_ = (min(figures[name]) for name in ('python -c "import typer, rich"', "iracdb --help"))
    print(f"iracdb --help: {help_ / floor:.1f}x the typer + rich import (best of each); "
          f"aim: <= {AIM_HELP_OVER_FLOOR:.0f}x")
    print(f"command: {shlex.join([Path(python).name, *sys.argv])}")


if __name__ == "__main__":
    main()
