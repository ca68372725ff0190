"""Proper motion: a star's ICRS position at another time (pure numpy).

The method is linear space motion seen from far away: the star's unit vector ``p`` moves along the tangent plane
at a constant rate, ``r(t) = p + t (mu_alpha* e_alpha + mu_delta e_delta)``, and the position at ``t`` is the
direction of ``r(t)``. This is the rigorous propagation (as ERFA's ``starpm``/astropy's
:meth:`~astropy.coordinates.SkyCoord.apply_space_motion`) for a star with no parallax and no radial velocity; it is
valid across the poles and for any time span. Left out: parallax (annual, not secular) and perspective
acceleration from the radial velocity (the proper motion changes as the star's distance does): negligible for
almost every star, largest for the nearest fast ones (Barnard's star, the extreme case: 64 mas, 0.05 IRAC pixel,
over 10 years). Without parallax and radial velocity the result equals astropy's ``apply_space_motion`` to
1e-7 mas (``tests/test_api_targets.py``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

#: Milliarcseconds per radian.
MAS_PER_RAD = 180.0 / np.pi * 3600e3
#: Days per Julian year.
DAYS_PER_JULIAN_YEAR = 365.25


def propagate(
    ra_deg: float, dec_deg: float, pm_ra_cosdec_mas_per_yr: float, pm_dec_mas_per_yr: float, years: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """The ICRS position of a star ``years`` Julian years after the epoch of ``(ra_deg, dec_deg)``.

    Parameters
    ----------
    ra_deg, dec_deg : float
        ICRS position at the reference epoch, degrees.
    pm_ra_cosdec_mas_per_yr, pm_dec_mas_per_yr : float
        Proper motion, mas/yr: in right ascension (times cos(dec), as Gaia and astropy give it) and in declination.
    years : array_like
        Time since the reference epoch, Julian years (365.25 d); negative before it.

    Returns
    -------
    ra_deg, dec_deg : numpy.ndarray
        The positions, degrees (RA in [0, 360)), shaped as ``years``.
    """
    t = np.asarray(years, dtype=np.float64)
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    sin_ra, cos_ra, sin_dec, cos_dec = np.sin(ra), np.cos(ra), np.sin(dec), np.cos(dec)
    position = np.array([cos_dec * cos_ra, cos_dec * sin_ra, sin_dec])
    east = np.array([-sin_ra, cos_ra, 0.0])
    north = np.array([-sin_dec * cos_ra, -sin_dec * sin_ra, cos_dec])
    rate = (pm_ra_cosdec_mas_per_yr * east + pm_dec_mas_per_yr * north) / MAS_PER_RAD  # radians per year
    moved = position[:, np.newaxis] + rate[:, np.newaxis] * t.reshape(-1)
    x, y, z = moved / np.linalg.norm(moved, axis=0)
    ra_out = np.degrees(np.arctan2(y, x)) % 360.0
    dec_out = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra_out.reshape(t.shape), dec_out.reshape(t.shape)


__all__ = ["DAYS_PER_JULIAN_YEAR", "MAS_PER_RAD", "propagate"]
