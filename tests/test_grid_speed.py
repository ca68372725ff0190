"""The grid's speed-ups leave every row and summary as it was: the writer's grouping of a unit's rows by (target,
aperture) picks exactly the rows the per-aperture masks picked, in the same order; pausing the garbage collector
restores its state."""

from __future__ import annotations

import gc

import numpy as np

from iracdb.db.backend import collector_paused
from iracdb.reduce.store import _row_groups


def _unit_keys(n_exposures: int, n_targets: int, n_apertures: int, n_planes: int) -> tuple[np.ndarray, np.ndarray]:
    """target_index and aperture_id of a unit's rows as the worker orders them: exposure, target, aperture, plane."""
    target = np.repeat(np.tile(np.arange(n_targets), n_exposures), n_apertures * n_planes)
    aperture = np.tile(np.repeat(np.arange(n_apertures), n_planes), n_exposures * n_targets)
    return target, aperture


def test_row_groups_are_the_per_aperture_masks() -> None:
    target, aperture = _unit_keys(n_exposures=3, n_targets=2, n_apertures=5, n_planes=4)
    groups = _row_groups(target.astype(np.float64), aperture.astype(np.float64))
    assert len(groups) == 2 * 5
    for t in range(2):
        for a in range(5):
            expected = np.flatnonzero((target == t) & (aperture == a))
            assert expected.size == 3 * 4
            np.testing.assert_array_equal(groups[t, a], expected)


def test_row_groups_leave_out_rows_without_a_key_and_handle_no_rows() -> None:
    target = np.array([0.0, np.nan, 0.0, 1.0, 0.0])
    aperture = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    groups = _row_groups(target, aperture)
    assert set(groups) == {(0, 1), (0, 0), (1, 1)}
    np.testing.assert_array_equal(groups[0, 1], [0, 4])
    np.testing.assert_array_equal(groups[0, 0], [2])
    assert _row_groups(np.zeros(0), np.zeros(0)) == {}


def test_collector_paused_restores_its_state() -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        with collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled()
        gc.disable()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
