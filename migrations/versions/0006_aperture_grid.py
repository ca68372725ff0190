"""aperture grids: a run's apertures (run_apertures), aperture_id in the result keys, score and best per AOR row

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 06:00:00

A run measures a grid of apertures (radii x annuli x centroid methods); each is a row of ``run_apertures`` and
``aperture_id`` joins the keys of ``measurements`` and ``aor_summaries``. Every run made before is a one-aperture
run: its aperture 0 is written here from its recorded parameters (radius, annulus, centroid method) and resolved
aperture correction, its rows get ``aperture_id`` 0 and its AOR rows ``best`` true (``score`` empty). The views gain
the aperture's columns and ``best_photometry`` (the best aperture's AOR rows) is created; their SQL, rendered from
the registry, is frozen here.
"""

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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

_OLD_KEYS = {
    "measurements": ("uq_measurements_run_id_aorkey_channel_expid_dcenum_plane_target_index",
                     ["run_id", "aorkey", "channel", "expid", "dcenum", "plane", "target_index"]),
    "aor_summaries": ("uq_aor_summaries_run_id_aorkey_channel_target_index",
                      ["run_id", "aorkey", "channel", "target_index"]),
}
_NEW_KEYS = {"measurements": "uq_measurements_key", "aor_summaries": "uq_aor_summaries_key"}


def _unique_name(table: str, columns: list[str]) -> str:
    """The name the database gave the unique constraint on ``columns`` (PostgreSQL shortened the convention's
    long names to 63 characters; SQLite kept them)."""
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints(table):
        if list(constraint["column_names"]) == columns and constraint["name"]:
            return constraint["name"]
    raise RuntimeError(f"no unique constraint on {table}({', '.join(columns)})")


def _drop_views() -> None:
    op.execute("DROP VIEW IF EXISTS best_photometry")
    op.execute("DROP VIEW aor_photometry")
    op.execute("DROP VIEW image_photometry")


def _one_aperture(params: dict, resolved: dict) -> dict:
    """Aperture 0 of a run made before grids, from its recorded parameters and resolved choices."""
    per = resolved.get("per_mission_channel", {})
    corrections = {key: {"aperture_correction": value.get("aperture_correction"),
                         "source": value.get("aperture_correction_source")} for key, value in sorted(per.items())}
    radius = float(params["radius_px"])
    return {
        "aperture_id": 0, "radius_px": radius, "radius_spec": f"{radius:g}",
        "annulus_in_px": float(params["annulus_in_px"]), "annulus_out_px": float(params["annulus_out_px"]),
        "centroid": params["centroid"], "aperture_correction_json": json.dumps(corrections, sort_keys=True),
    }


def upgrade() -> None:
    apertures = op.create_table(
        "run_apertures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("aperture_id", sa.Integer(), nullable=False),
        sa.Column("radius_px", sa.Float(), nullable=True),
        sa.Column("radius_spec", sa.Text(), nullable=False),
        sa.Column("annulus_in_px", sa.Float(), nullable=False),
        sa.Column("annulus_out_px", sa.Float(), nullable=False),
        sa.Column("centroid", sa.Text(), nullable=False),
        sa.Column("aperture_correction_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_apertures_run_id_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_apertures")),
        sa.UniqueConstraint("run_id", "aperture_id", name=op.f("uq_run_apertures_run_id_aperture_id")),
    )
    runs = op.get_bind().execute(sa.text("SELECT id, params_json, resolved_json FROM runs")).all()
    rows = [{"run_id": run_id, **_one_aperture(json.loads(params), json.loads(resolved))}
            for run_id, params, resolved in runs]
    if rows:
        op.bulk_insert(apertures, rows)
    _drop_views()
    for table, (_, old_key) in _OLD_KEYS.items():
        old_name = _unique_name(table, old_key)
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("aperture_id", sa.Integer(), nullable=False, server_default=sa.text("0")))
            if table == "aor_summaries":
                batch.add_column(sa.Column("score", sa.Float(), nullable=True))
                batch.add_column(sa.Column("best", sa.Boolean(), nullable=False, server_default=sa.true()))
            batch.drop_constraint(old_name, type_="unique")
            batch.create_unique_constraint(_NEW_KEYS[table], [*old_key, "aperture_id"])
    op.execute(IMAGE_PHOTOMETRY)
    op.execute(AOR_PHOTOMETRY)
    op.execute(BEST_PHOTOMETRY)


def downgrade() -> None:
    _drop_views()
    # Only aperture 0 of each run has a place in the older schema.
    op.execute("DELETE FROM measurements WHERE aperture_id <> 0")
    op.execute("DELETE FROM aor_summaries WHERE aperture_id <> 0")
    for table, (old_name, old_key) in _OLD_KEYS.items():
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(_NEW_KEYS[table], type_="unique")
            batch.create_unique_constraint(op.f(old_name[:63]), old_key)
            batch.drop_column("aperture_id")
            if table == "aor_summaries":
                batch.drop_column("score")
                batch.drop_column("best")
    op.drop_table("run_apertures")
    path = Path(__file__).with_name("0005_noise_pixels_bmjd_tdb_first_frame.py")
    spec = importlib.util.spec_from_file_location("iracdb_migration_0005", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous.IMAGE_PHOTOMETRY)
    op.execute(previous.AOR_PHOTOMETRY)
