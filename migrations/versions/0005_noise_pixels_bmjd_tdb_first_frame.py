"""per-image noise pixels and BMJD_TDB; the FIRST_FRAME flag's view column

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:00:00

``measurements`` gains ``bmjd_tdb`` (the barycentric time on the TDB scale) and ``noise_pixels`` (the box
centroider's noise pixels); rows measured before this revision keep NULL in both. The ``image_photometry`` view is
re-created with them and with ``flag_first_frame`` (the new :class:`iracdb.flags.Flag` bit ``FIRST_FRAME``, which
also enters ``used``); its SQL, rendered from the column registry, is frozen here (``tests/test_columns.py`` checks
it equals what the registry renders at head). ``aor_photometry`` is re-created unchanged.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column) added, both float and NULL-able.
NEW_COLUMNS = (("measurements", "bmjd_tdb"), ("measurements", "noise_pixels"))

IMAGE_PHOTOMETRY = """
CREATE VIEW image_photometry AS
SELECT
    r.name AS run,
    m.aorkey,
    m.channel,
    t.name AS target,
    m.target_index,
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
LEFT JOIN run_inputs AS i ON i.id = m.input_id
"""

AOR_PHOTOMETRY = """
CREATE VIEW aor_photometry AS
SELECT
    r.name AS run,
    m.aorkey,
    m.channel,
    t.name AS target,
    m.target_index,
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
    m.ap_corr
FROM aor_summaries AS m
JOIN runs AS r ON r.id = m.run_id
LEFT JOIN run_targets AS t ON t.run_id = m.run_id AND t.target_index = m.target_index
"""


def _previous():
    """Revision 0004's module (its frozen view SQL)."""
    path = Path(__file__).with_name("0004_one_name_per_column.py")
    spec = importlib.util.spec_from_file_location("iracdb_migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute("DROP VIEW aor_photometry")
    op.execute("DROP VIEW image_photometry")
    for table, name in NEW_COLUMNS:
        op.add_column(table, sa.Column(name, sa.Float(), nullable=True))
    op.execute(IMAGE_PHOTOMETRY)
    op.execute(AOR_PHOTOMETRY)


def downgrade() -> None:
    op.execute("DROP VIEW aor_photometry")
    op.execute("DROP VIEW image_photometry")
    for table, name in NEW_COLUMNS:
        op.drop_column(table, name)  # ALTER TABLE ... DROP COLUMN: PostgreSQL, and SQLite >= 3.35
    previous = _previous()
    op.execute(previous.IMAGE_PHOTOMETRY)
    op.execute(previous.AOR_PHOTOMETRY)
