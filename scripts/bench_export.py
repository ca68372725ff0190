#!/usr/bin/env python
"""Benchmark `iracdb.export.export_run`: rows per second and peak memory of a large run's export.

1. Writes a small synthetic archive (``iracdb.synth``: a subarray AOR and a full-array AOR), ingests it into a
   temporary SQLite file (or the database given with ``--db``, migrated to the newest schema first) and reduces it
   (``--auto``) into a real run;
2. amplifies that run's image rows to ``--rows`` (default 1,000,000) in SQL: ``INSERT ... SELECT`` of the run's
   units (``run_units``) and image rows (``measured_images``) with AORKEY shifted by multiples of 1000 (the unique
   key stays unique; ``input_id`` repeats; ids as iracdb gives them), then of their aperture rows;
3. exports the run to CSV and to Parquet, each in a fresh process (this script with ``--child``), which reports
   its wall time and its peak RSS (``VmHWM`` from ``/proc/self/status``: Linux carries ``ru_maxrss`` over fork
   and exec, so a child of this larger process would report this process's size).

Prints the figures (with the exporting process's CPU time, user + system, and the load average at the end of each
export: on a busy machine the wall time says little) and the aim (>= 200,000 rows/s to CSV, peak memory < 500 MB);
never asserts on them. The temporary directory (archive, SQLite file, exports) is removed at the end; a ``--db``
database is left as it is (create and drop it yourself).

Usage:
    .venv/bin/python scripts/bench_export.py [--rows N] [--db URL] [--formats csv,parquet] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import Engine, text

from iracdb.db.engine import make_engine, safe_url
from iracdb.export import export_run

AIM_ROWS_PER_S = 200_000
AIM_PEAK_MB = 500
#: AORKEY shift between copies of the run's rows (larger than the spread of the synthetic AORKEYs).
AORKEY_STEP = 1000



def peak_rss_mb() -> float:
    """Peak resident memory of this process [MB] (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_run(engine: Engine, root: Path, run_name: str, rows: int) -> int:
    """Ingest and reduce the synthetic archive, then amplify the run to ``rows`` image rows; the row count.

    Imports what it needs itself: the exporting child process imports only what an export does, so that its peak
    memory is the export's (reduce alone, with scipy and photutils, adds some 260 MB).
    """
    from iracdb.db.models import ApertureFlux, MeasuredImage
    from iracdb.db.views import IMAGE_IDS_PER_UNIT
    from iracdb.ingest import ingest
    from iracdb.reduce import ReduceOptions, Target, reduce
    from iracdb.synth import AorSpec, write_archive

    aors = [
        AorSpec(aorkey=71000064, channels=(2,), read_mode="SUB", n_exposures=2, mission="warm",
                object_name="BENCH sub", ra_deg=65.4695, dec_deg=57.8172, flux_mjy=120.0),
        AorSpec(aorkey=71000320, channels=(1,), read_mode="FULL", n_exposures=3, mission="warm",
                object_name="BENCH full", ra_deg=277.1303, dec_deg=26.8440, flux_mjy=80.0, framtime_s=12.0,
                dithered=True),
    ]
    archive = write_archive(root / "archive", aors, seed=11, truth_csv=False)
    ingest(engine, [str(archive.root)])
    reduce(engine, run_name, ReduceOptions(targets=(Target("auto"),)))
    image_columns = [c.name for c in MeasuredImage.__table__.columns if c.name != "id"]
    flux_columns = [c.name for c in ApertureFlux.__table__.columns if c.name != "image_id"]
    per_unit = IMAGE_IDS_PER_UNIT
    shifted = ", ".join("i.aorkey + nu.aorkey - ou.aorkey" if c == "aorkey" else f"i.{c}" for c in image_columns)
    # A copy's unit: the original's, its AORKEY shifted by a multiple of AORKEY_STEP (the originals span less).
    copies_of = ("JOIN run_units AS ou ON ou.run_id = {o}.run_id AND ou.aorkey = {o}.aorkey "
                 "AND ou.channel = {o}.channel AND ou.id <= :last "
                 "JOIN run_units AS nu ON nu.run_id = ou.run_id AND nu.channel = ou.channel AND nu.id > :last "
                 f"AND (nu.aorkey - ou.aorkey) % {AORKEY_STEP} = 0 ")
    with engine.begin() as conn:
        run_id = conn.execute(text("SELECT id FROM runs WHERE name = :name"), {"name": run_name}).scalar_one()
        base = conn.execute(text("SELECT count(*) FROM measurements WHERE run_id = :r"), {"r": run_id}).scalar_one()
        last = conn.execute(text("SELECT max(id) FROM run_units WHERE run_id = :r"), {"r": run_id}).scalar_one()
        copies = max(0, -(-rows // base) - 1)
        if copies and rows > base:
            # Copies of the run's units with the AORKEY shifted (numbered in AORKEY order, as iracdb plans them),
            # of their image rows (ids numbered from the copy's unit id, as iracdb writes them) and of those
            # images' aperture rows (the run has one aperture: one aperture row per image row).
            conn.execute(text(
                "INSERT INTO run_units (run_id, aorkey, channel, status, n_exposures, n_images, finished_at) "
                "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < :copies) "
                f"SELECT u.run_id, u.aorkey + k.n * {AORKEY_STEP}, u.channel, u.status, u.n_exposures, u.n_images, "
                "u.finished_at FROM run_units AS u CROSS JOIN k WHERE u.run_id = :r ORDER BY k.n, u.aorkey, u.channel"
            ), {"copies": copies, "r": run_id})
            conn.execute(text(
                f"INSERT INTO measured_images (id, {', '.join(image_columns)}) "
                f"SELECT nu.id * {per_unit} + i.id - ou.id * {per_unit}, {shifted} FROM measured_images AS i "
                + copies_of.format(o="i") + "WHERE i.run_id = :r ORDER BY nu.id, i.id LIMIT :extra"
            ), {"r": run_id, "last": last, "extra": rows - base})
            conn.execute(text(
                f"INSERT INTO aperture_fluxes (image_id, {', '.join(flux_columns)}) "
                f"SELECT n.id, {', '.join(f'f.{c}' for c in flux_columns)} FROM aperture_fluxes AS f "
                "JOIN measured_images AS o ON o.id = f.image_id "
                + copies_of.format(o="o")
                + f"JOIN measured_images AS n ON n.id = nu.id * {per_unit} + o.id - ou.id * {per_unit} "
                "WHERE o.run_id = :r"
            ), {"r": run_id, "last": last})
        total = conn.execute(text("SELECT count(*) FROM measurements WHERE run_id = :r"), {"r": run_id}).scalar_one()
        conn.execute(text("UPDATE runs SET n_images = :n WHERE id = :r"), {"n": total, "r": run_id})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE measured_images"))
            conn.execute(text("VACUUM ANALYZE aperture_fluxes"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    return int(total)


def child(url: str, run_name: str, out_dir: str, fmt: str) -> None:
    """Export once, in this fresh process, and print one JSON line of figures."""
    engine = make_engine(url)
    start, cpu_start = time.perf_counter(), _cpu_s()
    result = export_run(engine, run_name, Path(out_dir), fmt)
    seconds, cpu = time.perf_counter() - start, _cpu_s() - cpu_start
    engine.dispose()
    size = sum(p.stat().st_size for p in result.files)
    print(json.dumps({"format": fmt, "rows": result.n_image_rows, "seconds": seconds, "cpu_s": cpu,
                      "peak_mb": peak_rss_mb(), "bytes": size, "status": result.status, "load": os.getloadavg()[0]}))


def _cpu_s() -> float:
    """CPU time of this process, all threads, user + system [s] (the server's is not in it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="image rows of the run (default 1,000,000)")
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--formats", default="csv,parquet", help="comma-separated formats (default csv,parquet)")
    parser.add_argument("--quick", action="store_true", help="20,000 rows: a smoke test")
    parser.add_argument("--child", nargs=4, metavar=("URL", "RUN", "OUT_DIR", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = 20_000 if args.quick else args.rows
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        root = Path(tmp)
        url = args.db or f"sqlite:///{root / 'bench.sqlite'}"
        engine = make_engine(url)
        from iracdb.db import migrate

        migrate.upgrade(engine)
        run_name = f"bench_export_{os.getpid()}"
        print(f"bench_export: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
              f"database {safe_url(url)}")
        start = time.perf_counter()
        total = build_run(engine, root, run_name, rows)
        engine.dispose()
        print(f"built run {run_name!r} with {total:,} image rows in {time.perf_counter() - start:.1f} s")
        print()
        print(f"{'format':<8} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'cpu_s':>6} {'peak_MB':>8} {'files_MB':>9} "
              f"{'load':>5}")
        figures = {}
        for fmt in formats:
            command = [sys.executable, str(Path(__file__).resolve()), "--child", url, run_name,
                       str(root / f"out_{fmt}"), fmt]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"export to {fmt} failed:\n{done.stderr}")
            figure = json.loads(done.stdout.strip().splitlines()[-1])
            figures[fmt] = figure
            print(f"{fmt:<8} {figure['rows']:>10,} {figure['seconds']:>8.2f} "
                  f"{figure['rows'] / figure['seconds']:>10,.0f} {figure['cpu_s']:>6.1f} {figure['peak_mb']:>8.0f} "
                  f"{figure['bytes'] / 1e6:>9.1f} {figure['load']:>5.1f}")
        print()
        if "csv" in figures:
            csv = figures["csv"]
            speed, peak = csv["rows"] / csv["seconds"], csv["peak_mb"]
            met = "met" if speed >= AIM_ROWS_PER_S and peak < AIM_PEAK_MB else "not met"
            print(f"aim: >= {AIM_ROWS_PER_S:,} rows/s to CSV with peak memory < {AIM_PEAK_MB} MB: "
                  f"{speed:,.0f} rows/s, {peak:.0f} MB ({met})")
        shown = [safe_url(a) if "://" in a else a for a in sys.argv]
        print(f"command: {shlex.join([Path(sys.executable).name, *shown])}")


if __name__ == "__main__":
    main()
