"""BMJD (UTC) -> BMJD_TDB offline: against astropy within 1 ms, and with no network use at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from iracdb.timescales import tdb_minus_tt_s, utc_mjd_to_tdb_mjd

ROOT = Path(__file__).resolve().parents[1]
SECONDS_PER_DAY = 86400.0

#: MJDs (UTC) in 2004, 2009 and 2019 (32, 34 and 37 leap seconds), and at the day's start and end.
DATES = {
    "2004-01-06T07:12": 53010.3,
    "2009-06-18T16:48": 55000.7,
    "2009-12-31T23:59:59": 55196.0 - 1.0 / SECONDS_PER_DAY,
    "2019-08-10T02:24": 58705.1,
    "2019-12-31T12:00": 58848.5,
}
LEAP_SECONDS = {2004: 32.0, 2009: 34.0, 2019: 37.0}


def _astropy_tdb(mjd: np.ndarray) -> np.ndarray:
    from astropy.time import Time
    from astropy.utils import iers

    with iers.conf.set_temp("auto_download", False):  # the test itself stays offline: astropy's bundled tables
        return Time(mjd, format="mjd", scale="utc").tdb.mjd


def test_bmjd_tdb_equals_astropy_within_a_millisecond() -> None:
    mjd = np.array(list(DATES.values()))
    ours = utc_mjd_to_tdb_mjd(mjd)
    difference_s = (ours - _astropy_tdb(mjd)) * SECONDS_PER_DAY
    assert np.abs(difference_s).max() < 1e-3  # the tolerance: 1 ms (measured: below 1 microsecond)


def test_the_offset_is_leap_seconds_plus_32_184_s_plus_tdb_minus_tt() -> None:
    for label, mjd in DATES.items():
        offset_s = (float(utc_mjd_to_tdb_mjd(mjd)) - mjd) * SECONDS_PER_DAY
        expected = LEAP_SECONDS[int(label[:4])] + 32.184
        assert offset_s == pytest.approx(expected, abs=2e-3), label  # |TDB - TT| < 1.7 ms


def test_shapes_and_nan() -> None:
    assert np.shape(utc_mjd_to_tdb_mjd(55000.0)) == ()
    out = utc_mjd_to_tdb_mjd([[55000.0, np.nan]])
    assert out.shape == (1, 2) and np.isnan(out[0, 1]) and np.isfinite(out[0, 0])


def test_no_network_and_no_warning(tmp_path: Path) -> None:
    """In a fresh interpreter whose sockets refuse to connect, with every warning an error, the conversion runs
    (and so does the reduction worker's import of it): nothing tries to download a table."""
    script = textwrap.dedent("""
        import socket, warnings
        warnings.simplefilter("error")
        def refuse(*args, **kwargs):
            raise RuntimeError("network use")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import iracdb.reduce.worker
        from iracdb.timescales import utc_mjd_to_tdb_mjd
        print(repr(float(utc_mjd_to_tdb_mjd(58705.1))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "PATH": ""}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert abs(float(done.stdout) - 58705.1 - (37 + 32.184) / SECONDS_PER_DAY) < 2e-3 / SECONDS_PER_DAY


def _per_value_dtdb(mjd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TT (two-part JD) and ERFA's dtdb evaluated at every instant (what the knots and interpolation replace)."""
    import erfa

    day = np.floor(mjd)
    tt1, tt2 = erfa.taitt(*erfa.utctai(2400000.5 + day, mjd - day))
    return tt1, tt2, erfa.dtdb(tt1, tt2, mjd - day, 0.0, 0.0, 0.0)


def test_interpolated_tdb_minus_tt_equals_erfa_per_value_within_a_picosecond() -> None:
    rng = np.random.default_rng(11)
    mjd = np.concatenate([
        rng.uniform(52900.0, 58900.0, 20_000),  # 2003-2020
        np.floor(rng.uniform(52900.0, 58900.0, 200)) + rng.uniform(-1e-8, 1e-8, 200),  # at midnight
        56109.0 + np.arange(-100, 100) / SECONDS_PER_DAY,  # around the leap second of 2012-06-30
        55000.25 + np.arange(64) * 0.1 / SECONDS_PER_DAY,  # one subarray cube's planes
    ])
    tt1, tt2, exact = _per_value_dtdb(mjd)
    ours = tdb_minus_tt_s(tt1, tt2)
    # Stated tolerance: 1e-12 s (the bound from the second derivative is 3e-14 s; measured 3.4e-14 s).
    assert np.abs(ours - exact).max() < 1e-12
    # The MJD (TDB) is the per-value evaluation's to one unit in the last place (about 1 us).
    expected = (tt1 - 2400000.5) + tt2 + exact / SECONDS_PER_DAY
    assert np.all(np.abs(utc_mjd_to_tdb_mjd(mjd) - expected) <= np.spacing(expected))


def test_each_time_depends_only_on_itself() -> None:
    mjd = 55000.25 + np.arange(640) * 0.1 / SECONDS_PER_DAY + np.repeat(np.arange(10) * 0.01, 64)
    together = utc_mjd_to_tdb_mjd(mjd)
    alone = np.array([utc_mjd_to_tdb_mjd(m) for m in mjd[::37]])
    np.testing.assert_array_equal(alone, together[::37])
