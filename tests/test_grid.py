"""Aperture grids in one run (issue 13): parsing, the photometry of a grid (known answers; the same numbers as one
aperture at a time), the best-aperture scores, grids through the real database on both backends, exports, the
upgrade of a database made at revision 0004, and the whole grid on the real XO-3 AOR."""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from reduce_helpers import measurements, summaries
from reduce_helpers import sql_rows as _rows
from sqlalchemy import Engine, text

from iracdb import best
from iracdb.db import migrate
from iracdb.db.engine import make_engine
from iracdb.errors import BadOption
from iracdb.export import export_run
from iracdb.flags import Flag
from iracdb.ingest import ingest
from iracdb.photometry import psf
from iracdb.photometry.measure import ImageInfo, PhotometryParams, beta_max_radius, measure, measure_apertures
from iracdb.reduce import ReduceOptions, Target, reduce, store
from iracdb.reduce.options import parse_annuli, parse_centroids, parse_radii
from iracdb.reduce.worker import ROW_COLUMNS
from iracdb.synth import AorSpec, SynthArchive, write_archive

XO3_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "irac" / "r46466816"
WARM_SUB = ImageInfo(channel=2, mission="warm", subarray=True)

# --------------------------------------------------------------------------------------------------------------
# Parsing the grid
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "radii"), [
    ("3", (3.0,)),
    (3, (3.0,)),
    ("2,2.5,3", (2.0, 2.5, 3.0)),
    ("3, 2 ,2.5,3", (2.0, 2.5, 3.0)),
    ("2:4:0.5", (2.0, 2.5, 3.0, 3.5, 4.0)),
    ("0.1:0.3:0.1", (0.1, 0.2, 0.3)),  # 0.1 + 2 * 0.1 is 0.30000000000000004: still on the grid
    ("2:3:0.4", (2.0, 2.4, 2.8)),  # the stop is not on the grid
    ("1.5:4:0.25", tuple(1.5 + 0.25 * k for k in range(11))),
    ("3,beta:1:0.5", (3.0, "beta:1:0.5")),
    ("BETA:1.2:0,2", (2.0, "beta:1.2:0")),
])
def test_radii_are_numbers_lists_ranges_and_variable(text: object, radii: tuple) -> None:
    assert parse_radii(text) == radii  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "words"), [
    ("2:1:0.5", "STOP >= START"), ("2:4:0", "STEP > 0"), ("abc", "must be a number of pixels"),
    ("beta:0:1", "must be positive"), ("beta:1", "beta:SCALE:OFFSET"), ("0,3", "must be positive and finite"),
    ("1:2000:1", "at most 1000"), ("2:x:1", "not a finite number"),
])
def test_bad_radii_are_one_line_errors(text: str, words: str) -> None:
    with pytest.raises(BadOption, match=words) as info:
        parse_radii(text)
    assert "\n" not in str(info.value)


def test_annuli_and_centroids() -> None:
    assert parse_annuli((5, 3), (10, 7)) == ((3.0, 7.0), (5.0, 10.0))
    assert parse_annuli(3, 7) == ((3.0, 7.0),)
    with pytest.raises(BadOption, match="inner < outer"):
        parse_annuli((3, 7), (7, 7))
    assert parse_centroids("gauss,moment") == ("moment", "gauss")
    with pytest.raises(BadOption, match="--centroid must be"):
        parse_centroids("moment,peak")


def test_the_grid_is_the_product_and_part_of_the_identity() -> None:
    one = ReduceOptions(targets=(Target("auto"),))
    data = json.loads(one.to_json())
    # One aperture: the JSON (and hash) of a run made before grids existed.
    assert (data["radius_px"], data["annulus_in_px"], data["annulus_out_px"], data["centroid"]) == (3.0, 3.0, 7.0,
                                                                                                     "box")
    assert "best_by" not in data and "best_bin" not in data
    grid = ReduceOptions(targets=(Target("auto"),), radius_px="2:3:0.5", annulus_in_px=(3, 5),
                         annulus_out_px=(7, 10), centroid="gauss,moment")
    apertures = grid.apertures()
    assert len(apertures) == 3 * 2 * 2
    assert [(a.centroid, a.annulus_in_px, a.radius) for a in apertures[:4]] == [
        ("moment", 3.0, 2.0), ("moment", 3.0, 2.5), ("moment", 3.0, 3.0), ("moment", 5.0, 2.0)]
    assert [a.aperture_id for a in apertures] == list(range(12))
    assert ReduceOptions.from_json(grid.to_json()) == grid
    same = ReduceOptions(targets=(Target("auto"),), radius_px="3,2,2.5", annulus_in_px=(5, 3),
                         annulus_out_px=(10, 7), centroid="moment,gauss")
    assert same.params_hash() == grid.params_hash() != one.params_hash()
    assert ReduceOptions(targets=(Target("auto"),), best_by="scatter").params_hash() != one.params_hash()
    with pytest.raises(BadOption, match="--best-by must be"):
        ReduceOptions(targets=(Target("auto"),), best_by="smallest")
    with pytest.raises(BadOption, match="--bin must be"):
        ReduceOptions(targets=(Target("auto"),), best_bin=0)


# --------------------------------------------------------------------------------------------------------------
# The photometry of a grid
# --------------------------------------------------------------------------------------------------------------


def _star_cube(n: int = 16, flux: float = 5000.0, sky: float = 2.0, seed: int = 3) -> tuple[np.ndarray, np.ndarray,
                                                                                                np.ndarray]:
    """Noise-free 32 x 32 planes: a Gaussian star (ch2 FWHM) of total ``flux`` (MJy/sr x px) at sub-pixel
    positions near the centre, on a flat ``sky`` (MJy/sr)."""
    rng = np.random.default_rng(seed)
    x = 15.0 + rng.uniform(-0.5, 0.5, n)
    y = 15.0 + rng.uniform(-0.5, 0.5, n)
    return psf.render_star((32, 32), x, y, flux) + sky, x, y


def test_every_aperture_of_a_grid_gets_the_enclosed_energy_of_the_psf() -> None:
    """A noise-free Gaussian star: the background-subtracted sum of every radius 2.5-6 px (annuli far out, where
    the Gaussian leaves < 1e-12 of its flux) is the PSF model's enclosed energy within 0.1 % (on average over 16
    sub-pixel positions; 0.2 % each). The model: the image pixels integrate the PSF over a pixel and the exact
    aperture spreads each pixel's value over its area, two box convolutions that widen the Gaussian's variance by
    2/12 px² (left out, the 2.5 px aperture is 0.7 % off). The centroid is measured, so this also checks that each
    aperture is placed where the star is."""
    cube, x, y = _star_cube()
    radii = np.arange(2.5, 6.01, 0.5)
    sigma = psf.IRAC_FWHM_PX[2] / (2 * math.sqrt(2 * math.log(2)))
    fwhm_seen = 2 * math.sqrt(2 * math.log(2)) * math.sqrt(sigma**2 + 2 / 12)
    grid = [PhotometryParams(radius_px=r, annulus_in_px=a, annulus_out_px=b, aperture_correction="none",
                             corrections="none", background="mean")
            for a, b in ((8.0, 12.0), (9.0, 14.0)) for r in radii]
    results = measure_apertures(cube, x + 0.3, y - 0.2, WARM_SUB, grid)
    for params, phot in zip(grid, results, strict=True):
        expected = 5000.0 * psf.enclosed_fraction(params.radius_px, fwhm=fwhm_seen)
        assert phot.net_sum_mjy_sr.mean() == pytest.approx(expected, rel=1e-3), params
        np.testing.assert_allclose(phot.net_sum_mjy_sr, expected, rtol=2e-3, err_msg=str(params))
        np.testing.assert_allclose(phot.background_mjy_sr, 2.0, rtol=1e-9)
    sums = [r.net_sum_mjy_sr.mean() for r in results[: len(radii)]]
    assert all(a < b for a, b in itertools.pairwise(sums))


def test_a_grid_gives_each_aperture_the_numbers_it_gets_alone() -> None:
    """With one centroid method and one annulus, every aperture of a grid equals :func:`measure` with that
    aperture alone, bit for bit (the centroid and background computed once are the same numbers); a second
    annulus's apertures equal it alone too when the centroid is the same."""
    rng = np.random.default_rng(7)
    cube, x, y = _star_cube(n=32)
    cube = cube + rng.normal(0, 0.05, cube.shape)
    cube[3, 14, 16] = np.nan
    grid = [PhotometryParams(radius_px=r, annulus_in_px=3.0, annulus_out_px=7.0, aperture_correction=1.0 + r / 100)
            for r in (2.0, 2.5, 3.0, 4.5)]
    grid += [PhotometryParams(radius_px=r, annulus_in_px=3.0, annulus_out_px=7.0, centroid="gauss",
                              aperture_correction="none") for r in (2.5, 3.0)]
    together = measure_apertures(cube, x, y, WARM_SUB, grid)
    for params, phot in zip(grid, together, strict=True):
        alone = measure(cube, x, y, WARM_SUB, params)
        for name, value in alone.as_dict().items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(phot, name), value, err_msg=f"{params} {name}")


def test_variable_radii_follow_the_noise_pixels() -> None:
    """``beta:1:0.5``: per plane r = sqrt(beta) + 0.5, beta the recorded noise pixels of the star (the box
    centroider's 7 x 7 box, :mod:`iracdb.photometry.box`). Stars of FWHM 1.6-2.2 px: beta is 4 pi (sigma^2 + 1/12)
    within 2 % (pixels integrate the PSF), it grows with the width, and the aperture's area is pi r^2 (no bad
    pixels, inside the image)."""
    fwhms = np.array([1.6, 1.8, 2.0, 2.2])
    cube = np.stack([psf.render_star((32, 32), 15.3, 15.6, 5000.0, fwhm=f) for f in fwhms]) + 1.0
    params = PhotometryParams(radius_px=beta_max_radius(1.0, 0.5), radius_beta=(1.0, 0.5), annulus_in_px=9.0,
                              annulus_out_px=14.0, aperture_correction="none", corrections="none")
    fixed = PhotometryParams(radius_px=3.0, annulus_in_px=9.0, annulus_out_px=14.0, aperture_correction="none",
                             corrections="none")
    variable, three = measure_apertures(cube, 15.0, 15.0, WARM_SUB, [params, fixed])
    beta = variable.noise_pixels
    np.testing.assert_array_equal(beta, three.noise_pixels)  # one per image, whatever the aperture
    sigma = fwhms / (2 * math.sqrt(2 * math.log(2)))
    np.testing.assert_allclose(beta, 4 * np.pi * (sigma**2 + 1 / 12), rtol=0.02)
    assert np.all(np.diff(beta) > 0)
    np.testing.assert_allclose(variable.aperture_area_px, np.pi * (np.sqrt(beta) + 0.5) ** 2, rtol=1e-9)
    np.testing.assert_array_equal(variable.x, three.x)  # one centroid for both
    assert not (variable.flags & int(Flag.NON_FINITE | Flag.APERTURE_OFF_EDGE | Flag.MASKED_IN_APERTURE)).any()


def test_apertures_of_one_call_must_share_the_other_choices() -> None:
    cube, x, y = _star_cube(n=2)
    with pytest.raises(BadOption, match="may differ in radius, annulus, centroid and aperture correction only"):
        measure_apertures(cube, x, y, WARM_SUB, [PhotometryParams(), PhotometryParams(background="mean")])


# --------------------------------------------------------------------------------------------------------------
# The best aperture: scores and choice
# --------------------------------------------------------------------------------------------------------------


def test_binned_rms_of_white_noise_with_a_slow_trend_is_the_scatter_over_sqrt_64() -> None:
    """25 600 images (400 cubes) of 1 % white noise on a 2 % slow sinusoidal trend: the binned RMS is
    1 % / sqrt(64) = 1250 ppm within 10 % (statistical precision ~3.5 %), because the trend is removed; without
    the running median it would be ~14 000 ppm."""
    rng = np.random.default_rng(42)
    n = 64 * 400
    t = np.arange(n) * 0.1 / 86400
    trend = 1 + 0.02 * np.sin(2 * np.pi * np.arange(n) / n)
    flux = 1000.0 * trend * (1 + 0.01 * rng.standard_normal(n))
    order = rng.permutation(n)  # the score sorts by time itself
    score = best.binned_rms_ppm(t[order], flux[order], 64)
    assert score == pytest.approx(1e4 / 8, rel=0.10)
    assert best.score("binned-rms", t, flux) == score
    # scatter: the per-image 1 % (the 2 % trend is a slow part of it); error: std / sqrt(n) over the mean
    assert best.scatter_ppm(1000 * (1 + 0.01 * rng.standard_normal(n))) == pytest.approx(1e4, rel=0.03)
    assert best.error_ppm(flux) == pytest.approx(np.std(flux, ddof=1) / np.sqrt(n) / np.mean(flux) * 1e6)
    assert math.isnan(best.binned_rms_ppm(t[:100], flux[:100], 64))  # fewer than two full bins


def test_running_median_shortens_its_window_at_the_ends() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 5, 6, 9, 40):
        v = rng.standard_normal(n)
        expected = [np.median(v[max(0, i - 2): i + 3]) for i in range(n)]
        np.testing.assert_array_equal(best.running_median(v), expected)
    assert 0.9 < best.detrending_factor(400) < 0.97


def test_the_aperture_with_least_added_noise_wins() -> None:
    rng = np.random.default_rng(5)
    n = 64 * 50
    t = np.arange(n, dtype=float)
    signal = 1000 * (1 + 0.003 * np.sin(np.arange(n) / 500))
    noises = [0.004, 0.002, 0.003]  # per aperture
    scores = [best.binned_rms_ppm(t, signal * (1 + s * rng.standard_normal(n))) for s in noises]
    assert best.choose_best(scores, [2.0, 3.0, 4.0]) == 1


def test_ties_go_to_the_smaller_radius_and_nan_never_wins() -> None:
    assert best.choose_best([5.0, 5.0, 5.0], [3.0, 2.0, 4.0]) == 1
    assert best.choose_best([5.0, 5.0], [2.5, 2.5], [7, 3]) == 1
    assert best.choose_best([math.nan, 9.0, math.nan], [1.0, 5.0, 2.0]) == 1
    assert best.choose_best([math.nan, math.nan], [3.0, 2.0]) == 1
    with pytest.raises(ValueError, match="at least one aperture"):
        best.choose_best([], [])


# --------------------------------------------------------------------------------------------------------------
# Grids through the database (both backends)
# --------------------------------------------------------------------------------------------------------------

SUB = AorSpec(aorkey=71000064, channels=(2,), read_mode="SUB", n_exposures=3, mission="warm", object_name="SUBSTAR",
              ra_deg=65.4695, dec_deg=57.8172, flux_mjy=120.0)
STAR = Target("star", SUB.ra_deg, SUB.dec_deg)
GRID = {"radius_px": "2,3", "annulus_in_px": (3.0, 5.0), "annulus_out_px": (7.0, 10.0), "centroid": "moment,gauss"}


@pytest.fixture(scope="module")
def grid_archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("grid") / "archive", [SUB], seed=9, inject_response=True,
                         truth_csv=False)


@pytest.fixture
def grid_engine(engine: Engine, grid_archive: SynthArchive) -> Engine:
    ingest(engine, [str(grid_archive.root)])
    return engine


def test_a_grid_run_on_both_backends(grid_engine: Engine) -> None:
    """8 apertures: 8 rows per plane, 8 AOR rows with one best; the aperture (3 px, 3-7 px, moment) has exactly
    the rows and summary of the one-aperture run with those choices."""
    engine = grid_engine
    reduce(engine, "one", ReduceOptions(targets=(STAR,), centroid="moment"))
    reduce(engine, "grid", ReduceOptions(targets=(STAR,), **GRID))  # type: ignore[arg-type]
    one, grid = measurements(engine, "one"), measurements(engine, "grid")
    assert len(grid) == 8 * len(one) == 8 * 3 * 64
    apertures = _rows(engine, "SELECT a.* FROM run_apertures a JOIN runs r ON r.id = a.run_id WHERE r.name = 'grid' "
                              "ORDER BY aperture_id")
    assert [(a["radius_px"], a["annulus_in_px"], a["annulus_out_px"], a["centroid"]) for a in apertures] == [
        (r, a, b, c) for c in ("moment", "gauss") for a, b in ((3.0, 7.0), (5.0, 10.0)) for r in (2.0, 3.0)]
    same = next(a["aperture_id"] for a in apertures
                if (a["radius_px"], a["annulus_in_px"], a["centroid"]) == (3.0, 3.0, "moment"))
    assert [r for r in grid if r["aperture_id"] == same] == [{**r, "aperture_id": same} for r in one]
    one_summary, grid_summary = summaries(engine, "one"), summaries(engine, "grid")
    assert len(grid_summary) == 8 and sum(bool(r["best"]) for r in grid_summary) == 1
    assert bool(one_summary[0]["best"])
    mine = next(r for r in grid_summary if r["aperture_id"] == same)
    for name in ("flux_mjy", "std_mjy", "n_used", "ap_corr", "score"):
        assert mine[name] == one_summary[0][name], name
    scores = [r["score"] for r in grid_summary]
    assert all(s is not None and s > 0 for s in scores)
    assert grid_summary[[bool(r["best"]) for r in grid_summary].index(True)]["score"] == min(scores)
    # the views: every aperture in aor_photometry, one row in best_photometry; the aperture's columns in both
    view = _rows(engine, "SELECT aperture_id, radius_px, annulus_in_px, centroid, best FROM aor_photometry "
                         "WHERE run = 'grid' ORDER BY aperture_id")
    assert len(view) == 8 and [v["radius_px"] for v in view] == [a["radius_px"] for a in apertures]
    best_rows = _rows(engine, "SELECT aperture_id FROM best_photometry WHERE run = 'grid'")
    assert best_rows == [{"aperture_id": next(r["aperture_id"] for r in grid_summary if r["best"])}]
    images = _rows(engine, "SELECT aperture_id, radius_px, centroid, count(*) AS n FROM image_photometry "
                           "WHERE run = 'grid' GROUP BY aperture_id, radius_px, centroid ORDER BY aperture_id")
    assert [(i["radius_px"], i["centroid"], i["n"]) for i in images] == [
        (a["radius_px"], a["centroid"], 3 * 64) for a in apertures]
    # stored: each plane's own values once per centroid method, each aperture's apart
    stored = _rows(engine, "SELECT i.centroid, count(*) AS n, count(DISTINCT f.image_id) AS images "
                           "FROM measured_images i JOIN runs r ON r.id = i.run_id "
                           "JOIN aperture_fluxes f ON f.image_id = i.id WHERE r.name = 'grid' "
                           "GROUP BY i.centroid ORDER BY i.centroid")
    assert [(s["centroid"], s["n"], s["images"]) for s in stored] == [("gauss", 4 * 192, 192),
                                                                     ("moment", 4 * 192, 192)]


def test_the_writer_refuses_apertures_of_one_image_that_differ_in_its_own_values() -> None:
    """Only one row of an image's own values is stored for all its apertures: if they ever differed (a bug in
    the photometry), the AOR is refused, never stored with one aperture's values silently standing for another's."""
    n = 4
    columns = {name: np.zeros(n) for name in ROW_COLUMNS}
    columns["aperture_id"] = np.array([0, 1, 0, 1], dtype=np.int64)
    columns["plane"] = np.array([0, 0, 1, 1], dtype=np.int64)
    keys = np.stack([columns["plane"]], axis=1)
    _, first, image_of_row = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    store._check_image_level(columns, first, image_of_row.reshape(-1))  # the same: accepted
    columns["noise_pixels"] = np.array([5.0, 5.0, np.nan, np.nan])
    store._check_image_level(columns, first, image_of_row.reshape(-1))  # NaN equals NaN (both NULL)
    columns["xc"] = np.array([15.0, 15.0, 15.2, 15.3])
    with pytest.raises(RuntimeError, match="differ in xc"):
        store._check_image_level(columns, first, image_of_row.reshape(-1))


def test_a_variable_aperture_in_a_run(grid_engine: Engine) -> None:
    """``--radius 3,beta:1:0.5``: two apertures; the variable one is recorded without a fixed radius, no
    published aperture correction applies to it (flagged, recorded), and its area follows each plane's noise
    pixels (pi (sqrt(beta) + 0.5)^2, between that of 2.5 and 4.5 px apertures for this ~1.4 px FWHM star)."""
    engine = grid_engine
    reduce(engine, "beta", ReduceOptions(targets=(STAR,), radius_px="3,beta:1:0.5"))
    apertures = _rows(engine, "SELECT aperture_id, radius_px, radius_spec, aperture_correction_json FROM "
                              "run_apertures ORDER BY aperture_id")
    assert [(a["radius_px"], a["radius_spec"]) for a in apertures] == [(3.0, "3"), (None, "beta:1:0.5")]
    assert json.loads(apertures[1]["aperture_correction_json"])["warm:ch2"] == {
        "aperture_correction": None, "source": "none (no published value for a variable aperture)"}
    rows = [r for r in measurements(engine, "beta") if r["aperture_id"] == 1 and r["flux_mjy"] is not None]
    areas = np.array([r["aperture_area"] for r in rows])
    assert len(rows) > 150 and np.all((areas > np.pi * 2.5**2) & (areas < np.pi * 4.5**2)) and areas.std() > 0
    assert all(r["flags"] & int(Flag.NO_APERTURE_CORRECTION) for r in rows)
    view = _rows(engine, "SELECT DISTINCT radius_spec, radius_px FROM image_photometry WHERE aperture_id = 1")
    assert view == [{"radius_spec": "beta:1:0.5", "radius_px": None}]


def test_grid_exports_round_trip(grid_engine: Engine, tmp_path: Path) -> None:
    engine = grid_engine
    reduce(engine, "grid", ReduceOptions(targets=(STAR,), **GRID))  # type: ignore[arg-type]
    export_run(engine, "grid", tmp_path / "all")
    export_run(engine, "grid", tmp_path / "best", best_only=True)
    with (tmp_path / "all" / "grid_img_data.csv").open() as handle:
        image_rows = list(csv.DictReader(handle))
    view = _rows(engine, "SELECT aperture_id, radius_px, radius_spec, annulus_in_px, annulus_out_px, centroid, "
                         "flux_mjy FROM image_photometry WHERE run = 'grid' "
                         "ORDER BY aorkey, channel, expid, dcenum, plane, target_index, aperture_id")
    assert len(image_rows) == len(view) == 8 * 3 * 64
    for got, want in zip(image_rows, view, strict=True):
        assert int(got["aperture_id"]) == want["aperture_id"] and got["centroid"] == want["centroid"]
        assert float(got["radius_px"]) == want["radius_px"] and got["radius_spec"] == want["radius_spec"]
        assert float(got["annulus_in_px"]) == want["annulus_in_px"]
        assert float(got["annulus_out_px"]) == want["annulus_out_px"]
        assert float(got["flux_mjy"]) == want["flux_mjy"]
    with (tmp_path / "all" / "grid_aor_data.csv").open() as handle:
        aor_rows = list(csv.DictReader(handle))
    assert len(aor_rows) == 8 and Counter(r["best"] for r in aor_rows) == {"false": 7, "true": 1}
    with (tmp_path / "best" / "grid_aor_data.csv").open() as handle:
        best_rows = list(csv.DictReader(handle))
    with (tmp_path / "best" / "grid_img_data.csv").open() as handle:
        best_images = list(csv.DictReader(handle))
    assert len(best_rows) == 1 and best_rows[0]["best"] == "true"
    assert len(best_images) == 3 * 64 and {r["aperture_id"] for r in best_images} == {best_rows[0]["aperture_id"]}


def test_upgrading_a_database_with_a_run_made_at_0004(empty_db_url: str) -> None:
    """A run written at revision 0004 becomes a one-aperture run: its aperture 0 from the recorded options and
    resolved aperture correction, its rows aperture 0, its AOR row best."""
    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine, "0004")
        params = json.loads(ReduceOptions(targets=(Target("auto"),), radius_px=4.0, annulus_in_px=5.0,
                                          annulus_out_px=9.0, centroid="gauss").to_json())
        resolved = {"per_mission_channel": {"warm:ch2": {"aperture_correction": 1.05,
                                                         "aperture_correction_source": "given"}}}
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO runs (id, name, status, params_json, params_hash, resolved_json, software_version, "
                "versions_json, created_at, started_at, n_units, n_units_done, n_images, n_flagged, n_outliers) "
                "VALUES (1, 'old', 'complete', :p, 'h', :r, '0', '{}', :t, :t, 1, 1, 2, 0, 0)"),
                {"p": json.dumps(params), "r": json.dumps(resolved), "t": "2026-01-01 00:00:00"})
            for plane in (0, 1):
                conn.execute(text(
                    "INSERT INTO measurements (run_id, aorkey, channel, target_index, expid, dcenum, plane, "
                    "n_combined, flags, flux_mjy) VALUES (1, 7, 2, 0, 0, 0, :plane, 1, 0, 50.0)"), {"plane": plane})
            conn.execute(text(
                "INSERT INTO aor_summaries (run_id, aorkey, channel, target_index, n_total, n_flagged, n_rejected, "
                "n_used, reject_rule, correction) VALUES (1, 7, 2, 0, 2, 0, 0, 2, 'none', 'none')"))
        migrate.upgrade(engine)
        [aperture] = _rows(engine, "SELECT * FROM run_apertures")
        assert (aperture["run_id"], aperture["aperture_id"], aperture["radius_px"], aperture["radius_spec"],
                aperture["annulus_in_px"], aperture["annulus_out_px"], aperture["centroid"]) == (
            1, 0, 4.0, "4", 5.0, 9.0, "gauss")
        assert json.loads(aperture["aperture_correction_json"]) == {
            "warm:ch2": {"aperture_correction": 1.05, "source": "given"}}
        assert [r["aperture_id"] for r in _rows(engine, "SELECT aperture_id FROM measurements")] == [0, 0]
        [row] = _rows(engine, "SELECT aperture_id, radius_px, centroid, best, score FROM aor_photometry")
        assert (row["aperture_id"], row["radius_px"], row["centroid"], bool(row["best"]), row["score"]) == (
            0, 4.0, "gauss", True, None)
        assert len(_rows(engine, "SELECT * FROM best_photometry")) == 1
        # 0007: each image's own values once (measured_images), each aperture's apart (aperture_fluxes)
        assert [(r["plane"], r["centroid"]) for r in _rows(engine, "SELECT plane, centroid FROM measured_images "
                                                                   "ORDER BY plane")] == [(0, "gauss"), (1, "gauss")]
        assert [r["flux_mjy"] for r in _rows(engine, "SELECT flux_mjy FROM aperture_fluxes")] == [50.0, 50.0]
        # a second aperture of the same run may now exist; back at 0004 only aperture 0 remains
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO aperture_fluxes (image_id, aperture_id, flags, flux_mjy) "
                "SELECT id, 1, 0, 51.0 FROM measured_images WHERE plane = 0"))
        assert len(_rows(engine, "SELECT * FROM measurements")) == 3
        migrate.downgrade(engine, "0006")
        assert sorted((r["plane"], r["aperture_id"], r["flux_mjy"]) for r in _rows(
            engine, "SELECT plane, aperture_id, flux_mjy FROM measurements")) == [(0, 0, 50.0), (0, 1, 51.0),
                                                                                   (1, 0, 50.0)]
        migrate.downgrade(engine, "0004")
        assert len(_rows(engine, "SELECT * FROM measurements")) == 2
        migrate.upgrade(engine)
        assert len(_rows(engine, "SELECT * FROM run_apertures")) == 1
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------------------------
# The whole grid on the real XO-3 AOR
# --------------------------------------------------------------------------------------------------------------


def test_real_xo3_grid(engine: Engine) -> None:
    """30 apertures (10 radii x 3 annuli) on the real warm ch2 subarray AOR: every aperture measured on every
    plane; the fluxes grow with the radius (more of the PSF) and agree across annuli; one best, whose binned RMS
    is below the per-plane scatter / 4 (64-plane bins of a photon-limited star)."""
    if not XO3_DIR.is_dir():
        pytest.fail(f"the real IRAC test data is missing: {XO3_DIR}")
    ingest(engine, [str(XO3_DIR)])
    grid = ReduceOptions(targets=(Target("XO-3", 65.4695, 57.8172),), aorkeys=(46466816,), radius_px="1.5:6:0.5",
                         annulus_in_px=(6.0, 7.0, 8.0), annulus_out_px=(12.0, 14.0, 15.0),
                         aperture_correction="none", reject="none")
    report = reduce(engine, "xo3-grid", grid)
    assert report.status == "complete"
    rows = summaries(engine, "xo3-grid")
    assert len(rows) == 30 and sum(bool(r["best"]) for r in rows) == 1
    planes = rows[0]["n_total"]
    assert planes == 11 * 64 and report.n_images == 30 * planes
    by_annulus: dict[float, list[float]] = {}
    for r in rows:
        by_annulus.setdefault(r["aperture_id"] // 10, []).append(r["median_flux_mjy"])
    for fluxes in by_annulus.values():
        assert all(a < b for a, b in itertools.pairwise(fluxes))
    at_4 = [fluxes[5] for fluxes in by_annulus.values()]  # 4 px: annuli agree within 0.5 %
    assert max(at_4) / min(at_4) - 1 < 0.005
    chosen = next(r for r in rows if r["best"])
    assert chosen["score"] < 1e6 * chosen["std_mjy"] / chosen["flux_mjy"] / 4


# --------------------------------------------------------------------------------------------------------------
# Growth aperture correction
# --------------------------------------------------------------------------------------------------------------

FULL = AorSpec(aorkey=71000320, channels=(1,), read_mode="FULL", n_exposures=6, mission="warm", object_name="FULLSTAR",
               ra_deg=277.1303, dec_deg=26.8440, flux_mjy=80.0, framtime_s=12.0, dithered=True, nan_fraction=0.0,
               psf_model="irac")
FULL_STAR = Target("full", FULL.ra_deg, FULL.dec_deg)


@pytest.fixture(scope="module")
def full_archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("full") / "archive", [FULL, SUB], seed=4, inject_response=True,
                         truth_csv=False)


def test_growth_corrects_every_aperture_to_the_calibration_aperture(engine: Engine, full_archive: SynthArchive
                                                                    ) -> None:
    """Full-array frames of an IRAC-like PSF (wings beyond 3 px): with ``growth`` every aperture's AOR flux is the
    10 px (12-20 px annulus) aperture's within 0.3 % (a per-image median ratio: what the scatter leaves), its
    ap_corr falls with the radius towards 1, and the calibration aperture's rows are not stored."""
    ingest(engine, [str(full_archive.root)])
    reduce(engine, "cal", ReduceOptions(targets=(FULL_STAR,), aorkeys=(FULL.aorkey,), radius_px=10.0,
                                        annulus_in_px=12.0, annulus_out_px=20.0, aperture_correction="none"))
    reduce(engine, "growth", ReduceOptions(targets=(FULL_STAR,), aorkeys=(FULL.aorkey,), radius_px="2,3,4,6",
                                           aperture_correction="growth"))
    [cal] = summaries(engine, "cal")
    rows = summaries(engine, "growth")
    assert [r["aperture_id"] for r in rows] == [0, 1, 2, 3]
    for row in rows:
        assert row["flux_mjy"] == pytest.approx(cal["flux_mjy"], rel=3e-3), row["aperture_id"]
    corrections = [r["ap_corr"] for r in rows]
    assert all(a > b for a, b in itertools.pairwise(corrections)) and corrections[-1] > 1 and corrections[0] < 2
    images = measurements(engine, "growth")
    assert {r["aperture_id"] for r in images} == {0, 1, 2, 3} and len(images) == 4 * FULL.n_exposures
    assert not any(r["flags"] & int(Flag.NO_APERTURE_CORRECTION) for r in images)
    for r in images:
        assert r["ap_corr"] == corrections[r["aperture_id"]]


def test_growth_is_refused_for_subarray_data(engine: Engine, full_archive: SynthArchive) -> None:
    ingest(engine, [str(full_archive.root)])
    with pytest.raises(BadOption, match="growth needs full-array data: the calibration aperture") as info:
        reduce(engine, "g", ReduceOptions(targets=(STAR,), aorkeys=(SUB.aorkey,), aperture_correction="growth"))
    assert "\n" not in str(info.value) and _rows(engine, "SELECT count(*) AS n FROM runs") == [{"n": 0}]


def test_growth_on_the_real_full_array_frame(engine: Engine) -> None:
    """The real warm ch2 full-array frame (AOR 46987776), the brightest source near the pointing: the curve of
    growth of a real IRAC PSF gives corrections that fall with the radius, 3 px between 1.05 and 1.3 (the
    handbook's 3 px, 3-7 px value for warm ch2 is 1.1; the growth curve's is to a 12-20 px annulus)."""
    root = XO3_DIR.parent / "r46987776"
    if not root.is_dir():
        pytest.fail(f"the real IRAC test data is missing: {root}")
    ingest(engine, [str(root)])
    reduce(engine, "real-growth", ReduceOptions(targets=(Target("auto"),), radius_px="3,4,6", reject="none",
                                                aperture_correction="growth"))
    corrections = [r["ap_corr"] for r in summaries(engine, "real-growth")]
    assert len(corrections) == 3 and all(c is not None for c in corrections)
    assert 1.05 < corrections[0] < 1.3 and corrections[0] > corrections[1] > corrections[2] > 0.97


def test_plot_grid(grid_engine: Engine, tmp_path: Path) -> None:
    """``iracdb plot RUN --grid``: three panels; the score lines per annulus and centroid hold every aperture's
    score, the ringed point is the best aperture's; the RMS panel starts at the best aperture's per-image RMS."""
    from iracdb import plots

    engine = grid_engine
    reduce(engine, "grid", ReduceOptions(targets=(STAR,), **GRID))  # type: ignore[arg-type]
    fig = plots.grid_figure(engine, "grid")
    score_ax, rms_ax, plane_ax = fig.axes[:3]
    rows = summaries(engine, "grid")
    chosen = next(r for r in rows if r["best"])
    drawn = [(x, y) for line in score_ax.lines[:-1] for x, y in zip(*line.get_data(), strict=True)]
    radius = {r["aperture_id"]: 2.0 if r["aperture_id"] % 2 == 0 else 3.0 for r in rows}  # radii vary fastest
    assert sorted(drawn) == sorted((radius[r["aperture_id"]], r["score"]) for r in rows)
    ring = score_ax.lines[-1].get_data()
    assert (ring[0][0], ring[1][0]) == (radius[chosen["aperture_id"]], chosen["score"])
    assert len(plane_ax.lines) >= 1 and rms_ax.get_xscale() == "log"
    out = plots.plot_grid(engine, "grid", tmp_path / "g.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_annulus_inside_the_aperture_is_noted(grid_engine: Engine) -> None:
    """Measured as asked, but the run says which apertures have a background annulus starting inside them."""
    report = reduce(grid_engine, "inside", ReduceOptions(targets=(STAR,), radius_px="2,4", annulus_in_px=3.0,
                                                         annulus_out_px=7.0))
    assert report.status == "complete"
    (note,) = [n for n in report.notes if "inside the aperture" in n]
    assert note.startswith("1 aperture(s)") and "4 px in 3-7 px" in note and "2 px" not in note
    default = reduce(grid_engine, "standard", ReduceOptions(targets=(STAR,)))  # 3 px in 3-7 px: the IRAC standard
    assert not [n for n in default.notes if "inside the aperture" in n]


def test_the_terminal_summary_of_a_grid_says_which_aperture_each_row_is(grid_engine: Engine) -> None:
    from iracdb.cli.app import SUMMARY_TABLE_COLUMNS, summary_table_columns
    from iracdb.db.queries import aperture_count

    reduce(grid_engine, "grid", ReduceOptions(targets=(STAR,), **GRID))  # type: ignore[arg-type]
    reduce(grid_engine, "one", ReduceOptions(targets=(STAR,)))
    assert aperture_count(grid_engine, "grid") == 8 and aperture_count(grid_engine, "one") == 1
    assert summary_table_columns(1) == SUMMARY_TABLE_COLUMNS
    grid = summary_table_columns(8)
    flux = grid.index("flux_mjy")
    assert grid[flux + 1:flux + 7] == ("radius_spec", "annulus_in_px", "annulus_out_px", "centroid", "best", "score")
    assert [c for c in grid if c in SUMMARY_TABLE_COLUMNS] == list(SUMMARY_TABLE_COLUMNS)


def test_best_reads_true_or_false_in_the_summary_as_in_the_export(grid_engine: Engine) -> None:
    """SQLite stores booleans as 0/1: the summary (json, csv, table) still says true/false, like the exports."""
    from typer.testing import CliRunner

    from iracdb.cli import app
    from iracdb.db.queries import run_summary

    reduce(grid_engine, "grid", ReduceOptions(targets=(STAR,), **GRID))  # type: ignore[arg-type]
    rows = run_summary(grid_engine, "grid")
    assert sorted(type(r["best"]).__name__ for r in rows) == ["bool"] * 8 and sum(r["best"] for r in rows) == 1
    url = grid_engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(app, ["summary", "grid", "--format", "csv", "--columns", "aperture_id,best",
                                      "--db", url])
    assert result.exit_code == 0, result.output
    assert {line.split(",")[1] for line in result.stdout.splitlines()[1:]} == {"true", "false"}


def test_the_writers_unique_rows_are_numpys() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 5, 1000, 19_200):
        keys = rng.integers(0, 4, size=(n, 5))
        unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        mine = store._unique_rows(keys)
        assert np.array_equal(mine[0], unique) and np.array_equal(mine[1], first)
        assert np.array_equal(mine[2], inverse.reshape(-1))


def test_binned_rms_does_not_depend_on_the_order_of_the_images() -> None:
    rng = np.random.default_rng(4)
    time = np.sort(rng.uniform(0, 1, 640))
    flux = 1 + 1e-3 * rng.standard_normal(640)
    shuffled = rng.permutation(640)
    assert best.binned_rms_ppm(time, flux) == best.binned_rms_ppm(time[shuffled], flux[shuffled])


def test_deleting_a_run_deletes_its_aperture_rows(grid_engine: Engine) -> None:
    """aperture_fluxes has no foreign key (its per-row check cost more than the row on PostgreSQL): a trigger
    deletes an image's aperture rows with it, also when the image goes with its run (ON DELETE CASCADE)."""
    reduce(grid_engine, "grid", ReduceOptions(targets=(STAR,), **GRID))  # type: ignore[arg-type]
    reduce(grid_engine, "one", ReduceOptions(targets=(STAR,)))
    count = "SELECT count(*) AS n FROM aperture_fluxes"
    assert _rows(grid_engine, count)[0]["n"] == 9 * 3 * 64
    with grid_engine.begin() as conn:
        conn.execute(text("DELETE FROM measured_images WHERE plane = 0 AND run_id = "
                          "(SELECT id FROM runs WHERE name = 'one')"))
    assert _rows(grid_engine, count)[0]["n"] == 9 * 3 * 64 - 3
    with grid_engine.begin() as conn:
        conn.execute(text("DELETE FROM runs WHERE name = 'grid'"))
    assert _rows(grid_engine, count)[0]["n"] == 3 * 64 - 3
    assert _rows(grid_engine, "SELECT count(*) AS n FROM measurements")[0]["n"] == 3 * 64 - 3
    assert not _rows(grid_engine, "SELECT f.image_id FROM aperture_fluxes f LEFT JOIN measured_images i "
                                  "ON i.id = f.image_id WHERE i.id IS NULL")
