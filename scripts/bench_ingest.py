#!/usr/bin/env python
"""Benchmark `iracdb ingest` against a plain astropy header loop on the same files, in the same run.

Builds an archive of several thousand files with real IRAC headers: the real files in ../shared/data/irac (subarray
BCD/BUNC/BIMSK/sub2d/... and full-array BCD/CBCD/CBUNC), cloned under new AORKEYs (only the AORKEY card changes),
then times:

1. a plain ``astropy.io.fits.getheader`` loop over every file (the baseline);
2. ``iracdb ingest`` into a new database (headers parsed, every file checksummed with SHA-256, rows written), with
   each of ``--workers`` (default 1 and 2), on SQLite and/or PostgreSQL (``--backend``);
3. a re-ingest of the unchanged tree (no file is opened).

Each ingest is timed ``--repeat`` times, each into a new database, interleaved with the getheader loop; the best of
each and their ratio are printed (the machine may be busy: the ratio of the best times is the figure to quote).
``--profile N`` profiles one more ingest of each configuration (cProfile, the whole ``ingest()`` call: walk, reads,
writes) and prints its N costliest functions by own time and by cumulative time.

Usage: python scripts/bench_ingest.py [--copies 50] [--kinds bcd,cbcd,bunc,cbunc] [--backend sqlite|postgresql|both]
       [--pg-url URL] [--workers 1,2] [--repeat 3] [--profile [N]] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from astropy.io import fits
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from iracdb.db.engine import make_engine
from iracdb.db.migrate import upgrade
from iracdb.ingest import MIN_WORKERS_FOR_PROCESSES, IngestSummary, ingest

SHARED_IRAC = Path(__file__).resolve().parents[2] / "shared" / "data" / "irac"
DEFAULT_PG_URL = os.environ.get("IRACDB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def build_archive(root: Path, copies: int, kinds: tuple[str, ...] | None = None) -> list[Path]:
    """Clone every real IRAC file (of ``kinds``, default all) ``copies`` times under new AORKEYs, changing only
    the AORKEY card's value."""
    sources = sorted(p for p in SHARED_IRAC.rglob("*.fits") if kinds is None or p.stem.rsplit("_", 1)[1] in kinds)
    if not sources:
        raise SystemExit(f"no real IRAC files under {SHARED_IRAC}")
    written = []
    for source in sources:
        data = source.read_bytes()
        start = data.index(b"AORKEY  =")
        card = data[start : start + 80]
        aorkey = int(card[10:30])
        for n in range(copies):
            new_card = card[:10] + f"{aorkey + n + 1:>20d}".encode() + card[30:]
            target = root / f"r{aorkey + n + 1}" / source.relative_to(source.parents[2]).parent / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[:start] + new_card + data[start + 80 :])
            written.append(target)
    return written


class Databases:
    """New, empty databases with the current schema: SQLite files in ``folder``, or PostgreSQL databases
    ``bench_ingest_<pid>_<n>`` on the server of ``pg_url`` (each dropped when the next is made, and at the end)."""

    def __init__(self, folder: Path, pg_url: str) -> None:
        self.folder = folder
        self.pg_url = make_url(pg_url).set(drivername="postgresql+psycopg")
        self.admin = None
        self.made: list[str] = []

    def new(self, backend: str) -> str:
        n = len(self.made)
        if backend == "sqlite":
            url = f"sqlite:///{self.folder / f'bench_{n}.sqlite'}"
        else:
            if self.admin is None:
                self.admin = create_engine(self.pg_url, isolation_level="AUTOCOMMIT", pool_size=1)
            name = f"bench_ingest_{os.getpid()}_{n}"
            self._drop_all()
            with self.admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {name}"))
            url = self.pg_url.set(database=name).render_as_string(hide_password=False)
        self.made.append(url)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url

    def _drop_all(self) -> None:
        if self.admin is None:
            return
        with self.admin.connect() as conn:
            for url in self.made:
                if url.startswith("postgresql"):
                    conn.execute(text(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)"))

    def close(self) -> None:
        self._drop_all()
        if self.admin is not None:
            self.admin.dispose()


def timed_ingest(url: str, archive: Path, workers: int, profile: cProfile.Profile | None = None
                 ) -> tuple[IngestSummary, float]:
    engine = make_engine(url)
    try:
        start = time.perf_counter()
        if profile is not None:
            profile.enable()
        summary = ingest(engine, [str(archive)], workers=workers)
        if profile is not None:
            profile.disable()
        return summary, time.perf_counter() - start
    finally:
        engine.dispose()


def how_read(workers: int) -> str:
    """How ``ingest`` reads with ``workers`` (see :data:`iracdb.ingest.MIN_WORKERS_FOR_PROCESSES`)."""
    if workers >= MIN_WORKERS_FOR_PROCESSES:
        return f"{workers} worker processes read and parse"
    if workers == 2:
        return "a child process reads and checksums, this one parses, a thread writes"
    return "read in this process; PostgreSQL: a second thread reads ahead"


def getheader_loop(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        fits.getheader(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=50, help="clones of each of the 80 real files (default 50)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the archive (default: a temp dir)")
    parser.add_argument(
        "--kinds",
        default=None,
        help="comma-separated product kinds to clone (e.g. bcd,cbcd,bunc,cbunc: the large-header images); default all",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help="a PostgreSQL server's database to create scratch databases from (default: "
                             "$IRACDB_TEST_PG_URL or the local server)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--repeat", type=int, default=3, help="timed ingests of each configuration (default 3)")
    parser.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="N",
                        help="profile one more ingest per configuration; print its N costliest functions")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    worker_counts = [int(n) for n in args.workers.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="iracdb_bench_", dir=args.workdir))
    databases = Databases(workdir, args.pg_url)
    try:
        archive = workdir / "archive"
        files = build_archive(archive, args.copies, tuple(args.kinds.split(",")) if args.kinds else None)
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"archive: {len(files)} files with real IRAC headers, {total_mb:.0f} MB, in {archive}")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        os.sync()
        baseline = getheader_loop(files)
        results: list[tuple[str, int, float]] = []
        for backend in backends:
            for workers in worker_counts:
                best = None
                for _ in range(args.repeat):
                    baseline = min(baseline, getheader_loop(files))
                    summary, elapsed = timed_ingest(databases.new(backend), archive, workers)
                    assert summary.n_new == len(files) and summary.n_rejected == 0, summary
                    best = elapsed if best is None else min(best, elapsed)
                assert best is not None
                results.append((backend, workers, best))
                print(f"{backend:10s} ingest --workers {workers} ({how_read(workers)}): best {best:.2f} s")
                if args.profile:
                    profile = cProfile.Profile()
                    timed_ingest(databases.new(backend), archive, workers, profile)
                    stats = pstats.Stats(profile)
                    for order in ("tottime", "cumulative"):
                        print(f"--- profile of ingest --workers {workers} on {backend}, by {order}")
                        stats.sort_stats(order).print_stats(args.profile)
            url = databases.made[-1]
            summary, elapsed = timed_ingest(url, archive, 1)
            assert summary.n_unchanged == len(files), summary
            print(f"{backend:10s} re-ingest of the unchanged tree: {len(files) / elapsed:8.0f} files/s "
                  f"({elapsed:.3f} s)")
        print(f"astropy.io.fits.getheader loop:          {len(files) / baseline:6.0f} files/s, best of all its runs "
              "(headers only, no checksum, no DB)")
        for backend, workers, best in results:
            print(f"{backend:10s} ingest --workers {workers}, sha256 on: {len(files) / best:6.0f} files/s, best of "
                  f"{args.repeat} ({baseline / best:.2f}x the getheader loop)")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        databases.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
