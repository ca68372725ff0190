"""Per-image quantities of a reduction, through the real database on both backends: the FIRST_FRAME flag and its
exclusion (and --keep-first-frame), bmjd_tdb and noise_pixels stored, the box centroid as the recorded default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from reduce_helpers import measurements, run_record, sql_rows, summaries
from sqlalchemy import Engine

from iracdb import plots
from iracdb.flags import NOT_USED, SUMMARY_EXCLUDED, Flag
from iracdb.ingest import ingest
from iracdb.plot_data import plane_profile
from iracdb.reduce import ReduceOptions, Target, reduce
from iracdb.synth import AorSpec, SynthArchive, write_archive
from iracdb.timescales import utc_mjd_to_tdb_mjd

SUB = AorSpec(aorkey=72000064, channels=(2,), read_mode="SUB", n_exposures=3, mission="warm",
              object_name="SUB ch2", ra_deg=65.4695, dec_deg=57.8172, flux_mjy=120.0)
FULL = AorSpec(aorkey=72000320, channels=(1,), read_mode="FULL", n_exposures=3, mission="warm",
               object_name="FULL", ra_deg=277.1303, dec_deg=26.8440, flux_mjy=80.0, framtime_s=12.0)
TARGETS = (Target("sub", SUB.ra_deg, SUB.dec_deg, aorkey=SUB.aorkey),
           Target("full", FULL.ra_deg, FULL.dec_deg, aorkey=FULL.aorkey))
FIRST = int(Flag.FIRST_FRAME)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("perimage") / "archive", [SUB, FULL], seed=21,
                         inject_response=True, truth_csv=False)


@pytest.fixture
def ingested(engine: Engine, archive: SynthArchive) -> Engine:
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    return engine


def _options(**kwargs: object) -> ReduceOptions:
    return ReduceOptions(targets=TARGETS, reject="none", **kwargs)  # type: ignore[arg-type]


def test_first_frame_flagged_and_kept_out_of_the_summary(ingested: Engine) -> None:
    reduce(ingested, "default", _options())
    reduce(ingested, "keep", _options(keep_first_frame=True))
    rows = measurements(ingested, "default")
    kept = measurements(ingested, "keep")
    sub = [r for r in rows if r["aorkey"] == SUB.aorkey]
    full = [r for r in rows if r["aorkey"] == FULL.aorkey]
    assert len(sub) == 3 * 64 and len(full) == 3
    # Plane 0 of every cube, and nothing else; never a full-array frame; never with --keep-first-frame.
    assert [r["plane"] for r in sub if r["flags"] & FIRST] == [0, 0, 0]
    assert not any(r["flags"] & FIRST for r in full)
    assert not any(r["flags"] & FIRST for r in kept)
    # Otherwise the two runs measured the same numbers.
    assert [r["flags"] & ~FIRST for r in rows] == [r["flags"] for r in kept]
    assert [r["flux_mjy"] for r in rows] == [r["flux_mjy"] for r in kept]

    assert FIRST & int(SUMMARY_EXCLUDED) and FIRST & int(NOT_USED)
    default_sub, default_full = summaries(ingested, "default")
    keep_sub, keep_full = summaries(ingested, "keep")
    usable_planes = [r for r in sub if not r["flags"] & int(SUMMARY_EXCLUDED & ~Flag.FIRST_FRAME)]
    first_usable = [r for r in usable_planes if r["plane"] == 0]
    assert keep_sub["n_used"] == len(usable_planes)
    assert default_sub["n_used"] == len(usable_planes) - len(first_usable)
    assert default_sub["n_flagged"] == keep_sub["n_flagged"] + len(first_usable)
    expected = np.mean([r["flux_mjy"] for r in usable_planes if r["plane"] != 0])
    assert default_sub["flux_mjy"] == pytest.approx(expected, rel=1e-12)
    assert default_full == keep_full  # a full-array AOR has no first frames

    # The view's `used` and flag_first_frame agree with the stored flags, on both runs.
    view = sql_rows(ingested, "SELECT run, plane, used, flag_first_frame FROM image_photometry "
                              "WHERE aorkey = :a ORDER BY run, expid, plane", a=SUB.aorkey)
    for v in view:
        if v["plane"] == 0 and v["run"] == "default":
            assert bool(v["flag_first_frame"]) and not bool(v["used"])
        else:
            assert not bool(v["flag_first_frame"])
    assert any(bool(v["used"]) for v in view if v["run"] == "keep" and v["plane"] == 0)

    # Recorded with the run (part of its identity: the two runs have different hashes).
    assert json.loads(run_record(ingested, "keep")["params_json"])["keep_first_frame"] is True
    assert json.loads(run_record(ingested, "default")["params_json"])["keep_first_frame"] is False
    assert run_record(ingested, "keep")["params_hash"] != run_record(ingested, "default")["params_hash"]


def test_median_images_are_not_first_frames(ingested: Engine) -> None:
    reduce(ingested, "median", _options(subarray="median", aorkeys=(SUB.aorkey,)))
    rows = measurements(ingested, "median")
    assert len(rows) == 3 and not any(r["flags"] & FIRST for r in rows)


def test_bmjd_tdb_noise_pixels_and_the_box_centroid_are_stored(ingested: Engine) -> None:
    reduce(ingested, "times", _options())
    rows = measurements(ingested, "times")
    bmjd = np.array([r["bmjd"] for r in rows])
    tdb = np.array([r["bmjd_tdb"] for r in rows])
    np.testing.assert_array_equal(tdb, utc_mjd_to_tdb_mjd(bmjd))
    # 2010s data: 34-37 leap seconds + 32.184 s, TDB - TT within 2 ms.
    offset_s = (tdb - bmjd) * 86400.0
    assert ((offset_s > 34 + 32.184 - 0.002) & (offset_s < 37 + 32.184 + 0.002)).all()
    assert json.loads(run_record(ingested, "times")["params_json"])["centroid"] == "box"
    # Noise pixels of the synthetic IRAC-like stars: finite on measured images, a few pixels to a dozen.
    beta = np.array([r["noise_pixels"] for r in rows if not r["flags"] & int(Flag.CENTROID_FAILED)])
    assert beta.size > 150 and np.isfinite(beta).all()
    assert 3.0 < np.median(beta) < 15.0
    view = sql_rows(ingested, "SELECT bmjd_tdb, noise_pixels FROM image_photometry WHERE run = 'times'")
    assert len(view) == len(rows) and all(v["bmjd_tdb"] is not None for v in view)


def test_plane_profile_known_answer() -> None:
    rng = np.random.default_rng(4)
    plane = np.tile(np.arange(64), 6)
    cube = np.repeat(np.arange(6) * 7 + 3, 64)  # any labels
    flux = np.repeat([100.0, 90.0, 110.0, 95.0, 105.0, 99.0], 64) * (1 + 1e-4 * rng.standard_normal(64 * 6))
    flux[plane == 0] *= 0.99  # plane 0 reads 1 % low
    flags = np.zeros(plane.size, dtype=np.int64)
    flags[plane == 0] = FIRST  # FIRST_FRAME does not keep plane 0 out of the profile ...
    flags[5] = int(Flag.CENTROID_FAILED)  # ... other excluding bits do
    flux[5] = 1e6
    flux[64 + 7] = np.nan
    profile = plane_profile(plane, cube, flux, flags)
    assert profile.plane.tolist() == list(range(64))
    assert profile.count[0] == 6 and profile.count[5] == 5 and profile.count[7] == 5
    assert profile.first_frame_offset == pytest.approx(-0.01, abs=3e-4)  # noise 1e-4 per plane
    np.testing.assert_allclose(profile.median[1:], 1.0, atol=3e-4)
    empty = plane_profile(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
    assert (empty.count == 0).all() and np.isnan(empty.first_frame_offset)


def test_aor_figure_of_a_subarray_run_shows_flux_by_plane(ingested: Engine, tmp_path: Path) -> None:
    reduce(ingested, "plot", _options())
    fig = plots.aor_figure(ingested, "plot", SUB.aorkey)
    assert len(fig.axes) == 3  # light curve, pixel phase, flux by plane
    assert fig.axes[2].get_xlabel() == "plane index"
    full = plots.aor_figure(ingested, "plot", FULL.aorkey)
    assert len(full.axes) == 2  # a full-array AOR has no planes
    out = plots.plot_aor(ingested, "plot", SUB.aorkey, tmp_path / "sub.png")
    assert out.stat().st_size > 10_000
