"""Where the target is: sky -> pixel through the header's WCS (with SIP), or the brightest source near a position.

Pixel coordinates are 0-based with the centre of the bottom-left pixel at (0, 0) (``x`` column, ``y`` row).
A position that cannot be computed is returned as NaN, which :func:`iracdb.photometry.measure` flags as
:attr:`~iracdb.flags.Flag.COORD_CONVERSION_FAILED`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from iracdb.photometry.aperture import windows

if TYPE_CHECKING:  # astropy is imported where a WCS is made: the reduction's workers need only brightest_near
    import astropy.io.fits
    import astropy.wcs


def celestial_wcs(header: astropy.io.fits.Header) -> astropy.wcs.WCS:
    """The 2-D celestial WCS of an IRAC header (also for a 3-D subarray cube), SIP distortion included.

    Raises
    ------
    ValueError
        The header has no usable WCS (astropy's ``WcsError`` is a ``ValueError``).
    """
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        # IRAC headers carry legacy cards (RADECSYS, DATE-OBS formats) that astropy fixes and reports; harmless.
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise ValueError("the header has no celestial WCS")
    return wcs


def sky_to_pixel(
    header: astropy.io.fits.Header, ra_deg: ArrayLike, dec_deg: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Pixel position of sky coordinates through the header's WCS with SIP distortion.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Image header (full-array frame or subarray cube).
    ra_deg, dec_deg : array_like
        ICRS right ascension and declination, degrees.

    Returns
    -------
    x, y : numpy.ndarray
        Pixel coordinates (0-based, centre of the bottom-left pixel at (0, 0)); NaN when the WCS is missing or
        invalid or the inversion does not converge.
    """
    from astropy.wcs import NoConvergence

    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    nan = np.full(np.broadcast(ra, dec).shape, np.nan)
    try:
        wcs = celestial_wcs(header)
        x, y = wcs.all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=100)
    except (ValueError, KeyError, NoConvergence):
        return nan, nan.copy()
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def pointing_pixel(header: astropy.io.fits.Header) -> tuple[float, float]:
    """Pixel position of the commanded pointing (``RA_REF``, ``DEC_REF``); NaN if missing or not convertible."""
    ra, dec = header.get("RA_REF"), header.get("DEC_REF")
    if not isinstance(ra, int | float) or not isinstance(dec, int | float):
        return np.nan, np.nan
    x, y = sky_to_pixel(header, ra, dec)
    return float(x), float(y)


def brightest_near(
    stack: NDArray, x: ArrayLike, y: ArrayLike, radius_px: float = 5.0, box: int = 3
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Pixel of the brightest source within ``radius_px`` of ``(x, y)`` on each plane (automatic target mode).

    "Brightest" is the largest sum over a ``box`` x ``box`` square (bad pixels count as 0), so that single hot
    pixels and cosmic-ray hits do not win over a star.

    Parameters
    ----------
    stack : numpy.ndarray
        ``(n, ny, nx)`` images; NaN pixels are ignored.
    x, y : array_like
        Search centre per plane (or one for all), image pixels; e.g. :func:`pointing_pixel` or a given pixel.
    radius_px : float
        Search radius, pixels (box centres within this distance).
    box : int
        Side of the summing square, pixels (odd).

    Returns
    -------
    x, y : numpy.ndarray
        ``(n,)`` integer pixel positions as floats (a starting point for the centroid); NaN where no pixel with
        positive flux lies within the radius.
    """
    n = stack.shape[0]
    xs = np.broadcast_to(np.asarray(x, dtype=np.float64), (n,))
    ys = np.broadcast_to(np.asarray(y, dtype=np.float64), (n,))
    b = box // 2
    half = int(np.ceil(radius_px)) + b
    win = windows(stack, xs, ys, half)
    v = np.where(np.isfinite(win.values), win.values, 0.0)
    s = 2 * half + 1
    c = np.cumsum(np.cumsum(np.pad(v, ((0, 0), (1, 0), (1, 0))), axis=1), axis=2)
    k = 2 * b + 1
    sums = c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]  # box sums centred at b..s-b-1
    centres = np.arange(b, s - b)
    px = centres[None, None, :] + win.x0[:, None, None]
    py = centres[None, :, None] + win.y0[:, None, None]
    near = (px - xs[:, None, None]) ** 2 + (py - ys[:, None, None]) ** 2 <= radius_px**2
    inside = ~win.outside[:, b : s - b, b : s - b]
    sums = np.where(near & inside, sums, -np.inf)
    best = np.argmax(sums.reshape(n, -1), axis=1)
    iy, ix = np.unravel_index(best, sums.shape[1:])
    found = np.take_along_axis(sums.reshape(n, -1), best[:, None], axis=1)[:, 0] > 0
    bx = np.where(found, ix + b + win.x0, np.nan).astype(np.float64)
    by = np.where(found, iy + b + win.y0, np.nan).astype(np.float64)
    return bx, by
