#!/usr/bin/env python
"""Benchmark `iracdb reduce` end to end against a loop in the style of the 2018 seed script, on the same files.

Writes a synthetic archive (``iracdb.synth``: subarray cubes of 64 planes and/or full-array frames, each with its
``_bunc`` and ``_bimsk`` companions), then measures, in the same run and on the same files:

1. **the seed loop**, per image file as the 2018 script did: ``astropy.io.fits.open``, ``astropy.wcs.WCS(header,
   naxis=2).all_world2pix`` of the target (once per file), then per image (per plane of a subarray cube) a 2-D
   Gaussian without background term (``Gaussian2D``) fitted twice with ``LevMarLSQFitter`` (``TRFLSQFitter`` if
   LevMar is deprecated) in a 14x14 box, the second box re-centred on the first fit, and ``photutils``
   ``aperture_photometry`` with a ``CircularAperture`` (r=3) and a ``CircularAnnulus`` (3-7) whose mean is the
   background. No IDL correction, no database, no output: a lower bound of the seed's cost. Timed on the first
   files until ``--seed-seconds`` have passed;
2. **iracdb**: the archive ingested into SQLite (a file in the temp dir) and/or a scratch PostgreSQL database
   (timed, reported apart), then ``iracdb.reduce.reduce`` timed end to end (plan, read FITS, measure, write rows
   and per-AOR summaries) with each ``--workers`` value. The targets are a CSV file with one row per AOR
   (aorkey, ra, dec: the synthetic star), as a user would give them;
3. **peak memory**: every iracdb configuration runs in a fresh process (this script with ``--child``), which
   reports the peak RSS of the driver and of the largest of its worker processes (``VmHWM`` from ``/proc``: Linux
   carries ``ru_maxrss`` over fork and exec, so a process started by this, larger, script would report this
   script's size). One configuration runs again on ``--memory-factor`` times as many AORs to show whether memory
   grows with the number of AORs.

Each iracdb time is the best of ``--repeat`` reductions in the same process, each a new named run (plan, start
of the worker pool, read, measure, write). The load average is printed at the start and the end: other work on
the machine slows both sides, the pool most.

The files are written just before they are read, so both sides read them from the page cache. ``flux/truth`` is
the median over AORs of the per-AOR mean flux divided by the synthetic star's true flux (a check that real
measurements were made: the archive has the pixel-phase x array-location response injected, which the reduction
removes, and the aperture correction is applied to the synthetic IRAC-like PSF).

Usage:
    .venv/bin/python scripts/bench_reduce.py [--mode sub|full|both] [--aors 40] [--cubes 10] [--frames 25]
        [--backend sqlite|postgresql|both] [--workers 1,2] [--memory-factor 4] [--seed-seconds 15]
        [--repeat 3] [--pg-url URL] [--profile [N]] [--grid] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# No module-level SQLAlchemy import: the pool's workers (forkserver) re-run this script's module-level code before
# their first chunk, as every worker re-runs the main module of the program that started it (the `iracdb` command's
# workers re-import `iracdb.cli`, ~0.1 s each); importing SQLAlchemy there cost each worker ~0.2 s of CPU per run.

DEFAULT_PG_URL = os.environ.get("IRACDB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
#: Per mode: read mode, channel, and the name of one image.
MODES = {"sub": ("SUB", 2, "plane"), "full": ("FULL", 1, "frame")}
FILE_TYPES = ("bcd", "bunc", "bimsk")  # what reduce reads (the subarray's *2d products are not needed)
SEED_BOX_HALF_PX = 7  # the seed's 14x14 fitting box
SEED_RADIUS_PX, SEED_ANNULUS_PX = 3.0, (3.0, 7.0)


# --------------------------------------------------------------------------------------------------------------
# The seed loop
# --------------------------------------------------------------------------------------------------------------


def choose_fitter() -> Any:
    """``LevMarLSQFitter``, or ``TRFLSQFitter`` when this astropy deprecates LevMar (warns on use)."""
    from astropy.modeling import fitting, models

    yy, xx = np.mgrid[0:14, 0:14]
    star = models.Gaussian2D(100.0, 7.2, 6.8, 1.2, 1.1)(xx, yy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            fitter = fitting.LevMarLSQFitter()
            fitter(models.Gaussian2D(90.0, 7.0, 7.0, 1.0, 1.0), xx, yy, star)
            return fitter
        except DeprecationWarning:
            return fitting.TRFLSQFitter()


def _gauss_fit(image: np.ndarray, x: float, y: float, fitter: Any, guess: Any | None) -> Any:
    """The seed's 2-D Gaussian (no background term) fitted in a 14x14 box around (x, y), finite pixels only."""
    from astropy.modeling import models

    x0, y0 = round(x) - SEED_BOX_HALF_PX, round(y) - SEED_BOX_HALF_PX
    if x0 < 0 or y0 < 0:
        raise IndexError("box off the image")
    box = image[y0 : y0 + 2 * SEED_BOX_HALF_PX, x0 : x0 + 2 * SEED_BOX_HALF_PX]
    yy, xx = np.mgrid[y0 : y0 + box.shape[0], x0 : x0 + box.shape[1]]
    ok = np.isfinite(box)
    if guess is None:
        guess = models.Gaussian2D(amplitude=np.nanmax(box), x_mean=x, y_mean=y, x_stddev=1.0, y_stddev=1.0)
    return fitter(guess, xx[ok], yy[ok], box[ok])


def seed_file(path: Path, ra: float, dec: float, fitter: Any, max_images: int | None = None) -> tuple[int, int]:
    """The seed's work on one image file: (images, images whose fit failed)."""
    from astropy.io import fits
    from astropy.wcs import WCS
    from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry

    images = failed = 0
    with fits.open(path) as hdul:
        header, data = hdul[0].header, hdul[0].data
        x, y = WCS(header, naxis=2).all_world2pix(ra, dec, 0)
        for plane in (data if data.ndim == 3 else data[None])[:max_images]:
            image = plane.astype(np.float64)
            images += 1
            try:
                first = _gauss_fit(image, float(x), float(y), fitter, None)
                second = _gauss_fit(image, first.x_mean.value, first.y_mean.value, fitter, first.copy())
            except (ValueError, IndexError, RuntimeError, np.linalg.LinAlgError):
                failed += 1  # the seed's bare except: the image is dropped
                continue
            position = (second.x_mean.value, second.y_mean.value)
            aperture = CircularAperture(position, SEED_RADIUS_PX)
            annulus = CircularAnnulus(position, *SEED_ANNULUS_PX)
            table = aperture_photometry(image, [aperture, annulus], mask=~np.isfinite(image))
            background = table["aperture_sum_1"][0] / annulus.area  # the seed's annulus mean
            _ = table["aperture_sum_0"][0] - background * aperture.area
    return images, failed


def seed_loop(paths: list[Path], targets: dict[int, tuple[float, float]], seconds: float) -> dict[str, Any]:
    """Run the seed-style loop over ``paths`` (in order) until ``seconds`` have passed (after an untimed warm-up
    image); images/s and counts."""
    fitter = choose_fitter()
    images = files = failed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FITS-fix and fitter warnings, which the seed never looked at
        seed_file(paths[0], *targets[_aorkey(paths[0])], fitter, max_images=1)  # imports, caches
        start = time.perf_counter()
        for path in paths:
            n, bad = seed_file(path, *targets[_aorkey(path)], fitter)
            images, failed, files = images + n, failed + bad, files + 1
            if time.perf_counter() - start >= seconds:
                break
        elapsed = time.perf_counter() - start
    return {"images": images, "files": files, "failed": failed, "seconds": elapsed, "rate": images / elapsed,
            "fitter": type(fitter).__name__}


def _aorkey(path: Path) -> int:
    return int(path.name.split("_")[2])  # SPITZER_I<N>_<AORKEY>_<EXPID>_...


# --------------------------------------------------------------------------------------------------------------
# One iracdb configuration, in a fresh process (--child)
# --------------------------------------------------------------------------------------------------------------


#: ``--grid``: 30 apertures, 10 radii (2 to 4.25 px by 0.25) x 3 annuli, one centroid method.
GRID: dict[str, Any] = {"radius_px": "2:4.25:0.25", "annulus_in_px": (3.0, 4.0, 5.0),
                        "annulus_out_px": (7.0, 8.0, 10.0)}
GRID_APERTURES = 30


def child(spec_json: str) -> None:
    """Run one reduction ``repeat`` times as described by ``spec_json`` (each a new run) and print
    ``RESULT <json>``: the best time, the rows of the last run, peak RSS of this process and of its workers."""
    spec = json.loads(spec_json)
    from sqlalchemy import text

    from iracdb.db.engine import make_engine
    from iracdb.reduce import Execution, ReduceOptions, read_targets_file, reduce

    engine = make_engine(spec["db"])
    keys = set(spec["aorkeys"])
    targets = tuple(t for t in read_targets_file(spec["targets"]) if t.aorkey in keys)
    options = ReduceOptions(aorkeys=tuple(sorted(keys)), targets=targets, **(GRID if spec.get("grid") else {}))
    execution = Execution(workers=spec["workers"], command_line=spec["command"])
    workers_peak = DescendantsPeak()
    workers_peak.start()
    times = []
    for attempt in range(spec["repeat"]):
        name = f"{spec['run']}-{attempt}"
        profiler = None
        if spec.get("profile"):
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        start = time.perf_counter()
        report = reduce(engine, name, options, execution)
        times.append(time.perf_counter() - start)
        if profiler is not None:
            import pstats

            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stderr)
            stats.sort_stats("cumulative").print_stats(spec["profile"])
            stats.sort_stats("tottime").print_stats(spec["profile"])
    workers_peak.stop()
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT count(*) FROM measurements m JOIN runs r ON r.id = m.run_id WHERE r.name = :name"),
            {"name": name},
        ).scalar_one()
        fluxes = conn.execute(
            text("SELECT s.flux_mjy FROM aor_summaries s JOIN runs r ON r.id = s.run_id "
                 "WHERE r.name = :name AND s.flux_mjy IS NOT NULL"), {"name": name}
        ).scalars().all()
    engine.dispose()
    print("RESULT " + json.dumps({
        "seconds": min(times), "times": times, "images": report.n_images, "rows": rows, "status": report.status,
        "flagged": report.n_flagged, "unreadable": len(report.unreadable),
        "median_flux_mjy": float(np.median(fluxes)) if fluxes else None,
        "driver_kib": peak_rss_kib(), "workers_kib": workers_peak.peak_kib, "n_workers_seen": len(workers_peak.seen),
    }))


def peak_rss_kib(pid: int | str = "self") -> int | None:
    """Peak resident set size of a process, KiB: ``VmHWM`` of ``/proc/PID/status`` (Linux).

    Not ``getrusage().ru_maxrss``: on Linux that survives fork and exec, so a process started by a large parent
    reports at least the parent's size (this script's own peak, or the driver's for the pool's forkserver).
    """
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    if pid == "self":  # not Linux: the best there is
        scale = 1 if sys.platform != "darwin" else 1024  # macOS reports bytes
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // scale
    return None


class DescendantsPeak(threading.Thread):
    """The largest peak RSS (VmHWM) among this process's descendants (the pool's workers and its forkserver),
    polled every ``interval_s`` while they live (a worker's peak in its last ``interval_s`` could be missed)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.seen: dict[int, int] = {}
        self._done = threading.Event()

    @property
    def peak_kib(self) -> int | None:
        return max(self.seen.values(), default=None)

    def run(self) -> None:
        while not self._done.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.sample()

    def sample(self) -> None:
        todo = [os.getpid()]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
            except OSError:
                continue
            for c in children:
                peak = peak_rss_kib(c)
                if peak is not None:
                    self.seen[c] = max(peak, self.seen.get(c, 0))
            todo.extend(children)


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """This script with ``--child spec`` in a fresh interpreter; its RESULT."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if spec.get("profile"):
        print(done.stderr, end="")
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"the reduction {spec['run']} failed (exit status {done.returncode})")
    return json.loads(results[-1].removeprefix("RESULT "))


# --------------------------------------------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------------------------------------------


class PgScratch:
    """Scratch PostgreSQL databases ``bench_reduce_<pid>_<label>``, dropped at the end."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.url = make_url(url).set(drivername="postgresql+psycopg")
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_size=1)
        self.created: list[str] = []

    def create(self, label: str) -> str:
        from sqlalchemy import text

        name = f"bench_reduce_{os.getpid()}_{label}"
        with self.admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {name}"))
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        self.admin.dispose()


def ingest_into(url: str, archive: Path, workers: int) -> tuple[int, float]:
    """Create the schema and catalogue ``archive``; (files, seconds)."""
    from iracdb.db.engine import make_engine
    from iracdb.db.migrate import ensure_schema
    from iracdb.ingest import ingest

    engine = make_engine(url)
    ensure_schema(engine)
    start = time.perf_counter()
    summary = ingest(engine, [str(archive)], workers=workers)
    elapsed = time.perf_counter() - start
    engine.dispose()
    if summary.n_rejected:
        raise SystemExit(f"ingest rejected {summary.n_rejected} synthetic files: {summary}")
    return summary.n_new, elapsed


# --------------------------------------------------------------------------------------------------------------
# The benchmark of one mode
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    mode: str
    what: str
    backend: str
    workers: int | None
    aors: int
    images: int
    seconds: float
    driver_mb: float | None = None
    workers_mb: float | None = None
    flux_ratio: float | None = None

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def bench_mode(mode: str, args: argparse.Namespace, tmp: Path, pg: PgScratch | None, command: str) -> dict[str, Any]:
    from iracdb.synth import many_aors, write_archive

    read_mode, channel, image_word = MODES[mode]
    per_aor = args.cubes if mode == "sub" else args.frames
    n = args.aors
    n_all = n * max(1, args.memory_factor)
    specs = many_aors(n_all, read_mode=read_mode, channels=(channel,), n_exposures=per_aor, file_types=FILE_TYPES,
                      psf_model="irac")
    archive = tmp / f"archive_{mode}"
    start = time.perf_counter()
    synth = write_archive(archive, specs, seed=args.seed, inject_response=True, truth_csv=False)
    written = time.perf_counter() - start
    planes = 64 if mode == "sub" else 1
    size_mb = sum(p.stat().st_size for p in synth.files) / 1e6
    print(f"\n== {mode}: {n_all} AORs x {per_aor} {'cubes' if mode == 'sub' else 'frames'} (ch{channel}, "
          f"{'+'.join(FILE_TYPES)}): {len(synth.files):,} files, {size_mb:,.0f} MB, written in {written:.1f} s; "
          f"timed runs use the first {n} AORs = {n * per_aor * planes:,} {image_word}s", flush=True)
    targets_csv = tmp / f"targets_{mode}.csv"
    with open(targets_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["aorkey", "name", "ra", "dec"])
        for spec in specs:
            writer.writerow([spec.aorkey, spec.object_name, repr(spec.ra_deg), repr(spec.dec_deg)])
    truth_flux = float(np.median([t.flux_mjy for t in synth.truth]))
    keys = [spec.aorkey for spec in specs]
    positions = {spec.aorkey: (spec.ra_deg, spec.dec_deg) for spec in specs}

    rows: list[Row] = []
    bcds = sorted(p for p in synth.files if p.name.endswith("_bcd.fits") and _aorkey(p) in keys[:n])
    seed = seed_loop(bcds, positions, args.seed_seconds)
    rows.append(Row(mode, f"seed loop ({seed['fitter']})", "-", None, n, seed["images"], seed["seconds"]))
    print(f"seed loop: {seed['images']:,} {image_word}s of {seed['files']} files in {seed['seconds']:.1f} s = "
          f"{seed['rate']:,.1f} {image_word}s/s ({seed['failed']} fits failed)", flush=True)

    ingests = []
    max_workers = max(args.workers)
    for backend in args.backends:
        url = f"sqlite:///{tmp / f'{mode}.sqlite'}" if backend == "sqlite" else pg.create(mode)  # type: ignore[union-attr]
        files, seconds = ingest_into(url, archive, max_workers)
        ingests.append((mode, backend, files, seconds))
        print(f"ingest into {backend} (--workers {max_workers}): {files:,} files in {seconds:.1f} s = "
              f"{files / seconds:,.0f} files/s", flush=True)
        configs = [(w, n) for w in args.workers]
        if args.memory_factor > 1 and backend == args.backends[0]:
            configs.append((max_workers, n_all))
        for workers, aors in configs:
            spec = {"db": url, "run": f"bench-{mode}-w{workers}-n{aors}", "aorkeys": keys[:aors],
                    "targets": str(targets_csv), "workers": workers, "command": command, "repeat": args.repeat}
            result = run_child(spec)
            expected = aors * per_aor * planes
            if result["images"] != expected or result["rows"] != expected or result["status"] != "complete":
                raise SystemExit(f"{spec['run']}: expected {expected} complete rows, got {result}")
            flux = result["median_flux_mjy"]
            pool_kib = result["workers_kib"] if workers > 1 else None
            row = Row(mode, "iracdb reduce", backend, workers, aors, result["images"], result["seconds"],
                      result["driver_kib"] / 1024, pool_kib / 1024 if pool_kib else None,
                      None if flux is None else flux / truth_flux)
            rows.append(row)
            print(f"reduce {backend} --workers {workers}, {aors} AORs: {row.images:,} {image_word}s in "
                  f"{row.seconds:.2f} s (best of {', '.join(f'{t:.2f}' for t in result['times'])}) = {row.rate:,.0f}/s "
                  f"({_times(row.rate / seed['rate'])} the seed loop); "
                  f"peak RSS driver {row.driver_mb:,.0f} MB"
                  + (f", workers {row.workers_mb:,.0f} MB" if row.workers_mb is not None else "")
                  + f"; {result['flagged']} flagged", flush=True)
            if args.grid:
                rows.append(_grid_row(mode, backend, workers, aors, spec, row, expected, image_word))
        if args.profile:
            print(f"\n-- profile: {mode}, reduce {backend} --workers 1, {n} AORs (cProfile, top {args.profile} by "
                  "cumulative time; the profiler slows it down) --")
            run_child({"db": url, "run": f"bench-{mode}-profile", "aorkeys": keys[:n], "targets": str(targets_csv),
                       "workers": 1, "command": command, "profile": args.profile, "repeat": 1})
            if args.grid:
                print(f"\n-- profile: {mode}, reduce {backend} --workers 1, {n} AORs, grid of {GRID_APERTURES} "
                      "apertures --")
                run_child({"db": url, "run": f"bench-{mode}-profile-grid", "aorkeys": keys[:n],
                           "targets": str(targets_csv), "workers": 1, "command": command,
                           "profile": args.profile, "repeat": 1, "grid": True})
    return {"rows": rows, "ingests": ingests, "seed_rate": seed["rate"], "image_word": image_word}


def _grid_row(mode: str, backend: str, workers: int, aors: int, spec: dict[str, Any], single: Row, expected: int,
              image_word: str) -> Row:
    """The same reduction with the 30-aperture grid (:data:`GRID`): its row, printed beside the single one."""
    result = run_child({**spec, "run": spec["run"] + "-grid", "grid": True})
    if result["images"] != expected * GRID_APERTURES or result["status"] != "complete":
        raise SystemExit(f"grid run: expected {expected * GRID_APERTURES} complete rows, got {result}")
    seconds = result["seconds"]
    row = Row(mode, f"iracdb reduce, {GRID_APERTURES} apertures", backend, workers, aors, expected, seconds,
              result["driver_kib"] / 1024, None, None)
    print(f"reduce {backend} --workers {workers}, {aors} AORs, grid of {GRID_APERTURES} apertures: {expected:,} "
          f"{image_word}s in {seconds:.2f} s = {expected / seconds:,.0f} {image_word}s/s, "
          f"{expected * GRID_APERTURES / seconds:,.0f} ({image_word} x aperture) measurements/s; "
          f"{seconds / single.seconds:.2f}x the single aperture's time (aim <= 4x)", flush=True)
    return row


# --------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


def _times(ratio: float) -> str:
    return f"{ratio:,.1f}x" if ratio < 10 else f"{ratio:,.0f}x"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_tables(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print("\n" + "=" * 118)
    header = (f"{'mode':<5}{'what':<28}{'backend':<11}{'workers':>8}{'AORs':>6}{'images':>9}{'seconds':>9}"
              f"{'images/s':>10}{'vs seed':>9}{'driver MB':>11}{'workers MB':>12}{'flux/truth':>11}")
    print(header)
    print("-" * len(header))
    for mode, result in results.items():
        for row in result["rows"]:
            print(f"{mode:<5}{row.what:<28}{row.backend:<11}{row.workers or '-':>8}{row.aors:>6}{row.images:>9,}"
                  f"{row.seconds:>9.2f}{row.rate:>10,.0f}{_times(row.rate / result['seed_rate']):>9}"
                  f"{_mb(row.driver_mb):>11}{_mb(row.workers_mb):>12}"
                  f"{'-' if row.flux_ratio is None else f'{row.flux_ratio:.4f}':>11}")
    aims = {"sub": 100, "full": 20}
    print("\nimages = subarray planes (sub) or full-array frames (full); vs seed = images/s over the seed loop's "
          "images/s in this run (aims: >= 100x sub, >= 20x full);\nMB = peak RSS (VmHWM) of the driver and of "
          "the largest worker process ('-': none).")
    for mode, result in results.items():
        best = max((r for r in result["rows"] if r.workers and r.aors == args.aors), key=lambda r: r.rate)
        ratio = best.rate / result["seed_rate"]
        print(f"{mode}: best {best.rate:,.0f} {result['image_word']}s/s ({best.backend}, --workers {best.workers}) "
              f"= {_times(ratio)} the seed loop; aim {aims[mode]}x: {'met' if ratio >= aims[mode] else 'NOT met'}")
    print(f"\n{'ingest':<5}{'backend':>12}{'files':>9}{'seconds':>9}{'files/s':>10}")
    for result in results.values():
        for mode, backend, files, seconds in result["ingests"]:
            print(f"{mode:<5}{backend:>12}{files:>9,}{seconds:>9.2f}{files / seconds:>10,.0f}")
    if args.memory_factor > 1:
        print(f"\nmemory vs AORs ({args.backends[0]}, --workers {max(args.workers)}):")
        for mode, result in results.items():
            same = [r for r in result["rows"] if r.backend == args.backends[0] and r.workers == max(args.workers)]
            print(f"{mode}: " + "; ".join(f"{r.aors} AORs: driver {_mb(r.driver_mb)} MB, workers {_mb(r.workers_mb)} MB"
                                        for r in same))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["sub", "full", "both"], default="both")
    parser.add_argument("--aors", type=int, default=40, help="AORs of the timed runs (default 40)")
    parser.add_argument("--cubes", type=int, default=10, help="subarray cubes (64 planes) per AOR (default 10)")
    parser.add_argument("--frames", type=int, default=25, help="full-array frames per AOR (default 25)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--memory-factor", type=int, default=4,
                        help="also run the first backend with the most workers on this many times the AORs, for "
                             "peak memory (default 4; 1: no)")
    parser.add_argument("--seed-seconds", type=float, default=15.0, help="time bound of the seed loop (default 15)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many reductions per configuration")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic archive")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help="a PostgreSQL database to connect to for creating and dropping the scratch databases")
    parser.add_argument("--profile", type=int, nargs="?", const=25, default=0,
                        help="also profile a serial run on each backend; print the top N lines (default 25)")
    parser.add_argument("--grid", action="store_true",
                        help=f"also reduce with a grid of {GRID_APERTURES} apertures (10 radii x 3 annuli)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), to check that the script works")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.quick:
        args.aors, args.cubes, args.frames, args.seed_seconds = 2, 2, 3, 0.2
        args.memory_factor = min(args.memory_factor, 2)
        args.repeat = 1
    args.workers = sorted({int(w) for w in args.workers.split(",")})
    if min(args.workers) < 1 or min(args.aors, args.cubes, args.frames, args.repeat) < 1:
        parser.error("--aors, --cubes, --frames, --repeat and --workers must be at least 1")
    args.backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    modes = ["sub", "full"] if args.mode == "both" else [args.mode]
    python = os.path.relpath(sys.executable)
    command = shlex.join([sys.executable if python.startswith("..") else python, *sys.argv])

    import astropy
    import photutils

    print(f"command: {command}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, numpy "
          f"{np.__version__}, astropy {astropy.__version__}, photutils {photutils.__version__}")
    print(f"load average at the start: {_load()}")
    results: dict[str, dict[str, Any]] = {}
    pg = PgScratch(args.pg_url) if "postgresql" in args.backends else None
    try:
        with tempfile.TemporaryDirectory(prefix="iracdb_bench_reduce_") as tmp:
            for mode in modes:
                results[mode] = bench_mode(mode, args, Path(tmp), pg, command)
    finally:
        if pg is not None:
            pg.drop_all()
    print_tables(results, args)
    print(f"\nload average at the end: {_load()}")
    print(f"command: {command}")


if __name__ == "__main__":
    main()
