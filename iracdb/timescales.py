"""Time scales of the image times, computed offline with ERFA (no astropy time tables, no network).

Spitzer's ``BMJD_OBS`` is a barycentric time on the UTC scale: the time the light would have reached the solar
system barycentre, counted in UTC. High-precision time series want it in TDB (Eastman et al. 2010): UTC -> TAI adds
the leap seconds (ERFA's built-in table, ``eraDat``: 32 s in 2004, 34 s in 2009, 37 s in 2019), TAI -> TT adds
32.184 s, TT -> TDB adds the periodic TDB - TT term (``eraDtdb``, at most 1.7 ms; evaluated at the geocentre: the
time is already barycentric, so no observer term applies, as astropy's ``Time(..., scale="utc").tdb`` does without
a location).

``eraDtdb`` is a series of some 800 terms (about 20 us a value): it is evaluated at knots every
:data:`DTDB_KNOT_S` (60) seconds of TT and interpolated linearly between them (:func:`tdb_minus_tt_s`). Without an
observer term TDB - TT depends on TT alone, and its second derivative is below 7e-17 s/s² (the annual term, 1.66 ms
at 2 pi / year, dominates), so the interpolation error is below (60 s)² / 8 x 7e-17 s/s² = 3e-14 s (0.03 ps), over
ten million times below the resolution of a float64 MJD (about 1 us): the MJD (TDB) equals the value-by-value
evaluation's except, rarely, in its last bit (none of 400,000 random times 2003-2020 differ; with
600 s knots 2 did, by one unit in the last place). A subarray cube (64 planes in 6.4 s or less) needs one or two
knots instead of 64 evaluations.

ERFA is called directly, not through :class:`astropy.time.Time`, so that nothing can try to download IERS tables or
update the leap-second list at run time; its leap-second table is compiled in. Spitzer's data (2003-2020) lie well
within it.
"""

from __future__ import annotations

import erfa
import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Julian date of MJD 0.
MJD_ZERO_JD = 2400000.5
SECONDS_PER_DAY = 86400.0
#: Spacing of the TT instants at which ``eraDtdb`` is evaluated and between which TDB - TT is interpolated, seconds.
DTDB_KNOT_S = 60.0


def utc_mjd_to_tdb_mjd(mjd_utc: ArrayLike) -> NDArray[np.float64]:
    """The same instants on the TDB scale: MJD (UTC) -> MJD (TDB), days.

    Parameters
    ----------
    mjd_utc : array_like
        Times as MJD on the UTC scale, days (e.g. ``BMJD_OBS``, barycentric UTC). NaN stays NaN.

    Returns
    -------
    numpy.ndarray
        MJD on the TDB scale, days (``BMJD_TDB`` for a barycentric input): the input plus the leap seconds in
        force, 32.184 s and TDB - TT.
    """
    mjd = np.atleast_1d(np.asarray(mjd_utc, dtype=np.float64))
    out = np.full(mjd.shape, np.nan)
    ok = np.isfinite(mjd)
    if ok.any():
        day = np.floor(mjd[ok])
        fraction = mjd[ok] - day  # UTC fraction of the day from midnight
        tai1, tai2 = erfa.utctai(MJD_ZERO_JD + day, fraction)
        tt1, tt2 = erfa.taitt(tai1, tai2)
        out[ok] = (tt1 - MJD_ZERO_JD) + tt2 + tdb_minus_tt_s(tt1, tt2) / SECONDS_PER_DAY
    return out.reshape(np.shape(mjd_utc))


def tdb_minus_tt_s(tt1: NDArray[np.float64], tt2: NDArray[np.float64]) -> NDArray[np.float64]:
    """TDB - TT at the geocentre, seconds, at the TT instants ``tt1 + tt2`` (two-part Julian dates): ``eraDtdb``
    (without observer term it depends on TT alone) at the knots every :data:`DTDB_KNOT_S` seconds of TT on either
    side of each instant, interpolated linearly (error below 3e-14 s: see the module docstring). Each value depends
    only on its own instant."""
    day = np.floor((tt1 - MJD_ZERO_JD) + tt2)  # MJD (TT) of the day
    second = (((tt1 - MJD_ZERO_JD) - day) + tt2) * SECONDS_PER_DAY  # of that day, TT
    knot = np.floor(second / DTDB_KNOT_S)
    # Each distinct knot evaluated once: keyed by day and knot number (shifted by 10: rounding may put an instant a
    # hair before its day's start), as exact integers.
    keys = np.concatenate([day * 10_000 + (knot + 10), day * 10_000 + (knot + 11)])
    unique, inverse = np.unique(keys, return_inverse=True)
    knot_day = np.floor(unique / 10_000)
    knot_second = (unique - knot_day * 10_000 - 10) * DTDB_KNOT_S
    at_knot = erfa.dtdb(MJD_ZERO_JD + knot_day, knot_second / SECONDS_PER_DAY, 0.0, 0.0, 0.0, 0.0)
    n = len(day)
    before, after = at_knot[inverse[:n]], at_knot[inverse[n:]]
    return before + (after - before) * ((second - knot * DTDB_KNOT_S) / DTDB_KNOT_S)


__all__ = ["DTDB_KNOT_S", "tdb_minus_tt_s", "utc_mjd_to_tdb_mjd"]
