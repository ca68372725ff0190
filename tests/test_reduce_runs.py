"""Named runs of `iracdb reduce`: provenance, immutability, resuming after Ctrl-C, a crash or kill -9, unreadable
files, and parallel execution giving the same rows; through the real database on both backends."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.io import fits
from reduce_helpers import measurements, summaries
from reduce_helpers import run_record as _run
from reduce_helpers import sql_rows as _rows
from sqlalchemy import Engine, text

import iracdb.reduce.run as reduce_module
import iracdb.reduce.store as store_module
from iracdb import __version__
from iracdb.db.engine import make_engine
from iracdb.errors import RunConflict, RunInterrupted
from iracdb.flags import Flag
from iracdb.ingest import ingest
from iracdb.photometry.targets import sky_to_pixel
from iracdb.reduce import Execution, ReduceOptions, Target, mask_command_line, reduce
from iracdb.synth import AorSpec, SynthArchive, many_aors, write_archive

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def assert_same_results(engine: Engine, name: str, reference: str) -> None:
    rows, ref = measurements(engine, name), measurements(engine, reference)
    assert len(rows) == len(ref) > 0
    for a, b in zip(rows, ref, strict=True):
        assert a == b
    assert summaries(engine, name) == summaries(engine, reference)


def unit_states(engine: Engine, name: str) -> list[dict]:
    return _rows(engine, """
        SELECT u.aorkey, u.channel, u.status, u.n_images,
               (SELECT count(*) FROM measurements m
                 WHERE m.run_id = u.run_id AND m.aorkey = u.aorkey AND m.channel = u.channel) AS n_rows,
               (SELECT count(*) FROM aor_summaries s
                 WHERE s.run_id = u.run_id AND s.aorkey = u.aorkey AND s.channel = u.channel) AS n_summaries,
               (SELECT count(*) FROM run_inputs i JOIN exposures e ON e.id = i.exposure_id
                 WHERE i.run_id = u.run_id AND e.aorkey = u.aorkey AND e.channel = u.channel) AS n_inputs
        FROM run_units u JOIN runs r ON r.id = u.run_id WHERE r.name = :name ORDER BY u.aorkey, u.channel
    """, name=name)


def assert_only_complete_units(engine: Engine, name: str, images_per_unit: int) -> tuple[int, int]:
    """Every unit marked complete holds all its rows, summaries and inputs; a pending one holds nothing."""
    states = unit_states(engine, name)
    done = 0
    for u in states:
        if u["status"] == "complete":
            assert u["n_rows"] == u["n_images"] == images_per_unit, u
            assert u["n_summaries"] >= 1 and u["n_inputs"] > 0, u
            done += 1
        else:
            assert u["status"] == "pending", u
            assert (u["n_rows"], u["n_summaries"], u["n_inputs"]) == (0, 0, 0), u
    run = _run(engine, name)
    assert run["n_units_done"] == done
    assert run["n_images"] == sum(u["n_rows"] for u in states)
    return done, len(states)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------------------------

SMALL_AORS = [
    AorSpec(aorkey=71000064, channels=(2,), read_mode="SUB", n_exposures=2, mission="warm",
            object_name="ALPHA ch2 sub", ra_deg=65.4695, dec_deg=57.8172, flux_mjy=120.0),
    AorSpec(aorkey=71000320, channels=(1,), read_mode="FULL", n_exposures=4, mission="warm", object_name="BETA",
            ra_deg=277.1303, dec_deg=26.8440, flux_mjy=80.0, framtime_s=12.0, dithered=True),
    AorSpec(aorkey=24000128, channels=(1, 3), read_mode="FULL", n_exposures=3, mission="cryo",
            object_name="GAMMA", ra_deg=270.2431, dec_deg=-29.5120, flux_mjy={1: 60.0, 3: 25.0}, framtime_s=30.0,
            dithered=True, dither_scale="small"),
    AorSpec(aorkey=24000640, channels=(1,), read_mode="SUB", n_exposures=3, mission="cryo", object_name="DELTA",
            ra_deg=12.3456, dec_deg=-45.6789, flux_mjy=250.0, framtime_s=0.4),
]  # fmt: skip
#: The brightest source near the pointing: every synthetic AOR's star (one target for all AORs).
AUTO = ReduceOptions(targets=(Target("auto"),))

#: Units of the kill/interrupt archive: enough that a run takes a few seconds with the Gaussian centroid, so
#: the test can stop it between its first and last commit.
N_SLOW_AORS = 48
SLOW_EXPOSURES = 3


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("small") / "archive", SMALL_AORS, seed=21, inject_response=True,
                         truth_csv=False)


@pytest.fixture(scope="module")
def slow_archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    specs = many_aors(N_SLOW_AORS, read_mode="SUB", channels=(2,), n_exposures=SLOW_EXPOSURES, mission="warm")
    return write_archive(tmp_path_factory.mktemp("slow") / "archive", specs, seed=22, truth_csv=False)


@pytest.fixture
def small_engine(engine: Engine, small_archive: SynthArchive) -> Engine:
    assert ingest(engine, [str(small_archive.root)]).n_rejected == 0
    return engine


# --------------------------------------------------------------------------------------------------------------
# 5. Runs: provenance, immutability, unfinished runs, unreadable files
# --------------------------------------------------------------------------------------------------------------


def test_provenance_is_recorded(small_engine: Engine, small_archive: SynthArchive) -> None:
    command = "iracdb reduce --run-name prov --auto --db postgresql://alice:***@db/iracdb"
    before = time.time()
    report = reduce(small_engine, "prov", AUTO, Execution(command_line=command))
    assert report.status == "complete" and report.n_units == report.n_units_done == report.n_units_this_time == 5
    run = _run(small_engine, "prov")
    assert run["status"] == "complete" and run["message"] is None
    assert run["params_json"] == AUTO.to_json()
    assert run["params_hash"] == hashlib.sha256(run["params_json"].encode()).hexdigest() == AUTO.params_hash()
    assert ReduceOptions.from_json(run["params_json"]) == AUTO
    assert run["software_version"] == __version__
    versions = json.loads(run["versions_json"])
    assert versions["iracdb"] == __version__ and versions["python"] == ".".join(map(str, sys.version_info[:3]))
    for package in ("numpy", "astropy", "sqlalchemy", "alembic"):
        assert versions[package], package
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert run["git_revision"] in (head, f"{head}-dirty")
    assert run["host"] == socket.gethostname() and run["user_name"] == getpass.getuser()
    assert run["pid"] == os.getpid() and run["execution"] == "serial"
    assert run["command_line"] == command
    assert before - 5 < run["created_at"].timestamp() <= run["finished_at"].timestamp() < time.time() + 5
    resolved = json.loads(run["resolved_json"])
    assert set(resolved["per_mission_channel"]) == {"warm:ch1", "warm:ch2", "cryo:ch1", "cryo:ch3"}
    assert resolved["reject"] == "sigma:3"

    # every file that went in: path, size and SHA-256 as ingested, linked to its exposure
    inputs = _rows(small_engine, """
        SELECT i.kind, i.path, i.size_bytes, i.sha256, e.aorkey, e.expid, e.channel
        FROM run_inputs i JOIN exposures e ON e.id = i.exposure_id WHERE i.run_id = :r""", r=run["id"])
    n_exposures = sum(spec.n_exposures * len(spec.channels) for spec in SMALL_AORS)
    assert sorted({i["kind"] for i in inputs}) == ["bcd", "bimsk", "bunc"]
    assert len(inputs) == 3 * n_exposures
    for i in inputs:
        path = Path(i["path"])
        assert path.is_file() and i["size_bytes"] == path.stat().st_size and i["sha256"] == sha256(path)
        assert f"_{i['aorkey']}_{i['expid']:04d}_" in path.name and f"_{i['kind']}.fits" in path.name
    # each row points at the science file it measured
    linked = _rows(small_engine, """
        SELECT m.expid, m.aorkey, m.channel, i.kind, i.path, e.expid AS e_expid
        FROM measurements m JOIN run_inputs i ON i.id = m.input_id JOIN exposures e ON e.id = m.exposure_id
        WHERE m.run_id = :r""", r=run["id"])
    assert len(linked) == run["n_images"] == len(measurements(small_engine, "prov"))
    assert all(r["kind"] == "bcd" and r["expid"] == r["e_expid"] for r in linked)


def test_command_line_masks_passwords() -> None:
    line = mask_command_line(["iracdb", "reduce", "--db", "postgresql+psycopg://alice:hunter2secret@db:5432/x",
                              "--target", "04:21:52.7 +57:49:01.9"])
    assert "hunter2secret" not in line and "alice:***@db:5432/x" in line
    assert "'04:21:52.7 +57:49:01.9'" in line


def test_same_name_other_parameters_is_refused(small_engine: Engine) -> None:
    reduce(small_engine, "fixed", AUTO)
    n_rows = len(measurements(small_engine, "fixed"))
    other = ReduceOptions(targets=AUTO.targets, radius_px=4.0, reject="minmax")
    with pytest.raises(RunConflict) as info:
        reduce(small_engine, "fixed", other)
    message = str(info.value)
    assert "'fixed'" in message and "other parameters" in message
    assert "radius_px: 3.0 -> 4.0" in message and "reject: 'sigma:3' -> 'minmax'" in message
    assert "annulus" not in message  # only what differs
    with pytest.raises(RunConflict):  # --resume does not change that
        reduce(small_engine, "fixed", other, Execution(resume=True))
    assert len(measurements(small_engine, "fixed")) == n_rows


def test_same_name_same_parameters_is_complete_without_writing(small_engine: Engine) -> None:
    first = reduce(small_engine, "once", AUTO)
    run = _run(small_engine, "once")
    rows = measurements(small_engine, "once")
    for execution in (Execution(), Execution(resume=True), Execution(workers=2)):
        again = reduce(small_engine, " once ", AUTO, execution)
        assert again.already_complete and again.status == "complete"
        assert again.n_units_this_time == 0 and again.n_images == first.n_images
    assert _run(small_engine, "once") == run  # not even the end time changes
    assert measurements(small_engine, "once") == rows
    n = _rows(small_engine, "SELECT count(*) AS n FROM measurements")[0]["n"]
    assert n == len(rows)
    # options that hash the same are the same parameters (canonical JSON)
    same = ReduceOptions(targets=(Target("auto"),), reject="SIGMA:3.0", aperture_correction="AUTO")
    assert reduce(small_engine, "once", same).already_complete


def _stop_writer_at(monkeypatch: pytest.MonkeyPatch, call: int, exc: BaseException) -> None:
    """Make the writer raise ``exc`` instead of committing its ``call``-th unit (1-based)."""
    original = store_module.Writer.write_unit
    calls = {"n": 0}

    def write_unit(self, unit, results):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == call:
            raise exc
        return original(self, unit, results)

    monkeypatch.setattr(store_module.Writer, "write_unit", write_unit)


def test_a_unit_whose_files_left_the_catalogue_is_completed_without_rows(
    small_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        _stop_writer_at(m, 1, KeyboardInterrupt())
        with pytest.raises(RunInterrupted):
            reduce(small_engine, "gone", AUTO)
    with small_engine.begin() as conn:  # as if a re-ingest had removed AOR 71000320's images meanwhile
        conn.execute(text("DELETE FROM files WHERE kind = 'bcd' AND exposure_id IN "
                          "(SELECT id FROM exposures WHERE aorkey = 71000320)"))
    report = reduce(small_engine, "gone", AUTO, Execution(resume=True))
    assert report.status == "complete" and report.n_units_done == 5
    units = {(u["aorkey"], u["channel"]): u for u in _rows(small_engine, "SELECT * FROM run_units")}
    assert all(u["status"] == "complete" for u in units.values())
    assert units[(71000320, 1)]["n_images"] == 0
    assert _rows(small_engine, "SELECT count(*) AS n FROM measurements WHERE aorkey = 71000320")[0]["n"] == 0
    assert all(units[key]["n_images"] > 0 for key in units if key != (71000320, 1))


def test_interrupted_run_needs_resume_and_resume_equals_an_uninterrupted_run(
    small_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        _stop_writer_at(m, 3, KeyboardInterrupt())
        with pytest.raises(RunInterrupted, match=r"2 of 5 AOR units are complete.*--resume") as info:
            reduce(small_engine, "ctrl-c", AUTO)
        assert info.value.exit_code == 130
    run = _run(small_engine, "ctrl-c")
    assert run["status"] == "interrupted" and "Ctrl-C" in run["message"] and run["finished_at"] is not None
    assert assert_only_complete_units_any(small_engine, "ctrl-c") == (2, 5)
    refused = r"'ctrl-c' exists and is interrupted \(2 of 5 AOR units done\); add --resume"
    with pytest.raises(RunConflict, match=refused):
        reduce(small_engine, "ctrl-c", AUTO)
    report = reduce(small_engine, "ctrl-c", AUTO, Execution(resume=True))
    assert (report.status, report.n_units_done, report.n_units_this_time) == ("complete", 5, 3)
    assert _run(small_engine, "ctrl-c")["status"] == "complete"
    reduce(small_engine, "reference", AUTO)
    assert_same_results(small_engine, "ctrl-c", "reference")
    assert _run(small_engine, "ctrl-c")["n_images"] == _run(small_engine, "reference")["n_images"]
    assert _run(small_engine, "ctrl-c")["n_outliers"] == _run(small_engine, "reference")["n_outliers"]


def assert_only_complete_units_any(engine: Engine, name: str) -> tuple[int, int]:
    """As assert_only_complete_units, for units of different sizes."""
    states = unit_states(engine, name)
    for u in states:
        if u["status"] == "complete":
            assert u["n_rows"] == u["n_images"] > 0 and u["n_summaries"] >= 1 and u["n_inputs"] > 0, u
        else:
            assert (u["status"], u["n_rows"], u["n_summaries"], u["n_inputs"]) == ("pending", 0, 0, 0), u
    return sum(u["status"] == "complete" for u in states), len(states)


def test_failed_run_is_recorded_and_resumed(small_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        _stop_writer_at(m, 2, RuntimeError("disk on fire"))
        with pytest.raises(RuntimeError, match="disk on fire"):
            reduce(small_engine, "crash", AUTO)
    run = _run(small_engine, "crash")
    assert run["status"] == "failed" and run["message"] == "RuntimeError: disk on fire"
    assert assert_only_complete_units_any(small_engine, "crash") == (1, 5)
    with pytest.raises(RunConflict, match="is failed"):
        reduce(small_engine, "crash", AUTO)
    assert reduce(small_engine, "crash", AUTO, Execution(resume=True)).status == "complete"
    reduce(small_engine, "reference", AUTO)
    assert_same_results(small_engine, "crash", "reference")


def test_unreadable_files_give_flagged_rows_and_the_run_goes_on(engine: Engine, small_archive: SynthArchive,
                                                                tmp_path: Path) -> None:
    root = tmp_path / "archive"
    shutil.copytree(small_archive.root, root)
    assert ingest(engine, [str(root)]).n_rejected == 0
    folder = root / "r71000320" / "ch1" / "bcd"
    truncated = folder / "SPITZER_I1_71000320_0001_0000_2_bcd.fits"
    truncated.write_bytes(truncated.read_bytes()[:5000])  # corrupt, and changed since ingest
    deleted = folder / "SPITZER_I1_71000320_0002_0000_2_bunc.fits"  # a companion gone
    deleted.unlink()
    cube = root / "r71000064" / "ch2" / "bcd" / "SPITZER_I2_71000064_0000_0000_2_bcd.fits"
    data = bytearray(cube.read_bytes())
    data[-20000:] = b"\0" * 20000  # same size, other bytes; mtime moves: changed since ingest
    cube.write_bytes(bytes(data))
    os.utime(cube, ns=(time.time_ns(), time.time_ns() + 10**9))

    report = reduce(engine, "unreadable", AUTO)
    assert report.status == "complete" and report.n_units_done == 5
    assert sorted(Path(p).name for p, _ in report.unreadable) == sorted(
        [truncated.name, deleted.name, cube.name])
    assert all(reason for _, reason in report.unreadable)
    rows = measurements(engine, "unreadable")
    bad = {(71000320, 1), (71000320, 2), (71000064, 0)}
    for row in rows:
        if (row["aorkey"], row["expid"]) in bad:
            assert row["flags"] == Flag.FILE_UNREADABLE, row
            assert row["flux_mjy"] is None and row["x_centroid"] is None and row["sky"] is None
            assert row["mjd"] is not None  # identity and time are kept
        else:
            assert not row["flags"] & Flag.FILE_UNREADABLE
    unreadable = [r for r in rows if r["flags"] & Flag.FILE_UNREADABLE]
    assert len(unreadable) == 1 + 1 + 64  # a frame, a frame, a cube of 64 planes: every image keeps its row
    assert sorted({r["plane"] for r in unreadable if r["aorkey"] == 71000064}) == list(range(64))
    by_aor = {s["aorkey"]: s for s in summaries(engine, "unreadable") if s["channel"] in (1, 2)}
    assert by_aor[71000320]["n_flagged"] >= 2 and by_aor[71000320]["n_total"] == 4
    assert by_aor[71000064]["n_flagged"] >= 64 and by_aor[71000064]["n_used"] > 0
    assert _run(engine, "unreadable")["n_flagged"] >= 66


def test_an_exposure_without_a_wcs_does_not_shift_the_others(engine: Engine, small_archive: SynthArchive,
                                                             tmp_path: Path) -> None:
    """Each exposure's target position comes from its own WCS, also when an earlier exposure has none."""
    root = tmp_path / "archive"
    shutil.copytree(small_archive.root, root)
    folder = root / "r71000320" / "ch1" / "bcd"
    broken = folder / "SPITZER_I1_71000320_0000_0000_2_bcd.fits"
    raw = broken.read_bytes()
    assert raw.count(b"RA---TAN-SIP") == 1
    broken.write_bytes(raw.replace(b"RA---TAN-SIP", b"RA---XYZ-SIP"))  # before ingest: a file without a WCS
    assert ingest(engine, [str(root)]).n_rejected == 0
    reduce(engine, "nowcs", ReduceOptions(targets=(Target("BETA", 277.1303, 26.8440),), aorkeys=(71000320,)))
    rows = measurements(engine, "nowcs")
    assert [r["expid"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["flags"] & Flag.COORD_CONVERSION_FAILED and rows[0]["flux_mjy"] is None
    for row in rows[1:]:
        path = folder / f"SPITZER_I1_71000320_{row['expid']:04d}_0000_2_bcd.fits"
        x, y = sky_to_pixel(fits.getheader(path), 277.1303, 26.8440)
        assert not row["flags"] & Flag.COORD_CONVERSION_FAILED
        assert abs(row["x_expected"] - float(x)) < 1e-6 and abs(row["y_expected"] - float(y)) < 1e-6


# --------------------------------------------------------------------------------------------------------------
# 6. kill -9 and Ctrl-C of the real command, then --resume
# --------------------------------------------------------------------------------------------------------------

SLOW_ARGS = ("--auto", "--centroid", "gauss", "--reject", "sigma:2.5")

def _start(db_url: str, name: str, *extra: str, new_session: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "iracdb", "reduce", "--run-name", name, *SLOW_ARGS, *extra, "--db", db_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=new_session,
    )


def _wait_for_some_units(engine: Engine, name: str, process: subprocess.Popen[str], timeout: float = 120) -> int:
    """Poll run_units until at least one unit (and not all) is complete; the number complete."""
    deadline = time.monotonic() + timeout
    query = text("SELECT count(*) FROM run_units u JOIN runs r ON r.id = u.run_id "
                 "WHERE r.name = :n AND u.status = 'complete'")
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = conn.execute(query, {"n": name}).scalar_one()
        if done >= 1:
            assert done < N_SLOW_AORS, "the run finished before it could be stopped: make the archive bigger"
            return done
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise AssertionError("no unit completed in time")


def _reduce_cli(db_url: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iracdb", "reduce", "--run-name", name, *SLOW_ARGS, *extra, "--db", db_url],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )


def test_kill_9_then_resume_equals_an_uninterrupted_run(db_url: str, slow_archive: SynthArchive) -> None:
    engine = make_engine(db_url)
    try:
        assert ingest(engine, [str(slow_archive.root)]).n_rejected == 0
        process = _start(db_url, "killed")
        _wait_for_some_units(engine, "killed", process)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL
        # only complete AORs exist: every unit marked complete has all its rows, a pending one has none
        run = _run(engine, "killed")
        assert run["status"] == "running" and run["finished_at"] is None  # it never knew
        done, total = assert_only_complete_units(engine, "killed", images_per_unit=SLOW_EXPOSURES * 64)
        assert 1 <= done < total == N_SLOW_AORS

        # without --resume: refused, nothing written
        refused = _reduce_cli(db_url, "killed")
        assert refused.returncode == 2 and "add --resume" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1

        resumed = _reduce_cli(db_url, "killed", "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert f"{N_SLOW_AORS} of {N_SLOW_AORS} AOR units ({N_SLOW_AORS - done} this time)" in resumed.stdout
        assert _run(engine, "killed")["status"] == "complete"
        assert assert_only_complete_units(engine, "killed", SLOW_EXPOSURES * 64) == (N_SLOW_AORS, N_SLOW_AORS)

        # the same options, uninterrupted, under another name (in this process: the same numbers)
        reduce(engine, "uninterrupted", ReduceOptions.from_json(_run(engine, "killed")["params_json"]))
        assert_same_results(engine, "killed", "uninterrupted")
        a, b = _run(engine, "killed"), _run(engine, "uninterrupted")
        assert (a["n_images"], a["n_flagged"], a["n_outliers"]) == (b["n_images"], b["n_flagged"], b["n_outliers"])
    finally:
        engine.dispose()


# The pool's Ctrl-C path does not depend on the database: sqlite covers it.
@pytest.mark.parametrize(("backend", "workers"), [("sqlite", 1), ("postgresql", 1), ("sqlite", 2)],
                         indirect=["backend"])
def test_ctrl_c_marks_the_run_interrupted_with_exit_130(db_url: str, slow_archive: SynthArchive, workers: int) -> None:
    engine = make_engine(db_url)
    try:
        assert ingest(engine, [str(slow_archive.root)]).n_rejected == 0
        # Ctrl-C in a terminal signals the whole process group (the pool's workers too)
        process = _start(db_url, "ctrl-c", "--workers", str(workers), new_session=True)
        _wait_for_some_units(engine, "ctrl-c", process)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, stderr
        assert stderr.startswith("iracdb: error: run 'ctrl-c' interrupted") and "--resume" in stderr
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
        run = _run(engine, "ctrl-c")
        assert run["status"] == "interrupted" and run["finished_at"] is not None
        done, total = assert_only_complete_units(engine, "ctrl-c", SLOW_EXPOSURES * 64)
        assert 1 <= done < total
        resumed = _reduce_cli(db_url, "ctrl-c", "--resume", "--workers", str(workers))
        assert resumed.returncode == 0, resumed.stderr
        assert _run(engine, "ctrl-c")["status"] == "complete"
        reduce(engine, "uninterrupted", ReduceOptions.from_json(_run(engine, "ctrl-c")["params_json"]))
        assert_same_results(engine, "ctrl-c", "uninterrupted")
    finally:
        engine.dispose()


def test_a_live_run_is_not_taken_over(small_engine: Engine) -> None:
    """A run still marked running by a live process on this host cannot be resumed by another."""
    reduce(small_engine, "live", AUTO)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with small_engine.begin() as conn:
            conn.execute(text("UPDATE runs SET status = 'running', pid = :p WHERE name = 'live'"), {"p": sleeper.pid})
            conn.execute(text("UPDATE run_units SET status = 'pending' WHERE aorkey = 71000064"))
        with pytest.raises(RunConflict, match=f"being reduced by process {sleeper.pid}"):
            reduce(small_engine, "live", AUTO, Execution(resume=True))
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------------------------------------------
# 7. Parallel execution gives the serial rows
# --------------------------------------------------------------------------------------------------------------


def test_process_pool_gives_the_serial_rows(small_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    reduce(small_engine, "serial", AUTO)
    report = reduce(small_engine, "pool", AUTO, Execution(workers=2))
    assert report.status == "complete" and _run(small_engine, "pool")["execution"] == "processes:2"
    assert_same_results(small_engine, "pool", "serial")
    # one exposure per chunk: units come back in many pieces, out of order; still the same rows
    monkeypatch.setattr(reduce_module, "CHUNK_PIXELS", 64 * 32 * 32)
    reduce(small_engine, "pool-chunks", AUTO, Execution(workers=2))
    assert_same_results(small_engine, "pool-chunks", "serial")
    reduce(small_engine, "serial-chunks", AUTO)
    assert_same_results(small_engine, "serial-chunks", "serial")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_dask_local_cluster_gives_the_serial_rows(small_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    reduce(small_engine, "serial", AUTO)
    monkeypatch.setattr(reduce_module, "CHUNK_PIXELS", 64 * 32 * 32)
    report = reduce(small_engine, "dask", AUTO, Execution(scheduler="local:2"))
    assert report.status == "complete" and _run(small_engine, "dask")["execution"] == "dask:local:2"
    assert_same_results(small_engine, "dask", "serial")
