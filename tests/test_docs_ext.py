"""The documentation's generated pages (docs/_ext/iracdb_docs.py) say what the code does: every command and option
of the command line, every column, table, flag and choice, the correction numbers in effect."""

from __future__ import annotations

import re
import sys

import pytest
from docs_pages import DOCS
from typer.testing import CliRunner

sys.path.insert(0, str(DOCS / "_ext"))
import iracdb_docs

from iracdb import choices
from iracdb.cli import app
from iracdb.columns import AOR_COLUMNS, IMAGE_COLUMNS
from iracdb.flags import SUMMARY_EXCLUDED, Flag


def _all_commands(command: iracdb_docs.CommandDoc) -> list[iracdb_docs.CommandDoc]:
    return [command, *(found for sub in command.subcommands for found in _all_commands(sub))]


def test_every_command_is_documented_with_the_help_it_prints() -> None:
    commands = _all_commands(iracdb_docs.cli_commands())
    paths = {command.path for command in commands}
    assert {"iracdb ingest", "iracdb reduce", "iracdb export", "iracdb sql", "iracdb db upgrade",
            "iracdb db create-reader"} <= paths
    runner = CliRunner()
    for command in commands[1:]:
        shown = runner.invoke(app, [*command.path.split()[1:], "--help"], terminal_width=200)
        assert shown.exit_code == 0, shown.output
        assert f"Usage: {command.usage}" in shown.output
        options_in_help = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[\w-]+)", shown.output)) - {"--help"}
        documented = {re.search(r"--[\w-]+", p.name).group(0) for p in command.params if p.kind == "option"}
        assert documented == options_in_help, command.path
        for param in command.params:
            assert param.name in shown.output, (command.path, param.name)
            assert param.help, (command.path, param.name)
        if not command.subcommands:
            assert command.help, command.path


def test_reduce_options_carry_their_choices_and_defaults() -> None:
    reduce = next(c for c in _all_commands(iracdb_docs.cli_commands()) if c.path == "iracdb reduce")
    centroid = next(p for p in reduce.params if "--centroid" in p.name)
    for method, meaning in choices.CENTROID_METHODS.items():
        assert method in centroid.name and meaning in centroid.help
    radius = next(p for p in reduce.params if p.name.startswith("--radius"))
    assert "[default: 3]" in radius.help


@pytest.mark.parametrize(("kind", "registry"), [("image", IMAGE_COLUMNS), ("aor", AOR_COLUMNS)])
def test_column_tables_list_the_registry(kind: str, registry: tuple) -> None:
    rows = iracdb_docs.column_rows(kind)
    assert [row[0] for row in rows] == [column.name for column in registry]
    for row, column in zip(rows, registry, strict=True):
        assert row[1] == column.type and row[4] == column.description
        table = "table" if kind == "aor" else "aperture_fluxes" if column.per_aperture else "measured_images"
        assert row[3] == ("view" if not column.stored else f"{table}, view" if column.exported else f"{table} only")
    assert dict((row[0], row[2]) for row in rows)["flux_mjy"] == "mJy"


def test_flag_table_has_every_bit_with_its_meaning_and_effect() -> None:
    rows = iracdb_docs.flag_rows()
    members = [member for member in Flag if member and member.name]
    assert [row[2] for row in rows] == [member.name for member in members]
    for (bit, value, _name, meaning, effect), member in zip(rows, members, strict=True):
        assert int(value) == int(member) == 1 << int(bit)
        assert meaning, f"{member.name} has no #: comment in iracdb/flags.py"
        assert ("kept out" in effect) == bool(member & SUMMARY_EXCLUDED)
    sets = {name: bits for name, bits, _ in iracdb_docs.flag_sets()}
    assert sets["NOT_USED"].startswith(f"{int(SUMMARY_EXCLUDED | Flag.OUTLIER)} = ")


def test_schema_tables_are_the_models() -> None:
    from iracdb.db.models import Base

    docs = {doc.name: doc for doc in iracdb_docs.table_docs()}
    assert set(docs) == set(Base.metadata.tables)
    images = {name for name, *_ in docs["measured_images"].columns}
    fluxes = {name for name, *_ in docs["aperture_fluxes"].columns}
    assert {c.name for c in IMAGE_COLUMNS if c.stored and not c.per_aperture} <= images
    assert {c.name for c in IMAGE_COLUMNS if c.stored and c.per_aperture} <= fluxes
    keys = {name: key for name, _type, key, _doc in docs["files"].columns}
    assert keys["id"] == "PK" and "FK exposures.id" in keys["exposure_id"] and "unique" in keys["path"]
    assert "unique (exposure_id, kind)" in docs["files"].constraints
    assert docs["runs"].description.startswith("A named reduction")


def test_view_sql_is_the_registry_rendering() -> None:
    from iracdb.db import views

    assert iracdb_docs.view_sql("image_photometry") == views.image_view_sql()
    assert "flux_mjy" in iracdb_docs.view_sql("aor_photometry")
    with pytest.raises(KeyError):
        iracdb_docs.view_sql("measurements")


def test_choices_and_correction_numbers() -> None:
    rows = iracdb_docs.choice_rows()
    assert ("REJECT_RULES", "sigma:N", choices.REJECT_RULES["sigma:N"]) in rows
    sets = iracdb_docs.coefficient_sets()
    assert sorted(sets) == ["cryo ch1", "cryo ch2", "cryo ch3", "cryo ch4", "warm ch1", "warm ch2"]
    coefficients = {row[0]: dict(zip(sets, row[1:], strict=True)) for row in iracdb_docs.coefficient_rows()}
    assert list(coefficients) == ["A", "B", "C", "D", "E", "F", "dFx", "dFy", "X0", "Y0", "sx", "sy", "F0", "q"]
    assert coefficients["A"]["warm ch2"] == "0.97494936"  # the float32 literal 0.97494935 as IDL holds it
    assert coefficients["dFx"]["cryo ch3"] == "0" and coefficients["q"]["warm ch1"] == "1"
    apcorr = iracdb_docs.aperture_correction_rows()
    assert ("warm", "3", "3-7", "1.1233", "1.1336", "", "") in apcorr
    assert ("cryo", "infinite", "(none)", "0.944", "0.937", "0.772", "0.737") in apcorr
    areas = {row[0]: row for row in iracdb_docs.pixel_area_rows()}
    assert areas["1"][2] == "3.50414e-11" and areas["1"][3] == "0.0350414"  # irac-photometry.md §2: 35.0414 uJy
