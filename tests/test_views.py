"""The readable views (migrations 0003, 0004) on both backends: their columns are the documented ones, their flag
columns follow the flag registry, their values are the stored values, and `iracdb summary`/`runs` read them."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
from reduce_helpers import sql_rows
from sqlalchemy import Engine, inspect

from iracdb.columns import AOR_COLUMN_NAMES, IMAGE_COLUMN_NAMES
from iracdb.db import migrate, queries
from iracdb.db.views import AOR_VIEW, IMAGE_ORDER, IMAGE_VIEW
from iracdb.errors import NoSuchAor, NoSuchRun
from iracdb.flags import Flag, column_names
from iracdb.ingest import ingest
from iracdb.reduce import ReduceOptions, Target, reduce
from iracdb.summary import SUMMARY_EXCLUDED
from iracdb.synth import AorSpec, SynthArchive, write_archive

ROOT = Path(__file__).resolve().parents[1]
SUB = AorSpec(aorkey=72000064, channels=(2,), read_mode="SUB", n_exposures=2, mission="warm",
              object_name="GAMMA sub", ra_deg=150.1, dec_deg=2.2, flux_mjy=90.0)
FULL = AorSpec(aorkey=72000320, channels=(1, 2), read_mode="FULL", n_exposures=3, mission="cryo",
               object_name="DELTA", ra_deg=210.4, dec_deg=-12.5, flux_mjy=40.0)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("views") / "archive", [SUB, FULL], seed=5, truth_csv=False)


@pytest.fixture
def reduced(engine: Engine, archive: SynthArchive) -> Engine:
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    # A second target far off every field gives rows of NULL values with flags.
    targets = (Target(name="auto"), Target(name="nowhere", ra_deg=10.0, dec_deg=-80.0))
    reduce(engine, "v1", ReduceOptions(targets=targets, reject="minmax"))
    return engine


def _migration_0003():
    path = ROOT / "migrations" / "versions" / "0003_photometry_views.py"
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_views_have_the_documented_columns(engine: Engine) -> None:
    views = set(inspect(engine).get_view_names())
    assert {IMAGE_VIEW, AOR_VIEW} <= views
    assert tuple(c["name"] for c in inspect(engine).get_columns(IMAGE_VIEW)) == IMAGE_COLUMN_NAMES
    assert tuple(c["name"] for c in inspect(engine).get_columns(AOR_VIEW)) == AOR_COLUMN_NAMES
    # The flag columns follow the registry, bit by bit.
    assert [c for c in IMAGE_COLUMN_NAMES if c.startswith("flag_")] == column_names()


def test_frozen_flag_bits_and_used_mask_match_the_registry() -> None:
    # Migration 0003 froze the bits as they were then; the registry only ever adds bits (never renumbers), and the
    # head migration's frozen view (checked against the registry by test_columns) has them all.
    migration = _migration_0003()
    registry = [(f"flag_{m.name.lower()}", int(m)) for m in Flag if m and m.name]
    frozen = [(f"flag_{name}", bit) for name, bit in migration._FLAGS]
    assert frozen == registry[: len(frozen)] and len(frozen) == 14
    assert migration._NOT_USED == int(SUMMARY_EXCLUDED | Flag.OUTLIER) & ~int(Flag.FIRST_FRAME)


def test_image_view_values_are_the_stored_values(reduced: Engine) -> None:
    stored = sql_rows(reduced, "SELECT m.*, i.path FROM measurements m LEFT JOIN run_inputs i ON i.id = m.input_id "
                               "ORDER BY m.aorkey, m.channel, m.expid, m.dcenum, m.plane, m.target_index")
    view = sql_rows(reduced, f"SELECT * FROM {IMAGE_VIEW} WHERE run = 'v1' ORDER BY {', '.join(IMAGE_ORDER)}")
    assert len(view) == len(stored) > 0
    renamed = {"xc": "xc", "yc": "yc", "xc_full": "xc_full", "sky": "sky", "raw_flux": "raw_flux",
               "net_flux": "net_flux", "correction": "correction", "ap_corr": "ap_corr", "fwhm_x": "fwhm_x",
               "file": "path"}  # one name per quantity (migration 0004): only the joined path differs
    n_null = 0
    for row, original in zip(view, stored, strict=True):
        for column, source in {**renamed, "flux_mjy": "flux_mjy", "flags": "flags", "plane": "plane"}.items():
            assert row[column] == original[source], column
        flags = Flag(row["flags"])
        for member in Flag:
            if member and member.name:
                assert bool(row[f"flag_{member.name.lower()}"]) == (member in flags)
        expected_used = not (flags & (SUMMARY_EXCLUDED | Flag.OUTLIER)) and row["flux_mjy"] is not None
        assert bool(row["used"]) == expected_used
        n_null += row["flux_mjy"] is None
    assert n_null > 0  # the off-field target's rows: NULL stays NULL through the view
    assert any(row["flag_outlier"] for row in view)  # minmax marks two images per AOR


def test_aor_view_values_are_the_stored_summaries(reduced: Engine) -> None:
    stored = sql_rows(reduced, "SELECT * FROM aor_summaries ORDER BY aorkey, channel, target_index")
    view = queries.run_summary(reduced, "v1")
    assert len(view) == len(stored) == 2 * 3  # (1 + 2 channels) x 2 targets
    for row, original in zip(view, stored, strict=True):
        assert (row["aorkey"], row["channel"], row["target_index"]) == (
            original["aorkey"], original["channel"], original["target_index"])
        assert row["flux_mjy"] == original["flux_mjy"] and row["std_mjy"] == original["std_mjy"]
        assert row["flux_err_mjy"] == original["flux_err_mjy"] and row["date_obs"] == original["date_obs"]
        assert row["target"] == ("auto", "nowhere")[row["target_index"]]
    auto = [row for row in view if row["target"] == "auto"]
    assert all(row["n_used"] > 0 and math.isfinite(row["flux_mjy"]) for row in auto)
    assert all(row["n_used"] == 0 and row["flux_mjy"] is None for row in view if row["target"] == "nowhere")


def test_run_summary_filters_and_refuses_unknowns(reduced: Engine) -> None:
    rows = queries.run_summary(reduced, "v1", aorkey=SUB.aorkey)
    assert {row["aorkey"] for row in rows} == {SUB.aorkey} and len(rows) == 2
    with pytest.raises(NoSuchAor, match=r"AOR 1 is not in run 'v1' \(its AORs: 72000064, 72000320\)"):
        queries.run_summary(reduced, "v1", aorkey=1)
    with pytest.raises(NoSuchRun, match="no run named 'v2'; recent runs: v1"):
        queries.run_summary(reduced, "v2")


def test_list_runs(reduced: Engine) -> None:
    reduce(reduced, "v2", ReduceOptions(targets=(Target(name="auto"),), radius_px=4.0, annulus_in_px=4.0,
                                        annulus_out_px=8.0, aperture_correction="none", aorkeys=(SUB.aorkey,)))
    rows = queries.list_runs(reduced)
    assert [row["name"] for row in rows] == ["v1", "v2"]
    first, second = rows
    assert first["status"] == "complete" and first["aors"] == 3 and first["targets"] == "auto,nowhere"
    assert first["images"] == sql_rows(reduced, "SELECT count(*) AS n FROM image_photometry WHERE run = 'v1'")[0]["n"]
    assert (second["aors"], second["radius_px"], second["annulus_px"], second["ap_corr"]) == (1, 4.0, "4-8", "none")
    assert set(rows[0]) == set(queries.RUN_LIST_COLUMNS)


def test_downgrade_drops_the_views_and_upgrade_restores_them(engine: Engine) -> None:
    migrate.downgrade(engine, "0002")
    assert not {IMAGE_VIEW, AOR_VIEW} & set(inspect(engine).get_view_names())
    migrate.upgrade(engine)
    assert {IMAGE_VIEW, AOR_VIEW} <= set(inspect(engine).get_view_names())
