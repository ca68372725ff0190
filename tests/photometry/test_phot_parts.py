"""The parts of the measurement against independent implementations (photutils, astropy) and known values."""

import csv
import warnings

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from photutils.geometry import circular_overlap_grid

from iracdb.errors import BadOption
from iracdb.photometry import apcorr, units
from iracdb.photometry.aperture import circle_overlap
from iracdb.photometry.background import annulus_background, clipped_median
from iracdb.photometry.psf import render_star
from iracdb.photometry.targets import brightest_near


@pytest.mark.parametrize("radius", [0.4, 1.0, 2.5, 3.0, 7.0])
def test_overlap_equals_photutils_exact(radius):
    rng = np.random.default_rng(int(radius * 10))
    s = 21
    cx, cy = rng.uniform(8, 12, 20), rng.uniform(8, 12, 20)
    got = circle_overlap(cx, cy, radius, (s, s))
    for k in range(20):
        ref = circular_overlap_grid(-0.5 - cx[k], s - 0.5 - cx[k], -0.5 - cy[k], s - 0.5 - cy[k], s, s,
                                    radius, 1, 1)
        np.testing.assert_allclose(got[k], ref, atol=1e-10)  # px², photutils' own precision
        assert got[k].sum() == pytest.approx(np.pi * radius**2, rel=1e-12)


def test_clipped_median_equals_astropy():
    rng = np.random.default_rng(3)
    v = rng.normal(5, 1, (100, 150))
    v[:, :10] += rng.uniform(3, 30, (100, 10))  # outliers
    v[rng.random(v.shape) < 0.1] = np.nan
    med, std, count = clipped_median(v, 3.0, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns (and logs) about the NaN it clips
        ref = [sigma_clipped_stats(row, sigma=3, maxiters=5) for row in v]
    np.testing.assert_allclose(med, [r[1] for r in ref], rtol=1e-12)
    np.testing.assert_allclose(std, [r[2] for r in ref], rtol=1e-9)
    assert np.all(count < np.sum(np.isfinite(v), axis=1))  # the outliers went


def test_clipped_median_few_rows_equal_batch_and_astropy():
    """Up to SCALAR_ROWS rows are clipped in Python scalars: bit for bit the batch loop's answers (and astropy's)."""
    from iracdb.photometry import background

    rng = np.random.default_rng(5)
    v = rng.normal(5, 1, (200, 60))
    v[::2, :8] += rng.uniform(3, 30, (100, 8))  # outliers: several passes
    v[rng.random(v.shape) < 0.1] = np.nan
    v[3, :] = np.nan  # nothing usable
    v[5, :] = 2.0  # std 0
    v[7, 4] = np.inf  # not finite: ignored by both paths
    batch = clipped_median(v, 3.0, 5)
    assert background.SCALAR_ROWS >= 1
    small = [clipped_median(v[i : i + 2], 3.0, 5) for i in range(0, 200, 2)]
    for got, ref in zip((np.concatenate([s[j] for s in small]) for j in range(3)), batch, strict=True):
        np.testing.assert_array_equal(got, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sigma_clipped_stats(v[0], sigma=3, maxiters=5)
    med, std, _ = clipped_median(v[:1], 3.0, 5)
    assert med[0] == pytest.approx(ref[1], rel=1e-12) and std[0] == pytest.approx(ref[2], rel=1e-9)


def _clipped_median_reference(values, sigma, maxiters):
    """The plain form of the algorithm (every row, every pass, all columns): what the fast paths must equal."""
    n, k = values.shape
    srt = np.sort(values, axis=1)
    count = np.sum(np.isfinite(srt), axis=1)
    rows = np.arange(n)
    ref = np.where(count > 0, srt[rows, np.maximum((count - 1) // 2, 0)], 0.0)
    d = np.where(np.isfinite(srt), srt - ref[:, None], 0.0)
    c1 = np.concatenate([np.zeros((n, 1)), np.cumsum(d, axis=1)], axis=1)
    c2 = np.concatenate([np.zeros((n, 1)), np.cumsum(d * d, axis=1)], axis=1)
    srt_f = np.where(np.isfinite(srt), srt, np.inf)
    lo, hi = np.zeros(n, dtype=np.int64), count.astype(np.int64)

    def stats(lo, hi):
        m = hi - lo
        safe = np.maximum(m, 1)
        a, b = np.minimum(lo + (safe - 1) // 2, k - 1), np.minimum(lo + safe // 2, k - 1)
        mean = (c1[rows, hi] - c1[rows, lo]) / safe
        var = np.maximum((c2[rows, hi] - c2[rows, lo]) / safe - mean * mean, 0.0)
        med = 0.5 * (srt_f[rows, a] + srt_f[rows, b])
        return np.where(m > 0, med, np.nan), np.where(m > 0, np.sqrt(var), np.nan), m

    med, std, m = stats(lo, hi)
    for _ in range(maxiters):
        new_lo = np.sum(srt_f < (med - sigma * std)[:, None], axis=1)
        new_hi = np.sum(srt_f <= (med + sigma * std)[:, None], axis=1)
        new_lo = np.where(m > 0, new_lo, lo)
        new_hi = np.where(m > 0, np.minimum(new_hi, count), hi)
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
        med, std, m = stats(lo, hi)
    return med, std, m


@pytest.mark.parametrize("sigma", [3.0, 1.0, 0.0, -1.0])
def test_clipped_median_paths_equal_reference(sigma):
    """Scalar rows, dropped NaN columns, prefix counting: bit for bit the plain algorithm, +-inf included."""
    rng = np.random.default_rng(11)
    with np.errstate(all="ignore"):
        for trial in range(300):
            n, k = rng.integers(1, 10), rng.integers(1, 40)
            v = rng.normal(5, 1, (n, k))
            v[:, : k // 5] += rng.uniform(3, 30, (n, k // 5)) * (trial % 2)
            v[rng.random(v.shape) < rng.uniform(0, 0.8)] = np.nan
            if trial % 7 == 0:
                v[0, 0] = np.inf
            if trial % 5 == 0:
                v[-1, -1] = -np.inf
            if trial % 11 == 0:
                v[0] = 2.0
            ref = _clipped_median_reference(v, sigma, 5)
            for got, want in zip(clipped_median(v, sigma, 5), ref, strict=True):
                np.testing.assert_array_equal(got, want)


def test_clipped_median_edge_cases():
    med, std, count = clipped_median(np.array([[np.nan, np.nan], [2.0, np.nan]]))
    assert np.isnan(med[0]) and count[0] == 0
    assert med[1] == 2.0 and std[1] == 0.0 and count[1] == 1


def test_background_mean_is_plain_mean():
    rng = np.random.default_rng(4)
    img = rng.normal(3, 1, (1, 32, 32))
    bkg = annulus_background(img, np.array([15.4]), np.array([16.2]), 3.0, 7.0, "mean")
    yy, xx = np.mgrid[:32, :32]
    d = np.hypot(xx - 15.4, yy - 16.2)
    sel = img[0][(d >= 3) & (d < 7)]
    assert bkg.level[0] == pytest.approx(sel.mean(), rel=1e-13)
    assert bkg.npix[0] == sel.size
    assert bkg.error[0] == pytest.approx(sel.std() / np.sqrt(sel.size), rel=1e-12)


def test_brightest_near_ignores_a_hot_pixel():
    cube = render_star((32, 32), np.array([15.3, 20.0]), np.array([14.8, 12.0]), 100.0)
    cube[:, 12, 12] += 60.0  # a single hot pixel brighter than the star's peak
    x, y = brightest_near(cube, 15.0, 15.0, radius_px=6)
    np.testing.assert_array_equal(x, [15, 20])
    np.testing.assert_array_equal(y, [15, 12])
    x, y = brightest_near(np.zeros((1, 32, 32)), 15.0, 15.0)
    assert np.isnan(x[0])


def test_shipped_aperture_corrections_equal_reference(shared):
    ref = apcorr.read_table(shared / "reference" / "aperture_corrections.csv")
    assert ref == apcorr.PUBLISHED
    with open(shared / "reference" / "aperture_corrections.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(apcorr.PUBLISHED)


def test_aperture_correction_lookup():
    assert apcorr.lookup("warm", 2, 3, 3, 7) == 1.1336
    assert apcorr.lookup("cryo", 4, 2, 2, 6) == 1.568
    assert apcorr.lookup("warm", 3, 3, 3, 7) is None  # no warm ch3
    assert apcorr.lookup("warm", 1, 3, 4, 8) is None
    assert apcorr.resolve("none", "warm", 1, 3, 3, 7) is None
    assert apcorr.resolve(1.07, "warm", 1, 3.5, 4, 8) == 1.07
    with pytest.raises(BadOption, match="give a value"):
        apcorr.resolve("table", "warm", 1, 3.5, 4, 8)


def test_units():
    # 1 MJy/sr in one ch1 pixel = 35.0414 uJy (irac-photometry.md §2).
    assert units.nominal_pixel_sr(1) * 1e9 == pytest.approx(0.0350414, rel=1e-5)
    assert units.nominal_pixel_sr(1) == pytest.approx(3.50414e-11, rel=1e-5)
    assert units.header_pixel_sr(-1.2, 1.2) == pytest.approx((1.2 / 206264.806) ** 2)
    assert units.mission_from_mjd(54968.0) == "cryo"
    assert units.mission_from_mjd(54968.01) == "warm"
    with pytest.raises(BadOption):
        units.mission_from_mjd(float("nan"))


def test_moment_single_plane_path_equals_stack():
    """One plane (a full-array frame) takes a scalar-bookkeeping path: bit for bit the stacked iterations."""
    from iracdb.photometry.centroid import moment_in_windows

    rng = np.random.default_rng(14)
    n, s = 40, 17
    x, y = 8 + rng.uniform(-1.5, 1.5, n), 8 + rng.uniform(-1.5, 1.5, n)
    v = render_star((s, s), x, y, 500.0) + rng.normal(0, 0.5, (n, s, s))
    v[rng.random(v.shape) < 0.03] = 0.0  # bad pixels are 0 in these windows
    v[3] = 0.0  # no flux: fails
    v[4] = -1.0  # negative flux: fails
    x0, y0 = np.round(x) + 0.2, np.round(y) - 0.3
    x0[5] = 8 + 4.5  # starts far from the star: wanders out of reach and fails
    active = np.ones(n, dtype=bool)
    active[6] = False
    with np.errstate(divide="ignore", invalid="ignore"):  # the failing planes divide by a zero flux
        stacked = moment_in_windows(v, x0, y0, active, 3.0)
        ones = [moment_in_windows(v[k : k + 1], x0[k : k + 1], y0[k : k + 1], active[k : k + 1], 3.0)
                for k in range(n)]
    assert not stacked[4][3] and not stacked[4][4] and not stacked[4][6] and stacked[4].sum() >= n - 5
    for k, one in enumerate(ones):
        for got, want in zip(one, stacked, strict=True):
            np.testing.assert_array_equal(got, want[k : k + 1])
