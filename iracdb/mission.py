"""The one place that says when the cryogenic mission ended (irac-photometry.md §1)."""

import math

from iracdb.errors import BadOption

#: Last day of the cryogenic mission (MJD, 2009-05-15): frames with ``MJD_OBS <= CRYO_END_MJD`` are cryo.
CRYO_END_MJD = 54968.0


def mission_from_mjd(mjd_obs: float) -> str:
    """``"cryo"`` for ``MJD_OBS <= 54968`` (2009-05-15), else ``"warm"``."""
    if not math.isfinite(mjd_obs):
        raise BadOption(f"MJD_OBS must be a finite number to tell cryo from warm, not {mjd_obs!r}")
    return "cryo" if mjd_obs <= CRYO_END_MJD else "warm"
