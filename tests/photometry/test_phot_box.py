"""The box centroider (box_centroider.pro's convention) and its noise pixels: known answers on synthetic stars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy.special import erf

from iracdb.flags import PROCBITS
from iracdb.photometry import ImageInfo, PhotometryParams, measure
from iracdb.photometry.aperture import Stack
from iracdb.photometry.box import _column_sum, box_centroid
from iracdb.photometry.centroid import centroid
from iracdb.photometry.psf import render_star

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _pixel_gauss(centre: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    """Integrals of a unit 1-D Gaussian over the pixels lo..hi (pixel i spans i-0.5..i+0.5)."""
    edges = np.arange(lo, hi + 2) - 0.5
    return np.diff(0.5 * erf((edges - centre) / (sigma * np.sqrt(2.0))))


def _expected_noise_pixels(x: float, y: float, sigma: float) -> float:
    """(sum I)^2 / sum(I^2) of a pixel-integrated circular Gaussian over the 7x7 box about the pixel holding
    (x, y): the sums factor into x and y, each over 7 pixel integrals."""
    px, py = round(x), round(y)
    gx = _pixel_gauss(x, sigma, px - 3, px + 3)
    gy = _pixel_gauss(y, sigma, py - 3, py + 3)
    return float((gx.sum() * gy.sum()) ** 2 / ((gx**2).sum() * (gy**2).sum()))


# Sub-pixel offsets from a pixel centre, away from the half-pixel edges where the box's pixel would be ambiguous.
OFFSETS = [(0.0, 0.0), (0.3, -0.2), (-0.45, 0.4), (0.12, 0.45), (-0.3, -0.33)]


@pytest.mark.parametrize(("dx", "dy"), OFFSETS)
@pytest.mark.parametrize("fwhm", [1.2, 1.42, 1.8])
def test_box_centroid_recovers_known_subpixel_positions(dx: float, dy: float, fwhm: float) -> None:
    x, y = 15.0 + dx, 16.0 + dy
    image = render_star((32, 32), x, y, 5000.0, fwhm=fwhm) + 3.0
    # Started 1.3 px away: the peak search and the second pass bring the box onto the star.
    c = box_centroid(image[None], np.array([x + 1.3]), np.array([y - 1.2]))
    assert c.ok[0]
    # Stated tolerance: 0.005 px (the first moment of a Gaussian truncated to a 7x7 box; measured <= 0.003 px)
    assert abs(c.x[0] - x) < 0.005 and abs(c.y[0] - y) < 0.005
    assert c.background[0] == pytest.approx(3.0, abs=1e-6)  # the star's flux 6+ px away is < 1e-6 of its peak


@pytest.mark.parametrize(("dx", "dy"), OFFSETS)
@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.0, 1.2])
def test_noise_pixels_of_a_gaussian_equal_the_exact_expectation(dx: float, dy: float, sigma: float) -> None:
    x, y = 15.0 + dx, 16.0 + dy
    image = render_star((32, 32), x, y, 2000.0, fwhm=sigma * FWHM_PER_SIGMA) + 7.5
    c = box_centroid(image[None], np.array([x]), np.array([y]))
    # Exact to rounding: the same pixel integrals summed over the same 7x7 box, background removed exactly.
    assert c.noise_pixels[0] == pytest.approx(_expected_noise_pixels(x, y, sigma), rel=1e-6)


def test_noise_pixels_approach_the_analytic_gaussian_value() -> None:
    # For a well-sampled Gaussian beta -> 4 pi sigma^2; pixel integration adds the pixel's variance 1/12 px^2 and
    # the 7x7 box cuts the wings beyond 3.5 sigma: at sigma = 1 px both together stay within 0.3 %.
    sigma = 1.0
    image = render_star((32, 32), 15.2, 15.9, 1000.0, fwhm=sigma * FWHM_PER_SIGMA)
    c = box_centroid(image[None], np.array([15.0]), np.array([16.0]))
    assert c.noise_pixels[0] == pytest.approx(4 * np.pi * (sigma**2 + 1 / 12), rel=0.003)


def test_background_rejects_hot_pixels_and_follows_the_ring() -> None:
    x, y = 15.2, 15.7
    image = render_star((32, 32), x, y, 3000.0) + 2.0
    image[4, 4] = image[27, 26] = image[15, 3] = 500.0  # hot pixels in the background ring (6-12 px away)
    c = box_centroid(image[None], np.array([x]), np.array([y]))
    assert c.background[0] == pytest.approx(2.0, abs=1e-6)
    assert abs(c.x[0] - x) < 0.005 and abs(c.y[0] - y) < 0.005


def test_failures_are_flagged_not_raised() -> None:
    flat = np.full((3, 32, 32), 4.0)
    star = render_star((32, 32), 15.0, 15.0, 1000.0) + 1.0
    flat[2] = np.nan
    flat[2, 14:17, 14:17] = star[14:17, 14:17]  # only the 3x3 core of the 7x7 box is good: 9 of 49 pixels
    c = box_centroid(flat, np.array([15.0, np.nan, 15.0]), np.array([15.0, 15.0, 15.0]))
    # A flat image has no net flux; a NaN start is not measured; a box more than half bad fails.
    assert not c.ok.any()
    assert np.isnan(c.x).all() and np.isnan(c.noise_pixels).all()


def test_masked_pixels_of_a_stack_are_left_out() -> None:
    image = render_star((32, 32), 15.3, 15.1, 1000.0) + 1.0
    mask = np.zeros((1, 32, 32), dtype=np.int32)
    mask[0, 20, 20] = 1 << 9
    bright = image.copy()
    bright[20, 20] = 1e6  # a masked pixel between the box and the ring (read by neither) ...
    bright[15, 18] = 1e6  # ... and one inside the box: masked, so left out of the moments
    mask[0, 15, 18] = 1 << 9
    c = box_centroid(Stack(bright[None], mask, 1 << 9), np.array([15.0]), np.array([15.0]))
    assert abs(c.x[0] - 15.3) < 0.01 and abs(c.y[0] - 15.1) < 0.01


def test_box_is_the_default_and_measure_records_noise_pixels_for_every_method() -> None:
    x = 15.0 + np.array([0.1, -0.3, 0.4])
    y = 15.0 + np.array([0.2, 0.35, -0.1])
    sigma = 1.42 / FWHM_PER_SIGMA
    cube = render_star((32, 32), x, y, 1000.0, fwhm=1.42) + 1.5
    info = ImageInfo(channel=2, mission="warm", subarray=True)
    assert PhotometryParams().centroid == "box"
    expected = [_expected_noise_pixels(a, b, sigma) for a, b in zip(x, y, strict=True)]
    for method in ("box", "moment", "gauss"):
        r = measure(cube, x, y, info, PhotometryParams(centroid=method, corrections="none",
                                                          aperture_correction="none"))
        np.testing.assert_allclose(r.noise_pixels, expected, rtol=1e-6)
    default = measure(cube, x, y, info, PhotometryParams(corrections="none", aperture_correction="none"))
    box = box_centroid(cube, x, y)
    np.testing.assert_array_equal(default.x_centroid, box.x)
    via_centroid = centroid(cube, x, y, np.zeros(3), method="box")
    np.testing.assert_array_equal(via_centroid.x, box.x)


def test_a_plane_gives_the_same_bits_alone_and_in_any_batch() -> None:
    rng = np.random.default_rng(9)
    n = 700  # more than numpy's nanmedian switches algorithm at
    x = 15.0 + rng.uniform(-0.5, 0.5, n)
    y = 15.0 + rng.uniform(-0.5, 0.5, n)
    cube = render_star((32, 32), x, y, 1000.0) + 2.0 + 0.05 * rng.standard_normal((n, 32, 32))
    cube[:, 3, 5] = np.nan  # a bad pixel in the ring: an even count of ring pixels in some planes
    whole = box_centroid(cube, x, y)
    for k in (0, 1, n - 1):
        alone = box_centroid(cube[k : k + 1], x[k : k + 1], y[k : k + 1])
        for name in ("x", "y", "noise_pixels", "background", "fwhm_x"):
            assert getattr(alone, name)[0] == getattr(whole, name)[k], name


# -- A/B: the vectorised box centroider against a plane-by-plane reference written from the module docstring ------


def _seq_sum(values: list[float]) -> float:
    """Left-to-right sum (the order the vectorised code adds in)."""
    total = 0.0
    for v in values:
        total += v
    return total


def _median(values: list[float]) -> float:
    s = sorted(values)
    c = len(s)
    return 0.5 * (s[(c - 1) // 2] + s[c // 2]) if c else np.nan


def _reference_pass(image: np.ndarray, cx: int, cy: int) -> tuple[float, ...]:
    """Steps 2-4 of box.py's docstring for one plane (NaN = bad), box centred on pixel (cx, cy): x, y, fwhm_x,
    fwhm_y, ok, noise pixels, background."""
    ny, nx = image.shape

    def pixel(dx: int, dy: int) -> float:
        r, c = cy + dy, cx + dx
        return float(image[r, c]) if 0 <= r < ny and 0 <= c < nx and np.isfinite(image[r, c]) else np.nan

    offsets = [(dx, dy) for dy in range(-12, 13) for dx in range(-12, 13)]  # row-major
    ring = [v for dx, dy in offsets if 6 <= max(abs(dx), abs(dy)) and not np.isnan(v := pixel(dx, dy))]
    level = np.nan
    if ring:
        first = _median(ring)
        mean = _seq_sum(ring) / len(ring)
        var = _seq_sum([(v - mean) * (v - mean) for v in ring]) / (len(ring) - 1) if len(ring) > 1 else np.nan
        kept = [v for v in ring if abs(v - first) <= 3.0 * np.sqrt(var)]
        second = first if len(kept) == len(ring) else _median(kept)
        level = second if min(len(ring), len(kept)) >= 24.5 else np.nan
    box = [(dx, dy, pixel(dx, dy) - level) for dx, dy in offsets if max(abs(dx), abs(dy)) <= 3]
    good = [(float(dx), float(dy), v) for dx, dy, v in box if not np.isnan(v)]
    total = _seq_sum([v for _, _, v in good])
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = np.float64(_seq_sum([v * dx for dx, _, v in good])) / total
        my = np.float64(_seq_sum([v * dy for _, dy, v in good])) / total
        beta = np.float64(total) ** 2 / _seq_sum([v * v for _, _, v in good])
        var_x = np.float64(_seq_sum([v * ((dx - mx) * (dx - mx)) for dx, _, v in good])) / total
        var_y = np.float64(_seq_sum([v * ((dy - my) * (dy - my)) for _, dy, v in good])) / total
    ok = len(good) > 24.5 and np.isfinite(level) and total > 0 and np.isfinite(mx) and np.isfinite(my)
    if not ok:
        return np.nan, np.nan, np.nan, np.nan, False, np.nan, level
    fwhm_x = FWHM_PER_SIGMA * np.sqrt(var_x - 1 / 12) if var_x - 1 / 12 > 0 else np.nan
    fwhm_y = FWHM_PER_SIGMA * np.sqrt(var_y - 1 / 12) if var_y - 1 / 12 > 0 else np.nan
    return cx + mx, cy + my, fwhm_x, fwhm_y, True, beta, level


def _reference_box(image: np.ndarray, x0: float, y0: float) -> tuple[float, ...]:
    """The box centroider of one plane, as box.py's docstring says: peak, pass, second pass."""
    ny, nx = image.shape
    if not (np.isfinite(x0) and np.isfinite(y0)):
        return np.nan, np.nan, np.nan, np.nan, False, np.nan, np.nan
    sx, sy = int(np.floor(x0 + 0.5)), int(np.floor(y0 + 0.5))
    best, peak = -np.inf, None
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            r, c = sy + dy, sx + dx
            if 0 <= r < ny and 0 <= c < nx and np.isfinite(image[r, c]) and (peak is None or image[r, c] > best):
                best, peak = image[r, c], (c, r)
    if peak is None:
        return np.nan, np.nan, np.nan, np.nan, False, np.nan, np.nan
    first = _reference_pass(image, *peak)
    x, y, ok = first[0], first[1], first[4]
    if ok and x > 0 and y > 0 and (int(np.floor(x + 0.5)), int(np.floor(y + 0.5))) != peak:
        return _reference_pass(image, int(np.floor(x + 0.5)), int(np.floor(y + 0.5)))
    return first


def _assert_same_as_reference(images: np.ndarray, x: np.ndarray, y: np.ndarray, got: object) -> None:
    names = ("x", "y", "fwhm_x", "fwhm_y", "ok", "noise_pixels", "background")
    for k in range(len(images)):
        expected = _reference_box(images[k], x[k], y[k])
        for name, want in zip(names, expected, strict=True):
            value = getattr(got, name)[k]
            # Stated tolerance: identical (the same values summed in the same order), NaN where NaN.
            assert value == want or (np.isnan(value) and np.isnan(want)), (k, name, value, want)


def test_box_centroid_equals_a_plane_by_plane_reference_on_synthetic_stars() -> None:
    rng = np.random.default_rng(21)
    n = 80
    x = 15.0 + rng.uniform(-3, 3, n)
    y = 15.0 + rng.uniform(-3, 3, n)
    x[:8], y[:8] = rng.uniform(-1, 32, 8), rng.uniform(-1, 32, 8)  # near and beyond the edges
    x[8] = np.nan
    cube = render_star((32, 32), x, y, 1000.0) + 2.0 + 0.5 * rng.standard_normal((n, 32, 32))
    cube[rng.random(cube.shape) < 0.03] = np.nan
    cube[rng.random(cube.shape) < 0.005] = 300.0  # hot pixels: the rejection at work
    cube[10:12, :, 16:] = np.nan  # half the ring bad
    cube[12] = 2.0  # flat: no net flux
    start_x, start_y = x + rng.normal(0, 0.8, n), y + rng.normal(0, 0.8, n)  # the peak search and second pass
    got = box_centroid(cube, start_x, start_y)
    assert got.ok.sum() > n // 2
    _assert_same_as_reference(cube, start_x, start_y, got)


def test_box_centroid_equals_a_plane_by_plane_reference_on_a_real_cube(shared: Path) -> None:
    stem = shared / "data/irac/r46466816/ch2/bcd/SPITZER_I2_46466816_0003_0000_2_"
    data = fits.getdata(f"{stem}bcd.fits").astype(np.float64)
    mask = fits.getdata(f"{stem}bimsk.fits")
    unc = fits.getdata(f"{stem}bunc.fits")
    clean = data.copy()
    clean[((mask & PROCBITS) != 0) | ~np.isfinite(unc)] = np.nan
    rng = np.random.default_rng(4)
    x, y = 15.0 + rng.normal(0, 1.0, len(data)), 15.0 + rng.normal(0, 1.0, len(data))
    got = box_centroid(Stack(data, mask, PROCBITS, unc), x, y)
    assert got.ok.all()
    _assert_same_as_reference(clean, x, y, got)
    # The cleaned cube as float32 (as measure() cuts it from float32 data: one take, sorted as float32).
    _assert_same_as_reference(clean, x, y, box_centroid(clean.astype(np.float32), x, y))


@pytest.mark.parametrize("n", [2, 3, 7, 8, 9, 16, 17, 33, 640, 2048])
@pytest.mark.parametrize("m", [1, 8, 49, 504])
def test_column_sums_add_in_order_whatever_the_number_of_planes(n: int, m: int) -> None:
    # _column_sum relies on numpy adding the rows of a C-contiguous array one after the other (no pairwise
    # summation across rows): checked against a loop on values whose sum depends on the order.
    rng = np.random.default_rng(m * 1000 + n)
    values = rng.standard_normal((m, n)) * 10.0 ** rng.integers(-8, 9, (m, n))
    expected = values[0].copy()
    for row in values[1:]:
        expected = expected + row
    np.testing.assert_array_equal(_column_sum(values), expected)
    np.testing.assert_array_equal(_column_sum(values[:, :1]), expected[:1])
