"""The best aperture of a grid: pure scoring functions (lower is better) and the choice among apertures.

Every score is computed on the *used* images of one AOR, channel, target and aperture (no flag of
:data:`iracdb.flags.SUMMARY_EXCLUDED`, not an outlier, finite flux) and is in parts per million of the flux:

- ``binned-rms``: the used images sorted by time are binned in consecutive groups of ``bin_size`` (64: one subarray
  cube; a last, incomplete group is left out), each bin's mean flux normalised by the median binned flux; a running
  median over :data:`RUNNING_MEDIAN_BINS` bins is subtracted (removing slow astrophysical and instrumental trends,
  as SPCA's high-pass filter does) and the RMS of what remains is the score, divided by the RMS that the same
  detrending leaves of unit white noise (about 0.75: the running median takes part of the noise with it; see
  :func:`detrending_factor`), so that for white noise the score is the per-image scatter / sqrt(bin_size).
- ``scatter``: the robust standard deviation (1.4826 x median absolute deviation) of the fluxes about their median,
  relative to the median.
- ``error``: the error of the mean, sample standard deviation / sqrt(n), relative to the mean.

A score that cannot be computed (too few images, a zero flux) is NaN, and NaN never wins: :func:`choose_best`
takes the lowest finite score, ties going to the smaller radius (then the lower aperture id); when no score is
finite, the smallest radius is chosen.

This module is pure (numpy only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

#: Bins of the running median subtracted by ``binned-rms``.
RUNNING_MEDIAN_BINS = 5
#: 1.4826 x MAD estimates the standard deviation of normally distributed values.
MAD_TO_SIGMA = 1.482602218505602
PPM = 1e6

__all__ = ["RUNNING_MEDIAN_BINS", "binned_rms_ppm", "choose_best", "detrending_factor", "error_ppm",
           "running_median", "scatter_ppm", "score"]


def running_median(values: npt.ArrayLike, width: int = RUNNING_MEDIAN_BINS) -> npt.NDArray[np.float64]:
    """Median of each value with its neighbours along the last axis, over a centred window of ``width`` values
    (odd), the window shortened at the ends (the first value's median is over the first ``width // 2 + 1``)."""
    v = np.asarray(values, dtype=np.float64)
    half = width // 2
    n = v.shape[-1]
    out = np.empty_like(v)
    if n > 2 * half:  # full windows: one vectorised median
        out[..., half: n - half] = np.median(np.lib.stride_tricks.sliding_window_view(v, width, axis=-1), axis=-1)
    for i in [*range(min(half, n)), *range(max(half, n - half), n)]:  # the shortened windows at the ends
        out[..., i] = np.median(v[..., max(0, i - half): i + half + 1], axis=-1)
    return out


@lru_cache(maxsize=256)
def detrending_factor(n_bins: int) -> float:
    """The RMS that subtracting :func:`running_median` leaves of unit white noise in ``n_bins`` values: a
    Monte-Carlo estimate over 200 000 values with a fixed seed (so the same every time; ~0.2 % precise), about
    0.75 for many bins."""
    rng = np.random.default_rng(20261202)
    noise = rng.standard_normal((max(1, 200_000 // n_bins), n_bins))
    return float(np.sqrt(np.mean((noise - running_median(noise)) ** 2)))


def binned_rms_ppm(time: npt.ArrayLike, flux: npt.ArrayLike, bin_size: int = 64) -> float:
    """The ``binned-rms`` score of one light curve (see the module docstring), ppm.

    Parameters
    ----------
    time : array_like of float, shape (n,)
        Time of each used image (any unit; only the order matters).
    flux : array_like of float, shape (n,)
        Flux of each used image (any unit).
    bin_size : int
        Consecutive images per bin.

    Returns
    -------
    float
        RMS of the detrended, normalised binned light curve, ppm; NaN with fewer than 2 full bins or a median
        binned flux of 0.
    """
    t = np.asarray(time, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    n_bins = f.size // bin_size
    if n_bins < 2:
        return math.nan
    in_order = t.size < 2 or bool(np.all(t[1:] >= t[:-1]))  # usually: a unit's rows come in time order
    ordered = (f if in_order else f[np.argsort(t, kind="stable")])[: n_bins * bin_size]
    binned = ordered.reshape(n_bins, bin_size).mean(axis=1)
    level = float(np.median(binned))
    if level == 0 or not math.isfinite(level):
        return math.nan
    normalised = binned / level
    residual = normalised - running_median(normalised)
    return float(np.sqrt(np.mean(residual**2)) / detrending_factor(n_bins) * PPM)


def scatter_ppm(flux: npt.ArrayLike) -> float:
    """The ``scatter`` score, ppm: 1.4826 x the median absolute deviation of ``flux`` about its median, over the
    median (NaN with fewer than 2 values or a median of 0)."""
    f = np.asarray(flux, dtype=np.float64)
    if f.size < 2:
        return math.nan
    median = float(np.median(f))
    if median == 0:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(f - median)) / abs(median) * PPM)


def error_ppm(flux: npt.ArrayLike) -> float:
    """The ``error`` score, ppm: the error of the mean flux (sample std / sqrt(n)) over the mean (NaN with fewer
    than 2 values or a mean of 0)."""
    f = np.sort(np.asarray(flux, dtype=np.float64))
    if f.size < 2:
        return math.nan
    mean = float(np.mean(f))
    if mean == 0:
        return math.nan
    return float(np.std(f, ddof=1) / math.sqrt(f.size) / abs(mean) * PPM)


def score(criterion: str, time: npt.ArrayLike, flux: npt.ArrayLike, bin_size: int = 64) -> float:
    """The score of the used images ``(time, flux)`` of one aperture by ``criterion`` (``binned-rms``,
    ``scatter`` or ``error``; :data:`iracdb.choices.BEST_CRITERIA`), ppm, lower is better."""
    if criterion == "binned-rms":
        return binned_rms_ppm(time, flux, bin_size)
    if criterion == "scatter":
        return scatter_ppm(flux)
    if criterion == "error":
        return error_ppm(flux)
    raise ValueError(f"unknown best-aperture criterion {criterion!r}")


def choose_best(scores: Sequence[float], radii: Sequence[float], aperture_ids: Sequence[int] | None = None) -> int:
    """The position of the best aperture: the lowest finite score, ties to the smaller radius, then to the lower
    aperture id; with no finite score, the smallest radius (then the lowest id).

    Parameters
    ----------
    scores : sequence of float
        One score per aperture (NaN: could not be computed).
    radii : sequence of float
        Each aperture's radius, pixels (for a variable aperture, its typical radius).
    aperture_ids : sequence of int, optional
        Default: the positions.
    """
    if not scores:
        raise ValueError("choose_best needs at least one aperture")
    ids = list(range(len(scores))) if aperture_ids is None else list(aperture_ids)

    def key(i: int) -> tuple[bool, float, float, int]:
        value = scores[i]
        finite = value is not None and math.isfinite(value)
        return (not finite, value if finite else 0.0, radii[i], ids[i])

    return min(range(len(scores)), key=key)
