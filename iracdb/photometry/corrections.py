"""IRAC photometric corrections: pixel phase x array location (irac-photometry.md §3).

A numpy port of the IRAC team's ``irac_aphot_corr.pro`` (Ingalls et al.; warm S19.2 and cryo S18.24
coefficients) with the older Reach et al. (2005) / Hora et al. (2008) cryo variants, the per-pixel correction
maps, and an optional call of the user's own IDL copy through ``mirpyidl``.

Coordinates are 0-based with the centre of the bottom-left pixel at (0, 0); ``x`` is the column, ``y`` the row.

The port reproduces IDL exactly: ``FIX`` truncates toward zero, ``ROUND`` rounds half away from zero, and the
coefficients are the float32 roundings of the routine's single-precision literals, promoted to float64.

Warm channels 3 and 4 cannot be corrected (the original returns the flux unchanged and prints a note). Here
:func:`correction_factor` returns a factor of exactly 1 for them and :func:`is_correctable` tells the caller so
(the measurement sets :attr:`iracdb.flags.Flag.NO_PHOTOMETRIC_CORRECTION`); nothing is printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from iracdb.errors import BadOption

Mission = Literal["warm", "cryo"]
Model = Literal["ingalls", "reach", "hora"]

#: Subarray origin in full-array pixels per channel (the routine's ``/SUBARRAY`` offsets), as (x, y).
SUBARRAY_OFFSET: dict[int, tuple[int, int]] = {1: (8, 216), 2: (8, 216), 3: (8, 8), 4: (8, 8)}


def _f32(values: Sequence[float]) -> NDArray[np.float64]:
    """The routine's single-precision literals as IDL holds them: float32 roundings promoted to float64."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


_CH34_PP = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]  # dFx, dFy, X0, Y0, sx, sy, F0, q: no pixel phase

#: ``[A, B, C, D, E, F, dFx, dFy, X0, Y0, sx, sy, F0, q]`` per (mission, channel).
COEFFICIENTS: dict[tuple[str, int], NDArray[np.float64]] = {
    ("warm", 1): _f32([0.98397385, -8.6387206e-05, 3.6310403e-05, -5.6284359e-07, 1.6023687e-06, 1.3574380e-06,
                       0.039129220, 0.059108698, 0.15899583, 0.037160298, 0.18512016, 0.17005089, 0.95685578,
                       1.0]),
    ("warm", 2): _f32([0.97494935, 0.00015911599, 9.5483763e-05, 5.5486492e-08, 1.2604664e-06, 3.3644277e-06,
                       0.017579553, 0.0092593634, 0.14839436, 0.11459924, 0.18020032, 0.15649627, 0.98847611,
                       1.0]),
    ("cryo", 1): _f32([0.98866790, -2.5460463e-05, -4.5413791e-05, -3.7748392e-07, 9.6670990e-07, 1.1259718e-06,
                       0.018823169, 0.030359022, 0.091603768, 0.0067795815, 0.17107575, 0.16949466, 0.97909886,
                       1.0]),
    ("cryo", 2): _f32([0.97713769, 0.00016023137, 0.00010671203, 6.1546421e-07, 2.3478283e-06, 1.8726664e-06,
                       0.010250904, 0.0091393800, 0.040266280, 0.12475250, 0.17673946, 0.27301699, 0.98964462,
                       1.0]),
    ("cryo", 3): _f32([0.98318195, -0.00044891858, 5.7375573e-05, 3.5613363e-07, 1.9036209e-06, 1.1912425e-06,
                       *_CH34_PP]),
    ("cryo", 4): _f32([0.98239745, 0.00020132123, -1.9285260e-05, -3.7193490e-07, 1.4509036e-06, 1.8131923e-06,
                       *_CH34_PP]),
}

# Reach et al. (2005) / Hora et al. (2008) array-location coefficients A..F (before normalisation) and the
# radial pixel-phase amplitude K (ch2 only in Hora et al.).
_RH_AL = {
    1: [1.0114, -3.536e-6, -6.826e-5, -1.618e-8, 1.215e-6, 1.049e-6],
    2: [1.0138, 8.401e-5, 3.345e-7, 1.885e-7, 1.438e-6, 1.337e-6],
    3: [1.0055, -3.870e-4, 4.600e-5, 1.956e-7, 2.078e-6, 9.970e-7],
    4: [1.0054, 2.332e-4, -8.234e-5, -1.881e-7, 6.520e-7, 9.415e-7],
}
_RH_K = {"reach": {1: 0.0535}, "hora": {1: 0.0535, 2: 0.0309}}


def idl_fix(values: ArrayLike) -> NDArray[np.float64]:
    """IDL ``FIX``: truncate toward zero (as float64)."""
    return np.trunc(np.asarray(values, dtype=np.float64))


def idl_round(values: ArrayLike) -> NDArray[np.float64]:
    """IDL ``ROUND``: round half away from zero (numpy's ``round`` rounds half to even)."""
    v = np.asarray(values, dtype=np.float64)
    whole = np.trunc(v)
    frac = v - whole  # exact in floating point
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(v), 0.0)


def is_correctable(channel: int, mission: str = "warm", model: str = "ingalls") -> bool:
    """Whether the correction changes anything for this channel and mission.

    False only for warm channels 3 and 4, which the IRAC team's routine returns unchanged (the caller should then
    flag the measurement with :attr:`~iracdb.flags.Flag.NO_PHOTOMETRIC_CORRECTION`).
    """
    _check(channel, mission, model)
    return not (mission == "warm" and channel in (3, 4))


def _check(channel: int, mission: str, model: str) -> None:
    if channel not in (1, 2, 3, 4):
        raise BadOption(f"IRAC channel must be 1, 2, 3 or 4, not {channel!r}")
    if mission not in ("warm", "cryo"):
        raise BadOption(f"mission must be 'warm' or 'cryo', not {mission!r}")
    if model not in ("ingalls", "reach", "hora"):
        raise BadOption(f"correction model must be 'ingalls', 'reach' or 'hora', not {model!r}")
    if model != "ingalls" and mission != "cryo":
        raise BadOption(f"the {model.title()} et al. correction applies to cryogenic data only; use model='ingalls'")


def _array_location(p: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    i = idl_fix(x) - 127.0
    j = idl_fix(y) - 127.0
    return p[0] + p[1] * i + p[2] * j + p[3] * i * j + p[4] * i**2 + p[5] * j**2


def _wrap(d: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.where(np.abs(d) > 0.5, 1.0 - np.abs(d), d)


def _rh_params(channel: int, model: str) -> tuple[NDArray[np.float64], float]:
    """Normalised Reach/Hora array-location coefficients and pixel-phase amplitude K for one channel."""
    p = np.zeros(14)
    p[[0, 13]] = 1.0
    p[0:6] = _f32(_RH_AL[channel])
    if model == "reach":
        norm = _array_location(p, np.array(127.0), np.array(127.0))  # centre of the array
    else:
        # Median over the whole array; IDL's MEDIAN of an even count takes the upper middle value.
        grid = np.arange(256, dtype=np.float64)
        al = np.sort(_array_location(p, grid[None, :], grid[:, None]), axis=None)
        norm = al[al.size // 2]
    p[0:6] = p[0:6] / norm
    k = float(_f32([_RH_K[model].get(channel, 0.0)])[0])
    return p, k


def correction_factor(
    x: ArrayLike,
    y: ArrayLike,
    channel: int,
    *,
    mission: Mission = "warm",
    subarray: bool = False,
    pp_only: bool = False,
    al_only: bool = False,
    model: Model = "ingalls",
) -> NDArray[np.float64]:
    """Response ``R_al * R_pp / q`` at centroid ``(x, y)``: the corrected flux is ``flux / factor``.

    Parameters
    ----------
    x, y : array_like
        Centroid in pixels, 0-based with the centre of the bottom-left pixel at (0, 0); full-array
        coordinates, or subarray coordinates when ``subarray`` is true. Broadcast against each other.
    channel : int
        IRAC channel, 1-4.
    mission : {"warm", "cryo"}
        Coefficient set: warm (S19.2) or cryogenic (S18.24, the routine's ``/CRYO``).
    subarray : bool
        ``(x, y)`` are subarray coordinates (the routine's ``/SUBARRAY``): (8, 216) is added for ch1/ch2,
        (8, 8) for ch3/ch4.
    pp_only, al_only : bool
        Pixel-phase only (``R_al = 1``) or array-location only (``R_pp = 1``).
    model : {"ingalls", "reach", "hora"}
        The IRAC team's routine (default) or the older cryo corrections of Reach et al. (2005) or
        Hora et al. (2008) (the routine's ``/REACH``, ``/HORA``; ``mission`` must be ``"cryo"``).

    Returns
    -------
    numpy.ndarray
        Dimensionless factor (float64, broadcast shape of ``x`` and ``y``). Exactly 1 for warm channels 3 and 4,
        which cannot be corrected (see :func:`is_correctable`). NaN where ``x`` or ``y`` is NaN.
    """
    _check(channel, mission, model)
    if pp_only and al_only:
        raise BadOption("pp_only and al_only cannot both be set")
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    if not is_correctable(channel, mission, model):
        return np.where(np.isfinite(x) & np.isfinite(y), 1.0, np.nan)
    if subarray:
        ox, oy = SUBARRAY_OFFSET[channel]
        x, y = x + ox, y + oy
    if model == "ingalls":
        p = COEFFICIENTS[(mission, channel)]
        k = 0.0
    else:
        p, k = _rh_params(channel, model)

    al = np.ones_like(x) if pp_only else _array_location(p, x, y)
    if al_only:
        pp = np.ones_like(x)
    else:
        xphase = x - idl_round(x)
        yphase = y - idl_round(y)
        if model == "ingalls":
            dx = _wrap(xphase - p[8])
            dy = _wrap(yphase - p[9])
            pp = p[6] * np.exp(-(dx**2) / (2 * p[10] ** 2)) + p[7] * np.exp(-(dy**2) / (2 * p[11] ** 2)) + p[12]
        else:
            pp = 1 + k * (1.0 / np.sqrt(2 * np.pi) - np.sqrt(xphase**2 + yphase**2))
    return al * pp / p[13]


def irac_aphot_corr(
    flux: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    channel: int,
    *,
    mission: Mission = "warm",
    subarray: bool = False,
    pp_only: bool = False,
    al_only: bool = False,
    model: Model = "ingalls",
) -> NDArray[np.float64]:
    """Corrected aperture flux, as the IRAC team's ``irac_aphot_corr.pro`` computes it.

    Parameters
    ----------
    flux : array_like
        Aperture flux (any unit; the result has the same unit), broadcast against ``x`` and ``y``.
    x, y, channel, mission, subarray, pp_only, al_only, model
        As in :func:`correction_factor`.

    Returns
    -------
    numpy.ndarray
        ``flux / correction_factor(x, y, ...)`` (float64). Warm channels 3 and 4 come back unchanged.
    """
    factor = correction_factor(
        x, y, channel, mission=mission, subarray=subarray, pp_only=pp_only, al_only=al_only, model=model
    )
    return np.asarray(flux, dtype=np.float64) / factor


@dataclass(frozen=True)
class CorrectionMaps:
    """The IRAC team's per-pixel cryo correction maps of one channel.

    Attributes
    ----------
    location : numpy.ndarray or None
        256x256 array-location correction (``ch?_photcorr_rj.fits``), indexed ``[row, column]`` of the full
        array; *multiplied* into the flux (its values are ``1 / R_al``).
    phase : numpy.ndarray or None
        Pixel-phase map (``ch?_ppcorr_cryo_final.fits``, ch1 and ch2 only), indexed ``[y phase, x phase]`` on a
        grid starting at phase ``phase_origin`` with step ``phase_step`` (pixels). Its values are the pixel-phase
        *response* (they peak near the pixel centre and equal the ``/CRYO`` routine's ``R_pp`` to 0.2-0.5%),
        although its header comment says to multiply: the flux is *divided* by it.
    """

    location: NDArray[np.float64] | None = None
    phase: NDArray[np.float64] | None = None
    phase_origin: float = -0.5
    phase_step: float = 0.01


def load_correction_maps(directory: str | PathLike[str], channel: int) -> CorrectionMaps:
    """Read ``ch<N>_photcorr_rj.fits`` and, if present, ``ch<N>_ppcorr_cryo_final.fits`` from ``directory``.

    Raises
    ------
    iracdb.errors.BadOption
        The array-location map of ``channel`` is not in ``directory``.
    """
    from astropy.io import fits

    folder = Path(directory)
    loc_path = folder / f"ch{channel}_photcorr_rj.fits"
    if not loc_path.is_file():
        raise BadOption(f"no array-location correction map {loc_path.name} in {folder}")
    location = np.asarray(fits.getdata(loc_path), dtype=np.float64)
    phase = None
    origin, step = -0.5, 0.01
    pp_path = folder / f"ch{channel}_ppcorr_cryo_final.fits"
    if pp_path.is_file():
        with fits.open(pp_path) as hdul:
            hdr = hdul[0].header
            phase = np.asarray(hdul[0].data, dtype=np.float64)
            # The maps' keywords: 1-based grid pixel CRVAL1 holds phase CRPIX1, steps of CD1_1.
            step = float(hdr.get("CD1_1", 0.01))
            origin = float(hdr.get("CRPIX1", 0.0)) - (float(hdr.get("CRVAL1", 51)) - 1) * step
    return CorrectionMaps(location, phase, origin, step)


def map_correction_factor(
    x: ArrayLike, y: ArrayLike, maps: CorrectionMaps, subarray_offset: tuple[int, int] = (0, 0)
) -> NDArray[np.float64]:
    """Correction factor (divisor) from the IRAC team's per-pixel cryo correction maps.

    The divisor is ``phase(xphase, yphase) / location[pixel]`` (see :class:`CorrectionMaps`): the location map is
    read at the pixel containing the centroid, the phase map is interpolated bilinearly at
    ``(x - ROUND(x), y - ROUND(y))``.

    Parameters
    ----------
    x, y : array_like
        Centroids in pixels (0-based, centre of the bottom-left pixel at (0, 0)).
    maps : CorrectionMaps
        The maps of the channel (either may be None, then it is not applied).
    subarray_offset : tuple of int
        Added to ``(x, y)`` before looking up the location map (:data:`SUBARRAY_OFFSET` for subarray data).

    Returns
    -------
    numpy.ndarray
        Dimensionless divisor: corrected flux = flux / factor. NaN where the centroid is outside the location map
        or not finite.
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    finite = np.isfinite(x) & np.isfinite(y)
    xs = np.where(finite, x, 0.0)
    ys = np.where(finite, y, 0.0)
    factor = np.where(finite, 1.0, np.nan)
    if maps.location is not None:
        lm = maps.location
        col = np.floor(xs + subarray_offset[0] + 0.5).astype(np.int64)
        row = np.floor(ys + subarray_offset[1] + 0.5).astype(np.int64)
        inside = (col >= 0) & (col < lm.shape[1]) & (row >= 0) & (row < lm.shape[0])
        value = lm[np.clip(row, 0, lm.shape[0] - 1), np.clip(col, 0, lm.shape[1] - 1)]
        factor = factor / np.where(inside, value, np.nan)
    if maps.phase is not None:
        pm = maps.phase
        gx = np.clip((xs - idl_round(xs) - maps.phase_origin) / maps.phase_step, 0, pm.shape[1] - 1)
        gy = np.clip((ys - idl_round(ys) - maps.phase_origin) / maps.phase_step, 0, pm.shape[0] - 1)
        ix = np.minimum(np.floor(gx).astype(np.int64), pm.shape[1] - 2)
        iy = np.minimum(np.floor(gy).astype(np.int64), pm.shape[0] - 2)
        fx, fy = gx - ix, gy - iy
        value = ((1 - fy) * ((1 - fx) * pm[iy, ix] + fx * pm[iy, ix + 1])
                 + fy * ((1 - fx) * pm[iy + 1, ix] + fx * pm[iy + 1, ix + 1]))
        factor = factor * value
    return factor


def irac_aphot_corr_idl(
    flux: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    channel: int,
    *,
    mission: Mission = "warm",
    subarray: bool = False,
    pp_only: bool = False,
    al_only: bool = False,
) -> NDArray[np.float64]:
    """Call the user's own copy of ``irac_aphot_corr.pro`` through ``mirpyidl`` (optional extra ``iracdb[idl]``).

    Same arguments and result as :func:`irac_aphot_corr`. The routine must be on the IDL path.

    Raises
    ------
    iracdb.errors.BadOption
        If ``mirpyidl`` is not installed (it needs a licensed IDL installation).
    """
    _check(channel, mission, "ingalls")
    idl = load_idl()
    flux, x, y = np.broadcast_arrays(
        np.asarray(flux, dtype=np.float64), np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    )
    keywords = [f"/{mission.upper()}"]
    keywords += [kw for kw, on in (("/SUBARRAY", subarray), ("/PP_ONLY", pp_only), ("/AL_ONLY", al_only)) if on]
    idl.setVariable("iracdb_flux", np.ravel(flux))
    idl.setVariable("iracdb_x", np.ravel(x))
    idl.setVariable("iracdb_y", np.ravel(y))
    idl.execute(
        f"iracdb_out = irac_aphot_corr(iracdb_flux, iracdb_x, iracdb_y, {int(channel)}, {', '.join(keywords)})"
    )
    return np.asarray(idl.getVariable("iracdb_out"), dtype=np.float64).reshape(flux.shape)


def load_idl() -> ModuleType:
    """Import ``mirpyidl`` or explain how to get it."""
    try:
        import mirpyidl
    except ImportError as exc:
        raise BadOption(
            "corrections='idl' calls your own IDL copy of irac_aphot_corr.pro through mirpyidl, which is not "
            "installed. Install it with `pip install 'iracdb[idl]'` (it needs a licensed IDL installation), "
            "or use corrections='numpy' (the default), an exact port that needs nothing."
        ) from exc
    return mirpyidl
