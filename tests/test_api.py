"""The Python API (iracdb.open, Archive, Run) on both backends, on the real XO-3 AOR: its tables equal the
archive's views, carry the registry's units, mask NULLs; errors are the documented exceptions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.table import MaskedColumn, Table

import iracdb
from iracdb.columns import AOR_COLUMNS, IMAGE_COLUMN_NAMES
from iracdb.db import queries
from iracdb.db.engine import make_engine
from iracdb.errors import (
    BadOption,
    NoSuchAor,
    NoSuchDatabase,
    NoSuchRun,
    OutputExists,
    PrivilegedRole,
    QueryError,
    ReadOnlyViolation,
    RunConflict,
)
from tests.conftest import SHARED_DATA, SUBARRAY_AOR_DIR

ROOT = Path(__file__).resolve().parents[1]
XO3 = "04:21:52.7 +57:49:01.9"
IRAC = SHARED_DATA / "irac"


def test_import_iracdb_is_light_and_every_public_name_resolves() -> None:
    code = ("import sys, iracdb; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'astropy', 'numpy', 'pandas', 'rich')); print(heavy); "
            "print([name for name in iracdb.__all__ if getattr(iracdb, name) is None])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.splitlines() == ["[]", "[]"], result.stdout + result.stderr
    assert set(iracdb.__all__) == {"Archive", "Run", "__version__", "open", "photometry"}
    assert callable(iracdb.photometry) and callable(iracdb.photometry.measure)  # both uses of the one name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        iracdb.nope  # noqa: B018


def test_the_api_on_the_real_xo3_aor(db_url: str, tmp_path: Path) -> None:
    with iracdb.open(db_url) as arc:
        summary = arc.ingest(IRAC, workers=1, progress=False)
        assert (summary.n_new, summary.n_rejected) == (80, 0)
        catalogue = arc.aors(channel=2)
        assert list(catalogue["aorkey"]) == [46987776, 46466816] and catalogue["first_mjd"].unit == u.day
        assert len(arc.exposures(46466816)) == 11 and len(arc.rejected()) == 0

        calls: list[tuple[int, int]] = []
        run = arc.reduce("xo3", XO3, aor=46466816, workers=1, progress=lambda done, total: calls.append((done, total)))
        assert run.report is not None and run.report.n_images == 704 and calls[-1] == (1, 1)
        aors, images = run.aors(), run.images()
        engine = arc.engine()
        # The tables are the views' rows, column for column (the export's names, no `run`).
        expected = queries.run_summary(engine, "xo3")
        assert aors.colnames == list(queries.RUN_SUMMARY_COLUMNS)
        for name in aors.colnames:
            assert [_plain(v) for v in aors[name]] == [row[name] for row in expected], name
        assert images.colnames == [n for n in IMAGE_COLUMN_NAMES if n != "run"] and len(images) == 704
        # Units and descriptions from the registry.
        registry = {c.name: c for c in AOR_COLUMNS}
        assert aors["flux_mjy"].unit == u.mJy and aors["flux_mjy"].description == registry["flux_mjy"].description
        assert images["xc"].unit == u.pix and images["net_flux"].unit == u.MJy * u.pix**2 / u.sr
        assert images["flux_mjy"].quantity.to_value(u.Jy)[0] == pytest.approx(images["flux_mjy"][0] / 1000)
        assert aors.meta["params_hash"] == run.provenance["params_hash"] and "inputs" in run.provenance
        assert aors.meta["parameters"]["targets"][0]["name"] == XO3
        # Bounded memory: the same rows AOR by AOR, or only some columns.
        chunks = list(run.iter_images(columns=["expid", "plane", "flux_mjy"]))
        assert len(chunks) == 1 and np.array_equal(chunks[0]["flux_mjy"], images["flux_mjy"])
        assert run.images(aorkey=46466816, columns=["used"])["used"].dtype == bool
        frame = images.to_pandas()
        assert frame["flux_mjy"].sum() == pytest.approx(float(np.sum(images["flux_mjy"])))
        assert int(frame["used"].sum()) == 689

        # The catalogue of runs, comparisons, SQL, exports and plots.
        assert list(arc.runs()["name"]) == ["xo3"] and arc.run("xo3").status == "complete"
        r2 = arc.reduce("xo3-r2", XO3, aor=46466816, radius=2, annulus=(2, 6), workers=1)
        comparison = arc.compare("xo3", "xo3-r2")
        assert comparison["diff_mjy"].unit == u.mJy and len(comparison) == 1
        assert comparison["diff_mjy"][0] == pytest.approx(r2.aors()["flux_mjy"][0] - aors["flux_mjy"][0], abs=1e-12)
        assert ("radius_px", 3.0, 2.0) in comparison.meta["parameter_differences"]
        result = run.export(tmp_path / "out", format="parquet")
        assert [p.name for p in result.files][:2] == ["xo3_aor_data.parquet", "xo3_img_data.parquet"]
        assert pq.read_table(result.files[1]).column("flux_mjy").to_pylist() == list(images["flux_mjy"])
        with pytest.raises(OutputExists):
            run.export(tmp_path / "out", format="parquet")
        assert run.plot(tmp_path / "xo3.png").stat().st_size > 10_000
        assert run.plot(tmp_path / "aor.svg", aor=46466816).read_text().startswith("<?xml")

        # Runs are immutable: the same call returns the finished run, other parameters are refused.
        again = arc.reduce("xo3", XO3, aor=46466816, workers=1)
        assert again.report is not None and again.report.already_complete
        with pytest.raises(RunConflict, match=r"radius_px: 3\.0 -> 4\.0"):
            arc.reduce("xo3", XO3, aor=46466816, radius=4, workers=1)
        with pytest.raises(NoSuchRun, match="no run named 'nope'; recent runs: xo3-r2, xo3"):
            arc.run("nope")
        with pytest.raises(NoSuchAor):
            arc.exposures(1)
        with pytest.raises(BadOption, match="unknown column 'fluxx'"):
            run.images(columns=["fluxx"])
        with pytest.raises(BadOption, match="say where to measure"):
            arc.reduce("no-target", aor=46466816)


def _plain(value: object) -> object:
    """A table cell as the database row gives it (numpy scalars to Python; masked to None)."""
    if value is np.ma.masked:
        return None
    return value.item() if hasattr(value, "item") else value


def test_nulls_are_masked_values_not_strings_or_nan(db_url: str, reader_url: str) -> None:
    """An AOR where the target is not in the field: its values are NULL in the database, masked in the tables."""
    with iracdb.open(db_url) as arc:
        arc.ingest(IRAC, workers=1)
        run = arc.reduce("both", XO3, workers=1)  # the WISE AOR, a degree away, is NOT_IN_FOV
        aors = run.aors()
        wise = aors[aors["aorkey"] == 46987776]
        assert isinstance(aors["flux_mjy"], MaskedColumn) and bool(wise["flux_mjy"].mask[0])
        assert int(wise["n_used"][0]) == 0 and not aors["flux_mjy"].mask[aors["aorkey"] == 46466816][0]
        images = run.images(aorkey=46987776)
        assert len(images) == 1 and bool(images["flag_not_in_fov"][0]) and bool(images["flux_mjy"].mask[0])
        frame = aors.to_pandas()
        assert frame["flux_mjy"].isna().tolist() == [False, True][:: 1 if aors["aorkey"][0] == 46466816 else -1]
    with iracdb.open(reader_url) as reader:
        sql = reader.sql("SELECT aorkey, flux_mjy, object FROM aor_photometry ORDER BY aorkey")
        assert sql["flux_mjy"].mask.tolist() == [False, True] and sql["object"][1].startswith("WISE")


def test_sql_is_read_only_as_the_cli(db_url: str, reader_url: str, backend: str) -> None:
    with iracdb.open(db_url) as arc:
        arc.ingest(SUBARRAY_AOR_DIR, workers=1)
        if backend == "postgresql":  # the test's owner is a superuser: refused, as `iracdb sql` refuses it
            with pytest.raises(PrivilegedRole, match="will not run as PostgreSQL role"):
                arc.sql("SELECT 1")
    with iracdb.open(reader_url) as reader:
        table = reader.sql("SELECT aorkey, count(*) AS n FROM exposures GROUP BY aorkey")
        assert table["aorkey"].tolist() == [46466816] and table["n"].tolist() == [11]
        assert reader.sql("SELECT expid FROM exposures ORDER BY expid", max_rows=3).meta["truncated"]
        with pytest.raises(ReadOnlyViolation, match="read-only"):
            reader.sql("DELETE FROM exposures")
        with pytest.raises(QueryError):
            reader.sql("SELECT nope FROM exposures")
    engine = make_engine(db_url)
    try:
        assert len(queries.list_exposures(engine, 46466816)) == 11  # nothing was deleted
    finally:
        engine.dispose()


def test_a_missing_sqlite_file_is_refused_except_by_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IRACDB_DB_URL", raising=False)
    with iracdb.open() as arc:  # the CLI's default: ./iracdb.sqlite
        assert arc.url == "sqlite:///iracdb.sqlite"
        with pytest.raises(NoSuchDatabase, match=r"no database at iracdb\.sqlite"):
            arc.runs()
    assert list(tmp_path.iterdir()) == []
    shown = repr(iracdb.open("postgresql+psycopg://alice:secret@dbhost/iracdb"))  # nothing connected yet
    assert shown == "<iracdb.Archive postgresql+psycopg://alice:***@dbhost/iracdb>"
    with pytest.raises(BadOption, match="malformed scheme separator"):
        iracdb.open("postgresql+psycopg:/alice:secret@host/db")
    with iracdb.open(tmp_path / "new.sqlite") as arc:
        arc.ingest(SUBARRAY_AOR_DIR, workers=1)
        assert len(arc.aors()) == 1
    assert (tmp_path / "new.sqlite").is_file()


NOTEBOOK = """
# A notebook session, cell by cell, in a fresh interpreter: ingest, reduce, tables, export, plot, SQL, compare.
import json, sys
import iracdb
from astropy.coordinates import SkyCoord
import astropy.units as u

arc = iracdb.open("session.sqlite")
arc.ingest("{data}", workers=1)
arc.aors()
xo3 = SkyCoord("04h21m52.7s", "+57d49m01.9s")
run = arc.reduce("xo3", target=xo3, aor=46466816, radius=3, annulus=(3, 7), workers=1)
aor = run.aors()
img = run.images(columns=["mjd", "flux_mjy", "flux_err_mjy", "used"])
light_curve = img[img["used"]]
df = img.to_pandas()
files = run.export("out", format="ecsv").files
figure = run.plot("xo3.png")
arc.reduce("xo3-r2", target=xo3, aor=46466816, radius=2, annulus=(2, 6), workers=1)
diff = arc.compare("xo3", "xo3-r2")
counts = arc.sql("SELECT run, n_used FROM aor_photometry ORDER BY run")
arc.close()
result = dict(flux=float(aor["flux_mjy"][0]), unit=str(aor["flux_mjy"].unit), n_used=len(light_curve),
              pandas_rows=len(df), files=[f.name for f in files], figure=figure.name,
              diff_pct=float(diff["diff_pct"][0]), counts=[[str(r["run"]), int(r["n_used"])] for r in counts])
sys.stderr.write("RESULT " + json.dumps(result) + "\\n")
"""


def test_a_notebook_session_runs_and_the_library_prints_nothing(tmp_path: Path) -> None:
    script = tmp_path / "session.py"
    script.write_text(textwrap.dedent(NOTEBOOK.format(data=SUBARRAY_AOR_DIR)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's iracdb
    done = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # the library printed nothing; only the session's own line is on stderr
    (line,) = done.stderr.splitlines()
    result = json.loads(line.removeprefix("RESULT "))
    assert result["unit"] == "mJy" and result["n_used"] == 689 and result["pandas_rows"] == 704
    assert result["files"] == ["xo3_aor_data.ecsv", "xo3_img_data.ecsv", "xo3_log.txt", "xo3_provenance.json"]
    assert result["figure"] == "xo3.png" and (tmp_path / "xo3.png").stat().st_size > 10_000
    assert result["counts"] == [["xo3", 689], ["xo3-r2", result["counts"][1][1]]]
    assert -1 < result["diff_pct"] < 0  # the published 2 px aperture correction leaves r2 ~0.3 % lower
    exported = Table.read(tmp_path / "out" / "xo3_aor_data.ecsv")
    assert exported["flux_mjy"][0] == result["flux"] and exported["flux_mjy"].unit == u.mJy


def test_the_readme_python_example_runs(tmp_path: Path) -> None:
    """The README's Python section, run as written (its relative data path pointed at the shared data)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python\n"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    script = tmp_path / "example.py"
    script.write_text(code.replace("../shared/data", str(SHARED_DATA)) + textwrap.dedent("""
        assert len(aor_data) == 1 and len(img_data) == 704 and len(problem_aors) == 0
        print(repr(float(aor_data["flux_mjy"][0])))
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and 55.9 < float(done.stdout) < 56.0
    assert (tmp_path / "xo3.png").is_file() and (tmp_path / "export" / "xo3_aor_data.ecsv").is_file()
