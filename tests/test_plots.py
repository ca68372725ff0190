"""Figures of a run (`iracdb.plots`): the PNGs are written, readable, of the stated size and not blank, and the data
they draw is right (outliers are the OUTLIER rows; the pixel-phase response shows before the correction and is gone
after it; an overview panel holds one star, so an ``auto`` target gets one per OBJECT); errors for unknown runs and
AORs; an AOR with no usable image still plots; PNG, PDF or SVG by the suffix; no file replaced unless asked, the
database never; names from the database shown literally, never as mathtext. On both backends."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.text import Text
from reduce_helpers import sql_rows
from sqlalchemy import Engine, text

from iracdb import plot_data, plots
from iracdb.db.queries import get_run, run_summary
from iracdb.errors import BadOption, CannotWrite, NoSuchAor, NoSuchRun, OutputExists
from iracdb.flags import Flag
from iracdb.ingest import ingest
from iracdb.reduce import ReduceOptions, Target, reduce
from iracdb.synth import AorSpec, SynthArchive, write_archive

#: Warm ch1 subarray: 128 bright images (noise ~0.07%) whose jitter spans radial pixel phase ~0.3-0.6 px, where the
#: injected response changes by ~1%.
SUB = AorSpec(aorkey=81000001, channels=(1,), read_mode="SUB", n_exposures=2, mission="warm", flux_mjy=1000.0,
              nan_fraction=0.0)
#: Warm ch1 full array, dithered: 8 images, of which the run's minmax rule rejects 2. Another OBJECT than SUB's (at
#: the same position), so an ``auto`` target plots them apart.
FULL = AorSpec(aorkey=81000002, channels=(1,), read_mode="FULL", n_exposures=8, mission="warm", flux_mjy=500.0,
               framtime_s=12.0, dithered=True, object_name="SYNTH-FULL")
#: Warm ch2, pointed elsewhere: the run's target is outside every image, so no image has a flux.
GHOST = AorSpec(aorkey=81000003, channels=(2,), read_mode="FULL", n_exposures=2, mission="warm", ra_deg=10.0,
                dec_deg=-40.0, object_name="GHOST")
STAR = Target("star", 150.1, 2.2)  # the position of SUB and FULL (AorSpec's default)
RUN = "plots run"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("plots") / "archive", [SUB, FULL, GHOST], seed=7,
                         inject_response=True, truth_csv=False)


@pytest.fixture
def reduced(engine: Engine, archive: SynthArchive) -> Engine:
    """The archive ingested and reduced as ``RUN`` (default aperture and corrections; minmax rejection)."""
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    report = reduce(engine, RUN, ReduceOptions(targets=(STAR,), reject="minmax"))
    assert report.status == "complete"
    return engine


def read_png(path: Path, size_in: tuple[float, float]) -> np.ndarray:
    """The image at ``path``, checked to be a PNG of ``size_in`` inches at plots.DPI and not blank."""
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    width, height = (round(v * plots.DPI) for v in size_in)
    assert image.shape[:2] == (height, width)
    assert float(image[..., :3].var()) > 0
    return image


def not_uniform(image: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> bool:
    """Whether the region (fractions of the height and width) holds more than one colour."""
    h, w = image.shape[:2]
    region = image[int(rows[0] * h):int(rows[1] * h), int(cols[0] * w):int(cols[1] * w), :3]
    return float(region.var()) > 0


# --------------------------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------------------------


def test_default_plot_path() -> None:
    assert plots.default_plot_path("run-1.b_2") == Path("run-1.b_2_overview.png")
    assert plots.default_plot_path("run-1", 46466816) == Path("run-1_aor_46466816.png")
    assert plots.default_plot_path("my run/../x:y") == Path("my%20run%2F..%2Fx%3Ay_overview.png")
    assert plots.default_plot_path(".hidden") == Path("%2Ehidden_overview.png")
    assert plots.default_plot_path("a/b") != plots.default_plot_path("a_b")  # as the export's names
    assert len(plots.default_plot_path("/").parts) == 1
    assert len(os.fsencode(plots.default_plot_path("r" * 300, 2**31).name)) < 255


# --------------------------------------------------------------------------------------------------------------
# Files: format, overwriting, the database
# --------------------------------------------------------------------------------------------------------------


SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<?xml"}


@pytest.mark.parametrize("name", ["f.png", "f.pdf", "f.svg", "F.PDF", "f.Svg"])
def test_the_suffix_chooses_the_format(reduced: Engine, tmp_path: Path, name: str) -> None:
    out = plots.plot_aor(reduced, RUN, FULL.aorkey, tmp_path / "figs" / name)
    data = out.read_bytes()
    assert data.startswith(SIGNATURES[out.suffix.lower()])
    if out.suffix.lower() == ".svg":
        assert b"<svg" in data[:1000]
    assert [p.name for p in out.parent.iterdir()] == [name]


@pytest.mark.parametrize("name", ["f.jpg", "f", "f.png.txt", "iracdb.sqlite"])
def test_other_suffixes_are_refused(reduced: Engine, tmp_path: Path, name: str) -> None:
    before = sorted(tmp_path.iterdir())
    with pytest.raises(BadOption, match=r"must end in \.png, \.pdf or \.svg"):
        plots.plot_overview(reduced, RUN, tmp_path / name)
    assert sorted(tmp_path.iterdir()) == before


def test_an_existing_file_is_replaced_only_when_asked(reduced: Engine, tmp_path: Path) -> None:
    out = tmp_path / "mine.png"
    out.write_bytes(b"my figure")
    with pytest.raises(OutputExists, match=r"mine\.png already exists \(--overwrite replaces it\)"):
        plots.plot_overview(reduced, RUN, out)
    with pytest.raises(OutputExists):
        plots.plot_aor(reduced, RUN, SUB.aorkey, out)
    assert out.read_bytes() == b"my figure"
    plots.plot_aor(reduced, RUN, SUB.aorkey, out, overwrite=True)
    assert out.read_bytes().startswith(SIGNATURES[".png"])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("iracdb.sqlite")) == ["mine.png"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # a database file
def test_the_database_is_never_an_output(reduced: Engine, tmp_path: Path) -> None:
    database = Path(str(reduced.url.database))
    (tmp_path / "link.png").symlink_to(database)
    os.link(database, tmp_path / "hard.pdf")
    for name in ("link.png", "hard.pdf"):
        with pytest.raises(CannotWrite, match="it is the database being read"):
            plots.plot_overview(reduced, RUN, tmp_path / name, overwrite=True)
    assert (tmp_path / "link.png").is_symlink() and database.read_bytes()[:16] == b"SQLite format 3\0"
    assert get_run(reduced, RUN)["status"] == "complete"


def test_a_parent_that_is_a_file(reduced: Engine, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(CannotWrite, match=r"cannot write into .*afile: it exists and is not a folder$"):
        plots.plot_overview(reduced, RUN, tmp_path / "afile" / "x.png")
    with pytest.raises(CannotWrite, match=r"cannot write /sys/x\.png: Permission denied$"):  # even for root
        plots.plot_overview(reduced, RUN, Path("/sys/x.png"))
    assert (tmp_path / "afile").read_text() == "keep"


def test_names_from_the_database_are_shown_literally(reduced: Engine, tmp_path: Path) -> None:
    """Run, target and OBJECT names with `$` and `\\` are text, never mathtext (whose parser refuses these)."""
    name, target, object_ = r"odd $x^2$ run \ $\notacommand$", r"$\frac{$ star", r"obj $\bad{x}$"
    with reduced.begin() as conn:
        conn.execute(text("UPDATE runs SET name = :name"), {"name": name})
        conn.execute(text("UPDATE run_targets SET name = :target"), {"target": target})
        conn.execute(text("UPDATE aor_summaries SET object = :object"), {"object": object_})
    overview = plots.overview_figure(reduced, name)
    aor = plots.aor_figure(reduced, name, SUB.aorkey)
    assert overview.get_suptitle().startswith(f"iracdb run {name}: ")
    assert aor.get_suptitle().startswith(f"iracdb run {name}: AOR {SUB.aorkey} ({object_})\n")
    for fig in (overview, aor):
        texts = [t for t in fig.findobj(Text) if "$" in t.get_text()]
        assert len(texts) >= 2 and not any(t.get_parse_math() for t in texts)
        assert any(t.get_text().startswith(f"ch1 {target}") or t.get_text().startswith(f"ch1 · {target}")
                   for t in texts)
    for out in (plots.plot_overview(reduced, name, tmp_path / "o.svg"),
                plots.plot_aor(reduced, name, SUB.aorkey, tmp_path / "a.png")):
        assert out.stat().st_size > 10_000


# --------------------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------------------


def test_radial_pixel_phase_uses_idl_round() -> None:
    x = np.array([10.0, 10.5, -0.5, 3.25, np.nan])
    y = np.array([20.0, 20.0, 0.0, 4.75, 1.0])
    # IDL ROUND rounds 10.5 to 11 and -0.5 to -1 (half away from zero): phases -0.5 and +0.5
    expected = np.array([0.0, 0.5, 0.5, math.hypot(0.25, 0.25), np.nan])
    np.testing.assert_allclose(plots.radial_pixel_phase(x, y), expected, equal_nan=True)


def test_phase_bins() -> None:
    phase = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.7, 0.7, np.nan, 0.2])
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 100.0, 9.0, 9.0, 7.0, np.nan])
    bins = plot_data.phase_bins(phase, values, n_bins=10, min_count=2)
    assert bins.edges[0] == 0.0 and bins.edges[-1] == pytest.approx(math.sqrt(0.5))
    assert bins.count.tolist() == [6, 0, 0, 0, 0, 0, 0, 0, 0, 2]  # NaN pairs skipped
    assert bins.median[0] == 3.5 and bins.median[-1] == 9.0
    assert np.isnan(bins.median[1:-1]).all()
    empty = plot_data.phase_bins(np.array([]), np.array([]))
    assert empty.count.sum() == 0 and np.isnan(empty.median).all()


# --------------------------------------------------------------------------------------------------------------
# Figures and the data they draw
# --------------------------------------------------------------------------------------------------------------


def test_overview(reduced: Engine, tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder" / plots.default_plot_path(RUN)
    assert plots.plot_overview(reduced, RUN, out) == out
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind
    panels = plots._monitor_panels(run_summary(reduced, RUN), auto_targets=())
    assert [(p.channel, p.target) for p in panels] == [(1, "star"), (2, "star")]
    assert [p.title for p in panels] == ["ch1 · star", "ch2 · star"]  # a fixed target: all its AORs in one panel
    assert panels[0].aorkeys == (SUB.aorkey, FULL.aorkey)
    ch1, ch2 = panels
    summary = {r["aorkey"]: r for r in sql_rows(reduced, "SELECT * FROM aor_photometry WHERE run = :run", run=RUN)}
    np.testing.assert_allclose(ch1.flux, [summary[k]["flux_mjy"] for k in (SUB.aorkey, FULL.aorkey)])
    np.testing.assert_allclose(ch1.err, [summary[k]["flux_err_mjy"] for k in (SUB.aorkey, FULL.aorkey)])
    # the weighted mean lies between the two AOR means, nearer the one with the smaller error
    near = ch1.flux[np.argmin(ch1.err)]
    assert min(ch1.flux) < ch1.weighted_mean < max(ch1.flux)
    assert abs(ch1.weighted_mean - near) < abs(ch1.weighted_mean - ch1.flux[np.argmax(ch1.err)])
    # the AOR with no usable image is marked at its first image, not plotted as a point
    assert ch2.flux.size == 0 and ch2.empty_mjd.tolist() == [summary[GHOST.aorkey]["first_mjd"]]
    image = read_png(out, plots.overview_size_in(len(panels)))
    assert not_uniform(image, (0.1, 0.3), (0.1, 0.9))  # the first monitoring panel


def aor_row(aorkey: int, channel: int, target_index: int, target: str, object_: str | None, flux: float | None,
            err: float | None, mjd: float) -> dict[str, Any]:
    """An ``aor_photometry`` row as :func:`plots._read_aor_rows` returns it; no flux: no used image."""
    return {"aorkey": aorkey, "channel": channel, "target_index": target_index, "target": target, "object": object_,
            "mjd": None if flux is None else mjd, "first_mjd": mjd - 0.01, "flux_mjy": flux, "flux_err_mjy": err,
            "std_mjy": None if err is None else 10 * err, "n_used": 0 if flux is None else 20}


def test_monitor_panels_one_star_each() -> None:
    """An ``auto`` target (index 0) measures another star in each field: one panel per channel x OBJECT, each with
    the weighted mean of its own AORs. A fixed target (index 1) keeps one panel per channel, whatever the OBJECTs."""
    rows = [
        aor_row(1, 1, 0, "auto", "HD 1", 45.0, 0.5, 100.0),
        aor_row(2, 1, 0, "auto", "HD 2", 65.0, 0.2, 101.0),
        aor_row(3, 1, 0, "auto", "HD 1", 46.0, 1.0, 102.0),
        aor_row(4, 1, 0, "auto", "HD 3", 280.0, 2.0, 103.0),
        aor_row(5, 1, 0, "auto", "HD 2", None, None, 104.0),  # no usable image
        aor_row(6, 2, 0, "auto", "HD 1", 30.0, 0.3, 100.0),
        aor_row(7, 2, 0, "auto", None, 10.0, 0.1, 105.0),  # no OBJECT
        aor_row(8, 2, 0, "auto", "", 12.0, 0.1, 106.0),  # an empty OBJECT is none
        aor_row(1, 1, 1, "star", "HD 1", 20.0, 0.1, 100.0),
        aor_row(2, 1, 1, "star", "HD 2", 21.0, 0.1, 101.0),
    ]
    panels = plots._monitor_panels(rows, auto_targets={0})
    assert [(p.channel, p.target, p.object, p.aorkeys) for p in panels] == [
        (1, "auto", "HD 1", (1, 3)), (1, "auto", "HD 2", (2,)), (1, "auto", "HD 3", (4,)), (1, "star", None, (1, 2)),
        (2, "auto", "HD 1", (6,)), (2, "auto", None, (7, 8)),
    ]
    assert [p.title for p in panels] == ["ch1 · HD 1 (auto)", "ch1 · HD 2 (auto)", "ch1 · HD 3 (auto)", "ch1 · star",
                                         "ch2 · HD 1 (auto)", "ch2 · no OBJECT (auto)"]
    hd1, hd2, hd3, star, hd1_ch2, nameless = panels
    # weights 1/err²: (45 * 4 + 46 * 1) / 5; nothing of HD 2, HD 3 or channel 2
    assert hd1.weighted_mean == pytest.approx(45.2, rel=1e-12)
    assert hd2.weighted_mean == 65.0 and hd2.empty_mjd.tolist() == [104.0 - 0.01]  # AOR 5 marked in its field only
    assert hd1.empty_mjd.size == hd3.empty_mjd.size == star.empty_mjd.size == 0
    assert hd3.weighted_mean == 280.0 and hd1_ch2.weighted_mean == 30.0
    assert nameless.weighted_mean == pytest.approx(11.0, rel=1e-12)
    assert star.weighted_mean == pytest.approx(20.5, rel=1e-12)
    # the same rows with no auto target: one panel per channel x target, as for fixed targets
    fixed = plots._monitor_panels(rows, auto_targets=())
    assert [(p.channel, p.target, p.aorkeys) for p in fixed] == [
        (1, "auto", (1, 2, 3, 4)), (1, "star", (1, 2)), (2, "auto", (6, 7, 8))]
    # more panels per run than before: the figure still holds at most MAX_OVERVIEW_PANELS
    assert plots.overview_size_in(100) == plots.overview_size_in(plots.MAX_OVERVIEW_PANELS)


def test_overview_auto_target(engine: Engine, archive: SynthArchive, tmp_path: Path) -> None:
    """A run with a fixed and an ``auto`` target: the auto one is found from the run's parameters and plotted per
    OBJECT, so SUB and FULL (two OBJECTs) get a panel each, the fixed target one for both."""
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    report = reduce(engine, "auto run", ReduceOptions(targets=(STAR, Target("auto")), reject="minmax"))
    assert report.status == "complete"
    auto = plots._auto_target_indices(get_run(engine, "auto run"))
    assert auto == {1}
    rows = run_summary(engine, "auto run")
    panels = plots._monitor_panels(rows, auto_targets=auto)
    assert [(p.title, p.aorkeys) for p in panels] == [
        ("ch1 · star", (SUB.aorkey, FULL.aorkey)), ("ch1 · SYNTH-1 (auto)", (SUB.aorkey,)),
        ("ch1 · SYNTH-FULL (auto)", (FULL.aorkey,)), ("ch2 · star", ()), ("ch2 · GHOST (auto)", (GHOST.aorkey,)),
    ]
    flux = {(r["aorkey"], r["target"]): r["flux_mjy"] for r in rows}
    for p in panels[1:3] + panels[4:]:  # one AOR each: its weighted mean is that AOR's mean
        assert p.weighted_mean == pytest.approx(flux[p.aorkeys[0], "auto"], rel=1e-12)
    out = plots.plot_overview(engine, "auto run", tmp_path / "auto.png")
    read_png(out, plots.overview_size_in(len(panels)))


def test_aor_figure_and_outliers(reduced: Engine, tmp_path: Path) -> None:
    for aor in (SUB, FULL):
        out = plots.plot_aor(reduced, RUN, aor.aorkey, tmp_path / plots.default_plot_path(RUN, aor.aorkey))
        image = read_png(out, plots.aor_size_in(1))
        assert not_uniform(image, (0.3, 0.8), (0.05, 0.6))  # the light curve
        assert not_uniform(image, (0.3, 0.8), (0.7, 0.98))  # the pixel-phase panel
        [series] = plots._aor_series(reduced, RUN, aor.aorkey)
        rows = sql_rows(reduced, "SELECT flags, flux_mjy FROM image_photometry WHERE run = :run AND aorkey = :aorkey "
                                 "ORDER BY mjd, expid, dcenum, plane", run=RUN, aorkey=aor.aorkey)
        assert series.flux.size == len(rows) == aor.n_exposures * (64 if aor.read_mode == "SUB" else 1)
        # the red crosses are exactly the rows with the OUTLIER bit: the minmax rule's 2
        flagged = np.array([r["flags"] & Flag.OUTLIER != 0 for r in rows])
        assert np.array_equal(series.outlier, flagged) and series.outlier.sum() == 2
        np.testing.assert_array_equal(series.flux, [r["flux_mjy"] for r in rows])
        assert not (series.used & series.outlier).any() and not (series.used & series.flagged).any()
        # used: all but the 2 outliers and, for the subarray AOR, plane 0 of each cube (FIRST_FRAME)
        first_frames = aor.n_exposures if aor.read_mode == "SUB" else 0
        assert series.used.sum() == len(rows) - 2 - first_frames
        assert series.flagged.sum() == first_frames
        # the drawn outliers are the AOR's extremes (minmax), and the mean line is the summary's
        assert set(series.flux[series.outlier]) == {series.flux.min(), series.flux.max()}
        assert series.mean_mjy == pytest.approx(series.flux[series.used].mean(), rel=1e-12)


def test_pixel_phase_response_before_and_after(reduced: Engine) -> None:
    """Before the correction the flux falls with radial pixel phase (the injected response, ~1% over the phases
    the subarray jitter covers); after it the binned medians are flat within their noise."""
    [series] = plots._aor_series(reduced, RUN, SUB.aorkey)
    before, after = series.normalised()
    overview = plots._run_phase_sample(reduced, RUN)[1]
    assert set(plots._run_phase_sample(reduced, RUN)) == {1}  # ch2 has no used image
    for phase, b, a in ((series.phase[series.used], before[series.used], after[series.used]),
                        (overview.phase, overview.before, overview.after)):
        bins_before, bins_after = plot_data.phase_bins(phase, b), plot_data.phase_bins(phase, a)
        full = np.flatnonzero(bins_after.count >= 10)
        inner, outer = full[0], full[-1]
        assert outer - inner >= 3  # the jitter covers several bins
        # error of a bin's median: 1.25 sigma / sqrt(n), sigma the scatter after correction
        noise = 1.25 * np.std(a[np.isfinite(a)]) / math.sqrt(min(bins_after.count[inner], bins_after.count[outer]))
        trend_before = bins_before.median[inner] - bins_before.median[outer]
        trend_after = bins_after.median[inner] - bins_after.median[outer]
        assert trend_before > 10 * noise, (trend_before, noise)
        assert abs(trend_after) < 5 * noise, (trend_after, noise)
        assert np.nanmax(np.abs(bins_after.median - 1)) < 0.002


def test_phase_sample_does_not_depend_on_batches(reduced: Engine) -> None:
    """Reading in batches of 7 rows (AORs split across batches) gives the same normalised rows as one batch."""
    whole = plots._run_phase_sample(reduced, RUN)[1]
    small = plots._run_phase_sample(reduced, RUN, batch_rows=7)[1]
    # every used image: all but the 2 outliers of each AOR and plane 0 of each SUB cube (FIRST_FRAME)
    assert whole.n_total == small.n_total == SUB.n_exposures * 63 + FULL.n_exposures - 4

    def rows(s: plot_data.PhaseSample) -> np.ndarray:
        table = np.column_stack([s.phase, s.before, s.after])
        return table[np.lexsort(table.T[::-1])]

    np.testing.assert_allclose(rows(whole), rows(small), rtol=1e-13)


def test_phase_sample_is_bounded(reduced: Engine) -> None:
    sample = plots._run_phase_sample(reduced, RUN, batch_rows=10, sample_size=50)[1]
    assert sample.phase.size == 50 and sample.n_total == SUB.n_exposures * 63 + FULL.n_exposures - 4
    assert np.isfinite(sample.phase).all()


def test_aor_with_no_usable_image_still_plots(reduced: Engine, tmp_path: Path) -> None:
    [series] = plots._aor_series(reduced, RUN, GHOST.aorkey)
    assert series.flux.size == GHOST.n_exposures and not np.isfinite(series.flux).any()
    assert not (series.used.any() or series.outlier.any() or series.flagged.any())
    assert math.isnan(series.mean_mjy)
    out = plots.plot_aor(reduced, RUN, GHOST.aorkey, tmp_path / "ghost.png")
    read_png(out, plots.aor_size_in(1))  # the panels carry the note "no usable images"


def test_unknown_run_and_aor(reduced: Engine, tmp_path: Path) -> None:
    with pytest.raises(NoSuchRun, match="no run named 'nope'"):
        plots.plot_overview(reduced, "nope", tmp_path / "out" / "a.png")
    with pytest.raises(NoSuchRun):
        plots.plot_aor(reduced, "nope", SUB.aorkey, tmp_path / "out" / "a.png")
    with pytest.raises(NoSuchAor) as caught:
        plots.plot_aor(reduced, RUN, 12345, tmp_path / "out" / "a.png")
    message = str(caught.value)
    assert f"AOR 12345 is not in run '{RUN}'" in message
    assert f"it holds 3 AOR(s): {SUB.aorkey}, {FULL.aorkey}, {GHOST.aorkey}" in message
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


# --------------------------------------------------------------------------------------------------------------
# Axes that follow the data, legends beside it, notes that name the flags (checked on the figures' objects)
# --------------------------------------------------------------------------------------------------------------


def test_phase_limits_follow_the_data() -> None:
    lo, hi = plot_data.phase_limits(np.array([0.1, 0.2, np.nan, 0.3]))
    assert (lo, hi) == pytest.approx((0.08, 0.32))  # the range padded by 10% of it
    lo, hi = plot_data.phase_limits(np.array([0.2, 0.21]))  # a narrow range: widened about its middle
    assert (lo, hi) == pytest.approx((0.205 - plot_data.MIN_PHASE_SPAN / 2, 0.205 + plot_data.MIN_PHASE_SPAN / 2))
    assert plot_data.phase_limits(np.array([0.0, 0.01])) == pytest.approx((0.0, plot_data.MIN_PHASE_SPAN))
    lo, hi = plot_data.phase_limits(np.array([0.69, 0.7]))  # slid back inside [0, sqrt(0.5)], not cut
    assert hi == plot_data.PHASE_MAX and hi - lo == pytest.approx(plot_data.MIN_PHASE_SPAN)
    assert plot_data.phase_limits(np.array([0.0, 0.7])) == (0.0, plot_data.PHASE_MAX)
    assert plot_data.phase_limits(np.array([np.nan])) == (0.0, plot_data.PHASE_MAX)
    # the binned medians cover the same range, so a narrow jitter gets all the bins
    phase = np.linspace(0.1, 0.3, 101)
    bins = plot_data.phase_bins(phase, np.ones_like(phase), span=(0.1, 0.3))
    assert bins.edges[0] == 0.1 and bins.edges[-1] == 0.3 and (bins.count > 0).all()


def test_time_limits_follow_the_data() -> None:
    assert plot_data.time_limits(np.array([56000.0, 56010.0])) == pytest.approx((55999.5, 56010.5))
    assert plot_data.time_limits(np.array([56000.0, np.nan])) == pytest.approx((55999.5, 56000.5))
    assert plot_data.time_limits(np.array([np.nan])) is None


def test_flag_reasons() -> None:
    assert plot_data.flag_reasons([int(Flag.NOT_IN_FOV)] * 3) == "NOT_IN_FOV ×3"
    both = int(Flag.APERTURE_OFF_EDGE | Flag.SATURATED | Flag.NO_APERTURE_CORRECTION)  # the last does not exclude
    assert plot_data.flag_reasons([both, int(Flag.SATURATED)]) == "SATURATED ×2, APERTURE_OFF_EDGE ×1"
    assert plot_data.flag_reasons([int(Flag.OUTLIER), 0], counts=[5, 2]) == "OUTLIER ×5"
    assert plot_data.flag_reasons([int(Flag.NO_PHOTOMETRIC_CORRECTION)]) == "no flag set"


def legend_clear_of_axes(ax: Any) -> bool:
    """Whether the legend of ``ax`` (drawn) lies wholly outside the axes' data area."""
    legend = ax.get_legend()
    return legend is not None and not legend.get_window_extent().overlaps(ax.get_window_extent())


def test_overview_axes_follow_the_data(reduced: Engine) -> None:
    fig = plots.overview_figure(reduced, RUN)
    fig.canvas.draw()
    monitor, phase = fig.subfigs[0].axes, fig.subfigs[1].axes
    panels = plots._monitor_panels(run_summary(reduced, RUN), auto_targets=())
    assert len(monitor) == len(panels) == 2 and len(phase) == 1
    for ax, panel in zip(monitor, panels, strict=True):
        # each panel's time axis spans its own AORs, not the mission
        times = np.concatenate([panel.mjd, panel.empty_mjd])
        assert ax.get_xlim() == pytest.approx(plot_data.time_limits(times))
        lo, hi = ax.get_xlim()
        assert lo < times.min() and times.max() < hi and hi - lo < 2.0
        assert legend_clear_of_axes(ax)
    # the pixel-phase axis spans the used images' phases, not [0, 0.707]
    sample = plots._run_phase_sample(reduced, RUN)[1]
    assert phase[0].get_xlim() == pytest.approx(plot_data.phase_limits(sample.phase))
    assert phase[0].get_xlim()[0] <= np.nanmin(sample.phase) and np.nanmax(sample.phase) <= phase[0].get_xlim()[1]
    assert phase[0].get_xlim() != pytest.approx((0.0, plot_data.PHASE_MAX))
    # the row's one legend is beside the panels
    [row_legend] = fig.subfigs[1].legends
    assert not row_legend.get_window_extent().overlaps(phase[0].get_window_extent())
    # the AOR with no usable image is named in the legend with its images' flags
    flags = [r["flags"] for r in sql_rows(reduced, "SELECT flags FROM image_photometry WHERE run = :run AND "
                                                    "aorkey = :aorkey", run=RUN, aorkey=GHOST.aorkey)]
    reasons = plot_data.flag_reasons(flags)
    assert reasons != "no flag set"
    labels = [t.get_text() for t in monitor[1].get_legend().get_texts()]
    assert f"AOR {GHOST.aorkey}: no usable image\n  ({reasons})" in labels


def test_aor_figure_notes_and_legends(reduced: Engine) -> None:
    """Legends lie outside the data; a phase panel with too few images for medians says so in its title, not on the
    points; an AOR with no usable image names the flags of its images."""
    fig = plots.aor_figure(reduced, RUN, FULL.aorkey)
    fig.canvas.draw()
    light_curve, phase = fig.axes[:2]
    assert legend_clear_of_axes(light_curve) and legend_clear_of_axes(phase)
    assert "no medians" in phase.get_title()
    assert not any("medians" in t.get_text() for t in phase.texts)
    [series] = plots._aor_series(reduced, RUN, FULL.aorkey)
    used = series.phase[series.used]
    assert phase.get_xlim() == pytest.approx(plot_data.phase_limits(used))

    ghost = plots.aor_figure(reduced, RUN, GHOST.aorkey)
    [ghost_series] = plots._aor_series(reduced, RUN, GHOST.aorkey)
    reasons = plot_data.flag_reasons(ghost_series.flags)
    assert reasons != "no flag set"
    notes = [t.get_text() for t in ghost.axes[0].texts]
    assert notes == [f"no usable image: {GHOST.n_exposures} images, none with a flux\nflags: {reasons}"]
