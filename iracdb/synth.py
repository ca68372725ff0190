"""A synthetic Spitzer/IRAC Level-1 archive, for the test suites, the benchmarks and ``iracdb demo``.

:func:`write_archive` writes the archive's download layout
``OUT_DIR/r<AORKEY>/ch<N>/bcd/SPITZER_I<N>_<AORKEY>_<EXPID:04>_<DCENUM:04>_<VER>_<type>.fits``:
full-array frames (256x256) and subarray cubes (64 planes of 32x32), each with its uncertainty (``_bunc`` /
``_cbunc``) and bit-mask (``_bimsk``) companions, and for subarray cubes the ``_sub2d``/``_unc2d``/``_cov2d``/
``_msk2d`` products. Headers imitate the real ones (~300-670 cards: every keyword of
``irac-photometry.md`` §1, a TAN-SIP WCS with per-channel distortion, section headings, COMMENT and HISTORY
cards). Each image holds one point source of known flux at a known RA/Dec, a flat background, Gaussian noise that
matches the written uncertainty, and a few NaN (bad) pixels flagged in the mask. Optionally the star's flux is
multiplied by the pixel-phase x array-location response of §3 so that reduction tests can check it is removed.

The truth (one record per full-array frame or subarray plane) comes back as :class:`SynthArchive` and is written
next to the archive as ``truth.csv``.

Everything is computed from the seed: the same seed writes byte-identical files (no wall-clock time, no FITS
checksums). The generator never reads real data; the keyword set is written here, modelled on real S18/S19 headers.

Conventions: pixel positions are 0-based with the centre of the first pixel at (0, 0) (numpy index ``[y, x]``),
as in ``astropy.wcs`` with ``origin=0`` and in §3. Fluxes are mJy; surface brightness MJy/sr; times MJD (UTC).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import erfa
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from iracdb.errors import BadOption, CannotWrite, OutputExists
from iracdb.flags import PROCBITS
from iracdb.outputs import check_outputs
from iracdb.photometry.psf import IRAC_FWHM_PX
from iracdb.photometry.units import CRYO_END_MJD, nominal_pixel_sr

__all__ = [
    "CRYO_END_MJD",
    "TRUTH_COLUMNS",
    "AorSpec",
    "SynthArchive",
    "TruthRecord",
    "default_aors",
    "many_aors",
    "pixel_solid_angle_sr",
    "write_archive",
]

# ----------------------------------------------------------------------------------------------------------------
# Instrument facts (irac-photometry.md §1-§3; values the real headers carry, rounded as they are)
# ----------------------------------------------------------------------------------------------------------------

#: Header pixel scales (arcsec, |PXSCAL1|, PXSCAL2) at the reference pixel; close to, not equal to, the nominal.
_PXSCAL_ARCSEC = {
    ("FULL", 1): (1.22334, 1.21850),
    ("FULL", 2): (1.21566, 1.21548),
    ("FULL", 3): (1.22188, 1.21942),
    ("FULL", 4): (1.21845, 1.21955),
    ("SUB", 1): (1.21440, 1.22114),
    ("SUB", 2): (1.20566, 1.21232),
    ("SUB", 3): (1.22045, 1.22461),
    ("SUB", 4): (1.21722, 1.22163),
}
_GAIN = {1: 3.7, 2: 3.71, 3: 3.8, 4: 3.8}
_FLUXCONV = {
    "cryo": {1: 0.1069, 2: 0.1382, 3: 0.5858, 4: 0.2026},
    "warm": {1: 0.1257, 2: 0.1447},
}
_CREATOR = {"cryo": "S18.25.0", "warm": "S19.2.0"}
#: Typical background levels (MJy/sr): zodiacal light and interstellar-medium estimates.
_ZODY = {1: 0.12, 2: 0.17, 3: 1.8, 4: 6.5}
_ISM = {1: 0.02, 2: 0.013, 3: 0.15, 4: 0.5}
#: Default star fluxes (mJy), roughly a K ~ 9 star.
_DEFAULT_FLUX_MJY = {1: 100.0, 2: 65.0, 3: 42.0, 4: 23.0}
_MASK_BAD = 16384
_MASK_RADHIT = 512
_SUB_PLANES = 64
_CARD = 80
_BLOCK = 2880


@dataclass(frozen=True)
class _FrameMode:
    framtime: float  # s
    samptime: float  # s
    afowlnum: int
    awaitper: int  # in units of SAMPTIME

    @property
    def exptime(self) -> float:
        return round((self.awaitper + self.afowlnum) * self.samptime, 4)


# FRAMTIME = (AWAITPER + 2 AFOWLNUM) SAMPTIME and EXPTIME = (AWAITPER + AFOWLNUM) SAMPTIME, as in real headers.
_FULL_MODES = {
    0.6: _FrameMode(0.6, 0.2, 1, 1),
    1.2: _FrameMode(1.2, 0.2, 2, 2),
    2.0: _FrameMode(2.0, 0.2, 4, 2),
    12.0: _FrameMode(12.0, 0.2, 8, 44),
    30.0: _FrameMode(30.0, 0.2, 16, 118),
    100.0: _FrameMode(100.0, 0.2, 16, 468),
}
_SUB_MODES = {
    0.1: _FrameMode(0.1, 0.01, 2, 6),
    0.4: _FrameMode(0.4, 0.01, 8, 24),
    2.0: _FrameMode(2.0, 0.01, 8, 184),
}
#: HDR mode pairs a short frame with each long one.
_HDR_SHORT = {12.0: 0.6, 30.0: 1.2, 100.0: 1.2}
#: Read noise (electrons) by read mode and frame time, channels 1..4 (approximate handbook values).
_RONOISE = {
    ("SUB", 0.1): (23.7, 23.7, 13.0, 11.5),
    ("SUB", 0.4): (12.1, 12.1, 10.4, 9.2),
    ("SUB", 2.0): (9.4, 9.4, 7.8, 6.9),
    ("FULL", 0.6): (22.4, 23.7, 13.0, 11.5),
    ("FULL", 1.2): (22.4, 23.7, 13.0, 11.5),
    ("FULL", 2.0): (11.8, 12.1, 9.1, 7.1),
    ("FULL", 12.0): (12.1, 12.1, 9.1, 7.1),
    ("FULL", 30.0): (10.0, 10.1, 8.9, 6.8),
    ("FULL", 100.0): (8.4, 16.0, 7.7, 6.7),
}
_FOV = {
    ("FULL", 1): (68, "IRAC_Center_of_3.6&5.8umArray"),
    ("FULL", 3): (68, "IRAC_Center_of_3.6&5.8umArray"),
    ("FULL", 2): (74, "IRAC_Center_of_4.5&8.0umArray"),
    ("FULL", 4): (74, "IRAC_Center_of_4.5&8.0umArray"),
    ("SUB", 1): (75, "IRAC_Center_of_3.6umSub-Array"),
    ("SUB", 2): (77, "IRAC_Center_of_4.5umSub-Array"),
    ("SUB", 3): (79, "IRAC_Center_of_5.8umSub-Array"),
    ("SUB", 4): (81, "IRAC_Center_of_8.0umSub-Array"),
}
#: Cycling dither pattern offsets (pixels) at the 'medium' scale; 'small' is half, 'large' twice.
_DITHER_MEDIUM_PX = (
    (0.0, 0.0),
    (7.32, 4.13),
    (-6.21, 8.47),
    (-9.74, -3.18),
    (3.87, -10.61),
    (11.83, -2.69),
    (-2.41, 12.54),
    (-12.92, 1.63),
    (5.58, 11.29),
    (-4.73, -12.35),
    (12.46, 8.92),
    (-11.17, -9.84),
)
_DITHER_SCALE = {"small": 0.5, "medium": 1.0, "large": 2.0}

# Distortion (SIP, detector -> sky) of the real channel-2 headers, full array and subarray (A_p_q, B_p_q).
_SIP_TERMS = (
    (0, 2), (0, 3), (0, 4), (0, 5), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0),
    (2, 1), (2, 2), (2, 3), (3, 0), (3, 1), (3, 2), (4, 0), (4, 1), (5, 0),
)  # fmt: skip
_SIP_BASE = {
    "FULL": (
        (6.3419e-07, -2.4851e-09, 7.4353e-13, -7.7919e-14, 3.04e-05, -1.9759e-07, -4.1504e-11, 4.2184e-13,
         2.1231e-05, 6.9765e-09, -3.1891e-11, -1.0864e-13, -1.6079e-07, 2.1279e-11, 1.2951e-13, -1.2411e-10,
         2.167e-14, -4.0834e-13),
        (3.5372e-05, -1.6567e-07, -2.5109e-11, -8.132e-13, 1.8711e-05, -1.7651e-10, -8.6718e-12, 3.4181e-13,
         3.8984e-06, -2.057e-07, -2.5154e-11, 6.99e-13, -2.9019e-09, 8.8986e-13, -5.0511e-14, 1.81e-11,
         9.3724e-13, 1.5535e-13),
    ),
    "SUB": (
        (1.739e-05, -2.566e-08, -8.386e-11, -7.776e-14, -8.139e-06, -1.666e-07, 1.579e-10, 4.25e-13,
         6.778e-05, -1.684e-08, -1.073e-10, -1.102e-13, -1.519e-07, 3.992e-11, 1.306e-13, 9.12e-11,
         2.092e-14, -4.119e-13),
        (-2.71e-05, -2.71e-07, -4.844e-10, -8.15e-13, 5.474e-05, -2.181e-08, -1.258e-11, 3.409e-13,
         -1.05e-05, -1.247e-07, 2.097e-10, 7.013e-13, -3.407e-08, -4.007e-10, -5.121e-14, 3.449e-11,
         9.396e-13, 1.575e-13),
    ),
}  # fmt: skip

ReadMode = Literal["FULL", "SUB"]
Mission = Literal["cryo", "warm"]
FULL_TYPES = ("bcd", "bunc", "bimsk", "cbcd", "cbunc")
SUB_TYPES = ("bcd", "bunc", "bimsk", "sub2d", "unc2d", "cov2d", "msk2d")


def pixel_solid_angle_sr(channel: int) -> float:
    """Nominal solid angle of one pixel of ``channel`` in steradians (§2: width**2 / 206264.806**2).

    The star's flux (mJy) becomes pixel values (MJy/sr) with this: sum(pixels) * omega * 1e9 = flux.
    """
    return nominal_pixel_sr(channel)


# ----------------------------------------------------------------------------------------------------------------
# Public data classes
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AorSpec:
    """What one synthetic AOR holds.

    Parameters
    ----------
    aorkey : int
        The AOR key (``AORKEY``), a positive integer; unique within an archive.
    channels : tuple of int
        IRAC channels observed (1-4). Warm AORs may only use 1 and 2. Real full-array AORs carry ch1+ch3 or
        ch2+ch4; every listed channel gets the star.
    read_mode : {'FULL', 'SUB'}
        Full array (256x256 frames) or subarray (64-plane cubes of 32x32).
    n_exposures : int
        Exposures (DCEs, i.e. files of each type) per channel. With ``hdr=True`` they alternate short and long.
    mission : {'cryo', 'warm'}
        Cryogenic (``MJD_OBS <= 54968``) or warm mission; must agree with ``mjd_start``.
    mjd_start : float or None
        MJD (UTC) of the first exposure. None: a date in the mission derived from ``aorkey`` (2008 for cryo,
        2012-2013 for warm), so that different AORs do not overlap in time.
    framtime_s : float
        Frame time in seconds: 2, 12, 30 or 100 for full array (0.6, 1.2 too), 0.1, 0.4 or 2 for subarray.
        With ``hdr=True`` this is the long frame.
    object_name : str
        ``OBJECT``; also used in ``AORLABEL`` unless ``aorlabel`` is given.
    ra_deg, dec_deg : float
        ICRS position of the star (degrees); also the commanded position ``RA_REF``/``DEC_REF``.
    flux_mjy : float or mapping of int to float or None
        Star flux in mJy, one value for every channel or one per channel; None uses a default per channel.
    pm_ra_arcsec_yr, pm_dec_arcsec_yr : float
        Proper motion written to ``PM_RA``/``PM_DEC`` (arcsec/yr). The star is placed at ``ra_deg, dec_deg``.
    star_xy_px : tuple of float or None
        Nominal 0-based pixel position of the star before dither and jitter; None: near the array centre
        (about (127.6, 128.3)) for full array, about (15.5, 15.5) for subarray.
    dithered : bool
        Full array only: move the star between exposures with a cycling dither pattern (writes ``CYCLENUM``,
        ``DITHPOS``, ``DITHSCAL``).
    dither_scale : {'small', 'medium', 'large'}
        Dither scale; 'medium' moves the star up to ~13 px.
    hdr : bool
        Full array only: High Dynamic Range mode (``HDRMODE=T``): exposures alternate a short and a long frame.
    pa_deg : float or None
        Position angle of the array's y axis, degrees E of N; None draws one from the seed.
    fwhm_px : float or mapping of int to float or None
        PSF FWHM in pixels, one value or one per channel; None uses 1.66", 1.72", 1.88", 1.98" (ch1..4) over the
        nominal pixel widths (:data:`iracdb.photometry.psf.IRAC_FWHM_PX`).
    psf_model : {'gauss', 'irac'}
        PSF model of :func:`iracdb.photometry.psf.render_star`.
    background_mjy_sr : float or mapping of int to float or None
        Flat background (MJy/sr) = ``ZODY_EST + ISM_EST``; None uses typical values per channel. It varies by
        ~1% between exposures; the truth records the level of each image.
    file_types : tuple of str or None
        Files to write per exposure. Full array: any of ``bcd, bunc, bimsk, cbcd, cbunc``; subarray: any of
        ``bcd, bunc, bimsk, sub2d, unc2d, cov2d, msk2d``. ``bcd`` or ``cbcd`` is required. None: ``bcd, bunc,
        bimsk`` (full) or all seven (subarray).
    nan_fraction : float
        Fraction of pixels set to NaN (bad) in each image, half of them the same in every exposure of the AOR.
    nan_avoid_radius_px : float
        No NaN or radiation-hit pixel is placed within this distance (px) of the star, so that its flux stays
        measurable; 0 allows them anywhere.
    radhit_fraction : float
        Fraction of pixels hit by a cosmic ray: a positive spike, mask bit 512 (512 is in PROCBITS).
    progid : int
        ``PROGID``.
    aorlabel : str or None
        ``AORLABEL``; None derives one from ``object_name``.
    version : int
        Data-product version: the ``<VER>`` of the file names and ``SOS_VER``.
    seed : int
        Extra seed, combined with the archive seed, the AORKEY and the channel.
    """

    aorkey: int
    channels: tuple[int, ...] = (2,)
    read_mode: ReadMode = "FULL"
    n_exposures: int = 4
    mission: Mission = "warm"
    mjd_start: float | None = None
    framtime_s: float = 2.0
    object_name: str = "SYNTH-1"
    ra_deg: float = 150.1
    dec_deg: float = 2.2
    flux_mjy: float | Mapping[int, float] | None = None
    pm_ra_arcsec_yr: float = 0.0
    pm_dec_arcsec_yr: float = 0.0
    star_xy_px: tuple[float, float] | None = None
    dithered: bool = False
    dither_scale: Literal["small", "medium", "large"] = "medium"
    hdr: bool = False
    pa_deg: float | None = None
    fwhm_px: float | Mapping[int, float] | None = None
    psf_model: Literal["gauss", "irac"] = "gauss"
    background_mjy_sr: float | Mapping[int, float] | None = None
    file_types: tuple[str, ...] | None = None
    nan_fraction: float = 0.02
    nan_avoid_radius_px: float = 4.0
    radhit_fraction: float = 0.0
    progid: int = 90001
    aorlabel: str | None = None
    version: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        # Mappings are frozen into sorted tuples of pairs so that the spec stays hashable and immutable.
        for name in ("flux_mjy", "fwhm_px", "background_mjy_sr"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, tuple(sorted((int(k), float(v)) for k, v in value.items())))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.file_types is not None:
            object.__setattr__(self, "file_types", tuple(self.file_types))
        self._validate()

    # -- validation ------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        """Raise :class:`~iracdb.errors.BadOption` naming the first problem found, checked in this order."""
        checks = (self._identity_problem, self._mode_problem, self._files_problem, self._levels_problem,
                  self._dates_problem)
        for check in checks:  # in order: a later check relies on the earlier ones (valid modes, channels)
            problem = check()
            if problem is not None:
                raise BadOption(f"AorSpec(aorkey={self.aorkey}): {problem}")

    def _identity_problem(self) -> str | None:
        """The AOR key, the channels and the mission."""
        if not 0 < self.aorkey < 2**31:
            return "aorkey must be a positive 32-bit integer"
        if not self.channels or len(set(self.channels)) != len(self.channels):
            return f"channels must be a non-empty tuple of distinct channels, got {self.channels}"
        if not set(self.channels) <= {1, 2, 3, 4}:
            return f"channels must be among 1-4, got {self.channels}"
        if self.mission not in ("cryo", "warm"):
            return f"mission must be 'cryo' or 'warm', got {self.mission!r}"
        if self.mission == "warm" and not set(self.channels) <= {1, 2}:
            return f"only channels 1 and 2 operate in the warm mission, got {self.channels}"
        return None

    def _mode_problem(self) -> str | None:
        """The read mode, exposures, frame time, dithering, HDR and PSF model."""
        if self.read_mode not in ("FULL", "SUB"):
            return f"read_mode must be 'FULL' or 'SUB', got {self.read_mode!r}"
        if self.n_exposures < 1 or self.n_exposures > 9999:
            return f"n_exposures must be 1..9999, got {self.n_exposures}"
        modes = _FULL_MODES if self.read_mode == "FULL" else _SUB_MODES
        if float(self.framtime_s) not in modes:
            return f"framtime_s must be one of {sorted(modes)} for {self.read_mode}, got {self.framtime_s}"
        if self.read_mode == "SUB" and (self.dithered or self.hdr):
            return "dithered and hdr apply to full-array AORs only"
        if self.hdr and float(self.framtime_s) not in _HDR_SHORT:
            return f"HDR mode needs a long frame of {sorted(_HDR_SHORT)} s"
        if self.dither_scale not in _DITHER_SCALE:
            return "dither_scale must be small, medium or large"
        if self.psf_model not in ("gauss", "irac"):
            return "psf_model must be 'gauss' or 'irac'"
        return None

    def _files_problem(self) -> str | None:
        """The file types written per exposure."""
        allowed = FULL_TYPES if self.read_mode == "FULL" else SUB_TYPES
        types = self.types()
        if not set(types) <= set(allowed) or len(set(types)) != len(types):
            return f"file_types must be distinct names among {allowed}, got {types}"
        if "bcd" not in types and "cbcd" not in types:
            return "file_types must include 'bcd' or 'cbcd'"
        return None

    def _levels_problem(self) -> str | None:
        """Bad-pixel and radiation-hit fractions, and each channel's flux, FWHM and background."""
        if not 0.0 <= self.nan_fraction < 0.5 or not 0.0 <= self.radhit_fraction < 0.1:
            return "nan_fraction must be in [0, 0.5) and radhit_fraction in [0, 0.1)"
        for ch in self.channels:
            if not self.star_flux_mjy(ch) > 0 or not self.fwhm(ch) > 0 or not self.background(ch) >= 0:
                return f"flux and FWHM must be positive, background not negative (ch{ch})"
        return None

    def _dates_problem(self) -> str | None:
        """The AOR's dates: within its mission and within Spitzer's."""
        start = self.start_mjd()
        end = start + self.duration_days()
        if self.mission == "cryo" and end > CRYO_END_MJD:
            return f"a cryo AOR must end by MJD {CRYO_END_MJD} (2009-05-15), this one runs {start:.5f}..{end:.5f}"
        if self.mission == "warm" and start <= CRYO_END_MJD:
            return f"a warm AOR must start after MJD {CRYO_END_MJD}, got {start:.5f}"
        if not 52880.0 < start < 58849.0:
            return "mjd_start must lie in the Spitzer mission (MJD 52880..58849)"
        return None

    # -- derived values --------------------------------------------------------------------------------------
    def types(self) -> tuple[str, ...]:
        """File types written per exposure (the ``<type>`` of the file names)."""
        if self.file_types is not None:
            return self.file_types
        return ("bcd", "bunc", "bimsk") if self.read_mode == "FULL" else SUB_TYPES

    def star_flux_mjy(self, channel: int) -> float:
        """True flux of the star in ``channel`` (mJy)."""
        return _per_channel(self.flux_mjy, channel, _DEFAULT_FLUX_MJY)

    def fwhm(self, channel: int) -> float:
        """PSF FWHM in ``channel`` (pixels)."""
        return _per_channel(self.fwhm_px, channel, IRAC_FWHM_PX)

    def background(self, channel: int) -> float:
        """Nominal background level in ``channel`` (MJy/sr)."""
        return _per_channel(self.background_mjy_sr, channel, {c: _ZODY[c] + _ISM[c] for c in _GAIN})

    def start_mjd(self) -> float:
        """MJD (UTC) of the first exposure."""
        if self.mjd_start is not None:
            return float(self.mjd_start)
        base = 54450.0 if self.mission == "cryo" else 56100.0
        return base + (self.aorkey % 9973) * 0.05 + 0.0123

    def frame_modes(self) -> list[_FrameMode]:
        """The frame mode of each exposure."""
        modes = _FULL_MODES if self.read_mode == "FULL" else _SUB_MODES
        long = modes[float(self.framtime_s)]
        if not self.hdr:
            return [long] * self.n_exposures
        short = _FULL_MODES[_HDR_SHORT[float(self.framtime_s)]]
        return [short if k % 2 == 0 else long for k in range(self.n_exposures)]

    def exposure_offsets_s(self) -> list[float]:
        """Start time of each exposure after the first (seconds)."""
        n_planes = _SUB_PLANES if self.read_mode == "SUB" else 1
        overhead = 2.4 if self.read_mode == "SUB" else (11.7 if self.dithered else 8.2)
        t, out = 0.0, []
        for mode in self.frame_modes():
            out.append(round(t, 3))
            t += n_planes * mode.framtime + overhead
        return out

    def duration_days(self) -> float:
        """Time from the first exposure start to the last exposure end (days)."""
        n_planes = _SUB_PLANES if self.read_mode == "SUB" else 1
        return (self.exposure_offsets_s()[-1] + n_planes * self.frame_modes()[-1].framtime) / 86400.0


def _per_channel(value: Any, channel: int, default: Mapping[int, float]) -> float:
    if value is None:
        return float(default[channel])
    if isinstance(value, tuple):
        table = dict(value)
        if channel not in table:
            raise BadOption(f"no value given for channel {channel} in {table}")
        return float(table[channel])
    return float(value)


@dataclass(frozen=True)
class TruthRecord:
    """What is true about one full-array frame or one subarray plane.

    Attributes
    ----------
    aorkey, channel, expid, dcenum, dceid : int
        Identity of the exposure (``AORKEY``, ``CHNLNUM``, ``EXPID``, ``DCENUM``, ``DCEID``).
    plane : int
        Subarray plane 0..63; 0 for a full-array frame.
    read_mode : str
        'FULL' or 'SUB'.
    mission : str
        'cryo' or 'warm'.
    mjd_obs : float
        Start of this frame or plane, MJD (UTC); the file's ``MJD_OBS`` plus ``plane * FRAMTIME``.
    framtime_s : float
        ``FRAMTIME`` (s).
    x_px, y_px : float
        True 0-based position of the star (where it was rendered).
    x_wcs_px, y_wcs_px : float
        Where the file's header WCS (with SIP) puts ``ra_deg, dec_deg``. Equal to the true position for a
        full-array frame; for a subarray plane the header WCS holds the cube's mean pointing, the planes move
        around it by a few tenths of a pixel.
    ra_deg, dec_deg : float
        ICRS position of the star.
    flux_mjy : float
        True flux of the star (mJy).
    response_factor : float
        Pixel-phase x array-location factor multiplied into the star (1.0 when not injected):
        ``corrected = measured / factor``.
    image_flux_mjy : float
        Flux of the star as present in the image: ``flux_mjy * response_factor``.
    background_mjy_sr : float
        The flat background level added to the image (MJy/sr).
    fwhm_px : float
        PSF FWHM (pixels).
    psf_model : str
        'gauss' or 'irac'.
    fraction_on_valid_px : float
        Fraction of the star's flux that falls on the image's valid (non-NaN) pixels; PSF wings beyond the edges
        or on NaN pixels are lost. The NaN-ignoring sum of (image - background) over the whole image, in mJy,
        is ``image_flux_mjy * fraction_on_valid_px`` (to float32 rounding in noise-free mode). Within
        ``nan_avoid_radius_px`` of the star no pixel is NaN, so for a Gaussian PSF this is 1 to ~1e-9.
    n_nan : int
        NaN pixels in this frame or plane.
    path : str
        The image file (``_bcd``, or ``_cbcd`` when no ``_bcd`` is written), relative to the archive root,
        POSIX separators.
    """

    aorkey: int
    channel: int
    expid: int
    dcenum: int
    dceid: int
    plane: int
    read_mode: str
    mission: str
    mjd_obs: float
    framtime_s: float
    x_px: float
    y_px: float
    x_wcs_px: float
    y_wcs_px: float
    ra_deg: float
    dec_deg: float
    flux_mjy: float
    response_factor: float
    image_flux_mjy: float
    background_mjy_sr: float
    fwhm_px: float
    psf_model: str
    fraction_on_valid_px: float
    n_nan: int
    path: str


#: Columns of ``truth.csv``, in order (the fields of :class:`TruthRecord`).
TRUTH_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TruthRecord))


@dataclass(frozen=True)
class SynthArchive:
    """A written synthetic archive.

    Attributes
    ----------
    root : Path
        The archive folder (``OUT_DIR``).
    files : tuple of Path
        Every FITS file written, in writing order.
    truth : tuple of TruthRecord
        One record per full-array frame or subarray plane.
    truth_csv : Path or None
        ``root / 'truth.csv'`` if it was written.
    aors : tuple of AorSpec
        The AORs written.
    """

    root: Path
    files: tuple[Path, ...]
    truth: tuple[TruthRecord, ...]
    truth_csv: Path | None
    aors: tuple[AorSpec, ...] = field(default=())

    def write_truth_csv(self, path: str | Path | None = None, *, overwrite: bool = True) -> Path:
        """Write the truth table as CSV (columns :data:`TRUTH_COLUMNS`); default ``root / 'truth.csv'``.

        With ``overwrite=False`` an existing file is refused (:class:`~iracdb.errors.OutputExists`).
        """
        target = Path(path) if path is not None else self.root / "truth.csv"
        check_outputs([target], overwrite=overwrite)
        return _write_truth_csv(target, self.truth)

    def image_path(self, record: TruthRecord) -> Path:
        """Absolute path of the image a truth record describes."""
        return self.root / record.path


def _check_archive_folder(root: Path, *, overwrite: bool) -> None:
    if os.path.lexists(root) and not root.is_dir():
        raise CannotWrite(f"cannot write the archive into {root}: it is not a folder")
    if not overwrite and root.is_dir() and any(root.iterdir()):
        raise OutputExists(f"{root} is not empty (--overwrite writes into it, replacing files of the same names)")


def _write_truth_csv(path: Path, truth: Iterable[TruthRecord]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(TRUTH_COLUMNS)
        for record in truth:
            writer.writerow([_csv_value(getattr(record, name)) for name in TRUTH_COLUMNS])
    return path


def _csv_value(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value


# ----------------------------------------------------------------------------------------------------------------
# Ready-made AOR sets
# ----------------------------------------------------------------------------------------------------------------


def default_aors() -> list[AorSpec]:
    """A small, varied archive for the demo and the tests (about 90 files, written in about a second).

    - a warm channel-2 subarray AOR (3 cubes, all seven file types);
    - a warm channel-1 full-array AOR with a medium cycling dither (6 frames);
    - a cryo channel-1+3 full-array AOR, dithered, with CBCD files (4 frames);
    - a cryo channel-2+4 full-array HDR AOR (short and long frames, 4 frames);
    - a cryo channel-1 subarray AOR (2 cubes).

    Returns
    -------
    list of AorSpec
    """
    return [
        AorSpec(aorkey=71000064, channels=(2,), read_mode="SUB", n_exposures=3, mission="warm",
                mjd_start=56270.4731344, framtime_s=2.0, object_name="SYNTH-A ch2 sub", ra_deg=65.4695,
                dec_deg=57.8172, flux_mjy=120.0, pm_ra_arcsec_yr=-0.005, pm_dec_arcsec_yr=0.002, progid=90032,
                aorlabel="SYNTHA_ch2_sub_peakup"),
        AorSpec(aorkey=71000320, channels=(1,), read_mode="FULL", n_exposures=6, mission="warm",
                mjd_start=56350.2103, framtime_s=12.0, object_name="SYNTH-B", ra_deg=277.1303, dec_deg=26.8440,
                flux_mjy=40.0, dithered=True, dither_scale="medium", progid=90015),
        AorSpec(aorkey=24000128, channels=(1, 3), read_mode="FULL", n_exposures=4, mission="cryo",
                mjd_start=54501.6121, framtime_s=30.0, object_name="SYNTH-C", ra_deg=270.2431, dec_deg=-29.5120,
                flux_mjy={1: 60.0, 3: 25.0}, dithered=True, dither_scale="small",
                file_types=("bcd", "bunc", "bimsk", "cbcd", "cbunc"), progid=40311),
        AorSpec(aorkey=24000384, channels=(2, 4), read_mode="FULL", n_exposures=4, mission="cryo",
                mjd_start=54622.9088, framtime_s=12.0, object_name="SYNTH-C", ra_deg=270.2431, dec_deg=-29.5120,
                flux_mjy={2: 45.0, 4: 15.0}, hdr=True, progid=40311),
        AorSpec(aorkey=24000640, channels=(1,), read_mode="SUB", n_exposures=2, mission="cryo",
                mjd_start=54830.3517, framtime_s=0.4, object_name="SYNTH-D", ra_deg=12.3456, dec_deg=-45.6789,
                flux_mjy=250.0, progid=50060),
    ]  # fmt: skip


def many_aors(
    n_aors: int,
    *,
    read_mode: ReadMode = "FULL",
    channels: tuple[int, ...] = (1,),
    n_exposures: int = 10,
    mission: Mission = "warm",
    first_aorkey: int = 60000000,
    **overrides: Any,
) -> list[AorSpec]:
    """``n_aors`` similar AORs that do not overlap in time, for benchmarks.

    Parameters
    ----------
    n_aors : int
        How many AORs.
    read_mode, channels, n_exposures, mission
        As in :class:`AorSpec`, the same for every AOR.
    first_aorkey : int
        AORKEYs are ``first_aorkey, first_aorkey + 1, ...``.
    **overrides
        Any other :class:`AorSpec` field, the same for every AOR.

    Returns
    -------
    list of AorSpec
        Each AOR starts 0.1 day after the previous one; targets are spread over the sky. The number of files is
        ``n_aors * len(channels) * n_exposures * len(file types)``.
    """
    if n_aors < 1:
        raise BadOption(f"n_aors must be at least 1, got {n_aors}")
    first = 54450.0 if mission == "cryo" else 56100.0
    step = 0.1
    if mission == "cryo" and first + n_aors * step > CRYO_END_MJD:
        step = (CRYO_END_MJD - 1.0 - first) / n_aors
    out = []
    for i in range(n_aors):
        spec: dict[str, Any] = dict(
            aorkey=first_aorkey + i,
            read_mode=read_mode,
            channels=channels,
            n_exposures=n_exposures,
            mission=mission,
            mjd_start=first + i * step + 0.0123,
            object_name=f"SYNTH-{i:05d}",
            ra_deg=(37.0 + 97.3 * i) % 360.0,
            dec_deg=math.degrees(math.asin(((0.618034 * i + 0.1) % 1.0) * 1.8 - 0.9)),
            dithered=read_mode == "FULL",
        )
        spec.update(overrides)
        out.append(AorSpec(**spec))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------


def write_archive(
    out_dir: str | Path,
    aors: Sequence[AorSpec] | None = None,
    *,
    seed: int = 0,
    inject_response: bool = False,
    noise: bool = True,
    truth_csv: bool = True,
    overwrite: bool = True,
) -> SynthArchive:
    """Write a synthetic IRAC archive in the archive's download layout.

    Parameters
    ----------
    out_dir : str or Path
        Archive folder; created if missing. Existing files with the same names are overwritten.
    aors : sequence of AorSpec or None
        The AORs to write; None writes :func:`default_aors`.
    seed : int
        Seed of every random choice (noise, bad pixels, jitter, position angle, ...). The same seed and AORs give
        byte-identical files.
    inject_response : bool
        Multiply the star's flux by the pixel-phase x array-location factor of §3 at its true position
        (:func:`iracdb.photometry.corrections.correction_factor`; 1 for warm ch3/ch4). The truth records the
        factor; the true flux stays ``flux_mjy``.
    noise : bool
        Add Gaussian noise matching the ``_bunc`` uncertainty (which is written either way). With ``noise=False``
        an image is exactly background + star (+ NaN pixels, + cosmic rays if asked for).
    truth_csv : bool
        Also write ``out_dir / 'truth.csv'``.
    overwrite : bool
        False: refuse (:class:`~iracdb.errors.OutputExists`) an ``out_dir`` that already holds anything, before
        writing a file. True: write into it, replacing files of the same names.

    Returns
    -------
    SynthArchive
        The files written and the truth table.

    Raises
    ------
    BadOption
        Two AORs share an AORKEY or overlap in time (their DCEIDs would collide).
    OutputExists, CannotWrite
        ``out_dir`` is not empty and ``overwrite`` is False, or it is a file.
    """
    root = Path(out_dir)
    _check_archive_folder(root, overwrite=overwrite)
    specs = tuple(default_aors() if aors is None else aors)
    keys = [spec.aorkey for spec in specs]
    if len(set(keys)) != len(keys):
        raise BadOption(f"AORKEYs must be unique in an archive, got {keys}")
    files: list[Path] = []
    truth: list[TruthRecord] = []
    dceids: dict[int, int] = {}
    for spec in specs:
        _write_aor(root, spec, seed, inject_response, noise, files, truth, dceids)
    csv_path = _write_truth_csv(root / "truth.csv", truth) if truth_csv else None
    return SynthArchive(root=root, files=tuple(files), truth=tuple(truth), truth_csv=csv_path, aors=specs)


@dataclass
class _Times:
    """Per-exposure times of one AOR (arrays over exposures)."""

    mjd: np.ndarray
    date_obs: list[str]
    hmjd: np.ndarray
    bmjd: np.ndarray
    utcs: np.ndarray
    et: np.ndarray
    sclk: np.ndarray
    aintbeg: np.ndarray
    sptzr: tuple[np.ndarray, np.ndarray]  # heliocentric position (km) and velocity (km/s) at the first exposure


def _aor_times(spec: AorSpec) -> _Times:
    start_ms = round(spec.start_mjd() * 86_400_000)
    offsets_ms = np.array([round(t * 1000) for t in spec.exposure_offsets_s()], dtype=np.int64)
    ms = start_ms + offsets_ms
    mjd = ms / 86_400_000.0
    iy, im, iday, ihmsf = erfa.d2dtf("UTC", 3, np.full(mjd.shape, 2400000.5), mjd)
    date_obs = [
        f"{y:04d}-{m:02d}-{d:02d}T{h['h']:02d}:{h['m']:02d}:{h['s']:02d}.{h['f']:03d}"
        for y, m, d, h in zip(iy, im, iday, ihmsf, strict=True)
    ]
    dat = np.array([erfa.dat(y, m, d, 0.5) for y, m, d in zip(iy, im, iday, strict=True)])
    utcs = (mjd - 51544.5) * 86400.0  # seconds from noon 2000-01-01 UTC, no leap seconds (as the real headers)
    et = utcs + dat + 32.184
    # Spitzer trails the Earth in its solar orbit, drifting away by ~7.3 degrees of longitude a year since launch.
    tt_mjd = mjd + (dat + 32.184) / 86400.0
    pvh, pvb = erfa.epv00(np.full(mjd.shape, 2400000.5), tt_mjd)
    angle = -np.radians(7.3 * (mjd - 52877.0) / 365.25)
    eps = math.radians(23.4392911)
    pole = np.array([0.0, -math.sin(eps), math.cos(eps)])
    helio = _rotate(pvh["p"], pole, angle)
    bary = pvb["p"] + (helio - pvh["p"])
    velocity = _rotate(pvh["v"], pole, angle)
    n = _unit_vector(spec.ra_deg, spec.dec_deg)
    au_light_days = 499.00478383615643 / 86400.0
    hmjd = mjd + helio @ n * au_light_days
    bmjd = mjd + bary @ n * au_light_days
    sclk = (mjd - 44239.0) * 86400.0 + 383.334
    turn_on = 52880.0 + np.floor((mjd - 52880.0) / 281.0) * 281.0 + 0.29
    aintbeg = np.round((mjd - turn_on) * 86400.0, 2)
    au_km = 149597870.7
    sptzr = (helio[0] * au_km, velocity[0] * au_km / 86400.0)
    return _Times(mjd, date_obs, hmjd, bmjd, utcs, et, sclk, aintbeg, sptzr)


def _rotate(vectors: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of each row of ``vectors`` about unit ``axis`` by ``angle`` (radians, per row)."""
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return vectors * cos + np.cross(axis, vectors) * sin + np.outer(vectors @ axis, axis) * (1.0 - cos)


def _unit_vector(ra_deg: float, dec_deg: float) -> np.ndarray:
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    return np.array([math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)])


@lru_cache(maxsize=16)
def _sip(read_mode: str, channel: int) -> dict[str, float]:
    """SIP cards (A, B, AP, BP, orders, DMAX) of one channel; AP/BP are fitted to invert A/B over the array."""
    base_a, base_b = _SIP_BASE[read_mode]
    # Each channel gets its own distortion: the channel-2 polynomial with fixed, channel-dependent scalings.
    scale = np.random.default_rng(1000 + channel).uniform(0.75, 1.25, size=(2, len(_SIP_TERMS)))
    if channel == 2:
        scale[:] = 1.0
    coeff_a = np.array([float(f"{v:.4e}") for v in np.array(base_a) * scale[0]])
    coeff_b = np.array([float(f"{v:.4e}") for v in np.array(base_b) * scale[1]])
    half = 128.0 if read_mode == "FULL" else 16.0
    grid = np.linspace(-half, half, 41)
    u, v = (g.ravel() for g in np.meshgrid(grid, grid))
    big_u = u + sum(c * u**p * v**q for c, (p, q) in zip(coeff_a, _SIP_TERMS, strict=True))
    big_v = v + sum(c * u**p * v**q for c, (p, q) in zip(coeff_b, _SIP_TERMS, strict=True))
    inv_terms = [(p, q) for p in range(6) for q in range(6) if 1 <= p + q <= 5]
    # Scale the fit's variables to [-1, 1] so that the normal equations stay well conditioned.
    design = np.stack([(big_u / half) ** p * (big_v / half) ** q for p, q in inv_terms], axis=1)
    ap_fit = np.linalg.lstsq(design, u - big_u, rcond=None)[0]
    bp_fit = np.linalg.lstsq(design, v - big_v, rcond=None)[0]
    cards: dict[str, float] = {"A_ORDER": 5}
    for c, (p, q) in zip(coeff_a, _SIP_TERMS, strict=True):
        cards[f"A_{p}_{q}"] = float(c)
    cards["A_DMAX"] = round(float(np.max(np.abs(big_u - u))), 3)
    cards["B_ORDER"] = 5
    for c, (p, q) in zip(coeff_b, _SIP_TERMS, strict=True):
        cards[f"B_{p}_{q}"] = float(c)
    cards["B_DMAX"] = round(float(np.max(np.abs(big_v - v))), 3)
    for name, fit in (("AP", ap_fit), ("BP", bp_fit)):
        cards[f"{name}_ORDER"] = 5
        for c, (p, q) in sorted(zip(fit, inv_terms, strict=True), key=lambda item: item[1]):
            cards[f"{name}_{p}_{q}"] = float(f"{c / half ** (p + q):.4e}")
    return cards


def _cd_matrix(read_mode: str, channel: int, pa_deg: float) -> tuple[float, float, float, float]:
    sx, sy = (s / 3600.0 for s in _PXSCAL_ARCSEC[(read_mode, channel)])
    pa = math.radians(pa_deg)
    cd = (-sx * math.cos(pa), sy * math.sin(pa), sx * math.sin(pa), sy * math.cos(pa))
    a, b, c, d = (float(f"{v:.15g}") for v in cd)
    return a, b, c, d


def _make_wcs(read_mode: str, channel: int, pa_deg: float, crval: tuple[float, float]) -> WCS:
    """An astropy WCS built from exactly the cards :func:`_make_wcs_cards` writes."""
    header = fits.Header()
    header["NAXIS"] = 2
    header["NAXIS1"] = header["NAXIS2"] = 256 if read_mode == "FULL" else 32
    header["CTYPE1"] = "RA---TAN-SIP"
    header["CTYPE2"] = "DEC--TAN-SIP"
    header["RADESYS"] = "ICRS"
    header["EQUINOX"] = 2000.0
    for key, value in _make_wcs_cards(read_mode, channel, pa_deg, crval).items():
        header[key] = value
    return WCS(header)


def _place(wcs: WCS, ra: float, dec: float, x: float, y: float) -> tuple[float, float]:
    """Set ``wcs.wcs.crval`` so that (ra, dec) falls on 0-based pixel (x, y); return the rounded CRVAL."""
    crval = np.array([ra, dec], dtype=float)
    for _ in range(6):
        wcs.wcs.crval = crval
        ra_at, dec_at = wcs.all_pix2world(x, y, 0)
        d_ra = (ra - float(ra_at) + 180.0) % 360.0 - 180.0
        crval = crval + np.array([d_ra, dec - float(dec_at)])
        if abs(d_ra) < 1e-13 and abs(dec - float(dec_at)) < 1e-13:
            break
    crval = np.array([round(float(crval[0]) % 360.0, 11), round(float(crval[1]), 11)])
    wcs.wcs.crval = crval
    return float(crval[0]), float(crval[1])


def _world_to_pixel(wcs: WCS, ra: float, dec: float) -> tuple[float, float]:
    x, y = wcs.all_world2pix(ra, dec, 0, tolerance=1e-12, maxiter=50)
    return float(x), float(y)


def _response(x: np.ndarray, y: np.ndarray, channel: int, mission: Mission, subarray: bool) -> np.ndarray:
    """Pixel-phase x array-location factor of §3 at the true positions (1 for warm ch3/ch4)."""
    from iracdb.photometry.corrections import correction_factor

    return np.asarray(correction_factor(x, y, channel, mission=mission, subarray=subarray), dtype=np.float64)


def _render(size: int, x: np.ndarray, y: np.ndarray, totals: np.ndarray, fwhm: float, model: str) -> np.ndarray:
    """The star on ``len(x)`` images of ``size`` x ``size`` pixels (float64, pixel-integrated).

    Each image sums to ``totals[i]`` times the fraction of the PSF that falls on the image.
    """
    from iracdb.photometry.psf import render_star

    return np.asarray(render_star((size, size), x, y, totals, fwhm=fwhm, model=model), dtype=np.float64)


def _write_aor(
    root: Path,
    spec: AorSpec,
    seed: int,
    inject_response: bool,
    noise: bool,
    files: list[Path],
    truth: list[TruthRecord],
    dceids: dict[int, int],
) -> None:
    times = _aor_times(spec)
    modes = spec.frame_modes()
    sub = spec.read_mode == "SUB"
    n_planes = _SUB_PLANES if sub else 1
    size = 32 if sub else 256
    aor_rng = np.random.default_rng([seed, spec.seed, spec.aorkey])
    pa_deg = spec.pa_deg if spec.pa_deg is not None else float(np.round(aor_rng.uniform(-180.0, 180.0), 6))
    base_xy = spec.star_xy_px or (
        (float(aor_rng.uniform(15.0, 16.0)), float(aor_rng.uniform(15.0, 16.0))) if sub
        else (127.6 + float(aor_rng.uniform(-0.5, 0.5)), 128.3 + float(aor_rng.uniform(-0.5, 0.5)))
    )  # fmt: skip
    # Pointing of each exposure (pixel offsets of the star, shared by the channels as on the real instrument).
    scatter = aor_rng.normal(0.0, 0.12 if sub else 0.15, size=(spec.n_exposures, 2))
    dither = np.zeros((spec.n_exposures, 2))
    dith_pos = np.zeros(spec.n_exposures, dtype=int)
    if spec.dithered:
        step = 2 if spec.hdr else 1
        for k in range(spec.n_exposures):
            pos = (k // step) % len(_DITHER_MEDIUM_PX)
            dith_pos[k] = pos + 1
            dither[k] = np.array(_DITHER_MEDIUM_PX[pos]) * _DITHER_SCALE[spec.dither_scale]
    centre = np.array(base_xy) + dither + scatter
    # Subarray planes drift by a few tenths of a pixel through a cube, plus jitter; zero mean per cube.
    plane_offsets = np.zeros((spec.n_exposures, n_planes, 2))
    if sub:
        t = np.linspace(-0.5, 0.5, n_planes)
        for k in range(spec.n_exposures):
            drift = aor_rng.uniform(0.15, 0.4) * np.array([math.cos(a := aor_rng.uniform(0, 2 * math.pi)),
                                                            math.sin(a)])
            wobble = aor_rng.uniform(0.02, 0.08) * np.sin(2 * math.pi * (t * aor_rng.uniform(1.0, 3.0)))
            off = np.outer(t, drift) + wobble[:, None] * np.array([0.6, 1.0])
            off += aor_rng.normal(0.0, 0.02, size=off.shape)
            plane_offsets[k] = off - off.mean(axis=0)
    pointing = {
        "ptg": aor_rng.uniform(0.05, 0.5, size=spec.n_exposures),
        "ptg_angle": aor_rng.uniform(0.0, 2 * math.pi, size=spec.n_exposures),
        "jit": aor_rng.uniform(0.003, 0.04, size=spec.n_exposures),
        "crder": aor_rng.uniform(5e-5, 3e-4),
        "zody": 1.0 + aor_rng.normal(0.0, 0.01, size=spec.n_exposures),
    }
    for channel in spec.channels:
        _write_channel(root, spec, seed, channel, times, modes, centre, plane_offsets, dith_pos, pa_deg,
                       pointing, inject_response, noise, size, n_planes, files, truth, dceids)  # fmt: skip


def _write_channel(
    root: Path,
    spec: AorSpec,
    seed: int,
    channel: int,
    times: _Times,
    modes: list[_FrameMode],
    centre: np.ndarray,
    plane_offsets: np.ndarray,
    dith_pos: np.ndarray,
    pa_deg: float,
    pointing: dict[str, Any],
    inject_response: bool,
    noise: bool,
    size: int,
    n_planes: int,
    files: list[Path],
    truth: list[TruthRecord],
    dceids: dict[int, int],
) -> None:
    sub = spec.read_mode == "SUB"
    rng = np.random.default_rng([seed, spec.seed, spec.aorkey, channel])
    folder = root / f"r{spec.aorkey}" / f"ch{channel}" / "bcd"
    folder.mkdir(parents=True, exist_ok=True)
    wcs = _make_wcs(spec.read_mode, channel, pa_deg, (spec.ra_deg, spec.dec_deg))
    omega = pixel_solid_angle_sr(channel)
    gain = _GAIN[channel]
    fluxconv = _FLUXCONV[spec.mission][channel]
    flux = spec.star_flux_mjy(channel)
    fwhm = spec.fwhm(channel)
    bkg_nominal = spec.background(channel)
    ism = _ISM[channel] * bkg_nominal / (_ZODY[channel] + _ISM[channel]) if bkg_nominal > 0 else 0.0
    templates = _Templates(spec, channel, pa_deg, pointing, rng)
    n_pix = size * size
    permanent_flat = np.zeros(n_pix, dtype=bool)
    permanent_flat[rng.choice(n_pix, size=round(n_pix * spec.nan_fraction / 2), replace=False)] = True
    permanent = permanent_flat.reshape(size, size)
    yy, xx = np.mgrid[0:size, 0:size]
    types = spec.types()
    image_type = "bcd" if "bcd" in types else "cbcd"

    for k in range(spec.n_exposures):
        mode = modes[k]
        expid, dcenum = k, 0
        mjd = float(times.mjd[k])
        dceid = math.floor((mjd - 52880.0) * 86400.0) * 4 + channel - 1
        if dceid in dceids:
            raise BadOption(
                f"AORs {dceids[dceid]} and {spec.aorkey} overlap in time (both have an exposure at MJD {mjd:.6f} "
                f"in channel {channel}); give them mjd_start values that do not overlap"
            )
        dceids[dceid] = spec.aorkey
        # The header WCS puts the star at the exposure's (mean) pointing.
        crval = _place(wcs, spec.ra_deg, spec.dec_deg, float(centre[k, 0]), float(centre[k, 1]))
        x_wcs, y_wcs = _world_to_pixel(wcs, spec.ra_deg, spec.dec_deg)
        xs = x_wcs + plane_offsets[k, :, 0]
        ys = y_wcs + plane_offsets[k, :, 1]
        factors = (_response(xs, ys, channel, spec.mission, sub) if inject_response else np.ones(n_planes))
        background = round(bkg_nominal * float(pointing["zody"][k]), 6)
        zody = round(background - ism, 7)

        totals = flux * factors / (omega * 1e9)  # the star summed over the infinite plane, MJy/sr
        star = _render(size, xs, ys, totals, fwhm, spec.psf_model)
        model = star + background
        # electrons = MJy/sr / FLUXCONV * EXPTIME * GAIN; 1-sigma from photon noise and read noise
        to_e = mode.exptime * gain / fluxconv
        sigma = np.sqrt(np.maximum(model, 0.0) * to_e + _ronoise(mode, channel) ** 2) / to_e
        image = model + rng.standard_normal(model.shape) * sigma if noise else model
        near = (xx - xs[:, None, None]) ** 2 + (yy - ys[:, None, None]) ** 2 < spec.nan_avoid_radius_px**2
        bad = (permanent | (rng.random(image.shape) < spec.nan_fraction / 2)) & ~near
        mask_cube = np.where(bad, _MASK_BAD, 0).astype(np.int16)
        if spec.radhit_fraction > 0:
            hit = (rng.random(image.shape) < spec.radhit_fraction) & ~near & ~bad
            image = image + np.where(hit, rng.uniform(10.0, 100.0, size=image.shape) * sigma, 0.0)
            mask_cube |= np.where(hit, _MASK_RADHIT, 0).astype(np.int16)
        cube = np.where(bad, np.nan, image).astype(np.float32)
        sigma_cube = np.where(bad, np.nan, sigma).astype(np.float32)
        n_nan = bad.sum(axis=(1, 2))
        on_valid = np.where(bad, 0.0, star).sum(axis=(1, 2)) / totals

        values = dict(
            k=k, mode=mode, mjd=mjd, dceid=dceid, crval=crval, zody=zody, background=background,
            dithpos=int(dith_pos[k]), cycle=1 + (k // (2 if spec.hdr else 1)) // len(_DITHER_MEDIUM_PX),
        )  # fmt: skip
        stem = f"SPITZER_I{channel}_{spec.aorkey}_{expid:04d}_{dcenum:04d}_{spec.version}"
        data = cube if sub else cube[0]
        for ftype in types:
            path = folder / f"{stem}_{ftype}.fits"
            cards = templates.cards(ftype, times, values)
            if ftype in ("bcd", "cbcd"):
                payload = data
            elif ftype in ("bunc", "cbunc"):
                payload = sigma_cube if sub else sigma_cube[0]
            elif ftype == "bimsk":
                payload = mask_cube if sub else mask_cube[0]
            else:
                payload = _collapse(ftype, cube, sigma_cube)
            path.write_bytes(_fits_bytes(cards, payload))
            files.append(path)
        rel = f"r{spec.aorkey}/ch{channel}/bcd/{stem}_{image_type}.fits"
        plane_time = mode.framtime / 86400.0
        for p in range(n_planes):
            truth.append(TruthRecord(
                aorkey=spec.aorkey, channel=channel, expid=expid, dcenum=dcenum, dceid=dceid, plane=p,
                read_mode=spec.read_mode, mission=spec.mission, mjd_obs=mjd + p * plane_time,
                framtime_s=mode.framtime, x_px=float(xs[p]), y_px=float(ys[p]), x_wcs_px=x_wcs, y_wcs_px=y_wcs,
                ra_deg=spec.ra_deg, dec_deg=spec.dec_deg, flux_mjy=flux, response_factor=float(factors[p]),
                image_flux_mjy=flux * float(factors[p]), background_mjy_sr=background, fwhm_px=fwhm,
                psf_model=spec.psf_model, fraction_on_valid_px=float(on_valid[p]), n_nan=int(n_nan[p]), path=rel,
            ))  # fmt: skip


def _ronoise(mode: _FrameMode, channel: int) -> float:
    read_mode = "SUB" if mode.samptime < 0.1 else "FULL"
    return _RONOISE[(read_mode, mode.framtime)][channel - 1]


def _collapse(ftype: str, cube: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The subarray's 2-D products: median image, its uncertainty, coverage and mask (no warnings on empty pixels)."""
    finite = np.isfinite(cube)
    count = finite.sum(axis=0)
    if ftype == "cov2d":
        return count.astype(np.int16)
    if ftype == "msk2d":
        return np.where(count == 0, _MASK_BAD, 0).astype(np.int16)
    if ftype == "sub2d":
        ordered = np.sort(cube, axis=0)  # NaN sorts last
        lo = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[None], axis=0)[0]
        hi = np.take_along_axis(ordered, np.maximum(count // 2, 0)[None], axis=0)[0]
        median = 0.5 * (lo.astype(np.float64) + hi)
        return np.where(count > 0, median, np.nan).astype(np.float32)
    # unc2d: uncertainty of the median of `count` values, sqrt(pi/2) * rms(sigma) / sqrt(count)
    sum_sq = np.where(finite, sigma.astype(np.float64) ** 2, 0.0).sum(axis=0)
    safe = np.maximum(count, 1)
    unc = math.sqrt(math.pi / 2.0) * np.sqrt(sum_sq / safe) / np.sqrt(safe)
    return np.where(count > 0, unc, np.nan).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# FITS writing: card images are formatted by astropy once per AOR and channel, then spliced per exposure
# ----------------------------------------------------------------------------------------------------------------


def _card(key: str, value: Any, comment: str = "") -> str:
    """One 80-character card image; long strings and comments are cut to fit, as the SSC pipeline does."""
    if isinstance(value, np.generic):
        value = value.item()
    return _card_image(key, value, comment)


@lru_cache(maxsize=16384, typed=True)  # typed: True, 1 and 1.0 are different cards
def _card_image(key: str, value: Any, comment: str) -> str:
    if isinstance(value, str):
        value = value[:68]
    image = fits.Card(key, value).image.rstrip()
    if comment:
        image = image.ljust(30) + " / " + comment
    return image[:_CARD].ljust(_CARD)


def _heading(title: str) -> list[str]:
    return [" " * _CARD, (" " * 10 + "/ " + title).ljust(_CARD), " " * _CARD]


def _history(text: str) -> str:
    return ("HISTORY " + text)[:_CARD].ljust(_CARD)


def _comment(text: str) -> str:
    return ("COMMENT   " + text)[:_CARD].ljust(_CARD)


_END = "END".ljust(_CARD)


def _fits_bytes(cards: list[str], data: np.ndarray) -> bytes:
    """A single-HDU FITS file: the structural cards, ``cards``, END, then the big-endian data, padded."""
    bitpix = -32 if data.dtype.kind == "f" else 16
    comment = "FOUR-BYTE SINGLE PRECISION FLOATING POINT" if bitpix == -32 else "TWO-BYTE TWOS-COMPL INTEGER"
    head = [_card("SIMPLE", True, "Fits standard"), _card("BITPIX", bitpix, comment),
            _card("NAXIS", data.ndim, "STANDARD FITS FORMAT")]  # fmt: skip
    for axis, length in enumerate(reversed(data.shape), start=1):
        head.append(_card(f"NAXIS{axis}", length, "STANDARD FITS FORMAT"))
    text = "".join(head) + "".join(cards) + _END
    text += " " * (-len(text) % _BLOCK)
    body = np.ascontiguousarray(data, dtype=">f4" if bitpix == -32 else ">i2").tobytes()
    return text.encode("ascii") + body + b"\0" * (-len(body) % _BLOCK)


class _Templates:
    """Header card lists of one AOR and channel, with the per-exposure cards re-formatted for each exposure."""

    def __init__(self, spec: AorSpec, channel: int, pa_deg: float, pointing: dict[str, Any],
                 rng: np.random.Generator) -> None:  # fmt: skip
        self.spec = spec
        self.channel = channel
        self.pa_deg = pa_deg
        self.pointing = pointing
        self.sub = spec.read_mode == "SUB"
        # Constant numbers of the AOR and channel (telemetry, dark drift, calibration ids) drawn once.
        self.telemetry = [float(v) for v in rng.normal(0.0, 1.0, size=64)]
        self.darkdrift = np.round(rng.normal(0.0, 0.35, size=(_SUB_PLANES, 5)), 7)
        self.darkdrift[:, 4] = np.round(np.abs(self.darkdrift[:, 4]) * 4 + 2.2, 6)
        self.skydark = int(spec.aorkey - 40000 - 512 * int(rng.integers(1, 60)))
        # Processing date: deterministic, a few years after the observation (the S18.25/S19.2 reprocessings).
        year = 2011 if spec.mission == "cryo" else 2016
        day = 1 + spec.aorkey % 28
        self.date = f"{year}-01-{day:02d}T05:{spec.aorkey % 60:02d}:{(spec.aorkey // 60) % 60:02d}"
        weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[datetime.date(year, 1, day).weekday()]
        self.history_day = f"{weekday} Jan {day:2d}"

    # -- per-exposure values ---------------------------------------------------------------------------------
    def cards(self, ftype: str, times: _Times, v: dict[str, Any]) -> list[str]:
        if ftype in ("bcd", "cbcd"):
            return self._bcd(ftype, times, v)
        if ftype in ("bunc", "cbunc"):
            return self._bcd(ftype, times, v) if not self.sub else self._raw_unc(times, v)
        if ftype == "bimsk":
            return self._mask(times, v)
        if ftype == "sub2d":  # the median image keeps the cube's full header, as in real data
            day, year = self.history_day, self._year()
            submed = _history(f"submed                    v.   1.0   {day} 21:20:27 {year}")
            return [*self._bcd("bcd", times, v), submed]
        return self._small(ftype, v)

    def _time_cards(self, times: _Times, k: int, mode: _FrameMode, short: bool = False) -> list[str]:
        n_planes = _SUB_PLANES if self.sub else 1
        aint = float(times.aintbeg[k])
        out = [
            _card("DATE_OBS", times.date_obs[k], "Date & time (UTC) at DCE start"),
            _card("UTCS_OBS", round(float(times.utcs[k]), 3), "[sec] DCE start time from noon, Jan 1, 2000 UTC"),
            _card("MJD_OBS", float(times.mjd[k]), "[days] MJD in UTC at DCE start (,JD-2400000.5)"),
            _card("HMJD_OBS", round(float(times.hmjd[k]), 9), "[days] Corresponding Helioc. Mod. Julian Date"),
            _card("BMJD_OBS", round(float(times.bmjd[k]), 9), "[days] Solar System Barycenter Mod. Julian Date"),
            _card("ET_OBS", round(float(times.et[k]), 3), "[sec] DCE start time (TDB seconds past J2000)"),
            _card("SCLK_OBS", round(float(times.sclk[k]), 3), "[sec] SCLK time (since 1/1/1980) at DCE start"),
        ]
        if short:
            return out
        pos, vel = times.sptzr
        for axis, value in zip("XYZ", pos, strict=True):
            out.append(_card(f"SPTZR_{axis}", round(float(value), 6), f"[km] Heliocentric J2000 {axis.lower()} "
                             "position"))  # fmt: skip
        for axis, value in zip("XYZ", vel, strict=True):
            out.append(_card(f"SPTZR_V{axis}", round(float(value), 6), f"[km/s] Heliocentric J2000 "
                             f"{axis.lower()} velocity"))  # fmt: skip
        out.append(_card("SPTZR_LT", round(float(np.linalg.norm(pos)) / 299792.458, 6),
                         "[sec] One-way light time to Sun's center"))  # fmt: skip
        if self.sub:  # the real subarray headers carry ET_OBS twice
            out.append(_card("ET_OBS", round(float(times.et[k]), 3), "[sec] Ephemeris time (seconds past J2000 "
                             "epoch)"))  # fmt: skip
        long = self.spec.framtime_s
        out += [
            _card("AORTIME", float(long), "[sec] Frameset selected in IRAC AOT"),
            _card("SAMPTIME", mode.samptime, "[sec] Sample integration time"),
            _card("FRAMTIME", mode.framtime, "[sec] Time spent integrating (whole array)"),
            _comment("Photons in Well = Flux[photons/sec/pixel] * FRAMTIME"),
            _card("EXPTIME", mode.exptime, "[sec] Effective integration time per pixel"),
            _comment("DN per pixel = Flux[photons/sec/pixel] / GAIN * EXPTIME"),
            _card("FRAMEDLY", 2.2 if not self.sub else 0.55, "[sec] Frame Delay Time"),
            _card("FRDLYDET", "T", "Frame Delay Time Determinable (T of F)"),
            _card("INTRFDLY", 2.2 if not self.sub else 0.55, "[sec] Inter Frame Delay Time"),
            _card("IMDLYDET", "T", "Immediate Delay Time Determinable (T of F)"),
            _card("AINTBEG", aint, "[Secs since IRAC turn-on] Time of integ. start"),
            _card("ATIMEEND", round(aint + n_planes * (mode.framtime - 0.03), 2),
                  "[Secs since IRAC turn-on] Time of integ. end"),
            _card("AFOWLNUM", mode.afowlnum, "Fowler number"),
            _card("AWAITPER", mode.awaitper, "[0.2 sec] Wait period"),
            _card("ANUMREPS", 1, "Number of repeat integrations"),
            _card("AREADMOD", 1 if self.sub else 0, "Full (0) or subarray (1)"),
        ]  # fmt: skip
        # (real subarray headers omit these two; §1 asks for HDRMODE everywhere)
        out += [
            _card("AORHDR", self.spec.hdr, "Requested AOT is HDR mode"),
            _card("HDRMODE", self.spec.hdr, "DCE taken in High Dynamic Range mode"),
        ]
        if self.spec.hdr:
            frame = "short" if k % 2 == 0 else "long"
            out += [
                _card("HDRFRAME", f"{frame:>8}", "Position in HDR observation"),
                _card("HDRCYCLE", 1 + k // 2, "Cycle of HDR observation"),
            ]
        out += [
            _card("ABARREL", 3 if self.sub else 4, "Barrel shift"),
            _card("APEDSIG", 0, "0=Normal, 1=Pedestal, 2=Signal"),
        ]
        return out

    def _identity(self) -> tuple[list[str], list[str]]:
        spec = self.spec
        fovid, fovname = _FOV[(spec.read_mode, self.channel)]
        label = spec.aorlabel or f"{spec.object_name.replace(' ', '_')}_ch{self.channel}"
        return [
            _card("ORIGIN", "Spitzer Science Center", "Organization generating this FITS file"),
            _card("CREATOR", _CREATOR[spec.mission], "SW version used to create this FITS file"),
            _card("TELESCOP", "Spitzer", "SPITZER Space Telescope"),
            _card("INSTRUME", "IRAC", "SPITZER Space Telescope instrument ID"),
            _card("CHNLNUM", self.channel, "1 digit instrument channel number"),
        ], [
            _card("EXPTYPE", "sci", "Exposure Type"),
            _card("REQTYPE", "AOR", "Request type (AOR, IER, or  SER)"),
            _card("AOT_TYPE", "IracMap" if spec.mission == "cryo" else "IracMapPC", "Observation template type"),
            _card("AORLABEL", label, "AOR Label"),
            _card("FOVID", fovid, "Field of View ID"),
            _card("FOVNAME", fovname, "Field of View Name"),
        ]

    def _proposal(self) -> list[str]:
        spec = self.spec
        return [*_heading("PROPOSAL INFORMATION"),
                _card("OBSRVR", "Synthetic Observer", "Observer Name (Last, First)"),
                _card("OBSRVRID", 10000 + spec.progid % 50000, "Observer ID of Principal Investigator"),
                _card("PROCYCL", 4 if spec.mission == "cryo" else 8 + (spec.progid % 7), "Proposal Cycle"),
                _card("PROGID", spec.progid, "Program ID"),
                _card("PROTITLE", "A synthetic IRAC program written by iracdb.synth for tests and demonstrations"),
                _card("PROGCAT", 30, "Program Category")]  # fmt: skip

    def _bcd(self, ftype: str, times: _Times, v: dict[str, Any]) -> list[str]:
        spec, ch, k, mode = self.spec, self.channel, v["k"], v["mode"]
        ident, obs = self._identity()
        ra, dec = v["crval"]
        wcs_cards = _make_wcs_cards(spec.read_mode, ch, self.pa_deg, (ra, dec))
        ptg = float(self.pointing["ptg"][k])
        angle = float(self.pointing["ptg_angle"][k])
        scale = _PXSCAL_ARCSEC[(spec.read_mode, ch)][1]
        ra_rqst = ra + ptg * math.cos(angle) / 3600.0 / max(math.cos(math.radians(dec)), 1e-6)
        dec_rqst = dec + ptg * math.sin(angle) / 3600.0
        jit = float(self.pointing["jit"][k])
        crder = float(self.pointing["crder"])
        out = [*ident, *obs]
        out += self._proposal()
        out += _heading("TIME AND EXPOSURE INFORMATION")
        out += self._time_cards(times, k, mode)
        out += _heading("TARGET AND POINTING INFORMATION")
        out += [
            _card("OBJECT", spec.object_name, "Target Name"),
            _card("OBJTYPE", "TargetFixedSingle", "Object Type"),
            _card("CRPIX1", wcs_cards["CRPIX1"], "Reference pixel along axis 1"),
            _card("CRPIX2", wcs_cards["CRPIX2"], "Reference pixel along axis 2"),
            _card("CRVAL1", ra, "[deg] RA at CRPIX1,CRPIX2"),
            _card("CRVAL2", dec, "[deg] DEC at CRPIX1,CRPIX2"),
            _card("CRDER1", crder, "[deg] Uncertainty in CRVAL1"),
            _card("CRDER2", crder * 0.9998, "[deg] Uncertainty in CRVAL2"),
            _card("RA_HMS", _hms(ra), "[hh:mm:ss.s] CRVAL1 as sexagesimal"),
            _card("DEC_DMS", _dms(dec), "[dd:mm:ss] CRVAL2 as sexagesimal"),
            _card("RADESYS", "ICRS", "International Celestial Reference System"),
            _card("EQUINOX", 2000.0, "Equinox for ICRS celestial coord. system"),
            _card("CD1_1", wcs_cards["CD1_1"], "CD matrix element"),
            _card("CD1_2", wcs_cards["CD1_2"], "CD matrix element"),
            _card("CD2_1", wcs_cards["CD2_1"], "CD matrix element"),
            _card("CD2_2", wcs_cards["CD2_2"], "CD matrix element"),
            _card("CTYPE1", "RA---TAN-SIP", "RA---TAN with distortion in pixel space"),
            _card("CTYPE2", "DEC--TAN-SIP", "DEC--TAN with distortion in pixel space"),
            _card("PXSCAL1", -_PXSCAL_ARCSEC[(spec.read_mode, ch)][0],
                  "[arcsec/pix] Scale for axis 1 at CRPIX1,CRPIX2"),
            _card("PXSCAL2", scale, "[arcsec/pix] Scale for axis 2 at CRPIX1,CRPIX2"),
            _card("PA", round(self.pa_deg, 9), "[deg] Position angle of axis 2 (E of N)"),
            _card("UNCRTPA", round(crder * 5.2, 9), "[deg] Uncertainty in position angle"),
            _card("CSDRADEC", round(crder * 0.02, 12), "[deg] Costandard deviation in RA and Dec"),
            _card("SIGRA", round(jit * 0.7, 9), "[arcsec] RMS dispersion of RA over DCE"),
            _card("SIGDEC", round(jit * 0.65, 9), "[arcsec] RMS dispersion of DEC over DCE"),
            _card("SIGPA", round(jit * 1.9, 9), "[arcsec] RMS dispersion of PA over DCE"),
            _card("RA_RQST", round(ra_rqst % 360.0, 11), "[deg] Requested RA at CRPIX1, CRPIX2"),
            _card("DEC_RQST", round(dec_rqst, 11), "[deg] Requested Dec at CRPIX1, CRPIX2"),
            _card("PM_RA", spec.pm_ra_arcsec_yr, "[arcsec/yr] Proper Motion in RA (J2000)"),
            _card("PM_DEC", spec.pm_dec_arcsec_yr, "[arcsec/yr] Proper Motion in Dec (J200)"),
            _card("RMS_JIT", round(jit, 9), "[arcsec] RMS jitter during DCE"),
            _card("RMS_JITY", round(jit * 0.72, 9), "[arcsec] RMS jitter during DCE along Y"),
            _card("RMS_JITZ", round(jit * 0.69, 9), "[arcsec] RMS jitter during DCE along Z"),
            _card("SIG_JTYZ", round(-jit * 0.3, 9), "[arcsec] Costadard deviation of jitter in YZ"),
            _card("PTGDIFF", round(ptg, 9), "[arcsec] Offset btwn actual and rqsted pntng"),
            _card("PTGDIFFX", round(ptg * math.cos(angle) / scale, 9), "[pixels] rqsted - actual pntng along axis 1"),
            _card("PTGDIFFY", round(ptg * math.sin(angle) / scale, 9), "[pixels] rqsted - actual pntng along axis 2"),
            _card("RA_REF", spec.ra_deg, "[deg] Commanded RA (J2000) of ref. position"),
            _card("DEC_REF", spec.dec_deg, "[deg] Commanded Dec (J2000) of ref. position"),
            _card("USEDBPHF", True, "T if Boresight Pointing History File was used"),
            _card("BPHFNAME", f"BPHF.{int(times.sclk[k]) // 86400 * 86400}.02.pntg", "Boresight Pointing History "
                  "Filename"),
            _card("FOVVERSN", "BodyFrames_FTU_14a.xls", "FOV/BodyFrames file version used"),
            _card("RECONFOV", _FOV[(spec.read_mode, ch)][1], "Reconstructed Field of View"),
        ]  # fmt: skip
        out += [" " * _CARD] * 2 + _heading("DISTORTION KEYWORDS")
        for key, value in wcs_cards.items():
            if key[:2] in ("A_", "B_", "AP", "BP"):
                if key.endswith("ORDER"):
                    text = "polynomial order, axis {}, {}".format(
                        1 if key[0] == "A" else 2, "detector to sky" if len(key) == 7 else "sky to detector")
                    out.append(_card(key, int(value), text))
                elif key.endswith("DMAX"):
                    out.append(_card(key, value, "[pixel] maximum correction"))
                else:
                    out.append(_card(key, value, "distortion coefficient"))
        fluxconv = _FLUXCONV[spec.mission][ch]
        out += [
            *_heading("PHOTOMETRY"),
            _card("BUNIT", "MJy/sr", "Units of image data"),
            _card("FLUXCONV", fluxconv, "Flux Conv. factor (MJy/sr per DN/sec)"),
            _card("GAIN", _GAIN[ch], "e/DN conversion"),
            _card("RONOISE", _ronoise(mode, ch), "[Electrons] Readout Noise from Array"),
            _card("ZODY_EST", v["zody"], "[MJy/sr] Zodiacal Background Estimate"),
            _card("ISM_EST", round(v["background"] - v["zody"], 7), "[MJy/sr] Interstellar Medium Estimate"),
            _card("CIB_EST", 0.0, "[MJy/sr] Cosmic Infrared Background Estimate"),
            _card("SKYDRKZB", round(v["zody"] * 0.98, 6), "[MJy/sr] Zodiacal Background Est of Subtracted Skydark"),
            _card("SKYDKMED", round(abs(self.telemetry[0]) + 0.2, 6), "[MJy/sr] Median of Subtracted Skydark"),
            _card("SKDKRKEY", self.skydark, "Skydark AOR Reqkey"),
            _card("SKDKTIME", float(spec.framtime_s), "[sec] Duration of Skydark AOR"),
            _card("SKDKFDLY", 8.36, "[sec] Average Frame Delay Time of Skydark"),
            _card("SKDKIDLY", 8.36, "[sec] Average Immediate Delay Time of Skydark"),
        ]  # fmt: skip
        out += _heading("GENERAL MAPPING KEYWORDS")
        if spec.dithered:
            out.append(_card("CYCLENUM", v["cycle"], "Current cycle number"))
        out.append(_card("CLUSTPOS", "1", "Current cluster position"))
        out += _heading("IRAC MAPPING KEYWORDS")
        out.append(_card("READMODE", spec.read_mode, "Readout mode (full or sub)"))
        if spec.dithered:
            out += [
                _card("DITHPOS", v["dithpos"], "Current dither position"),
                _card("DITHSCAL", spec.dither_scale, "Dither scale (small, medium, large)"),
            ]
        out += _heading("PEAKUP STAR KEYWORDS")
        out += [
            _card("PKUPMODE", "PCRS" if spec.mission == "warm" else "NONE", "Peakup mode (none, IRS, or PCRS)"),
            _card("ISPUPOS", False, "PU target given in absolute positions (T) or relative"),
            _comment("Note: either offsets OR absolute positions will be listed for the peakup target"),
        ]
        out += [" " * _CARD, *_heading("INSTRUMENT TELEMETRY DATA"), *self._telemetry()]
        out += _heading("DATA FLOW KEYWORDS") + self._dataflow(v) + self._darkdrift()
        out += [" " * _CARD] * 2 + _heading("PROCESSING HISTORY") + self._histories()
        if ftype in ("cbcd", "cbunc"):
            out += [
                _history(f"SATCORR Module version 1.7  image created {self.history_day} 16:36:24 {self._year()}"),
                _card("SATSRCFX", True, "Saturated sources corrected with estimate"),
                _card("SATSRCS", 0, "number of saturated sources fixed"),
                _card("CLPLDNFX", True, "Column Pulldown artifact corrected"),
            ]
            if ftype == "cbunc":
                out.append(_card("PULLSFAC", 1.25, "Scaling of Noise due to Pulldown"))
            out.append(_history(f"warm_pulldown_correction  v.   1.2   {self.history_day} 17:35:44 {self._year()}"))
        elif ftype == "bunc":
            out.append(_history(f"UNCPROP                   v.   2.1   {self.history_day} 21:05:30 {self._year()}"))
        return out

    def _year(self) -> str:
        return self.date[:4]

    def _telemetry(self) -> list[str]:
        t = self.telemetry
        cryo = self.spec.mission == "cryo"
        fpa = 15.0 if cryo else 28.67
        ca = 5.6 if cryo else 27.6
        rows: list[tuple[str, Any, str]] = [
            ("ASHTCON", 2, "Shutter condition (1:closed, 2: open)"),
            ("AWEASIDE", 0, "WEA side in use (0:B, 1:A)"),
            ("ACTXSTAT", 0, "Cmded transcal status"),
            ("ATXSTAT", 0, "transcal status"),
            ("ACFLSTAT", 0, "Cmded floodcal status"),
            ("AFLSTAT", 0, "floodcal status"),
            ("AVRSTUCC", -3.55, "[Volts] Cmded VRSTUC Bias"),
            ("AVRSTBEG", round(-3.55 - 0.01 * abs(t[1]), 7), "[Volts] VRSTUC Bias at start integration"),
            ("AVDETC", -3.05, "[Volts] Cmded VDET Bias"),
            ("AVDETBEG", round(-3.05 - 0.01 * abs(t[2]), 6), "[Volts] VDET Bias at start of integration"),
            ("AVGG1C", -3.61, "[Volts] Cmded VGG1 Bias"),
            ("AVGG1BEG", round(-3.61 - 0.01 * abs(t[3]), 7), "[Volts] VGG1 Bias at start of integration"),
            ("AVDDUCC", -3.55, "[Volts] Cmded VDDUC Bias"),
            ("AVDDUBEG", round(-3.55 - 0.002 * abs(t[4]), 7), "[Volts] VDDUC Bias at start integration"),
            ("AVGGCLC", 0.0, "[Volts] Cmnded VGGCL clock rail voltage"),
            ("AVGGCBEG", 0.0, "[Volts] VGGCL clock rail voltage"),
            ("AHTRIBEG", round(90.0 + abs(t[5]), 6), "[uAmps] Heater current at start of integ"),
            ("AHTRVBEG", round(1.0 + 0.02 * abs(t[6]), 7), "[Volts] Heater Voltage at start integ."),
            ("AFPAT2B", round(fpa + 0.003 * t[7], 6), "[Deg_K] FPA Temp sensor #2 at start integ."),
            ("AFPAT2E", round(fpa + 0.003 * t[8], 6), "[Deg_K] FPA temp sensor #2, end integ."),
            ("ACTENDT", round(20.5 + 0.3 * t[9], 6), "[Deg_C] C&T board thermistor"),
            ("AFPECTE", round(18.8 + 0.3 * t[10], 6), "[Deg_C] FPE control board thermistor"),
            ("AFPEATE", round(22.2 + 0.3 * t[11], 6), "[Deg_C] FPE analog board thermistor"),
            ("ASHTEMPE", round(21.9 + 0.3 * t[12], 6), "[Deg_C] Shutter board thermistor"),
            ("ATCTEMPE", round(23.1 + 0.3 * t[13], 6), "[Deg_C] Temp. controller board thermistor"),
            ("ACETEMPE", round(20.6 + 0.3 * t[14], 6), "[Deg_C] Calib. electronics board thermistor"),
            ("APDTEMPE", round(20.6 + 0.3 * t[15], 6), "[Deg_C] PDU board thermistor"),
        ]
        names = ("Foot 2", "Foot 1", "Shutter", "Top OMH", "Bottom OMH", "Top TxCal Sphere", "Bottom TxCal Sphere",
                 "Foot 3")  # fmt: skip
        for i, name in enumerate(names, start=1):
            rows.append((f"ACATMP{i}E", round(ca + 0.05 * abs(t[15 + i]), 6), f"[Deg_K] CA Temp, {name}"))
        return [_card(*row) for row in rows]

    def _dataflow(self, v: dict[str, Any]) -> list[str]:
        spec, ch = self.spec, self.channel
        k = v["k"]
        return [
            _card("ORIGIN0", "JPL_FOS", "Site where RAW FITS file was written"),
            _card("CREATOR0", "J5.3", "SW system that created RAW FITS"),
            _card("DATE", self.date, "[YYYY-MM-DDThh:mm:ss UTC] file creation date"),
            _card("AORKEY", spec.aorkey, "AOR or EIR key. Astrnmy Obs Req/Instr Eng Req"),
            _card("DS_IDENT", f"ads/sa.spitzer#{spec.aorkey:010d}", "Data Set Identification for ADS/journals"),
            _card("EXPID", k, "Exposure ID (0-9999)"),
            _card("DCENUM", 0, "DCE number (0-9999)"),
            _card("TLMGRPS", 1, "expected number of groups"),
            _card("FILE_VER", 1, "Version of the raw file made by SIS"),
            _card("RAWFILE", f"IRAC.{ch}.{spec.aorkey:010d}.{k:04d}.0000.01.mipl.fits", "Raw data file name"),
            _card("CPT_VER", "3.1.11", "Channel Param Table FOS versioN"),
            _card("CTD_VER", "3.0.94S", "Cmded telemetry data version"),
            _card("EXPDFLAG", False, "(T/F) expedited DCE"),
            _card("MISS_LCT", 0, "Total Missed Line Cnt in this FITS"),
            _card("MANCPKT", False, "T if this FITS is Missing Ancillary Data"),
            _card("MISSDATA", False, "T if this FITS is Missing Image Data"),
            _card("BADTRIG", False, "Bad data (zero pixel) was located in raw frame"),
            _card("PAONUM", 4000 + spec.aorkey % 997, "PAO Number"),
            _card("CAMPAIGN", f"IRAC{(spec.aorkey // 1000) % 10000:04d}00", "Campaign"),
            _card("DCEID", v["dceid"], "Data-Collection-Event ID"),
            _card("DCEINSID", v["dceid"] // 5 + 7, "DCE Instance ID"),
            _card("DPID", _dpid(v["dceid"]), "Data Product Instance ID"),
            _card("PIPENUM", 107, "Pipeline Script Number"),
            _card("SOS_VER", spec.version, "Data-Product Version"),
            _card("PLVID", 22 if spec.mission == "warm" else 16, "Pipeline Version ID"),
            _card("CALID", 7, "CalTrans Version ID"),
            _card("SDRKEPID", 10933958 + spec.aorkey % 1000, "Sky Dark ensemble product ID"),
            _card("PMSKFBID", 2135, "Pixel mask ID"),
            _card("LDRKFBID", 1502, "Fall-back lab dark ID"),
            _card("LINCFBID", 1579, "Fall-back Linearity correction ID"),
            _card("FLATFBID", 2025, "Fall-back flat ID"),
            _card("FLXCFBID", 2183, "Flux conversion ID"),
            _card("MBLTFBID", 1482, "Muxbleed Lookup Table ID"),
            _card("MBCFFBID", 1481, "Muxbleed Coefficients ID"),
            _card("LBDRKFLE", f"{spec.read_mode}_{spec.framtime_s:g}s_ch{ch}_v1.2.0_dark.txt", "Labdark File Used"),
            _card("LBDRKTD", "F", "Labdark Time Dependent (T or F)"),
        ]  # fmt: skip

    def _darkdrift(self) -> list[str]:
        dd = self.darkdrift
        if not self.sub:
            out = [_card(f"DDCORR{i}", float(dd[0, i - 1]), f"Darkdrift Correction for Readout Channel {i}")
                   for i in range(1, 5)]  # fmt: skip
            return [*out, _card("DDBKGND", float(dd[0, 4]), "Darkdrift 'Background' Term")]
        out = [" " * _CARD]
        for p in range(1, _SUB_PLANES + 1):
            for i in range(1, 5):
                out.append(_card(f"DDCR{p:02d}_{i}", float(dd[p - 1, i - 1]),
                                 f"Darkdrift Correction for data plane={p}, r.o.={i}"))  # fmt: skip
            out.append(_card(f"DDBKGD{p:02d}", float(dd[p - 1, 4]), f"Darkdrift 'Background' Term for data plane={p}"))
        return out

    def _histories(self) -> list[str]:
        day, year = self.history_day, self._year()
        y2 = year[2:]
        mdy = f"1/{int(day[-2:]):02d}/{y2}"
        lines = ["job.c ver: 1.50",
                 f"TRANHEAD                  v.         13.2, ran {day} 21:03:33 {year}",
                 f"CALTRANS                 v.        4.0, ran {day} 21:04:05 {year}",
                 f"INSBPOSDOM                v.          1.1, ran {day} 21:04:05 {year}",
                 f"cvti2r4           v.  1.31 A61025, generated  {mdy} at 21:04:06"]  # fmt: skip
        lines += [f"hdrupd8           v.  1.6  A70821,  updated   {mdy} at 21:04:{7 + 3 * i:02d}" for i in range(8)]
        lines += [f"DARKSUBNG                 v. 1.000, ran {day} 21:04:35 {year}",
                  f"FOWLINEARIZE              v.     4.900000, ran {day} 21:04:36 {year}",
                  f"BGMODEL                   v.          1.0, ran {day} 21:04:40 {year}",
                  f"DARKDRIFT                 v.          4.1, ran {day} 21:05:17 {year}",
                  f"FLATAP                    v. 1.500   {day} 21:05:19 {year}",
                  f"DNTOFLUX                  v.          4.2, ran {day} 21:05:24 {year}",
                  f"PTNTRAN                   v.          1.4, ran {day} 21:17:36 {year}",
                  f"FPGen                     v.         1.26, ran {day} 21:17:43 {year}"]  # fmt: skip
        return [_history(line) for line in lines]

    def _mask(self, times: _Times, v: dict[str, Any]) -> list[str]:
        ident, _ = self._identity()
        k = v["k"]
        out = [*ident, *self._proposal(), *_heading("TIME AND EXPOSURE INFORMATION"),
               _card("DATE_OBS", times.date_obs[k], "Date & time at DCE start"),
               _card("MJD_OBS", float(times.mjd[k]), "[days] MJD at DCE start (,JD-2400000.5)"),
               _card("HMJD_OBS", round(float(times.hmjd[k]), 9), "[days] Corresponding Heliocen. Mod. Julian Date"),
               _card("BMJD_OBS", round(float(times.bmjd[k]), 9), "[days] Solar System Barycenter Mod. Julian Date"),
               _card("UTCS_OBS", round(float(times.utcs[k]), 3), "[sec] J2000 ephem. time at DCE start"),
               _card("SCLK_OBS", round(float(times.sclk[k]), 3), "[sec] SCLK time (since 1/1/1980) at DCE start"),
               _card("ET_OBS", round(float(times.et[k]), 3), "[sec] Ephemeris time (seconds past J2000 epoch)"),
               _card("AREADMOD", 1 if self.sub else 0, "Full (0) or subarray (1)"),
               *_heading("mask pixel Bit representation")]  # fmt: skip
        meanings = ("Overall data quality of imask pixel", "Reserved for future use", "Set if optical ghost present",
                    "Set if stray light present", "Set if saturation corrected in pipeline",
                    "Set if muxbleed/bandwidth effect present", "Set if banding present",
                    "Set if column pulldown present", "Set if crosstalk present", "Set if pixel contains radhit",
                    "Set if pixel contains latent image", "Set if flat field was not applied",
                    "Set if pixel is not linear", "Set if pixel is uncorrected saturation",
                    "Set if data is bad or missing")  # fmt: skip
        out += [_card(f"BIT{bit:02d}", 2**bit, text) for bit, text in enumerate(meanings)]
        out.append(_card("PROCBITS", PROCBITS, "Processed Bits in IMASK"))
        flow = self._dataflow(v)
        wanted = ("DATE", "AORKEY", "DS_IDENT", "EXPID", "DCENUM", "FILE_VER", "RAWFILE", "CTD_VER", "EXPDFLAG",
                  "PAONUM", "CAMPAIGN", "DCEID", "DCEINSID", "PIPENUM", "SOS_VER", "PLVID", "PMSKFBID")  # fmt: skip
        out += _heading("DATA FLOW KEYWORDS") + [c for c in flow if c[:8].rstrip() in wanted]
        day, year = self.history_day, self._year()
        out += [" " * _CARD] * 2 + _heading("PROCESSING HISTORY") + [
            _history(f"FLATAP                    v. 1.500   {day} 21:05:19 {year}"),
            _history(f"genimask                  v.   1.4   {day} 21:08:24 {year}"),
            _history(f"FPGen                     v.         1.26, ran {day} 21:17:51 {year}"),
        ]  # fmt: skip
        return out

    def _raw_unc(self, times: _Times, v: dict[str, Any]) -> list[str]:
        """The subarray ``_bunc`` header: in real data a raw-telemetry style header without a WCS."""
        spec, ch, k, mode = self.spec, self.channel, v["k"], v["mode"]
        out = [_card("EXTEND", True, "TAPE MAY HAVE STANDARD FITS EXTENSIONS"),
               _card("TELESCOP", "Spitzer", "Spitzer Space Telescope"),
               _card("INSTRUME", "IRAC", "Spitzer Space Telescope instrument ID"),
               _card("RONOISE", _ronoise(mode, ch), "[Electrons] Readout Noise"),
               _card("AORTIME", float(spec.framtime_s), "[Sec] AOR Template Time"),
               _card("HDRMODE", False, "High Dynamic Range Mode  (T or F)"),
               _comment("Controlled data files (CDFs) used:"),
               _comment("readnoise.tbl, fileID = 4022014"),
               _card("ORIGIN", "JPL_FOS", "installation where FITS file written"),
               _card("CREATOR", _CREATOR[spec.mission], "SW version used to create this FITS file"),
               _card("CHNLNUM", ch, "1 digit instrument channel number"),
               _card("AORKEY", spec.aorkey, "AOR or IER key. Astrnmy Obs Req/Instr Eng Req"),
               _card("EXPID", k, "Exposure ID (0-9999)"),
               _card("DCENUM", 0, "DCE number (0-9999)"),
               _card("OBSRVR", "Synthetic Observer", "Observer"),
               _card("PROPOSID", spec.progid, "Proposal ID"),
               _card("TARGETNA", spec.object_name, "Target Name"),
               _card("RA_RQST", spec.ra_deg, "Right Ascension Requested"),
               _card("DEC_RQST", spec.dec_deg, "Declination Requested"),
               _card("DCEID", v["dceid"], "Data-Collection-Event ID"),
               _card("DPID", _dpid(v["dceid"]) - 2560, "Data Product Instance ID"),
               _card("EXPTYPE", "sci", "Exposure Type"),
               _card("RDOUTMOD", spec.read_mode, "Readout Mode"),
               _card("SOS_VER", spec.version, "Data-Product Version"),
               _card("WARMFLAG", spec.mission == "warm", "SODB:Campaigns.warmFlag"),
               _card("AINTBEG", float(times.aintbeg[k]), "[Secs since IRAC turn-on] Time of integ. start"),
               _card("AFOWLNUM", mode.afowlnum, "AFOWLNUM"),
               _card("AWAITPER", mode.awaitper, "AWAITPER"),
               _card("AREADMOD", 1, "AREADMOD"),
               *self._time_cards(times, k, mode, short=True),
               _card("BUNIT", "MJy/sr", "Units of image data"),
               _card("GAIN", _GAIN[ch], "e/DN conversion"),
               _card("FLUXCONV", _FLUXCONV[spec.mission][ch], "Flux Conv. factor (MJy/sr per DN/sec)"),
               _history("job.c ver: 1.50"),
               _history(f"UNCPROP    v.   2.1   {self.history_day} 21:05:30 {self._year()}")]  # fmt: skip
        return out

    def _small(self, ftype: str, v: dict[str, Any]) -> list[str]:
        """The short headers of the subarray 2-D products."""
        spec = self.spec
        out = [_card("EXTEND", True, "FITS dataset may contain extensions"),
               _comment("FITS (Flexible Image Transport System) format is defined in 'Astronomy"),
               _comment("and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H"),
               _card("AORKEY", spec.aorkey, "AOR key.  Astronomy Obs Request"),
               _card("CHNLNUM", self.channel, "1 digit instrument channel number"),
               _card("EXPID", v["k"], "Exposure ID (0-9999)"),
               _card("INSTRUME", "IRAC", "SPITZER Space Telescope instrument ID"),
               _card("READMODE", spec.read_mode, "Readout mode"),
               _card("DPID", _dpid(v["dceid"]), "Primary Data Product Instance ID")]  # fmt: skip
        if ftype == "unc2d":
            out += [_card("BUNIT", "MJy/sr", "Units of image data")]
        if ftype == "cov2d":
            out += [_card("MASKVAL", 0, "Input Mask Filter Value"),
                    _card("OLRCUTOF", 3.0, "[sigma] Outliers Cutoff Threshold")]  # fmt: skip
        out.append(_history(f"submed                    v.   1.0   {self.history_day} 21:20:27 {self._year()}"))
        return out


def _make_wcs_cards(read_mode: str, channel: int, pa_deg: float, crval: tuple[float, float]) -> dict[str, Any]:
    crpix = 128.0 if read_mode == "FULL" else 16.5
    cd = _cd_matrix(read_mode, channel, pa_deg)
    return {"CRPIX1": crpix, "CRPIX2": crpix, "CRVAL1": crval[0], "CRVAL2": crval[1], "CD1_1": cd[0],
            "CD1_2": cd[1], "CD2_1": cd[2], "CD2_2": cd[3], **_sip(read_mode, channel)}  # fmt: skip


def _dpid(dceid: int) -> int:
    return 200_000_000 + (dceid * 7) % 1_900_000_000


def _hms(ra_deg: float) -> str:
    hours = (ra_deg % 360.0) / 15.0
    h = int(hours)
    m = int((hours - h) * 60)
    s = ((hours - h) * 60 - m) * 60
    if round(s, 1) >= 60.0:
        s, m = 0.0, m + 1
    return f"{h:02d}h{m:02d}m{s:04.1f}s"


def _dms(dec_deg: float) -> str:
    sign = "-" if dec_deg < 0 else "+"
    d_abs = abs(dec_deg)
    d = int(d_abs)
    m = int((d_abs - d) * 60)
    s = round(((d_abs - d) * 60 - m) * 60)
    if s >= 60:
        s, m = 0, m + 1
    return f"{sign}{d:02d}d{m:02d}m{s:02d}s"
