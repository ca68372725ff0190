"""The column registry is the one definition: the models, the views (and the head migration's frozen copy of their
SQL), the reduction's rows, the export schema and the README's column tables all follow it."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

from iracdb import columns
from iracdb.columns import AOR_COLUMNS, IMAGE_COLUMNS
from iracdb.db import models, views
from iracdb.photometry.measure import Photometry
from iracdb.reduce.store import _STORED_AOR_COLUMNS, aor_facts
from iracdb.reduce.worker import ROW_COLUMNS
from iracdb.summary import AorStats

ROOT = Path(__file__).resolve().parents[1]


def _head_migration():
    """The newest migration that froze the views' SQL (later ones that change no view freeze none)."""
    for path in sorted((ROOT / "migrations" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"), reverse=True):
        spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "IMAGE_PHOTOMETRY"):
            return module
    raise AssertionError("no migration froze the views")


def test_names_are_unique_and_sources_known() -> None:
    for registry in (IMAGE_COLUMNS, AOR_COLUMNS):
        names = [c.name for c in registry]
        assert len(names) == len(set(names))
        for column in registry:
            assert (column.source == "view") == bool(column.expression), column.name
            assert column.type != "bool" or column.source in ("view", "best"), column.name


def test_the_head_migration_froze_what_the_registry_renders() -> None:
    head = _head_migration()
    assert head.MEASUREMENTS.strip() == views.measurements_view_sql().strip()
    assert head.IMAGE_PHOTOMETRY.strip() == views.image_view_sql().strip()
    assert head.AOR_PHOTOMETRY.strip() == views.aor_view_sql().strip()
    assert head.BEST_PHOTOMETRY.strip() == views.best_view_sql().strip()


def test_models_store_exactly_the_registry_columns() -> None:
    structure = {"id", "run_id", "exposure_id", "input_id", "centroid", "image_id"}
    image_level = tuple(c for c in IMAGE_COLUMNS if not c.per_aperture)
    aperture_level = tuple(c for c in IMAGE_COLUMNS if c.per_aperture)
    for table, registry in ((models.MeasuredImage.__table__, image_level),
                            (models.ApertureFlux.__table__, aperture_level),
                            (models.MEASUREMENTS, IMAGE_COLUMNS), (models.AorSummary.__table__, AOR_COLUMNS)):
        stored = {c.name: c for c in registry if c.stored}
        assert set(table.columns.keys()) - structure == set(stored), table.name
        for name, column in stored.items():
            assert table.c[name].nullable == column.nullable, name


def test_the_per_aperture_columns_are_the_ones_a_grid_varies() -> None:
    """What differs between two apertures of one image (background, sums, corrections by radius, fluxes, flags)
    is per aperture; the rest is the image's (a 30-aperture grid stores it once, not 30 times)."""
    per_aperture = {c.name for c in IMAGE_COLUMNS if c.per_aperture}
    assert per_aperture == {"aperture_id", "sky", "sky_err", "sky_npix", "sky_std", "aperture_area", "raw_flux",
                            "raw_flux_err", "net_flux", "net_flux_err", "ap_corr", "flux_mjy", "flux_err_mjy",
                            "flags"}
    assert all(c.stored for c in IMAGE_COLUMNS if c.per_aperture)


def test_every_computed_column_has_its_source() -> None:
    photometry_fields = {f.name for f in dataclasses.fields(Photometry)}
    stats_fields = {f.name for f in dataclasses.fields(AorStats)}
    for column in IMAGE_COLUMNS:
        if column.source == "photometry":
            assert column.origin in photometry_fields, column.name
    assert set(ROW_COLUMNS) == {"exposure_id"} | {c.name for c in IMAGE_COLUMNS if c.stored} - {"aorkey", "channel"}
    assert {c.name for c in AOR_COLUMNS if c.source == "summary"} <= stats_fields
    assert set(aor_facts([])) == {c.name for c in AOR_COLUMNS if c.source == "exposure"}
    assert {c.source for c in _STORED_AOR_COLUMNS} == {"summary", "exposure", "run", "best"}


def test_flag_columns_follow_the_flag_registry() -> None:
    from iracdb.flags import NOT_USED, column_names

    assert [c for c in columns.IMAGE_COLUMN_NAMES if c.startswith("flag_")] == column_names()
    [used] = [c for c in IMAGE_COLUMNS if c.name == "used"]
    assert f"m.flags & {int(NOT_USED)}" in used.expression


def test_readme_column_tables_are_generated_from_the_registry() -> None:
    text = (ROOT / "README.md").read_text()
    for title, registry in (("RUN_aor_data", AOR_COLUMNS), ("RUN_img_data", IMAGE_COLUMNS)):
        found = re.search(rf"<!-- columns:{title} -->\n(.*?)<!-- /columns:{title} -->", text, flags=re.S)
        assert found, f"README has no generated table for {title}"
        assert found.group(1) == columns.markdown_table(registry), (
            f"README's {title} table differs from the registry: paste `python -m iracdb.columns` output")
