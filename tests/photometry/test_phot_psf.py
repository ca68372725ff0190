"""The synthetic PSF renderer: exact pixel integrals, exact totals, closed-form enclosed energy."""

import numpy as np
import pytest
from scipy import integrate

from iracdb.errors import BadOption
from iracdb.photometry.psf import components, enclosed_fraction, render_star


@pytest.mark.parametrize("model", ["gauss", "irac"])
def test_total_flux_exact_on_a_large_image(model):
    # The halo of "irac" (sigma 7 px) needs a wide image: 400 px is > 25 sigma from the centre.
    img = render_star((400, 400), 200.37, 199.81, 123.4, fwhm=1.42, model=model)
    assert img.sum() == pytest.approx(123.4, rel=1e-12)


@pytest.mark.parametrize("model", ["gauss", "irac"])
def test_pixel_value_is_pixel_integral(model):
    x0, y0, fwhm = 10.3, 11.8, 1.6
    img = render_star((24, 24), x0, y0, 1.0, fwhm=fwhm, model=model)

    def psf(y, x):
        return sum(w / (2 * np.pi * s**2) * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * s**2))
                   for w, s in components(model, fwhm))

    for iy, ix in [(12, 10), (11, 11), (8, 14)]:
        val, _ = integrate.dblquad(psf, ix - 0.5, ix + 0.5, iy - 0.5, iy + 0.5, epsabs=1e-13)
        assert img[iy, ix] == pytest.approx(val, rel=1e-9, abs=1e-14)


def test_centre_convention_and_batch():
    stack = render_star((32, 32), np.array([15.0, 3.0]), np.array([15.0, 20.0]), np.array([1.0, 2.0]))
    assert stack.shape == (2, 32, 32)
    assert np.unravel_index(stack[0].argmax(), (32, 32)) == (15, 15)
    assert np.unravel_index(stack[1].argmax(), (32, 32)) == (20, 3)  # [y, x]
    np.testing.assert_allclose(stack[1], render_star((32, 32), 3.0, 20.0, 2.0), rtol=0, atol=0)
    # A centred source is symmetric.
    sym = render_star((31, 31), 15.0, 15.0, model="irac")
    np.testing.assert_allclose(sym, sym[::-1, ::-1], rtol=1e-13, atol=0)
    np.testing.assert_allclose(sym, sym.T, rtol=1e-13, atol=0)


@pytest.mark.parametrize("model", ["gauss", "irac"])
@pytest.mark.parametrize("fwhm", [1.2, 1.8, 3.0])
def test_fwhm_and_enclosed_fraction(model, fwhm):
    comps = components(model, fwhm)
    assert sum(w for w, _ in comps) == pytest.approx(1.0, abs=1e-15)
    prof = sum(w / s**2 * np.exp(-((fwhm / 2) ** 2) / (2 * s**2)) for w, s in comps)
    peak = sum(w / s**2 for w, s in comps)
    assert prof == pytest.approx(peak / 2, rel=1e-10)
    # Enclosed fraction against a numerical radial integral of the profile.
    for r in (1.0, 3.0, 10.0):
        num, _ = integrate.quad(
            lambda t: sum(w / s**2 * np.exp(-(t**2) / (2 * s**2)) for w, s in comps) * t, 0, r)
        assert enclosed_fraction(r, model, fwhm) == pytest.approx(num, rel=1e-10)


def test_bad_model():
    with pytest.raises(BadOption):
        render_star((8, 8), 3, 3, model="moffat")
    with pytest.raises(BadOption):
        render_star((8, 8), 3, 3, fwhm=0)
