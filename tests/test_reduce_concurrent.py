"""Two `iracdb reduce` of the same new run name at the same moment, in two real processes, on both backends: each
exits 0 or 2 with one line (never a traceback), and the run is reduced once, completely."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from reduce_helpers import run_record, sql_rows
from sqlalchemy import Engine, text

from iracdb.db.engine import make_engine
from iracdb.db.postgresql import run_lock_key
from iracdb.errors import RunConflict
from iracdb.ingest import ingest
from iracdb.reduce import Execution, ReduceOptions, Target, reduce
from iracdb.synth import AorSpec, SynthArchive, write_archive

ROOT = Path(__file__).resolve().parents[1]

AORS = [
    AorSpec(aorkey=71000064, channels=(2,), read_mode="SUB", n_exposures=2, mission="warm",
            object_name="ALPHA ch2 sub", ra_deg=65.4695, dec_deg=57.8172, flux_mjy=120.0),
    AorSpec(aorkey=71000320, channels=(1,), read_mode="FULL", n_exposures=2, mission="warm", object_name="BETA",
            ra_deg=277.1303, dec_deg=26.8440, flux_mjy=80.0, framtime_s=12.0),
]  # fmt: skip
N_UNITS = 2
TRIALS = 4

#: Runs ``iracdb ARGS`` once per trial (``{t}`` in ARGS replaced by the trial's number) in step with a twin
#: process: each marks itself ready in FOLDER and waits for the other's mark, so the two commands start within a
#: millisecond or so of each other. The imports come first, so they do not skew the start. After each command,
#: a marker line with its exit status goes to stdout and to stderr.
TWIN = r"""
import os, sys, time, traceback
import iracdb.cli, iracdb.reduce
folder, me, other, trials, *args = sys.argv[1:]
for t in range(int(trials)):
    open(os.path.join(folder, f"{t}.{me}"), "w").close()
    while not os.path.exists(os.path.join(folder, f"{t}.{other}")):
        time.sleep(0.0002)
    try:
        code = iracdb.cli.app([a.replace("{t}", str(t)) for a in args], prog_name="iracdb", standalone_mode=False)
    except Exception:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        print(f"@@ trial {t} exit {code or 0}", file=stream, flush=True)
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("race") / "archive", AORS, seed=41, truth_csv=False)


def _per_trial(text: str) -> dict[int, tuple[int, str]]:
    """Trial -> (exit status, what the command printed), from a twin's stdout or stderr."""
    out, start = {}, 0
    for match in re.finditer(r"^@@ trial (\d+) exit (\d+)\n", text, re.MULTILINE):
        out[int(match[1])] = (int(match[2]), text[start : match.start()])
        start = match.end()
    return out


def test_two_creations_of_one_run_at_once(db_url: str, archive: SynthArchive, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    try:
        assert ingest(engine, [str(archive.root)]).n_rejected == 0
        args = ("reduce", "--run-name", "race-{t}", "--auto", "--db", db_url)
        twins = [
            subprocess.Popen([sys.executable, "-c", TWIN, str(tmp_path), me, other, str(TRIALS), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            for me, other in (("a", "b"), ("b", "a"))
        ]
        results = [twin.communicate(timeout=300) for twin in twins]
        assert [twin.returncode for twin in twins] == [0, 0], results
        outs = [_per_trial(stdout) for stdout, _ in results]
        errs = [_per_trial(stderr) for _, stderr in results]
        for t in range(TRIALS):
            name = f"race-{t}"
            codes = [outs[i][t][0] for i in range(2)]
            assert sorted(codes) in ([0, 0], [0, 2]), (t, results)
            for i in range(2):
                stderr = errs[i][t][1]
                assert "Traceback" not in stderr, stderr
                if codes[i] == 2:
                    # the loser: the run is being created or reduced by the other process, in one line
                    assert len(stderr.strip().splitlines()) == 1, stderr
                    assert re.fullmatch(
                        rf"iracdb: error: run '{name}' is being (created by another process|reduced by process "
                        rf"{twins[1 - i].pid} on \S+) right now\n", stderr), stderr
            # reduced once: one process measured every unit, a second one (if it got there) found it complete
            stdouts = [outs[i][t][1] for i in range(2) if codes[i] == 0]
            assert sum(f"({N_UNITS} this time)" in s for s in stdouts) == 1, stdouts
            assert all("already complete" in s for s in stdouts if f"({N_UNITS} this time)" not in s), stdouts
            run = run_record(engine, name)
            assert (run["status"], run["n_units_done"], run["n_units"]) == ("complete", N_UNITS, N_UNITS)
            [count] = sql_rows(engine, "SELECT count(*) AS n FROM measurements m JOIN runs r ON r.id = m.run_id "
                                       "WHERE r.name = :name", name=name)
            assert count["n"] == run["n_images"] > 0
        assert sql_rows(engine, "SELECT count(*) AS n FROM runs")[0]["n"] == TRIALS
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_run_name_locked_by_another_session_is_refused_in_one_line(engine: Engine, archive: SynthArchive) -> None:
    """On PostgreSQL the run's name is locked (a session advisory lock) from before the run exists until its
    process ends; another session holding it here stands for that process."""
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    auto = ReduceOptions(targets=(Target("auto"),))
    lock = {"key": run_lock_key("held")}
    with engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(:key)"), lock)
        other.commit()
        with pytest.raises(RunConflict, match=r"^run 'held' is being created by another process right now$"):
            reduce(engine, "held", auto)
        assert sql_rows(engine, "SELECT count(*) AS n FROM runs")[0]["n"] == 0
        other.execute(text("SELECT pg_advisory_unlock(:key)"), lock)
        other.commit()

        assert reduce(engine, "held", auto).status == "complete"
        with engine.begin() as conn:  # as if the other session's process were reducing it again
            conn.execute(text("UPDATE runs SET status = 'running', pid = 4242, host = 'elsewhere'"))
        other.execute(text("SELECT pg_advisory_lock(:key)"), lock)
        other.commit()
        with pytest.raises(RunConflict, match=r"^run 'held' is being reduced by process 4242 on elsewhere right now$"):
            reduce(engine, "held", auto, Execution(resume=True))
        with pytest.raises(RunConflict, match="already exists with other parameters"):
            reduce(engine, "held", ReduceOptions(targets=(Target("auto"),), radius_px=4))
        with engine.begin() as conn:  # finished, its process not yet gone: complete, nothing to do
            conn.execute(text("UPDATE runs SET status = 'complete'"))
        assert reduce(engine, "held", auto).already_complete
        # the lock is per name: another run goes ahead
        assert reduce(engine, "other", auto).status == "complete"
