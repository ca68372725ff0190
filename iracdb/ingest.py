"""Catalogue IRAC Level-1 files into the database (``iracdb ingest``).

The walk is cheap: a file whose size and modification time match its catalogue row is not opened. Everything else is
read (header blocks parsed, whole file checksummed) and written in batches, each batch one transaction. With one
worker this process reads, parses and writes (with PostgreSQL a second thread reads and checksums meanwhile). With
two (the default on two cores) a child process reads and checksums the files (:mod:`iracdb.fitsio.checksums`), this
process reads their header blocks and parses them, and a second thread writes each batch meanwhile. With three or
more, worker processes read and parse, and a second thread writes (see :data:`MIN_WORKERS_FOR_PROCESSES`). A bad
file never stops the walk: it is recorded in ``rejected_files`` with its reason, and every good file is still
committed.

Concurrent ingests of the same tree are safe: every write transaction first takes a database-wide ingest lock
(:meth:`iracdb.db.backend.Backend.ingest_lock`: a PostgreSQL advisory lock; SQLite's write lock), then re-reads what
it needs, so two ingests interleave batch by batch and unique constraints never see a duplicate.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import socket
import stat as stat_module
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from iracdb import __version__
from iracdb.db.backend import backend_for, database_files
from iracdb.db.models import Aor, Exposure, File, IngestEvent, RejectedFile
from iracdb.errors import BadOption
from iracdb.fitsio import KINDS, FileRecord, Rejection, not_regular, read_and_hash, read_irac_file, record_of
from iracdb.fitsio.checksums import read_all_hashed
from iracdb.workers import process_pool

#: Files read and written per transaction.
BATCH_FILES = 200
#: Kinds that may create an exposure row (they carry its full identity); the others only link to one.
CREATING_KINDS = ("bcd", "cbcd", "bunc", "cbunc", "bimsk")
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}

#: Called with (files done, files to read) while files are being read.
ProgressCallback = Callable[[int, int], None]


@dataclass
class IngestSummary:
    """What one ingest did. ``rejected`` lists (path, reason) for every file that could not be catalogued."""

    ingest_id: int
    n_seen: int = 0
    n_new: int = 0
    n_updated: int = 0
    n_moved: int = 0
    n_unchanged: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)


def walk(roots: Iterable[str]) -> Iterator[tuple[str, int, int, str | None]]:
    """Every regular file under ``roots`` (recursively) as ``(path, size in bytes, mtime in ns, problem)``.

    ``problem`` is None, or why the entry cannot be catalogued: a folder that cannot be listed, a file name that is
    not valid UTF-8, an entry that is not a regular file (a FIFO, a socket, a device: never opened), a symbolic link
    that is broken or loops, a symbolic link to a folder. Nothing under the roots is skipped silently, except files
    that vanish during the walk. A root may itself be a file. Symbolic links to files are resolved to their
    target's path, so a link and its target are one file; symbolic links to folders are not followed (no cycles,
    no walking outside the tree): each is reported, as a loop when it points to its own folder or one above it.
    """
    seen: set[str] = set()
    for root in roots:
        if os.path.islink(root) and not os.path.exists(root):  # a broken or looping link given as a root
            yield from _linked(root, os.path.dirname(os.path.abspath(root)), seen)
        elif not os.path.isdir(root):
            yield from _visit(os.path.realpath(root), seen)
        else:
            yield from _walk_folder(root, seen)


#: What :func:`walk` gives for each entry: (path, size in bytes, mtime in ns, problem or None).
_Entry = tuple[str, int, int, str | None]


def _walk_folder(root: str, seen: set[str]) -> Iterator[_Entry]:
    """Every entry under the folder ``root``, folders in depth-first order and entries by name."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield _shown(folder), 0, 0, f"folder cannot be read: {exc.strerror or exc}"
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    yield from _linked(entry.path, folder, seen)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:  # a regular file, or a FIFO, socket or device (_visit says which, and none is opened)
                    yield from _visit(entry.path, seen)
            except OSError:
                continue  # vanished between listing and looking


def _visit(path: str, seen: set[str]) -> Iterator[_Entry]:
    """The file at ``path`` (a real path), once: its size and mtime, or why it cannot be catalogued."""
    if path in seen:
        return
    seen.add(path)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return  # renamed or deleted since it was listed
    except OSError as exc:
        yield _shown(path), 0, 0, _link_problem(exc)
        return
    if _shown(path) != path:
        yield _shown(path), stat.st_size, stat.st_mtime_ns, "the file name is not valid UTF-8: rename it"
        return
    yield path, stat.st_size, stat.st_mtime_ns, not_regular(stat.st_mode)


def _linked(path: str, folder: str, seen: set[str]) -> Iterator[_Entry]:
    """A symbolic link found in ``folder``: its target file, or why it is not followed."""
    try:
        stat = os.stat(path)  # the target's
    except FileNotFoundError:
        if os.path.lexists(path):  # (else the link itself vanished)
            target = _shown(os.path.realpath(path))
            yield _shown(path), 0, 0, f"broken symbolic link: its target {target} does not exist"
        return
    except OSError as exc:  # a loop (ELOOP), or a link on the way that cannot be read
        yield _shown(path), 0, 0, _link_problem(exc)
        return
    target = os.path.realpath(path)
    if not stat_module.S_ISDIR(stat.st_mode):
        yield from _visit(target, seen)
        return
    here = os.path.realpath(folder)
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        reason = f"symbolic link loop: it points to {_shown(target)}, its own folder or one above it (not followed)"
    else:
        reason = f"symbolic link to the folder {_shown(target)}: not followed (give that folder to ingest it)"
    yield _shown(path), 0, 0, reason


def _shown(path: str) -> str:
    """``path`` as valid UTF-8 text (bytes that are not UTF-8 shown as ``\\xNN``): what the database can store."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def _link_problem(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop: its target is itself, through one or more links (not followed)"
    return f"cannot be read: {exc.strerror or exc}"


def ingest(
    engine: Engine,
    roots: Iterable[str],
    *,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> IngestSummary:
    """Catalogue every IRAC Level-1 file under ``roots``.

    Parameters
    ----------
    engine
        An engine whose database has the current schema.
    roots
        Folders (walked recursively) and/or files.
    workers
        1: files are read in this process (with PostgreSQL, a second thread reads and checksums ahead); 2: a child
        process reads and checksums them while this one parses their headers, and a second thread writes; 3 or
        more: that many worker processes read and parse them (:data:`MIN_WORKERS_FOR_PROCESSES`), and a second
        thread writes. The ingest event records the processes that read (1, 2 or ``workers``). The rows written are
        the same whichever.
    progress
        Called with (files read so far, files to read).

    Returns
    -------
    IngestSummary
        Counts of new, updated, moved, unchanged and rejected files, and the rejected files with their reasons.
    """
    if workers < 1:
        raise BadOption(f"--workers must be at least 1, not {workers}")
    resolved = _resolve_roots(roots)
    workers = workers if workers >= MIN_WORKERS_FOR_PROCESSES else min(workers, 2)  # what is used, and recorded
    event_id = _start_event(engine, resolved, workers)
    summary = IngestSummary(ingest_id=event_id)
    rejected, to_read = _walk_catalogue(engine, resolved, summary)
    _read_and_write(engine, to_read, workers, rejected, summary, progress)
    _finish_event(engine, summary)
    return summary


def _resolve_roots(roots: Iterable[str]) -> list[str]:
    """The roots as real paths; a broken or looping link given as a root is kept as given (the walk reports it)."""
    resolved = []
    for root in roots:
        if not os.path.lexists(root):
            raise BadOption(f"no such file or folder: {root}")
        resolved.append(os.path.realpath(root) if os.path.exists(root) else os.path.abspath(root))
    if not resolved:
        raise BadOption("nothing to ingest: give at least one folder or file")
    return resolved


def _walk_catalogue(
    engine: Engine, roots: list[str], summary: IngestSummary
) -> tuple[list[FileRecord | Rejection], list[str]]:
    """Walk the roots: the entries that cannot be catalogued, and the paths to read (new, or changed in size or
    modification time since catalogued); counts seen and unchanged files in ``summary``."""
    known = _catalogued_files(engine, roots)
    own_files = _database_files(engine)
    rejected: list[FileRecord | Rejection] = []
    to_read: list[str] = []
    for path, size, mtime_ns, problem in walk(roots):
        if path in own_files:
            continue  # the SQLite catalogue itself, when it lives inside the tree
        summary.n_seen += 1
        if problem is not None:
            rejected.append(Rejection(path, size, mtime_ns, problem))
        elif known.get(path) == (size, mtime_ns):
            summary.n_unchanged += 1
        else:
            to_read.append(path)
    return rejected, to_read


def _read_and_write(engine: Engine, to_read: list[str], workers: int, batch: list[FileRecord | Rejection],
                    summary: IngestSummary, progress: ProgressCallback | None) -> None:
    """Read the files ``to_read`` and write them, after ``batch``, :data:`BATCH_FILES` per transaction; the files
    that only link to an exposure last, once every exposure of this ingest exists. With two workers or more, a
    second thread writes each batch while this one reads the next (:class:`_WriteBehind`); else this thread
    writes."""
    deferred: list[FileRecord | Rejection] = []
    # Reading ahead in a second thread pays where the writes wait for a database server (PostgreSQL), which works
    # meanwhile; with SQLite this process does the database's work, and the two threads took turns (measured:
    # slower, see MIN_WORKERS_FOR_PROCESSES).
    read_ahead = backend_for(engine).writes_behind
    with _read_all(to_read, workers, read_ahead) as results, _writer(engine, summary, workers) as write:
        for done, result in enumerate(results, start=1):
            if isinstance(result, FileRecord) and result.kind not in CREATING_KINDS:
                deferred.append(result)
            else:
                batch.append(result)
            if len(batch) >= BATCH_FILES:
                write(batch)
                batch = []
            if progress is not None:
                progress(done, len(to_read))
        write(batch)
        for start in range(0, len(deferred), BATCH_FILES):
            write(deferred[start : start + BATCH_FILES])


@contextlib.contextmanager
def _writer(engine: Engine, summary: IngestSummary, workers: int
            ) -> Iterator[Callable[[list[FileRecord | Rejection]], None]]:
    """A function that writes a batch (:func:`_write_batch`): in this thread with one worker; with more (a second
    core), in a second thread, while this one reads on (every batch is written once the context ends without an
    error).

    The second thread keeps the database's own work off the parsing thread: SQLite's B-tree, page writes and
    commits run without the GIL; PostgreSQL's server works while this thread parses instead of being waited for.
    4,000 files, thread CPU: SQLite, the parsing thread 1.2-1.5 s and the writing one 1.0-1.2 s, against 2.0-2.8 s
    in one thread; PostgreSQL 1.05-1.3 s and 0.5-0.7 s against 1.5-1.95 s (the process's CPU in all about the same,
    the server's 0.7-0.9 s). A busy machine (load average 4-6) showed no gain in wall time: it lent us one core.
    A database in memory (``sqlite://``) is written in this thread: another thread's connection would open a new,
    empty one."""
    if workers < 2 or not backend_for(engine).threads_share_database:
        yield lambda batch: _write_batch(engine, batch, summary.ingest_id, summary)
        return
    with _WriteBehind(engine, summary) as write:
        yield write


#: Batches read ahead of the one being written (each ~5 MB of header text): a few, so that reading goes on
#: through a slow commit (SQLite's checkpoints copy the write-ahead log into the database every ~1,500 files).
_BATCHES_AHEAD = 3


class _WriteBehind:
    """Write batches in a second thread, in order, while the thread that reads and parses goes on.

    The database's own work (SQLite's B-tree and file writes, and its commits; PostgreSQL's server) runs without
    the GIL, on the other core, meanwhile. Whatever the writing thread raises is raised in the reading thread, at
    its next batch or when the context ends. Leaving the context on an error (a Ctrl-C) lets the batch being
    written commit, drops the batches not written yet (a new ingest reads them again), and waits for the thread.
    """

    def __init__(self, engine: Engine, summary: IngestSummary) -> None:
        self._engine = engine
        self._summary = summary
        self._queue: queue.Queue[list[FileRecord | Rejection] | None] = queue.Queue(maxsize=_BATCHES_AHEAD)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name="iracdb-ingest-writer", daemon=True)

    def __enter__(self) -> Callable[[list[FileRecord | Rejection]], None]:
        self._thread.start()
        return self._submit

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is None:
            self._put(None)  # the end: every batch is written first
        else:
            self._stop.set()
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error

    def _submit(self, batch: list[FileRecord | Rejection]) -> None:
        if batch:
            self._put(batch)

    def _put(self, item: list[FileRecord | Rejection] | None) -> None:
        """Queue ``item`` for the writing thread, waiting while it is behind; raise what it raised."""
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=_STOP_POLL_S)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise RuntimeError("the ingest's writing thread ended unexpectedly") from self._error
                continue

    def _write(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    batch = self._queue.get(timeout=_STOP_POLL_S)
                except queue.Empty:
                    continue
                if batch is None:
                    return
                _write_batch(self._engine, batch, self._summary.ingest_id, self._summary)
        except BaseException as exc:  # raised in the reading thread
            self._error = exc


#: Below this many files to read, starting worker processes costs more than it saves.
MIN_FILES_FOR_WORKERS = 64
#: Fewest workers for which ingest reads and parses in worker processes; with two, a child process reads and
#: checksums (:mod:`iracdb.fitsio.checksums`), with one, this process does it all.
#:
#: Measured before the checksumming child: a file cost ingest ~0.9 ms of CPU (4,000 real-header files of ~135 kB,
#: SQLite, a busy 2-core machine): ~0.25 ms reading and SHA-256 (no GIL held), ~0.3 ms parsing the header, ~0.35 ms
#: writing its rows. A worker process reads and parses, but sending ~25 kB of header text a file back to the writer
#: (pickled, piped, unpickled) and starting the processes cost more than the work moved (whole ingest, start-up
#: included: 5.6 s of CPU in one thread, 7.0 s with two worker processes), so on two cores two processes beside the
#: writer were slower than one process alone. A second thread that reads and checksums on SQLite took the writing
#: thread's own CPU from ~3.3 s to ~2.7 s but lost it in GIL hand-overs (sqlite3 takes the GIL back after every row):
#: 4,000 files in 3.50-4.09 s alone, 3.98-4.68 s with the thread (load average 2.4-2.8, interleaved), so it is used (one
#: worker) with PostgreSQL only (whose writes wait for the server). The checksumming child sends back one short line a
#: file (no header text) and shares no GIL: it takes reading and SHA-256 (~0.13 ms a file) off this process. Three or
#: more workers (more cores) take the parsing off it too.
MIN_WORKERS_FOR_PROCESSES = 3
#: The GIL switch interval while a reading thread runs [s] (Python's default: 5 ms). The reading thread holds the
#: GIL only for moments between system calls, but each time waits for the parsing thread to give it up: at 5 ms a
#: wait, it reads little while the writer parses. PostgreSQL, 4,000 files, four interleaved pairs (load average
#: 2.5-4.1): 5.2, 7.3, 6.1, 6.4 s at 0.5 ms; 4.8, 9.1, 9.3, 8.4 s at 5 ms.
READ_AHEAD_SWITCH_INTERVAL_S = 0.0005


@contextlib.contextmanager
def _read_all(paths: list[str], workers: int, read_ahead: bool) -> Iterator[Iterator[FileRecord | Rejection]]:
    """What each of ``paths`` holds, in order.

    With one worker (or too few files for another process), in this thread; with ``read_ahead``, a second thread
    reads and checksums the files ahead (:class:`_ReadAhead`: no GIL needed meanwhile) and the headers are parsed
    in the thread that iterates, between its writes. With two, a child process reads and checksums the files while
    this thread reads their header blocks and parses them (:func:`~iracdb.fitsio.checksums.read_all_hashed`). With
    :data:`MIN_WORKERS_FOR_PROCESSES` or more, worker processes do all of it. Whichever way, the records are the
    same and come in the same order.
    """
    if workers >= MIN_WORKERS_FOR_PROCESSES and len(paths) >= MIN_FILES_FOR_WORKERS:
        # Workers only read files; they share no connection or thread with us, and end when this process does.
        with process_pool(workers) as pool:
            yield pool.map(read_irac_file, paths, chunksize=16)
        return
    if workers >= 2 and len(paths) >= MIN_FILES_FOR_WORKERS:
        # The child only reads files; it ends when the context ends, or soon after this process dies.
        with read_all_hashed(paths) as read:
            yield map(record_of, read)
        return
    if not read_ahead:
        yield map(read_irac_file, paths)
        return
    with _switching_often(), _ReadAhead(map(read_and_hash, paths)) as read:
        yield map(record_of, read)


@contextlib.contextmanager
def _switching_often() -> Iterator[None]:
    """Python's GIL switch interval set to :data:`READ_AHEAD_SWITCH_INTERVAL_S` meanwhile (restored after)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, READ_AHEAD_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


#: Files the reading thread hands over at a time (one queue operation for them all), and hand-overs it may be
#: ahead of the parsing (at most ~400 files' header blocks, ~10 MB, wait in memory).
_HANDOVER_FILES = 25
_HANDOVERS_AHEAD = 16
#: How often a reading thread that waits to hand over looks whether it should stop instead [s].
_STOP_POLL_S = 0.05

_T = TypeVar("_T")


class _ReadAhead(Generic[_T]):
    """Iterate ``items`` in a second thread, ahead of the thread that iterates this.

    Meant for work that holds the GIL little (reading files and hashing them: the file system and hashlib release
    it), so that it overlaps the iterating thread's parsing and database work without slowing it: a thread that
    holds the GIL for long would make the other wait for it after each of its many short database calls (one per
    row in sqlite3). Whatever the second thread raises is raised here. Leaving the context (an error, a Ctrl-C)
    stops the thread after the item it is on and waits for it; the items read ahead are then dropped.
    """

    def __init__(self, items: Iterator[_T]) -> None:
        self._items = items
        self._queue: queue.Queue[list[_T] | BaseException | None] = queue.Queue(maxsize=_HANDOVERS_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="iracdb-ingest-reader", daemon=True)

    def __enter__(self) -> Iterator[_T]:
        self._thread.start()
        return self._received()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _received(self) -> Iterator[_T]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield from item

    def _read(self) -> None:
        try:
            chunk: list[_T] = []
            for item in self._items:
                chunk.append(item)
                if len(chunk) == _HANDOVER_FILES:
                    if not self._hand_over(chunk):
                        return
                    chunk = []
            if self._hand_over(chunk):
                self._hand_over(None)
        except BaseException as exc:  # handed to the iterating thread, which raises it
            self._hand_over(exc)

    def _hand_over(self, item: list[_T] | BaseException | None) -> bool:
        """Queue ``item``, waiting while the queue is full; False (not queued) once told to stop."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_STOP_POLL_S)
                return True
            except queue.Full:
                continue
        return False


def _database_files(engine: Engine) -> set[str]:
    """The real paths of the database's own files (a SQLite catalogue may live inside the tree it catalogues)."""
    return {os.path.realpath(path) for path in database_files(engine.url)}


def _now() -> datetime:
    return datetime.now(UTC)


def _start_event(engine: Engine, roots: list[str], workers: int) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(IngestEvent).returning(IngestEvent.id),
            {
                "started_at": _now(),
                "roots": json.dumps(roots),
                "software_version": __version__,
                "host": socket.gethostname(),
                "workers": workers,
                "n_seen": 0,
                "n_new": 0,
                "n_updated": 0,
                "n_moved": 0,
                "n_unchanged": 0,
                "n_rejected": 0,
            },
        ).scalar_one()


def _finish_event(engine: Engine, summary: IngestSummary) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(IngestEvent)
            .where(IngestEvent.id == summary.ingest_id)
            .values(
                finished_at=_now(),
                n_seen=summary.n_seen,
                n_new=summary.n_new,
                n_updated=summary.n_updated,
                n_moved=summary.n_moved,
                n_unchanged=summary.n_unchanged,
                n_rejected=summary.n_rejected,
            )
        )


def _catalogued_files(engine: Engine, roots: list[str]) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of catalogued files under the roots."""
    known: dict[str, tuple[int, int]] = {}
    with engine.connect() as conn:
        for root in roots:
            prefix = root if os.path.isfile(root) else root.rstrip(os.sep) + os.sep
            rows = conn.execute(
                select(File.path, File.size_bytes, File.mtime_ns).where(
                    func.substr(File.path, 1, len(prefix)) == prefix
                )
            )
            known.update((path, (size, mtime)) for path, size, mtime in rows)
    return known


def _write_batch(
    engine: Engine, batch: list[FileRecord | Rejection], event_id: int, summary: IngestSummary
) -> None:
    """Write one batch in one transaction. Should the database refuse it (a value PostgreSQL cannot store, say),
    write its files one at a time, so that only the file at fault is rejected and every other one is committed."""
    if not batch:
        return
    try:
        _write_transaction(engine, batch, event_id, summary)
    except DBAPIError:
        if len(batch) == 1:
            raise
        for item in batch:
            try:
                _write_transaction(engine, [item], event_id, summary)
            except DBAPIError as exc:
                reason = str(exc.orig or exc).strip().splitlines()[0]
                refused = Rejection(item.path, item.size_bytes, item.mtime_ns, f"the database refused it: {reason}")
                _write_transaction(engine, [refused], event_id, summary)


def _write_transaction(
    engine: Engine, batch: list[FileRecord | Rejection], event_id: int, summary: IngestSummary
) -> None:
    rejections = [item for item in batch if isinstance(item, Rejection)]
    records = [item for item in batch if isinstance(item, FileRecord)]
    counts = IngestSummary(ingest_id=event_id)  # added to ``summary`` only once the transaction commits
    now = _now()
    with engine.begin() as conn:
        backend = backend_for(conn)
        backend.ingest_lock(conn)
        backend.compress_text_cheaply(conn)
        # The ingest's last commit (its event's) makes this one durable too.
        backend.relax_durability(conn)
        touched_aorkeys = {record.aorkey for record in records}
        if records:
            _ensure_aors(conn, touched_aorkeys, now)
            exposure_ids, created_from = _ensure_exposures(conn, records, rejections)
            accepted, left = _upsert_files(conn, records, exposure_ids, rejections, event_id, now, counts)
            _apply_headers(conn, accepted, exposure_ids, created_from)
            touched_aorkeys |= _remove_orphans(conn, left)
        touched_aorkeys |= _record_rejections(conn, rejections, event_id, now)
        _refresh_aor_extents(conn, touched_aorkeys, now)
    summary.n_new += counts.n_new
    summary.n_updated += counts.n_updated
    summary.n_moved += counts.n_moved
    summary.n_unchanged += counts.n_unchanged
    summary.rejected.extend((item.path, item.reason) for item in rejections)


def _ensure_aors(conn: Connection, aorkeys: set[int], now: datetime) -> None:
    rows = [{"aorkey": aorkey, "updated_at": now} for aorkey in sorted(aorkeys)]
    backend_for(conn).insert_new(conn, Aor.__table__, rows)


def _exposure_map(conn: Connection, aorkeys: set[int]) -> dict[tuple[int, int, int, int], Any]:
    rows = conn.execute(
        select(
            Exposure.id,
            Exposure.aorkey,
            Exposure.channel,
            Exposure.expid,
            Exposure.dcenum,
            Exposure.dpid,
            Exposure.header_source_kind,
        ).where(Exposure.aorkey.in_(sorted(aorkeys)))
    )
    return {(r.aorkey, r.channel, r.expid, r.dcenum): r for r in rows}


def _identity(record: FileRecord) -> tuple[int, int, int, int]:
    assert record.dcenum is not None
    return (record.aorkey, record.channel, record.expid, record.dcenum)


def _ensure_exposures(
    conn: Connection, records: list[FileRecord], rejections: list[Rejection]
) -> tuple[dict[str, int], set[str]]:
    """Create missing exposure rows; return path -> exposure id, and the paths of the files new exposure rows were
    made from. Unlinkable files are moved to ``rejections``.

    A new exposure starts from its best file's header columns; :func:`_apply_headers` later updates them from the
    files actually catalogued (a rejected duplicate never changes an exposure).
    """
    aorkeys = {record.aorkey for record in records}
    existing = _exposure_map(conn, aorkeys)
    best: dict[tuple[int, int, int, int], FileRecord] = {}
    for record in records:
        if record.kind in CREATING_KINDS and record.dcenum is not None:
            identity = _identity(record)
            if identity not in existing and (
                identity not in best or _RANK[record.kind] < _RANK[best[identity].kind]
            ):
                best[identity] = record
    if best:
        rows = [_exposure_values(best[identity]) for identity in sorted(best)]
        backend_for(conn).insert_new(conn, Exposure.__table__, rows)
        existing = _exposure_map(conn, aorkeys)

    by_dpid = {(r.aorkey, r.channel, r.expid, r.dpid): r for r in existing.values() if r.dpid is not None}
    ids: dict[str, int] = {}
    kept = []
    for record in records:
        row = existing.get(_identity(record)) if record.dcenum is not None else None
        if row is None and record.dpid is not None:
            row = by_dpid.get((record.aorkey, record.channel, record.expid, record.dpid))
        if row is None and record.kind not in CREATING_KINDS:
            candidates = [r for key, r in existing.items() if key[:3] == (record.aorkey, record.channel, record.expid)]
            row = candidates[0] if len(candidates) == 1 else None
        if row is None:
            rejections.append(
                Rejection(
                    record.path,
                    record.size_bytes,
                    record.mtime_ns,
                    f"{record.kind} file of AOR {record.aorkey} ch{record.channel} EXPID {record.expid} has no "
                    "catalogued exposure to belong to (ingest its BCD with it)",
                )
            )
            continue
        ids[record.path] = row.id
        kept.append(record)
    records[:] = kept
    return ids, {record.path for record in best.values()}


def _exposure_values(record: FileRecord) -> dict[str, Any]:
    aorkey, channel, expid, dcenum = _identity(record)
    return {**record.exposure, "aorkey": aorkey, "channel": channel, "expid": expid, "dcenum": dcenum}


def _table(model: type[Aor] | type[Exposure] | type[File]) -> Table:
    """The model's table (SQLAlchemy types ``__table__`` as any selectable: a class may map a join; these do not)."""
    return cast(Table, model.__table__)


def _apply_headers(
    conn: Connection, accepted: list[FileRecord], exposure_ids: dict[str, int], created_from: set[str]
) -> None:
    """Exposure and AOR columns from the best catalogued file of each (bcd > cbcd > bunc > cbunc > bimsk)."""
    best_for_exposure: dict[int, FileRecord] = {}
    best_for_aor: dict[int, FileRecord] = {}
    for record in accepted:
        if record.kind not in CREATING_KINDS or record.dcenum is None:
            continue
        exposure_id = exposure_ids[record.path]
        current = best_for_exposure.get(exposure_id)
        if current is None or _RANK[record.kind] < _RANK[current.kind]:
            best_for_exposure[exposure_id] = record
        current = best_for_aor.get(record.aorkey)
        if current is None or _RANK[record.kind] < _RANK[current.kind]:
            best_for_aor[record.aorkey] = record
    # Rows just created from the very file that is best need nothing more.
    to_update = {key: record for key, record in best_for_exposure.items() if record.path not in created_from}
    if to_update:
        table = _table(Exposure)
        rows = conn.execute(select(table.c.id, table.c.header_source_kind).where(table.c.id.in_(sorted(to_update))))
        sources = {row.id: row.header_source_kind for row in rows}
        updates = [
            {**_exposure_values(record), "row_id": exposure_id}
            for exposure_id, record in sorted(to_update.items())
            if _RANK[record.kind] <= _RANK[sources[exposure_id]]
        ]
        if updates:
            conn.execute(table.update().where(table.c.id == bindparam("row_id")), updates)
    table = _table(Aor)
    for aorkey in sorted(best_for_aor):
        # Keep what an earlier, better file told us where this one is silent.
        values = {column: func.coalesce(value, table.c[column]) for column, value in best_for_aor[aorkey].aor.items()}
        conn.execute(table.update().where(table.c.aorkey == aorkey).values(values))


def _upsert_files(
    conn: Connection,
    records: list[FileRecord],
    exposure_ids: dict[str, int],
    rejections: list[Rejection],
    event_id: int,
    now: datetime,
    counts: IngestSummary,
) -> tuple[list[FileRecord], set[int]]:
    """Catalogue the files; return the records that got a row, and the exposures that rows were taken from."""
    rows = _FileRows.load(conn, [record.path for record in records], set(exposure_ids.values()), counts)
    accepted: list[FileRecord] = []
    for record in records:
        catalogued = rows.place(record, _file_values(record, exposure_ids[record.path], event_id, now))
        if catalogued is None:
            accepted.append(record)
        else:
            rejections.append(_duplicate(record, catalogued))
    rows.insert_new()
    if accepted:
        conn.execute(delete(RejectedFile).where(RejectedFile.path.in_([record.path for record in accepted])))
    return accepted, rows.left


def _file_values(record: FileRecord, exposure_id: int, event_id: int, now: datetime) -> dict[str, Any]:
    """The ``files`` row of ``record`` (without its id)."""
    return {
        "exposure_id": exposure_id,
        "path": record.path,
        "kind": record.kind,
        "size_bytes": record.size_bytes,
        "mtime_ns": record.mtime_ns,
        "sha256": record.sha256,
        "header_text": record.header_text,
        "n_header_cards": record.n_header_cards,
        "ingested_at": now,
        "ingest_id": event_id,
    }


def _duplicate(record: FileRecord, catalogued: _Slot) -> Rejection:
    """The rejection of ``record``: its exposure's slot for its kind holds ``catalogued``, another file on disk."""
    what = "an identical copy of" if catalogued.sha256 == record.sha256 else "a different file for the same"
    return Rejection(
        record.path,
        record.size_bytes,
        record.mtime_ns,
        f"{what} {record.kind} of AOR {record.aorkey} ch{record.channel} EXPID {record.expid} "
        f"DCENUM {record.dcenum}, already catalogued from {catalogued.path}",
    )


@dataclass(frozen=True)
class _Slot:
    """A catalogued file row: an exposure has at most one file of each kind (its slot)."""

    id: int | None
    path: str
    sha256: str
    exposure_id: int
    kind: str


@dataclass
class _FileRows:
    """The ``files`` rows one batch may touch, by path and by slot ``(exposure id, kind)``, kept up to date as the
    batch's files are placed; the exposures rows moved away from (``left``: they may be left without files) and the
    rows still to insert (``new_rows``)."""

    conn: Connection
    by_path: dict[str, _Slot]
    slots: dict[tuple[int, str], _Slot]
    counts: IngestSummary
    left: set[int] = field(default_factory=set)
    new_rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, conn: Connection, paths: list[str], exposure_ids: set[int], counts: IngestSummary) -> _FileRows:
        columns = (File.id, File.path, File.sha256, File.exposure_id, File.kind)
        by_path = {row.path: _Slot(*row) for row in conn.execute(select(*columns).where(File.path.in_(paths)))}
        in_exposures = File.exposure_id.in_(sorted(exposure_ids))
        slots = {(row.exposure_id, row.kind): _Slot(*row) for row in conn.execute(select(*columns).where(in_exposures))}
        return cls(conn, by_path, slots, counts)

    def place(self, record: FileRecord, values: dict[str, Any]) -> _Slot | None:
        """Give ``record`` its row (``values``); None, or (the record is a duplicate, not placed) the row of
        another file on disk that already holds its slot."""
        slot_key = (values["exposure_id"], record.kind)
        slot = self.slots.get(slot_key)
        same_path = self.by_path.get(record.path)
        if same_path is not None and (slot is None or slot.id == same_path.id):
            # A catalogued file whose size or mtime changed: re-read, row updated (touched only: unchanged).
            if self._rewrite(same_path, values):
                self.counts.n_unchanged += 1
            if same_path.exposure_id != values["exposure_id"]:  # it now belongs to another exposure
                self._vacate(same_path)
            self.slots[slot_key] = replace(same_path, exposure_id=values["exposure_id"], kind=record.kind)
            return None
        if slot is not None and slot.path != record.path and os.path.exists(slot.path):
            return slot
        if same_path is not None:
            # This path held another file before (e.g. `mv b a` over a catalogued a): that row describes
            # nothing on disk any more.
            self.conn.execute(delete(File).where(File.id == same_path.id))
            self._vacate(same_path)
        if slot is not None and slot.path != record.path:
            # The catalogued file of this slot is gone: this one is it, moved (same content) or replaced.
            if self._rewrite(slot, values):
                self.counts.n_moved += 1
            self.slots[slot_key] = replace(slot, path=record.path, sha256=record.sha256)
            return None
        self.new_rows.append(values)
        self.slots[slot_key] = _Slot(None, record.path, record.sha256, *slot_key)
        return None

    def _rewrite(self, row: _Slot, values: dict[str, Any]) -> bool:
        """Update ``row`` to ``values``; whether the file's content is the row's (else it counts as updated)."""
        self.conn.execute(update(File).where(File.id == row.id).values(values))
        same = row.sha256 == values["sha256"]
        if not same:
            self.counts.n_updated += 1
        return same

    def _vacate(self, row: _Slot) -> None:
        """``row`` no longer holds its slot: its exposure may be left without files."""
        self.left.add(row.exposure_id)
        self.slots.pop((row.exposure_id, row.kind), None)

    def insert_new(self) -> None:
        """Insert the rows of the files that took an empty slot."""
        if self.new_rows:
            backend_for(self.conn).insert_rows(self.conn, _table(File), self.new_rows)
            self.counts.n_new += len(self.new_rows)


def _remove_orphans(conn: Connection, exposure_ids: set[int]) -> set[int]:
    """Delete those of ``exposure_ids`` left without any file, and AORs left without exposures; return the AORKEYs
    concerned (their extents need refreshing)."""
    if not exposure_ids:
        return set()
    aorkeys = set(conn.execute(select(Exposure.aorkey).where(Exposure.id.in_(sorted(exposure_ids)))).scalars())
    has_files = select(File.id).where(File.exposure_id == Exposure.id).exists()
    conn.execute(delete(Exposure).where(Exposure.id.in_(sorted(exposure_ids)), ~has_files))
    has_exposures = select(Exposure.id).where(Exposure.aorkey == Aor.aorkey).exists()
    conn.execute(delete(Aor).where(Aor.aorkey.in_(sorted(aorkeys)), ~has_exposures))
    return aorkeys


def _refresh_aor_extents(conn: Connection, aorkeys: set[int], now: datetime) -> None:
    """First/last observation and mission of each AOR, from its exposures."""
    if not aorkeys:
        return

    def first(column: Any, descending: bool = False) -> Any:
        order = Exposure.mjd_obs.desc() if descending else Exposure.mjd_obs
        return (
            select(column).where(Exposure.aorkey == Aor.aorkey).order_by(order, Exposure.id).limit(1)
        ).scalar_subquery()

    conn.execute(
        update(Aor)
        .where(Aor.aorkey.in_(sorted(aorkeys)))
        .values(
            first_mjd=first(Exposure.mjd_obs),
            last_mjd=first(Exposure.mjd_obs, descending=True),
            first_date_obs=first(Exposure.date_obs),
            last_date_obs=first(Exposure.date_obs, descending=True),
            mission=first(Exposure.mission),
            updated_at=now,
        )
    )


def _record_rejections(conn: Connection, rejections: list[Rejection], event_id: int, now: datetime) -> set[int]:
    """Record the rejections; return the AORKEYs whose exposures lost a file (a catalogued file turned bad)."""
    if not rejections:
        return set()
    paths = [item.path for item in rejections]
    # A catalogued file that has turned bad no longer describes what is on disk: its row goes, and so does an
    # exposure (and an AOR) left with no file at all.
    stale = set(conn.execute(select(File.exposure_id).where(File.path.in_(paths))).scalars())
    conn.execute(delete(File).where(File.path.in_(paths)))
    touched = _remove_orphans(conn, stale)
    rows = {
        item.path: {
            "path": item.path,
            "reason": item.reason,
            "size_bytes": item.size_bytes,
            "mtime_ns": item.mtime_ns,
            "rejected_at": now,
            "ingest_id": event_id,
        }
        for item in rejections
    }
    backend_for(conn).upsert(conn, RejectedFile.__table__, [rows[path] for path in sorted(rows)], key=["path"],
                             update=["reason", "size_bytes", "mtime_ns", "rejected_at", "ingest_id"])
    return touched


__all__ = ["IngestSummary", "ingest", "walk"]
