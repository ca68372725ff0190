"""Per-AOR outlier rejection and statistics (iracdb.summary)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iracdb import flags as flags_mod
from iracdb.errors import BadOption, UserError
from iracdb.flags import Flag
from iracdb.summary import SUMMARY_EXCLUDED, AorStats, RejectRule, outliers, summarize, with_outlier_flags

NONE = RejectRule.parse("none")
MINMAX = RejectRule.parse("minmax")


def sigma(n: float) -> RejectRule:
    return RejectRule("sigma", n)


def run(flux, rule, flags=None, err=None, mjd=None, bmjd=None) -> AorStats:
    flux = np.asarray(flux, dtype=float)
    n = flux.size
    return summarize(
        flux,
        np.ones(n) if err is None else err,
        np.arange(n, dtype=float) + 56000.0 if mjd is None else mjd,
        np.arange(n, dtype=float) + 56000.5 if bmjd is None else bmjd,
        np.zeros(n, dtype=np.int64) if flags is None else np.asarray(flags, dtype=np.int64),
        rule,
    )


# --- RejectRule -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule", "canonical"),
    [
        ("none", RejectRule("none"), "none"),
        ("minmax", RejectRule("minmax"), "minmax"),
        ("sigma:3", RejectRule("sigma", 3.0), "sigma:3"),
        ("sigma:3.0", RejectRule("sigma", 3.0), "sigma:3"),
        ("sigma:2.5", RejectRule("sigma", 2.5), "sigma:2.5"),
        (" Sigma:0.5 ", RejectRule("sigma", 0.5), "sigma:0.5"),
        ("sigma:1e-3", RejectRule("sigma", 0.001), "sigma:0.001"),
        ("MINMAX", RejectRule("minmax"), "minmax"),
    ],
)
def test_parse_known(text, rule, canonical):
    parsed = RejectRule.parse(text)
    assert parsed == rule
    assert str(parsed) == canonical
    assert RejectRule.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "sigma",
        "sigma:",
        "sigma:0",
        "sigma:-1",
        "sigma:nan",
        "sigma:inf",
        "sigma:abc",
        "sigma:3:4",
        "max",
        "",
        " ",
        "none:3",
        "minmax:1",
        "sigma3",
    ],
)
def test_parse_rejects(text):
    with pytest.raises(BadOption) as info:
        RejectRule.parse(text)
    message = str(info.value)
    for form in ("none", "minmax", "sigma:N"):
        assert form in message
    assert isinstance(info.value, UserError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kind", "nsigma"),
    [
        ("none", 3.0),
        ("minmax", 1.0),
        ("sigma", None),
        ("sigma", 0.0),
        ("sigma", -2.0),
        ("sigma", math.nan),
        ("sigma", math.inf),
        ("sigma", True),
        ("sigma", "3"),
        ("clip", None),
    ],
)
def test_constructor_validates(kind, nsigma):
    with pytest.raises(BadOption):
        RejectRule(kind, nsigma)


@given(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_parse_round_trip(n):
    rule = RejectRule("sigma", n)
    assert RejectRule.parse(str(rule)) == rule


# --- outliers: known answers ----------------------------------------------------------------------------------------


def test_none_rejects_nothing():
    assert not outliers([1.0, 2.0, 1000.0], [True] * 3, NONE).any()


def test_sigma_rejects_the_odd_one():
    got = outliers([10.0, 10.0, 10.0, 10.0, 50.0], [True] * 5, sigma(2))
    assert got.tolist() == [False, False, False, False, True]


def test_sigma_threshold_is_strict():
    # [10,10,10,10,50]: median 10, sample std sqrt(320) = 17.889; |50-10| = 40 = 2.236 std.
    assert not outliers([10.0, 10.0, 10.0, 10.0, 50.0], [True] * 5, sigma(40 / math.sqrt(320))).any()
    assert outliers([10.0, 10.0, 10.0, 10.0, 50.0], [True] * 5, sigma(2.2)).tolist()[-1]


def test_sigma_iterates():
    # The first pass only catches 1000; once it is gone 30 stands out from the rest.
    flux = [10.0, 10.1, 9.9, 10.0, 10.2, 9.8, 10.0, 10.1, 9.9, 10.0, 10.2, 9.8, 10.0, 10.1, 9.9, 30.0, 1000.0]
    got = outliers(flux, [True] * len(flux), sigma(3))
    assert np.flatnonzero(got).tolist() == [15, 16]
    # A single pass at the same threshold does not reject 30.
    values = np.array(flux)
    assert np.abs(30.0 - np.median(values)) < 3 * np.std(values, ddof=1)


def test_sigma_never_below_three_or_zero_std():
    assert not outliers([1.0, 100.0], [True, True], sigma(0.1)).any()
    assert not outliers([5.0, 5.0, 5.0, 5.0], [True] * 4, sigma(0.1)).any()


def test_sigma_never_rejects_everything():
    # Even count, tiny threshold: every value is further than 0.1 std from the median 0.5.
    got = outliers([0.0, 0.0, 1.0, 1.0], [True] * 4, sigma(0.1))
    assert not got.all()


def test_minmax_known():
    assert outliers([1.0, 2.0, 3.0, 4.0], [True] * 4, MINMAX).tolist() == [True, False, False, True]
    assert outliers([3.0, 1.0, 4.0, 2.0], [True] * 4, MINMAX).tolist() == [False, True, True, False]


def test_minmax_ties_first_index():
    assert outliers([1.0, 1.0, 5.0, 5.0, 3.0], [True] * 5, MINMAX).tolist() == [True, False, True, False, False]
    # All equal: still exactly two go, the first two.
    assert outliers([2.0, 2.0, 2.0, 2.0], [True] * 4, MINMAX).tolist() == [True, True, False, False]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_minmax_needs_three(n):
    assert not outliers(np.arange(n, dtype=float), np.ones(n, dtype=bool), MINMAX).any()


def test_minmax_counts_only_usable():
    # Three values but one unusable: only two take part, nothing is rejected.
    assert not outliers([1.0, 2.0, 100.0], [True, True, False], MINMAX).any()
    # NaN does not take part either, and is never picked as min or max.
    assert outliers([np.nan, 1.0, 2.0, 3.0], [True] * 4, MINMAX).tolist() == [False, True, False, True]


@pytest.mark.parametrize("rule", [NONE, MINMAX, sigma(1), sigma(3)])
def test_unusable_and_nan_never_rejected(rule):
    flux = np.array([10.0, 10.0, 10.0, 10.0, 1e9, np.nan, np.inf, -1e9, 11.0])
    usable = np.array([True, True, True, True, False, True, True, False, True])
    got = outliers(flux, usable, rule)
    assert not got[~usable | ~np.isfinite(flux)].any()


@pytest.mark.parametrize("rule", [NONE, MINMAX, sigma(3)])
def test_empty(rule):
    got = outliers(np.array([]), np.array([], dtype=bool), rule)
    assert got.shape == (0,)
    assert got.dtype == np.bool_


def test_shape_mismatch():
    with pytest.raises(ValueError, match="length"):
        outliers([1.0, 2.0], [True], NONE)
    with pytest.raises(ValueError, match="1-D"):
        outliers(np.ones((2, 2)), np.ones((2, 2), dtype=bool), NONE)


# --- outliers: properties -------------------------------------------------------------------------------------------

fluxes = st.lists(
    st.one_of(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        st.sampled_from([10.0, 10.0, 11.0, np.nan]),  # ties and NaN
    ),
    max_size=40,
)
rules = st.one_of(
    st.just(NONE), st.just(MINMAX), st.floats(min_value=0.05, max_value=10).map(lambda n: RejectRule("sigma", n))
)


@given(data=st.data(), values=fluxes, rule=rules)
@settings(max_examples=300)
def test_permutation_invariance(data, values, rule):
    flux = np.array(values, dtype=float)
    usable = np.array(data.draw(st.lists(st.booleans(), min_size=flux.size, max_size=flux.size)), dtype=bool)
    perm = np.array(data.draw(st.permutations(range(flux.size))), dtype=np.intp)
    got = outliers(flux, usable, rule)
    got_perm = outliers(flux[perm], usable[perm], rule)
    if rule.kind == "minmax":  # of equal fluxes the first index goes: the rejected *values* are invariant
        assert sorted(flux[got].tolist()) == sorted(flux[perm][got_perm].tolist())
    else:
        assert got[perm].tolist() == got_perm.tolist()
    assert not got[~usable | ~np.isfinite(flux)].any()
    kept = usable & np.isfinite(flux)
    if rule.kind == "minmax":
        assert got.sum() == (2 if kept.sum() >= 3 else 0)
    if kept.sum() > 0:
        assert (kept & ~got).any()  # never everything


# --- summarize ---------------------------------------------------------------------------------------------------


def test_summarize_known():
    flux = [10.0, 12.0, 11.0, 9.0, 50.0, 7.0, 8.0]
    flags = [0, 0, 0, 0, 0, int(Flag.SATURATED), int(Flag.NOT_IN_FOV | Flag.NO_APERTURE_CORRECTION)]
    err = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    mjd = [1.0, 2.0, 3.0, 4.0, 5.0, 0.5, np.nan]
    bmjd = [1.5, np.nan, 3.5, 4.5, 5.5, 6.5, 7.5]
    stats = summarize(flux, err, mjd, bmjd, np.array(flags, dtype=np.int64), MINMAX)
    assert stats.outlier.tolist() == [False, False, False, True, True, False, False]
    assert (stats.n_total, stats.n_flagged, stats.n_rejected, stats.n_used) == (7, 2, 2, 3)
    assert stats.reject_rule == "minmax"
    assert stats.flux_mjy == pytest.approx(11.0)
    assert stats.median_flux_mjy == 11.0
    assert stats.std_mjy == pytest.approx(1.0)
    assert stats.flux_err_mjy == pytest.approx(1.0 / math.sqrt(3))
    assert stats.mean_image_err_mjy == pytest.approx(0.2)
    assert stats.spread_pct == pytest.approx(100.0 / 11.0)
    assert stats.mjd == pytest.approx(2.0)
    assert stats.bmjd == pytest.approx(2.5)  # the used image without a BMJD does not count
    assert (stats.first_mjd, stats.last_mjd) == (0.5, 5.0)  # over every image with a finite time


def test_error_is_error_of_the_mean_not_population_std():
    stats = run([1.0, 2.0, 3.0, 4.0], NONE)
    population_std = float(np.std([1.0, 2.0, 3.0, 4.0]))  # what the 2018 script called "Error"
    assert stats.std_mjy == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0], ddof=1))
    assert stats.flux_err_mjy == pytest.approx(stats.std_mjy / 2.0)
    assert stats.flux_err_mjy != pytest.approx(population_std)


@pytest.mark.parametrize(
    "bit", [Flag.CENTROID_SHIFTED, Flag.SATURATED, *[m for m in Flag if m and m in flags_mod.UNUSABLE]]
)
def test_excluded_bits(bit):
    assert bit in SUMMARY_EXCLUDED
    stats = run([10.0, 10.0, 1000.0], NONE, flags=[0, 0, int(bit)])
    assert (stats.n_flagged, stats.n_used) == (1, 2)
    assert stats.flux_mjy == 10.0
    assert not stats.outlier[2]


@pytest.mark.parametrize(
    "bit", [Flag.MASKED_IN_APERTURE, Flag.NO_APERTURE_CORRECTION, Flag.ANNULUS_OFF_EDGE, Flag.OUTLIER]
)
def test_bits_that_do_not_exclude(bit):
    stats = run([10.0, 20.0], NONE, flags=[0, int(bit)])
    assert (stats.n_flagged, stats.n_used) == (0, 2)


def test_stale_outlier_bit_is_ignored():
    stats = run([10.0, 10.0, 10.0], sigma(3), flags=[0, int(Flag.OUTLIER), 0])
    assert stats.n_used == 3 and not stats.outlier.any()


def test_nan_flux_with_clean_flags_is_flagged_not_used():
    stats = run([np.nan, 10.0, 12.0], sigma(3))
    assert (stats.n_flagged, stats.n_rejected, stats.n_used) == (1, 0, 2)
    assert stats.flux_mjy == 11.0


@pytest.mark.parametrize("rule", [NONE, MINMAX, sigma(2)])
def test_nothing_used(rule):
    stats = run([np.nan, 5.0], rule, flags=[0, int(Flag.NOT_IN_FOV)])
    assert (stats.n_total, stats.n_flagged, stats.n_rejected, stats.n_used) == (2, 2, 0, 0)
    for name in (
        "flux_mjy",
        "median_flux_mjy",
        "std_mjy",
        "flux_err_mjy",
        "mean_image_err_mjy",
        "spread_pct",
        "mjd",
        "bmjd",
    ):
        assert math.isnan(getattr(stats, name)), name
    assert (stats.first_mjd, stats.last_mjd) == (56000.0, 56001.0)


@pytest.mark.parametrize("rule", [NONE, MINMAX, sigma(2)])
def test_empty_aor(rule):
    stats = run([], rule)
    assert (stats.n_total, stats.n_flagged, stats.n_rejected, stats.n_used) == (0, 0, 0, 0)
    assert stats.outlier.shape == (0,)
    for name in (
        "flux_mjy",
        "median_flux_mjy",
        "std_mjy",
        "flux_err_mjy",
        "mean_image_err_mjy",
        "spread_pct",
        "mjd",
        "bmjd",
        "first_mjd",
        "last_mjd",
    ):
        assert math.isnan(getattr(stats, name)), name


def test_one_image():
    stats = run([7.0], sigma(3), err=[0.5])
    assert stats.n_used == 1
    assert (stats.flux_mjy, stats.median_flux_mjy, stats.mean_image_err_mjy) == (7.0, 7.0, 0.5)
    assert math.isnan(stats.std_mjy) and math.isnan(stats.flux_err_mjy) and math.isnan(stats.spread_pct)


def test_zero_mean_spread_is_nan():
    stats = run([-1.0, 1.0], NONE)
    assert stats.flux_mjy == 0.0
    assert math.isnan(stats.spread_pct)


def test_input_validation():
    with pytest.raises(ValueError, match="mjd"):
        summarize([1.0, 2.0], [1.0, 1.0], [1.0], [1.0, 1.0], np.zeros(2, dtype=np.int64), NONE)
    with pytest.raises(TypeError, match="integer"):
        summarize([1.0], [1.0], [1.0], [1.0], np.array([0.5]), NONE)


def test_outlier_mask_is_read_only():
    stats = run([1.0, 2.0, 3.0], MINMAX)
    with pytest.raises(ValueError, match="read-only"):
        stats.outlier[0] = False


finite_flux = st.lists(
    st.one_of(st.floats(min_value=-1e4, max_value=1e4), st.sampled_from([100.0, 100.0, np.nan])), max_size=30
)
flag_values = st.sampled_from(
    [
        0,
        0,
        0,
        int(Flag.SATURATED),
        int(Flag.CENTROID_SHIFTED),
        int(Flag.NOT_IN_FOV),
        int(Flag.OUTLIER),
        int(Flag.MASKED_IN_APERTURE),
    ]
)


@given(data=st.data(), values=finite_flux, rule=rules)
@settings(max_examples=300)
def test_summarize_properties(data, values, rule):
    flux = np.array(values, dtype=float)
    n = flux.size
    flags = np.array(data.draw(st.lists(flag_values, min_size=n, max_size=n)), dtype=np.int64)
    err = np.array(data.draw(st.lists(st.floats(0.0, 10.0), min_size=n, max_size=n)), dtype=float)
    mjd = np.array(data.draw(st.lists(st.floats(55000.0, 58000.0), min_size=n, max_size=n)), dtype=float)
    bmjd = mjd + 0.001
    stats = summarize(flux, err, mjd, bmjd, flags, rule)

    usable = ((flags & int(SUMMARY_EXCLUDED)) == 0) & np.isfinite(flux)
    used = usable & ~stats.outlier
    assert stats.n_used + stats.n_rejected + stats.n_flagged == stats.n_total == n
    assert stats.n_flagged == (~usable).sum()
    assert stats.n_used == used.sum()
    assert stats.n_rejected == stats.outlier.sum()
    assert not stats.outlier[~usable].any()
    assert stats.reject_rule == str(rule)

    kept = flux[used]
    if kept.size:
        assert stats.flux_mjy == pytest.approx(np.mean(kept), rel=1e-12, abs=1e-9)
        assert stats.median_flux_mjy == np.median(kept)
        assert stats.mean_image_err_mjy == pytest.approx(np.mean(err[used]), rel=1e-12, abs=1e-12)
        assert stats.mjd == pytest.approx(np.mean(mjd[used]), rel=1e-12)
    else:
        assert math.isnan(stats.flux_mjy)
    if kept.size >= 2:
        std = np.std(kept, ddof=1)
        assert stats.std_mjy == pytest.approx(std, rel=1e-9, abs=1e-9)
        assert stats.flux_err_mjy == pytest.approx(std / np.sqrt(kept.size), rel=1e-9, abs=1e-9)
    else:
        assert math.isnan(stats.std_mjy) and math.isnan(stats.flux_err_mjy)
    if n:
        assert (stats.first_mjd, stats.last_mjd) == (mjd.min(), mjd.max())

    # Rows and summary agree: the flags written back carry OUTLIER exactly on the rejected images.
    new_flags = with_outlier_flags(flags, stats.outlier)
    assert (((new_flags & int(Flag.OUTLIER)) != 0) == stats.outlier).all()
    assert ((new_flags & ~int(Flag.OUTLIER)) == (flags & ~int(Flag.OUTLIER))).all()

    # Permuting the images permutes the mask and leaves every statistic bit-identical.
    perm = np.array(data.draw(st.permutations(range(n))), dtype=np.intp)
    again = summarize(flux[perm], err[perm], mjd[perm], bmjd[perm], flags[perm], rule)
    if rule.kind != "minmax":
        assert again.outlier.tolist() == stats.outlier[perm].tolist()
    for name in (
        "n_flagged",
        "n_rejected",
        "n_used",
        "flux_mjy",
        "median_flux_mjy",
        "std_mjy",
        "flux_err_mjy",
        "spread_pct",
        "first_mjd",
        "last_mjd",
    ):
        a, b = getattr(stats, name), getattr(again, name)
        assert a == b or (math.isnan(a) and math.isnan(b)), name


def test_with_outlier_flags():
    flags = np.array([0, int(Flag.SATURATED), int(Flag.OUTLIER), int(Flag.OUTLIER | Flag.NOT_IN_FOV)], dtype=np.int64)
    got = with_outlier_flags(flags, [True, True, False, True])
    assert got.tolist() == [
        int(Flag.OUTLIER),
        int(Flag.SATURATED | Flag.OUTLIER),
        0,
        int(Flag.OUTLIER | Flag.NOT_IN_FOV),
    ]
    assert got.dtype == np.int64
    assert flags[0] == 0  # input untouched
    with pytest.raises(ValueError, match="length"):
        with_outlier_flags(flags, [True])


def test_summary_is_pure_numpy():
    """summary.py must not import SQLAlchemy, typer or pandas (house style: pure functions on arrays)."""
    import ast
    from pathlib import Path

    import iracdb.summary

    tree = ast.parse(Path(iracdb.summary.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {name.split(".")[0] for name in names} & {"sqlalchemy", "typer", "pandas"}
