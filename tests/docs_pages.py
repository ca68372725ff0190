"""Run the code of the documentation's pages, so that what they show cannot go stale.

:func:`code_blocks` finds the ``.. code-block:: LANGUAGE`` blocks of a reStructuredText page in order;
:func:`console_steps` splits ``console`` blocks into commands (``$ ...``, continued by a trailing backslash) and the
output shown under each; :func:`output_matches` compares an output with the one shown the way doctest does (``...``
stands for any text, runs of white space are equal). A block with ``:class: no-test`` is shown, never run (e.g. a
command that needs a cluster).
"""

from __future__ import annotations

import doctest
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. code-block:: *(?P<language>\S+) *$")
_OPTION = re.compile(r"^ *:(?P<name>[\w-]+):(?P<value>.*)$")


@dataclass(frozen=True)
class Block:
    """One code block of a page: where it starts (1-based line of its directive), its language, text and classes,
    and the line of its text's first line."""

    line: int
    language: str
    text: str
    classes: tuple[str, ...]
    text_line: int = 0


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_at(lines: list[str], start: int, indent: int) -> tuple[list[str], tuple[str, ...], int, int]:
    """The options and body of the directive at ``start``: the body lines, classes, index of the body's first line
    with text, and the index after the block."""
    index, classes = start + 1, ()
    while index < len(lines) and (option := _OPTION.match(lines[index])) and _indent(lines[index]) > indent:
        if option["name"] == "class":
            classes = tuple(option["value"].split())
        index += 1
    body: list[str] = []
    body_start = index
    while index < len(lines) and (not lines[index].strip() or _indent(lines[index]) > indent):
        body.append(lines[index])
        index += 1
    while body and not body[-1].strip():
        body.pop()
    first_text = body_start + next((i for i, line in enumerate(body) if line.strip()), 0)
    return body, classes, first_text, index


def code_blocks(text: str, language: str) -> list[Block]:
    """The ``.. code-block:: language`` blocks of a reStructuredText text, in order, dedented."""
    lines = text.splitlines()
    blocks, index = [], 0
    while index < len(lines):
        found = _DIRECTIVE.match(lines[index])
        if not found:
            index += 1
            continue
        body, classes, first_text, after = _block_at(lines, index, len(found["indent"]))
        if found["language"] == language:
            width = min((_indent(line) for line in body if line.strip()), default=0)
            blocks.append(Block(index + 1, language, "\n".join(line[width:] for line in body).strip("\n") + "\n",
                                classes, first_text + 1))
        index = after
    return blocks


def page_blocks(page: str, language: str) -> list[Block]:
    """The blocks of ``docs/<page>.rst`` in ``language`` that are meant to run (no ``no-test`` class)."""
    text = (DOCS / f"{page}.rst").read_text(encoding="utf-8")
    return [block for block in code_blocks(text, language) if "no-test" not in block.classes]


@dataclass(frozen=True)
class Step:
    """One command of a console block and the output the page shows under it."""

    line: int
    command: str
    output: str


def console_steps(block: Block) -> list[Step]:
    """The commands of a ``console`` block (``$ cmd``, a trailing ``\\`` continues it) with their shown output."""
    steps: list[Step] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith("$ "):
            raise ValueError(f"line {block.line}: console block text before its first command: {lines[index]!r}")
        start, command = index, lines[index][2:]
        while command.endswith("\\") and index + 1 < len(lines):
            index += 1
            command = command[:-1] + "\n" + lines[index]
        index += 1
        output = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        steps.append(Step(block.text_line + start, command, "\n".join(output)))
    return steps


def output_matches(shown: str, actual: str) -> bool:
    """True when ``actual`` is what the page shows: doctest's ELLIPSIS and NORMALIZE_WHITESPACE rules."""
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    return checker.check_output(shown.strip() + "\n", actual.strip() + "\n", flags)
