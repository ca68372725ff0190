"""The readable SQL views over a run's results, rendered from the column registry (:mod:`iracdb.columns`).

``measurements`` joins the two result tables of images (``measured_images``, one row per image, target and centroid
method, and ``aperture_fluxes``, one per aperture) into one row per image, target and aperture with every stored
column. ``image_photometry`` (one row per measured image, target and aperture) and ``aor_photometry`` (one row per
AOR x channel x target x aperture) give every run's rows with the export's columns, so the same column always means
the same thing in SQL, in exports and in Python. A migration that changes them freezes a copy of the SQL it ran
(the view must not change when the registry changes later); ``tests/test_columns.py`` checks that the head
migration's copy equals :func:`measurements_view_sql`, :func:`image_view_sql` and :func:`aor_view_sql` now.
"""

from __future__ import annotations

from iracdb.columns import AOR_COLUMNS, IMAGE_COLUMNS, Column

MEASUREMENTS_VIEW = "measurements"
IMAGE_VIEW = "image_photometry"
AOR_VIEW = "aor_photometry"
BEST_VIEW = "best_photometry"
#: A condition on ``image_photometry``: the row is of its AOR, channel and target's best aperture.
BEST_IMAGES = ("EXISTS (SELECT 1 FROM best_photometry AS b WHERE b.run = image_photometry.run "
               "AND b.aorkey = image_photometry.aorkey AND b.channel = image_photometry.channel "
               "AND b.target_index = image_photometry.target_index AND b.aperture_id = image_photometry.aperture_id)")

#: An image row's id (``measured_images.id``) is its unit's id (``run_units.id``) times this, plus its place in the
#: unit's canonical order (:data:`IMAGE_ORDER`, the centroid methods in the order of their apertures): a run whose
#: units were numbered in AOR and channel order is read in order by id (the export does so).
IMAGE_IDS_PER_UNIT = 2**32

#: Row order of each view within a run (``image_photometry``'s follows the measurements' unique index).
IMAGE_ORDER = ("aorkey", "channel", "expid", "dcenum", "plane", "target_index", "aperture_id")
AOR_ORDER = ("aorkey", "channel", "target_index", "aperture_id")
_APERTURE_JOIN = "LEFT JOIN run_apertures AS a ON a.run_id = m.run_id AND a.aperture_id = m.aperture_id\n"


def _select_list(columns: tuple[Column, ...], base: str) -> str:
    items = [f"{c.expression} AS {c.name}" if c.source == "view" else f"{base}.{c.name}"
             for c in columns if c.exported]
    return ",\n    ".join(items)


def measurements_view_sql() -> str:
    """``CREATE VIEW measurements``: every stored image column, one row per image, target and aperture, from the
    image's row (``measured_images``, once per image, target and centroid method) and the aperture's
    (``aperture_fluxes``)."""
    items = ["i.run_id", "i.exposure_id", "i.input_id"]
    items += [f"{'f' if c.per_aperture else 'i'}.{c.name}" for c in IMAGE_COLUMNS if c.stored]
    select = ",\n    ".join(items)
    return (
        f"CREATE VIEW {MEASUREMENTS_VIEW} AS\nSELECT\n    {select}\n"
        "FROM measured_images AS i\n"
        "JOIN aperture_fluxes AS f ON f.image_id = i.id\n"
    )


def image_view_sql() -> str:
    """``CREATE VIEW image_photometry``: the exported image columns of :data:`iracdb.columns.IMAGE_COLUMNS`."""
    return (
        f"CREATE VIEW {IMAGE_VIEW} AS\nSELECT\n    {_select_list(IMAGE_COLUMNS, 'm')}\n"
        "FROM measurements AS m\n"
        "JOIN runs AS r ON r.id = m.run_id\n"
        "LEFT JOIN run_targets AS t ON t.run_id = m.run_id AND t.target_index = m.target_index\n"
        f"{_APERTURE_JOIN}"
        "LEFT JOIN run_inputs AS i ON i.id = m.input_id\n"
    )


def aor_view_sql() -> str:
    """``CREATE VIEW aor_photometry``: the exported AOR columns of :data:`iracdb.columns.AOR_COLUMNS`."""
    return (
        f"CREATE VIEW {AOR_VIEW} AS\nSELECT\n    {_select_list(AOR_COLUMNS, 'm')}\n"
        "FROM aor_summaries AS m\n"
        "JOIN runs AS r ON r.id = m.run_id\n"
        "LEFT JOIN run_targets AS t ON t.run_id = m.run_id AND t.target_index = m.target_index\n"
        f"{_APERTURE_JOIN}"
    )


def best_view_sql() -> str:
    """``CREATE VIEW best_photometry``: ``aor_photometry``'s rows of the best aperture only (one per AOR, channel
    and target)."""
    return f"CREATE VIEW {BEST_VIEW} AS\nSELECT * FROM {AOR_VIEW} WHERE best\n"


__all__ = ["AOR_ORDER", "AOR_VIEW", "BEST_IMAGES", "BEST_VIEW", "IMAGE_IDS_PER_UNIT", "IMAGE_ORDER", "IMAGE_VIEW",
           "MEASUREMENTS_VIEW", "aor_view_sql", "best_view_sql", "image_view_sql", "measurements_view_sql"]
