"""Units: MJy/sr summed over pixels -> mJy, and the mission from the date (irac-photometry.md §1-§2)."""

from __future__ import annotations

import math

from iracdb.errors import BadOption
from iracdb.mission import CRYO_END_MJD, mission_from_mjd

__all__ = ["CRYO_END_MJD", "header_pixel_sr", "mission_from_mjd", "mjy_per_mjy_sr_px", "nominal_pixel_sr"]

#: Arcseconds per radian.
ARCSEC_PER_RAD = 206264.806
#: Nominal pixel width per channel, arcsec.
NOMINAL_PIXEL_ARCSEC: dict[int, float] = {1: 1.221, 2: 1.213, 3: 1.222, 4: 1.220}


def nominal_pixel_sr(channel: int) -> float:
    """Nominal pixel solid angle of ``channel``, steradians (width² / 206264.806²)."""
    if channel not in NOMINAL_PIXEL_ARCSEC:
        raise BadOption(f"IRAC channel must be 1, 2, 3 or 4, not {channel!r}")
    return (NOMINAL_PIXEL_ARCSEC[channel] / ARCSEC_PER_RAD) ** 2


def header_pixel_sr(pxscal1_arcsec: float, pxscal2_arcsec: float) -> float:
    """Pixel solid angle from the header's ``PXSCAL1``/``PXSCAL2`` (arcsec/px, signs ignored), steradians."""
    area = abs(pxscal1_arcsec * pxscal2_arcsec)
    if not (math.isfinite(area) and area > 0):
        raise BadOption(f"PXSCAL1/PXSCAL2 must be non-zero numbers, not {pxscal1_arcsec!r}, {pxscal2_arcsec!r}")
    return area / ARCSEC_PER_RAD**2


def mjy_per_mjy_sr_px(pixel_sr: float) -> float:
    """mJy per (MJy/sr summed over pixels): ``pixel_sr * 1e9``."""
    return pixel_sr * 1e9
