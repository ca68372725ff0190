"""`iracdb compare`'s library function: per-AOR differences between two runs of the same synthetic archive, with
known answers (an aperture correction of 1.1 against 1.0 is +10 % everywhere), on both backends."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import Engine

from iracdb.compare import COMPARE_COLUMNS, compare_runs
from iracdb.errors import NoSuchRun
from iracdb.ingest import ingest
from iracdb.reduce import ReduceOptions, Target, reduce
from iracdb.synth import AorSpec, SynthArchive, write_archive

GAMMA = AorSpec(aorkey=72000000, channels=(1,), read_mode="FULL", n_exposures=3, mission="warm",
                object_name="GAMMA", ra_deg=65.4695, dec_deg=57.8172, flux_mjy=100.0)
DELTA = AorSpec(aorkey=72000256, channels=(2,), read_mode="SUB", n_exposures=1, mission="warm",
                object_name="DELTA", ra_deg=277.1303, dec_deg=26.8440, flux_mjy=50.0)
EPSILON = AorSpec(aorkey=72000512, channels=(1, 3), read_mode="FULL", n_exposures=2, mission="cryo",
                  object_name="EPSILON", ra_deg=12.5, dec_deg=-30.25, flux_mjy=30.0)
AUTO = (Target(name="auto"),)
#: Every AOR x channel of the archive, as compare lists them.
ALL_KEYS = [(GAMMA.aorkey, 1, "auto"), (DELTA.aorkey, 2, "auto"), (EPSILON.aorkey, 1, "auto"),
            (EPSILON.aorkey, 3, "auto")]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("compare") / "archive", [GAMMA, DELTA, EPSILON], seed=11,
                         truth_csv=False)


@pytest.fixture
def runs(engine: Engine, archive: SynthArchive) -> Engine:
    """Runs ``ap10`` and ``ap11`` (aperture correction 1.0 and 1.1, every AOR), ``gamma`` (only GAMMA, 1.0) and
    ``blind`` (1.0, plus a target that is in no image: its rows have no flux)."""
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    reduce(engine, "ap10", ReduceOptions(targets=AUTO, aperture_correction="1.0"))
    reduce(engine, "ap11", ReduceOptions(targets=AUTO, aperture_correction="1.1"))
    reduce(engine, "gamma", ReduceOptions(targets=AUTO, aperture_correction="1.0", aorkeys=(GAMMA.aorkey,)))
    reduce(engine, "blind", ReduceOptions(targets=(*AUTO, Target(name="nowhere", ra_deg=200.0, dec_deg=-80.0)),
                                          aperture_correction="1.0"))
    return engine


def test_aperture_correction_ten_percent(runs: Engine) -> None:
    comparison = compare_runs(runs, "ap10", "ap11")
    assert (comparison.run_a, comparison.run_b) == ("ap10", "ap11")
    assert [(r["aorkey"], r["channel"], r["target"]) for r in comparison.rows] == ALL_KEYS
    assert comparison.only_a == [] and comparison.only_b == []
    assert comparison.parameter_differences == [("aperture_correction", "1.0", "1.1")]
    for row in comparison.rows:
        assert tuple(row) == COMPARE_COLUMNS
        assert row["flux_a_mjy"] > 0
        assert row["diff_pct"] == pytest.approx(10.0, abs=1e-9)
        assert row["diff_mjy"] == pytest.approx(0.1 * row["flux_a_mjy"], rel=1e-9)
        assert row["flux_b_mjy"] - row["flux_a_mjy"] == pytest.approx(row["diff_mjy"], rel=1e-12)
        assert row["err_b_mjy"] == pytest.approx(1.1 * row["err_a_mjy"], rel=1e-9)
        assert row["diff_sigma"] == pytest.approx(row["diff_mjy"] / math.hypot(row["err_a_mjy"], row["err_b_mjy"]))
        assert row["n_used_a"] == row["n_used_b"] > 0
    assert [r["object"] for r in comparison.rows] == ["GAMMA", "DELTA", "EPSILON", "EPSILON"]
    assert comparison.median_diff_pct == pytest.approx(10.0, abs=1e-9)
    assert compare_runs(runs, "ap11", "ap10").median_diff_pct == pytest.approx(100 * (1 / 1.1 - 1), abs=1e-9)


def test_a_run_restricted_to_one_aor_against_all(runs: Engine) -> None:
    comparison = compare_runs(runs, "gamma", "ap10")
    assert [(r["aorkey"], r["channel"], r["target"]) for r in comparison.rows] == ALL_KEYS[:1]
    assert comparison.only_a == []
    assert comparison.only_b == ALL_KEYS[1:]
    assert comparison.parameter_differences == [("aorkeys", [GAMMA.aorkey], [])]
    assert comparison.rows[0]["diff_mjy"] == pytest.approx(0.0, abs=1e-12)
    assert compare_runs(runs, "ap10", "gamma").only_a == ALL_KEYS[1:]


@pytest.mark.parametrize("name", ["ap10", "blind"])
def test_a_run_against_itself(runs: Engine, name: str) -> None:
    comparison = compare_runs(runs, name, name)
    assert comparison.only_a == [] and comparison.only_b == [] and comparison.parameter_differences == []
    assert comparison.median_diff_pct == 0.0
    for row in comparison.rows:
        if row["target"] == "auto":
            assert (row["diff_mjy"], row["diff_pct"], row["diff_sigma"]) == (0.0, 0.0, 0.0)


def test_missing_fluxes_give_missing_differences(runs: Engine) -> None:
    nowhere = [(aorkey, channel, "nowhere") for aorkey, channel, _ in ALL_KEYS]
    assert compare_runs(runs, "ap10", "blind").only_b == nowhere
    assert compare_runs(runs, "blind", "ap11").only_a == nowhere
    within = compare_runs(runs, "blind", "blind")
    empty = [row for row in within.rows if row["target"] == "nowhere"]
    assert len(empty) == len(ALL_KEYS)
    for row in empty:
        assert row["flux_a_mjy"] is None and row["n_used_a"] == 0
        assert row["diff_mjy"] is None and row["diff_pct"] is None and row["diff_sigma"] is None
    json.dumps(within.rows, allow_nan=False)  # never a NaN on the way out


def test_missing_run(runs: Engine) -> None:
    with pytest.raises(NoSuchRun, match="no run named 'nope'"):
        compare_runs(runs, "ap10", "nope")
    with pytest.raises(NoSuchRun, match="no run named 'nope'"):
        compare_runs(runs, "nope", "ap10")
