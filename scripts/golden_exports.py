"""Golden exports: reduce the demo archive and the real XO-3 AOR and export every format, to compare two versions.

A refactoring must not change a number. Before it, write the exports with the old code; after it, with the new;
then compare. Rows, column names and every value must be equal (floats bit for bit); only what records when and
where a run was made (timestamps, host, user, pid, git revision, software versions, paths of temporary folders)
may differ, and those are left out of the comparison.

Usage::

    python scripts/golden_exports.py write DIR      # DIR/demo/... and DIR/xo3/... (DIR must not exist)
    python scripts/golden_exports.py compare OLD NEW

Exits 1 and prints each difference when the two differ.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_IRAC = ROOT.parent / "shared" / "data" / "irac"
XO3 = "04:21:52.7 +57:49:01.9"
FORMATS = ("csv", "parquet", "ecsv", "votable")
#: Provenance keys whose values depend on when, where and by which checkout a run was made (``execution`` too:
#: ``--workers`` defaults to the machine's cores, and every choice gives the same rows).
VOLATILE_KEYS = re.compile(
    r"(created|started|finished|updated|_at|time|date_run|host|user|pid|git|versions|python|platform|path|"
    r"command_line|database|url|ingest_id|exported|^date$|^execution$)", re.I)


def _iracdb(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "iracdb", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def write(out: Path) -> None:
    out.mkdir(parents=True)
    _iracdb("demo", str(out / "demo"), cwd=out)
    xo3 = out / "xo3"
    xo3.mkdir()
    db = ["--db", str(xo3 / "xo3.sqlite")]
    _iracdb("ingest", str(SHARED_IRAC), *db, cwd=xo3)
    _iracdb("reduce", "--run-name", "xo3", "--target", XO3, "--aor", "46466816", *db, cwd=xo3)
    _iracdb("reduce", "--run-name", "auto", "--auto", *db, cwd=xo3)
    for run in ("xo3", "auto"):
        for fmt in FORMATS:
            _iracdb("export", run, "--out", str(xo3 / fmt), "--format", fmt, *db, cwd=xo3)
    print(f"wrote golden exports to {out}")


def _rows(path: Path, root: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    """Column names and rows of a table file, every value as exact text (floats as repr: bit for bit), with the
    folder the goldens were written to replaced by ``<ROOT>`` (file paths)."""
    header, rows = _raw_rows(path)
    prefix = str(root)
    return header, [tuple(v.replace(prefix, "<ROOT>") for v in row) for row in rows]


def _raw_rows(path: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            return header, [tuple(row) for row in reader]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.column_names, [tuple(repr(v) for v in row.values()) for row in table.to_pylist()]
    from astropy.table import Table

    table = Table.read(path, format="votable" if path.suffix == ".vot" else "ascii.ecsv")
    return list(table.colnames), [tuple(repr(v) for v in row) for row in table.iterrows()]


def _stable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not VOLATILE_KEYS.search(str(k))}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def compare(old: Path, new: Path) -> int:
    differences = []
    old_files = sorted(p.relative_to(old) for p in old.rglob("*") if p.is_file() and "_data." in p.name)
    new_files = sorted(p.relative_to(new) for p in new.rglob("*") if p.is_file() and "_data." in p.name)
    if old_files != new_files:
        differences.append(f"table files differ: {sorted(set(old_files) ^ set(new_files))}")
    for rel in old_files:
        if not (new / rel).is_file():
            continue
        (old_cols, old_rows), (new_cols, new_rows) = _rows(old / rel, old), _rows(new / rel, new)
        if old_cols != new_cols:
            differences.append(f"{rel}: columns {old_cols} != {new_cols}")
        elif old_rows != new_rows:
            bad = [i for i, (a, b) in enumerate(zip(old_rows, new_rows, strict=False)) if a != b]
            differences.append(f"{rel}: {len(old_rows)} vs {len(new_rows)} rows; first differing rows {bad[:5]}")
    for path in sorted(old.rglob("*_provenance.json")):
        rel = path.relative_to(old)
        if (new / rel).is_file():
            a, b = (_stable(json.loads(p.read_text().replace(str(root), "<ROOT>")))
                    for p, root in ((path, old), (new / rel, new)))
            if a != b:
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                differences.append(f"{rel}: the recorded parameters differ in {keys}")
    for line in differences:
        print(line)
    print(f"{len(old_files)} table files compared: {'identical' if not differences else 'DIFFERENT'}")
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write").add_argument("out", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("old", type=Path)
    cmp.add_argument("new", type=Path)
    args = parser.parse_args()
    if args.command == "write":
        write(args.out)
        return 0
    return compare(args.old, args.new)


if __name__ == "__main__":
    sys.exit(main())
