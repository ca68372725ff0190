"""one name per quantity: result columns renamed to the export's names; views rendered from the column registry

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:00:00

The ``measurements`` and ``aor_summaries`` columns take the names the views and exports have always used
(``background_mjy_sr`` -> ``sky``, ``mean_flux_mjy`` -> ``flux_mjy``, ...), so every quantity has one name
(:mod:`iracdb.columns`). The views are re-created with the same columns as before; their SQL, rendered from the
registry, is frozen here (``tests/test_columns.py`` checks it equals what the registry renders at head).
Renaming a column is a change of the catalogue only, on both backends: no row is rewritten.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, old name, new name)
RENAMES = (
    ("measurements", "x_px", "xc"),
    ("measurements", "y_px", "yc"),
    ("measurements", "x_full_px", "xc_full"),
    ("measurements", "y_full_px", "yc_full"),
    ("measurements", "x_expected_px", "x_expected"),
    ("measurements", "y_expected_px", "y_expected"),
    ("measurements", "x_centroid_px", "x_centroid"),
    ("measurements", "y_centroid_px", "y_centroid"),
    ("measurements", "fwhm_x_px", "fwhm_x"),
    ("measurements", "fwhm_y_px", "fwhm_y"),
    ("measurements", "background_mjy_sr", "sky"),
    ("measurements", "background_err_mjy_sr", "sky_err"),
    ("measurements", "background_std_mjy_sr", "sky_std"),
    ("measurements", "background_npix", "sky_npix"),
    ("measurements", "aperture_area_px", "aperture_area"),
    ("measurements", "raw_sum_mjy_sr", "raw_flux"),
    ("measurements", "raw_sum_err_mjy_sr", "raw_flux_err"),
    ("measurements", "net_sum_mjy_sr", "net_flux"),
    ("measurements", "net_sum_err_mjy_sr", "net_flux_err"),
    ("measurements", "correction_factor", "correction"),
    ("measurements", "aperture_correction", "ap_corr"),
    ("aor_summaries", "mean_flux_mjy", "flux_mjy"),
    ("aor_summaries", "std_flux_mjy", "std_mjy"),
    ("aor_summaries", "mean_mjd", "mjd"),
    ("aor_summaries", "mean_bmjd", "bmjd"),
    ("aor_summaries", "first_date_obs", "date_obs"),
    ("aor_summaries", "aperture_correction", "ap_corr"),
)

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
    m.xc,
    m.yc,
    m.xc_full,
    m.yc_full,
    m.x_expected,
    m.y_expected,
    m.shift_px,
    m.fwhm_x,
    m.fwhm_y,
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
    ((m.flags & 12727) = 0 AND m.flux_mjy IS NOT NULL) AS used,
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
    (m.flags & 8192) <> 0 AS flag_outlier
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


def _rename(pairs: Sequence[tuple[str, str, str]], *, back: bool = False) -> None:
    # ALTER TABLE ... RENAME COLUMN: PostgreSQL, and SQLite >= 3.25 (Python 3.11 ships a newer one).
    for table, old, new in pairs:
        source, target = (new, old) if back else (old, new)
        op.execute(f"ALTER TABLE {table} RENAME COLUMN {source} TO {target}")


def upgrade() -> None:
    op.execute("DROP VIEW aor_photometry")
    op.execute("DROP VIEW image_photometry")
    _rename(RENAMES)
    op.execute(IMAGE_PHOTOMETRY)
    op.execute(AOR_PHOTOMETRY)


def downgrade() -> None:
    op.execute("DROP VIEW aor_photometry")
    op.execute("DROP VIEW image_photometry")
    _rename(RENAMES, back=True)
    # The views as revision 0003 created them (its frozen SQL, over the old names).
    path = Path(__file__).with_name("0003_photometry_views.py")
    spec = importlib.util.spec_from_file_location("iracdb_migration_0003", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous.IMAGE_PHOTOMETRY)
    op.execute(previous.AOR_PHOTOMETRY)
