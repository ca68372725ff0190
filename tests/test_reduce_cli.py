"""`iracdb reduce` on the command line: help, every option reaching the run, one-line errors with exit status 2,
the printed summary, and no password anywhere; on both backends."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from reduce_helpers import measurements, summaries
from reduce_helpers import sql_rows as _rows
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from iracdb.cli import app
from iracdb.db import queries
from iracdb.db.engine import make_engine
from iracdb.flags import Flag
from iracdb.ingest import ingest
from iracdb.reduce import ReduceOptions, Target, read_targets_file, reduce
from iracdb.reduce import keywords as reduce_keywords
from iracdb.synth import AorSpec, SynthArchive, write_archive

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

ALPHA = AorSpec(aorkey=71000064, channels=(2,), read_mode="SUB", n_exposures=2, mission="warm",
                object_name="ALPHA ch2 sub", ra_deg=65.4695, dec_deg=57.8172, flux_mjy=120.0)
BETA = AorSpec(aorkey=71000320, channels=(1,), read_mode="FULL", n_exposures=3, mission="warm",
               object_name="BETA", ra_deg=277.1303, dec_deg=26.8440, flux_mjy=80.0, framtime_s=12.0, dithered=True,
               file_types=("bcd", "bunc", "bimsk", "cbcd", "cbunc"))
ALPHA_TARGET = f"{ALPHA.ra_deg} {ALPHA.dec_deg}"


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("cli") / "archive", [ALPHA, BETA], seed=31, truth_csv=False)


@pytest.fixture
def catalogued(db_url: str, archive: SynthArchive) -> str:
    engine = make_engine(db_url)
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    engine.dispose()
    return db_url


def test_reduce_help() -> None:
    result = run("reduce", "--help")
    assert result.exit_code == 0
    assert "Usage: iracdb reduce [OPTIONS]" in result.stdout
    for option in ("--run-name", "--aor", "--object", "--channel", "--file-type", "--target", "--targets-file",
                   "--auto", "--radius", "--annulus", "--centroid", "--background", "--corrections",
                   "--aperture-correction", "--reject", "--subarray", "--workers", "--scheduler", "--resume", "--db",
                   "--best-by", "--bin"):
        assert option in result.stdout, option
    assert "reduce" in run("--help").stdout


def test_bad_options_are_one_line_with_exit_2(catalogued: str, tmp_path: Path) -> None:
    base = ("reduce", "--run-name", "bad", "--db", catalogued)
    for args, words in [
        ((*base, "--auto", "--reject", "median"), "bad reject rule 'median'"),
        ((*base, "--auto", "--reject", "sigma:0"), "bad reject rule"),
        (base, "say where to measure"),
        ((*base, "--auto", "--aor", "999"), "AOR(s) 999 not in the catalogue"),
        ((*base, "--auto", "--scheduler", "nowhere"), "--scheduler must be tcp://HOST:PORT or local:N"),
        ((*base, "--auto", "--workers", "0"), "--workers must be at least 1"),
        ((*base, "--auto", "--channel", "7"), "--channel must be 1, 2, 3 or 4"),
        ((*base, "--auto", "--aperture-correction", "-1"),
         "--aperture-correction must be auto, none, growth or a positive"),
        ((*base, "--auto", "--centroid", "moment,peak"), "--centroid must be box, moment or gauss or a list of them"),
        ((*base, "--auto", "--radius", "4:2:0.5"), "--radius range '4:2:0.5'"),
        ((*base, "--auto", "--best-by", "smallest"), "smallest"),
        ((*base, "--auto", "--bin", "0"), "--bin must be a positive whole number"),
        ((*base, "--target", "400 100"), "cannot read the sky position '400 100'"),
        ((*base, "--target", "12:00:00"), "a sky position is 'RA DEC'"),
        ((*base, "--targets-file", str(tmp_path / "missing.csv")), "cannot read the targets file"),
        ((*base, "--auto", "--radius", "0"), "the aperture radius (--radius) must be positive and finite"),
        ((*base, "--auto", "--annulus", "7", "3"), "0 <= inner < outer"),
        ((*base, "--auto", "--object", "nothing like it"), "nothing to reduce"),
        (("reduce", "--run-name", " ", "--auto", "--db", catalogued), "--run-name must not be empty"),
    ]:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("iracdb: error: ") and words in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.output
    # nothing was created by the refused commands
    engine = make_engine(catalogued)
    assert _rows(engine, "SELECT count(*) AS n FROM runs")[0]["n"] == 0
    engine.dispose()
    # a choice outside an option's list is a usage error too (typer's own message)
    for args in ((*base, "--auto", "--centroid", "peak"), (*base, "--auto", "--corrections", "lukewarm"),
                 (*base, "--auto", "--file-type", "bunc"), (*base, "--auto", "--subarray", "mean")):
        assert run(*args).exit_code == 2, args


def test_apertures_the_images_cannot_hold_are_refused_before_the_run_exists(catalogued: str) -> None:
    """Non-finite, non-positive or inverted radii, and apertures or annuli wider than the diagonal of the
    smallest selected image (ALPHA: 32 x 32 px, 45.25 px; BETA: 256 x 256 px, 362.03 px): one line, exit 2, no
    run row, and the name stays usable. A radius just inside the bound runs (its rows flagged)."""
    base = ("reduce", "--run-name", "big", "--auto", "--db", catalogued)
    subarray = "does not fit the 32x32-pixel images of AOR 71000064 ch2: at most their diagonal, 45.25 px"
    full = "does not fit the 256x256-pixel images of AOR 71000320 ch1: at most their diagonal, 362.03 px"
    for extra, words in [
        (("--radius", "1000"), f"the aperture radius (--radius) 1000 px {subarray}"),
        (("--radius", "1e6"), f"the aperture radius (--radius) 1e+06 px {subarray}"),
        (("--radius", "45.26"), subarray),
        (("--radius", "362.04", "--aor", "71000320"), full),
        (("--annulus", "3", "1e9"), f"the annulus outer radius (--annulus) 1e+09 px {subarray}"),
        (("--annulus", "3", "46", "--channel", "2"), subarray),
        (("--radius", "inf"), "the aperture radius (--radius) must be positive and finite, not inf px"),
        (("--radius", "nan"), "the aperture radius (--radius) must be positive and finite, not nan px"),
        (("--radius", "-1"), "must be positive and finite, not -1.0 px"),
        (("--annulus", "3", "inf"), "needs 0 <= inner < outer radius, both finite, not 3.0 inf px"),
        (("--annulus", "nan", "7"), "needs 0 <= inner < outer radius, both finite, not nan 7.0 px"),
        (("--annulus", "-1", "7"), "needs 0 <= inner < outer radius"),
        (("--annulus", "5", "5"), "needs 0 <= inner < outer radius"),
    ]:
        result = run(*base, *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert result.stderr.startswith("iracdb: error: ") and words in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output, result.stderr
    engine = make_engine(catalogued)
    try:
        assert _rows(engine, "SELECT count(*) AS n FROM runs")[0]["n"] == 0
        # the name is still free; the largest radius each image holds runs, its rows flagged off the edge
        ok = run(*base, "--radius", "45.25", "--aor", "71000064")
        assert ok.exit_code == 0, ok.output
        rows = _rows(engine, "SELECT flags, aperture_area FROM measurements")
        assert len(rows) == 128 and all(r["flags"] & Flag.APERTURE_OFF_EDGE for r in rows)
        assert all(900 < r["aperture_area"] <= 32 * 32 + 1e-6 for r in rows)  # the image, less bad pixels
        wide = run("reduce", "--run-name", "wide", "--auto", "--aor", "71000320", "--annulus", "3", "362.03",
                   "--db", catalogued)
        assert wide.exit_code == 0, wide.output
        assert _rows(engine, "SELECT status FROM runs WHERE name = 'wide'")[0]["status"] == "complete"
    finally:
        engine.dispose()


def test_summary_table_is_printed(catalogued: str, tmp_path: Path) -> None:
    targets = tmp_path / "targets.csv"
    targets.write_text(f"name,ra,dec,object\nthe alpha star,{ALPHA.ra_deg},{ALPHA.dec_deg},alpha\n")
    args = ("reduce", "--run-name", "first", "--targets-file", str(targets), "--db", catalogued)
    result = run(*args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "run first: per-AOR summary" in out
    assert "71000064" in out and "the alpha star" in out and "ALPHA ch2 sub" in out
    assert "run 'first': complete; 1 of 1 AOR units (1 this time), 128 image rows" in out
    engine = make_engine(catalogued)
    [row] = queries.run_summary(engine, "first")
    engine.dispose()
    shown = [float(x) for x in re.findall(r"\d+\.\d+", out)]
    assert any(abs(x - row["flux_mjy"]) < 1e-3 for x in shown), out  # the mean flux is shown
    # BETA has no target: a note on stderr, not an error
    assert "note: 1 AOR-channel(s) have no target in the targets given and are not measured: 71000320/ch1" in (
        result.stderr)
    again = run(*args)
    assert again.exit_code == 0 and "already complete (same parameters); nothing to do" in again.stdout
    assert "run 'first': complete; 1 of 1 AOR units (0 this time)" in again.stdout
    assert "the alpha star" in again.stdout  # the table again
    other = run(*args, "--radius", "4")
    assert other.exit_code == 2 and "radius_px: 3.0 -> 4.0" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_workers_default_to_the_cores_this_process_may_use(catalogued: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "default: the CPU cores this process may use" in " ".join(run("reduce", "--help").stdout.split())
    monkeypatch.setattr(reduce_keywords, "default_workers", lambda: 2)
    # A run as small as this one is measured in this process by default (a pool would not pay for its start) ...
    assert run("reduce", "--run-name", "small", "--auto", "--db", catalogued).exit_code == 0
    # ... and explicit --workers, or the default on a run of at least POOL_MIN_IMAGES images, starts the pool.
    assert run("reduce", "--run-name", "two", "--auto", "--workers", "2", "--db", catalogued).exit_code == 0
    monkeypatch.setattr(reduce_keywords, "POOL_MIN_IMAGES", 1)
    assert run("reduce", "--run-name", "default", "--auto", "--db", catalogued).exit_code == 0
    assert run("reduce", "--run-name", "one", "--auto", "--workers", "1", "--db", catalogued).exit_code == 0
    engine = make_engine(catalogued)
    try:
        executions = _rows(engine, "SELECT name, execution FROM runs ORDER BY name")
        assert [(r["name"], r["execution"]) for r in executions] == [
            ("default", "processes:2"), ("one", "serial"), ("small", "serial"), ("two", "processes:2")]
        for name in ("default", "small", "two"):
            assert measurements(engine, name) == measurements(engine, "one") != []
            assert summaries(engine, name) == summaries(engine, "one")
    finally:
        engine.dispose()


def test_a_full_array_frame_counts_as_full_frame_planes_towards_the_pool(catalogued: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The default --workers sizes work in subarray planes: 3 full-array frames weigh 3 x FULL_FRAME_PLANES."""
    from iracdb.reduce.options import FULL_FRAME_PLANES

    monkeypatch.setattr(reduce_keywords, "default_workers", lambda: 2)
    work = 3 * FULL_FRAME_PLANES
    monkeypatch.setattr(reduce_keywords, "POOL_MIN_IMAGES", work)
    assert run("reduce", "--run-name", "at", "--auto", "--aor", "71000320", "--db", catalogued).exit_code == 0
    monkeypatch.setattr(reduce_keywords, "POOL_MIN_IMAGES", work + 1)
    assert run("reduce", "--run-name", "below", "--auto", "--aor", "71000320", "--db", catalogued).exit_code == 0
    engine = make_engine(catalogued)
    try:
        executions = _rows(engine, "SELECT name, execution FROM runs ORDER BY name")
        assert [(r["name"], r["execution"]) for r in executions] == [("at", "processes:2"), ("below", "serial")]
        assert measurements(engine, "at") == measurements(engine, "below") != []
    finally:
        engine.dispose()


def test_summary_rows(catalogued: str) -> None:
    """The library function behind the printed table (the aor_photometry view, as `iracdb summary`)."""
    engine = make_engine(catalogued)
    try:
        reduce(engine, "rows", ReduceOptions(targets=(Target("alpha", ALPHA.ra_deg, ALPHA.dec_deg),
                                                      Target("auto"))))
        rows = queries.run_summary(engine, "rows")
        assert [(r["aorkey"], r["channel"], r["target"]) for r in rows] == [
            (71000064, 2, "alpha"), (71000064, 2, "auto"), (71000320, 1, "alpha"), (71000320, 1, "auto")]
        for r in rows:
            assert r["n_total"] in (128, 3) and r["reject_rule"] == "sigma:3"
        assert rows[0]["flux_mjy"] == pytest.approx(rows[1]["flux_mjy"], rel=1e-3)
    finally:
        engine.dispose()


def test_every_option_reaches_the_run(catalogued: str, tmp_path: Path) -> None:
    targets_file = tmp_path / "targets.csv"
    targets_file.write_text(f"ra,dec,object,name\n{BETA.ra_deg},{BETA.dec_deg},beta,beta from file\n")
    args = [
        "reduce", "--run-name", "everything", "--aor", str(BETA.aorkey), "--aor", str(ALPHA.aorkey),
        "--object", "beta", "--channel", "1", "--file-type", "cbcd",
        "--target", "18:28:31.272 +26:50:38.4", "--target", f"{BETA.ra_deg} {BETA.dec_deg}",
        "--targets-file", str(targets_file), "--auto",
        "--radius", "4", "--annulus", "5", "11", "--centroid", "gauss", "--background", "mean",
        "--corrections", "cryo", "--aperture-correction", "1.02", "--reject", "minmax", "--subarray", "median",
        "--workers", "2", "--db", catalogued,
    ]
    # a real process, so that the recorded command line is this one
    result = subprocess.run([sys.executable, "-m", "iracdb", *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    engine = make_engine(catalogued)
    [run_row] = _rows(engine, "SELECT * FROM runs WHERE name = 'everything'")
    expected = ReduceOptions(
        aorkeys=(BETA.aorkey, ALPHA.aorkey), object="beta", channel=1, file_type="cbcd",
        targets=(Target("18:28:31.272 +26:50:38.4", 277.1303, 26.844), Target(f"{BETA.ra_deg} {BETA.dec_deg}",
                                                                              BETA.ra_deg, BETA.dec_deg),
                 *read_targets_file(targets_file), Target("auto")),
        radius_px=4, annulus_in_px=5, annulus_out_px=11, centroid="gauss", background="mean", corrections="cryo",
        aperture_correction="1.02", reject="minmax", subarray="median",
    )
    params = json.loads(run_row["params_json"])
    assert params["targets"][0]["ra_deg"] == pytest.approx(277.1303, abs=1e-9)
    params["targets"][0]["ra_deg"], params["targets"][0]["dec_deg"] = 277.1303, 26.844
    assert params == json.loads(expected.to_json())
    assert run_row["execution"] == "processes:2" and run_row["status"] == "complete"
    assert run_row["command_line"] == shlex.join(["iracdb", *args])
    resolved = json.loads(run_row["resolved_json"])["per_mission_channel"]
    assert resolved == {"warm:ch1": {"correction": "irac_aphot_corr:cryo", "aperture_correction": 1.02,
                                     "aperture_correction_source": "given", "correction_coefficients": "cryo"}}
    rows = _rows(engine, "SELECT * FROM measurements WHERE run_id = :r ORDER BY expid, target_index",
                 r=run_row["id"])
    assert len(rows) == 3 * 4 and {r["aorkey"] for r in rows} == {BETA.aorkey}
    assert {r["ap_corr"] for r in rows} == {1.02}
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # a SQLite URL has no password
def test_password_never_shown(catalogued: str) -> None:
    url = make_url(catalogued).set(password="hunter2secret").render_as_string(hide_password=False)
    assert "hunter2secret" in url
    command = [sys.executable, "-m", "iracdb", "reduce", "--run-name", "pw", "--auto", "--db", url]
    for _ in range(2):  # the run, then the already-complete run
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "hunter2secret" not in result.stdout + result.stderr
    refused = subprocess.run([*command, "--radius", "4"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert refused.returncode == 2 and "hunter2secret" not in refused.stdout + refused.stderr
    engine = make_engine(catalogued)
    [row] = _rows(engine, "SELECT command_line, message FROM runs WHERE name = 'pw'")
    engine.dispose()
    assert "hunter2secret" not in row["command_line"] and ":***@" in row["command_line"]
    assert "hunter2secret" not in (row["message"] or "")
