#!/usr/bin/env python
"""Benchmark `iracdb ingest` against a plain astropy header loop on the same files, in the same run.

Builds an archive of several thousand files with real IRAC headers: the real files in ../shared/data/irac (subarray
BCD/BUNC/BIMSK/sub2d/... and full-array BCD/CBCD/CBUNC), cloned under new AORKEYs (only the AORKEY card changes),
then times:

1. a plain ``astropy.io.fits.getheader`` loop over every file (the baseline);
2. ``iracdb ingest`` into a new SQLite database (headers parsed, every file checksummed with SHA-256, rows written),
   with 1 worker and with --workers 2;
3. a re-ingest of the unchanged tree (no file is opened).

Usage: python scripts/bench_ingest.py [--copies 50] [--kinds bcd,cbcd,bunc,cbunc] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from astropy.io import fits

from iracdb.db.engine import make_engine
from iracdb.db.migrate import upgrade
from iracdb.ingest import ingest

SHARED_IRAC = Path(__file__).resolve().parents[2] / "shared" / "data" / "irac"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=50, help="clones of each of the 80 real files (default 50)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the archive (default: a temp dir)")
    parser.add_argument(
        "--kinds",
        default=None,
        help="comma-separated product kinds to clone (e.g. bcd,cbcd,bunc,cbunc: the large-header images); default all",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="iracdb_bench_", dir=args.workdir))
    try:
        archive = workdir / "archive"
        files = build_archive(archive, args.copies, tuple(args.kinds.split(",")) if args.kinds else None)
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"archive: {len(files)} files with real IRAC headers, {total_mb:.0f} MB, in {archive}")
        os.sync()

        start = time.perf_counter()
        for path in files:
            fits.getheader(path)
        baseline = len(files) / (time.perf_counter() - start)
        print(f"astropy.io.fits.getheader loop:        {baseline:8.0f} files/s (headers only, no checksum, no DB)")

        for workers in (1, 2):
            db = workdir / f"bench_w{workers}.sqlite"
            engine = make_engine(f"sqlite:///{db}")
            upgrade(engine)
            start = time.perf_counter()
            summary = ingest(engine, [str(archive)], workers=workers)
            elapsed = time.perf_counter() - start
            assert summary.n_new == len(files) and summary.n_rejected == 0, summary
            rate = len(files) / elapsed
            print(
                f"iracdb ingest, --workers {workers}, sha256 on:  {rate:8.0f} files/s "
                f"({rate / baseline:.1f}x the getheader loop; {elapsed:.2f} s)"
            )
            if workers == 1:
                start = time.perf_counter()
                again = ingest(engine, [str(archive)])
                elapsed = time.perf_counter() - start
                assert again.n_unchanged == len(files), again
                print(f"re-ingest of the unchanged tree:       {len(files) / elapsed:8.0f} files/s ({elapsed:.3f} s)")
            engine.dispose()
        print(f"database size after ingest: {db.stat().st_size / 1e6:.0f} MB (SQLite, headers stored whole)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
