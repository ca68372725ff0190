"""measurements split by level: measured_images (once per image, target and centroid method) and aperture_fluxes
(once per aperture); ``measurements`` becomes the view that joins them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:00:00

A grid run of N apertures used to store the image's own values (time, centroid, widths, noise pixels, pixel-phase
correction) N times over, in a table with four indexes: writing its rows cost 5-8 us each and a 30-aperture grid
5-9x a one-aperture run. Now the image's values are a row of ``measured_images`` (keyed by run, AOR, channel,
exposure, plane, target and centroid method) and each aperture's background, sums, fluxes and flags a row of
``aperture_fluxes`` (keyed by the image row and the aperture, its only index; no foreign key, whose check per row
cost more than the row, but a trigger that deletes an image's aperture rows with it). ``measurements`` is a view
with the old table's columns (less its ``id``), so queries of it, ``image_photometry`` and the exports are
unchanged.

Existing rows are moved: an image's values are taken from its row of the lowest aperture of each centroid method
(every aperture of an image shares them: they are computed once per image and centroid method), its id is its
unit's id x 2^32 + its place in the unit's canonical order (as the writer gives them, so that reading a run in id
order is reading it in order), and the move checks that every row arrived. Rows of an AOR and channel that has
no ``run_units`` row (none that iracdb wrote) get one, marked complete. Downgrading rebuilds the table from the
view. The view SQL is frozen here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (name, type, nullable) of the image's own columns and of each aperture's, as this revision stores them.
IMAGE_LEVEL = (
    ('aorkey', 'bigint', False),
    ('channel', 'int', False),
    ('target_index', 'int', False),
    ('expid', 'int', False),
    ('dcenum', 'int', False),
    ('plane', 'int', False),
    ('n_combined', 'int', False),
    ('mjd', 'float', True),
    ('bmjd', 'float', True),
    ('bmjd_tdb', 'float', True),
    ('xc', 'float', True),
    ('yc', 'float', True),
    ('xc_full', 'float', True),
    ('yc_full', 'float', True),
    ('x_expected', 'float', True),
    ('y_expected', 'float', True),
    ('shift_px', 'float', True),
    ('fwhm_x', 'float', True),
    ('fwhm_y', 'float', True),
    ('noise_pixels', 'float', True),
    ('correction', 'float', True),
    ('x_centroid', 'float', True),
    ('y_centroid', 'float', True),
)
APERTURE_LEVEL = (
    ('aperture_id', 'int', False),
    ('sky', 'float', True),
    ('sky_err', 'float', True),
    ('sky_npix', 'int', True),
    ('aperture_area', 'float', True),
    ('raw_flux', 'float', True),
    ('raw_flux_err', 'float', True),
    ('net_flux', 'float', True),
    ('net_flux_err', 'float', True),
    ('ap_corr', 'float', True),
    ('flux_mjy', 'float', True),
    ('flux_err_mjy', 'float', True),
    ('flags', 'int', False),
    ('sky_std', 'float', True),
)
#: The table ``measurements`` of revision 0006 (for the downgrade): its stored columns in the view's order.
MEASUREMENTS_0006 = (
    ('aorkey', 'bigint', False),
    ('channel', 'int', False),
    ('target_index', 'int', False),
    ('aperture_id', 'int', False),
    ('expid', 'int', False),
    ('dcenum', 'int', False),
    ('plane', 'int', False),
    ('n_combined', 'int', False),
    ('mjd', 'float', True),
    ('bmjd', 'float', True),
    ('bmjd_tdb', 'float', True),
    ('xc', 'float', True),
    ('yc', 'float', True),
    ('xc_full', 'float', True),
    ('yc_full', 'float', True),
    ('x_expected', 'float', True),
    ('y_expected', 'float', True),
    ('shift_px', 'float', True),
    ('fwhm_x', 'float', True),
    ('fwhm_y', 'float', True),
    ('noise_pixels', 'float', True),
    ('sky', 'float', True),
    ('sky_err', 'float', True),
    ('sky_npix', 'int', True),
    ('aperture_area', 'float', True),
    ('raw_flux', 'float', True),
    ('raw_flux_err', 'float', True),
    ('net_flux', 'float', True),
    ('net_flux_err', 'float', True),
    ('correction', 'float', True),
    ('ap_corr', 'float', True),
    ('flux_mjy', 'float', True),
    ('flux_err_mjy', 'float', True),
    ('flags', 'int', False),
    ('x_centroid', 'float', True),
    ('y_centroid', 'float', True),
    ('sky_std', 'float', True),
)

MEASUREMENTS = """
CREATE VIEW measurements AS
SELECT
    i.run_id,
    i.exposure_id,
    i.input_id,
    i.aorkey,
    i.channel,
    i.target_index,
    f.aperture_id,
    i.expid,
    i.dcenum,
    i.plane,
    i.n_combined,
    i.mjd,
    i.bmjd,
    i.bmjd_tdb,
    i.xc,
    i.yc,
    i.xc_full,
    i.yc_full,
    i.x_expected,
    i.y_expected,
    i.shift_px,
    i.fwhm_x,
    i.fwhm_y,
    i.noise_pixels,
    f.sky,
    f.sky_err,
    f.sky_npix,
    f.aperture_area,
    f.raw_flux,
    f.raw_flux_err,
    f.net_flux,
    f.net_flux_err,
    i.correction,
    f.ap_corr,
    f.flux_mjy,
    f.flux_err_mjy,
    f.flags,
    i.x_centroid,
    i.y_centroid,
    f.sky_std
FROM measured_images AS i
JOIN aperture_fluxes AS f ON f.image_id = i.id
"""

IMAGE_PHOTOMETRY = """
CREATE VIEW image_photometry AS
SELECT
    r.name AS run,
    m.aorkey,
    m.channel,
    t.name AS target,
    m.target_index,
    m.aperture_id,
    a.radius_px AS radius_px,
    a.radius_spec AS radius_spec,
    a.annulus_in_px AS annulus_in_px,
    a.annulus_out_px AS annulus_out_px,
    a.centroid AS centroid,
    m.expid,
    m.dcenum,
    m.plane,
    m.n_combined,
    i.path AS file,
    m.mjd,
    m.bmjd,
    m.bmjd_tdb,
    m.xc,
    m.yc,
    m.xc_full,
    m.yc_full,
    m.x_expected,
    m.y_expected,
    m.shift_px,
    m.fwhm_x,
    m.fwhm_y,
    m.noise_pixels,
    m.sky,
    m.sky_err,
    m.sky_npix,
    m.aperture_area,
    m.raw_flux,
    m.raw_flux_err,
    m.net_flux,
    m.net_flux_err,
    m.correction,
    m.ap_corr,
    m.flux_mjy,
    m.flux_err_mjy,
    m.flags,
    ((m.flags & 29111) = 0 AND m.flux_mjy IS NOT NULL) AS used,
    (m.flags & 1) <> 0 AS flag_coord_conversion_failed,
    (m.flags & 2) <> 0 AS flag_not_in_fov,
    (m.flags & 4) <> 0 AS flag_aperture_off_edge,
    (m.flags & 8) <> 0 AS flag_annulus_off_edge,
    (m.flags & 16) <> 0 AS flag_centroid_failed,
    (m.flags & 32) <> 0 AS flag_centroid_shifted,
    (m.flags & 64) <> 0 AS flag_masked_in_aperture,
    (m.flags & 128) <> 0 AS flag_saturated,
    (m.flags & 256) <> 0 AS flag_non_finite,
    (m.flags & 512) <> 0 AS flag_no_aperture_correction,
    (m.flags & 1024) <> 0 AS flag_no_photometric_correction,
    (m.flags & 2048) <> 0 AS flag_few_background_pixels,
    (m.flags & 4096) <> 0 AS flag_file_unreadable,
    (m.flags & 8192) <> 0 AS flag_outlier,
    (m.flags & 16384) <> 0 AS flag_first_frame
FROM measurements AS m
JOIN runs AS r ON r.id = m.run_id
LEFT JOIN run_targets AS t ON t.run_id = m.run_id AND t.target_index = m.target_index
LEFT JOIN run_apertures AS a ON a.run_id = m.run_id AND a.aperture_id = m.aperture_id
LEFT JOIN run_inputs AS i ON i.id = m.input_id
"""

# Unchanged since 0006 (they do not read measurements); frozen here as the head's copies.
AOR_PHOTOMETRY = """
CREATE VIEW aor_photometry AS
SELECT
    r.name AS run,
    m.aorkey,
    m.channel,
    t.name AS target,
    m.target_index,
    m.aperture_id,
    a.radius_px AS radius_px,
    a.radius_spec AS radius_spec,
    a.annulus_in_px AS annulus_in_px,
    a.annulus_out_px AS annulus_out_px,
    a.centroid AS centroid,
    m.object,
    m.date_obs,
    m.mjd,
    m.bmjd,
    m.first_mjd,
    m.mission,
    m.read_mode,
    m.frame_time_s,
    m.exposure_time_s,
    m.dither_scale,
    m.dither_positions,
    m.cycles,
    m.n_total,
    m.n_used,
    m.n_rejected,
    m.n_flagged,
    m.reject_rule,
    m.flux_mjy,
    m.median_flux_mjy,
    m.std_mjy,
    m.flux_err_mjy,
    m.mean_image_err_mjy,
    m.spread_pct,
    m.correction,
    m.ap_corr,
    m.score,
    m.best
FROM aor_summaries AS m
JOIN runs AS r ON r.id = m.run_id
LEFT JOIN run_targets AS t ON t.run_id = m.run_id AND t.target_index = m.target_index
LEFT JOIN run_apertures AS a ON a.run_id = m.run_id AND a.aperture_id = m.aperture_id
"""

BEST_PHOTOMETRY = """
CREATE VIEW best_photometry AS
SELECT * FROM aor_photometry WHERE best
"""

#: Image row ids per unit (iracdb.db.views.IMAGE_IDS_PER_UNIT when this revision was written).
IMAGE_IDS_PER_UNIT = 2**32
#: ``aperture_fluxes`` has no foreign key to its image row: PostgreSQL checks one with a query per inserted row,
#: which took 1.1 s of the 1.7 s of writing a 30-aperture grid's 192,000 rows (SQLite's check is cheap, but the
#: schema is one). The writer inserts an image's aperture rows with it, in one transaction; these triggers delete
#: them with it (as ON DELETE CASCADE did), also when a run or a run's input is deleted.
DELETE_WITH_IMAGE = {
    "postgresql": (
        "CREATE FUNCTION iracdb_delete_aperture_fluxes() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "    DELETE FROM aperture_fluxes WHERE image_id IN (SELECT id FROM deleted_images);\n"
        "    RETURN NULL;\n"
        "END\n"
        "$$",
        "CREATE TRIGGER measured_images_delete_fluxes AFTER DELETE ON measured_images "
        "REFERENCING OLD TABLE AS deleted_images FOR EACH STATEMENT EXECUTE FUNCTION iracdb_delete_aperture_fluxes()",
    ),
    "sqlite": (
        "CREATE TRIGGER measured_images_delete_fluxes AFTER DELETE ON measured_images FOR EACH ROW\n"
        "BEGIN\n"
        "    DELETE FROM aperture_fluxes WHERE image_id = OLD.id;\n"
        "END",
    ),
}
DROP_DELETE_WITH_IMAGE = {
    "postgresql": ("DROP TRIGGER measured_images_delete_fluxes ON measured_images",
                   "DROP FUNCTION iracdb_delete_aperture_fluxes()"),
    "sqlite": ("DROP TRIGGER measured_images_delete_fluxes",),
}
_IMAGE_KEY = ("aorkey", "channel", "expid", "dcenum", "plane", "target_index")
_TYPES = {"int": sa.Integer, "bigint": sa.BigInteger, "float": sa.Float}
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _columns(spec: tuple) -> list:
    return [sa.Column(name, _TYPES[kind](), nullable=nullable) for name, kind, nullable in spec]


def _count(sql: str) -> int:
    return int(op.get_bind().execute(sa.text(sql)).scalar_one())


def upgrade() -> None:
    op.create_table(
        "measured_images",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("exposure_id", sa.Integer(), nullable=True),
        sa.Column("input_id", _BIG_ID, nullable=True),
        sa.Column("centroid", sa.Text(), nullable=False),
        *_columns(IMAGE_LEVEL),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_measured_images_run_id_runs"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["exposure_id"], ["exposures.id"],
                                name=op.f("fk_measured_images_exposure_id_exposures"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["input_id"], ["run_inputs.id"], name=op.f("fk_measured_images_input_id_run_inputs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measured_images")),
        sa.UniqueConstraint("run_id", *_IMAGE_KEY, "centroid", name="uq_measured_images_key"),
    )
    op.create_index(op.f("ix_measured_images_exposure_id"), "measured_images", ["exposure_id"])
    op.create_index(op.f("ix_measured_images_input_id"), "measured_images", ["input_id"])
    op.create_table(
        "aperture_fluxes",
        sa.Column("image_id", _BIG_ID, nullable=False),
        *_columns(APERTURE_LEVEL),
        sa.PrimaryKeyConstraint("image_id", "aperture_id", name=op.f("pk_aperture_fluxes")),
        sqlite_with_rowid=False,
    )
    image = [name for name, _, _ in IMAGE_LEVEL]
    aperture = [name for name, _, _ in APERTURE_LEVEL if name != "aperture_id"]
    key = ", ".join(f"m.{name}" for name in ("run_id", *_IMAGE_KEY))
    op.execute(
        "INSERT INTO run_units (run_id, aorkey, channel, status, n_exposures, n_images)\n"
        "SELECT m.run_id, m.aorkey, m.channel, 'complete', count(DISTINCT m.expid), count(*) FROM measurements AS m\n"
        "WHERE NOT EXISTS (SELECT 1 FROM run_units AS u WHERE u.run_id = m.run_id AND u.aorkey = m.aorkey "
        "AND u.channel = m.channel)\n"
        "GROUP BY m.run_id, m.aorkey, m.channel ORDER BY m.run_id, m.aorkey, m.channel"
    )
    # An image row's id: its unit's id x 2^32 + its place in the unit's canonical order (exposure, plane, target,
    # centroid method, the method's order being its first aperture's), as iracdb.reduce.store writes them.
    op.execute(
        f"INSERT INTO measured_images (id, run_id, exposure_id, input_id, centroid, {', '.join(image)})\n"
        f"SELECT u.id * {IMAGE_IDS_PER_UNIT} + ROW_NUMBER() OVER (PARTITION BY first.run_id, first.aorkey, "
        "first.channel ORDER BY first.expid, first.dcenum, first.plane, first.target_index, first.aperture_id) - 1, "
        f"first.run_id, first.exposure_id, first.input_id, first.centroid, "
        f"{', '.join(f'first.{name}' for name in image)} FROM (\n"
        f"  SELECT m.*, a.centroid AS centroid, ROW_NUMBER() OVER (PARTITION BY {key}, a.centroid "
        "ORDER BY m.aperture_id) AS n\n"
        "  FROM measurements AS m\n"
        "  JOIN run_apertures AS a ON a.run_id = m.run_id AND a.aperture_id = m.aperture_id\n"
        ") AS first\n"
        "JOIN run_units AS u ON u.run_id = first.run_id AND u.aorkey = first.aorkey AND u.channel = first.channel\n"
        "WHERE first.n = 1"
    )
    same = " AND ".join(f"i.{name} = m.{name}" for name in ("run_id", *_IMAGE_KEY))
    op.execute(
        f"INSERT INTO aperture_fluxes (image_id, aperture_id, {', '.join(aperture)})\n"
        f"SELECT i.id, m.aperture_id, {', '.join(f'm.{name}' for name in aperture)}\n"
        "FROM measurements AS m\n"
        "JOIN run_apertures AS a ON a.run_id = m.run_id AND a.aperture_id = m.aperture_id\n"
        f"JOIN measured_images AS i ON {same} AND i.centroid = a.centroid"
    )
    before, after = _count("SELECT count(*) FROM measurements"), _count("SELECT count(*) FROM aperture_fluxes")
    if before != after:  # a row whose aperture is not in run_apertures: nothing may be lost
        raise RuntimeError(f"moving measurements: {before} rows, {after} moved; the database is left as it was")
    op.execute("DROP VIEW image_photometry")
    op.drop_table("measurements")
    op.execute(MEASUREMENTS)
    op.execute(IMAGE_PHOTOMETRY)
    for statement in DELETE_WITH_IMAGE[op.get_bind().dialect.name]:
        op.execute(statement)


def downgrade() -> None:
    names = [name for name, _, _ in MEASUREMENTS_0006]
    listed = ", ".join(["run_id", "exposure_id", "input_id", *names])
    op.execute(f"CREATE TABLE measurements_0007 AS SELECT {listed} FROM measurements")
    op.execute("DROP VIEW image_photometry")
    op.execute("DROP VIEW measurements")
    for statement in DROP_DELETE_WITH_IMAGE[op.get_bind().dialect.name]:
        op.execute(statement)
    op.drop_table("aperture_fluxes")
    op.drop_index(op.f("ix_measured_images_input_id"), table_name="measured_images")
    op.drop_index(op.f("ix_measured_images_exposure_id"), table_name="measured_images")
    op.drop_table("measured_images")
    op.create_table(
        "measurements",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("exposure_id", sa.Integer(), nullable=True),
        sa.Column("input_id", _BIG_ID, nullable=True),
        *_columns(MEASUREMENTS_0006),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_measurements_run_id_runs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["exposure_id"], ["exposures.id"], name=op.f("fk_measurements_exposure_id_exposures"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["input_id"], ["run_inputs.id"], name=op.f("fk_measurements_input_id_run_inputs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurements")),
        sa.UniqueConstraint("run_id", "aorkey", "channel", "expid", "dcenum", "plane", "target_index", "aperture_id",
                            name="uq_measurements_key"),
    )
    op.create_index(op.f("ix_measurements_exposure_id"), "measurements", ["exposure_id"])
    op.create_index(op.f("ix_measurements_input_id"), "measurements", ["input_id"])
    op.execute(f"INSERT INTO measurements ({listed}) SELECT {listed} FROM measurements_0007 "
               "ORDER BY run_id, aorkey, channel, expid, dcenum, plane, target_index, aperture_id")
    op.drop_table("measurements_0007")
    op.execute(IMAGE_PHOTOMETRY)
