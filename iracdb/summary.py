"""Per-AOR outlier rejection and summary statistics (pure numpy).

``iracdb reduce`` measures every image of an AOR (one full-array frame, or one plane of a subarray cube) and then
writes one summary row per (run, AOR, channel, target). This module computes that row from the per-image arrays; it
knows nothing of files, databases or terminals.

Three differences from the 2018 script this project replaces (see ``irac-photometry.md`` section 6):

- **The rejection rule is explicit and recorded.** The old script meant to drop the minimum and maximum flux only
  when the AOR's spread exceeded 2 %, but its test (``std / std * 100``) was always true, so min and max were always
  dropped. Here the caller chooses a :class:`RejectRule` (``none``, ``minmax`` or ``sigma:N``) and its canonical text
  is stored with every summary (:attr:`AorStats.reject_rule`).
- **The "Error" is the error of the mean.** The old ``Error (mJy)`` column was the *population* standard deviation
  of the fluxes (the scatter of one image, ``ddof=0``). :attr:`AorStats.flux_err_mjy` is the standard error of the
  mean flux, ``std(ddof=1) / sqrt(n_used)``; the scatter itself is :attr:`AorStats.std_mjy` (sample std) and the
  mean per-image photometric error, which the old script never computed, is :attr:`AorStats.mean_image_err_mjy`.
- **Failed images are kept, flagged and counted,** never silently dropped: :attr:`AorStats.n_flagged` counts them.

Every statistic is computed on the *sorted* selected values, so that the result does not depend on the order of the
images, not even in the last bit of a floating-point sum.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from iracdb.errors import BadOption
from iracdb.flags import SUMMARY_EXCLUDED, Flag

__all__ = [
    "SUMMARY_EXCLUDED",
    "AorStats",
    "RejectRule",
    "outliers",
    "summarize",
    "with_outlier_flags",
]


#: Upper bound on the passes of iterative sigma clipping (it normally converges in two or three).
MAX_SIGMA_ITERATIONS = 20

_ACCEPTED = "'none', 'minmax' or 'sigma:N' with N a positive number (e.g. 'sigma:3', 'sigma:2.5')"
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RejectRule:
    """How outlier images are rejected within one AOR.

    Parameters
    ----------
    kind : {"none", "minmax", "sigma"}
        ``none``: keep every usable image. ``minmax``: drop the single lowest and single highest usable flux (when
        at least 3 usable images remain). ``sigma``: iterative clipping about the median at ``nsigma`` sample
        standard deviations.
    nsigma : float or None
        Clipping threshold in units of the sample standard deviation (dimensionless); a positive finite number for
        ``sigma``, None for the other kinds.

    Raises
    ------
    iracdb.errors.BadOption
        For an unknown kind or an ``nsigma`` that does not fit the kind.
    """

    kind: Literal["none", "minmax", "sigma"]
    nsigma: float | None = None

    def __post_init__(self) -> None:
        if self.kind in ("none", "minmax"):
            if self.nsigma is not None:
                raise BadOption(f"reject rule {self.kind!r} takes no threshold (got {self.nsigma!r}); use {_ACCEPTED}")
        elif self.kind == "sigma":
            if isinstance(self.nsigma, bool) or not isinstance(self.nsigma, (int, float)):
                raise BadOption(f"reject rule 'sigma' needs a number of sigmas, got {self.nsigma!r}; use {_ACCEPTED}")
            if not (math.isfinite(self.nsigma) and self.nsigma > 0):
                raise BadOption(f"reject rule 'sigma' needs a positive finite threshold, got {self.nsigma!r}")
            object.__setattr__(self, "nsigma", float(self.nsigma))
        else:
            raise BadOption(f"unknown reject rule kind {self.kind!r}; use {_ACCEPTED}")

    @classmethod
    def parse(cls, text: str) -> RejectRule:
        """Parse the text form of a rule: ``none``, ``minmax`` or ``sigma:N``.

        Parameters
        ----------
        text : str
            The rule as the user wrote it (surrounding blanks and letter case are ignored).

        Returns
        -------
        RejectRule
            The rule; ``RejectRule.parse(str(rule)) == rule``.

        Raises
        ------
        iracdb.errors.BadOption
            For anything else (``sigma`` without a number, ``sigma:0``, ``sigma:-1``, ``sigma:nan``, ``max``, ``''``),
            with a message listing the accepted forms.
        """
        if not isinstance(text, str):
            raise BadOption(f"reject rule must be text, got {text!r}; use {_ACCEPTED}")
        norm = text.strip().lower()
        if norm == "none":
            return cls("none")
        if norm == "minmax":
            return cls("minmax")
        if norm.startswith("sigma:"):
            number = norm[len("sigma:") :].strip()
            if _NUMBER.fullmatch(number):
                nsigma = float(number)
                if math.isfinite(nsigma) and nsigma > 0:
                    return cls("sigma", nsigma)
        raise BadOption(f"bad reject rule {text!r}: use {_ACCEPTED}")

    def __str__(self) -> str:
        """Canonical text of the rule (``none``, ``minmax``, ``sigma:3``, ``sigma:2.5``), as recorded with a run."""
        if self.kind != "sigma":
            return self.kind
        number = repr(self.nsigma)
        if number.endswith(".0"):
            number = number[:-2]
        return f"sigma:{number}"


def _as_1d(name: str, values: npt.ArrayLike, dtype: type) -> np.ndarray:
    array: np.ndarray = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one value per image), got shape {array.shape}")
    return array


def outliers(flux_mjy: npt.ArrayLike, usable: npt.ArrayLike, rule: RejectRule) -> BoolArray:
    """Which images of one AOR the rule rejects as outliers.

    Only images that are ``usable`` and have a finite flux take part; the others are never rejected (they are
    already out of the summary for another reason, and keep their own flag bits).

    Parameters
    ----------
    flux_mjy : array_like of float, shape (n,)
        Flux of each image, mJy (NaN allowed).
    usable : array_like of bool, shape (n,)
        True for images whose flags allow them into the summary.
    rule : RejectRule
        ``none``: nothing is rejected. ``minmax``: the single lowest and the single highest flux are rejected when at
        least 3 images take part (with 1 or 2, none); of equal fluxes the first index is the lowest, and the highest
        is the first index of the maximum among the others, so that exactly two images go even when all fluxes are
        equal. ``sigma:N``: iterative clipping about the median; each pass rejects the kept images with
        ``|f - median| > N * std`` (``std`` the sample standard deviation, ``ddof=1``, of the kept fluxes), until a
        pass rejects nothing or after :data:`MAX_SIGMA_ITERATIONS` passes. A rejected image is never readmitted. No
        pass runs when fewer than 3 images are kept or their std is 0, and a pass that would reject every kept image
        rejects none.

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
        True where the image is rejected as an outlier. For ``none`` and ``sigma`` the result is invariant under a
        permutation of the inputs (it is permuted the same way); for ``minmax`` the rejected *fluxes* are.

    Raises
    ------
    ValueError
        If the arrays are not 1-D of the same length.
    """
    flux = _as_1d("flux_mjy", flux_mjy, np.float64)
    ok = _as_1d("usable", usable, np.bool_)
    if flux.shape != ok.shape:
        raise ValueError(f"flux_mjy and usable differ in length ({flux.size} and {ok.size})")
    rejected = np.zeros(flux.shape, dtype=np.bool_)
    candidates = np.flatnonzero(ok & np.isfinite(flux))

    if rule.kind == "none" or candidates.size < 3:
        return rejected

    if rule.kind == "minmax":
        values = flux[candidates]
        low = int(np.argmin(values))  # argmin/argmax return the first index of a tie
        rest = np.delete(np.arange(values.size), low)
        high = int(rest[np.argmax(values[rest])])
        rejected[candidates[[low, high]]] = True
        return rejected

    assert rule.nsigma is not None  # guaranteed by RejectRule
    kept = candidates
    for _ in range(MAX_SIGMA_ITERATIONS):
        if kept.size < 3:
            break
        values = flux[kept]
        ordered = np.sort(values)  # statistics on sorted values: bit-identical for any image order
        median = np.median(ordered)
        std = np.std(ordered, ddof=1)
        if not (std > 0 and np.isfinite(std)):
            break
        out = np.abs(values - median) > rule.nsigma * std
        if not out.any() or out.all():
            break
        rejected[kept[out]] = True
        kept = kept[~out]
    return rejected


@dataclass(frozen=True, eq=False)
class AorStats:
    """Summary of one AOR (one channel, one target) after flagging and outlier rejection.

    Every statistic is over the *used* images: those not excluded by :data:`SUMMARY_EXCLUDED`, with a finite flux,
    and not rejected as outliers. When no image is used, every statistic is NaN (the counts are still right).

    Attributes
    ----------
    outlier : numpy.ndarray of bool, shape (n_total,)
        True for each image rejected as an outlier (read-only). The caller sets ``Flag.OUTLIER`` from it (see
        :func:`with_outlier_flags`) so that the per-image rows and the summary always agree.
    n_total : int
        Number of images given.
    n_flagged : int
        Images kept out by their flags or a non-finite flux.
    n_rejected : int
        Images rejected as outliers by the rule.
    n_used : int
        Images that enter the statistics; ``n_used + n_rejected + n_flagged == n_total``.
    reject_rule : str
        Canonical text of the rule applied (``none``, ``minmax``, ``sigma:3``...).
    flux_mjy : float
        Mean flux, mJy.
    median_flux_mjy : float
        Median flux, mJy.
    std_mjy : float
        Sample standard deviation (``ddof=1``) of the fluxes, mJy: the scatter of one image. NaN when
        ``n_used < 2``. (The 2018 script's "Error" was the *population* std, ``ddof=0``.)
    flux_err_mjy : float
        Standard error of the mean flux, ``std_mjy / sqrt(n_used)``, mJy. NaN when ``n_used < 2``.
    mean_image_err_mjy : float
        Mean of the per-image photometric errors, mJy (NaN if one of them is NaN).
    spread_pct : float
        ``100 * std_mjy / |flux_mjy|``, percent. NaN when the std is NaN or the mean is 0.
    mjd : float
        Mean MJD (days) of the used images that have a finite MJD.
    bmjd : float
        Mean barycentric MJD (days) of the used images that have a finite BMJD.
    first_mjd, last_mjd : float
        Earliest and latest MJD (days) over *all* images with a finite MJD, used or not.
    """

    outlier: BoolArray = field(repr=False)
    n_total: int
    n_flagged: int
    n_rejected: int
    n_used: int
    reject_rule: str
    flux_mjy: float
    median_flux_mjy: float
    std_mjy: float
    flux_err_mjy: float
    mean_image_err_mjy: float
    spread_pct: float
    mjd: float
    bmjd: float
    first_mjd: float
    last_mjd: float


def _sorted_mean(values: np.ndarray) -> float:
    """Mean of ``values`` (NaN, without a warning, when empty), summed in sorted order."""
    if values.size == 0:
        return math.nan
    return float(np.mean(np.sort(values)))


def summarize(
    flux_mjy: npt.ArrayLike,
    flux_err_mjy: npt.ArrayLike,
    mjd: npt.ArrayLike,
    bmjd: npt.ArrayLike,
    flags: npt.ArrayLike,
    rule: RejectRule,
) -> AorStats:
    """Reject outliers and compute the summary statistics of one AOR.

    Parameters
    ----------
    flux_mjy : array_like of float, shape (n,)
        Flux of each image, mJy (NaN allowed).
    flux_err_mjy : array_like of float, shape (n,)
        Photometric (noise) error of each image's flux, mJy (NaN allowed).
    mjd : array_like of float, shape (n,)
        Mid-exposure time of each image, MJD (days; NaN allowed).
    bmjd : array_like of float, shape (n,)
        Barycentric mid-exposure time of each image, BMJD (days; NaN allowed).
    flags : array_like of int, shape (n,)
        :class:`iracdb.flags.Flag` bitmask of each image. Images with any :data:`SUMMARY_EXCLUDED` bit, or with a
        non-finite flux, are not used. An ``OUTLIER`` bit already set is ignored: outliers are decided afresh.
    rule : RejectRule
        The outlier rule (see :func:`outliers`).

    Returns
    -------
    AorStats
        Counts, statistics and the per-image outlier mask.

    Raises
    ------
    ValueError
        If the arrays are not 1-D of the same length.
    TypeError
        If ``flags`` is not an integer array.
    """
    flux = _as_1d("flux_mjy", flux_mjy, np.float64)
    err = _as_1d("flux_err_mjy", flux_err_mjy, np.float64)
    t_mjd = _as_1d("mjd", mjd, np.float64)
    t_bmjd = _as_1d("bmjd", bmjd, np.float64)
    bits = np.asarray(flags)
    if bits.size and not np.issubdtype(bits.dtype, np.integer):
        raise TypeError(f"flags must be an integer array, got dtype {bits.dtype}")
    bits = _as_1d("flags", bits, np.int64)
    n = flux.size
    for name, array in (("flux_err_mjy", err), ("mjd", t_mjd), ("bmjd", t_bmjd), ("flags", bits)):
        if array.size != n:
            raise ValueError(f"{name} has {array.size} values but flux_mjy has {n} (one per image)")

    usable = ((bits & int(SUMMARY_EXCLUDED)) == 0) & np.isfinite(flux)
    outlier = outliers(flux, usable, rule)
    used = usable & ~outlier
    n_used = int(used.sum())

    f_used = np.sort(flux[used])  # in flux order: order-independent sums
    mean = _sorted_mean(f_used)
    median = float(np.median(f_used)) if n_used else math.nan
    if n_used >= 2:
        std = float(np.std(f_used, ddof=1))
        err_of_mean = std / math.sqrt(n_used)
        spread = 100.0 * std / abs(mean) if mean != 0 else math.nan
    else:
        std = err_of_mean = spread = math.nan

    t_all = t_mjd[np.isfinite(t_mjd)]
    t_used = t_mjd[used]
    tb_used = t_bmjd[used]
    outlier.setflags(write=False)
    return AorStats(
        outlier=outlier,
        n_total=n,
        n_flagged=int((~usable).sum()),
        n_rejected=int(outlier.sum()),
        n_used=n_used,
        reject_rule=str(rule),
        flux_mjy=mean,
        median_flux_mjy=median,
        std_mjy=std,
        flux_err_mjy=err_of_mean,
        mean_image_err_mjy=_sorted_mean(err[used]),
        spread_pct=spread,
        mjd=_sorted_mean(t_used[np.isfinite(t_used)]),
        bmjd=_sorted_mean(tb_used[np.isfinite(tb_used)]),
        first_mjd=float(t_all.min()) if t_all.size else math.nan,
        last_mjd=float(t_all.max()) if t_all.size else math.nan,
    )


def with_outlier_flags(flags: npt.ArrayLike, outlier: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Per-image flags with ``Flag.OUTLIER`` set exactly where ``outlier`` is True.

    The bit is also *cleared* where ``outlier`` is False, so that rows re-summarised with another rule agree with
    the new summary. Other bits are unchanged.

    Parameters
    ----------
    flags : array_like of int, shape (n,)
        :class:`iracdb.flags.Flag` bitmask of each image.
    outlier : array_like of bool, shape (n,)
        :attr:`AorStats.outlier`.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        A new array; the input is not modified.
    """
    bits = _as_1d("flags", flags, np.int64)
    mask = _as_1d("outlier", outlier, np.bool_)
    if bits.shape != mask.shape:
        raise ValueError(f"flags and outlier differ in length ({bits.size} and {mask.size})")
    bit = np.int64(Flag.OUTLIER)
    return np.where(mask, bits | bit, bits & ~bit)
