"""Per-AOR differences between two runs (``iracdb compare RUN_A RUN_B``): to choose apertures or check a change.

Both runs are read from the view ``aor_photometry``; rows are matched on (AORKEY, channel, target name). A run may
be compared with itself (every difference is then 0).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from iracdb.db.queries import get_run, run_summary

#: The columns of a comparison row: fluxes and errors in mJy, ``diff_mjy`` = B - A [mJy],
#: ``diff_pct`` = 100 (B - A) / A [%], ``diff_sigma`` = (B - A) / hypot(err_A, err_B) (dimensionless).
COMPARE_COLUMNS: tuple[str, ...] = (
    "aorkey", "channel", "target", "object", "flux_a_mjy", "flux_b_mjy", "diff_mjy", "diff_pct",
    "err_a_mjy", "err_b_mjy", "diff_sigma", "n_used_a", "n_used_b",
)

Key = tuple[int, int, str]

@dataclass(frozen=True)
class Comparison:
    """Two runs side by side.

    Attributes
    ----------
    run_a, run_b : str
        The runs' names.
    rows : list of dict
        One dict per (AORKEY, channel, target) found in both runs, keyed by ``COMPARE_COLUMNS``, ordered by
        AORKEY, channel and target. Fluxes and errors are mJy; ``diff_pct`` is %. A difference is None when a flux
        (or, for ``diff_sigma``, an error) is missing, or when it would divide by zero.
    only_a, only_b : list of (int, int, str)
        (AORKEY, channel, target) found only in run A, or only in run B.
    parameter_differences : list of (str, Any, Any)
        Parameters of the runs (as given, ``runs.params_json``) that differ: (name, value in A, value in B).
    median_diff_pct : float or None
        Median of ``diff_pct`` over the rows that have one [%]; None if none has.
    """

    run_a: str
    run_b: str
    rows: list[dict[str, Any]]
    only_a: list[Key]
    only_b: list[Key]
    parameter_differences: list[tuple[str, Any, Any]]
    median_diff_pct: float | None


def compare_runs(engine: Engine, run_a: str, run_b: str) -> Comparison:
    """Compare the per-AOR results of run B with those of run A.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The archive.
    run_a, run_b : str
        Names of the two runs (the same name twice is allowed: every difference is then 0).

    Returns
    -------
    Comparison

    Raises
    ------
    iracdb.errors.NoSuchRun
        Either run does not exist.
    """
    record_a = get_run(engine, run_a)
    record_b = get_run(engine, run_b)
    rows_a = _keyed(run_summary(engine, run_a))
    rows_b = _keyed(run_summary(engine, run_b))
    matched = sorted(rows_a.keys() & rows_b.keys())
    rows = [_compare_row(rows_a[key], rows_b[key]) for key in matched]
    pcts = [row["diff_pct"] for row in rows if row["diff_pct"] is not None]
    return Comparison(
        run_a=record_a["name"],
        run_b=record_b["name"],
        rows=rows,
        only_a=[key[:3] for key in sorted(rows_a.keys() - rows_b.keys())],
        only_b=[key[:3] for key in sorted(rows_b.keys() - rows_a.keys())],
        parameter_differences=_parameter_differences(record_a["params_json"], record_b["params_json"]),
        median_diff_pct=statistics.median(pcts) if pcts else None,
    )


def _keyed(rows: Any) -> dict[tuple[int, int, str, int], dict[str, Any]]:
    """Rows by (aorkey, channel, target, k): k counts earlier targets of the same name in the same AOR and channel
    (in target order), so that targets sharing a name pair up in order instead of overwriting each other."""
    keyed: dict[tuple[int, int, str, int], dict[str, Any]] = {}
    for row in rows:
        base = (int(row["aorkey"]), int(row["channel"]), row["target"] or "")
        k = 0
        while (*base, k) in keyed:
            k += 1
        keyed[(*base, k)] = dict(row)
    return keyed


def _compare_row(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    flux_a, flux_b = _finite(a["flux_mjy"]), _finite(b["flux_mjy"])
    err_a, err_b = _finite(a["flux_err_mjy"]), _finite(b["flux_err_mjy"])
    diff = flux_b - flux_a if flux_a is not None and flux_b is not None else None
    pct = 100.0 * diff / flux_a if diff is not None and flux_a else None
    sigma = None
    if diff is not None and err_a is not None and err_b is not None and math.hypot(err_a, err_b) > 0:
        sigma = diff / math.hypot(err_a, err_b)
    return {
        "aorkey": int(a["aorkey"]), "channel": int(a["channel"]), "target": a["target"] or "",
        "object": a["object"] if a["object"] is not None else b["object"],
        "flux_a_mjy": flux_a, "flux_b_mjy": flux_b, "diff_mjy": diff, "diff_pct": pct,
        "err_a_mjy": err_a, "err_b_mjy": err_b, "diff_sigma": sigma,
        "n_used_a": a["n_used"], "n_used_b": b["n_used"],
    }


def _finite(value: Any) -> float | None:
    """A float, or None for NULL and for NaN/inf (which PostgreSQL can store): never a NaN in a comparison."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _parameter_differences(json_a: str, json_b: str) -> list[tuple[str, Any, Any]]:
    params_a, params_b = json.loads(json_a), json.loads(json_b)
    return [(name, params_a.get(name), params_b.get(name)) for name in sorted(params_a.keys() | params_b.keys())
            if params_a.get(name) != params_b.get(name)]


__all__ = ["COMPARE_COLUMNS", "Comparison", "compare_runs"]
