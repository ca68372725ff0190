"""Background in a circular annulus, vectorised over a stack of planes.

The annulus holds the pixels whose centres lie at a distance ``d`` with ``r_in <= d < r_out`` from the centre
(photutils' ``method='center'``). NaN pixels (bad, masked or outside the image) are left out of the values and of
the pixel count.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from iracdb.errors import BadOption
from iracdb.photometry.aperture import Stack, gather

BackgroundMethod = Literal["median", "mean"]

#: Up to this many rows, :func:`clipped_median` clips row by row in Python scalars: a pass then costs a few
#: microseconds per row instead of a few tens of microseconds of numpy calls for the whole batch.
SCALAR_ROWS = 4

#: Standard error of a median relative to that of a mean, for normally distributed values (sqrt(pi/2)).
MEDIAN_ERROR_FACTOR = float(np.sqrt(np.pi / 2))


@dataclass(frozen=True)
class Background:
    """Annulus background of each plane.

    Attributes
    ----------
    level : numpy.ndarray
        Background per pixel, image unit (MJy/sr); NaN when no pixel is usable.
    error : numpy.ndarray
        1-sigma uncertainty of ``level`` (standard error of the median or mean), image unit.
    std : numpy.ndarray
        Standard deviation of the pixels used (after clipping), image unit: the per-pixel background noise.
    npix : numpy.ndarray
        Number of pixels used (after clipping).
    nominal_npix : numpy.ndarray
        Number of annulus pixels inside the image before NaN pixels and clipping are removed.
    """

    level: NDArray[np.float64]
    error: NDArray[np.float64]
    std: NDArray[np.float64]
    npix: NDArray[np.int64]
    nominal_npix: NDArray[np.int64]


def clipped_median(
    values: NDArray[np.float64], sigma: float = 3.0, maxiters: int = 5
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Sigma-clipped median of each row, ignoring NaN (as astropy's ``sigma_clipped_stats``, median centre).

    Values outside ``median ± sigma * std`` of the values kept so far are rejected, repeatedly, until nothing
    changes or ``maxiters`` passes. Because the kept values always form a contiguous run of the sorted row,
    each pass costs O(1) per row after one sort.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n, k)`` values; NaN are ignored.
    sigma : float
        Clipping threshold in standard deviations (population std, ``ddof=0``, as astropy).
    maxiters : int
        Maximum number of clipping passes.

    Returns
    -------
    median, std, count : numpy.ndarray
        Per row: median and standard deviation of the kept values, and their number (NaN, NaN, 0 if none).
    """
    n = values.shape[0]
    srt = np.sort(values, axis=1)  # NaN sort last
    finite = np.isfinite(srt)
    count = finite.sum(axis=1)
    # A -inf sorts first but is not counted, which shifts the kept runs (kept as it was), and a negative sigma
    # makes empty or inverted runs (kept as it was too); otherwise, the columns past the largest count hold only
    # NaN or +inf, which no pass reads (kept runs end at ``count``; an infinite bound still keeps ``count``
    # values): they are dropped, and the values below a bound are a prefix of the (sorted) row.
    sorted_finite = sigma >= 0 and not np.any(srt[:, 0] == -np.inf)
    if sorted_finite:
        k = max(int(count.max(initial=0)), 1)
        srt, finite = srt[:, :k], finite[:, :k]
    else:
        k = srt.shape[1]
    base = np.arange(n) * k  # row starts in the flattened (n, k) arrays
    base1 = np.arange(n) * (k + 1)  # ... and in the (n, k + 1) cumulative sums
    srt_flat = srt.ravel()
    ref = np.where(count > 0, srt_flat[base + np.maximum((count - 1) // 2, 0)], 0.0)
    d = np.where(finite, srt - ref[:, None], 0.0)  # centred to limit cancellation in the sums
    cumsum1 = np.zeros((n, k + 1))
    cumsum2 = np.zeros((n, k + 1))
    np.cumsum(d, axis=1, out=cumsum1[:, 1:])
    np.cumsum(d * d, axis=1, out=cumsum2[:, 1:])
    c1, c2 = cumsum1.ravel(), cumsum2.ravel()
    srt_f = np.where(finite, srt, np.inf)
    srt_ff = srt_f.ravel()

    if n <= SCALAR_ROWS and sorted_finite:  # bisection needs srt_f sorted
        return _clip_scalar(srt_ff.tolist(), c1.tolist(), c2.tolist(), count.tolist(), n, k, sigma, maxiters)

    lo = np.zeros(n, dtype=np.int64)
    hi = count.astype(np.int64)

    def stats(lo: NDArray[np.int64], hi: NDArray[np.int64]) -> tuple[NDArray, NDArray, NDArray]:
        m = hi - lo
        safe = np.maximum(m, 1)
        a = np.minimum(lo + (safe - 1) // 2, k - 1)
        b = np.minimum(lo + safe // 2, k - 1)
        med = 0.5 * (srt_ff[base + a] + srt_ff[base + b])
        mean = (c1[base1 + hi] - c1[base1 + lo]) / safe
        var = np.maximum((c2[base1 + hi] - c2[base1 + lo]) / safe - mean * mean, 0.0)
        empty = m <= 0  # (negative with a negative sigma)
        return np.where(empty, np.nan, med), np.where(empty, np.nan, np.sqrt(var)), m

    med, std, m = stats(lo, hi)
    for _ in range(maxiters):
        lower = med - sigma * std
        upper = med + sigma * std
        new_lo = _count_below(srt_f, lower[:, None] > srt_f, sorted_finite)
        new_hi = _count_below(srt_f, upper[:, None] >= srt_f, sorted_finite)
        ok = m > 0
        new_lo = np.where(ok, new_lo, lo)
        new_hi = np.where(ok, np.minimum(new_hi, count), hi)
        if (new_lo == lo).all() and (new_hi == hi).all():
            break
        lo, hi = new_lo, new_hi
        med, std, m = stats(lo, hi)
    return med, std, m


def _count_below(srt_f: NDArray[np.float64], below: NDArray[np.bool_], is_sorted: bool) -> NDArray[np.int64]:
    """Number of true values per row of ``below`` (a comparison of each value of ``srt_f`` with a bound).

    When the rows of ``srt_f`` are sorted, the true values are a prefix: their number is the position of the
    first false one (``argmin`` of a boolean row stops there, several times faster than a sum), or the row
    length when there is none.
    """
    if not is_sorted:
        return below.sum(axis=1)
    return np.where(below[:, -1], below.shape[1], below.argmin(axis=1))


def _clip_scalar(
    srt_f: list[float], c1: list[float], c2: list[float], count: list[int], n: int, k: int, sigma: float,
    maxiters: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """The clipping passes of :func:`clipped_median`, row by row in Python floats: the same IEEE operations in
    the same order, so the same results. A row whose kept run stops changing keeps its statistics, as in the
    batch loop.

    ``srt_f`` is each row sorted with its non-finite values as +inf at the end (sorted: the caller checks there
    is no -inf), flattened; ``c1``, ``c2`` the flattened ``(n, k + 1)`` cumulative sums. Counting the values
    below a bound is a bisection; a NaN bound counts none, as the comparisons of the batch loop.
    """
    med_out = np.full(n, np.nan)
    std_out = np.full(n, np.nan)
    m_out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        row = srt_f[i * k : (i + 1) * k]
        s1 = c1[i * (k + 1) : (i + 1) * (k + 1)]
        s2 = c2[i * (k + 1) : (i + 1) * (k + 1)]
        lo, hi = 0, count[i]
        for it in range(maxiters + 1):
            m = hi - lo
            if m <= 0:  # nothing kept: NaN, NaN, 0, and no further pass changes that
                break
            mean = (s1[hi] - s1[lo]) / m
            var = (s2[hi] - s2[lo]) / m - mean * mean
            med = 0.5 * (row[min(lo + (m - 1) // 2, k - 1)] + row[min(lo + m // 2, k - 1)])
            std = math.sqrt(var) if var > 0 else (0.0 if var <= 0 else math.nan)  # np.sqrt(np.maximum(var, 0))
            med_out[i], std_out[i], m_out[i] = med, std, m
            if it == maxiters:
                break
            lower = med - sigma * std
            upper = med + sigma * std
            new_lo = bisect_left(row, lower) if lower == lower else 0
            new_hi = min(bisect_right(row, upper), count[i]) if upper == upper else 0
            if new_lo == lo and new_hi == hi:
                break
            lo, hi = new_lo, new_hi
        if hi - lo <= 0:
            med_out[i], std_out[i], m_out[i] = np.nan, np.nan, 0
    return med_out, std_out, m_out


def annulus_pixels(
    clean: NDArray | Stack, x: NDArray[np.float64], y: NDArray[np.float64], r_in: float, r_out: float
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Values of the annulus pixels of each plane, NaN elsewhere, as ``(n, k)``; and the annulus pixel count
    inside the image per plane."""
    n, ny, nx = clean.shape
    # Only pixels that can fall in the annulus for some sub-pixel centre near the nearest integer pixel.
    reach = int(np.ceil(r_out)) + 1
    finite = np.isfinite(x) & np.isfinite(y)
    xs = np.where(finite, x, 0.0)
    ys = np.where(finite, y, 0.0)
    cx = np.floor(xs + 0.5).astype(np.int64)
    cy = np.floor(ys + 0.5).astype(np.int64)
    if reach > max(ny, nx) - 1:
        # An annulus wider than the image: every pixel within max(ny, nx) - 1 of an image pixel is a candidate
        # (the ring test below picks the annulus), around the image pixel nearest to the centre; pixels beyond
        # are outside the image anyway. Memory is bounded by the image, not by the radius.
        reach = max(ny, nx) - 1
        cx, cy = np.clip(cx, 0, nx - 1), np.clip(cy, 0, ny - 1)
        dy, dx = (a.ravel() for a in np.mgrid[-reach : reach + 1, -reach : reach + 1])
    else:
        dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
        d = np.hypot(dx, dy)
        keep = (d >= r_in - np.sqrt(0.5)) & (d < r_out + np.sqrt(0.5))
        dx, dy = dx[keep], dy[keep]
    rows = cy[:, None] + dy
    cols = cx[:, None] + dx
    outside = (rows < 0) | (rows >= ny) | (cols < 0) | (cols >= nx) | ~finite[:, None]
    index = (np.arange(n)[:, None], np.clip(rows, 0, ny - 1), np.clip(cols, 0, nx - 1))
    values = gather(clean, index, outside)
    px = cols - xs[:, None]
    py = rows - ys[:, None]
    d2 = px * px + py * py
    ring = (d2 >= r_in * r_in) & (d2 < r_out * r_out)
    return np.where(ring, values, np.nan), np.sum(ring & ~outside, axis=1)


def annulus_background(
    clean: NDArray | Stack,
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    r_in: float,
    r_out: float,
    method: BackgroundMethod = "median",
    sigma: float = 3.0,
    maxiters: int = 5,
) -> Background:
    """Background per pixel in the annulus ``r_in <= d < r_out`` (pixels) around ``(x[k], y[k])`` of plane ``k``.

    Parameters
    ----------
    clean : numpy.ndarray
        ``(n, ny, nx)`` images (or a :class:`~iracdb.photometry.aperture.Stack`), e.g. MJy/sr; NaN are bad.
    x, y : numpy.ndarray
        ``(n,)`` annulus centres, image pixels.
    r_in, r_out : float
        Inner and outer radii, pixels.
    method : {"median", "mean"}
        ``"median"``: sigma-clipped median (``sigma``, ``maxiters``), error ``sqrt(pi/2) * std / sqrt(N)``;
        ``"mean"``: plain mean of all usable pixels (what the original pipeline did), error ``std / sqrt(N)``.

    Returns
    -------
    Background
    """
    if not 0 <= r_in < r_out < math.inf:
        raise BadOption(f"the background annulus needs 0 <= inner < outer radius, both finite, got {r_in}, {r_out} px")
    vals, nominal = annulus_pixels(clean, x, y, r_in, r_out)
    return background_of(vals, nominal, method, sigma, maxiters)


def background_of(
    vals: NDArray[np.float64],
    nominal: NDArray[np.int64],
    method: BackgroundMethod = "median",
    sigma: float = 3.0,
    maxiters: int = 5,
) -> Background:
    """:class:`Background` from the ``(n, k)`` annulus values (NaN where not used) and nominal pixel counts."""
    if method == "median":
        level, std, npix = clipped_median(vals, sigma, maxiters)
        factor = MEDIAN_ERROR_FACTOR
    elif method == "mean":
        npix = np.sum(np.isfinite(vals), axis=1)
        safe = np.maximum(npix, 1)
        level = np.where(npix > 0, np.nansum(vals, axis=1) / safe, np.nan)
        std = np.where(npix > 0, np.sqrt(np.nansum((vals - level[:, None]) ** 2, axis=1) / safe), np.nan)
        factor = 1.0
    else:
        raise BadOption(f"background method must be 'median' or 'mean', not {method!r}")
    error = factor * std / np.sqrt(np.maximum(npix, 1))
    error = np.where(npix > 1, error, np.nan)
    return Background(level, error, std, npix, nominal)
