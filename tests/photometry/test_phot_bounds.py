"""Apertures and annuli as large as the image or larger: known answers, and working memory bounded by the image
(never by the radius), in measure() and in the step functions."""

import importlib
import math
import tracemalloc

import numpy as np
import pytest

from iracdb.errors import BadOption
from iracdb.flags import Flag
from iracdb.photometry import ImageInfo, PhotometryParams, measure
from iracdb.photometry.aperture import aperture_sum
from iracdb.photometry.background import annulus_background
from iracdb.photometry.psf import render_star

WARM_SUB = ImageInfo(channel=2, mission="warm", subarray=True)
PLAIN = dict(corrections="none", aperture_correction="none")
#: The diagonal of a 32 x 32 subarray image: a circle of this radius centred on the image holds all of it.
DIAGONAL = math.hypot(32, 32)
#: The module (``iracdb.photometry.measure`` the attribute is the function).
measure_module = importlib.import_module("iracdb.photometry.measure")


def _ones(n: int) -> np.ndarray:
    return np.ones((n, 32, 32))


@pytest.mark.parametrize("radius", [DIAGONAL, 1000.0, 1e6])
def test_an_aperture_over_the_whole_image_sums_the_image(radius):
    x = np.array([0.0, 15.3, 31.0, -0.4])
    y = np.array([0.0, 16.7, 31.0, 31.4])
    r = measure(_ones(4), x, y, WARM_SUB, PhotometryParams(radius_px=radius, **PLAIN))
    np.testing.assert_allclose(r.aperture_area_px, 1024.0, rtol=1e-9)
    np.testing.assert_allclose(r.raw_sum_mjy_sr, 1024.0, rtol=1e-9)
    assert np.all(r.flags & Flag.APERTURE_OFF_EDGE)
    s = aperture_sum(_ones(4), x, y, radius)
    np.testing.assert_allclose(s.area, 1024.0, rtol=1e-9)
    np.testing.assert_allclose(s.full_area, 1024.0, rtol=1e-9)


@pytest.mark.parametrize("r_out", [DIAGONAL, 1e6])
@pytest.mark.parametrize("method", ["median", "mean"])
def test_an_annulus_over_the_whole_image_holds_every_pixel_beyond_its_inner_radius(r_out, method):
    x, y = np.array([10.2, 3.0]), np.array([20.6, 29.0])
    level = np.full((2, 32, 32), 5.5)
    rows, cols = np.mgrid[0:32, 0:32]
    expected = [int(np.sum(np.hypot(cols - x[k], rows - y[k]) >= 3.0)) for k in range(2)]
    bkg = annulus_background(level, x, y, 3.0, r_out, method)
    np.testing.assert_array_equal(bkg.nominal_npix, expected)
    np.testing.assert_array_equal(bkg.npix, expected)
    np.testing.assert_allclose(bkg.level, 5.5, rtol=1e-14)
    r = measure(level, x, y, WARM_SUB, PhotometryParams(annulus_in_px=3.0, annulus_out_px=r_out, background=method,
                                                         **PLAIN))
    np.testing.assert_array_equal(r.background_npix, expected)
    np.testing.assert_allclose(r.background_mjy_sr, 5.5, rtol=1e-14)


@pytest.mark.parametrize("kwargs", [dict(radius_px=math.inf), dict(radius_px=math.nan),
                                    dict(annulus_out_px=math.inf), dict(annulus_in_px=math.nan),
                                    dict(max_shift_px=math.inf)])
def test_non_finite_radii_are_refused(kwargs):
    with pytest.raises(BadOption, match="finite"):
        PhotometryParams(**kwargs)


def test_non_finite_radii_are_refused_by_the_step_functions():
    with pytest.raises(BadOption, match="finite"):
        aperture_sum(_ones(1), np.array([5.0]), np.array([5.0]), math.inf)
    with pytest.raises(BadOption, match="finite"):
        annulus_background(_ones(1), np.array([5.0]), np.array([5.0]), 3.0, math.inf)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_image_not_by_the_radius():
    """2048 subarray planes (the most a reduce chunk holds): the peak of measure()'s working arrays is the same
    for an aperture of the image's diagonal and for one of a million pixels, and stays within a bound that does
    not depend on the radius or on the number of planes."""
    n = 2048
    rng = np.random.default_rng(5)
    cube = render_star((32, 32), 15.2, 16.1, 300.0) + rng.normal(1.0, 0.1, (n, 32, 32))
    x = np.full(n, 15.0)
    peaks = {}
    for radius, annulus in [(DIAGONAL, (3.0, 7.0)), (1e6, (3.0, 7.0)), (3.0, (3.0, DIAGONAL)), (3.0, (3.0, 1e6))]:
        params = PhotometryParams(radius_px=radius, annulus_in_px=annulus[0], annulus_out_px=annulus[1], **PLAIN)
        peaks[radius, annulus] = _peak_bytes(lambda params=params: measure(cube, x, x, WARM_SUB, params))
    # Before the windows were clipped to the image, a 1e6 px radius asked for a 29 TiB index grid; a 45 px one
    # for ~1.5 GB at 2048 planes.
    assert max(peaks.values()) < 400e6, peaks
    assert peaks[1e6, (3.0, 7.0)] <= 1.05 * peaks[DIAGONAL, (3.0, 7.0)], peaks
    assert peaks[3.0, (3.0, 1e6)] <= 1.05 * peaks[3.0, (3.0, DIAGONAL)], peaks


@pytest.mark.parametrize("centroid", ["moment", "gauss"])
def test_batches_of_planes_give_the_numbers_of_one_batch(monkeypatch, centroid):
    """measure() splits a stack into batches of planes when their windows are large: bit for bit one batch."""
    rng = np.random.default_rng(9)
    n = 37
    x = 15.0 + rng.uniform(-0.5, 0.5, n)
    y = 16.0 + rng.uniform(-0.5, 0.5, n)
    cube = render_star((32, 32), x, y, 500.0) + rng.normal(1.0, 0.2, (n, 32, 32))
    cube[rng.random(cube.shape) < 0.02] = np.nan
    unc = np.full(cube.shape, 0.2)
    mask = np.zeros(cube.shape, dtype=np.int16)
    mask[rng.random(cube.shape) < 0.01] = 512
    params = PhotometryParams(centroid=centroid, **PLAIN)
    whole = measure(cube, np.round(x), np.round(y), WARM_SUB, params, uncertainty=unc, mask=mask)
    monkeypatch.setattr(measure_module, "MAX_WINDOW_PIXELS", 5 * 23 * 23)  # 5 planes per batch at 3, 3-7 px
    batched = measure(cube, np.round(x), np.round(y), WARM_SUB, params, uncertainty=unc, mask=mask)
    for name, value in whole.as_dict().items():
        np.testing.assert_array_equal(getattr(batched, name), value, err_msg=name)
