"""Centroids and FWHM of a point source, vectorised over a stack of planes.

``moment``
    Iterated flux-weighted first moment of the background-subtracted image within a circle (exact pixel overlap
    weights), re-centred on each new estimate until it moves less than ``tol`` px: the centre-of-light method the
    IRAC pixel-phase correction was derived with. FWHM from the second moments of the same pixels, corrected for
    the pixel width (``sigma² - 1/12`` px²), as a Gaussian-equivalent FWHM.
``gauss``
    Least-squares fit of an axis-aligned 2-D Gaussian integrated over each pixel plus a constant background, in a
    square box (Levenberg-Marquardt, all planes at once), started from the moment centroid.

Positions are image pixels, 0-based, centre of the bottom-left pixel at (0, 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from iracdb.errors import BadOption
from iracdb.photometry.aperture import Stack, circle_overlap, windows

CentroidMethod = Literal["box", "moment", "gauss"]

FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class Centroid:
    """Centroid of each plane.

    Attributes
    ----------
    x, y : numpy.ndarray
        Centroid, image pixels; NaN where it failed.
    fwhm_x, fwhm_y : numpy.ndarray
        FWHM along x and y, pixels (NaN when not measurable).
    ok : numpy.ndarray
        bool, the centroid succeeded (finite, positive flux, converged, inside its window).
    """

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    fwhm_x: NDArray[np.float64]
    fwhm_y: NDArray[np.float64]
    ok: NDArray[np.bool_]


def moment_centroid(
    clean: NDArray | Stack,
    x0: NDArray[np.float64],
    y0: NDArray[np.float64],
    background: NDArray[np.float64],
    radius: float = 3.0,
    *,
    reach: float = 3.0,
    maxiter: int = 30,
    tol: float = 1e-4,
) -> Centroid:
    """Iterated first moment within a circle of ``radius`` px, starting at ``(x0, y0)``.

    Parameters
    ----------
    clean : numpy.ndarray
        ``(n, ny, nx)`` images (or a :class:`~iracdb.photometry.aperture.Stack`); NaN pixels are left out.
    x0, y0 : numpy.ndarray
        ``(n,)`` starting positions, image pixels.
    background : numpy.ndarray
        ``(n,)`` background per pixel subtracted before the moments (image unit).
    radius : float
        Radius of the circular window, pixels.
    reach : float
        How far (px) the centre may wander from ``(x0, y0)`` before the centroid is declared failed (the pixels
        are read once, in a window of this margin).
    maxiter : int
        Maximum number of re-centring iterations.
    tol : float
        Convergence: the centre moves less than ``tol`` px.

    Returns
    -------
    Centroid
        ``ok`` is false when the flux in the window is not positive, the centroid is not finite or wanders
        beyond ``reach``, or when the last of ``maxiter`` iterations still moved it by 0.001 px or more.
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    y = np.asarray(y0, dtype=np.float64).copy()
    bkg = np.asarray(background, dtype=np.float64)
    # One window for all iterations, wide enough for the centre to wander ``reach`` px.
    half = int(np.ceil(radius + reach)) + 1
    active = np.isfinite(x) & np.isfinite(y) & np.isfinite(bkg)
    win = windows(clean, np.where(active, x, np.nan), np.where(active, y, np.nan), half)
    v_all = np.where(np.isfinite(win.values), win.values - bkg[:, None, None], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y, fx, fy, ok = moment_in_windows(v_all, x - win.x0, y - win.y0, active, radius, maxiter=maxiter, tol=tol)
    return Centroid(x + win.x0, y + win.y0, fx, fy, ok)


def moment_in_windows(
    v: NDArray[np.float64],
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    active: NDArray[np.bool_],
    radius: float,
    *,
    maxiter: int = 30,
    tol: float = 1e-4,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """The iterations of :func:`moment_centroid` on ``(n, s, s)`` windows already cut and background-subtracted.

    ``v`` holds 0 at bad pixels; ``x``, ``y`` are the starting positions in window pixels (``s = 2 * half + 1``,
    the window centred on the rounded start); only ``active`` planes are iterated. Returns ``x``, ``y`` (window
    pixels), ``fwhm_x``, ``fwhm_y``, all NaN where ``ok`` is false, and ``ok``. Divisions by a zero flux are
    expected (they fail the plane): call it under ``np.errstate(divide="ignore", invalid="ignore")``.

    Each pass works on the planes still moving only, and the second moments are formed once, at the end, from
    the column and row sums of each plane's last pass (the same numbers the pass would have given).
    """
    n, s, _ = v.shape
    if n == 1:
        return _moment_one(v, float(x[0]), float(y[0]), bool(active[0]), radius, maxiter, tol)
    half = (s - 1) // 2
    pos = np.array([x, y], dtype=np.float64)  # (2, n): x and y go through every step together
    v_flat = np.ascontiguousarray(v).reshape(-1)
    last_step = np.full(n, np.inf)
    ok = np.array(active, dtype=bool)
    limit = half - radius - 0.5  # beyond this the circle leaves the window
    sub = int(np.ceil(radius)) + 1  # half-size of the part of the window the circle can touch
    p = 2 * sub + 1
    offsets = np.arange(-sub, sub + 1)
    local = offsets.astype(np.float64)
    patch = (offsets[:, None] * s + offsets).ravel()  # flat offsets of the (p, p) patch about its centre pixel
    plane_start = np.arange(n) * (s * s)
    profiles = np.zeros((2, n, p))  # column and row sums, flux and local moments of each plane's last pass
    totals = np.zeros(n)
    moments = np.zeros((2, n))
    idx = np.flatnonzero(ok)
    for _ in range(maxiter):
        if idx.size == 0:
            break
        sel = slice(None) if idx.size == n else idx  # all planes: views instead of copies
        pi = pos[:, sel]
        c = np.minimum(np.maximum(np.floor(pi + 0.5), sub), s - 1 - sub).astype(np.int64)
        part = v_flat[(plane_start[sel] + c[1] * s + c[0])[:, None] + patch].reshape(-1, p, p)
        q = pi - c + sub
        wv = part * circle_overlap(q[0], q[1], radius, (p, p))
        total = wv.sum(axis=(1, 2))
        prof = np.empty((2, len(total), p))
        wv.sum(axis=1, out=prof[0])  # column sums: the x profile
        wv.sum(axis=2, out=prof[1])  # row sums: the y profile
        mom = (prof * local).sum(axis=2) / total
        profiles[:, sel], totals[sel], moments[:, sel] = prof, total, mom
        new = mom + c
        good = (total > 0) & (np.isfinite(new) & (np.abs(new - half) <= limit)).all(axis=0)
        new = np.where(good, new, np.nan)
        step = np.hypot(*(new - pi))
        last_step[sel] = step
        pos[:, sel] = new
        ok[sel] = good  # the planes iterated were all ok so far
        idx = idx[good & ~(step < tol)]
    ok &= last_step < 1e-3
    var = (profiles * (local - moments[:, :, None]) ** 2).sum(axis=2) / totals  # second moments, x and y
    fwhm = FWHM_PER_SIGMA * np.sqrt(np.where(var - 1 / 12 > 0, var - 1 / 12, np.nan))
    nan = np.where(ok, 1.0, np.nan)
    return pos[0] * nan, pos[1] * nan, fwhm[0] * nan, fwhm[1] * nan, ok


def _moment_one(
    v: NDArray[np.float64], x: float, y: float, active: bool, radius: float, maxiter: int, tol: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """:func:`moment_in_windows` for a single plane (a full-array frame): the same array operations on the same
    ``(1, ...)`` shapes, so the same numbers, but the position, the checks and the loop in Python scalars (a
    dozen numpy calls fewer per pass, which is most of a pass for one plane)."""
    s = v.shape[1]
    half = (s - 1) // 2
    limit = half - radius - 0.5
    sub = int(np.ceil(radius)) + 1
    p = 2 * sub + 1
    local = np.arange(-sub, sub + 1).astype(np.float64)
    nan1 = np.full(1, np.nan)
    if not active:
        return nan1, nan1, nan1, nan1, np.zeros(1, dtype=bool)
    ok, last_step = True, math.inf
    prof, total, mom = np.zeros((2, 1, p)), np.zeros(1), np.zeros((2, 1))
    for _ in range(maxiter):
        cx = min(max(math.floor(x + 0.5), sub), s - 1 - sub)
        cy = min(max(math.floor(y + 0.5), sub), s - 1 - sub)
        part = v[:, cy - sub : cy + sub + 1, cx - sub : cx + sub + 1]
        wv = part * circle_overlap(np.array([x - cx + sub]), np.array([y - cy + sub]), radius, (p, p))
        total = wv.sum(axis=(1, 2))
        prof = np.empty((2, 1, p))
        wv.sum(axis=1, out=prof[0])
        wv.sum(axis=2, out=prof[1])
        mom = (prof * local).sum(axis=2) / total
        new_x, new_y = float(mom[0, 0]) + cx, float(mom[1, 0]) + cy
        ok = (
            float(total[0]) > 0 and math.isfinite(new_x) and math.isfinite(new_y)
            and abs(new_x - half) <= limit and abs(new_y - half) <= limit
        )
        if not ok:
            new_x = new_y = math.nan
        last_step = float(np.hypot(new_x - x, new_y - y))
        x, y = new_x, new_y
        if not ok or last_step < tol:
            break
    ok = ok and last_step < 1e-3
    if not ok:
        return nan1, nan1, nan1, nan1, np.zeros(1, dtype=bool)
    var = (prof * (local - mom[:, :, None]) ** 2).sum(axis=2) / total
    fwhm = FWHM_PER_SIGMA * np.sqrt(np.where(var - 1 / 12 > 0, var - 1 / 12, np.nan))
    return np.array([x]), np.array([y]), fwhm[0], fwhm[1], np.ones(1, dtype=bool)


def _pixel_gauss(e: NDArray[np.float64], c: NDArray[np.float64], s: NDArray[np.float64]):
    """Pixel integrals of a unit 1-D Gaussian and their derivatives with respect to centre and sigma.

    ``e`` are the ``(m+1,)`` pixel edges, ``c`` and ``s`` are ``(n,)``; results are ``(n, m)``.
    """
    from scipy.special import erf  # here: importing scipy costs the reduction's workers ~0.3 s at start

    u = (e[None, :] - c[:, None]) / s[:, None]
    cdf = 0.5 * erf(u / np.sqrt(2.0))
    pdf = np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi)
    g = np.diff(cdf, axis=1)
    d_c = -np.diff(pdf, axis=1) / s[:, None]
    d_s = -np.diff(pdf * u, axis=1) / s[:, None]
    return g, d_c, d_s


def gauss_centroid(
    clean: NDArray | Stack,
    x0: NDArray[np.float64],
    y0: NDArray[np.float64],
    background: NDArray[np.float64],
    fwhm0: NDArray[np.float64] | float = 1.5,
    box: int = 4,
    *,
    maxiter: int = 50,
    tol: float = 1e-8,
) -> Centroid:
    """Fit ``b + F * Gx(x) * Gy(y)`` (pixel-integrated Gaussians) in a ``(2*box+1)``-px square box.

    Parameters
    ----------
    clean : numpy.ndarray
        ``(n, ny, nx)`` images (or a :class:`~iracdb.photometry.aperture.Stack`); NaN pixels are left out.
    x0, y0 : numpy.ndarray
        ``(n,)`` starting position and box centre, image pixels.
    background : numpy.ndarray
        ``(n,)`` starting value of the constant background (image unit).
    fwhm0 : float or numpy.ndarray
        Starting FWHM, pixels.
    box : int
        Half-width of the fitting box, pixels.
    maxiter, tol
        Levenberg-Marquardt iterations and relative convergence of the chi-square.

    Returns
    -------
    Centroid
        ``ok`` is false when the fit does not give a positive flux, widths within (0.1, 2*box) px and a centre
        inside the box.
    """
    n = clean.shape[0]
    x0 = np.asarray(x0, dtype=np.float64)
    y0 = np.asarray(y0, dtype=np.float64)
    start_ok = np.isfinite(x0) & np.isfinite(y0)
    win = windows(clean, np.where(start_ok, x0, 0.0), np.where(start_ok, y0, 0.0), box)
    s = 2 * box + 1
    v = win.values
    good = np.isfinite(v) & start_ok[:, None, None]
    v = np.where(good, v, 0.0)
    wgt = good.astype(np.float64)
    edges = np.arange(s + 1, dtype=np.float64) - 0.5
    sig0 = np.broadcast_to(np.asarray(fwhm0, dtype=np.float64) / FWHM_PER_SIGMA, (n,))
    b0 = np.where(np.isfinite(background), background, 0.0)
    p: NDArray[np.float64] = np.stack([
        np.maximum(np.sum((v - b0[:, None, None]) * wgt, axis=(1, 2)), 1e-30),
        np.where(start_ok, x0 - win.x0, box), np.where(start_ok, y0 - win.y0, box),
        np.where(np.isfinite(sig0), sig0, 0.6), np.where(np.isfinite(sig0), sig0, 0.6), b0,
    ], axis=1)

    def model_and_jac(p: NDArray[np.float64]):
        gx, dgx, dsx = _pixel_gauss(edges, p[:, 1], p[:, 3])
        gy, dgy, dsy = _pixel_gauss(edges, p[:, 2], p[:, 4])
        f = p[:, 0, None, None]
        m = p[:, 5, None, None] + f * gy[:, :, None] * gx[:, None, :]
        jac = np.stack([
            gy[:, :, None] * gx[:, None, :],
            f * gy[:, :, None] * dgx[:, None, :],
            f * dgy[:, :, None] * gx[:, None, :],
            f * gy[:, :, None] * dsx[:, None, :],
            f * dsy[:, :, None] * gx[:, None, :],
            np.ones_like(m),
        ], axis=-1)
        return m, jac

    def chi2(m: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.sum(wgt * (v - m) ** 2, axis=(1, 2))

    m, jac = model_and_jac(p)
    c2 = chi2(m)
    lam = np.full(n, 1e-3)
    done = ~start_ok
    eye = np.eye(6)
    for _ in range(maxiter):
        j = jac.reshape(n, -1, 6) * wgt.reshape(n, -1, 1)
        r = (v - m).reshape(n, -1) * wgt.reshape(n, -1)
        jtj = np.einsum("nki,nkj->nij", j, j)
        jtr = np.einsum("nki,nk->ni", j, r)
        a = jtj + lam[:, None, None] * jtj * eye
        a = a + 1e-300 * eye  # keeps singular systems solvable; they are caught by the checks below
        with np.errstate(all="ignore"):
            step = np.linalg.solve(a, jtr[..., None])[..., 0]
        trial = p + step
        trial[:, 3:5] = np.abs(trial[:, 3:5])
        with np.errstate(all="ignore"):
            mt, jt = model_and_jac(trial)
            ct = chi2(mt)
        better = np.isfinite(ct) & (ct <= c2) & ~done
        small = better & (c2 - ct <= tol * np.maximum(c2, 1e-300))
        p = np.where(better[:, None], trial, p)
        m = np.where(better[:, None, None], mt, m)
        jac = np.where(better[:, None, None, None], jt, jac)
        c2 = np.where(better, ct, c2)
        lam = np.where(better, lam / 10, np.minimum(lam * 10, 1e10))
        done |= small | (lam >= 1e10)
        if done.all():
            break
    ok = (
        start_ok & np.all(np.isfinite(p), axis=1) & (p[:, 0] > 0)
        & (p[:, 3] > 0.1) & (p[:, 4] > 0.1) & (p[:, 3] < 2 * box) & (p[:, 4] < 2 * box)
        & (p[:, 1] > -0.5) & (p[:, 1] < s - 0.5) & (p[:, 2] > -0.5) & (p[:, 2] < s - 0.5)
    )
    nan = np.where(ok, 1.0, np.nan)
    return Centroid(
        (p[:, 1] + win.x0) * nan, (p[:, 2] + win.y0) * nan,
        FWHM_PER_SIGMA * p[:, 3] * nan, FWHM_PER_SIGMA * p[:, 4] * nan, ok,
    )


def centroid(
    clean: NDArray | Stack,
    x0: NDArray[np.float64],
    y0: NDArray[np.float64],
    background: NDArray[np.float64],
    method: CentroidMethod = "box",
    radius: float = 3.0,
    box: int = 4,
    reach: float = 3.0,
) -> Centroid:
    """Centroid of each plane by ``method`` (see the module docstring; ``"box"``: the IRAC team's box centroider,
    :func:`iracdb.photometry.box.box_centroid`, which estimates its own background and ignores ``background``);
    ``radius`` is the moment window, px, ``box`` the half-width of the Gaussian fitting box, px, ``reach`` how far
    (px) the moment centroid may move."""
    if method == "box":
        from iracdb.photometry.box import box_centroid  # box imports this module

        return box_centroid(clean, x0, y0)
    mom = moment_centroid(clean, x0, y0, background, radius, reach=reach)
    if method == "moment":
        return mom
    if method == "gauss":
        start_x = np.where(mom.ok, mom.x, x0)
        start_y = np.where(mom.ok, mom.y, y0)
        f0 = np.sqrt(mom.fwhm_x * mom.fwhm_y)
        return gauss_centroid(clean, start_x, start_y, background, np.where(np.isfinite(f0), f0, 1.5), box)
    raise BadOption(f"centroid method must be 'box', 'moment' or 'gauss', not {method!r}")
