"""Imports flow one way (README, "Architecture"), and the rules that keep them so cannot silently vanish.

Two checks. ruff's banned-api rule (TID251) has one list per layer (``pyproject.toml`` for the top-level modules, a
``ruff.toml`` beside each pure layer): each list is exercised here on a file of that folder given to ruff on stdin,
so that a deleted or broken config fails a test instead of allowing everything. And the real tree is read (its
syntax, nothing imported): what a module imports is followed through iracdb, so that the photometry importing a
module that imports SQLAlchemy fails too (ruff sees one file at a time), and the leaf modules' rule, which ruff
cannot say for single files, is checked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "iracdb"

#: Libraries of the database, the terminal and dataframes: what the pure layers never import, even indirectly.
HEAVY = ("sqlalchemy", "typer", "rich", "pandas")
#: iracdb's modules above the pure layers: the ones that drive a run, store results or talk to the user.
DRIVERS = ("iracdb.db", "iracdb.cli", "iracdb.reduce", "iracdb.ingest", "iracdb.export")

# (file given to ruff, an import banned there).
BANNED = [
    *[("iracdb/photometry/probe.py", name) for name in (*HEAVY, *DRIVERS, "iracdb.fitsio", "iracdb.workers")],
    *[("iracdb/fitsio/probe.py", name) for name in (*HEAVY, *DRIVERS)],
    *[("iracdb/reduce/worker.py", name) for name in (*HEAVY, "iracdb.db", "iracdb.cli", "iracdb.ingest")],
    *[("iracdb/db/probe.py", name) for name in ("typer", "rich", "pandas", "iracdb.photometry", "iracdb.reduce",
                                                "iracdb.ingest", "iracdb.export", "iracdb.cli")],
    *[("iracdb/probe.py", name) for name in HEAVY],
]
# (file given to ruff, an import allowed there).
ALLOWED = [
    ("iracdb/photometry/probe.py", "iracdb.flags"),
    ("iracdb/fitsio/probe.py", "iracdb.photometry.tansip"),
    ("iracdb/reduce/worker.py", "iracdb.fitsio.image"),
    ("iracdb/reduce/worker.py", "iracdb.photometry"),
    ("iracdb/reduce/store.py", "sqlalchemy"),  # only the worker is held to the pure rule
    ("iracdb/db/probe.py", "sqlalchemy"),
    ("iracdb/db/probe.py", "iracdb.columns"),
    ("iracdb/cli/app.py", "typer"),
    ("iracdb/export.py", "sqlalchemy"),
]


def _ruff(path: str, module: str) -> subprocess.CompletedProcess[str]:
    """ruff's TID251 findings for ``import module`` and ``from module import x`` in a file at ``path``."""
    source = f"import {module}\nfrom {module} import anything\n"
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251", "--output-format", "concise",
         "--stdin-filename", path, "-"],
        input=source, capture_output=True, text=True, cwd=ROOT, check=False,
    )


@pytest.mark.parametrize(("path", "module"), BANNED)
def test_ruff_bans_the_import(path: str, module: str) -> None:
    result = _ruff(path, module)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count(f"TID251 `{module}` is banned") == 2, result.stdout


@pytest.mark.parametrize(("path", "module"), ALLOWED)
def test_ruff_allows_the_import(path: str, module: str) -> None:
    result = _ruff(path, module)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------------------
# The real tree
# --------------------------------------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (a function's import runs when it is called), but those under
    ``if TYPE_CHECKING:`` (never run)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            found += [n for child in node.orelse for n in _import_nodes(child)]
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        found += _import_nodes(node)
    return found


def _with_parents(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def direct_imports(module: str) -> frozenset[str]:
    """The modules ``module`` imports itself: iracdb's by full name, any other by its top-level name."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` folders up
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            if target.split(".")[0] != "iracdb":
                names.add(target.split(".")[0])
            elif target in _modules():  # `from pkg import name`: `pkg.name` only when it is a module
                names.update(n for n in _with_parents(target) if n in _modules())
    names.discard(module)
    return frozenset(names)


def all_imports(module: str) -> set[str]:
    """Everything importing ``module`` runs, followed through iracdb's modules."""
    seen: set[str] = set()
    todo = [n for n in _with_parents(module) if n in _modules()]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [n for n in direct_imports(name) if n in _modules()]
        seen.update(n for n in direct_imports(name) if n not in _modules())
    seen.discard(module)
    return seen


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(prefix: str) -> list[str]:
    return sorted(m for m in _modules() if _under(m, (prefix,)))


def test_the_tree_is_read() -> None:
    """The checks below see the modules they are about (a moved package would otherwise pass them, empty)."""
    assert {"iracdb.photometry.measure", "iracdb.fitsio.image", "iracdb.db.models", "iracdb.columns"} <= set(
        _modules())
    assert {"numpy", "iracdb.photometry.aperture", "iracdb.errors", "iracdb"} <= all_imports(
        "iracdb.photometry.measure")
    assert "sqlalchemy" in all_imports("iracdb.db.queries")


def _workers() -> list[str]:
    """The reduction's worker module, once it exists (the reduction becomes a package with a worker)."""
    return [m for m in ("iracdb.reduce.worker",) if m in _modules()]


@pytest.mark.parametrize("module", [*_layer("iracdb.photometry"), *_layer("iracdb.fitsio"), *_workers()])
def test_pure_layers_import_no_database_terminal_or_dataframe(module: str) -> None:
    """photometry/, fitsio/ and reduce's worker run in every worker process: nothing they import, even through
    other modules, reads a database, talks to the terminal or builds dataframes. (The worker may import the
    reduce package and its other modules, as long as those import none of this.)"""
    drivers = tuple(d for d in DRIVERS if not _under(module, (d,)))
    bad = sorted(n for n in all_imports(module) if _under(n, (*HEAVY, *drivers)))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", _layer("iracdb.photometry"))
def test_photometry_imports_no_file_reader_or_executor(module: str) -> None:
    bad = sorted(n for n in all_imports(module) if _under(n, ("iracdb.fitsio", "iracdb.workers")))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", _layer("iracdb.db"))
def test_db_imports_nothing_above_it(module: str) -> None:
    above = ("iracdb.photometry", "iracdb.reduce", "iracdb.ingest", "iracdb.export", "iracdb.cli", "iracdb.plots",
             "iracdb.compare", "iracdb.demo", "typer", "rich", "pandas")
    bad = sorted(n for n in all_imports(module) if _under(n, above))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", ["iracdb.columns", "iracdb.choices", "iracdb.flags", "iracdb.errors"])
def test_leaf_modules_import_nothing_of_iracdb_but_flags_and_errors(module: str) -> None:
    ours = {n for n in direct_imports(module) if _under(n, ("iracdb",))}
    assert ours <= {"iracdb", "iracdb.flags", "iracdb.errors"}, f"{module} imports {sorted(ours)}"


def test_no_module_imports_photutils() -> None:
    """photutils is the tests' reference (the ``test`` extra), not a run-time dependency: no module of the package
    imports it, at any depth (README, "What iracdb computes itself, and why")."""
    assert [m for m in sorted(_modules()) if "photutils" in direct_imports(m)] == []


def test_listings_import_no_orm() -> None:
    """`iracdb aors` and `iracdb runs` start without SQLAlchemy's ORM set-up (models.py: 0.3-0.5 s)."""
    bad = sorted(n for n in all_imports("iracdb.db.listing") if _under(n, ("sqlalchemy.orm", "iracdb.db.models")))
    assert not bad, f"iracdb.db.listing imports {bad}"
    assert "sqlalchemy" in all_imports("iracdb.db.listing")
