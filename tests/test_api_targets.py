"""Targets in the Python API: every accepted form, and proper motion (propagation, placement on images, record)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

import iracdb
from iracdb.errors import BadOption, DatabaseError
from iracdb.photometry.motion import propagate
from iracdb.reduce.keywords import reduce_settings, targets_from
from iracdb.reduce.options import ReduceOptions, Target
from tests.conftest import SUBARRAY_AOR_DIR

XO3 = "04:21:52.7 +57:49:01.9"
XO3_DEG = (65.46958333, 57.81719444)


def _astropy_moved(coord: SkyCoord, when: Time) -> SkyCoord:
    """astropy's own propagation (no distance: ERFA says it assumes a far star, which is what iracdb assumes)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*distance overridden.*")
        return coord.apply_space_motion(new_obstime=when)


@pytest.mark.parametrize(("ra", "dec", "pm_ra", "pm_dec"), [
    (269.4520769, 4.6933649, -801.551, 10362.394),  # Barnard's star, the largest proper motion
    (65.4695, 57.8172, 120.0, -340.0),
    (10.0, 89.9, 5000.0, 3000.0),  # near the pole, where RA moves fast
    (359.9999, -45.0, 2000.0, 0.0),  # across RA = 0
])
def test_propagation_equals_astropy_apply_space_motion(ra: float, dec: float, pm_ra: float, pm_dec: float) -> None:
    epoch = Time("J2016.0")
    coord = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, pm_ra_cosdec=pm_ra * u.mas / u.yr, pm_dec=pm_dec * u.mas / u.yr,
                     obstime=epoch)
    # Times in TT, the epoch's scale (iracdb uses each image's UTC MJD as it is: see Target.position_at).
    for when in (Time("J2004.0"), Time(56270.48, format="mjd", scale="tt"), Time("J2019.5")):
        years = (when.mjd - epoch.mjd) / 365.25
        ra_t, dec_t = propagate(ra, dec, pm_ra, pm_dec, years)
        separation = SkyCoord(ra_t * u.deg, dec_t * u.deg).separation(_astropy_moved(coord, when))
        assert separation.to_value(u.mas) < 1e-3  # the docstring says 1e-7 mas; 1 µas leaves room


def test_a_moving_target_moves_by_its_proper_motion_between_two_epochs() -> None:
    target = targets_from(SkyCoord(ra=XO3_DEG[0] * u.deg, dec=XO3_DEG[1] * u.deg, pm_ra_cosdec=300 * u.mas / u.yr,
                                   pm_dec=-400 * u.mas / u.yr, obstime=Time("J2000.0")))[0]
    assert target.moving and target.epoch_mjd == pytest.approx(51544.5)
    (ra1, ra2), (dec1, dec2) = target.position_at(np.array([51544.5, 51544.5 + 10 * 365.25]))
    assert (ra1, dec1) == pytest.approx(XO3_DEG, abs=1e-12)
    moved = SkyCoord(ra1 * u.deg, dec1 * u.deg).spherical_offsets_to(SkyCoord(ra2 * u.deg, dec2 * u.deg))
    assert moved[0].to_value(u.mas) == pytest.approx(3000.0, abs=0.01)  # 300 mas/yr x 10 yr, eastward
    assert moved[1].to_value(u.mas) == pytest.approx(-4000.0, abs=0.01)
    fixed = Target("fixed", *XO3_DEG)
    assert fixed.position_at(np.array([0.0, 60000.0]))[0].tolist() == [XO3_DEG[0]] * 2


def test_every_form_of_target_is_accepted() -> None:
    (xo3,) = targets_from(XO3)  # the name is the text as given; 4h21m52.7s = 65.469583 deg
    assert xo3.name == XO3 and (xo3.ra_deg, xo3.dec_deg) == pytest.approx((65.4695833333, 57.8171944444), abs=1e-9)
    assert targets_from("auto") == [Target("auto")]
    assert targets_from((65.5, 57.8)) == [Target("65.50000 +57.80000", 65.5, 57.8)]
    assert targets_from([XO3, (65.5, 57.8), "auto"])[1:] == [Target("65.50000 +57.80000", 65.5, 57.8),
                                                             Target("auto")]
    array = targets_from(SkyCoord([10, 20] * u.deg, [-5, 5] * u.deg))
    assert [c for t in array for c in (t.ra_deg, t.dec_deg)] == pytest.approx([10, -5, 20, 5])
    galactic = targets_from(SkyCoord(l=0 * u.deg, b=0 * u.deg, frame="galactic"))[0]  # converted to ICRS
    assert (galactic.ra_deg, galactic.dec_deg) == pytest.approx((266.40498829, -28.93617776), abs=1e-6)
    table = Table({"ra": [65.5, 10.0] * u.deg, "dec": [57.8, -5.0], "name": ["a", "b"], "aorkey": [46466816, 1]})
    assert targets_from(table) == [Target("a", 65.5, 57.8, aorkey=46466816), Target("b", 10.0, -5.0, aorkey=1)]
    assert targets_from([{"ra": 1.0, "dec": 2.0, "object": "XO-3"}]) == [Target("1.00000 +2.00000", 1.0, 2.0,
                                                                                 object="XO-3")]
    options, execution = reduce_settings(target=XO3, auto=True, aor=46466816, annulus=[4, 9], workers=1)
    assert [t.name for t in options.targets] == [XO3, "auto"] and options.aorkeys == (46466816,)
    assert (options.annulus_in_px, options.annulus_out_px, execution.workers) == (4.0, 9.0, 1)


@pytest.mark.parametrize(("target", "message"), [
    (SkyCoord(1 * u.deg, 2 * u.deg, pm_ra_cosdec=1 * u.mas / u.yr, pm_dec=1 * u.mas / u.yr), "needs obstime"),
    ((400.0, 0.0), "RA must be in [0, 360)"),
    ("nowhere", "a sky position is 'RA DEC'"),
    (Table({"x": [1.0]}), "needs 'ra' and 'dec'"),
    (3.5, "not a target"),
])
def test_what_is_not_a_target_is_one_clear_bad_option(target: object, message: str) -> None:
    with pytest.raises(BadOption, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        targets_from(target)


def test_a_fixed_target_records_what_it_did_before_proper_motions_existed() -> None:
    """Runs made before targets could move keep their parameter hash: a fixed target's record has no new keys."""
    options = ReduceOptions(targets=(Target(XO3, *XO3_DEG),))
    assert json.loads(options.to_json())["targets"] == [
        {"name": XO3, "ra_deg": XO3_DEG[0], "dec_deg": XO3_DEG[1], "aorkey": None, "object": None}]
    assert ReduceOptions.from_json(options.to_json()) == options


def test_a_skycoord_with_proper_motion_is_measured_where_the_star_was_and_the_run_records_it(db_url: str) -> None:
    pm_ra, pm_dec = 470.0, -620.0  # mas/yr: the 13 years from J2000 to the AOR (Dec 2012) move it ~10" (~8 px)
    start = SkyCoord(ra=XO3_DEG[0] * u.deg, dec=XO3_DEG[1] * u.deg, pm_ra_cosdec=pm_ra * u.mas / u.yr,
                     pm_dec=pm_dec * u.mas / u.yr, obstime=Time("J2000.0"))
    with iracdb.open(db_url) as arc:
        arc.ingest(SUBARRAY_AOR_DIR, workers=1)
        fixed = arc.reduce("fixed", XO3_DEG, workers=1)
        moving = arc.reduce("moving", start, workers=1)
        columns = ["expid", "dcenum", "plane", "x_expected", "y_expected", "file"]
        rows_fixed, rows_moving = fixed.images(columns=columns), moving.images(columns=columns)
        provenance, fixed_resolved = moving.provenance, fixed.provenance["resolved"]
        exposures = arc.exposures(46466816)
    with pytest.raises(DatabaseError, match="is closed"):
        moving.aors()
    target = provenance["parameters"]["targets"][0]
    assert [target["pm_ra_cosdec_mas_per_yr"], target["pm_dec_mas_per_yr"]] == pytest.approx([pm_ra, pm_dec], abs=1e-9)
    assert target["epoch_mjd"] == pytest.approx(51544.5)
    assert "apply_space_motion" in provenance["resolved"]["proper_motion"]
    assert "proper_motion" not in fixed_resolved
    mjd_obs = {int(e["expid"]): float(e["mjd_obs"]) for e in exposures}
    checked = 0
    for expid in (0, 10):
        first = np.flatnonzero((rows_moving["expid"] == expid) & (rows_moving["plane"] == 0))[0]
        with fits.open(rows_moving["file"][first]) as hdul:
            wcs = WCS(hdul[0].header, naxis=2)
        when = Time(mjd_obs[expid], format="mjd", scale="tt")  # as iracdb takes it (see Target.position_at)
        expected = wcs.world_to_pixel(_astropy_moved(start, when))
        # iracdb's own TAN-SIP inverse against astropy's WCS on the same header: both to a thousandth of a pixel.
        assert rows_moving["x_expected"][first] == pytest.approx(float(expected[0]), abs=2e-3)
        assert rows_moving["y_expected"][first] == pytest.approx(float(expected[1]), abs=2e-3)
        fixed_expected = wcs.world_to_pixel(SkyCoord(XO3_DEG[0] * u.deg, XO3_DEG[1] * u.deg))
        shift = (rows_moving["x_expected"][first] - rows_fixed["x_expected"][first],
                 rows_moving["y_expected"][first] - rows_fixed["y_expected"][first])
        astropy_shift = (float(expected[0] - fixed_expected[0]), float(expected[1] - fixed_expected[1]))
        assert shift == pytest.approx(astropy_shift, abs=3e-3) and np.hypot(*shift) > 5
        checked += 1
    assert checked == 2


def test_keywords_unknown_to_reduce_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    with iracdb.open(tmp_path / "a.sqlite") as arc, pytest.raises(BadOption, match="did you mean 'radius'"):
        arc.reduce("r", XO3, radiuss=3)
    assert not (tmp_path / "a.sqlite").exists()
