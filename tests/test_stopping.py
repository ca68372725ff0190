"""Stopping a reduction promptly and cleanly (issue 10, cases 8-10), with real processes and real signals:

- Ctrl-C (SIGINT) and SIGTERM end `iracdb reduce` within seconds with the run `interrupted` (exit 130 / 143), even
  when the signal lands inside a database call; `--resume` then gives the rows of an uninterrupted run.
- kill -9 of `ingest --workers 2` or `reduce --workers 2` leaves no worker, fork server or resource tracker behind.
- A Dask cluster that loses every worker, or its scheduler, fails the run with a one-line error (exit 3) after a
  bounded wait; `--resume` on a working cluster finishes it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reduce_helpers import measurements, summaries
from reduce_helpers import run_record as _run
from reduce_helpers import sql_rows as _rows
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url

import iracdb.db.sqlite as sqlite_backend
from iracdb import workers
from iracdb.db.engine import make_engine
from iracdb.errors import ExecutionError, RunInterrupted
from iracdb.ingest import ingest
from iracdb.reduce import Execution, ReduceOptions, Target, reduce
from iracdb.synth import SynthArchive, many_aors, write_archive

ROOT = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")

#: Units of the archive: enough that a run takes a few seconds with the Gaussian centroid.
N_AORS = 48
EXPOSURES = 3
IMAGES_PER_UNIT = EXPOSURES * 64
ARGS = ("--auto", "--centroid", "gauss", "--reject", "sigma:2.5")
OPTIONS = ReduceOptions(targets=(Target("auto"),), centroid="gauss", reject="sigma:2.5")
#: A few AORs: the in-process run below is repeated once per signal position.
FEW = ReduceOptions(aorkeys=tuple(range(60000000, 60000004)), targets=(Target("auto"),))
#: A stop that takes longer than this is a hang (the bug was a 61 s wait); this is no speed requirement.
STOP_BOUND_S = 30
#: The same for a Dask cluster: its processes are slow to notice a death on a busy 2-core machine (a real hang is
#: unbounded, so this still catches one).
DASK_STOP_BOUND_S = 120


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    specs = many_aors(N_AORS, read_mode="SUB", channels=(2,), n_exposures=EXPOSURES, mission="warm")
    return write_archive(tmp_path_factory.mktemp("stopping") / "archive", specs, seed=23, truth_csv=False)


@pytest.fixture
def catalogued(db_url: str, archive: SynthArchive) -> Iterator[Engine]:
    engine = make_engine(db_url)
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    yield engine
    engine.dispose()


def _iracdb(*args: str, code: str = "", new_session: bool = True) -> subprocess.Popen[str]:
    """The real CLI in a child process (its own session, as a shell job: a signal to the group reaches its
    workers too); ``code`` runs first (e.g. to lower a bound)."""
    command = [sys.executable, "-c", f"{code}\nfrom iracdb.cli import app\napp(prog_name='iracdb')", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=new_session)


def _reduce(db_url: str, name: str, *extra: str, code: str = "") -> subprocess.Popen[str]:
    return _iracdb("reduce", "--run-name", name, *ARGS, *extra, "--db", db_url, code=code)


def _units_done(engine: Engine, name: str) -> int:
    return _rows(engine, "SELECT count(*) AS n FROM run_units u JOIN runs r ON r.id = u.run_id "
                         "WHERE r.name = :name AND u.status = 'complete'", name=name)[0]["n"]


def _wait_for(engine: Engine, name: str, moment: str, process: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the run row shows ``running`` (moment ``running``), the worker pool's fork server has started (``pool``:
    it is importing its preload) or some, not all, units are committed (``units``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if moment == "running":
            if _rows(engine, "SELECT status FROM runs WHERE name = :name", name=name):
                return
        elif moment == "pool":
            if any("multiprocessing.forkserver" in command for _, command in _group(process.pid).values()):
                return
        elif (done := _units_done(engine, name)) >= 1:
            assert done < N_AORS, "the run finished before it could be stopped: make the archive bigger"
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    raise AssertionError(f"the run never reached {moment!r}")


def _group(pgid: int) -> dict[int, tuple[int, str]]:
    """Live processes of the process group ``pgid``: pid -> (parent pid, command line). Zombies are dead."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            found[int(entry)] = (int(ppid), cmdline.strip())
    return found


def _stop(process: subprocess.Popen[str], signum: int) -> str:
    """Send ``signum`` to the process group, as a terminal's Ctrl-C or a batch system does; its stderr."""
    os.killpg(process.pid, signum)
    try:
        _, stderr = process.communicate(timeout=STOP_BOUND_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"still running {STOP_BOUND_S} s after {signal.Signals(signum).name}") from None
    return stderr


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _only_complete_units(engine: Engine, name: str) -> int:
    """Every unit marked complete holds all its rows; a pending one holds none. The number complete."""
    units = _rows(engine, """
        SELECT u.status, u.n_images,
               (SELECT count(*) FROM measurements m
                 WHERE m.run_id = u.run_id AND m.aorkey = u.aorkey AND m.channel = u.channel) AS n_rows
        FROM run_units u JOIN runs r ON r.id = u.run_id WHERE r.name = :name""", name=name)
    for unit in units:
        expected = IMAGES_PER_UNIT if unit["status"] == "complete" else 0
        assert unit["status"] in ("complete", "pending") and unit["n_rows"] == expected, unit
    done = sum(unit["status"] == "complete" for unit in units)
    assert _run(engine, name)["n_units_done"] == done
    return done


def _resume_equals_uninterrupted(engine: Engine, db_url: str, name: str, *extra: str) -> None:
    resumed = subprocess.run(
        [sys.executable, "-m", "iracdb", "reduce", "--run-name", name, *ARGS, *extra, "--resume", "--db", db_url],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _run(engine, name)["status"] == "complete"
    assert _only_complete_units(engine, name) == N_AORS
    reduce(engine, f"{name}-uninterrupted", OPTIONS)
    assert measurements(engine, name) == measurements(engine, f"{name}-uninterrupted")
    assert summaries(engine, name) == summaries(engine, f"{name}-uninterrupted")


# --------------------------------------------------------------------------------------------------------------
# 8. Ctrl-C and SIGTERM
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _signal_after_statement(engine: Engine, n: int, signum: int) -> Iterator[None]:
    """Send ``signum`` to this process right after the ``n``-th SQL statement: Python then handles it inside
    SQLAlchemy, while the statement's result is being set up (where a KeyboardInterrupt used to strand a SQLite
    connection that still held the write lock)."""
    count = itertools.count(1)

    def after(*_args: object) -> None:
        if next(count) == n:
            os.kill(os.getpid(), signum)

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(engine, "after_cursor_execute", after)


def _statements(engine: Engine, name: str) -> int:
    count = itertools.count()

    def after(*_args: object) -> None:
        next(count)

    event.listen(engine, "after_cursor_execute", after)
    try:
        reduce(engine, name, FEW)
    finally:
        event.remove(engine, "after_cursor_execute", after)
    return next(count)


def _nothing_holds_a_lock(engine: Engine, db_url: str) -> None:
    if engine.dialect.name == "sqlite":
        # another connection gets the write lock at once
        conn = sqlite3.connect(make_url(db_url).database or "", timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    else:
        open_transactions = _rows(engine, "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = "
                                          "current_database() AND state LIKE 'idle in transaction%'")[0]["n"]
        assert open_transactions == 0



def test_ctrl_c_inside_a_database_call_waits_for_a_safe_point(
    db_url: str, archive: SynthArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind 'database is locked' after Ctrl-C, made deterministic: a real SIGINT after every few
    statements of a run, from planning to the last commit. Each time the run ends interrupted at once, nothing
    holds a lock, and --resume gives the rows of the uninterrupted run."""
    monkeypatch.setattr(sqlite_backend, "SQLITE_BUSY_TIMEOUT_S", 2)  # the old hang then fails in 2 s, not 60
    engine = make_engine(db_url)
    try:
        assert ingest(engine, [str(archive.root)]).n_rejected == 0
        n = _statements(engine, "reference")
        # ... up to the last unit's commit (after it, the run completes: the signal comes too late to stop it)
        positions = range(1, n - 8, max(1, (n - 8) // 12))
        assert len(positions) >= 8
        for k in positions:
            name = f"stop-{k}"
            with _signal_after_statement(engine, k, signal.SIGINT):
                try:
                    reduce(engine, name, FEW)
                except RunInterrupted as exc:
                    stopped = exc
                except BaseException as exc:  # a KeyboardInterrupt must fail this test, not end the session
                    pytest.fail(f"SIGINT after statement {k} of {n}: {type(exc).__name__}: {exc}")
                else:
                    pytest.fail(f"SIGINT after statement {k} of {n} did not stop the run")
            assert stopped.exit_code == 130 and "--resume" in str(stopped)
            run = _run(engine, name)
            assert (run["status"], run["message"]) == ("interrupted", "interrupted by the user (Ctrl-C)"), k
            _nothing_holds_a_lock(engine, db_url)
            assert reduce(engine, name, FEW, Execution(resume=True)).status == "complete"
            assert measurements(engine, name) == measurements(engine, "reference"), k
    finally:
        engine.dispose()


# (signal, moment, workers): as soon as the run row exists, once the pool's fork server has started (a Ctrl-C to the
# group used to kill it while it imported its preload: EOFError, exit 1) and after some AORs are committed (the
# existing test_reduce_runs covers Ctrl-C then, with and without a pool).
STOPS = [
    pytest.param("sqlite", "SIGINT", "running", 1, id="sqlite-SIGINT-running-serial"),
    pytest.param("postgresql", "SIGINT", "running", 1, id="postgresql-SIGINT-running-serial"),
    pytest.param("sqlite", "SIGINT", "pool", 2, id="sqlite-SIGINT-pool"),
    pytest.param("sqlite", "SIGTERM", "pool", 2, id="sqlite-SIGTERM-pool"),
    pytest.param("sqlite", "SIGTERM", "units", 1, id="sqlite-SIGTERM-units-serial"),
    pytest.param("postgresql", "SIGTERM", "units", 1, id="postgresql-SIGTERM-units-serial"),
]


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="process groups and signals as on Linux")
@pytest.mark.parametrize(("backend", "signame", "moment", "n_workers"), STOPS, indirect=["backend"])
def test_ctrl_c_and_sigterm_end_the_run_interrupted(
    catalogued: Engine, db_url: str, signame: str, moment: str, n_workers: int
) -> None:
    signum = signal.Signals[signame]
    process = _reduce(db_url, "stopped", "--workers", str(n_workers))
    try:
        _wait_for(catalogued, "stopped", moment, process)
        stderr = _stop(process, signum)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    line = _one_line(stderr)
    if signum == signal.SIGINT:
        assert process.returncode == 130
        assert line.startswith("iracdb: error: run 'stopped' interrupted: ")
        message = "interrupted by the user (Ctrl-C)"
    else:
        assert process.returncode == 143  # 128 + SIGTERM, as a shell reports a process killed by it
        assert line.startswith("iracdb: error: run 'stopped' stopped by SIGTERM: ")
        message = "stopped by SIGTERM"
    assert "--resume" in line
    run = _run(catalogued, "stopped")
    assert (run["status"], run["message"]) == ("interrupted", message) and run["finished_at"] is not None
    assert _only_complete_units(catalogued, "stopped") < N_AORS
    _resume_equals_uninterrupted(catalogued, db_url, "stopped", "--workers", str(n_workers))


def test_a_held_signal_is_raised_at_the_next_safe_point() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with workers.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # not in a safe region: held
        assert stop.received == signal.SIGTERM
        with pytest.raises(workers.Stop) as info:
            stop.check()
        assert info.value.signum == signal.SIGTERM and isinstance(info.value, KeyboardInterrupt)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored

    def signal_in_a_safe_region(stop: workers.StopSignals) -> None:
        with stop.interruptible():
            os.kill(os.getpid(), signal.SIGINT)  # in a safe region: raised at once
            time.sleep(30)

    with workers.StopSignals() as stop, pytest.raises(workers.Stop):
        signal_in_a_safe_region(stop)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.skipif(not LINUX, reason="signals as on Linux")
def test_a_second_signal_ends_the_process_at_once() -> None:
    code = ("import os, signal, time\nfrom iracdb.workers import StopSignals\nwith StopSignals():\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n    print('held', flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(30)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout == "held\n"
    assert result.returncode == -signal.SIGINT  # the signal's default action, as after kill -INT twice


# --------------------------------------------------------------------------------------------------------------
# 9. Workers die with their parent
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not LINUX, reason="reads /proc")
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the pool does not depend on the database
@pytest.mark.parametrize("command", ["ingest", "ingest-2", "reduce", "reduce-dask"])
def test_kill_9_leaves_no_worker_behind(db_url: str, archive: SynthArchive, command: str) -> None:
    from iracdb.ingest import MIN_FILES_FOR_WORKERS, MIN_WORKERS_FOR_PROCESSES

    if command == "ingest":  # the fewest workers for which ingest starts processes (forked by the fork server)
        process = _iracdb("ingest", "--workers", str(MIN_WORKERS_FOR_PROCESSES), str(archive.root), "--db", db_url)
    elif command == "ingest-2":  # two workers: a child process of the driver checksums the files
        assert len(list(archive.root.rglob("*.fits"))) >= MIN_FILES_FOR_WORKERS
        process = _iracdb("ingest", "--workers", "2", str(archive.root), "--db", db_url)
    else:
        engine = make_engine(db_url)
        assert ingest(engine, [str(archive.root)]).n_rejected == 0
        engine.dispose()
        execution = ("--workers", "2") if command == "reduce" else ("--scheduler", "local:2")
        process = _reduce(db_url, "killed", *execution)
    pgid = process.pid
    try:
        # until a pool worker exists (forked by multiprocessing's fork server: not a child of the driver), or
        # ingest's checksumming child
        deadline = time.monotonic() + 120
        while not any(ppid != pgid or command == "ingest-2" for pid, (ppid, _) in _group(pgid).items() if pid != pgid):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no worker process appeared"
            time.sleep(0.005)
        os.kill(pgid, signal.SIGSTOP)  # frozen, the driver cannot end its pool any more
        before = _group(pgid)
        assert len(before) >= (2 if command == "ingest-2" else 4), before  # driver, fork server, tracker, worker(s)
        process.kill()
        process.wait(timeout=60)  # (its pipes stay open while a child lives)
        deadline = time.monotonic() + 20
        while (left := _group(pgid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"still alive after the driver's kill -9: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.communicate()  # and close its pipes


def _exit_on(item: int) -> int:
    if item == 3:
        os._exit(1)  # as the OOM killer would end it
    return item


def test_a_dead_pool_worker_is_an_execution_error() -> None:
    with pytest.raises(ExecutionError, match="a worker process died") as info:
        list(workers.map_unordered(_exit_on, range(8), workers=2))
    assert info.value.exit_code == 3


# --------------------------------------------------------------------------------------------------------------
# 10. Dask: a cluster without workers, a killed scheduler
# --------------------------------------------------------------------------------------------------------------


class DaskCluster:
    """A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (free ports), all killed at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def start_scheduler(self) -> None:
        file = self.folder / f"scheduler-{len(self.processes)}.json"
        self.scheduler = self._start("distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                                     "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(file))
        deadline = time.monotonic() + 60
        while not file.exists() or not file.read_text().strip():
            assert self.scheduler.poll() is None and time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.05)
        self.address = json.loads(file.read_text())["address"]
        self.workers = []  # those of an earlier scheduler are not this one's

    def start_worker(self) -> None:
        from distributed import Client

        self.workers.append(self._start("distributed.cli.dask_worker", self.address, "--nthreads", "1",
                                        "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"))
        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(len(self.workers), timeout=60)

    def kill_workers(self) -> None:
        for process in self.workers:
            self.kill(process)
        self.workers = []

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.kill()
        process.wait()

    def close(self) -> None:
        for process in self.processes:
            self.kill(process)


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    pytest.importorskip("distributed")
    cluster = DaskCluster(tmp_path)
    try:
        cluster.start_scheduler()
        cluster.start_worker()
        yield cluster
    finally:
        cluster.close()


#: Run before the CLI: lower the bounds, so that a test waits seconds.
QUICK_DASK = ("import iracdb.workers as w; w.DASK_NO_WORKERS_TIMEOUT_S = 2; w.DASK_POLL_S = 0.2; "
              "w.DASK_CONNECT_TIMEOUT_S = 5")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the Dask side does not depend on the database
@pytest.mark.parametrize("lost", ["workers", "scheduler"])
def test_a_dask_cluster_that_loses_its_workers_or_scheduler_fails_the_run(
    catalogued: Engine, db_url: str, dask_cluster: DaskCluster, lost: str
) -> None:
    process = _reduce(db_url, "dask", "--scheduler", dask_cluster.address, code=QUICK_DASK)
    try:
        _wait_for(catalogued, "dask", "units", process)
        if lost == "workers":
            dask_cluster.kill_workers()
        else:
            dask_cluster.kill(dask_cluster.scheduler)  # type: ignore[arg-type]
        _, stderr = process.communicate(timeout=DASK_STOP_BOUND_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 3, stderr
    line = _one_line(stderr)
    reason = ("has had no worker for 2 s while work was waiting" if lost == "workers"
              else "lost the connection to the Dask scheduler")
    assert line.startswith("iracdb: error: run 'dask' failed: ") and reason in line and "--resume" in line
    run = _run(catalogued, "dask")
    assert run["status"] == "failed" and reason in run["message"] and run["finished_at"] is not None
    assert _only_complete_units(catalogued, "dask") < N_AORS

    if lost == "scheduler":
        dask_cluster.start_scheduler()
    dask_cluster.start_worker()
    _resume_equals_uninterrupted(catalogued, db_url, "dask", "--scheduler", dask_cluster.address)
    with catalogued.connect() as conn:  # the resumed run records how it was executed
        assert conn.execute(text("SELECT execution FROM runs WHERE name = 'dask'")).scalar_one().startswith("dask:")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the Dask side does not depend on the database
def test_an_unreachable_dask_scheduler_fails_the_run(catalogued: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(workers, "DASK_CONNECT_TIMEOUT_S", 1)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ExecutionError, match=f"run 'far' failed: cannot reach the Dask scheduler at {address}") as info:
        reduce(catalogued, "far", FEW, Execution(scheduler=address))
    assert info.value.exit_code == 3
    run = _run(catalogued, "far")
    assert run["status"] == "failed" and run["message"].startswith(f"cannot reach the Dask scheduler at {address}")
    assert reduce(catalogued, "far", FEW, Execution(resume=True)).status == "complete"
