"""`iracdb.export`: a run's tables, log and provenance in CSV, Parquet, ECSV and VOTable, equal to the database
(NULL kept as missing, floats exact), on both backends; no password anywhere; nothing partial left by a failure, and
a killed export's temporary files removed by the next; no file replaced unless asked; one file name per run."""

from __future__ import annotations

import gc
import json
import math
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from reduce_helpers import sql_rows
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from iracdb import columns, export
from iracdb.db import views
from iracdb.db.backend import backend_for
from iracdb.db.engine import make_engine
from iracdb.db.models import Run
from iracdb.errors import BadOption, CannotWrite, NoSuchRun, OutputExists
from iracdb.export import EXPORT_FORMATS, export_run, file_stem, run_provenance
from iracdb.flags import Flag
from iracdb.ingest import ingest
from iracdb.outputs import partial_path
from iracdb.plots import plot_overview
from iracdb.reduce import Execution, ReduceOptions, Target, reduce
from iracdb.synth import AorSpec, SynthArchive, write_archive

ALPHA = AorSpec(aorkey=71000064, channels=(2,), read_mode="SUB", n_exposures=2, mission="warm",
                object_name="ALPHA ch2 sub", ra_deg=65.4695, dec_deg=57.8172, flux_mjy=120.0)
BETA = AorSpec(aorkey=71000320, channels=(1,), read_mode="FULL", n_exposures=3, mission="warm",
               object_name='BETA "quoted", <b>', ra_deg=277.1303, dec_deg=26.8440, flux_mjy=80.0, framtime_s=12.0,
               dithered=True)
#: A run name with characters that file names avoid (percent-encoded in them).
RUN = "spot check/1"
STEM = "spot%20check%2F1"
#: Three targets: the alpha star, the brightest source (auto), and a position in no image (NULL measurements).
OPTIONS = ReduceOptions(targets=(Target("alpha", ALPHA.ra_deg, ALPHA.dec_deg), Target("auto"),
                                 Target("nowhere", 10.0, -45.0)), aperture_correction="none")
AOR_NAMES = tuple(n for n in columns.AOR_COLUMN_NAMES if n != "run")
IMAGE_NAMES = tuple(n for n in columns.IMAGE_COLUMN_NAMES if n != "run")
BOOL_COLUMNS = {"used", *(n for n in IMAGE_NAMES if n.startswith("flag_"))}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("export") / "archive", [ALPHA, BETA], seed=5, truth_csv=False)


@pytest.fixture
def reduced(engine: Engine, archive: SynthArchive) -> Engine:
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    report = reduce(engine, RUN, OPTIONS, Execution(command_line="iracdb reduce --run-name 'spot check/1'"))
    assert report.status == "complete"
    return engine


def db_rows(engine: Engine, view: str, order: tuple[str, ...], names: tuple[str, ...]) -> list[dict]:
    rows = sql_rows(engine, f"SELECT {', '.join(names)} FROM {view} WHERE run = :run ORDER BY {', '.join(order)}",
                    run=RUN)
    for row in rows:
        for name in BOOL_COLUMNS & set(row):
            row[name] = bool(row[name])
    return rows


def aor_db(engine: Engine) -> list[dict]:
    return db_rows(engine, views.AOR_VIEW, views.AOR_ORDER, AOR_NAMES)


def image_db(engine: Engine) -> list[dict]:
    return db_rows(engine, views.IMAGE_VIEW, views.IMAGE_ORDER, IMAGE_NAMES)


def null_fluxes(engine: Engine) -> int:
    return int(sql_rows(engine, "SELECT count(*) AS n FROM measurements WHERE flux_mjy IS NULL")[0]["n"])


def same(exported: object, stored: object) -> bool:
    """Exported value == database value, missing (None, NaN, masked) == NULL, floats bit for bit."""
    if stored is None:
        return exported is None or exported is np.ma.masked or (isinstance(exported, float) and math.isnan(exported))
    if isinstance(stored, bool):
        return bool(exported) is stored
    if isinstance(stored, float):
        return float(exported) == stored  # type: ignore[arg-type]
    if isinstance(stored, int):
        return int(exported) == stored  # type: ignore[call-overload]
    return str(exported) == stored


def assert_rows_equal(exported: list[dict], stored: list[dict], names: tuple[str, ...]) -> None:
    assert len(exported) == len(stored)
    for got, want in zip(exported, stored, strict=True):
        for name in names:
            assert same(got[name], want[name]), (name, got[name], want[name])


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in df.to_dict("records")]


def test_csv_equals_the_database(reduced: Engine, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    result = export_run(reduced, RUN, tmp_path / "out", progress=lambda done, total: calls.append((done, total)))
    names = [p.name for p in result.files]
    assert names == [f"{STEM}_aor_data.csv", f"{STEM}_img_data.csv", f"{STEM}_log.txt", f"{STEM}_provenance.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)  # no temporary file left
    assert result.status == "complete" and result.run == RUN and result.out_dir == tmp_path / "out"

    n_measurements = sql_rows(reduced, "SELECT count(*) AS n FROM measurements")[0]["n"]
    n_summaries = sql_rows(reduced, "SELECT count(*) AS n FROM aor_summaries")[0]["n"]
    assert (result.n_image_rows, result.n_aor_rows) == (n_measurements, n_summaries)
    assert n_measurements == (128 + 3) * 3
    assert calls[-1] == (n_measurements, n_measurements)

    aor = pd.read_csv(result.files[0])
    img = pd.read_csv(result.files[1])
    assert tuple(aor.columns) == AOR_NAMES and tuple(img.columns) == IMAGE_NAMES
    stored_images = image_db(reduced)
    assert_rows_equal(records(aor), aor_db(reduced), AOR_NAMES)
    assert_rows_equal(records(img), stored_images, IMAGE_NAMES)
    # there are NULLs, and they came back missing: the target in no image, no aperture correction at all
    n_null = sum(r["flux_mjy"] is None for r in stored_images)
    assert n_null >= 131 and img["flux_mjy"].isna().sum() == n_null
    # a degree off every image: NOT_IN_FOV (told from the footprint; COORD_CONVERSION_FAILED before issue 14)
    assert img["flag_not_in_fov"].sum() >= 131 and img["flag_no_aperture_correction"].sum() >= 259
    assert img["flux_mjy"].notna().sum() > 200
    # the flag columns decode `flags`
    for member in Flag:
        if member and member.name:
            decoded = [(int(f) & member) != 0 for f in img["flags"]]
            assert img[f"flag_{member.name.lower()}"].tolist() == decoded, member
    # strings with quotes, commas and brackets survive
    assert set(aor["object"]) == {ALPHA.object_name, BETA.object_name}


def test_rows_read_in_id_order_are_the_views_order(reduced: Engine, tmp_path: Path) -> None:
    """The image rows are read from the two result tables in the order of their ids (no sort) when the run's units
    were numbered in AOR and channel order, as iracdb plans them; otherwise in the view's order. Both give the
    same file."""
    with backend_for(reduced).snapshot() as snap:
        run_id = snap.scalar("SELECT id FROM runs WHERE name = :name", name=RUN)
        units = snap.rows("SELECT id FROM run_units WHERE run_id = :run ORDER BY id", run=run_id)
        assert export.image_id_range(snap, run_id) == (units[0]["id"] * 2**32, (units[-1]["id"] + 1) * 2**32 - 1)
    by_id = export_run(reduced, RUN, tmp_path / "by_id")
    with reduced.begin() as conn:  # the last unit renumbered first: id order is no longer AOR order
        conn.execute(text("UPDATE run_units SET id = -id WHERE id = :id"), {"id": units[-1]["id"]})
    with backend_for(reduced).snapshot() as snap:
        assert export.image_id_range(snap, run_id) is None
    by_view = export_run(reduced, RUN, tmp_path / "by_view")
    assert by_id.files[1].read_bytes() == by_view.files[1].read_bytes()
    assert_rows_equal(records(pd.read_csv(by_id.files[1])), image_db(reduced), IMAGE_NAMES)


@pytest.mark.parametrize("batch_rows", [5000, 7])
def test_file_and_target_as_the_view_joins_them(reduced: Engine, tmp_path: Path, batch_rows: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The image rows are read from `measurements`, `file` and `target` looked up by `input_id` and `target_index`:
    the same values as the view's LEFT JOINs, also for a missing input or target and an input of another run
    (on PostgreSQL its path is looked up between two COPYs of the rows, which resume past the rows written: small
    batches put it after the first batch)."""
    monkeypatch.setattr(export, "_COPY_BATCH_ROWS", batch_rows)
    run = sql_rows(reduced, "SELECT * FROM runs")[0]
    with reduced.begin() as conn:
        columns = [c.name for c in Run.__table__.columns if c.name != "id"]
        copied = ", ".join("'other'" if c == "name" else c for c in columns)
        conn.execute(text(f"INSERT INTO runs ({', '.join(columns)}) SELECT {copied} FROM runs"))
        other = conn.execute(text("SELECT id FROM runs WHERE name = 'other'")).scalar_one()
        first, last = conn.execute(text("SELECT min(input_id), max(input_id) FROM measurements")).one()
        conn.execute(text("UPDATE run_inputs SET run_id = :other WHERE id = :id"), {"other": other, "id": last})
        conn.execute(text("UPDATE measured_images SET input_id = NULL WHERE input_id = :id"), {"id": first})
        conn.execute(text("DELETE FROM run_targets WHERE run_id = :run AND target_index = 1"), {"run": run["id"]})
    stored = image_db(reduced)
    assert {r["target"] for r in stored} == {"alpha", None, "nowhere"}
    assert sum(r["file"] is None for r in stored) > 0
    moved = sql_rows(reduced, "SELECT path FROM run_inputs WHERE run_id = :other", other=other)[0]["path"]
    assert moved in {r["file"] for r in stored}
    result = export_run(reduced, RUN, tmp_path, "parquet")
    assert_rows_equal(pq.read_table(result.files[1]).to_pylist(), stored, IMAGE_NAMES)


def test_parquet_types_nulls_units_and_provenance(reduced: Engine, tmp_path: Path) -> None:
    result = export_run(reduced, RUN, tmp_path, "parquet")
    assert [p.suffix for p in result.files] == [".parquet", ".parquet", ".txt", ".json"]
    img = pq.read_table(result.files[1])
    aor = pq.read_table(result.files[0])
    assert tuple(img.column_names) == IMAGE_NAMES and tuple(aor.column_names) == AOR_NAMES
    types = {f.name: str(f.type) for f in img.schema}
    assert types["aorkey"] == types["flags"] == types["expid"] == "int64"
    assert types["flux_mjy"] == types["mjd"] == "double" and types["file"] == "string"
    assert all(types[n] == "bool" for n in BOOL_COLUMNS)
    assert {f.name: str(f.type) for f in aor.schema}["correction"] == "string"
    assert img.schema.field("sky").metadata[b"unit"] == b"MJy/sr"
    assert img.schema.field("net_flux").metadata[b"unit"] == b"MJy pix2 / sr"
    assert b"corrected flux" in img.schema.field("flux_mjy").metadata[b"description"]
    provenance = json.loads(img.schema.metadata[b"iracdb_provenance"])
    assert provenance["run"]["name"] == RUN and provenance["export"]["format"] == "parquet"
    assert img.column("flux_mjy").null_count == null_fluxes(reduced) >= 131
    assert_rows_equal(img.to_pylist(), image_db(reduced), IMAGE_NAMES)
    assert_rows_equal(aor.to_pylist(), aor_db(reduced), AOR_NAMES)


@pytest.mark.parametrize("fmt", ["ecsv", "votable"])
def test_ecsv_and_votable_read_back_by_astropy(reduced: Engine, tmp_path: Path, fmt: str) -> None:
    result = export_run(reduced, RUN, tmp_path, fmt)
    reader = "ascii.ecsv" if fmt == "ecsv" else "votable"
    img = Table.read(result.files[1], format=reader)
    aor = Table.read(result.files[0], format=reader)
    assert tuple(img.colnames) == IMAGE_NAMES and tuple(aor.colnames) == AOR_NAMES
    assert img["flux_mjy"].unit == "mJy" and img["mjd"].unit == "d" and img["sky"].unit == "MJy / sr"
    assert img["raw_flux"].unit == "MJy pix2 / sr" and aor["frame_time_s"].unit == "s"
    assert img["xc"].unit == "pix" and aor["flux_err_mjy"].unit == "mJy"
    if fmt == "ecsv":
        assert aor["spread_pct"].unit == "%"
        assert aor.meta["iracdb_provenance"]["run"]["name"] == RUN
    assert "corrected flux" in img["flux_mjy"].description
    assert int(np.ma.count_masked(img["flux_mjy"])) == null_fluxes(reduced)
    assert img["aorkey"].dtype == np.int64 and img["used"].dtype == bool and img["flux_mjy"].dtype == np.float64

    def table_rows(table: Table, names: tuple[str, ...]) -> list[dict]:
        out = []
        for row in table:
            out.append({n: (None if np.ma.is_masked(row[n]) else row[n].item() if hasattr(row[n], "item")
                            else row[n]) for n in names})
        return out

    stored_aors = aor_db(reduced)
    if fmt == "votable":  # VOTable has no missing text: a NULL text is an empty string
        assert sum(r["dither_scale"] is None for r in stored_aors) > 0
        stored_aors = [{k: "" if v is None and k in ("target", "object", "date_obs", "dither_scale") else v
                        for k, v in r.items()} for r in stored_aors]
    assert_rows_equal(table_rows(img, IMAGE_NAMES), image_db(reduced), IMAGE_NAMES)
    assert_rows_equal(table_rows(aor, AOR_NAMES), stored_aors, AOR_NAMES)


def test_provenance_and_log(reduced: Engine, tmp_path: Path) -> None:
    result = export_run(reduced, RUN, tmp_path)
    provenance = json.loads(result.files[3].read_text())
    record = sql_rows(reduced, "SELECT * FROM runs")[0]
    assert provenance["run"]["name"] == RUN and provenance["run"]["status"] == "complete"
    assert provenance["run"]["n_images"] == record["n_images"] == result.n_image_rows
    assert provenance["parameters"] == json.loads(record["params_json"])
    assert provenance["params_hash"] == OPTIONS.params_hash()
    assert provenance["resolved"] == json.loads(record["resolved_json"])
    assert provenance["software"]["versions"] == json.loads(record["versions_json"])
    assert provenance["software"]["iracdb_version"] == record["software_version"]
    assert provenance["command_line"] == "iracdb reduce --run-name 'spot check/1'"
    assert provenance["database"] == str(reduced.url)
    assert [t["name"] for t in provenance["targets"]] == ["alpha", "auto", "nowhere"]
    assert provenance["channels"] == [1, 2] and provenance["missions"] == ["warm"]
    assert {(u["aorkey"], u["channel"], u["status"]) for u in provenance["units"]} == {
        (ALPHA.aorkey, 2, "complete"), (BETA.aorkey, 1, "complete")}
    inputs = sql_rows(reduced, "SELECT path, kind, size_bytes, sha256 FROM run_inputs ORDER BY path")
    assert provenance["inputs"] == inputs and len(inputs) > 0
    assert provenance["inputs_summary"]["count"] == len(inputs)
    assert provenance["inputs_summary"]["total_bytes"] == sum(i["size_bytes"] for i in inputs)
    export = provenance["export"]
    assert export["format"] == "csv" and export["n_image_rows"] == result.n_image_rows
    assert export["files"] == [p.name for p in result.files]
    # run_provenance: the same without the export section
    assert run_provenance(reduced, RUN) == {k: v for k, v in provenance.items() if k != "export"}
    assert "inputs" not in run_provenance(reduced, RUN, with_inputs=False)
    json.dumps(run_provenance(reduced, RUN))

    log = result.files[2].read_text()
    for words in ("status     complete", "aperture radius    3.0 px", "annulus radii      3.0 - 7.0 px",
                  "centroid           box", "background         median", "aperture corr.     none",
                  "reject rule        sigma:3", "subarray mode      planes", "file type          bcd",
                  f"RA {ALPHA.ra_deg:.7f} deg", "[2] nowhere: RA 10.0000000 deg", "auto (brightest source",
                  "== Problem AORs", "no usable image",
                  "not_in_fov x128, first_frame x2 (128 of 128 kept out of the statistics)", OPTIONS.params_hash(),
                  f"Inputs: {len(inputs)} files", "host", "command line", str(reduced.url)):
        assert words in log, words
    for item in inputs:
        assert f"{item['sha256']} {item['path']}" in log
    assert f"{ALPHA.aorkey}  2 alpha" in log


def test_interrupted_run_exports_what_it_has(reduced: Engine, tmp_path: Path) -> None:
    """A run stopped after one of its two units: its rows and its status are exported."""
    with reduced.begin() as conn:
        conn.execute(text("UPDATE runs SET status = 'interrupted', n_units_done = 1, "
                          "message = 'interrupted by the user (Ctrl-C)'"))
        conn.execute(text("UPDATE run_units SET status = 'pending', n_images = NULL WHERE aorkey = :a"),
                     {"a": BETA.aorkey})
        conn.execute(text("DELETE FROM measured_images WHERE aorkey = :a"), {"a": BETA.aorkey})
        conn.execute(text("DELETE FROM aor_summaries WHERE aorkey = :a"), {"a": BETA.aorkey})
    result = export_run(reduced, RUN, tmp_path, "parquet")
    assert result.status == "interrupted" and result.n_image_rows == 128 * 3 and result.n_aor_rows == 3
    provenance = json.loads(result.files[3].read_text())
    assert provenance["run"]["status"] == "interrupted"
    log = result.files[2].read_text()
    assert "status     interrupted" in log and "interrupted by the user (Ctrl-C)" in log
    assert f"{BETA.aorkey} ch1: not reduced (unit pending)" in log


def test_errors(reduced: Engine, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    with pytest.raises(NoSuchRun, match="no run named 'other'"):
        export_run(reduced, "other", tmp_path)
    with pytest.raises(NoSuchRun):
        run_provenance(reduced, "other")
    with pytest.raises(BadOption, match="unknown export format 'xlsx': choose one of csv, parquet, ecsv, votable"):
        export_run(reduced, RUN, tmp_path, "xlsx")
    assert not tmp_path.exists()


def test_a_failed_export_leaves_no_partial_file_and_keeps_the_last_one(reduced: Engine, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    first = export_run(reduced, RUN, tmp_path)
    before = {p.name: p.read_bytes() for p in first.files}

    def fail(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_run(reduced, RUN, tmp_path, overwrite=True, progress=fail)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(KeyboardInterrupt):
        export_run(reduced, RUN, tmp_path.parent / "new", "parquet", progress=fail)
    assert list((tmp_path.parent / "new").iterdir()) == []
    # exporting again replaces the files, when asked to
    again = export_run(reduced, RUN, tmp_path, overwrite=True)
    assert again.files == first.files and sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def test_existing_files_are_replaced_only_when_asked(reduced: Engine, tmp_path: Path) -> None:
    first = export_run(reduced, RUN, tmp_path / "out")
    (tmp_path / "out" / f"{STEM}_log.txt").write_text("my notes")
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.files}
    with pytest.raises(OutputExists, match=f"{STEM}_aor_data.csv and 3 more output file"):
        export_run(reduced, RUN, tmp_path / "out")
    for path in first.files[1:]:
        path.unlink()
    with pytest.raises(OutputExists, match=f"out/{STEM}_aor_data.csv already exists"):  # one is enough
        export_run(reduced, RUN, tmp_path / "out")
    assert sorted((tmp_path / "out").iterdir()) == [first.files[0]]  # nothing written, nothing left
    assert first.files[0].read_bytes() == kept[first.files[0]][0]
    assert first.files[0].stat().st_mtime_ns == kept[first.files[0]][1]
    export_run(reduced, RUN, tmp_path / "out", "parquet")  # other files: no conflict but the log and provenance
    again = export_run(reduced, RUN, tmp_path / "out", overwrite=True)
    assert [p.read_bytes() for p in again.files[:2]] == [kept[p][0] for p in first.files[:2]]


def test_runs_never_share_file_names(reduced: Engine, tmp_path: Path) -> None:
    """`a/b` and `a_b` (and a name of 300 characters) each get their own files in the same folder."""
    names = {}
    for name in ("a/b", "a_b", "a%2Fb", ".a", "r" * 299 + "1", "r" * 299 + "2"):
        with reduced.begin() as conn:
            conn.execute(text("UPDATE runs SET name = :name"), {"name": name})
        names[name] = [p.name for p in export_run(reduced, name, tmp_path / "out").files]
    assert names["a/b"][0] == "a%2Fb_aor_data.csv" and names["a_b"][0] == "a_b_aor_data.csv"
    assert names[".a"][0] == "%2Ea_aor_data.csv"  # not a hidden file
    every = [n for files in names.values() for n in files]
    assert len(set(every)) == len(every) == 4 * len(names)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(every)
    assert max(len(os.fsencode(n)) for n in every) < 255 - len(".4294967295.partial")


def test_unwritable_folders_are_one_line_errors(reduced: Engine, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    for out, message in (
        (a_file, r"cannot write into .*a_file: it exists and is not a folder$"),
        (a_file / "sub", r"cannot create folder .*a_file/sub: Not a directory$"),
        (Path("/proc/nope"), r"cannot create folder /proc/nope: No such file or directory$"),
        (Path("/sys/nope"), r"cannot create folder /sys/nope: Operation not permitted$"),  # even for root
        (tmp_path / ("x" * 300), r"cannot create folder .*xxx: File name too long$"),
    ):
        with pytest.raises(CannotWrite, match=message):
            export_run(reduced, RUN, out)
    assert a_file.read_text() == "keep"


def test_a_killed_exports_partials_are_removed_by_the_next(reduced: Engine, db_url: str, tmp_path: Path) -> None:
    """An export killed (SIGKILL) while it writes leaves its temporary files; the next export of the run removes
    them, and only them: not another run's, not a running export's, not other files."""
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from iracdb.db.engine import make_engine; "
         "from iracdb.export import export_run\n"
         "def stop(done, total):\n    print('writing', flush=True)\n    time.sleep(60)\n"
         "export_run(make_engine(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), progress=stop)",
         db_url, RUN, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    stale = sorted(out.iterdir())
    csv_export = ("aor_data.csv", "img_data.csv", "log.txt", "provenance.json")
    assert stale == sorted(partial_path(out / f"{STEM}_{name}", child.pid) for name in csv_export)
    assert partial_path(out / f"{STEM}_aor_data.csv", child.pid).stat().st_size > 0  # written before the images
    running = os.getppid()  # a process that runs: its partials are an export in progress
    others = [partial_path(out / "b_log.txt", child.pid), partial_path(out / f"{STEM}_log.txt", running),
              out / "notes.txt"]
    for path in others:
        path.write_text("keep")
    result = export_run(reduced, RUN, out)
    assert sorted(out.iterdir()) == sorted([*result.files, *others])


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite's image rows go through pa.array
def test_a_csv_export_does_not_import_pandas(reduced: Engine, db_url: str, tmp_path: Path) -> None:
    """pyarrow imports pandas the first time pa.array, pa.scalar or Array.to_numpy is called (0.3-0.4 s of CPU in
    every export process); the export builds its arrays from buffers instead."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from iracdb.db.engine import make_engine; "
         "from iracdb.export import export_run\n"
         "result = export_run(make_engine(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))\n"
         "print(result.n_image_rows, 'pandas' in sys.modules)",
         db_url, RUN, str(tmp_path / "out")], capture_output=True, text=True, check=True)
    rows, imported = done.stdout.split()
    assert int(rows) > 0 and imported == "False"


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_exports_and_figures_get_the_umask_permissions(reduced: Engine, tmp_path: Path, umask: int) -> None:
    """As a plain open() would create them: 0644 under the usual umask 022 (never 0600)."""
    old = os.umask(umask)
    try:
        files = [*export_run(reduced, RUN, tmp_path, "parquet").files, *export_run(reduced, RUN, tmp_path / "c").files,
                 plot_overview(reduced, RUN, tmp_path / "overview.png")]
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o666 & ~umask for p in files}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # a SQLite URL has no password
def test_password_never_written(reduced: Engine, db_url: str, tmp_path: Path) -> None:
    secret = "s3cretPW"
    url = make_url(db_url).set(password=secret).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        for fmt in EXPORT_FORMATS:
            result = export_run(engine, RUN, tmp_path / fmt, fmt)
            for path in result.files:
                data = path.read_bytes()
                assert secret.encode() not in data, path
            assert ":***@" in result.files[2].read_text()
        assert secret not in json.dumps(run_provenance(engine, RUN))
    finally:
        engine.dispose()


def test_file_stem() -> None:
    """Every character but letters, digits, `.`, `_` and `-` percent-encoded (see tests/test_outputs.py)."""
    assert file_stem("spot check/1") == STEM
    assert file_stem("run-2.b_c") == "run-2.b_c"
    assert file_stem("é:*?") == "%C3%A9%3A%2A%3F"


def test_the_garbage_collector_is_left_as_it_was(reduced: Engine, tmp_path: Path) -> None:
    """An export pauses Python's cyclic garbage collector while it streams rows, and restores its state after."""
    assert gc.isenabled()
    export_run(reduced, RUN, tmp_path / "on")
    assert gc.isenabled()
    gc.disable()
    try:
        export_run(reduced, RUN, tmp_path / "off")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_csv_writer_writes_what_arrows_csv_writer_writes(tmp_path: Path) -> None:
    """The CSV file (batches formatted in parallel, text columns dictionary-encoded) has the bytes that one Arrow
    CSVWriter given the decoded batches writes: NULLs, quotes, commas, new lines, special and extreme floats."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from iracdb.export_formats import WRITERS, decoded

    table = export._IMAGE_TABLE
    rng = np.random.default_rng(3)
    texts = pa.array(['a "quoted", text', "new\nline", "", None, "plain", "x,y"])
    floats = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 1e-7, 1e-5, 1e10, 1e15, 1e16,
              0.1, 123456.789, None]
    batches = []
    for n in (0, 1, 17, 300):
        arrays = []
        for field in table.schema:
            if pa.types.is_string(field.type):
                index = pa.array(rng.integers(0, len(texts), n), type=pa.int64(), mask=rng.random(n) < 0.2)
                arrays.append(pa.DictionaryArray.from_arrays(index, texts) if field.name in ("file", "target")
                              else texts.take(index))
            elif pa.types.is_floating(field.type):
                arrays.append(pa.array([floats[k] for k in rng.integers(0, len(floats), n)], type=pa.float64()))
            elif pa.types.is_boolean(field.type):
                arrays.append(pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.2))
            else:
                arrays.append(pa.array(rng.integers(-2**62, 2**62, n), mask=rng.random(n) < 0.2))
        fields = [f.with_type(a.type) for f, a in zip(table.schema, arrays, strict=True)]
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)))
    writer = WRITERS["csv"](tmp_path / "ours.csv", table, {})
    with ThreadPoolExecutor(max_workers=2) as pool:
        for encoded in list(pool.map(writer.encode, batches)):
            writer.write_encoded(encoded)
    writer.close()
    options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    with pacsv.CSVWriter(str(tmp_path / "arrow.csv"), table.schema, write_options=options) as arrow:
        for batch in batches:
            arrow.write_batch(decoded(batch))
    ours, expected = (tmp_path / "ours.csv").read_bytes(), (tmp_path / "arrow.csv").read_bytes()
    assert expected.count(b"\n") > 300 and b'"a ""quoted"", text"' in expected
    assert ours == expected
