"""Catalogue IRAC Level-1 files into the database (``iracdb ingest``).

The walk is cheap: a file whose size and modification time match its catalogue row is not opened. Everything else is
read (header blocks parsed, whole file checksummed) in worker processes, and the main process writes the results in
batches, each batch one transaction. A bad file never stops the walk: it is recorded in ``rejected_files`` with its
reason, and every good file is still committed.

Concurrent ingests of the same tree are safe: every write transaction first takes a database-wide ingest lock
(a PostgreSQL advisory lock; SQLite's write lock), then re-reads what it needs, so two ingests interleave batch by
batch and unique constraints never see a duplicate.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from iracdb import __version__
from iracdb.db.models import Aor, Exposure, File, IngestEvent, RejectedFile
from iracdb.errors import BadOption
from iracdb.fitsio import KINDS, FileRecord, Rejection, read_irac_file

#: Files read and written per transaction.
BATCH_FILES = 200
#: Kinds that may create an exposure row (they carry its full identity); the others only link to one.
CREATING_KINDS = ("bcd", "cbcd", "bunc", "cbunc", "bimsk")
#: Key of the PostgreSQL advisory lock that serialises ingest write transactions.
_INGEST_LOCK_KEY = 0x1AC_DB_01
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


def walk(roots: Iterable[str]) -> Iterator[tuple[str, int, int]]:
    """Every regular file under ``roots`` (recursively; symlinked folders are not followed), as
    ``(absolute path, size in bytes, mtime in ns)``. A root may itself be a file."""
    seen: set[str] = set()
    for root in roots:
        if os.path.isfile(root):
            stat = os.stat(root)
            if root not in seen:
                seen.add(root)
                yield root, stat.st_size, stat.st_mtime_ns
            continue
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue  # an unreadable folder: its files cannot be catalogued, and there is no path to record
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file() and entry.path not in seen:
                    seen.add(entry.path)
                    stat = entry.stat()
                    yield entry.path, stat.st_size, stat.st_mtime_ns


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
        Processes that read and checksum files in parallel (1: read in this process).
    progress
        Called with (files read so far, files to read).

    Returns
    -------
    IngestSummary
        Counts of new, updated, moved, unchanged and rejected files, and the rejected files with their reasons.
    """
    if workers < 1:
        raise BadOption(f"--workers must be at least 1, not {workers}")
    resolved = []
    for root in roots:
        if not os.path.exists(root):
            raise BadOption(f"no such file or folder: {root}")
        resolved.append(os.path.realpath(root))
    if not resolved:
        raise BadOption("nothing to ingest: give at least one folder or file")

    event_id = _start_event(engine, resolved, workers)
    summary = IngestSummary(ingest_id=event_id)
    known = _catalogued_files(engine, resolved)
    own_files = _database_files(engine)
    to_read: list[str] = []
    for path, size, mtime_ns in walk(resolved):
        if path in own_files:
            continue  # the SQLite catalogue itself, when it lives inside the tree
        summary.n_seen += 1
        if known.get(path) == (size, mtime_ns):
            summary.n_unchanged += 1
        else:
            to_read.append(path)

    deferred: list[FileRecord] = []  # linking kinds wait until every exposure of this ingest exists
    batch: list[FileRecord | Rejection] = []
    for done, result in enumerate(_read_all(to_read, workers), start=1):
        if isinstance(result, FileRecord) and result.kind not in CREATING_KINDS:
            deferred.append(result)
        else:
            batch.append(result)
        if len(batch) >= BATCH_FILES:
            _write_batch(engine, batch, event_id, summary)
            batch = []
        if progress is not None:
            progress(done, len(to_read))
    _write_batch(engine, batch, event_id, summary)
    for start in range(0, len(deferred), BATCH_FILES):
        _write_batch(engine, list(deferred[start : start + BATCH_FILES]), event_id, summary)
    _finish_event(engine, summary)
    return summary


#: Below this many files to read, starting worker processes costs more than it saves.
MIN_FILES_FOR_WORKERS = 64


def _read_all(paths: list[str], workers: int) -> Iterator[FileRecord | Rejection]:
    if workers == 1 or len(paths) < MIN_FILES_FOR_WORKERS:
        yield from map(read_irac_file, paths)
        return
    # Workers only read files; forked from a clean server process, they share no connection or thread with us.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        yield from pool.map(read_irac_file, paths, chunksize=16)


def _database_files(engine: Engine) -> set[str]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        return set()
    path = os.path.realpath(database)
    return {path + suffix for suffix in ("", "-wal", "-shm", "-journal")}


def _now() -> datetime:
    return datetime.now(UTC)


def _start_event(engine: Engine, roots: list[str], workers: int) -> int:
    with engine.begin() as conn:
        return conn.execute(
            IngestEvent.__table__.insert().returning(IngestEvent.id),
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


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INGEST_LOCK_KEY})


def _write_batch(
    engine: Engine, batch: list[FileRecord | Rejection], event_id: int, summary: IngestSummary
) -> None:
    if not batch:
        return
    rejections = [item for item in batch if isinstance(item, Rejection)]
    records = [item for item in batch if isinstance(item, FileRecord)]
    now = _now()
    with engine.begin() as conn:
        _lock(conn)
        if records:
            _upsert_aors(conn, records, now)
            exposure_ids = _upsert_exposures(conn, records, rejections)
            _upsert_files(conn, records, exposure_ids, rejections, event_id, now, summary)
            _refresh_aor_extents(conn, {record.aorkey for record in records}, now)
        _record_rejections(conn, rejections, event_id, now)
    summary.rejected.extend((item.path, item.reason) for item in rejections)


def _upsert_aors(conn: Connection, records: list[FileRecord], now: datetime) -> None:
    best: dict[int, FileRecord] = {}
    for record in records:
        current = best.get(record.aorkey)
        if current is None or _RANK[record.kind] < _RANK[current.kind]:
            best[record.aorkey] = record
    table = Aor.__table__
    for aorkey in sorted(best):
        values = {"aorkey": aorkey, "updated_at": now, **best[aorkey].aor}
        statement = _insert(conn, table).values(values)
        # Keep what an earlier, better file told us where this one is silent.
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.aorkey],
            set_={
                column: func.coalesce(statement.excluded[column], table.c[column])
                for column in values
                if column != "aorkey"
            },
        )
        conn.execute(statement)


def _exposure_map(conn: Connection, aorkeys: set[int]) -> tuple[dict[tuple[int, int, int, int], Any], list[Any]]:
    rows = list(
        conn.execute(
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
    )
    return {(r.aorkey, r.channel, r.expid, r.dcenum): r for r in rows}, rows


def _upsert_exposures(
    conn: Connection, records: list[FileRecord], rejections: list[Rejection]
) -> dict[str, int]:
    """Create or improve the exposure rows of ``records``; return path -> exposure id (unlinkable files are
    moved to ``rejections`` and removed from ``records``)."""
    aorkeys = {record.aorkey for record in records}
    existing, _ = _exposure_map(conn, aorkeys)
    best: dict[tuple[int, int, int, int], FileRecord] = {}
    for record in records:
        if record.kind in CREATING_KINDS and record.dcenum is not None:
            identity = (record.aorkey, record.channel, record.expid, record.dcenum)
            current = best.get(identity)
            if current is None or _RANK[record.kind] < _RANK[current.kind]:
                best[identity] = record
    table = Exposure.__table__
    new_rows = []
    for identity in sorted(best):
        record = best[identity]
        values = {**record.exposure, "aorkey": identity[0], "channel": identity[1], "expid": identity[2],
                  "dcenum": identity[3]}
        row = existing.get(identity)
        if row is None:
            new_rows.append(values)
        elif _RANK[record.kind] <= _RANK[row.header_source_kind]:
            conn.execute(update(Exposure).where(Exposure.id == row.id).values(values))
    if new_rows:
        conn.execute(_insert(conn, table).on_conflict_do_nothing(), new_rows)
        existing, _ = _exposure_map(conn, aorkeys)

    by_dpid = {(r.aorkey, r.channel, r.expid, r.dpid): r for r in existing.values() if r.dpid is not None}
    ids: dict[str, int] = {}
    kept = []
    for record in records:
        row = None
        if record.dcenum is not None:
            row = existing.get((record.aorkey, record.channel, record.expid, record.dcenum))
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
    return ids


def _upsert_files(
    conn: Connection,
    records: list[FileRecord],
    exposure_ids: dict[str, int],
    rejections: list[Rejection],
    event_id: int,
    now: datetime,
    summary: IngestSummary,
) -> None:
    columns = (File.id, File.path, File.sha256, File.exposure_id, File.kind)
    paths = [record.path for record in records]
    by_path = {row.path: _Slot(*row) for row in conn.execute(select(*columns).where(File.path.in_(paths)))}
    in_exposures = File.exposure_id.in_(sorted(set(exposure_ids.values())))
    slots = {(row.exposure_id, row.kind): _Slot(*row) for row in conn.execute(select(*columns).where(in_exposures))}
    new_rows = []
    for record in records:
        exposure_id = exposure_ids[record.path]
        values = {
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
        slot = slots.get((exposure_id, record.kind))
        same_path = by_path.get(record.path)
        if same_path is not None and (slot is None or slot.id == same_path.id):
            # A catalogued file whose size or mtime changed: re-read, row updated (touched only: unchanged).
            conn.execute(update(File).where(File.id == same_path.id).values(values))
            if same_path.sha256 == record.sha256:
                summary.n_unchanged += 1
            else:
                summary.n_updated += 1
            slots[(exposure_id, record.kind)] = same_path
            continue
        if slot is not None and slot.path != record.path:
            if not os.path.exists(slot.path):
                # The catalogued file is gone: this one is it, moved (same content) or replaced.
                conn.execute(update(File).where(File.id == slot.id).values(values))
                if slot.sha256 == record.sha256:
                    summary.n_moved += 1
                else:
                    summary.n_updated += 1
                slots[(exposure_id, record.kind)] = replace(slot, path=record.path, sha256=record.sha256)
                continue
            what = "an identical copy of" if slot.sha256 == record.sha256 else "a different file for the same"
            rejections.append(
                Rejection(
                    record.path,
                    record.size_bytes,
                    record.mtime_ns,
                    f"{what} {record.kind} of AOR {record.aorkey} ch{record.channel} EXPID {record.expid} "
                    f"DCENUM {record.dcenum}, already catalogued from {slot.path}",
                )
            )
            continue
        if same_path is not None:
            # This path's content now belongs to a slot another file holds: the stale row goes.
            conn.execute(delete(File).where(File.id == same_path.id))
        new_rows.append(values)
        slots[(exposure_id, record.kind)] = _Slot(None, record.path, record.sha256, exposure_id, record.kind)
    if new_rows:
        conn.execute(File.__table__.insert(), new_rows)
        summary.n_new += len(new_rows)
    catalogued = [record.path for record in records]
    if catalogued:
        conn.execute(delete(RejectedFile).where(RejectedFile.path.in_(catalogued)))


@dataclass(frozen=True)
class _Slot:
    id: int | None
    path: str
    sha256: str
    exposure_id: int
    kind: str


def _refresh_aor_extents(conn: Connection, aorkeys: set[int], now: datetime) -> None:
    """First/last observation and mission of each AOR, from its exposures."""

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


def _record_rejections(conn: Connection, rejections: list[Rejection], event_id: int, now: datetime) -> None:
    if not rejections:
        return
    paths = [item.path for item in rejections]
    # A catalogued file that has turned bad no longer describes what is on disk.
    conn.execute(delete(File).where(File.path.in_(paths)))
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
    table = RejectedFile.__table__
    statement = _insert(conn, table)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.path],
        set_={column: statement.excluded[column] for column in ("reason", "size_bytes", "mtime_ns", "rejected_at",
                                                                 "ingest_id")},
    )
    conn.execute(statement, [rows[path] for path in sorted(rows)])


__all__ = ["IngestSummary", "ingest", "walk"]
