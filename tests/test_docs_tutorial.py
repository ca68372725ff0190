"""The documentation's code runs: the tutorial's Python blocks in order, the walkthrough's commands with the output
the page shows, on the real XO-3 AOR in an empty folder beside the shared data (as in the checkout)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED
from docs_pages import DOCS, ROOT, Block, code_blocks, console_steps, output_matches, page_blocks


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """An empty folder laid out like the checkout: the shared data at ``../shared``."""
    (tmp_path / "shared").symlink_to(SHARED)
    folder = tmp_path / "checkout"
    folder.mkdir()
    return folder


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with this checkout's ``iracdb`` on the PATH and no database configured."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "iracdb"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m iracdb "$@"\n')
    shim.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("IRACDB_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_walkthrough_commands_print_what_the_page_shows(checkout: Path, shell_env: dict[str, str]) -> None:
    steps = [step for block in page_blocks("cli-walkthrough", "console") for step in console_steps(block)]
    assert len(steps) >= 10, "the walkthrough lost its commands"
    for step in steps:
        done = subprocess.run(["bash", "-c", step.command], cwd=checkout, env=shell_env, capture_output=True,
                              text=True, timeout=300, check=False)
        output = done.stdout + done.stderr
        where = f"docs/cli-walkthrough.rst:{step.line}: {step.command}"
        assert (done.returncode != 0) == ("iracdb: error:" in step.output), f"{where}: exit {done.returncode}\n{output}"
        assert output_matches(step.output, output), f"{where}\nthe page shows:\n{step.output}\nit printed:\n{output}"
    assert (checkout / "xo3.png").stat().st_size > 10_000
    assert (checkout / "export" / "xo3_img_data.parquet").exists()


def test_tutorial_runs_as_written(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = page_blocks("tutorial", "python")
    assert len(blocks) >= 8, "the tutorial lost its code"
    monkeypatch.chdir(checkout)
    for name in [key for key in os.environ if key.startswith("IRACDB_")]:
        monkeypatch.delenv(name)
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    for block in blocks:
        # Compiled with the page's line numbers, so that a traceback points into docs/tutorial.rst.
        code = "\n" * (block.text_line - 1) + block.text
        exec(compile(code, str(DOCS / "tutorial.rst"), "exec"), namespace)
    assert (checkout / "xo3.png").stat().st_size > 10_000


def test_tutorial_code_compiles() -> None:
    """Until the API lands the tutorial cannot run; its code is at least valid Python, block by block."""
    blocks = page_blocks("tutorial", "python")
    assert len(blocks) >= 8
    for block in blocks:
        compile(block.text, f"docs/tutorial.rst:{block.text_line}", "exec")


# --- the extractor itself ---------------------------------------------------------------------------------------

PAGE = """\
Title
=====

.. code-block:: python

   x = 1

   y = x + 1

Text.

.. code-block:: console
   :class: no-test

   $ iracdb reduce --scheduler tcp://host:8786

.. note::

   .. code-block:: python
      :caption: nested

      print(y)

.. code-block:: console

   $ iracdb ingest a \\
       b
   ingest #1: ...
   $ iracdb aors
"""


def test_code_blocks_are_found_in_order_dedented_with_their_options() -> None:
    python = code_blocks(PAGE, "python")
    assert [block.text for block in python] == ["x = 1\n\ny = x + 1\n", "print(y)\n"]
    assert [block.line for block in python] == [4, 19]
    assert [block.text_line for block in python] == [6, 22]
    console = code_blocks(PAGE, "console")
    assert [block.classes for block in console] == [("no-test",), ()]


def test_console_steps_pair_each_command_with_its_shown_output() -> None:
    block = code_blocks(PAGE, "console")[1]
    steps = console_steps(block)
    assert [(step.line, step.command, step.output) for step in steps] == [
        (26, "iracdb ingest a \n    b", "ingest #1: ..."),
        (29, "iracdb aors", ""),
    ]
    with pytest.raises(ValueError, match="before its first command"):
        console_steps(Block(1, "console", "output without a command\n", ()))


def test_output_matches_like_doctest() -> None:
    assert output_matches("a\n...\nz", "a\nb\nc\nz\n")
    assert output_matches("x   1.5", "x 1.5   \n")
    assert not output_matches("a\nz", "a\nb\nz")
    assert not output_matches("", "something")
    assert output_matches("", "")


def test_every_page_with_code_is_run() -> None:
    """A page whose runnable code no test runs would go stale: each such page is listed here, and tested above."""
    tested = {"cli-walkthrough", "tutorial"}
    pages = [str(path.relative_to(DOCS).with_suffix("")) for path in sorted(DOCS.rglob("*.rst"))]
    assert "cli-walkthrough" in pages
    for page in pages:
        runnable = [b for language in ("python", "console") for b in page_blocks(page, language)]
        assert not runnable or page in tested, (
            f"docs/{page}.rst has code blocks no test runs: mark them ':class: no-test' or run them")


def test_readme_links_into_the_docs_exist() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert "docs/cli-walkthrough.rst" in links and "docs/tutorial.rst" in links
    for link in links:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"
