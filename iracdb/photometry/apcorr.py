"""Aperture corrections: the IRAC handbook's published tables (irac-photometry.md §4).

The measured flux is *multiplied* by the factor. Radii are in native pixels. The tables are shipped here so that
the package works anywhere; :func:`read_table` reads another table of the same CSV layout (or the reference copy,
to check the shipped numbers) from a path the user gives.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from os import PathLike

from iracdb.errors import BadOption

#: (mission, radius px, annulus inner px, annulus outer px) -> {channel: factor}. Copied from
#: ``reference/aperture_corrections.csv`` (a test checks the copy). ``inf`` radius: infinite-aperture correction.
Table = dict[tuple[str, float, float | None, float | None], dict[int, float]]

_ROWS = """\
mission,radius_px,annulus_in_px,annulus_out_px,ch1,ch2,ch3,ch4
cryo,inf,,,0.944,0.937,0.772,0.737
cryo,10,12,20,1.000,1.000,1.000,1.000
cryo,8,12,20,1.011,1.013,1.011,1.017
cryo,6,12,20,1.032,1.036,1.030,1.051
cryo,5,12,20,1.047,1.048,1.054,1.064
cryo,5,5,10,1.060,1.063,1.063,1.084
cryo,4,12,20,1.070,1.080,1.076,1.087
cryo,3,12,20,1.112,1.112,1.118,1.213
cryo,3,3,7,1.125,1.120,1.135,1.221
cryo,2,12,20,1.208,1.220,1.349,1.554
cryo,2,2,6,1.215,1.233,1.366,1.568
warm,2,2,6,1.2132,1.2322,,
warm,2,12,20,1.2026,1.2228,,
warm,3,3,7,1.1233,1.1336,,
warm,3,12,20,1.1132,1.1126,,
warm,4,12,20,1.0736,1.0809,,
warm,5,5,10,1.0588,1.0625,,
warm,5,12,20,1.0482,1.0500,,
warm,6,12,20,1.0315,1.0349,,
warm,8,12,20,1.0112,1.0125,,
warm,10,12,20,1.0000,1.0000,,
warm,12,12,20,0.9931,0.9913,,
"""


def parse_table(lines: Iterable[str]) -> Table:
    """Parse CSV lines in the layout of ``reference/aperture_corrections.csv`` into a :data:`Table`."""
    table: Table = {}
    for row in csv.DictReader(lines):
        key = (
            row["mission"].strip(),
            float(row["radius_px"]),
            float(row["annulus_in_px"]) if row["annulus_in_px"].strip() else None,
            float(row["annulus_out_px"]) if row["annulus_out_px"].strip() else None,
        )
        table[key] = {ch: float(row[f"ch{ch}"]) for ch in (1, 2, 3, 4) if row.get(f"ch{ch}", "").strip()}
    return table


def read_table(path: str | PathLike[str]) -> Table:
    """Read an aperture-correction table (CSV, the layout of the shipped table) from ``path``."""
    with open(path, newline="") as fh:
        return parse_table(fh)


#: The published tables (cryo: IRAC handbook; warm: warm-mission table).
PUBLISHED: Table = parse_table(_ROWS.splitlines())


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)


def lookup(
    mission: str, channel: int, radius_px: float, annulus_in_px: float, annulus_out_px: float,
    table: Table | None = None,
) -> float | None:
    """Published aperture correction (multiplicative) for this aperture, or None when there is none."""
    for (m, r, a_in, a_out), values in (PUBLISHED if table is None else table).items():
        if m == mission and _same(r, radius_px) and _same(a_in, annulus_in_px) and _same(a_out, annulus_out_px):
            return values.get(channel)
    return None


def resolve(
    choice: float | str,
    mission: str,
    channel: int,
    radius_px: float,
    annulus_in_px: float,
    annulus_out_px: float,
    table: Table | None = None,
) -> float | None:
    """The aperture correction to apply: an explicit number, the table's value (``"table"``), or None (``"none"``).

    Raises
    ------
    iracdb.errors.BadOption
        ``"table"`` and no published value for this mission, channel, radius and annulus (the message says how to
        give one), or an invalid choice.
    """
    if isinstance(choice, str):
        if choice == "none":
            return None
        if choice == "table":
            value = lookup(mission, channel, radius_px, annulus_in_px, annulus_out_px, table)
            if value is None:
                raise BadOption(
                    f"no published aperture correction for {mission} ch{channel} with a {radius_px:g} px aperture "
                    f"and a {annulus_in_px:g}-{annulus_out_px:g} px annulus; give a value (e.g. --apcorr 1.05) or "
                    "say --apcorr none to apply none (the run records the choice)"
                )
            return value
        raise BadOption(f"aperture correction must be a number, 'table' or 'none', not {choice!r}")
    value = float(choice)
    if not (math.isfinite(value) and value > 0):
        raise BadOption(f"an aperture correction must be a positive number, not {choice!r}")
    return value
