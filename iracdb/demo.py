"""``iracdb demo``: the main job end to end on an embedded SQLite database, with synthetic data.

Writes a small synthetic archive (all four channels, cryo and warm, full array and subarray, the pixel-phase x
array-location response injected), catalogues it, reduces it as the run ``demo`` (the brightest source near each
pointing, the default 3 px aperture and 3-7 px annulus), exports the run as CSV and plots it. Safe to run again on
the same folder: nothing is catalogued or measured twice, and the export and figures (the demo's own files, in its
own folder) are written again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iracdb.db.engine import make_engine
from iracdb.db.migrate import ensure_schema
from iracdb.db.queries import list_aors, run_summary
from iracdb.export import ExportResult, export_run
from iracdb.ingest import IngestSummary, ingest
from iracdb.plots import default_plot_path, plot_aor, plot_overview
from iracdb.reduce import Execution, ReduceOptions, RunReport, Target, reduce
from iracdb.synth import write_archive

#: The demo's run name.
RUN_NAME = "demo"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo put things, and what the catalogue and the run hold."""

    directory: Path
    archive: Path
    truth_csv: Path
    database_url: str
    n_files: int
    ingest: IngestSummary
    aors: list[dict[str, Any]]
    reduction: RunReport
    summary: list[dict[str, Any]]
    export: ExportResult
    plots: tuple[Path, ...]
    truth_check: list[dict[str, Any]]


def run_demo(directory: Path, *, seed: int = 0,
             progress: Callable[[str, int, int], None] | None = None) -> DemoResult:
    """Run the demo in ``directory``.

    The archive goes to ``directory/archive``, its truth table to ``directory/truth.csv``, the database to
    ``directory/iracdb.sqlite``, the export to ``directory/export/`` and the figures to ``directory/plots/``.
    ``progress(stage, done, total)`` reports the ingest and reduce stages.
    """
    directory = directory.resolve()
    archive = write_archive(directory / "archive", seed=seed, inject_response=True, truth_csv=False)
    truth_csv = archive.write_truth_csv(directory / "truth.csv")
    url = f"sqlite:///{directory / 'iracdb.sqlite'}"
    engine = make_engine(url)

    def stage(name: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    try:
        ensure_schema(engine)
        summary = ingest(engine, [str(archive.root)], progress=stage("ingest"))
        aors = list_aors(engine)
        options = ReduceOptions(targets=(Target(name="auto"),))
        execution = Execution(command_line=f"iracdb demo {directory}")
        report = reduce(engine, RUN_NAME, options, execution, progress=stage("reduce"))
        per_aor = run_summary(engine, RUN_NAME)
        exported = export_run(engine, RUN_NAME, directory / "export", "csv", overwrite=True)
        plots_dir = directory / "plots"
        first_subarray = next((row["aorkey"] for row in per_aor if row["read_mode"] == "SUB"), per_aor[0]["aorkey"])
        plots = (
            plot_overview(engine, RUN_NAME, plots_dir / default_plot_path(RUN_NAME), overwrite=True),
            plot_aor(engine, RUN_NAME, first_subarray, plots_dir / default_plot_path(RUN_NAME, first_subarray),
                     overwrite=True),
        )
    finally:
        engine.dispose()
    return DemoResult(directory, archive.root, truth_csv, url, len(archive.files), summary, aors, report, per_aor,
                      exported, plots, _truth_check(per_aor, archive.truth))


#: Columns of :attr:`DemoResult.truth_check`.
TRUTH_CHECK_COLUMNS = ("aorkey", "channel", "object", "true_flux_mjy", "flux_mjy", "ap_corr", "ratio")


def _truth_check(per_aor: list[dict[str, Any]], truth: Sequence[Any]) -> list[dict[str, Any]]:
    """Each AOR's measured mean flux against the flux the synthetic star was given [mJy].

    The synthetic stars are PSFs without the real IRAC PSF's far wings, so the published aperture correction (which
    restores the flux in those wings) is divided out: ``ratio = flux_mjy / ap_corr / true_flux_mjy``.
    """
    true_flux: dict[tuple[int, int], float] = {}
    for record in truth:
        true_flux[(record.aorkey, record.channel)] = record.flux_mjy
    rows = []
    for row in per_aor:
        true = true_flux.get((row["aorkey"], row["channel"]))
        flux, ap_corr = row["flux_mjy"], row["ap_corr"] or 1.0
        rows.append({
            "aorkey": row["aorkey"], "channel": row["channel"], "object": row["object"], "true_flux_mjy": true,
            "flux_mjy": flux, "ap_corr": row["ap_corr"],
            "ratio": None if flux is None or not true else flux / ap_corr / true,
        })
    return rows
