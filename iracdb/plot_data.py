"""The numbers behind the figures of :mod:`iracdb.plots`, with no drawing and no database: radial pixel phase,
binned medians, the axis limits that follow the data, the names of the quality bits that kept images out, and a
bounded uniform sample of a stream of rows.

Pixel phase: with 0-based pixel coordinates whose pixel centres are integers, the x phase is
``xc_full - ROUND(xc_full)`` in [-0.5, 0.5] (IDL ``ROUND``, half away from zero), the same for y, and the radial
phase is their hypotenuse, in [0, 0.707] pixels.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from iracdb.flags import NOT_USED, Flag
from iracdb.photometry.corrections import idl_round

#: Radial pixel phase bins: ``PHASE_BINS`` equal bins over [0, sqrt(0.5)] pixels; a bin with fewer than
#: ``MIN_BIN_COUNT`` images has no median.
PHASE_BINS = 10
MIN_BIN_COUNT = 5
PHASE_MAX = math.sqrt(0.5)
#: A pixel-phase axis spans the data's phases padded by 10%, and at least this much [pix].
MIN_PHASE_SPAN = 0.1
#: A monitoring panel's time axis spans its AORs padded by 5%, and at least this much [d].
MIN_TIME_SPAN_D = 1.0


def radial_pixel_phase(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Radial pixel phase [pix] of 0-based full-array positions ``x``, ``y`` [pix]: hypot of each coordinate minus
    its IDL ``ROUND``; in [0, sqrt(0.5)], NaN where a position is NaN."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.hypot(x - idl_round(x), y - idl_round(y))


@dataclass(frozen=True)
class PhaseBins:
    """Binned medians of a quantity against radial pixel phase.

    Attributes
    ----------
    edges : ndarray
        Bin edges [pix], ``PHASE_BINS + 1`` values over [0, sqrt(0.5)] or the range asked for.
    centres : ndarray
        Bin centres [pix].
    median : ndarray
        Median of the quantity in each bin; NaN where a bin holds fewer than ``min_count`` finite values.
    count : ndarray of int
        Finite values in each bin.
    """

    edges: NDArray[np.float64]
    centres: NDArray[np.float64]
    median: NDArray[np.float64]
    count: NDArray[np.int64]


def phase_bins(phase: NDArray[np.float64], values: NDArray[np.float64], n_bins: int = PHASE_BINS,
                min_count: int = MIN_BIN_COUNT, span: tuple[float, float] = (0.0, PHASE_MAX)) -> PhaseBins:
    """Median of ``values`` in ``n_bins`` equal bins of radial pixel phase [pix] over ``span`` [pix] (phases outside
    it go to the end bins); non-finite pairs are skipped."""
    phase = np.asarray(phase, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    edges = np.linspace(span[0], span[1], n_bins + 1)
    ok = np.isfinite(phase) & np.isfinite(values)
    index = np.clip(np.digitize(phase[ok], edges) - 1, 0, n_bins - 1)
    kept = values[ok]
    median = np.full(n_bins, np.nan)
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    for b in np.flatnonzero(count >= min_count):
        median[b] = float(np.median(kept[index == b]))
    return PhaseBins(edges, 0.5 * (edges[:-1] + edges[1:]), median, count)


@dataclass(frozen=True)
class PhaseSample:
    """Used images for a pixel-phase panel: radial phase [pix] and flux / AOR median before and after correction."""

    phase: NDArray[np.float64]
    before: NDArray[np.float64]
    after: NDArray[np.float64]
    n_total: int | None = None  # images the sample was drawn from (None: all are here)


def phase_limits(phase: NDArray[np.float64]) -> tuple[float, float]:
    """Axis limits [pix] for radial pixel phases ``phase`` [pix]: their range padded by 10% on each side, widened
    about its middle to at least :data:`MIN_PHASE_SPAN`, kept within [0, sqrt(0.5)]; the whole range without a
    finite phase."""
    padded = _padded_range(phase, 0.1, MIN_PHASE_SPAN)
    if padded is None:
        return 0.0, PHASE_MAX
    lo, hi = padded
    if lo < 0.0:  # slide the window back inside [0, PHASE_MAX] rather than cut it
        lo, hi = 0.0, hi - lo
    if hi > PHASE_MAX:
        lo, hi = max(0.0, lo - (hi - PHASE_MAX)), PHASE_MAX
    return lo, hi


def time_limits(mjd: NDArray[np.float64]) -> tuple[float, float] | None:
    """Axis limits [MJD] for times ``mjd`` [MJD]: their range padded by 5% on each side, widened about its middle
    to at least :data:`MIN_TIME_SPAN_D`; None without a finite time."""
    return _padded_range(mjd, 0.05, MIN_TIME_SPAN_D)


def _padded_range(values: NDArray[np.float64], pad_fraction: float, min_span: float) -> tuple[float, float] | None:
    """The range of the finite ``values``, padded by ``pad_fraction`` of it on each side and widened about its
    middle to at least ``min_span`` (same unit as ``values``); None without a finite value."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    pad = pad_fraction * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if hi - lo < min_span:
        middle = 0.5 * (lo + hi)
        lo, hi = middle - 0.5 * min_span, middle + 0.5 * min_span
    return lo, hi


def flag_reasons(flags: Iterable[int], counts: Iterable[int] | None = None) -> str:
    """Why images were not used, from their quality bits ``flags`` (``counts[i]`` images carrying ``flags[i]``;
    one each without ``counts``): each bit of :data:`iracdb.flags.NOT_USED` that is set, by
    :class:`iracdb.flags.Flag` name, with the number of images carrying it (most first), e.g.
    ``NOT_IN_FOV ×3, SATURATED ×1``; ``no flag set`` when none carries such a bit."""
    flags = [int(v) for v in flags]
    per_bit: Counter[str] = Counter()
    for value, n in zip(flags, [1] * len(flags) if counts is None else counts, strict=True):
        for member in Flag:
            if member & NOT_USED & value and member.name:
                per_bit[member.name] += int(n)
    if not per_bit:
        return "no flag set"
    return ", ".join(f"{name} ×{n}" for name, n in sorted(per_bit.items(), key=lambda kv: (-kv[1], kv[0])))


def normalise(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``values`` divided by their median (of the finite ones); all NaN if none is finite or the median is not
    positive."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.full(values.shape, np.nan)
    median = float(np.median(finite))
    return values / median if median > 0 else np.full(values.shape, np.nan)


class Reservoir:
    """A uniform random sample of at most ``size`` rows of a stream (the rows with the smallest random keys)."""

    def __init__(self, size: int, n_columns: int, seed: int = 0) -> None:
        self.size = size
        self.rows = np.empty((0, n_columns))
        self.keys = np.empty(0)
        self.n_seen = 0
        self._rng = np.random.default_rng(seed)

    def add(self, rows: NDArray[np.float64]) -> None:
        self.n_seen += len(rows)
        self.rows = np.concatenate([self.rows, rows])
        self.keys = np.concatenate([self.keys, self._rng.random(len(rows))])
        if len(self.keys) > self.size:
            keep = np.argpartition(self.keys, self.size)[: self.size]
            self.rows, self.keys = self.rows[keep], self.keys[keep]


#: Planes of a subarray cube.
PLANES_PER_CUBE = 64


@dataclass(frozen=True)
class PlaneProfile:
    """Flux against plane index within the subarray cubes of one series (the first-frame effect).

    Each cube's fluxes are divided by the median of its planes 1..63 (those measured and not kept out by a quality
    bit other than ``FIRST_FRAME``); the profile is the median of these ratios over the cubes, plane by plane.

    Attributes
    ----------
    plane : ndarray of int
        Plane indices 0..63.
    median : ndarray
        Median over the cubes of flux / its cube's median of planes 1..63 (dimensionless); NaN where no cube has
        that plane.
    count : ndarray of int
        Cubes that contribute to each plane.
    first_frame_offset : float
        ``median[0] - 1``: how much plane 0 reads above (positive) or below the rest (dimensionless); NaN without a
        plane 0.
    """

    plane: NDArray[np.int64]
    median: NDArray[np.float64]
    count: NDArray[np.int64]
    first_frame_offset: float


def plane_profile(plane: NDArray[np.int64], cube: NDArray[np.int64], flux: NDArray[np.float64],
                  flags: NDArray[np.int64]) -> PlaneProfile:
    """The :class:`PlaneProfile` of subarray planes, one value per image.

    Parameters
    ----------
    plane : ndarray of int
        Plane index of each image within its cube, 0..63.
    cube : ndarray of int
        Which cube each image belongs to (any integer label, e.g. EXPID x 1000 + DCENUM).
    flux : ndarray
        Flux density of each image [mJy] (NaN: not measured).
    flags : ndarray of int
        Quality bits (:class:`iracdb.flags.Flag`); images with a bit of ``NOT_USED`` other than ``FIRST_FRAME``
        are left out.
    """
    plane = np.asarray(plane, dtype=np.int64)
    flux = np.asarray(flux, dtype=np.float64)
    bad = int(NOT_USED & ~Flag.FIRST_FRAME)
    good = np.isfinite(flux) & ((np.asarray(flags, dtype=np.int64) & bad) == 0) & (plane >= 0) & (
        plane < PLANES_PER_CUBE)
    labels, index = np.unique(np.asarray(cube)[good], return_inverse=True)
    table = np.full((labels.size, PLANES_PER_CUBE), np.nan)
    table[index, plane[good]] = flux[good]
    rest = table[:, 1:]
    some = np.isfinite(rest).any(axis=1)
    reference = np.full(labels.size, np.nan)
    if some.any():
        reference[some] = np.nanmedian(rest[some], axis=1)
    ratio = table / reference[:, None]
    count = np.isfinite(ratio).sum(axis=0)
    median = np.full(PLANES_PER_CUBE, np.nan)
    has = count > 0
    if has.any():
        median[has] = np.nanmedian(ratio[:, has], axis=0)
    return PlaneProfile(np.arange(PLANES_PER_CUBE), median, count.astype(np.int64), float(median[0] - 1.0))


def binned_rms_curve(flux: NDArray[np.float64], min_bins: int = 8) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """RMS of a light curve binned in N consecutive values, for N = 1, 2, 4, ... while at least ``min_bins`` bins
    remain: the bin sizes and the standard deviation of the bin means over the median flux (dimensionless)."""
    f = np.asarray(flux, dtype=np.float64)
    f = f[np.isfinite(f)]
    level = float(np.median(f)) if f.size else math.nan
    sizes, rms = [], []
    size = 1
    while f.size // size >= min_bins and level:
        n = f.size // size
        means = f[: n * size].reshape(n, size).mean(axis=1) / level
        sizes.append(size)
        rms.append(float(np.std(means, ddof=1)))
        size *= 2
    return np.array(sizes, dtype=np.float64), np.array(rms)
