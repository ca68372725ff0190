"""``iracdb demo``: the main job end to end on an embedded SQLite database, with synthetic data.

Writes a small synthetic archive (all four channels, cryo and warm, full array and subarray, the pixel-phase x
array-location response injected), catalogues it, and returns what a person needs to look at it. Reduction,
export and plots join the demo as those commands arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iracdb.db.engine import make_engine
from iracdb.db.migrate import ensure_schema
from iracdb.db.queries import list_aors
from iracdb.ingest import IngestSummary, ingest
from iracdb.synth import write_archive


@dataclass(frozen=True)
class DemoResult:
    """Where the demo put things, and what the catalogue holds."""

    directory: Path
    archive: Path
    truth_csv: Path
    database_url: str
    n_files: int
    ingest: IngestSummary
    aors: list[dict]


def run_demo(directory: Path, *, seed: int = 0) -> DemoResult:
    """Write the synthetic archive under ``directory/archive``, its truth table to ``directory/truth.csv``, and
    catalogue it in ``directory/iracdb.sqlite``. Safe to run again on the same folder."""
    directory = directory.resolve()
    archive = write_archive(directory / "archive", seed=seed, inject_response=True, truth_csv=False)
    truth_csv = archive.write_truth_csv(directory / "truth.csv")
    url = f"sqlite:///{directory / 'iracdb.sqlite'}"
    engine = make_engine(url)
    try:
        ensure_schema(engine)
        summary = ingest(engine, [str(archive.root)])
        aors = list_aors(engine)
    finally:
        engine.dispose()
    return DemoResult(directory, archive.root, truth_csv, url, len(archive.files), summary, aors)
