"""SQLAlchemy 2.0 models of the iracdb catalogue.

Only Alembic creates or changes the schema (``migrations/``); these models describe it, and ``iracdb db check``
verifies that models and migrations agree. Physical quantities carry their unit in the column name
(``_s`` seconds, ``_deg`` degrees, ``_arcsec``, ``_mjy_sr`` MJy/sr, ``mjd`` days); times of observation are MJD (UTC)
as in the headers.

Strings copied from FITS headers, and paths, are ``Text``: PostgreSQL enforces ``VARCHAR(n)`` lengths (SQLite does
not), and no real file may be refused because a keyword is longer than we guessed. ``String(n)`` is kept only for
values iracdb itself chooses (kind, mission, checksums). CHECK constraints hold the closed sets (channel, kind,
mission) on both backends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from iracdb.choices import CHANNELS, MISSIONS
from iracdb.columns import AOR_COLUMNS, IMAGE_COLUMNS
from iracdb.columns import Column as RegistryColumn
from iracdb.fitsio import KINDS

# Stable constraint names on both backends (and for Alembic batch mode on SQLite).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Every model here maps a Table (SQLAlchemy types __table__ as any FromClause).
    __table__: ClassVar[Table]


def _one_of(column: str, values: tuple[int, ...] | tuple[str, ...]) -> CheckConstraint:
    """CHECK that ``column`` is one of ``values`` (named ``ck_<table>_<column>`` by the naming convention)."""
    listed = ", ".join(repr(value) for value in values)  # ints as 1, strings as 'bcd': valid SQL on both backends
    return CheckConstraint(f"{column} IN ({listed})", name=column)


class Aor(Base):
    """One Astronomical Observation Request (AORKEY), with what is common to its exposures."""

    __tablename__ = "aors"
    __table_args__ = (_one_of("mission", MISSIONS),)

    aorkey: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    object: Mapped[str | None] = mapped_column(Text)
    aor_label: Mapped[str | None] = mapped_column(Text)
    program_id: Mapped[int | None] = mapped_column(Integer, index=True)
    aot_type: Mapped[str | None] = mapped_column(Text)
    read_mode: Mapped[str | None] = mapped_column(Text, doc="READMODE: 'FULL' or 'SUB'")
    mission: Mapped[str | None] = mapped_column(String(8), doc="'cryo' (MJD_OBS <= 54968) or 'warm'")
    first_mjd: Mapped[float | None] = mapped_column(Float, doc="earliest MJD_OBS of its exposures [days, UTC]")
    last_mjd: Mapped[float | None] = mapped_column(Float, doc="latest MJD_OBS of its exposures [days, UTC]")
    first_date_obs: Mapped[str | None] = mapped_column(Text, doc="DATE_OBS of the first exposure (UTC)")
    last_date_obs: Mapped[str | None] = mapped_column(Text, doc="DATE_OBS of the last exposure (UTC)")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    exposures: Mapped[list[Exposure]] = relationship(back_populates="aor")


class Exposure(Base):
    """One exposure (DCE) of one channel; a subarray exposure is a cube of ``n_planes`` planes."""

    __tablename__ = "exposures"
    __table_args__ = (
        UniqueConstraint("aorkey", "channel", "expid", "dcenum"),
        _one_of("channel", CHANNELS),
        _one_of("mission", MISSIONS),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    aorkey: Mapped[int] = mapped_column(ForeignKey("aors.aorkey", ondelete="CASCADE"))
    channel: Mapped[int] = mapped_column(Integer, doc="CHNLNUM, 1..4")
    expid: Mapped[int] = mapped_column(Integer)
    dcenum: Mapped[int] = mapped_column(Integer)
    dceid: Mapped[int | None] = mapped_column(BigInteger)
    dpid: Mapped[int | None] = mapped_column(BigInteger, index=True, doc="DPID of the BCD: links sub2d products")
    sos_ver: Mapped[int | None] = mapped_column(Integer)
    creator: Mapped[str | None] = mapped_column(Text, doc="CREATOR: pipeline version, e.g. S19.2.0")
    object: Mapped[str | None] = mapped_column(Text)
    fovname: Mapped[str | None] = mapped_column(Text)
    read_mode: Mapped[str | None] = mapped_column(Text, doc="READMODE: 'FULL' or 'SUB'")
    areadmod: Mapped[int | None] = mapped_column(Integer, doc="AREADMOD: 0 full array, 1 subarray")
    hdr_mode: Mapped[bool | None] = mapped_column(Boolean, doc="HDRMODE: high-dynamic-range mode")
    hdr_frame: Mapped[str | None] = mapped_column(Text, doc="HDRFRAME: 'short' or 'long' HDR frame")
    cycle_num: Mapped[int | None] = mapped_column(Integer, doc="CYCLENUM (absent when not dithered)")
    dither_pos: Mapped[int | None] = mapped_column(Integer, doc="DITHPOS (absent when not dithered)")
    dither_scale: Mapped[str | None] = mapped_column(Text, doc="DITHSCAL (absent when not dithered)")
    mission: Mapped[str] = mapped_column(String(8), doc="'cryo' (MJD_OBS <= 54968) or 'warm'")
    date_obs: Mapped[str | None] = mapped_column(Text, doc="DATE_OBS at DCE start (UTC, ISO 8601)")
    mjd_obs: Mapped[float] = mapped_column(Float, doc="MJD_OBS at DCE start [days, UTC]")
    bmjd_obs: Mapped[float | None] = mapped_column(Float, doc="BMJD_OBS, barycentric MJD at DCE start [days]")
    hmjd_obs: Mapped[float | None] = mapped_column(Float, doc="HMJD_OBS, heliocentric MJD at DCE start [days]")
    aintbeg_s: Mapped[float | None] = mapped_column(Float, doc="AINTBEG [s since IRAC turn-on]")
    atimeend_s: Mapped[float | None] = mapped_column(Float, doc="ATIMEEND [s since IRAC turn-on]")
    frame_time_s: Mapped[float | None] = mapped_column(Float, doc="FRAMTIME [s]")
    exposure_time_s: Mapped[float | None] = mapped_column(Float, doc="EXPTIME, effective integration [s]")
    sample_time_s: Mapped[float | None] = mapped_column(Float, doc="SAMPTIME [s]")
    fowler_number: Mapped[int | None] = mapped_column(Integer, doc="AFOWLNUM")
    bunit: Mapped[str | None] = mapped_column(Text)
    fluxconv: Mapped[float | None] = mapped_column(Float, doc="FLUXCONV [(MJy/sr)/(DN/s)]")
    gain_e_per_dn: Mapped[float | None] = mapped_column(Float, doc="GAIN [e/DN]")
    read_noise_e: Mapped[float | None] = mapped_column(Float, doc="RONOISE [electrons]")
    zody_est_mjy_sr: Mapped[float | None] = mapped_column(Float, doc="ZODY_EST [MJy/sr]")
    ism_est_mjy_sr: Mapped[float | None] = mapped_column(Float, doc="ISM_EST [MJy/sr]")
    crval1_deg: Mapped[float | None] = mapped_column(Float)
    crval2_deg: Mapped[float | None] = mapped_column(Float)
    crpix1: Mapped[float | None] = mapped_column(Float, doc="CRPIX1 (FITS 1-based pixel)")
    crpix2: Mapped[float | None] = mapped_column(Float, doc="CRPIX2 (FITS 1-based pixel)")
    ra_ref_deg: Mapped[float | None] = mapped_column(Float, doc="RA_REF, commanded RA (J2000) [deg]")
    dec_ref_deg: Mapped[float | None] = mapped_column(Float, doc="DEC_REF, commanded Dec (J2000) [deg]")
    ra_rqst_deg: Mapped[float | None] = mapped_column(Float, doc="RA_RQST [deg]")
    dec_rqst_deg: Mapped[float | None] = mapped_column(Float, doc="DEC_RQST [deg]")
    pm_ra_arcsec_yr: Mapped[float | None] = mapped_column(Float, doc="PM_RA [arcsec/yr]")
    pm_dec_arcsec_yr: Mapped[float | None] = mapped_column(Float, doc="PM_DEC [arcsec/yr]")
    pa_deg: Mapped[float | None] = mapped_column(Float, doc="PA, position angle of axis 2 E of N [deg]")
    pxscal1_arcsec: Mapped[float | None] = mapped_column(Float, doc="PXSCAL1 [arcsec/px]")
    pxscal2_arcsec: Mapped[float | None] = mapped_column(Float, doc="PXSCAL2 [arcsec/px]")
    rms_jitter_arcsec: Mapped[float | None] = mapped_column(Float, doc="RMS_JIT [arcsec]")
    pointing_diff_arcsec: Mapped[float | None] = mapped_column(Float, doc="PTGDIFF [arcsec]")
    naxis1: Mapped[int | None] = mapped_column(Integer, doc="image width [px]")
    naxis2: Mapped[int | None] = mapped_column(Integer, doc="image height [px]")
    n_planes: Mapped[int] = mapped_column(Integer, doc="NAXIS3 for a subarray cube, else 1")
    header_source_kind: Mapped[str] = mapped_column(String(8), doc="kind of the file these columns came from")

    aor: Mapped[Aor] = relationship(back_populates="exposures")
    files: Mapped[list[File]] = relationship(back_populates="exposure")


class File(Base):
    """One catalogued FITS file, linked to its exposure, with its whole primary header."""

    __tablename__ = "files"
    # The unique (exposure_id, kind) index also serves lookups by exposure_id alone: no separate index.
    __table_args__ = (UniqueConstraint("exposure_id", "kind"), _one_of("kind", KINDS))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exposure_id: Mapped[int] = mapped_column(ForeignKey("exposures.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text, unique=True, doc="absolute path")
    kind: Mapped[str] = mapped_column(String(8), doc="bcd, cbcd, bunc, cbunc, bimsk, sub2d, unc2d, cov2d or msk2d")
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger, doc="modification time [ns since the Unix epoch]")
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    header_text: Mapped[str] = mapped_column(Text, doc="the primary header, one card per line, trailing blanks removed")
    n_header_cards: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Indexed: deleting an ingest event sets this to NULL, which must not scan the whole table.
    ingest_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_events.id", ondelete="SET NULL"), index=True)

    exposure: Mapped[Exposure] = relationship(back_populates="files")


class RejectedFile(Base):
    """A file the last ingest that saw it could not catalogue, with the reason."""

    __tablename__ = "rejected_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True, doc="absolute path")
    reason: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger, doc="modification time [ns since the Unix epoch]")
    rejected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ingest_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_events.id", ondelete="SET NULL"), index=True)


class IngestEvent(Base):
    """One run of ``iracdb ingest``: what it looked at and what it did."""

    __tablename__ = "ingest_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    roots: Mapped[str] = mapped_column(Text, doc="JSON list of the absolute paths given")
    n_seen: Mapped[int] = mapped_column(Integer, default=0)
    n_new: Mapped[int] = mapped_column(Integer, default=0)
    n_updated: Mapped[int] = mapped_column(Integer, default=0)
    n_moved: Mapped[int] = mapped_column(Integer, default=0)
    n_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    n_rejected: Mapped[int] = mapped_column(Integer, default=0)
    software_version: Mapped[str] = mapped_column(String(40))
    host: Mapped[str | None] = mapped_column(String(255))
    workers: Mapped[int] = mapped_column(Integer, default=1)


# --- Reduction runs (``iracdb reduce``) -------------------------------------------------------------------------
#: The states of a run: ``running`` while (or if killed while) a process reduces it, ``complete`` when every AOR is
#: written, ``interrupted`` after Ctrl-C, ``failed`` after an unexpected error (the message says which).
RUN_STATUSES = ("running", "complete", "interrupted", "failed")
#: A run's work units: ``pending`` until its rows and summaries are committed, in one transaction, as ``complete``.
UNIT_STATUSES = ("pending", "complete")

#: Row ids of the big tables: BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY is the rowid.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class Run(Base):
    """A named reduction: its parameters (as given and as resolved), provenance and state. Immutable once created,
    except for its state, counts and end time."""

    __tablename__ = "runs"
    __table_args__ = (_one_of("status", RUN_STATUSES),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(String(12))
    params_json: Mapped[str] = mapped_column(Text, doc="the parameters as given (canonical JSON)")
    params_hash: Mapped[str] = mapped_column(String(64), doc="SHA-256 of params_json: same hash, same parameters")
    resolved_json: Mapped[str] = mapped_column(
        Text, doc="the parameters as resolved: corrections and aperture correction per mission and channel, targets"
    )
    software_version: Mapped[str] = mapped_column(String(40), doc="iracdb version")
    git_revision: Mapped[str | None] = mapped_column(String(64), doc="git commit of the iracdb source, if any")
    versions_json: Mapped[str] = mapped_column(Text, doc="python, numpy, astropy, photutils, sqlalchemy, ... versions")
    host: Mapped[str | None] = mapped_column(Text)
    user_name: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(
        Integer, doc="process that last ran it (tells a live run from a killed one)"
    )
    command_line: Mapped[str | None] = mapped_column(Text, doc="the command that created it (passwords masked)")
    execution: Mapped[str | None] = mapped_column(Text, doc="how it last ran: serial, processes:N, dask:ADDRESS")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), doc="start of the last (resumed) execution")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    n_units: Mapped[int] = mapped_column(Integer, doc="AOR x channel units planned")
    n_units_done: Mapped[int] = mapped_column(Integer)
    n_images: Mapped[int] = mapped_column(Integer, doc="image rows written (planes x targets)")
    n_flagged: Mapped[int] = mapped_column(Integer, doc="image rows with a bit that keeps them out of the summary")
    n_outliers: Mapped[int] = mapped_column(Integer, doc="image rows rejected by the outlier rule")
    message: Mapped[str | None] = mapped_column(Text, doc="why it failed or was interrupted; notes")


class RunTarget(Base):
    """A target of a run: fixed sky coordinates (for every AOR, or for one AOR or object), or ``auto``."""

    __tablename__ = "run_targets"
    __table_args__ = (UniqueConstraint("run_id", "target_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    target_index: Mapped[int] = mapped_column(Integer, doc="0, 1, ... in the order given")
    name: Mapped[str] = mapped_column(Text)
    ra_deg: Mapped[float | None] = mapped_column(Float, doc="ICRS right ascension [deg]; NULL for auto")
    dec_deg: Mapped[float | None] = mapped_column(Float, doc="ICRS declination [deg]; NULL for auto")
    aorkey: Mapped[int | None] = mapped_column(BigInteger, doc="only this AOR (from a targets file)")
    object: Mapped[str | None] = mapped_column(Text, doc="only AORs whose OBJECT matches (from a targets file)")


class RunUnit(Base):
    """One work unit of a run, an AOR's images of one channel: pending, or complete with its rows committed."""

    __tablename__ = "run_units"
    __table_args__ = (UniqueConstraint("run_id", "aorkey", "channel"), _one_of("status", UNIT_STATUSES))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    aorkey: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12))
    n_exposures: Mapped[int] = mapped_column(Integer)
    n_images: Mapped[int | None] = mapped_column(Integer, doc="image rows written")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RunInput(Base):
    """A file that went into a run, as it was when read (path, size, SHA-256 from the catalogue)."""

    __tablename__ = "run_inputs"
    __table_args__ = (UniqueConstraint("run_id", "path"), _one_of("kind", KINDS))

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    exposure_id: Mapped[int | None] = mapped_column(ForeignKey("exposures.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class RunAperture(Base):
    """One aperture of a run's grid: radius (fixed or noise-pixel-scaled), background annulus, centroid method and
    the aperture correction resolved for it. A run made before grids existed has one, aperture 0."""

    __tablename__ = "run_apertures"
    __table_args__ = (UniqueConstraint("run_id", "aperture_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    aperture_id: Mapped[int] = mapped_column(Integer, doc="0, 1, ... in the grid's order (centroid, annulus, radius)")
    radius_px: Mapped[float | None] = mapped_column(Float, doc="aperture radius [pixels]; NULL for a variable one")
    radius_spec: Mapped[str] = mapped_column(Text, doc="the radius as given: '3' or 'beta:SCALE:OFFSET'")
    annulus_in_px: Mapped[float] = mapped_column(Float, doc="inner radius of the background annulus [pixels]")
    annulus_out_px: Mapped[float] = mapped_column(Float, doc="outer radius of the background annulus [pixels]")
    centroid: Mapped[str] = mapped_column(Text, doc="centroid method")
    aperture_correction_json: Mapped[str] = mapped_column(
        Text, doc="the aperture correction applied, per mission and channel: value (null: none) and its source (JSON)"
    )


def _result_columns(columns: tuple[RegistryColumn, ...]) -> list[Column[Any]]:
    """The stored columns of a result table, from the column registry (name, type, NULL-ability, description)."""
    types = {"int": Integer, "bigint": BigInteger, "float": Float, "bool": Boolean}
    return [
        Column(c.name, types[c.type]() if c.type in types else (String(c.length) if c.length else Text()),
               nullable=c.nullable, doc=f"{c.description} [{c.unit}]" if c.unit else c.description)
        for c in columns if c.stored
    ]


#: The stored image columns of one image, target and centroid method (``measured_images``) and of one aperture
#: (``aperture_fluxes``), from the registry (:attr:`iracdb.columns.Column.per_aperture`).
IMAGE_LEVEL_COLUMNS: tuple[RegistryColumn, ...] = tuple(c for c in IMAGE_COLUMNS if c.stored and not c.per_aperture)
APERTURE_LEVEL_COLUMNS: tuple[RegistryColumn, ...] = tuple(c for c in IMAGE_COLUMNS if c.stored and c.per_aperture)


class MeasuredImage(Base):
    """One measured image of a run (a full-array frame, a subarray plane or a cube's median) for one target and one
    centroid method: its time, the centroid and the aperture centre, widths, noise pixels and the pixel-phase
    correction, stored once however many apertures of the run's grid share that centroid method.

    The result columns are the image-level ones of :data:`iracdb.columns.IMAGE_COLUMNS`, with their units there;
    each aperture's background, sums, fluxes and flags are rows of ``aperture_fluxes``. The ``measurements`` view
    joins the two into one row per image, target and aperture.
    """

    __table__ = Table(
        "measured_images",
        Base.metadata,
        Column("id", _BIG_ID, primary_key=True),
        Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("exposure_id", ForeignKey("exposures.id", ondelete="SET NULL"), index=True),
        Column("input_id", ForeignKey("run_inputs.id", ondelete="CASCADE"), index=True,
               doc="the science file measured"),
        Column("centroid", Text, nullable=False, doc="centroid method (the run_apertures.centroid of its apertures)"),
        *_result_columns(IMAGE_LEVEL_COLUMNS),
        UniqueConstraint("run_id", "aorkey", "channel", "expid", "dcenum", "plane", "target_index", "centroid",
                         name="uq_measured_images_key"),
    )


class ApertureFlux(Base):
    """One aperture of the run's grid on one measured image: background, sums, corrections, flux and flags.

    Keyed by the image row and the aperture (no other index: a grid writes one of these per image and aperture,
    so each index is paid 30 times for a 30-aperture grid). On SQLite a WITHOUT ROWID table, stored in key order.
    Deleting an image row deletes its aperture rows (a trigger: see ``image_id``).
    """

    __table__ = Table(
        "aperture_fluxes",
        Base.metadata,
        # No foreign key: PostgreSQL checks one with a query per inserted row (1.1 s of the 1.7 s of writing a
        # 30-aperture grid's 192,000 rows). The writer inserts an image's aperture rows with it in one transaction,
        # and a trigger made by migration 0007 deletes them with it (as ON DELETE CASCADE would).
        Column("image_id", _BIG_ID, nullable=False, doc="the measured_images row (id) this aperture was measured on"),
        *_result_columns(APERTURE_LEVEL_COLUMNS),
        PrimaryKeyConstraint("image_id", "aperture_id"),
        sqlite_with_rowid=False,
    )


#: The ``measurements`` view (``measured_images`` joined with ``aperture_fluxes``): one row per image, target and
#: aperture, with every stored image column. It is a view, made by the migrations, so it lives in a MetaData of its
#: own that no schema check compares; queries may select from it like a table.
VIEW_METADATA = MetaData()
MEASUREMENTS = Table(
    "measurements",
    VIEW_METADATA,
    Column("run_id", Integer, nullable=False),
    Column("exposure_id", Integer),
    Column("input_id", BigInteger),
    *_result_columns(tuple(c for c in IMAGE_COLUMNS if c.stored)),
)


class AorSummary(Base):
    """The per-AOR result of a run: one row per (AOR, channel, target, aperture), from the images that were used.

    The result columns are :data:`iracdb.columns.AOR_COLUMNS` (stored ones).
    """

    __table__ = Table(
        "aor_summaries",
        Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        *_result_columns(AOR_COLUMNS),
        UniqueConstraint("run_id", "aorkey", "channel", "target_index", "aperture_id", name="uq_aor_summaries_key"),
    )
