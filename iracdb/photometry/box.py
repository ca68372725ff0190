"""The IRAC team's box centroider (``box_centroider.pro``) and its noise pixels, vectorised over a stack of planes.

The IRAC pixel-phase correction (``irac_aphot_corr.pro``) was derived from positions measured with the IRAC team's
``box_centroider.pro`` (S. Carey, J. Ingalls, J. Krick; IRSA "Spitzer contributed tools"), called from their
``get_centroids`` as ``box_centroider, image, sigma2, xmax, ymax, 3, 6, 3, ..., /TWOPASS``. This module follows that
call:

1. **Peak**: the brightest good pixel within ``search_half`` (2) px, in x and in y, of the pixel nearest the
   starting position (``get_centroids`` looks for the brightest pixel in a 5-pixel search window around the
   expected position and passes it as ``XMAX``, ``YMAX``).
2. **Box**: a square of ``2 * half_box + 1`` (7 x 7) pixels centred on that pixel (``ROUND(XMAX ± HALFBOXWIDTH)``).
3. **Its own background**: the pixels whose Chebyshev distance from the box centre is ``half_box + back_border``
   to ``half_box + back_border + back_width`` (6 to 12) pixels, i.e. a square annulus ``BOXBORDER = 3`` pixels
   outside the box and ``BACKBOXWIDTH = 6`` pixels wide, clipped to the image. Its level is the median of the good
   pixels, then one pass of rejection of the pixels further than 3 standard deviations (sample variance, ``n - 1``,
   as IDL's ``MOMENT``) from that median, then the median of the rest. At least half as many good background
   pixels as the box has pixels (24.5 for 7 x 7) are needed, before and after the rejection.
4. **First moment** of the background-subtracted good pixels of the box, ``x0 = sum(I x) / sum(I)``; more than half
   of the box's pixels must be good.
5. **Two passes** (``/TWOPASS``): steps 2-4 again with the box centred on the pixel nearest the first pass's
   centroid (so the answer does not depend on where the first box happened to sit).

Also from the second pass: ``noise_pixels = (sum I)^2 / sum(I^2)`` over the same background-subtracted good pixels
of the 7 x 7 box (the box within 3 px, in x and in y, of the pixel holding the centroid), and the FWHM from the
second moments, ``2 sqrt(2 ln 2) sqrt(sum(I dx^2) / sum(I) - 1/12)``: unlike the IDL code, the pixel width (variance
1/12 px²) is taken out, as for the ``moment`` centroid, so that it is the source's FWHM.

Where this differs from the IDL code, on purpose: a background that cannot be estimated (too few good pixels) fails
the centroid (the IDL code subtracts 0 and goes on); a median of an even number of values is the mean of the two
middle values (numpy; IDL's ``MEDIAN`` without ``/EVEN`` takes the upper one); the background annulus is not shifted
inward when the box is clipped at the image edge (the IDL code clips the box first); its failure on a plane is a
flag, not a printed message.

Positions are image pixels, 0-based, centre of the bottom-left pixel at (0, 0) (the IDL convention too).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from iracdb.photometry.aperture import Stack, gather, windows
from iracdb.photometry.centroid import FWHM_PER_SIGMA, Centroid

#: ``box_centroider``'s arguments as ``get_centroids`` calls it: HALFBOXWIDTH, BACKBOXWIDTH, BOXBORDER (pixels).
HALF_BOX_PX = 3
BACK_WIDTH_PX = 6
BACK_BORDER_PX = 3
#: Half-width of the square searched for the peak pixel around the starting position, pixels (5 x 5).
SEARCH_HALF_PX = 2
#: The background's one pass of outlier rejection, standard deviations.
CLIP_SIGMA = 3.0


@dataclass(frozen=True)
class BoxCentroid(Centroid):
    """A :class:`~iracdb.photometry.centroid.Centroid` with the box centroider's other per-plane results.

    Attributes
    ----------
    noise_pixels : numpy.ndarray
        ``(sum I)^2 / sum(I^2)`` over the background-subtracted good pixels of the box, pixels (NaN where the
        centroid failed).
    background : numpy.ndarray
        The box's own background per pixel, image unit (e.g. MJy/sr); NaN where it could not be estimated.
    """

    noise_pixels: NDArray[np.float64]
    background: NDArray[np.float64]


def box_centroid(
    clean: NDArray | Stack,
    x0: NDArray[np.float64],
    y0: NDArray[np.float64],
    *,
    half_box: int = HALF_BOX_PX,
    back_width: int = BACK_WIDTH_PX,
    back_border: int = BACK_BORDER_PX,
    search_half: int = SEARCH_HALF_PX,
) -> BoxCentroid:
    """The box centroider of the IRAC team (see the module docstring), from the starting positions ``(x0, y0)``.

    Parameters
    ----------
    clean : numpy.ndarray or Stack
        ``(n, ny, nx)`` images; NaN (and, for a :class:`~iracdb.photometry.aperture.Stack`, masked) pixels are
        left out.
    x0, y0 : numpy.ndarray
        ``(n,)`` starting positions, image pixels; NaN: not measured.
    half_box, back_width, back_border : int
        ``HALFBOXWIDTH``, ``BACKBOXWIDTH``, ``BOXBORDER`` of ``box_centroider.pro``, pixels.
    search_half : int
        Half-width of the square searched for the peak pixel, pixels.

    Returns
    -------
    BoxCentroid
        ``ok`` is false where the start is not finite, the background or the box has too few good pixels, or the
        box's net flux is not positive.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    y0 = np.asarray(y0, dtype=np.float64)
    px, py = _peak(clean, x0, y0, search_half)
    first = _one_pass(clean, px, py, half_box, back_width, back_border)
    # Second pass about the pixel holding the first centroid (IDL: only when that centroid is positive). Where that
    # is the first box's pixel, the second pass is the first (the same pixels, the same arithmetic): only the
    # planes whose box moves are measured again.
    again = first.ok & (first.x > 0) & (first.y > 0)
    cx, cy = np.where(again, first.x, px), np.where(again, first.y, py)
    with np.errstate(invalid="ignore"):
        moved = again & ((np.floor(cx + 0.5) != np.floor(px + 0.5)) | (np.floor(cy + 0.5) != np.floor(py + 0.5)))
    idx = np.flatnonzero(moved)
    if idx.size == 0:
        return first
    redo = _one_pass(clean, cx[idx], cy[idx], half_box, back_width, back_border, planes=idx)
    merged = {}
    for f in fields(BoxCentroid):
        values = getattr(first, f.name).copy()
        values[idx] = getattr(redo, f.name)
        merged[f.name] = values
    return BoxCentroid(**merged)


def _peak(
    clean: NDArray | Stack, x0: NDArray[np.float64], y0: NDArray[np.float64], search_half: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The brightest good pixel within ``search_half`` px of the pixel nearest ``(x0, y0)``; NaN where none."""
    win = windows(clean, x0, y0, search_half)
    n, s, _ = win.values.shape
    flat = win.values.reshape(n, -1)
    some = np.isfinite(flat).any(axis=1)
    best = np.argmax(np.where(np.isfinite(flat), flat, -np.inf), axis=1)
    nan = np.where(some, 1.0, np.nan)
    return (win.x0 + best % s) * nan, (win.y0 + best // s) * nan


def _one_pass(
    clean: NDArray | Stack, xc: NDArray[np.float64], yc: NDArray[np.float64], half_box: int, back_width: int,
    back_border: int, planes: NDArray[np.int64] | None = None,
) -> BoxCentroid:
    """Steps 2-4 of the module docstring with the box centred on the pixel nearest ``(xc, yc)`` (of the planes
    ``planes``, default all).

    The ring and box pixels are cut pixel-major, ``(pixels, planes)``, so that every sum over a plane's pixels is
    one ``add.reduce`` down the columns, added in the pixels' (row-major) order: see :func:`_column_sum`."""
    ring_dy, ring_dx, box_dy, box_dx = _offsets(half_box, back_width, back_border)
    n_box = len(box_dx)
    k = len(xc)
    plane = np.arange(k) if planes is None else np.asarray(planes)
    finite = np.isfinite(xc) & np.isfinite(yc)
    cx = np.where(finite, np.floor(np.where(finite, xc, 0) + 0.5), -(10**6)).astype(np.int64)
    cy = np.where(finite, np.floor(np.where(finite, yc, 0) + 0.5), -(10**6)).astype(np.int64)
    cut = pixel_major(clean, plane, cx, cy, np.concatenate([ring_dy, box_dy]), np.concatenate([ring_dx, box_dx]))
    ring = cut[: len(ring_dx)]
    level = _background(ring.astype(np.float64, copy=False), 0.5 * n_box, ring)
    values = cut[len(ring_dx) :].astype(np.float64, copy=False) - level  # (n_box, k); NaN: bad, or no background
    good = np.isfinite(values)
    v = np.where(good, values, 0.0)
    dx = box_dx.astype(np.float64)[:, None]
    dy = box_dy.astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        total = _column_sum(v)
        mx, my = _column_sum(v * dx) / total, _column_sum(v * dy) / total
        noise_pixels = total**2 / _column_sum(v * v)
        var_x = _column_sum(v * (dx - mx) ** 2) / total
        var_y = _column_sum(v * (dy - my) ** 2) / total
        ok = (good.sum(axis=0) > 0.5 * n_box) & np.isfinite(level) & (total > 0) & np.isfinite(mx) & np.isfinite(my)
        nan = np.where(ok, 1.0, np.nan)
        # As the moment centroid: the pixel width (variance 1/12 px²) taken out, so it is the source's FWHM.
        fwhm_x = FWHM_PER_SIGMA * np.sqrt(np.where(var_x - 1 / 12 > 0, var_x - 1 / 12, np.nan))
        fwhm_y = FWHM_PER_SIGMA * np.sqrt(np.where(var_y - 1 / 12 > 0, var_y - 1 / 12, np.nan))
    return BoxCentroid(
        (cx + mx) * nan, (cy + my) * nan, fwhm_x * nan, fwhm_y * nan, ok, noise_pixels * nan, level,
    )


@lru_cache(maxsize=8)
def _offsets(half_box: int, back_width: int, back_border: int) -> tuple[NDArray[np.int64], ...]:
    """``(dy, dx)`` of the background ring's pixels, then of the box's, from the box centre, each in row-major
    order (rows of increasing y, then x)."""
    reach = half_box + back_border + back_width
    dy, dx = (a.ravel() for a in np.mgrid[-reach : reach + 1, -reach : reach + 1])
    chebyshev = np.maximum(np.abs(dx), np.abs(dy))
    in_box = chebyshev <= half_box
    in_ring = chebyshev >= half_box + back_border  # and <= reach
    return dy[in_ring], dx[in_ring], dy[in_box], dx[in_box]


def pixel_major(
    clean: NDArray | Stack, planes: NDArray[np.int64], cx: NDArray[np.int64], cy: NDArray[np.int64],
    dy: NDArray[np.int64], dx: NDArray[np.int64],
) -> NDArray[np.float64]:
    """The pixels at offsets ``(dy[j], dx[j])`` from the pixel ``(cx[i], cy[i])`` of plane ``planes[i]``,
    ``(len(dy), len(cx))``; NaN where bad or outside the image (the values
    :func:`~iracdb.photometry.aperture.windows` would cut). Float64, or float32 when ``clean`` is a float32 array (a
    cleaned stack of float32 data: the same values)."""
    _, ny, nx = clean.shape
    if not (isinstance(clean, np.ndarray) and clean.flags.c_contiguous):
        rows = cy[None, :] + dy[:, None]
        cols = cx[None, :] + dx[:, None]
        off = (rows < 0) | (rows >= ny) | (cols < 0) | (cols >= nx)
        return gather(clean, (planes[None, :], np.clip(rows, 0, ny - 1), np.clip(cols, 0, nx - 1)), off)
    # One take of flat positions: the offsets plus each centre's position; only the planes whose offsets reach
    # beyond the image (or whose centre is not finite) need clipped indices and NaN outside.
    reach_y = int(np.abs(dy).max(initial=0))
    reach_x = int(np.abs(dx).max(initial=0))
    flat = ((planes * ny + cy) * nx + cx)[None, :] + (dy * nx + dx)[:, None]
    edge = np.flatnonzero((cy < reach_y) | (cy >= ny - reach_y) | (cx < reach_x) | (cx >= nx - reach_x))
    outside: NDArray[np.bool_] | None = None
    if edge.size:
        rows = cy[edge][None, :] + dy[:, None]
        cols = cx[edge][None, :] + dx[:, None]
        outside = (rows < 0) | (rows >= ny) | (cols < 0) | (cols >= nx)
        flat[:, edge] = (planes[edge][None, :] * ny + np.clip(rows, 0, ny - 1)) * nx + np.clip(cols, 0, nx - 1)
    values = clean.reshape(-1).take(flat)
    if values.dtype != np.float32:
        values = values.astype(np.float64, copy=False)
    if outside is not None:
        values[:, edge] = np.where(outside, np.nan, values[:, edge])
    return values


def _background(ring: NDArray[np.float64], min_pixels: float, narrow: NDArray | None = None) -> NDArray[np.float64]:
    """The box centroider's background of each column of ``ring`` (``(m, n)``: m pixels of n planes, NaN = bad):
    median, one pass of 3-sigma rejection about it, median of the rest; NaN where fewer than ``min_pixels`` good
    pixels remain.

    Each plane's pixels are sorted once: the first median is the middle of its finite values, and the values kept
    by the rejection (within a distance of the median) are a contiguous run of the sorted values, whose middle is
    the second median. The medians are those of :func:`_row_median` (the same values at the middle positions);
    planes with an infinite pixel go through :func:`_row_median` itself (its count of finite values then differs
    from the run's length). ``narrow``: the same values as float32, if they are float32 values (sorted faster)."""
    m, n = ring.shape
    finite = np.isfinite(ring)
    count = finite.sum(axis=0)
    srt = (ring if narrow is None else narrow).T.copy()  # (n, m), C order: a plane's pixels per row, to sort
    srt.sort(axis=1)  # NaN last
    rows = np.arange(n)
    if m == 0:
        return np.full(n, np.nan)
    lo, hi = (count - 1) // 2, count // 2
    srt_flat = srt.reshape(-1)

    def at(index: NDArray[np.int64]) -> NDArray[np.float64]:  # sorted values as float64 (before any arithmetic)
        return srt_flat[index].astype(np.float64, copy=False)

    base = rows * m
    first = np.where(count > 0, 0.5 * (at(base + np.maximum(lo, 0)) + at(base + np.minimum(hi, m - 1))), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, _column_sum(np.where(finite, ring, 0.0)) / count, np.nan)
        var = _column_sum(np.where(finite, (ring - mean) ** 2, 0.0)) / (count - 1)
        keep = np.abs(srt - first[:, None]) <= (CLIP_SIGMA * np.sqrt(var))[:, None]
    kept = keep.sum(axis=1)
    second = first.copy()  # where nothing was rejected the second median is the first
    clipped = np.flatnonzero(kept < count)
    if clipped.size:
        start = keep[clipped].argmax(axis=1)  # the run of kept values starts at the first true
        c = kept[clipped]
        begin = base[clipped] + start
        middle = 0.5 * (at(begin + np.maximum((c - 1) // 2, 0)) + at(begin + c // 2))
        second[clipped] = np.where(c > 0, middle, np.nan)
    # An infinite pixel (not finite, not NaN) sorts among the values: such planes take the reference path.
    infinite = (count < m) & ~np.isnan(srt_flat[base + np.minimum(count, m - 1)])
    if infinite.any():
        idx = np.flatnonzero(infinite)
        second[idx] = _reference_second(ring[:, idx].T, first[idx], var[idx])
    enough = (count >= min_pixels) & (kept >= min_pixels)
    return np.where(enough, second, np.nan)


def _reference_second(ring: NDArray[np.float64], first: NDArray[np.float64], var: NDArray[np.float64]
                      ) -> NDArray[np.float64]:
    """The second median of ``ring``'s rows ``(n, m)`` as the IDL-following definition states it: the median of the
    finite values within ``CLIP_SIGMA`` standard deviations of the first median (the first where none is
    rejected)."""
    with np.errstate(invalid="ignore"):
        keep = np.abs(ring - first[:, None]) <= CLIP_SIGMA * np.sqrt(var)[:, None]
    second = first.copy()
    clipped = np.flatnonzero(keep.sum(axis=1) < np.isfinite(ring).sum(axis=1))
    if clipped.size:
        second[clipped] = _row_median(np.where(keep[clipped], ring[clipped], np.nan))
    return second


def _column_sum(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Sum of each column of ``(m, n)`` ``values``, added top to bottom: the same order of additions whatever ``n``
    (so that a plane's answer does not depend on the planes measured with it).

    numpy reduces the first axis of a C-contiguous array of two or more columns by adding the rows one after the
    other (pairwise summation applies along the contiguous axis only: a single column would be summed pairwise, so
    it is accumulated instead); ``tests/photometry/test_phot_box.py`` checks this against a loop."""
    m, n = values.shape
    if m == 0:
        return np.zeros(n)
    if n == 1:
        return np.cumsum(values[:, 0])[-1:]
    return np.add.reduce(np.ascontiguousarray(values), axis=0)


def _row_median(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Median of the finite values of each row (NaN for a row without one), by the same arithmetic whatever the
    number of rows (numpy's ``nanmedian`` changes algorithm with the array's size, which can change the last bit),
    so that a plane's answer does not depend on the planes measured with it: one partition of every row at every
    middle position the rows' counts of finite values call for (NaN sort last), then each row's two middle values."""
    count = np.isfinite(values).sum(axis=1)
    out = np.full(len(values), np.nan)
    some = count > 0
    if not some.any():
        return out
    lo, hi = (count - 1) // 2, count // 2
    kth = np.arange(lo[some].min(), hi[some].max() + 1)
    part = np.partition(values, kth, axis=1)
    rows = np.arange(len(values))
    middle = 0.5 * (part[rows, np.maximum(lo, 0)] + part[rows, hi])
    return np.where(some, middle, out)
