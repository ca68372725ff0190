"""The column registry: every per-image and per-AOR result column, defined once.

Each :class:`Column` has one name, used everywhere: the ``measurements`` and ``aor_summaries`` tables, the
``image_photometry`` and ``aor_photometry`` views, the exports, the terminal tables, Python results and the README.
Derived from it: the result tables of :mod:`iracdb.db.models`, the views' SQL (:mod:`iracdb.db.views`), the rows the
reduction writes, the export schema (Arrow types, units, descriptions) and the README's column tables.

Adding a per-image column means: a :class:`Column` here, its computation (a field of
:class:`iracdb.photometry.measure.Photometry`, named by ``field``, or the reduction worker's), and one migration that
adds the column and re-creates the views (each migration freezes a copy of the view SQL it ran;
``tests/test_columns.py`` checks that the head migration's copy equals what the registry renders now).

The photometry library names its results with their units (``background_mjy_sr``); the archive's names are the
export's (``sky``), which users' tables and scripts have used since the 2018 pipeline. ``field`` is the one place
that maps the first to the second.

This module is pure: it imports nothing but the flag registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from iracdb.flags import NOT_USED, Flag

#: Storage types: ``bigint`` (AORKEYs), ``int``, ``float`` (float64), ``text``, ``bool`` (views, and ``best``).
ColumnType = Literal["int", "bigint", "float", "text", "bool"]
#: Where a column's values come from:
#:
#: - ``key``: the row's identity, set by the reduction (AOR, channel, exposure, plane, target);
#: - ``time``: the image's middle time, computed by the reduction worker from the headers;
#: - ``photometry``: the :class:`~iracdb.photometry.measure.Photometry` field named by ``field``;
#: - ``summary``: the :class:`~iracdb.summary.AorStats` field of the same name;
#: - ``exposure``: the catalogue's facts of the AOR's first exposure (the ``exposures`` column named by ``field``);
#: - ``run``: the run's resolved choice for the AOR's mission and channel (named by ``field``);
#: - ``best``: the best-aperture choice (:mod:`iracdb.best`), computed by the writer from the per-aperture rows;
#: - ``view``: computed by the view from other columns (its SQL in ``expression``).
Source = Literal["key", "time", "photometry", "summary", "exposure", "run", "best", "view"]


@dataclass(frozen=True)
class Column:
    """One result column.

    Attributes
    ----------
    name : str
        Its one name (storage, views, exports, tables, Python).
    type : {"int", "bigint", "float", "text", "bool"}
        Its storage type (``bool``: computed by a view, never stored).
    unit : str
        An astropy unit string ('' when dimensionless or not a quantity).
    description : str
        What it means, in one line.
    source : str
        Where its values come from (see :data:`Source`).
    field : str
        The name it has where it comes from, when that differs (a ``Photometry`` field, an ``exposures`` column).
    expression : str
        For ``source="view"``: its SQL in the view, over ``m`` (the base table), ``r`` (runs), ``t`` (run_targets),
        ``a`` (run_apertures) and ``i`` (run_inputs).
    exported : bool
        In the view and the exports (False: stored only, e.g. the measured centroid beside the aperture centre).
    nullable : bool
        Whether storage allows NULL (a value that could not be measured is NULL, never NaN).
    per_aperture : bool
        A stored image column that differs between the apertures of one image (background, sums, fluxes, flags),
        kept in ``aperture_fluxes``; the others are the image's own (time, centroid, widths, noise pixels,
        pixel-phase correction: one value per image, target and centroid method), kept once in
        ``measured_images`` however many apertures the run has. ``measurements`` joins the two.
    terminal : int
        Its place in the terminal's per-AOR table (``iracdb summary``, ``iracdb reduce``), most useful first, so
        that a narrow terminal shows the fluxes before the catalogue's facts; 0: not in it (csv and json show all).
    length : int or None
        A ``VARCHAR(length)`` for a short text iracdb itself chooses; None: unbounded text.
    """

    name: str
    type: ColumnType
    unit: str
    description: str
    source: Source
    field: str = ""
    expression: str = ""
    exported: bool = True
    nullable: bool = True
    length: int | None = None
    per_aperture: bool = False
    terminal: int = 0

    @property
    def stored(self) -> bool:
        """A column of the base table (``measurements`` or ``aor_summaries``); the others are computed by the view."""
        return self.source != "view"

    @property
    def origin(self) -> str:
        """The name it has where it comes from (``field``, else its own name)."""
        return self.field or self.name


def _key(name: str, description: str, type_: ColumnType = "int", *, terminal: int = 0) -> Column:
    return Column(name, type_, "", description, "key", nullable=False, terminal=terminal)


def _phot(name: str, field: str, unit: str, description: str, type_: ColumnType = "float", *,
          exported: bool = True, per_aperture: bool = False) -> Column:
    return Column(name, type_, unit, description, "photometry", field=field, exported=exported,
                  per_aperture=per_aperture)


def _flux(name: str, field: str, unit: str, description: str, type_: ColumnType = "float", *,
          exported: bool = True) -> Column:
    """A photometry column of one aperture (see :attr:`Column.per_aperture`)."""
    return _phot(name, field, unit, description, type_, exported=exported, per_aperture=True)


def _flag_columns() -> tuple[Column, ...]:
    return tuple(
        Column(f"flag_{member.name.lower()}", "bool", "", (member.__doc__ or "").strip() or member.name.lower(), "view",
               expression=f"(m.flags & {int(member)}) <> 0")
        for member in Flag if member and member.name
    )


_RUN = Column("run", "text", "", "name of the reduction run", "view", expression="r.name")
_TARGET = Column("target", "text", "", "target name (as given, or 'auto')", "view", expression="t.name")
#: The aperture of a run's grid a row belongs to: its number and what it is (from ``run_apertures``).
_APERTURE = (
    Column("aperture_id", "int", "", "0, 1, ... the aperture (radius, annulus, centroid method) in the run's grid",
           "key", nullable=False, per_aperture=True),
    Column("radius_px", "float", "pix", "aperture radius (empty for a variable, noise-pixel-scaled aperture: see "
           "radius_spec)", "view", expression="a.radius_px"),
    Column("radius_spec", "text", "", "aperture radius as given: a number of pixels, or beta:SCALE:OFFSET for "
           "r = SCALE x sqrt(noise pixels) + OFFSET", "view", expression="a.radius_spec"),
    Column("annulus_in_px", "float", "pix", "inner radius of the background annulus", "view",
           expression="a.annulus_in_px"),
    Column("annulus_out_px", "float", "pix", "outer radius of the background annulus", "view",
           expression="a.annulus_out_px"),
    Column("centroid", "text", "", "centroid method (moment, gauss, ...)", "view", expression="a.centroid"),
)

#: ``measurements`` and the ``image_photometry`` view: one row per measured image (a full-array frame, one subarray
#: plane, or a cube's median) and target. Positions are 0-based pixels, the centre of the bottom-left pixel at (0, 0).
IMAGE_COLUMNS: tuple[Column, ...] = (
    _RUN,
    _key("aorkey", "AORKEY: the astronomical observation request", "bigint"),
    _key("channel", "IRAC channel 1-4"),
    _TARGET,
    _key("target_index", "0, 1, ... in the order the run's targets were given"),
    *_APERTURE,
    _key("expid", "EXPID: exposure number within the AOR"),
    _key("dcenum", "DCENUM: data collection event number"),
    _key("plane", "subarray plane 0-63; 0 for a full-array frame or a cube median"),
    _key("n_combined", "planes combined into the image (64 for a cube median, else 1)"),
    Column("file", "text", "", "path of the science file measured", "view", expression="i.path"),
    Column("mjd", "float", "d", "middle of the image, MJD (UTC)", "time"),
    Column("bmjd", "float", "d", "middle of the image, barycentric MJD (UTC scale, as BMJD_OBS)", "time"),
    Column("bmjd_tdb", "float", "d", "middle of the image, barycentric MJD on the TDB scale (BMJD_TDB: bmjd with the "
           "leap seconds, 32.184 s and TDB-TT added)", "time"),
    _phot("xc", "x", "pix", "x of the aperture centre in the image itself (subarray pixels for subarray data)"),
    _phot("yc", "y", "pix", "y of the aperture centre in the image itself"),
    _phot("xc_full", "x_full", "pix", "x of the aperture centre on the full 256x256 array"),
    _phot("yc_full", "y_full", "pix", "y of the aperture centre on the full 256x256 array"),
    _phot("x_expected", "x_expected", "pix", "x where the target was expected (from the WCS), image pixels"),
    _phot("y_expected", "y_expected", "pix", "y where the target was expected, image pixels"),
    _phot("shift_px", "shift_px", "pix", "distance of the centroid from the expected position"),
    _phot("fwhm_x", "fwhm_x_px", "pix", "FWHM of the source along x"),
    _phot("fwhm_y", "fwhm_y_px", "pix", "FWHM of the source along y"),
    _phot("noise_pixels", "noise_pixels", "pix2", "noise pixels (sum I)^2 / sum(I^2) of the background-subtracted 7x7 "
          "box about the centroid (the IRAC team's box_centroider convention)"),
    _flux("sky", "background_mjy_sr", "MJy/sr", "background per pixel from the annulus"),
    _flux("sky_err", "background_err_mjy_sr", "MJy/sr", "1-sigma error of the background per pixel"),
    _flux("sky_npix", "background_npix", "", "annulus pixels used for the background", "int"),
    _flux("aperture_area", "aperture_area_px", "pix2", "usable aperture area (masked and NaN pixels excluded)"),
    _flux("raw_flux", "raw_sum_mjy_sr", "MJy pix2 / sr",
          "aperture sum before background subtraction (MJy/sr summed over pixels)"),
    _flux("raw_flux_err", "raw_sum_err_mjy_sr", "MJy pix2 / sr", "1-sigma error of raw_flux"),
    _flux("net_flux", "net_sum_mjy_sr", "MJy pix2 / sr",
          "aperture sum minus the background (MJy/sr summed over pixels)"),
    _flux("net_flux_err", "net_sum_err_mjy_sr", "MJy pix2 / sr", "1-sigma error of net_flux"),
    _phot("correction", "correction_factor", "", "pixel-phase x array-location correction, a divisor: "
          "flux_mjy = net_flux x pixel solid angle [sr] x 1e9 x ap_corr / correction"),
    _flux("ap_corr", "aperture_correction", "", "multiplicative aperture correction applied (1 with "
          "flag_no_aperture_correction when none was applied)"),
    _flux("flux_mjy", "flux_mjy", "mJy", "corrected flux density"),
    _flux("flux_err_mjy", "flux_err_mjy", "mJy", "1-sigma photometric error of flux_mjy"),
    Column("flags", "int", "", "quality bits (iracdb.flags.Flag); decoded in the flag_* columns", "photometry",
           nullable=False, per_aperture=True),
    Column("used", "bool", "", "true when the image entered its AOR's summary (no excluding flag, not an outlier)",
           "view", expression=f"((m.flags & {int(NOT_USED)}) = 0 AND m.flux_mjy IS NOT NULL)"),
    *_flag_columns(),
    # Stored, not exported: the measured centroid (xc, yc is where the aperture was placed) and the annulus scatter.
    _phot("x_centroid", "x_centroid", "pix", "x of the measured centroid, image pixels (NULL if it failed)",
          exported=False),
    _phot("y_centroid", "y_centroid", "pix", "y of the measured centroid, image pixels", exported=False),
    _flux("sky_std", "background_std_mjy_sr", "MJy/sr", "standard deviation of the annulus pixels used",
          exported=False),
)


def _summary(name: str, unit: str, description: str, type_: ColumnType = "float", *, nullable: bool = True,
             terminal: int = 0) -> Column:
    return Column(name, type_, unit, description, "summary", nullable=nullable, terminal=terminal)


def _exposure(name: str, field: str, type_: ColumnType, unit: str, description: str, length: int | None = None,
              *, terminal: int = 0) -> Column:
    return Column(name, type_, unit, description, "exposure", field=field, length=length, terminal=terminal)


#: ``aor_summaries`` and the ``aor_photometry`` view: one row per AOR x channel x target of a run.
AOR_COLUMNS: tuple[Column, ...] = (
    _RUN,
    _key("aorkey", "AORKEY", "bigint", terminal=1),
    _key("channel", "IRAC channel 1-4", terminal=2),
    Column("target", "text", "", "target name", "view", expression="t.name", terminal=3),
    _key("target_index", "0, 1, ... in the order the run's targets were given"),
    *_APERTURE,
    _exposure("object", "object", "text", "", "OBJECT of the AOR's first exposure", terminal=13),
    _exposure("date_obs", "date_obs", "text", "", "DATE_OBS of the AOR's first exposure (UTC, ISO 8601)",
              terminal=16),
    _summary("mjd", "d", "mean time of the used images, MJD (UTC)"),
    _summary("bmjd", "d", "mean time of the used images, barycentric MJD"),
    _summary("first_mjd", "d", "time of the first image, MJD (UTC)"),
    _exposure("mission", "mission", "text", "", "cryo or warm", length=8, terminal=14),
    _exposure("read_mode", "read_mode", "text", "", "READMODE: FULL or SUB", terminal=15),
    _exposure("frame_time_s", "frame_time_s", "float", "s", "FRAMTIME: frame time"),
    _exposure("exposure_time_s", "exposure_time_s", "float", "s", "EXPTIME: effective exposure time"),
    _exposure("dither_scale", "dither_scale", "text", "", "DITHSCAL (empty when not dithered)"),
    _exposure("dither_positions", "dither_pos", "int", "", "number of distinct DITHPOS values"),
    _exposure("cycles", "cycle_num", "int", "", "largest CYCLENUM"),
    _summary("n_total", "", "images measured", "int", nullable=False, terminal=8),
    _summary("n_used", "", "images in the statistics", "int", nullable=False, terminal=7),
    _summary("n_rejected", "", "images rejected as outliers by reject_rule", "int", nullable=False, terminal=11),
    _summary("n_flagged", "", "images kept out by their quality flags", "int", nullable=False, terminal=12),
    _summary("reject_rule", "", "outlier rule: none, minmax or sigma:N", "text", nullable=False),
    _summary("flux_mjy", "mJy", "mean flux density of the used images", terminal=4),
    _summary("median_flux_mjy", "mJy", "median flux density of the used images", terminal=10),
    _summary("std_mjy", "mJy", "sample standard deviation of the used images' fluxes", terminal=9),
    _summary("flux_err_mjy", "mJy", "error of the mean, std_mjy / sqrt(n_used)", terminal=5),
    _summary("mean_image_err_mjy", "mJy", "mean per-image photometric error"),
    _summary("spread_pct", "%", "100 x std_mjy / flux_mjy", terminal=6),
    Column("correction", "text", "", "photometric correction applied, e.g. irac_aphot_corr:warm", "run",
           field="correction", nullable=False),
    Column("ap_corr", "float", "", "aperture correction applied (empty: none)", "run", field="aperture_correction"),
    Column("score", "float", "", "the run's best-aperture criterion for this aperture (best_by in the run's "
           "parameters; lower is better; ppm)", "best"),
    Column("best", "bool", "", "true for the one aperture of the AOR, channel and target with the lowest score "
           "(ties: the smaller radius)", "best", nullable=False),
)


def names(columns: tuple[Column, ...], *, exported: bool = True) -> tuple[str, ...]:
    """The names of ``columns``: the exported ones (view and export order), or with ``exported=False`` all."""
    return tuple(c.name for c in columns if c.exported or not exported)


def markdown_table(columns: tuple[Column, ...]) -> str:
    """The README's table of the exported columns (no ``run``; the ``flag_*`` columns in one row)."""
    lines = ["| column | unit | meaning |", "|---|---|---|"]
    flags = [c.name for c in columns if c.name.startswith("flag_")]
    for column in columns:
        if column.exported and column.name != "run" and not column.name.startswith("flag_"):
            lines.append(f"| `{column.name}` | {column.unit.replace('pix2', 'pix²')} | {column.description} |")
    if flags:
        lines.append(f"| `{flags[0]}`, `{flags[1]}`, ... `{flags[-1]}` | | one boolean per bit of `flags`, named after "
                     "the [quality flags](#quality-flags) |")
    return "\n".join(lines) + "\n"


IMAGE_COLUMN_NAMES: tuple[str, ...] = names(IMAGE_COLUMNS)
AOR_COLUMN_NAMES: tuple[str, ...] = names(AOR_COLUMNS)

__all__ = [
    "AOR_COLUMNS",
    "AOR_COLUMN_NAMES",
    "IMAGE_COLUMNS",
    "IMAGE_COLUMN_NAMES",
    "Column",
    "ColumnType",
    "Source",
    "markdown_table",
    "names",
]

if __name__ == "__main__":  # python -m iracdb.columns: the README's column tables
    for title, registry in (("RUN_aor_data", AOR_COLUMNS), ("RUN_img_data", IMAGE_COLUMNS)):
        print(f"<!-- columns:{title} -->\n{markdown_table(registry)}<!-- /columns:{title} -->\n")
