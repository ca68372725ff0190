"""The box centroider (box_centroider.pro's convention) and its noise pixels: known answers on synthetic stars."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from iracdb.photometry import ImageInfo, PhotometryParams, measure
from iracdb.photometry.aperture import Stack
from iracdb.photometry.box import box_centroid
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
