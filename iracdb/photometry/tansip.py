"""Vectorised TAN-SIP world <-> pixel transforms over many frames at once (pure numpy, no astropy at run time).

Building an ``astropy.wcs.WCS`` costs 15-30 ms per header; a reduction needs one sky -> pixel conversion per frame
for thousands of frames. :class:`TanSip` holds the gnomonic (``TAN``) projection and the SIP distortion polynomials
of ``n`` frames as arrays with a leading frame axis and converts one position per frame in a handful of array
operations.

Conventions (those of ``astropy.wcs`` with ``origin=0``, FITS Paper II and the SIP convention, Shupe et al. 2005):

- pixel coordinates are 0-based with the centre of the bottom-left pixel at (0, 0) (``x`` column, ``y`` row);
- ``CRPIX`` is kept as in the header (1-based): the SIP offsets are ``u = x + 1 - CRPIX1``, ``v = y + 1 - CRPIX2``;
- pixel -> sky: ``(U, V) = (u + A(u, v), v + B(u, v))``, intermediate world coordinates ``CD @ (U, V)`` (degrees),
  then the TAN deprojection about ``CRVAL`` (native pole at ``LONPOLE``, default 180 degrees);
- sky -> pixel inverts each step exactly: TAN projection, ``CD`` inverse, then Newton's method on
  ``u + A(u, v) = U, v + B(u, v) = V`` started from the header's inverse polynomials ``AP``/``BP`` (which are only
  an approximation, ~0.01 px), so the result agrees with ``WCS.all_world2pix`` to ~1e-10 px.

A position that cannot be converted (behind the tangent plane, a singular ``CD`` matrix, a Newton solution that does
not converge) comes back as NaN, which :func:`iracdb.photometry.measure` flags as ``COORD_CONVERSION_FAILED``. Far
from an image the SIP inverse need not converge: :meth:`TanSip.far_off_image` tells such positions apart first, with
the forward transform only, so that they can be flagged ``NOT_IN_FOV`` instead.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["FAR_OFF_MARGIN", "SIP_MAX_ORDER", "WCS_KEYWORDS", "TanSip"]

#: Highest SIP order read from a header (IRAC uses 5; the SIP convention allows 9).
SIP_MAX_ORDER = 9
#: Degrees per radian: the TAN projection's sphere radius ``R0`` in FITS Paper II.
_R0 = 180.0 / math.pi
#: Newton iterations at most, and the step (pixels) below which a solution has converged.
_MAX_ITER = 30
_STEP_TOL_PX = 1e-11
#: A solution whose last step is still larger than this (pixels) is NaN.
_ACCEPT_PX = 1e-8
#: :meth:`TanSip.far_off_image`: a position further from the image centre than (1 + this) times the centre-corner
#: distance is far off the image (twice the half-diagonal: the SIP inverse converges well within that).
FAR_OFF_MARGIN = 1.0

_SIP_PREFIXES = ("A", "B", "AP", "BP")
#: Every header keyword :meth:`TanSip.from_keywords` may read.
WCS_KEYWORDS = frozenset(
    {"CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CDELT1", "CDELT2", "CROTA2", "LONPOLE"}
    | {f"CD{i}_{j}" for i in (1, 2) for j in (1, 2)}
    | {f"PC{i}_{j}" for i in (1, 2) for j in (1, 2)}
    | {f"{prefix}_ORDER" for prefix in _SIP_PREFIXES}
    | {
        f"{prefix}_{p}_{q}"
        for prefix in _SIP_PREFIXES
        for p in range(SIP_MAX_ORDER + 1)
        for q in range(SIP_MAX_ORDER + 1 - p)
    }
)
_CTYPE = re.compile(r"^(RA--|DEC-)-TAN(-SIP)?$")


@dataclass(frozen=True)
class TanSip:
    """The TAN-SIP WCS of ``n`` frames, as arrays with a leading frame axis.

    Attributes
    ----------
    crval : numpy.ndarray
        ``(n, 2)`` sky position (RA, Dec) of the reference pixel, degrees.
    crpix : numpy.ndarray
        ``(n, 2)`` reference pixel (x, y), FITS 1-based as in the header.
    cd : numpy.ndarray
        ``(n, 2, 2)`` linear transformation (``CDi_j``), degrees per pixel.
    a, b : numpy.ndarray
        ``(n, m, m)`` forward SIP coefficients: ``a[k, p, q]`` multiplies ``u**p * v**q`` (``A_p_q``); zero-padded
        to the highest order of the stack; all zero for a frame without distortion.
    ap, bp : numpy.ndarray
        ``(n, k, k)`` inverse SIP coefficients (``AP_p_q``, ``BP_p_q``), used as the Newton starting point only.
    lonpole : numpy.ndarray
        ``(n,)`` native longitude of the celestial pole, degrees (``LONPOLE``, default 180).
    """

    crval: NDArray[np.float64]
    crpix: NDArray[np.float64]
    cd: NDArray[np.float64]
    a: NDArray[np.float64]
    b: NDArray[np.float64]
    ap: NDArray[np.float64]
    bp: NDArray[np.float64]
    lonpole: NDArray[np.float64]

    def __len__(self) -> int:
        return self.crval.shape[0]

    # ------------------------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_keywords(cls, values: Mapping[str, float | int | str | None]) -> TanSip:
        """A one-frame TanSip from header keyword values.

        Parameters
        ----------
        values : mapping
            Header keyword -> value (``None`` or absent for a missing keyword; numbers may also be given as text):
            ``CTYPE1/2`` (``RA---TAN``/``DEC--TAN``, optionally with ``-SIP``), ``CRVAL1/2`` (degrees),
            ``CRPIX1/2`` (1-based pixels), the linear part as ``CDi_j`` (degrees/pixel), or ``CDELTi`` (degrees/pixel)
            with ``PCi_j`` or ``CROTA2`` (degrees), optional ``LONPOLE`` (degrees), and the SIP ``A_ORDER``,
            ``B_ORDER``, ``AP_ORDER``, ``BP_ORDER``, ``A_p_q`` ... coefficients. A ``PC`` matrix takes precedence
            over ``CD``, as in WCSLIB; SIP coefficients are used when ``A_ORDER`` and ``B_ORDER`` are both > 1, as in
            astropy (also without the ``-SIP`` suffix).

        Returns
        -------
        TanSip
            One frame.

        Raises
        ------
        ValueError
            The keywords do not describe a usable celestial TAN WCS; the message is one line saying why.
        """
        ctypes = []
        for axis, lead in ((1, "RA--"), (2, "DEC-")):
            raw = values.get(f"CTYPE{axis}")
            if raw is None or str(raw).strip() == "":
                raise ValueError(f"no celestial WCS: CTYPE{axis} is missing")
            ctype = str(raw).strip().upper()
            match = _CTYPE.match(ctype)
            if match is None or match.group(1) != lead:
                want = "RA---TAN" if axis == 1 else "DEC--TAN"
                raise ValueError(f"unsupported WCS: CTYPE{axis} = {raw!r} (only {want} or {want}-SIP)")
            ctypes.append(ctype)
        crval = [_number(values, f"CRVAL{axis}") for axis in (1, 2)]
        crpix = [_number(values, f"CRPIX{axis}") for axis in (1, 2)]
        if not -90.0 <= crval[1] <= 90.0:
            raise ValueError(f"invalid WCS: CRVAL2 = {crval[1]} is not a declination")
        cd = _linear(values)
        if not math.isfinite(det := cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0]) or det == 0.0:
            raise ValueError("invalid WCS: the CD matrix is singular")
        lonpole = _number(values, "LONPOLE", 0.0 if crval[1] >= 90.0 else 180.0)
        a, b = _sip_pair(values, "A", "B")
        ap, bp = _sip_pair(values, "AP", "BP")
        return cls(
            crval=np.array([crval], dtype=np.float64),
            crpix=np.array([crpix], dtype=np.float64),
            cd=np.array([cd], dtype=np.float64),
            a=a[None],
            b=b[None],
            ap=ap[None],
            bp=bp[None],
            lonpole=np.array([lonpole], dtype=np.float64),
        )

    @classmethod
    def stack(cls, frames: Sequence[TanSip]) -> TanSip:
        """Concatenate TanSips along the frame axis, zero-padding the SIP arrays to the highest order.

        Parameters
        ----------
        frames : sequence of TanSip
            At least one.

        Returns
        -------
        TanSip
            ``sum(len(f) for f in frames)`` frames, in order.
        """
        if not frames:
            raise ValueError("TanSip.stack needs at least one frame")
        if len(frames) == 1:
            return frames[0]

        def padded(name: str) -> NDArray[np.float64]:
            arrays = [getattr(f, name) for f in frames]
            m = max(arr.shape[1] for arr in arrays)
            if all(arr.shape[1] == m for arr in arrays):
                return np.concatenate(arrays)
            out = np.zeros((sum(arr.shape[0] for arr in arrays), m, m))
            start = 0
            for arr in arrays:
                out[start : start + arr.shape[0], : arr.shape[1], : arr.shape[2]] = arr
                start += arr.shape[0]
            return out

        return cls(
            crval=np.concatenate([f.crval for f in frames]),
            crpix=np.concatenate([f.crpix for f in frames]),
            cd=np.concatenate([f.cd for f in frames]),
            a=padded("a"),
            b=padded("b"),
            ap=padded("ap"),
            bp=padded("bp"),
            lonpole=np.concatenate([f.lonpole for f in frames]),
        )

    # ------------------------------------------------------------------------------------------------------------
    # transforms
    # ------------------------------------------------------------------------------------------------------------

    def world_to_pixel(self, ra_deg: ArrayLike, dec_deg: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Pixel position on each frame of one sky position per frame (or one for all), SIP included.

        Parameters
        ----------
        ra_deg, dec_deg : array_like
            ICRS right ascension and declination, degrees; shape ``(n,)`` or anything that broadcasts to it
            (a scalar: the same position on every frame).

        Returns
        -------
        x, y : numpy.ndarray
            ``(n,)`` pixel coordinates (0-based, centre of the bottom-left pixel at (0, 0)), equal to astropy's
            ``WCS.all_world2pix(ra, dec, 0)`` to ~1e-10 px; NaN where the position is behind the tangent plane, the
            ``CD`` matrix is singular or the SIP inversion does not converge.
        """
        n = len(self)
        ra = np.broadcast_to(np.asarray(ra_deg, dtype=np.float64), (n,))
        dec = np.broadcast_to(np.asarray(dec_deg, dtype=np.float64), (n,))
        with np.errstate(all="ignore"):
            xi, eta = self._project(ra, dec)
            cd = self.cd
            det = cd[:, 0, 0] * cd[:, 1, 1] - cd[:, 0, 1] * cd[:, 1, 0]
            big_u = (cd[:, 1, 1] * xi - cd[:, 0, 1] * eta) / det
            big_v = (cd[:, 0, 0] * eta - cd[:, 1, 0] * xi) / det
            u, v = self._undistort(big_u, big_v)
            x = u + (self.crpix[:, 0] - 1.0)
            y = v + (self.crpix[:, 1] - 1.0)
        bad = ~(np.isfinite(x) & np.isfinite(y))
        x[bad] = np.nan
        y[bad] = np.nan
        return x, y

    def pixel_to_world(self, x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Sky position of one pixel position per frame (or one for all), SIP included.

        Parameters
        ----------
        x, y : array_like
            Pixel coordinates (0-based, centre of the bottom-left pixel at (0, 0)); shape ``(n,)`` or broadcastable.

        Returns
        -------
        ra_deg, dec_deg : numpy.ndarray
            ``(n,)`` ICRS right ascension in [0, 360) and declination, degrees (astropy's ``all_pix2world(x, y, 0)``).
        """
        n = len(self)
        u = np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)) - (self.crpix[:, 0] - 1.0)
        v = np.broadcast_to(np.asarray(y, dtype=np.float64), (n,)) - (self.crpix[:, 1] - 1.0)
        with np.errstate(all="ignore"):
            (fa, fb), _ = _poly(self.a, self.b, u, v, derivatives=False)
            big_u, big_v = u + fa, v + fb
            cd = self.cd
            xi = cd[:, 0, 0] * big_u + cd[:, 0, 1] * big_v
            eta = cd[:, 1, 0] * big_u + cd[:, 1, 1] * big_v
            return self._deproject(xi, eta)

    def far_off_image(
        self, ra_deg: ArrayLike, dec_deg: ArrayLike, nx: int, ny: int, margin: float = FAR_OFF_MARGIN
    ) -> NDArray[np.bool_]:
        """Whether a sky position is far off each frame's image, decided with the forward transform only.

        The SIP inverse need not converge far from an image (its polynomials grow without bound there), so a
        position is tested against the image's footprint before it is converted: it is far off when its angular
        distance from the image centre exceeds ``(1 + margin)`` times the largest distance of an image corner.

        Parameters
        ----------
        ra_deg, dec_deg : array_like
            ICRS right ascension and declination, degrees; shape ``(n,)`` or broadcastable (as :meth:`world_to_pixel`).
        nx, ny : int
            Image width and height, pixels (the corners are the outer edges of the corner pixels).
        margin : float
            How far beyond the circle through the corners a position still counts as near, in units of that
            circle's radius.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` booleans; False where a distance cannot be computed (the inverse then decides).
        """
        n = len(self)
        ra = np.broadcast_to(np.asarray(ra_deg, dtype=np.float64), (n,))
        dec = np.broadcast_to(np.asarray(dec_deg, dtype=np.float64), (n,))
        with np.errstate(all="ignore"):
            centre = self.pixel_to_world((nx - 1) / 2.0, (ny - 1) / 2.0)
            radius = np.zeros(n)
            for cx, cy in ((-0.5, -0.5), (nx - 0.5, -0.5), (-0.5, ny - 0.5), (nx - 0.5, ny - 0.5)):
                radius = np.fmax(radius, _separation_deg(*centre, *self.pixel_to_world(cx, cy)))
            distance = _separation_deg(*centre, ra, dec)
            return np.asarray(distance > (1.0 + margin) * radius)

    # ------------------------------------------------------------------------------------------------------------
    # steps
    # ------------------------------------------------------------------------------------------------------------

    def _pole(self) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray]:
        """(alpha_p, sin delta_p, cos delta_p, sin phi_p, cos phi_p); exact for multiples of 90 degrees."""
        ra0 = self.crval[:, 0]
        sd0, cd0 = _sincosd(self.crval[:, 1])
        sp, cp = _sincosd(self.lonpole)
        return ra0, sd0, cd0, sp, cp

    def _project(self, ra: NDArray, dec: NDArray) -> tuple[NDArray, NDArray]:
        """Celestial (degrees) -> intermediate world coordinates (degrees) of the TAN projection; NaN behind it."""
        ra0, sd0, cd0, sp, cp = self._pole()
        dra = np.deg2rad(ra - ra0)
        sda, cda = np.sin(dra), np.cos(dra)
        sd, cdd = _sincosd(dec)
        # cos(theta) cos(phi - phi_p), cos(theta) sin(phi - phi_p), sin(theta): FITS Paper II eq. 5.
        cx = sd * cd0 - cdd * sd0 * cda
        cy = -cdd * sda
        st = sd * sd0 + cdd * cd0 * cda
        scale = np.where(st > 0.0, _R0 / st, np.nan)
        xi = scale * (sp * cx + cp * cy)
        eta = -scale * (cp * cx - sp * cy)
        return xi, eta

    def _deproject(self, xi: NDArray, eta: NDArray) -> tuple[NDArray, NDArray]:
        """Intermediate world coordinates (degrees) -> celestial (degrees): FITS Paper II eq. 2 for TAN."""
        ra0, sd0, cd0, sp, cp = self._pole()
        norm = np.sqrt(_R0 * _R0 + xi * xi + eta * eta)
        st = _R0 / norm
        c_cos = (xi * sp - eta * cp) / norm  # cos(theta) cos(phi - phi_p)
        c_sin = (xi * cp + eta * sp) / norm  # cos(theta) sin(phi - phi_p)
        num = -c_sin
        den = st * cd0 - c_cos * sd0
        ra = np.mod(ra0 + np.rad2deg(np.arctan2(num, den)), 360.0)
        dec = np.rad2deg(np.arctan2(st * sd0 + c_cos * cd0, np.hypot(num, den)))
        return ra, dec

    def _undistort(self, big_u: NDArray, big_v: NDArray) -> tuple[NDArray, NDArray]:
        """Solve ``u + A(u, v) = U, v + B(u, v) = V`` by Newton's method (all frames at once)."""
        if not (self.a.any() or self.b.any()):
            return big_u, big_v
        if self.ap.any() or self.bp.any():
            (fa, fb), _ = _poly(self.ap, self.bp, big_u, big_v, derivatives=False)
            u, v = big_u + fa, big_v + fb
            start_ok = np.isfinite(u) & np.isfinite(v)
            u, v = np.where(start_ok, u, big_u), np.where(start_ok, v, big_v)
        else:
            u, v = big_u.copy(), big_v.copy()
        step = np.full(u.shape, np.inf)
        active = np.isfinite(u) & np.isfinite(v)
        a, b = self.a, self.b
        for _ in range(_MAX_ITER):
            if not active.any():
                break
            idx = np.flatnonzero(active) if not active.all() else None
            if idx is None:
                ua, va, aa, ba, tu, tv = u, v, a, b, big_u, big_v
            else:
                ua, va, aa, ba, tu, tv = u[idx], v[idx], a[idx], b[idx], big_u[idx], big_v[idx]
            (fa, fb), (fa_u, fa_v, fb_u, fb_v) = _poly(aa, ba, ua, va, derivatives=True)
            r1 = ua + fa - tu
            r2 = va + fb - tv
            j11, j12, j21, j22 = 1.0 + fa_u, fa_v, fb_u, 1.0 + fb_v
            det = j11 * j22 - j12 * j21
            du = (j22 * r1 - j12 * r2) / det
            dv = (j11 * r2 - j21 * r1) / det
            s = np.maximum(np.abs(du), np.abs(dv))
            s = np.where(np.isfinite(s), s, np.inf)
            if idx is None:
                u = u - du
                v = v - dv
                step = s
                active = s > _STEP_TOL_PX
            else:
                u[idx] -= du
                v[idx] -= dv
                step[idx] = s
                active[idx] = s > _STEP_TOL_PX
            # a diverging solution stops as soon as it is not finite (it is NaN below)
            active &= np.isfinite(u) & np.isfinite(v)
        failed = ~(step <= _ACCEPT_PX)
        u[failed] = np.nan
        v[failed] = np.nan
        return u, v


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _separation_deg(ra1: NDArray, dec1: NDArray, ra2: NDArray, dec2: NDArray) -> NDArray:
    """Angular distance between sky positions (degrees in, degrees out; Vincenty's formula, exact at any distance)."""
    sd1, cd1 = _sincosd(dec1)
    sd2, cd2 = _sincosd(dec2)
    sda, cda = _sincosd(ra2 - ra1)
    num = np.hypot(cd2 * sda, cd1 * sd2 - sd1 * cd2 * cda)
    return np.rad2deg(np.arctan2(num, sd1 * sd2 + cd1 * cd2 * cda))


def _sincosd(angle_deg: NDArray) -> tuple[NDArray, NDArray]:
    """sin and cos of angles in degrees, exact (0, +-1) at multiples of 90 degrees, as WCSLIB's sind/cosd."""
    rad = np.deg2rad(angle_deg)
    s, c = np.sin(rad), np.cos(rad)
    quarter = np.mod(angle_deg, 360.0) / 90.0
    exact = quarter == np.round(quarter)
    if np.any(exact):
        k = np.round(quarter).astype(np.int64) % 4
        s = np.where(exact, np.array([0.0, 1.0, 0.0, -1.0])[k], s)
        c = np.where(exact, np.array([1.0, 0.0, -1.0, 0.0])[k], c)
    return s, c


def _poly(
    a: NDArray, b: NDArray, u: NDArray, v: NDArray, *, derivatives: bool
) -> tuple[tuple[NDArray, NDArray], tuple[NDArray, ...]]:
    """Values (and partial derivatives) of the SIP polynomials ``a``, ``b`` ``(n, m, m)`` at ``(u, v)`` ``(n,)``."""
    m = a.shape[1]
    coef = np.stack((a, b), axis=1)  # (n, 2, m, m)
    pu = _powers(u, m)  # (n, m)
    pv = _powers(v, m)
    if not derivatives:
        t = np.einsum("nkpq,nq->nkp", coef, pv)
        f = np.einsum("nkp,np->nk", t, pu)
        return (f[:, 0], f[:, 1]), ()
    exps = np.arange(1, m, dtype=np.float64)
    dpu = np.zeros_like(pu)
    dpu[:, 1:] = pu[:, :-1] * exps
    dpv = np.zeros_like(pv)
    dpv[:, 1:] = pv[:, :-1] * exps
    t = np.einsum("nkpq,njq->nkjp", coef, np.stack((pv, dpv), axis=1))  # (n, 2, 2, m): sum over q with v^q, dv^q
    f = np.einsum("nkjp,np->nkj", t, pu)  # [:, k, 0] value, [:, k, 1] d/dv
    fu = np.einsum("nkp,np->nk", t[:, :, 0], dpu)
    return (f[:, 0, 0], f[:, 1, 0]), (fu[:, 0], f[:, 0, 1], fu[:, 1], f[:, 1, 1])


def _powers(u: NDArray, m: int) -> NDArray:
    """``(n, m)`` powers ``u**0 .. u**(m-1)``."""
    out = np.empty((u.shape[0], m))
    out[:, 0] = 1.0
    for p in range(1, m):
        out[:, p] = out[:, p - 1] * u
    return out


def _number(values: Mapping[str, float | int | str | None], key: str, default: float | None = None) -> float:
    raw = values.get(key)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        if default is None:
            raise ValueError(f"no celestial WCS: {key} is missing")
        return default
    try:
        value = float(raw.strip().replace("D", "E")) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"invalid WCS: {key} = {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"invalid WCS: {key} = {raw!r} is not finite")
    return value


def _linear(values: Mapping[str, float | int | str | None]) -> list[list[float]]:
    """The CD matrix (degrees/pixel) from PCi_j + CDELTi, CDi_j, or CDELTi + CROTA2 (WCSLIB's precedence)."""
    pc_keys = [f"PC{i}_{j}" for i in (1, 2) for j in (1, 2)]
    cd_keys = [f"CD{i}_{j}" for i in (1, 2) for j in (1, 2)]
    has_pc = any(values.get(k) is not None for k in pc_keys)
    has_cd = any(values.get(k) is not None for k in cd_keys)
    has_cdelt = values.get("CDELT1") is not None or values.get("CDELT2") is not None
    if has_pc or (not has_cd and values.get("CROTA2") is None and has_cdelt):
        cdelt = [_number(values, f"CDELT{i}") for i in (1, 2)]
        pc = [[_number(values, f"PC{i}_{j}", float(i == j)) for j in (1, 2)] for i in (1, 2)]
        return [[cdelt[i] * pc[i][j] for j in range(2)] for i in range(2)]
    if has_cd:
        return [[_number(values, f"CD{i}_{j}", 0.0) for j in (1, 2)] for i in (1, 2)]
    if values.get("CROTA2") is not None:
        c1, c2 = (_number(values, f"CDELT{i}") for i in (1, 2))
        s, c = (float(t) for t in _sincosd(np.array(_number(values, "CROTA2"))))
        return [[c1 * c, -c2 * s], [c1 * s, c2 * c]]
    raise ValueError("no celestial WCS: neither CDi_j nor CDELTi (with PCi_j or CROTA2) is given")


def _sip_pair(values: Mapping[str, float | int | str | None], first: str, second: str) -> tuple[NDArray, NDArray]:
    """``(m, m)`` coefficient arrays of one SIP pair (A/B or AP/BP); 1x1 zeros when absent (as astropy: order > 1)."""
    orders = []
    for prefix in (first, second):
        raw = values.get(f"{prefix}_ORDER")
        order = None if raw is None else _number(values, f"{prefix}_ORDER")
        if order is not None and (order != int(order) or not 0 <= order <= SIP_MAX_ORDER):
            raise ValueError(f"invalid SIP: {prefix}_ORDER = {raw!r} (an integer 0-{SIP_MAX_ORDER})")
        orders.append(None if order is None else int(order))
    order_a, order_b = orders
    if order_a is None or order_a <= 1:
        if order_b is not None and order_b > 1:
            raise ValueError(f"invalid SIP: {second}_ORDER given without {first}_ORDER")
        return np.zeros((1, 1)), np.zeros((1, 1))
    if order_b is None:
        raise ValueError(f"invalid SIP: {first}_ORDER given without {second}_ORDER")
    if order_b <= 1:
        return np.zeros((1, 1)), np.zeros((1, 1))
    m = max(order_a, order_b) + 1
    out = []
    for prefix, order in ((first, order_a), (second, order_b)):
        keys, flat = _sip_layout(prefix, order, m)
        given = [values.get(key) for key in keys]
        try:  # the usual case: numbers (or number text) and gaps, in one pass
            numbers = [0.0 if value is None else float(value) for value in given]
            if not all(map(math.isfinite, numbers)):
                raise ValueError
        except (TypeError, ValueError):
            numbers = [_number(values, key, 0.0) for key in keys]  # says which keyword is bad
        coef = np.zeros(m * m)
        coef[flat] = numbers
        out.append(coef.reshape(m, m))
    return out[0], out[1]


@functools.cache
def _sip_layout(prefix: str, order: int, m: int) -> tuple[tuple[str, ...], NDArray[np.intp]]:
    """The keywords ``prefix_p_q`` (p + q <= order) and their flat indices in an ``(m, m)`` array."""
    pairs = [(p, q) for p in range(order + 1) for q in range(order + 1 - p)]
    return tuple(f"{prefix}_{p}_{q}" for p, q in pairs), np.array([p * m + q for p, q in pairs], dtype=np.intp)
