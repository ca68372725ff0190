"""Real IRAC data: XO-3 warm ch2 subarray cubes (AOR 46466816) and a warm ch2 full-array frame (AOR 46987776)."""

import numpy as np
import pytest
from astropy.io import fits
from photutils.aperture import CircularAperture, aperture_photometry

from iracdb.fitsio.image import image_info
from iracdb.flags import PROCBITS, UNUSABLE
from iracdb.photometry import measure
from iracdb.photometry.targets import brightest_near, celestial_wcs, pointing_pixel, sky_to_pixel


def _cubes(shared):
    folder = shared / "data" / "irac" / "r46466816" / "ch2" / "bcd"
    files = sorted(folder.glob("*_bcd.fits"))
    assert len(files) == 11
    for f in files:
        data, header = fits.getdata(f, header=True)
        unc = fits.getdata(f.with_name(f.name.replace("_bcd", "_bunc")))
        mask = fits.getdata(f.with_name(f.name.replace("_bcd", "_bimsk")))
        yield f.name, data, header, unc, mask


def test_xo3_raw_sums_equal_photutils(shared):
    planes = 0
    for name, data, header, unc, mask in _cubes(shared):
        info = image_info(header)
        assert info.subarray and info.channel == 2 and info.mission == "warm"
        x0, y0 = brightest_near(data, *pointing_pixel(header))
        r = measure(data, x0, y0, info, uncertainty=unc, mask=mask)
        assert len(r) == data.shape[0] == 64  # every plane has a result
        bad = ~np.isfinite(data) | ((mask & PROCBITS) != 0) | ~np.isfinite(unc)
        for k in range(64):
            if not np.isfinite(r.x[k]):
                assert r.flags[k] & UNUSABLE, f"{name}[{k}] failed without an unusable flag"
                continue
            ap = CircularAperture((r.x[k], r.y[k]), r=3.0)
            img = np.where(bad[k], 0.0, data[k].astype(np.float64))
            ref = aperture_photometry(img, ap, method="exact", mask=bad[k])["aperture_sum"][0]
            # Stated tolerance: 1e-6 relative (the overlap areas agree with photutils' to ~1e-11 px²).
            assert r.raw_sum_mjy_sr[k] == pytest.approx(ref, rel=1e-6), f"{name}[{k}]"
            planes += 1
        # Failed planes keep their row and say why; usable ones have finite numbers.
        ok = (r.flags & UNUSABLE) == 0
        assert np.all(np.isfinite(r.flux_mjy[ok])) and np.all(np.isfinite(r.flux_err_mjy[ok]))
        # A steady star: fluxes within a few percent of the median, errors of the right size (~0.5%).
        med = np.median(r.flux_mjy[ok])
        assert 40 < med < 80  # XO-3 at 4.5 um, mJy
        assert np.median(np.abs(r.flux_mjy[ok] / med - 1)) < 0.01
        assert 0.001 < np.median(r.flux_err_mjy[ok] / r.flux_mjy[ok]) < 0.02
    assert planes > 600


def test_sky_to_pixel_round_trip_with_sip(shared):
    f = shared / "data" / "irac" / "r46987776" / "ch2" / "bcd"
    header = fits.getheader(next(f.glob("*_cbcd.fits")))
    wcs = celestial_wcs(header)
    assert wcs.sip is not None
    xs = np.array([0.0, 10.3, 127.5, 200.7, 255.0])
    ys = np.array([0.0, 240.2, 127.5, 30.1, 255.0])
    ra, dec = wcs.all_pix2world(xs, ys, 0)
    x, y = sky_to_pixel(header, ra, dec)
    np.testing.assert_allclose(x, xs, atol=1e-6)  # px
    np.testing.assert_allclose(y, ys, atol=1e-6)
    # The reference pixel (1-based CRPIX) is 0-based CRPIX - 1, where SIP vanishes.
    x, y = sky_to_pixel(header, header["CRVAL1"], header["CRVAL2"])
    assert float(x) == pytest.approx(header["CRPIX1"] - 1, abs=1e-8)
    assert float(y) == pytest.approx(header["CRPIX2"] - 1, abs=1e-8)


def test_full_frame_measured(shared):
    f = next((shared / "data" / "irac" / "r46987776" / "ch2" / "bcd").glob("*_cbcd.fits"))
    data, header = fits.getdata(f, header=True)
    unc = fits.getdata(f.with_name(f.name.replace("_cbcd", "_cbunc")))
    info = image_info(header)
    assert not info.subarray and data.shape == (256, 256)
    # The brightest source within 20 px of the array centre.
    x0, y0 = brightest_near(data[None], 127.5, 127.5, radius_px=20)
    r = measure(data, x0, y0, info, uncertainty=unc)
    assert len(r) == 1 and not r.flags[0] & UNUSABLE
    np.testing.assert_array_equal(r.x_full, r.x)
    ref = aperture_photometry(np.nan_to_num(data.astype(np.float64)), CircularAperture((r.x[0], r.y[0]), 3.0),
                              method="exact", mask=~np.isfinite(data) | ~np.isfinite(unc))["aperture_sum"][0]
    assert r.raw_sum_mjy_sr[0] == pytest.approx(ref, rel=1e-6)


def test_missing_wcs_gives_nan():
    x, y = sky_to_pixel(fits.Header({"NAXIS": 2, "NAXIS1": 10, "NAXIS2": 10}), 10.0, 20.0)
    assert np.isnan(x) and np.isnan(y)
    assert np.isnan(pointing_pixel(fits.Header())[0])
