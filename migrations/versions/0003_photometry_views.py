"""readable views: image_photometry and aor_photometry

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:10:00

The views give a run's rows the column names of the exports (see ``iracdb/db/views.py`` for units and meanings).
Their SQL is frozen here: a new flag bit or column needs a new revision that replaces the view.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: iracdb.flags.Flag as of this revision: (readable name, bit value).
_FLAGS = (
    ("coord_conversion_failed", 1 << 0),
    ("not_in_fov", 1 << 1),
    ("aperture_off_edge", 1 << 2),
    ("annulus_off_edge", 1 << 3),
    ("centroid_failed", 1 << 4),
    ("centroid_shifted", 1 << 5),
    ("masked_in_aperture", 1 << 6),
    ("saturated", 1 << 7),
    ("non_finite", 1 << 8),
    ("no_aperture_correction", 1 << 9),
    ("no_photometric_correction", 1 << 10),
    ("few_background_pixels", 1 << 11),
    ("file_unreadable", 1 << 12),
    ("outlier", 1 << 13),
)
#: Bits that keep an image out of its AOR's summary as of this revision: iracdb.summary.SUMMARY_EXCLUDED | OUTLIER.
_NOT_USED = 1 | 2 | 4 | 16 | 32 | 128 | 256 | 4096 | 8192

_FLAG_COLUMNS = ",\n    ".join(f"(m.flags & {bit}) <> 0 AS flag_{name}" for name, bit in _FLAGS)

IMAGE_PHOTOMETRY = f"""
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
    m.x_px AS xc,
    m.y_px AS yc,
    m.x_full_px AS xc_full,
    m.y_full_px AS yc_full,
    m.x_expected_px AS x_expected,
    m.y_expected_px AS y_expected,
    m.shift_px,
    m.fwhm_x_px AS fwhm_x,
    m.fwhm_y_px AS fwhm_y,
    m.background_mjy_sr AS sky,
    m.background_err_mjy_sr AS sky_err,
    m.background_npix AS sky_npix,
    m.aperture_area_px AS aperture_area,
    m.raw_sum_mjy_sr AS raw_flux,
    m.raw_sum_err_mjy_sr AS raw_flux_err,
    m.net_sum_mjy_sr AS net_flux,
    m.net_sum_err_mjy_sr AS net_flux_err,
    m.correction_factor AS correction,
    m.aperture_correction AS ap_corr,
    m.flux_mjy,
    m.flux_err_mjy,
    m.flags,
    ((m.flags & {_NOT_USED}) = 0 AND m.flux_mjy IS NOT NULL) AS used,
    {_FLAG_COLUMNS}
FROM measurements AS m
JOIN runs AS r ON r.id = m.run_id
LEFT JOIN run_targets AS t ON t.run_id = m.run_id AND t.target_index = m.target_index
LEFT JOIN run_inputs AS i ON i.id = m.input_id
"""

AOR_PHOTOMETRY = """
CREATE VIEW aor_photometry AS
SELECT
    r.name AS run,
    s.aorkey,
    s.channel,
    t.name AS target,
    s.target_index,
    s.object,
    s.first_date_obs AS date_obs,
    s.mean_mjd AS mjd,
    s.mean_bmjd AS bmjd,
    s.first_mjd,
    s.mission,
    s.read_mode,
    s.frame_time_s,
    s.exposure_time_s,
    s.dither_scale,
    s.dither_positions,
    s.cycles,
    s.n_total,
    s.n_used,
    s.n_rejected,
    s.n_flagged,
    s.reject_rule,
    s.mean_flux_mjy AS flux_mjy,
    s.median_flux_mjy,
    s.std_flux_mjy AS std_mjy,
    s.flux_err_mjy,
    s.mean_image_err_mjy,
    s.spread_pct,
    s.correction,
    s.aperture_correction AS ap_corr
FROM aor_summaries AS s
JOIN runs AS r ON r.id = s.run_id
LEFT JOIN run_targets AS t ON t.run_id = s.run_id AND t.target_index = s.target_index
"""


def upgrade() -> None:
    op.execute(IMAGE_PHOTOMETRY)
    op.execute(AOR_PHOTOMETRY)


def downgrade() -> None:
    op.execute("DROP VIEW aor_photometry")
    op.execute("DROP VIEW image_photometry")
