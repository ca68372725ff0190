"""Sphinx directives that generate the reference pages from the code, so that they cannot go stale.

- ``.. iracdb-cli::`` the command reference: every command of ``iracdb`` (typer's click command tree,
  ``typer.main.get_command``), its usage line, help text, arguments and options, as ``iracdb CMD --help`` has them.
- ``.. iracdb-columns:: image|aor`` the result columns of the column registry (:mod:`iracdb.columns`).
- ``.. iracdb-tables::`` every table of the schema (:mod:`iracdb.db.models`): columns, types, keys, constraints.
- ``.. iracdb-view-sql:: image_photometry|aor_photometry`` a view's SQL as :mod:`iracdb.db.views` renders it.
- ``.. iracdb-flags::`` the quality-flag registry (:mod:`iracdb.flags`), with which bits keep an image out.
- ``.. iracdb-choices::`` the closed choices (:mod:`iracdb.choices`).
- ``.. iracdb-coefficients::``, ``.. iracdb-aperture-corrections::``, ``.. iracdb-pixel-areas::`` the numbers the
  corrections use (:mod:`iracdb.photometry.corrections`, ``apcorr``, ``units``).

The functions that collect the facts (``cli_commands``, ``column_rows``, ``table_docs``, ``flag_rows``,
``choice_rows``) return plain data and are tested in ``tests/test_docs_ext.py``; the directives only lay them out.
Every text taken from the code goes into the page as text (docutils ``Text``), never parsed as markup.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

# --- the facts ------------------------------------------------------------------------------------------------------


@dataclass
class Param:
    """One argument or option of a command: how it is written and what it does (click's help record)."""

    kind: str  # "argument" or "option"
    name: str  # "PATH..." or "-j, --workers N"
    help: str


@dataclass
class CommandDoc:
    """One command (or group) of the command line."""

    path: str  # "iracdb db upgrade"
    usage: str  # "iracdb db upgrade [OPTIONS] [REVISION]"
    help: str
    params: list[Param]
    subcommands: list[CommandDoc] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """The page anchor: ``cli-db-upgrade`` (``cli-iracdb`` for the root)."""
        words = self.path.split()[1:] or ["iracdb"]
        return "cli-" + "-".join(words)


def _argument_name(param: Any) -> str:
    # As `iracdb CMD --help` names an argument (iracdb.cli.app._Command): its metavar alone, e.g. PATH...
    name = param.metavar or (param.name or "").upper()
    return f"{name}..." if param.nargs == -1 and not name.endswith("...") else name


def _params(command: Any, ctx: Any) -> list[Param]:
    params = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or getattr(param, "hidden", False) or param.name == "help":
            continue
        if param.param_type_name == "argument":
            params.append(Param("argument", _argument_name(param), record[1]))
        else:
            params.append(Param("option", record[0], record[1]))
    return params


def _command_doc(command: Any, ctx: Any) -> CommandDoc:
    usage = command.get_usage(ctx).removeprefix("Usage:").strip()
    doc = CommandDoc(ctx.command_path, usage, inspect.cleandoc(command.help or ""), _params(command, ctx))
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                doc.subcommands.append(_command_doc(sub, sub.context_class(sub, info_name=name, parent=ctx)))
    return doc


def cli_commands() -> CommandDoc:
    """The whole command line, as click sees it: the ``iracdb`` group with its commands and subgroups in order."""
    import typer

    from iracdb.cli import app

    root = typer.main.get_command(app)
    return _command_doc(root, root.context_class(root, info_name="iracdb"))


def column_rows(kind: str) -> list[tuple[str, str, str, str, str]]:
    """The registry's columns of ``kind`` (``image`` or ``aor``): name, type, unit, where it lives, description."""
    from iracdb.columns import AOR_COLUMNS, IMAGE_COLUMNS

    registry = {"image": IMAGE_COLUMNS, "aor": AOR_COLUMNS}[kind]
    rows = []
    for column in registry:
        table = "table"
        if kind == "image":  # the image's own columns, or the aperture's (iracdb.columns.Column.per_aperture)
            table = "aperture_fluxes" if column.per_aperture else "measured_images"
        where = (f"{table}, view" if column.exported else f"{table} only") if column.stored else "view"
        unit = column.unit.replace("pix2", "pix²")
        rows.append((column.name, column.type, unit, where, column.description))
    return rows


@dataclass
class TableDoc:
    """One table of the schema."""

    name: str
    description: str
    columns: list[tuple[str, str, str, str]]  # name, type, key/null, description
    constraints: list[str]


def _column_key(column: Any) -> str:
    parts = []
    if column.primary_key:
        parts.append("PK")
    parts.extend(f"FK {fk.target_fullname}" for fk in column.foreign_keys)
    if column.unique:
        parts.append("unique")
    if not column.nullable and not column.primary_key:
        parts.append("NOT NULL")
    return ", ".join(parts)


def _constraints(table: Any) -> list[str]:
    from sqlalchemy import CheckConstraint, UniqueConstraint

    found = []
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            found.append("unique (" + ", ".join(c.name for c in constraint.columns) + ")")
        elif isinstance(constraint, CheckConstraint):
            found.append(f"check {constraint.sqltext}")
    return sorted(found)


def table_docs() -> list[TableDoc]:
    """Every table of the schema, in dependency order, from the SQLAlchemy models."""
    from sqlalchemy.dialects import sqlite

    from iracdb.db.models import Base

    classes = {mapper.class_.__table__.name: mapper.class_ for mapper in Base.registry.mappers}
    docs = []
    for table in Base.metadata.sorted_tables:
        described = classes.get(table.name)
        description = " ".join(inspect.cleandoc(described.__doc__ or "").split("\n\n")[0].split()) if described else ""
        columns = [(c.name, str(c.type.compile(dialect=sqlite.dialect())), _column_key(c), c.doc or "")
                   for c in table.columns]
        docs.append(TableDoc(table.name, description, columns, _constraints(table)))
    return docs


def view_sql(name: str) -> str:
    """The ``CREATE VIEW`` statement of the view ``name``, as the registry renders it."""
    from iracdb.db import views

    return {views.IMAGE_VIEW: views.image_view_sql, views.AOR_VIEW: views.aor_view_sql}[name]()


def _attribute_docs(module: str) -> dict[tuple[str, str], str]:
    """The ``#:`` comments of a module's attributes, as autodoc reads them."""
    from sphinx.pycode import ModuleAnalyzer

    return {key: " ".join(lines).strip() for key, lines in ModuleAnalyzer.for_module(module).find_attr_docs().items()}


def flag_rows() -> list[tuple[str, str, str, str, str]]:
    """The quality flags: bit, value, name, meaning, and what the bit does to the image's use in its AOR summary."""
    from iracdb.flags import SUMMARY_EXCLUDED, Flag

    docs = _attribute_docs("iracdb.flags")
    rows = []
    for member in Flag:
        if not member or not member.name:
            continue
        if member == Flag.OUTLIER:
            effect = "not used (rejected by the run's rule)"
        elif member & SUMMARY_EXCLUDED:
            effect = "kept out of the summary"
        else:
            effect = "used; the bit is a warning"
        bit = int(member).bit_length() - 1
        rows.append((str(bit), str(int(member)), member.name, docs.get(("Flag", member.name), ""), effect))
    return rows


def flag_sets() -> list[tuple[str, str, str]]:
    """The named sets of bits of :mod:`iracdb.flags`: name, members, meaning."""
    from iracdb import flags

    docs = _attribute_docs("iracdb.flags")
    rows = []
    for name in ("UNUSABLE", "SUMMARY_EXCLUDED", "NOT_USED"):
        value = getattr(flags, name)
        members = ", ".join(m.name for m in flags.Flag if m and m.name and m in value)
        rows.append((name, f"{int(value)} = {members}", docs.get(("", name), "")))
    return rows


def choice_rows() -> list[tuple[str, str, str]]:
    """The closed choices: the registry's name, a value, what it means."""
    from iracdb import choices

    rows = []
    for name in choices.__all__:
        value = getattr(choices, name)
        if isinstance(value, dict):
            rows.extend((name, key, meaning) for key, meaning in value.items())
    return rows


COEFFICIENT_NAMES = ("A", "B", "C", "D", "E", "F", "dFx", "dFy", "X0", "Y0", "sx", "sy", "F0", "q")


def coefficient_sets() -> list[str]:
    """The coefficient sets, as the columns of the coefficient table: ``warm ch1``, ..., ``cryo ch4``."""
    from iracdb.photometry.corrections import COEFFICIENTS

    return [f"{mission} ch{channel}" for mission, channel in COEFFICIENTS]


def coefficient_rows() -> list[tuple[str, ...]]:
    """The pixel-phase x array-location coefficients in effect: one row per coefficient, one column per set
    (:func:`coefficient_sets`): the float32 values the routine holds, each as the shortest decimal that gives it."""
    import numpy as np

    from iracdb.photometry.corrections import COEFFICIENTS

    return [(name, *(str(np.float32(values[index])).removesuffix(".0") for values in COEFFICIENTS.values()))
            for index, name in enumerate(COEFFICIENT_NAMES)]


def aperture_correction_rows() -> list[tuple[str, ...]]:
    """The published aperture corrections shipped with iracdb: mission, radius, annulus, ch1..ch4 factors."""
    from iracdb.photometry.apcorr import PUBLISHED

    rows = []
    for (mission, radius, inner, outer), factors in PUBLISHED.items():
        annulus = f"{inner:g}-{outer:g}" if inner is not None and outer is not None else "(none)"
        rows.append((mission, "infinite" if radius == float("inf") else f"{radius:g}", annulus,
                     *(f"{factors[ch]:g}" if ch in factors else "" for ch in (1, 2, 3, 4))))
    return rows


def pixel_area_rows() -> list[tuple[str, str, str, str]]:
    """The nominal pixel size per channel: width (arcsec), solid angle (sr), and mJy per MJy/sr in one pixel."""
    from iracdb.photometry.units import NOMINAL_PIXEL_ARCSEC, mjy_per_mjy_sr_px, nominal_pixel_sr

    return [(str(channel), f"{width:g}", f"{nominal_pixel_sr(channel):.6g}",
             f"{mjy_per_mjy_sr_px(nominal_pixel_sr(channel)):.6g}")
            for channel, width in NOMINAL_PIXEL_ARCSEC.items()]


# --- layout ---------------------------------------------------------------------------------------------------------


def _cell(value: str, *, code: bool = False) -> nodes.entry:
    entry = nodes.entry()
    if value:
        entry += nodes.paragraph("", "", nodes.literal(value, value) if code else nodes.Text(value))
    return entry


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]], widths: tuple[int, ...],
           code_columns: tuple[int, ...] = (0,), *, numbers: bool = False) -> nodes.table:
    table = nodes.table(classes=["iracdb-generated", *(["iracdb-numbers"] if numbers else [])])
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for header in headers:
        row += _cell(header)
    head += row
    body = nodes.tbody()
    group += body
    for values in rows:
        row = nodes.row()
        for index, value in enumerate(values):
            row += _cell(value, code=index in code_columns)
        body += row
    return table


def _paragraphs(text: str) -> list[nodes.Node]:
    """Help text as paragraphs of plain text (a blank line separates them; click's ``\\b`` keeps line breaks)."""
    found: list[nodes.Node] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip() != "\b"]
        if block.lstrip().startswith("\b"):
            literal = "\n".join(lines)
            found.append(nodes.literal_block(literal, literal))
        elif lines:
            found.append(nodes.paragraph("", " ".join(line.strip() for line in lines)))
    return found


class _Generated(SphinxDirective):
    """A directive whose output depends on the code: the page is rebuilt whenever iracdb's sources change."""

    def note_sources(self, *modules: str) -> None:
        import importlib

        for name in modules:
            source = getattr(importlib.import_module(name), "__file__", None)
            if source:
                self.env.note_dependency(source)


class CliDirective(_Generated):
    """``.. iracdb-cli::``: one section per command, from the click command tree."""

    def run(self) -> list[nodes.Node]:
        self.note_sources("iracdb.cli.app", "iracdb.cli.catalogue", "iracdb.cli.reduction", "iracdb.cli.results",
                          "iracdb.cli.demo", "iracdb.choices")
        root = cli_commands()
        return [self._section(command, title_level=0) for command in root.subcommands]

    def _section(self, command: CommandDoc, title_level: int) -> nodes.section:
        section = nodes.section(ids=[command.anchor], names=[nodes.fully_normalize_name(command.path)])
        section += nodes.title("", "", nodes.literal(command.path, command.path))
        usage = "$ " + command.usage
        section += nodes.literal_block(usage, usage, classes=["iracdb-usage"])
        section.extend(_paragraphs(command.help))
        for kind, title in (("argument", "Arguments"), ("option", "Options")):
            params = [p for p in command.params if p.kind == kind]
            if params:
                section += nodes.rubric("", title)
                section += _table((title.lower().rstrip("s"), "meaning"), [(p.name, p.help) for p in params], (30, 70))
        for sub in command.subcommands:
            section += self._section(sub, title_level + 1)
        return section


class ColumnsDirective(_Generated):
    """``.. iracdb-columns:: image|aor``: the result columns of the registry."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        self.note_sources("iracdb.columns", "iracdb.flags")
        kind = directives.choice(self.arguments[0], ("image", "aor"))
        return [_table(("column", "type", "unit", "where", "meaning"), column_rows(kind), (20, 7, 12, 22, 45))]


class TablesDirective(_Generated):
    """``.. iracdb-tables::``: every table of the schema, one section each."""

    def run(self) -> list[nodes.Node]:
        self.note_sources("iracdb.db.models", "iracdb.columns")
        sections = []
        for doc in table_docs():
            section = nodes.section(ids=[f"table-{doc.name.replace('_', '-')}"], names=[f"table {doc.name}"])
            section += nodes.title("", "", nodes.literal(doc.name, doc.name))
            if doc.description:
                section += nodes.paragraph("", doc.description)
            section += _table(("column", "type", "key", "meaning"), doc.columns, (22, 14, 20, 44), (0, 1))
            if doc.constraints:
                items = nodes.bullet_list()
                for text in doc.constraints:
                    items += nodes.list_item("", nodes.paragraph("", "", nodes.literal(text, text)))
                section += nodes.paragraph("", "Constraints:")
                section += items
            sections.append(section)
        return sections


class ViewSqlDirective(_Generated):
    """``.. iracdb-view-sql:: NAME``: the view's SQL, rendered from the registry."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        self.note_sources("iracdb.db.views", "iracdb.columns", "iracdb.flags")
        sql = view_sql(self.arguments[0])
        block = nodes.literal_block(sql, sql)
        block["language"] = "sql"
        return [block]


class FlagsDirective(_Generated):
    """``.. iracdb-flags::``: the flag registry and its named sets."""

    def run(self) -> list[nodes.Node]:
        self.note_sources("iracdb.flags")
        bits = _table(("bit", "value", "name", "meaning", "in the AOR summary"), flag_rows(), (5, 7, 26, 44, 18),
                      (2,))
        sets = _table(("set", "bits", "meaning"), flag_sets(), (18, 35, 47))
        return [bits, nodes.paragraph("", "The named sets of bits the reduction and the views use:"), sets]


class ChoicesDirective(_Generated):
    """``.. iracdb-choices::``: every closed choice with its meaning."""

    def run(self) -> list[nodes.Node]:
        self.note_sources("iracdb.choices")
        return [_table(("registry", "value", "meaning"), choice_rows(), (25, 15, 60), (0, 1))]


class CoefficientsDirective(_Generated):
    """``.. iracdb-coefficients::``: the correction coefficients of :mod:`iracdb.photometry.corrections`."""

    def run(self) -> list[nodes.Node]:
        self.note_sources("iracdb.photometry.corrections")
        sets = coefficient_sets()
        return [_table(("", *sets), coefficient_rows(), (10, *(15,) * len(sets)), (0,), numbers=True)]


class ApertureCorrectionsDirective(_Generated):
    """``.. iracdb-aperture-corrections::``: the published tables of :mod:`iracdb.photometry.apcorr`."""

    def run(self) -> list[nodes.Node]:
        self.note_sources("iracdb.photometry.apcorr")
        headers = ("mission", "radius px", "annulus px", "ch1", "ch2", "ch3", "ch4")
        return [_table(headers, aperture_correction_rows(), (10, 10, 12, 10, 10, 10, 10), (), numbers=True)]


class PixelAreasDirective(_Generated):
    """``.. iracdb-pixel-areas::``: the nominal pixel solid angles of :mod:`iracdb.photometry.units`."""

    def run(self) -> list[nodes.Node]:
        self.note_sources("iracdb.photometry.units")
        headers = ("channel", "pixel width, arcsec", "solid angle, sr", "mJy per MJy/sr in one pixel")
        return [_table(headers, pixel_area_rows(), (10, 20, 20, 30), ())]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("iracdb-coefficients", CoefficientsDirective)
    app.add_directive("iracdb-aperture-corrections", ApertureCorrectionsDirective)
    app.add_directive("iracdb-pixel-areas", PixelAreasDirective)
    app.add_directive("iracdb-cli", CliDirective)
    app.add_directive("iracdb-columns", ColumnsDirective)
    app.add_directive("iracdb-tables", TablesDirective)
    app.add_directive("iracdb-view-sql", ViewSqlDirective)
    app.add_directive("iracdb-flags", FlagsDirective)
    app.add_directive("iracdb-choices", ChoicesDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
