"""Where work runs (this process, a local process pool, a Dask distributed cluster) and how it stops.

- :class:`StopSignals` turns SIGINT and SIGTERM into :class:`Stop`, raised only while waiting for or computing
  results, never in the middle of a database call.
- :func:`process_pool` starts workers that ignore the terminal's signals (the driver handles them and stops the
  pool) and exit as soon as the driver ends, ``kill -9`` included.
- :func:`map_unordered` runs a function over items on any of the three; on Dask its waits are bounded: a cluster
  left without workers, or a lost scheduler, is an :class:`~iracdb.errors.ExecutionError` (exit status 3).
- :func:`keep_freed_memory` (in the driver that maps and in every pool process) lets glibc's malloc reuse the memory
  of freed arrays instead of returning it to the system and faulting fresh pages in for the next one.

Nothing here touches the database: the driver alone writes.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, ContextDecorator, contextmanager, nullcontext
from typing import Any, TypeVar

from iracdb.errors import BadOption, ExecutionError

T = TypeVar("T")
R = TypeVar("R")

#: The signals that stop a run cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: How long to wait for a Dask scheduler to answer when connecting [s].
DASK_CONNECT_TIMEOUT_S = 30.0
#: How long a Dask cluster may have no worker while work is waiting before the run fails [s].
DASK_NO_WORKERS_TIMEOUT_S = 60.0
#: How often the driver looks at the Dask cluster while no result arrives [s].
DASK_POLL_S = 1.0
#: Tasks are retried this many times on a Dask cluster if they fail (e.g. their worker dies).
DASK_RETRIES = 2


# --------------------------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------------------------


class Stop(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (a KeyboardInterrupt, so that code that cleans up after Ctrl-C also does here).

    Attributes
    ----------
    signum : int
        The signal.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals(ContextDecorator):
    """SIGINT and SIGTERM raise :class:`Stop` only where that is safe: inside :meth:`interruptible` (computing, or
    waiting for workers) and at :meth:`check`. A signal that arrives elsewhere is held until then.

    Why: an exception raised inside SQLAlchemy or sqlite3 (e.g. while a query's result is being set up) can strand a
    SQLite connection that still holds the write lock; marking the run interrupted from another connection then
    waits for the whole busy timeout and fails. The database work between two safe points is one unit's commit.

    A second signal while the first is still held or being acted on ends the process at once, by the signal's
    default action: what was committed stays and the run stays ``running`` (as after ``kill -9``); ``--resume``
    finishes it.

    Use as a context manager or a decorator, in the main thread (elsewhere Python cannot handle signals and the
    handlers are not installed); the previous handlers are restored on exit.

    Attributes
    ----------
    received : int or None
        The first signal received since the outermost entry.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._waiting = False
        self._depth = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._depth += 1
        if self._depth == 1:
            self.received = None
            if threading.current_thread() is threading.main_thread():
                for signum in STOP_SIGNALS:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._restore()

    def _restore(self) -> None:
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.received is not None:
            self._restore()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        if self._waiting:
            raise Stop(signum)

    def check(self) -> None:
        """Raise :class:`Stop` if a signal has arrived."""
        if self.received is not None:
            raise Stop(self.received)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A region where a signal raises :class:`Stop` at once (no database work inside)."""
        self.check()
        # Python runs signal handlers in the main thread: only its regions count.
        main = threading.current_thread() is threading.main_thread()
        if main:
            self._waiting = True
        try:
            yield
        finally:
            if main:
                self._waiting = False


# --------------------------------------------------------------------------------------------------------------
# Local processes
# --------------------------------------------------------------------------------------------------------------

#: glibc malloc: blocks up to this size come from the heap, not each from its own ``mmap`` [bytes] (glibc's default
#: starts at 128 KiB and adapts up to 32 MiB, but its trimming then hands the pages back after each array).
MALLOC_MMAP_THRESHOLD_BYTES = 32 << 20
#: glibc malloc: free memory at the top of the heap kept for the next blocks rather than returned [bytes].
MALLOC_TRIM_THRESHOLD_BYTES = 128 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_malloc_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next allocations (once per process; True if it applied).

    The photometry allocates many short-lived arrays of a few MB (one per numpy operation on a cube's windows).
    With glibc's defaults each is a fresh ``mmap`` (or heap memory trimmed back on free), so every page of every
    temporary is faulted in and zeroed by the kernel again: measured on 2-core virtual machines, that doubled the
    time of :func:`iracdb.photometry.measure.measure` on subarray cubes. With blocks up to
    :data:`MALLOC_MMAP_THRESHOLD_BYTES` from the heap and :data:`MALLOC_TRIM_THRESHOLD_BYTES` of free heap kept,
    the pages are reused. The peak memory is unchanged (freed memory is reused, not added); up to the trim
    threshold of it stays mapped after the peak. No effect (False) without glibc. Numbers do not change.
    """
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):  # no C library symbols, or no mallopt (not glibc)
                return False
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            _malloc_tuned = (mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES) == 1
                             and mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES) == 1)
    return _malloc_tuned



def process_pool(workers: int, preload: Sequence[str] = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes that ignore SIGINT and SIGTERM and exit when this process ends.

    Parameters
    ----------
    workers : int
        Number of processes.
    preload : sequence of str
        Modules the fork server imports once, so that workers forked from it start in milliseconds (the first
        pool of a process decides; ignored on Windows).

    Returns
    -------
    concurrent.futures.ProcessPoolExecutor
    """
    import multiprocessing

    if sys.platform == "win32":
        context = multiprocessing.get_context("spawn")
    else:
        # Forked from a clean server process, workers share no database connection or thread with the driver.
        context = multiprocessing.get_context("forkserver")
        _start_forkserver(preload)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)
    )


def _start_forkserver(preload: Sequence[str]) -> None:
    """Start multiprocessing's fork server (and its resource tracker) unless they run, ignoring SIGINT and SIGTERM
    for life, as will every process forked from the server.

    A terminal's Ctrl-C and a batch system's SIGTERM go to the whole process group: the server would die of one
    while it imports its preload (and the pool with it), and workers would print tracebacks. The driver handles
    them and stops its workers; they exit when it does.
    """
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    if preload:
        multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    # The tracker first, outside: it ignores those signals by itself, and starting it unblocks them.
    multiprocessing.resource_tracker.ensure_running()
    with _children_ignore(STOP_SIGNALS):
        multiprocessing.forkserver.ensure_running()


@contextmanager
def _children_ignore(signals: Iterable[int]) -> Iterator[None]:
    """Processes started inside begin with ``signals`` ignored (an ignored signal stays ignored across exec, and
    Python keeps it so). This thread blocks them meanwhile (the few milliseconds a start takes) and handles them
    after, as usual; nothing inside may unblock them (a signal would then be lost)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers can only be set there
        yield
        return
    wanted = set(signals)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    held = signal.sigpending() & wanted  # setting SIG_IGN discards pending signals: raised again below
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum in held:
            signal.raise_signal(signum)


def _start_worker(driver_pid: int) -> None:
    # A terminal's Ctrl-C and a batch system's SIGTERM go to the whole process group: the driver handles them
    # and stops the pool once the chunks being measured are done. (Already ignored when forked from the server.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    keep_freed_memory()
    threading.Thread(target=_exit_with, args=(driver_pid,), name="iracdb-exit-with-driver", daemon=True).start()


def _exit_with(pid: int) -> None:
    """End this process as soon as the process ``pid`` has ended.

    A pool worker's parent is multiprocessing's fork server, not the driver, and it holds both ends of the task
    queue: after the driver's death (``kill -9``) it would wait for work forever, and keep the fork server and the
    resource tracker alive with it. (``PR_SET_PDEATHSIG`` would watch the fork server, not the driver.)
    """
    try:
        handle = os.pidfd_open(pid)  # Linux >= 5.3: readable once the process has exited
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        while pid_alive(pid):
            time.sleep(1.0)
        os._exit(1)
    poller = select.poll()
    poller.register(handle, select.POLLIN)
    poller.poll()
    os._exit(1)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (True when that cannot be told)."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it exists, another user's
        return True
    return True


# --------------------------------------------------------------------------------------------------------------
# Mapping
# --------------------------------------------------------------------------------------------------------------


def map_unordered(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    in_flight_per_worker: int = 2,
    preload: Sequence[str] = (),
    stop: StopSignals | None = None,
) -> Iterator[R]:
    """``fn`` over ``items``, results as they finish, with a bounded number of items in flight.

    Parameters
    ----------
    fn : callable
        A picklable function of one item (it runs in another process unless ``workers == 1`` and no scheduler).
    items : iterable
        Consumed lazily, ``in_flight_per_worker`` per worker ahead of the results.
    workers : int
        1: in this process; more: a local :func:`process_pool`.
    scheduler : str, optional
        A Dask distributed scheduler ``tcp://HOST:PORT``, or ``local:N`` for a local cluster of N processes.
    in_flight_per_worker : int
        Items submitted per worker (or Dask thread) ahead of the results.
    preload : sequence of str
        Modules the fork server of local workers (a pool, or ``local:N``) imports once.
    stop : StopSignals, optional
        Signals raise :class:`Stop` while computing or waiting; the pool or cluster is stopped before it escapes.

    Raises
    ------
    iracdb.errors.ExecutionError
        A local worker process died; the Dask scheduler cannot be reached or was lost; a Dask cluster had no
        worker for :data:`DASK_NO_WORKERS_TIMEOUT_S` while work was waiting; Dask workers kept dying on a task.
    """
    interruptible: Callable[[], AbstractContextManager[Any]] = stop.interruptible if stop else nullcontext
    keep_freed_memory()  # this process computes (workers == 1) or handles the results
    if scheduler is not None:
        yield from _map_dask(fn, items, scheduler, in_flight_per_worker, preload, interruptible)
    elif workers == 1:
        for item in items:
            with interruptible():
                result = fn(item)
            yield result
    else:
        yield from _map_processes(fn, items, workers, in_flight_per_worker, preload, interruptible)


def _map_processes(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    in_flight_per_worker: int,
    preload: Sequence[str],
    interruptible: Callable[[], AbstractContextManager[Any]],
) -> Iterator[R]:
    pool = process_pool(workers, preload)
    limit = workers * in_flight_per_worker
    in_flight: set[Future[R]] = set()
    try:
        for item in items:
            in_flight.add(pool.submit(fn, item))
            while len(in_flight) >= limit:
                with interruptible():
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        while in_flight:
            with interruptible():
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BrokenProcessPool as exc:
        raise ExecutionError(f"a worker process died (killed, or out of memory?): {exc}") from exc
    finally:
        # On Stop, workers finish the chunk they are measuring and queued chunks are cancelled. (Killing them
        # instead could cut a result short in the pipe, and the pool's thread would then wait for its end forever.)
        pool.shutdown(wait=True, cancel_futures=True)


def _map_dask(
    fn: Callable[[T], R],
    items: Iterable[T],
    scheduler: str,
    in_flight_per_worker: int,
    preload: Sequence[str],
    interruptible: Callable[[], AbstractContextManager[Any]],
) -> Iterator[R]:
    import distributed  # noqa: F401 (its loggers exist once it is imported: silenced below)

    # distributed logs to stderr from its own thread (e.g. a traceback at INFO level when the scheduler's connection
    # closes; asyncio's "Task exception was never retrieved" for the fetch of a result given up on when its worker
    # died): what matters reaches the user as one line, from here.
    with _quiet("distributed"), _quiet("asyncio"):
        client, cluster = _dask_client(scheduler, preload)
        try:
            yield from _map_on(client, fn, items, scheduler, in_flight_per_worker, interruptible)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _dask_client(scheduler: str, preload: Sequence[str]) -> tuple[Any, Any]:
    """A client of the scheduler, and the local cluster it runs (None for a tcp:// scheduler)."""
    import dask
    from distributed import Client, LocalCluster

    if not scheduler.startswith("local:"):
        try:
            return Client(scheduler, timeout=DASK_CONNECT_TIMEOUT_S), None
        except OSError as exc:
            raise ExecutionError(f"cannot reach the Dask scheduler at {scheduler}: {_one_line(exc)}") from exc
    n = int(scheduler.split(":", 1)[1])
    if n < 1:
        raise BadOption("--scheduler local:N needs N >= 1")
    method = "spawn" if sys.platform == "win32" else "forkserver"
    if method == "forkserver":
        _start_forkserver(preload)  # workers forked from it ignore the signals the driver handles
    with dask.config.set({"distributed.worker.multiprocessing-method": method}):
        # silence_logs: no warnings from workers whose tasks are cancelled when a run is stopped
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _map_on(
    client: Any,
    fn: Callable[[T], R],
    items: Iterable[T],
    scheduler: str,
    in_flight_per_worker: int,
    interruptible: Callable[[], AbstractContextManager[Any]],
) -> Iterator[R]:
    from distributed import KilledWorker
    from distributed import wait as dask_wait

    with _lost(scheduler):
        limit = max(1, sum(client.nthreads().values())) * in_flight_per_worker
    iterator = iter(items)
    pending: set[Any] = set()

    def submit(n: int) -> None:
        for item in itertools.islice(iterator, n):
            with _lost(scheduler):
                pending.add(client.submit(fn, item, retries=DASK_RETRIES, pure=False))

    submit(limit)
    idle_since: float | None = None
    while pending:
        try:
            with interruptible(), _lost(scheduler, idle=True):
                done, pending = dask_wait(pending, timeout=DASK_POLL_S, return_when=FIRST_COMPLETED)
        except _Idle:
            idle_since = _without_workers(client, scheduler, idle_since)
            continue
        received = 0
        for future in done:
            if future.status == "error":
                with _lost(scheduler):
                    error = future.exception()
                if isinstance(error, KilledWorker):
                    raise ExecutionError(f"Dask workers kept dying on a task: {_one_line(error)}") from error
                future.result()  # the task's own exception: a bug, with its traceback
            try:
                # Bounded: a result held by a worker that died before it was fetched is computed again, which
                # waits for a worker (an unbounded result() waited for ever on a cluster left without workers).
                with _lost(scheduler, idle=True):
                    result = future.result(timeout=DASK_POLL_S)
            except _Idle:
                pending.add(future)  # waited for again, and the cluster's workers are checked below
                continue
            future.release()
            received += 1
            yield result
        idle_since = None if received else _without_workers(client, scheduler, idle_since)
        submit(received)


class _Idle(Exception):
    """No result arrived within :data:`DASK_POLL_S`."""


@contextmanager
def _lost(scheduler: str, *, idle: bool = False) -> Iterator[None]:
    """Turn distributed's ways of saying the scheduler is gone into an ExecutionError; with ``idle``, a timeout
    (nothing finished in time) into :class:`_Idle`."""
    try:
        yield
    except TimeoutError as exc:  # before OSError: a TimeoutError is one
        if idle:
            raise _Idle() from exc
        raise ExecutionError(f"the Dask scheduler at {scheduler} does not answer: {_one_line(exc)}") from exc
    except (OSError, CancelledError, asyncio.CancelledError) as exc:
        # CommClosedError is an OSError; a lost scheduler cancels every future (FutureCancelledError)
        raise ExecutionError(f"lost the connection to the Dask scheduler at {scheduler}") from exc


def _without_workers(client: Any, scheduler: str, since: float | None) -> float | None:
    """When the cluster has had no worker since (None: it has some now); raises after the allowed time."""
    with _lost(scheduler):
        n_workers = len(client.scheduler_info()["workers"])
    if n_workers:
        return None
    now = time.monotonic()
    if since is None:
        return now
    if now - since >= DASK_NO_WORKERS_TIMEOUT_S:
        raise ExecutionError(
            f"the Dask cluster at {scheduler} has had no worker for {DASK_NO_WORKERS_TIMEOUT_S:g} s "
            "while work was waiting"
        )
    return since


@contextmanager
def _quiet(prefix: str) -> Iterator[None]:
    """Silence the loggers named ``prefix`` or ``prefix.*`` (each may have its own level and handlers)."""
    loggers = [logging.getLogger(prefix)] + [
        logger for name, logger in list(logging.root.manager.loggerDict.items())
        if name.startswith(prefix + ".") and isinstance(logger, logging.Logger)
    ]
    disabled = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, was in zip(loggers, disabled, strict=True):
            logger.disabled = was


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


__all__ = ["STOP_SIGNALS", "Stop", "StopSignals", "keep_freed_memory", "map_unordered", "process_pool"]
