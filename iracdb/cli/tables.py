"""Terminal tables that never split a cell: the columns that fit the console's width, most useful first.

rich squeezes a table wider than the console by folding its cells, which breaks numbers and keys across lines
(AORKEY ``4646681`` / ``6``). Here every column is as wide as its widest cell or header and never wraps; on a
terminal, the columns that do not fit are left out (and named in a note), or a single row is shown as a vertical
record. Piped or captured output keeps every column. Text from the database is shown literally (rich ``Text``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: What a table costs beyond its cells: one space of padding either side of each cell, a rule between and around.
_PER_COLUMN = 3
_EDGES = 1


def table_width(widths: Sequence[int]) -> int:
    """Width [characters] of a rich table (default box, padding and edges) whose columns are ``widths`` wide."""
    return sum(width + _PER_COLUMN for width in widths) + _EDGES


def fit_columns(widths: dict[str, int], columns: Sequence[str], max_width: int) -> tuple[list[str], list[str]]:
    """The columns to show within ``max_width`` [characters], and those left out.

    Columns are taken in the given order (most useful first), each one if it still fits; the first column is always
    shown.
    """
    shown: list[str] = []
    left_out: list[str] = []
    used = _EDGES
    for column in columns:
        if not shown or used + widths[column] + _PER_COLUMN <= max_width:
            shown.append(column)
            used += widths[column] + _PER_COLUMN
        else:
            left_out.append(column)
    return shown, left_out


def print_table(
    console: Console,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    title: str,
    *,
    cell: Callable[[Any], str],
    numeric: Callable[[Sequence[dict[str, Any]], str], bool],
    wide: bool = False,
    more: str = "--wide or --columns to show them",
) -> None:
    """Print ``rows`` as a table on ``console``, no cell ever folded across lines.

    Parameters
    ----------
    console : rich.console.Console
        Where to print. On a terminal (``console.is_terminal``), only the columns that fit its width are shown, or a
        single row that does not fit is shown as a vertical record; otherwise (piped, captured) every column is.
    rows : sequence of dict
        The rows, keyed by column name.
    columns : sequence of str
        The columns, most useful first.
    title : str
        The table's title (may be empty).
    cell, numeric : callable
        How a value is shown as text, and whether a column is right-aligned (a number).
    wide : bool
        Show every column even on a terminal: lines longer than the terminal are left to the terminal to wrap.
    more : str
        How to show the columns left out, for the note that names them.
    """
    texts = [{column: cell(row[column]) for column in columns} for row in rows]
    widths = {column: max([cell_len(column), *(cell_len(text[column]) for text in texts)]) for column in columns}
    shown: Sequence[str] = columns
    left_out: list[str] = []
    fits = table_width(list(widths.values())) <= console.width
    if console.is_terminal and not wide and not fits:
        if len(rows) == 1:
            print_record(console, [(column, texts[0][column]) for column in columns], title)
            return
        shown, left_out = fit_columns(widths, columns, console.width)
    table = Table(title=Text(title), title_justify="left")
    for column in shown:
        justify: Literal["right", "left"] = "right" if numeric(rows, column) else "left"
        # no_wrap and a minimum width: rich may not squeeze or fold a cell (only a lone column wider than the
        # console folds, below)
        table.add_column(Text(column), justify=justify, no_wrap=True, min_width=widths[column])
    for text in texts:
        table.add_row(*[Text(text[column]) for column in shown])
    width = table_width([widths[column] for column in shown])
    if width > console.width and (wide or not console.is_terminal or len(shown) > 1):
        _print_at_width(console, table, width)
    else:
        if len(shown) == 1 and width > console.width:  # a lone column wider than the terminal: fold it
            table.columns[0].no_wrap, table.columns[0].min_width, table.columns[0].overflow = False, None, "fold"
        console.print(table)
    if not rows:
        console.print("(no rows)")
    if left_out:
        console.print(Text(f"({len(left_out)} more column{'s' if len(left_out) > 1 else ''}: "
                           f"{', '.join(left_out)}; {more})"), soft_wrap=False)


def print_record(console: Console, pairs: Sequence[tuple[str, str]], title: str) -> None:
    """Print (name, value) pairs under a title, one ``name  value`` line each: names never wrap; a value longer than
    the room left wraps at its spaces, and only a word longer than the room folds."""
    # No box: the room it would take is what keeps a 64-character hash whole beside its name at 80 columns.
    table = Table(title=Text(title, style="bold"), title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in pairs:
        table.add_row(Text(name), Text(value))
    console.print(table)


def _print_at_width(console: Console, table: Table, width: int) -> None:
    """Print ``table`` rendered ``width`` characters wide whatever the console's width (rich clamps to it)."""
    saved = console.width
    console.width = width
    try:
        console.print(table, crop=False)
    finally:
        console.width = saved
