"""Terminal tables never split a number or key across lines: at 80, 100 and 160 columns the columns that fit are
shown (most useful first) and the rest named in a note, a single row that does not fit is a vertical record, and
piped output keeps every column exactly as before."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from rich.table import Table
from rich.text import Text

from iracdb.cli import tables
from iracdb.cli.app import _cell, _numeric

COLUMNS = ("aorkey", "channel", "target", "object", "mjd", "n_used", "flux_mjy", "median_flux_mjy", "std_mjy",
           "flux_err_mjy", "spread_pct", "mission", "read_mode", "correction", "ap_corr")


def _rows(n: int) -> list[dict[str, object]]:
    return [{"aorkey": 46466816 + 256 * i, "channel": 1 + i % 4, "target": "04:21:52.7 +57:49:01.9",
             "object": f"XO-3 [bold]{i}[/bold]", "mjd": 56270.48136231113 + i, "n_used": 701 - i,
             "flux_mjy": 55.945816248454456 * (1 + i), "median_flux_mjy": 55.95111359313526,
             "std_mjy": 0.2591966965863192, "flux_err_mjy": 0.0097897241186097, "spread_pct": 0.46329951722436385,
             "mission": "warm", "read_mode": "SUB", "correction": "irac_aphot_corr:warm", "ap_corr": 1.1336}
            for i in range(n)]


def _print(rows: list[dict[str, object]], width: int, *, terminal: bool, wide: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None)
    tables.print_table(console, rows, COLUMNS, "run x", cell=_cell, numeric=_numeric, wide=wide)
    return buffer.getvalue()


@pytest.mark.parametrize("width", [80, 100, 160])
def test_no_cell_is_split_and_left_out_columns_are_named(width: int) -> None:
    rows = _rows(5)
    out = _print(rows, width, terminal=True)
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), out
    table_lines = [line for line in lines if line.startswith(("│", "┃"))]
    header = " ".join(table_lines[:1])
    shown = [column for column in COLUMNS if re.search(rf"\b{column}\b", header)]
    assert shown[:3] == ["aorkey", "channel", "target"]  # most useful first
    for row in rows:  # every shown value whole on its row's line
        line = next(line for line in table_lines if str(row["aorkey"]) in line)
        for column in shown:
            assert _cell(row[column]) in line, (column, line)
    left_out = [column for column in COLUMNS if column not in shown]
    if left_out:
        note = " ".join(out[out.index("(" + str(len(left_out)) + " more column"):].split())
        assert all(column in note for column in left_out) and "--wide or --columns" in note
    else:
        assert "more column" not in out


@pytest.mark.parametrize("width", [80, 100])
def test_one_row_that_does_not_fit_is_a_vertical_record(width: int) -> None:
    rows = _rows(1)
    out = _print(rows, width, terminal=True)
    assert all(len(line) <= width for line in out.splitlines())
    for column in COLUMNS:  # every column, name and value on one line
        assert any(column in line and _cell(rows[0][column]) in line for line in out.splitlines()), column
    assert "[bold]0[/bold]" in out and "more column" not in out  # database text literal


def test_wide_shows_every_column_in_whole_rows() -> None:
    rows = _rows(3)
    out = _print(rows, 80, terminal=True, wide=True)
    for row in rows:
        line = next(line for line in out.splitlines() if str(row["aorkey"]) in line)
        assert all(_cell(row[column]) in line for column in COLUMNS)


def test_piped_output_keeps_full_rows_as_before() -> None:
    rows = _rows(4)
    out = _print(rows, 250, terminal=False)
    # What the table printed before columns were fitted to the terminal.
    before = io.StringIO()
    table = Table(title=Text("run x"), title_justify="left")
    for column in COLUMNS:
        table.add_column(Text(column), justify="right" if _numeric(rows, column) else "left", overflow="fold")
    for row in rows:
        table.add_row(*[Text(_cell(row[c])) for c in COLUMNS])
    Console(file=before, width=250, color_system=None).print(table)
    assert out == before.getvalue()


def test_piped_output_wider_than_the_console_is_not_folded() -> None:
    rows = _rows(2)
    out = _print(rows, 60, terminal=False)
    for row in rows:
        line = next(line for line in out.splitlines() if str(row["aorkey"]) in line)
        assert all(_cell(row[column]) in line for column in COLUMNS)


def test_fit_columns_keeps_the_order_and_always_the_first() -> None:
    widths = {"a": 10, "b": 50, "c": 5}
    assert tables.fit_columns(widths, ["a", "b", "c"], 30) == (["a", "c"], ["b"])
    assert tables.fit_columns(widths, ["b", "a"], 20) == (["b"], ["a"])
    assert tables.table_width([10, 5]) == 22
