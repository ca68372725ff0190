"""Time scales of the image times, computed offline with ERFA (no astropy time tables, no network).

Spitzer's ``BMJD_OBS`` is a barycentric time on the UTC scale: the time the light would have reached the solar
system barycentre, counted in UTC. High-precision time series want it in TDB (Eastman et al. 2010): UTC -> TAI adds
the leap seconds (ERFA's built-in table, ``eraDat``: 32 s in 2004, 34 s in 2009, 37 s in 2019), TAI -> TT adds
32.184 s, TT -> TDB adds the periodic TDB - TT term (``eraDtdb``, at most 1.7 ms; evaluated at the geocentre: the
time is already barycentric, so no observer term applies, as astropy's ``Time(..., scale="utc").tdb`` does without
a location).

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
        fraction = mjd[ok] - day  # UTC fraction of the day from midnight (for the TDB - TT term's diurnal part)
        tai1, tai2 = erfa.utctai(MJD_ZERO_JD + day, fraction)
        tt1, tt2 = erfa.taitt(tai1, tai2)
        tdb_minus_tt_s = erfa.dtdb(tt1, tt2, fraction, 0.0, 0.0, 0.0)
        out[ok] = (tt1 - MJD_ZERO_JD) + tt2 + tdb_minus_tt_s / SECONDS_PER_DAY
    return out.reshape(np.shape(mjd_utc))


__all__ = ["utc_mjd_to_tdb_mjd"]
