"""Figures of a reduction run, written to PNG, PDF or SVG files: a run overview and one AOR in detail.

Everything is read from the views ``aor_photometry`` and ``image_photometry`` (:mod:`iracdb.db.views`), filtered by
run (and AOR) in SQL. The overview streams the run's used images in batches and keeps a bounded uniform sample for
its pixel-phase panels, so a run of millions of images plots in bounded memory.

Figures use matplotlib's object-oriented API on the Agg canvas: no pyplot, no global state, no display. Text from
the database (run, target and OBJECT names) is shown as it is, never read as mathtext (``parse_math=False``).

Files are written as exports are (:mod:`iracdb.outputs`): under a temporary name renamed into place when complete,
with the permissions a plain ``open`` gives; an existing file only replaced when asked to, the database never.

Pixel phase: with 0-based pixel coordinates whose pixel centres are integers, the x phase is
``xc_full - ROUND(xc_full)`` in [-0.5, 0.5] (IDL ``ROUND``, half away from zero), the same for y, and the radial
phase is their hypotenuse, in [0, 0.707] pixels. The uncorrected flux of an image is ``flux_mjy * correction``
(the correction is a divisor).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray
from sqlalchemy import Engine, text

from iracdb.db.backend import database_files
from iracdb.db.queries import annuli_text, aperture_count, get_run, radii_text, run_summary
from iracdb.db.views import BEST_IMAGES
from iracdb.errors import BadOption, NoSuchAor
from iracdb.outputs import (
    cannot_write,
    check_outputs,
    create_partial,
    discard_partial,
    file_stem,
    make_folder,
    place,
    remove_stale_partials,
)
from iracdb.plot_data import (
    MIN_BIN_COUNT,
    PHASE_MAX,
    PLANES_PER_CUBE,
    PhaseBins,
    PhaseSample,
    PlaneProfile,
    Reservoir,
    binned_rms_curve,
    flag_reasons,
    normalise,
    phase_bins,
    phase_limits,
    plane_profile,
    radial_pixel_phase,
    time_limits,
)

#: The file formats of a figure, by the file name's suffix (in any case).
PLOT_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
#: Resolution of every figure [dots per inch]; a figure of w x h inches is ``w * DPI`` x ``h * DPI`` pixels.
DPI = 100
#: Overview: width [in], height of one monitoring panel [in], of the pixel-phase row [in], of the title [in].
OVERVIEW_WIDTH_IN = 12.0
OVERVIEW_PANEL_IN = 2.6
OVERVIEW_PHASE_IN = 3.6
TITLE_IN = 0.6
#: At most this many monitoring panels in the overview (one per channel x target, and per OBJECT for an ``auto``
#: target); the title says when some are left out.
MAX_OVERVIEW_PANELS = 12
#: AOR figure: width [in] and height of one (channel, target) row [in].
AOR_WIDTH_IN = 13.0
AOR_ROW_IN = 3.4
#: Monitoring points are labelled with their AORKEY when a panel holds at most this many.
LABELLED_AORS = 8
#: An overview legend names each AOR with no usable image when there are at most this many in the panel.
NAMED_EMPTY_AORS = 3
#: Overview pixel-phase panels: rows kept for the binned medians, points drawn, rows read per database batch.
PHASE_SAMPLE = 200_000
SCATTER_POINTS = 20_000
BATCH_ROWS = 50_000

_USED_COLOUR, _OUTLIER_COLOUR, _FLAGGED_COLOUR = "C0", "red", "0.45"
_BEFORE_COLOUR, _AFTER_COLOUR = "C1", "C0"


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def default_plot_path(run_name: str, aorkey: int | None = None) -> Path:
    """The default file name of a run's figure: ``RUN_overview.png`` or ``RUN_aor_AORKEY.png``.

    Parameters
    ----------
    run_name : str
        The run's name; ``RUN`` is its :func:`iracdb.outputs.file_stem`, as in the export's file names (``a/b``
        -> ``a%2Fb``; different runs never share a name).
    aorkey : int or None
        The AOR of :func:`plot_aor`; None for :func:`plot_overview`.

    Returns
    -------
    Path
        A relative path (a file name only).
    """
    stem = file_stem(run_name)
    return Path(f"{stem}_overview.png" if aorkey is None else f"{stem}_aor_{aorkey}.png")


def plot_format(out: Path) -> str:
    """The file format of figure file ``out``, by its suffix: ``png``, ``pdf`` or ``svg``.

    Raises
    ------
    iracdb.errors.BadOption
        Any other suffix.
    """
    fmt = PLOT_FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise BadOption(f"cannot plot to {out}: the file name must end in .png, .pdf or .svg")
    return fmt


def plot_overview(engine: Engine, run_name: str, out: Path, *, overwrite: bool = False) -> Path:
    """Plot a run's overview (:func:`overview_figure`) to a PNG, PDF or SVG file.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The database holding the run.
    run_name : str
        The run's name.
    out : Path
        The file to write, ``.png``, ``.pdf`` or ``.svg`` (the format); its folder is created if missing.
    overwrite : bool
        Replace ``out`` if it exists (atomically); without it, an existing ``out`` is an error.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    iracdb.errors.BadOption
        ``out`` has another suffix.
    iracdb.errors.NoSuchRun
        No run has that name.
    iracdb.errors.OutputExists
        Without ``overwrite``: ``out`` exists (it is left as it is).
    iracdb.errors.CannotWrite
        ``out`` is a folder or a file of the database being read, or cannot be written (its folder cannot be
        created, no permission, ...).
    """
    fmt = plot_format(out)
    get_run(engine, run_name)
    _check(engine, out, overwrite)
    return _save(overview_figure(engine, run_name), out, fmt, overwrite=overwrite)


def overview_figure(engine: Engine, run_name: str) -> Figure:
    """A run's overview: per-AOR mean flux against time, and the pixel-phase response over the run.

    One monitoring panel per star: per (channel, target) of the run for a target with coordinates, and per
    (channel, target, OBJECT) for an ``auto`` target, whose star changes from field to field (the AOR's OBJECT names
    the field). In each, every AOR's mean flux density [mJy] against its mean time [MJD] with the error of the mean
    as a dark error bar and the standard deviation of its images as a light one, a dashed line at the weighted mean
    of the panel's AORs (weights 1 / error²), and a dotted vertical line at the first image of each AOR with no
    usable image. At most :data:`MAX_OVERVIEW_PANELS` panels are drawn; the title says when some are left out.
    Below, one panel per channel: every used image's flux divided by its AOR's median against radial pixel phase
    [pix], before the pixel-phase x array-location correction and after it (a uniform sample of at most
    :data:`SCATTER_POINTS` points, with the binned medians of up to :data:`PHASE_SAMPLE`).

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The database holding the run.
    run_name : str
        The run's name.

    Returns
    -------
    matplotlib.figure.Figure
        On an Agg canvas (no display needed), :data:`DPI` dots per inch, of :func:`overview_size_in`.

    Raises
    ------
    iracdb.errors.NoSuchRun
        No run has that name.
    """
    run = get_run(engine, run_name)
    aors = run_summary(engine, run_name, best_only=True)
    panels = _monitor_panels(aors, auto_targets=_auto_target_indices(run))
    phases = _run_phase_sample(engine, run_name)
    channels = sorted(phases) or sorted({int(a["channel"]) for a in aors}) or [0]

    shown = panels[:MAX_OVERVIEW_PANELS]
    n_rows = max(len(shown), 1)
    fig = Figure(figsize=overview_size_in(len(panels)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    title = f"iracdb run {run_name}: {_describe_params(run)}"
    if len(panels) > len(shown):
        title += (f"\n(first {len(shown)} of {len(panels)} panels shown: one per channel x target, "
                  "and per OBJECT for an auto target)")
    fig.suptitle(title, fontsize=11, parse_math=False)
    # Two subfigures come as an array (the type stubs also allow one SubFigure, for subfigures(1, 1)).
    top, bottom = cast(np.ndarray, fig.subfigures(2, 1, height_ratios=[n_rows * OVERVIEW_PANEL_IN, OVERVIEW_PHASE_IN]))
    # Each panel has its own time axis: one shared by all would spread a few AORs over the mission's years.
    axes = top.subplots(n_rows, 1, squeeze=False)[:, 0]
    if not shown:
        _note(axes[0], "no AOR in this run")
    empty_flags = _empty_aor_flags(engine, run_name) if any(p.empty_aorkeys for p in shown) else {}
    for ax, panel in zip(axes, shown, strict=False):
        _draw_monitor_panel(ax, panel, empty_flags)
        ax.set_xlabel("MJD (mean time of the used images)", fontsize=9)
    bottom.suptitle("used images: flux / AOR median vs radial pixel phase, before and after the pixel-phase x "
                    "array-location correction", fontsize=10)
    phase_axes = bottom.subplots(1, len(channels), squeeze=False)[0]  # each channel has its own response
    for ax, channel in zip(phase_axes, channels, strict=True):
        _draw_phase_panel(ax, phases.get(channel), title=f"ch{channel}", legend=False)
    phase_axes[0].set_ylabel("flux / AOR median")
    handles, labels = _unique_legend_entries(phase_axes)
    if handles:  # one legend for the row, beside the panels
        bottom.legend(handles, labels, loc="outside right upper", fontsize=8)
    return fig


def plot_aor(engine: Engine, run_name: str, aorkey: int, out: Path, *, overwrite: bool = False) -> Path:
    """Plot one AOR of a run (:func:`aor_figure`) to a PNG, PDF or SVG file.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The database holding the run.
    run_name : str
        The run's name.
    aorkey : int
        The AOR.
    out : Path
        The file to write, ``.png``, ``.pdf`` or ``.svg`` (the format); its folder is created if missing.
    overwrite : bool
        Replace ``out`` if it exists (atomically); without it, an existing ``out`` is an error.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    iracdb.errors.BadOption
        ``out`` has another suffix.
    iracdb.errors.NoSuchRun
        No run has that name.
    iracdb.errors.NoSuchAor
        The run has no rows for that AOR.
    iracdb.errors.OutputExists
        Without ``overwrite``: ``out`` exists (it is left as it is).
    iracdb.errors.CannotWrite
        ``out`` is a folder or a file of the database being read, or cannot be written.
    """
    fmt = plot_format(out)
    get_run(engine, run_name)
    _check(engine, out, overwrite)
    return _save(aor_figure(engine, run_name, aorkey), out, fmt, overwrite=overwrite)


def aor_figure(engine: Engine, run_name: str, aorkey: int) -> Figure:
    """One AOR of a run: its light curve and its pixel-phase response, one row per (channel, target).

    Left: each image's flux density [mJy] against the time since the first image [min, or h for AORs longer than
    3 h], with its 1-sigma error; used images as dots, outliers rejected by the run's rule as red crosses, other
    flagged images with a finite flux as grey squares (the legend counts each), the AOR mean and its error as a line
    and band. Right: the used images' flux divided by the AOR median against radial pixel phase [pix], before and
    after the pixel-phase x array-location correction, with binned medians. For subarray planes, a third panel:
    flux against plane index 0-63 (:func:`draw_plane_profile`), showing the first-frame effect.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The database holding the run.
    run_name : str
        The run's name.
    aorkey : int
        The AOR.

    Returns
    -------
    matplotlib.figure.Figure
        On an Agg canvas, :data:`DPI` dots per inch, of :func:`aor_size_in`.

    Raises
    ------
    iracdb.errors.NoSuchRun
        No run has that name.
    iracdb.errors.NoSuchAor
        The run has no rows for that AOR.
    """
    run = get_run(engine, run_name)
    series = _aor_series(engine, run_name, aorkey)
    fig = Figure(figsize=aor_size_in(len(series)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    objects = sorted({s.object for s in series if s.object})
    fig.suptitle(f"iracdb run {run_name}: AOR {aorkey}" + (f" ({', '.join(objects)})" if objects else "")
                 + f"\n{_describe_params(run)}", fontsize=11, parse_math=False)
    planes = any(s.has_planes for s in series)  # subarray planes: a third column, flux against plane index
    axes = fig.subplots(len(series), 3 if planes else 2, squeeze=False,
                        width_ratios=[2.0, 1.0, 1.0] if planes else [2.0, 1.0])
    for row, s in zip(axes, series, strict=True):
        _draw_light_curve(row[0], s)
        before, after = s.normalised()
        sample = PhaseSample(s.phase[s.used], before[s.used], after[s.used])
        _draw_phase_panel(row[1], sample, title=f"ch{s.channel} {s.target} pixel phase, used images")
        row[1].set_ylabel("flux / AOR median")
        if planes:
            draw_plane_profile(row[2], plane_profile(s.plane, s.cube, s.flux, s.flags),
                               title=f"ch{s.channel} {s.target} flux by plane")
    return fig


def overview_size_in(n_panels: int) -> tuple[float, float]:
    """Size [in] of the overview figure with ``n_panels`` monitoring panels (capped, at least one)."""
    n_rows = min(max(n_panels, 1), MAX_OVERVIEW_PANELS)
    return OVERVIEW_WIDTH_IN, TITLE_IN + n_rows * OVERVIEW_PANEL_IN + OVERVIEW_PHASE_IN


def aor_size_in(n_rows: int) -> tuple[float, float]:
    """Size [in] of the AOR figure with ``n_rows`` (channel, target) rows."""
    return AOR_WIDTH_IN, TITLE_IN + max(n_rows, 1) * AOR_ROW_IN


# ----------------------------------------------------------------------------------------------------------------
# One AOR
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AorSeries:
    """The images of one AOR x channel x target of a run, as plotted (arrays in time order, one value per image).

    Attributes
    ----------
    channel, target_index, target, object
        Which series.
    mjd : ndarray
        Middle of each image, MJD (UTC) [d]; NaN when unknown.
    flux, flux_err : ndarray
        Flux density and its 1-sigma error [mJy]; NaN when not measured.
    correction : ndarray
        The correction divisor (uncorrected flux = ``flux * correction``); NaN when none was recorded.
    phase : ndarray
        Radial pixel phase of the aperture centre [pix]; NaN without a position.
    flags : ndarray of int
        Quality bits (:class:`iracdb.flags.Flag`).
    used, outlier, flagged : ndarray of bool
        In the AOR's statistics; rejected as an outlier (``flag_outlier``) with a finite flux; kept out for another
        reason with a finite flux. Disjoint; images with no finite flux are in none of them.
    mean_mjy, mean_err_mjy : float
        The AOR's mean flux and its error [mJy] from ``aor_photometry``; NaN when there is none.
    plane, cube : ndarray of int
        Each image's subarray plane (0 for a full-array frame or a cube median) and its cube (EXPID x 10^6 + DCENUM).
    aperture : str or None
        The aperture shown, when the run measured several (its best: ``"4 px, 3-7 px, box"``); None for one.
    """

    channel: int
    target_index: int
    target: str
    object: str | None
    mjd: NDArray[np.float64]
    flux: NDArray[np.float64]
    flux_err: NDArray[np.float64]
    correction: NDArray[np.float64]
    phase: NDArray[np.float64]
    flags: NDArray[np.int64]
    used: NDArray[np.bool_]
    outlier: NDArray[np.bool_]
    flagged: NDArray[np.bool_]
    mean_mjy: float
    mean_err_mjy: float
    plane: NDArray[np.int64]
    cube: NDArray[np.int64]
    aperture: str | None = None

    @property
    def has_planes(self) -> bool:
        """Whether the series holds subarray planes (measured plane by plane, not as cube medians)."""
        return bool(self.plane.size and self.plane.max() > 0)

    def normalised(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Flux / median over the used images, before correction (``flux * correction``) and after; NaN for the
        images not used."""
        before = np.where(self.used, self.flux * self.correction, np.nan)
        after = np.where(self.used, self.flux, np.nan)
        return normalise(before), normalise(after)


def _aor_series(engine: Engine, run_name: str, aorkey: int) -> list[AorSeries]:
    """The series of ``aorkey`` in the run, one per channel x target, ordered by channel and target.

    Raises :class:`~iracdb.errors.NoSuchAor` when the run holds no row for the AOR.
    """
    params = {"run": run_name, "aorkey": aorkey}
    n_apertures = aperture_count(engine, run_name)
    with engine.connect() as conn:
        images = conn.execute(text(
            "SELECT channel, target_index, target, mjd, xc_full, yc_full, flux_mjy, flux_err_mjy, correction, "
            "flags, used, flag_outlier, plane, expid, dcenum FROM image_photometry "
            f"WHERE run = :run AND aorkey = :aorkey AND {BEST_IMAGES} "
            "ORDER BY channel, target_index, mjd, expid, dcenum, plane"), params).all()
        summaries = {(int(r.channel), int(r.target_index)): r for r in conn.execute(text(
            "SELECT channel, target_index, target, object, flux_mjy, flux_err_mjy, radius_spec, annulus_in_px, "
            "annulus_out_px, centroid FROM aor_photometry WHERE run = :run AND aorkey = :aorkey AND best"), params)}
        if not images and not summaries:
            keys = conn.execute(text("SELECT DISTINCT aorkey FROM aor_photometry WHERE run = :run ORDER BY aorkey"),
                                {"run": run_name}).scalars().all()
    if not images and not summaries:
        listed = ", ".join(str(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
        there = f"it holds {len(keys)} AOR(s): {listed}" if keys else "it holds no AOR yet"
        raise NoSuchAor(f"AOR {aorkey} is not in run {run_name!r}; {there} (see `iracdb summary {run_name}`)")
    groups: dict[tuple[int, int], list[Any]] = {key: [] for key in summaries}
    for row in images:
        groups.setdefault((int(row.channel), int(row.target_index)), []).append(row)
    out = []
    for key in sorted(groups):
        rows, summary = groups[key], summaries.get(key)
        column = _columns(rows, ("mjd", "xc_full", "yc_full", "flux_mjy", "flux_err_mjy", "correction"))
        flux = column["flux_mjy"]
        finite = np.isfinite(flux)
        used = np.array([bool(r.used) for r in rows], dtype=bool) & finite
        outlier = np.array([bool(r.flag_outlier) for r in rows], dtype=bool) & finite & ~used
        target = rows[0].target if rows else summaries[key].target  # a key without rows is a summary's
        out.append(AorSeries(
            channel=key[0], target_index=key[1], target=str(target), object=summary.object if summary else None,
            mjd=column["mjd"], flux=flux, flux_err=column["flux_err_mjy"], correction=column["correction"],
            phase=radial_pixel_phase(column["xc_full"], column["yc_full"]),
            flags=np.array([int(r.flags) for r in rows], dtype=np.int64), used=used, outlier=outlier,
            flagged=finite & ~used & ~outlier,
            mean_mjy=_float(summary.flux_mjy if summary else None),
            mean_err_mjy=_float(summary.flux_err_mjy if summary else None),
            plane=np.array([int(r.plane) for r in rows], dtype=np.int64),
            cube=np.array([int(r.expid) * 10**6 + int(r.dcenum) for r in rows], dtype=np.int64),
            aperture=_aperture_text(summary) if summary is not None and n_apertures > 1 else None,
        ))  # fmt: skip
    return out


def _aperture_text(row: Any) -> str:
    """An AOR row's aperture in words: ``4 px, 3-7 px, box``."""
    return f"{row.radius_spec} px, {row.annulus_in_px:g}-{row.annulus_out_px:g} px, {row.centroid}"


def _draw_light_curve(ax: Axes, s: AorSeries) -> None:
    known = s.mjd[np.isfinite(s.mjd)]
    t0 = float(known.min()) if known.size else math.nan
    span_min = (float(known.max()) - t0) * 1440.0 if known.size else 0.0
    unit, scale = ("h", 24.0) if span_min > 180.0 else ("min", 1440.0)
    t = (s.mjd - t0) * scale
    err = np.where(np.isfinite(s.flux_err), s.flux_err, 0.0)
    styles: tuple[tuple[np.ndarray, dict[str, Any], str], ...] = (
        (s.used, dict(fmt="o", ms=3, color=_USED_COLOUR, elinewidth=0.6), "used"),
        (s.flagged, dict(fmt="s", ms=4, mfc="none", color=_FLAGGED_COLOUR, elinewidth=0.6), "flagged"),
        (s.outlier, dict(fmt="x", ms=6, color=_OUTLIER_COLOUR, elinewidth=0.6), "outlier"),
    )
    for mask, style, name in styles:
        keep = mask & np.isfinite(t)
        if keep.any():
            label = f"{name} ({int(keep.sum())})"
            if name == "flagged":  # say which bits kept them out
                label = f"flagged: {flag_reasons(s.flags[keep])}"
            ax.errorbar(t[keep], s.flux[keep], yerr=err[keep], label=label, **style)
    if math.isfinite(s.mean_mjy):
        band = s.mean_err_mjy if math.isfinite(s.mean_err_mjy) else 0.0
        ax.axhline(s.mean_mjy, color="k", lw=1.0, label=f"AOR mean {s.mean_mjy:.5g} ± {band:.2g} mJy")
        if band > 0:
            ax.axhspan(s.mean_mjy - band, s.mean_mjy + band, color="k", alpha=0.12, lw=0)
    missing = ~np.isfinite(s.flux)
    n_missing = int(missing.sum())
    if not (s.used.any() or s.flagged.any() or s.outlier.any()):
        reason = f"flags: {flag_reasons(s.flags[missing])}" if n_missing else "no image in this row"
        _note(ax, f"no usable image: {_plural(s.flux.size, 'image')}, none with a flux\n{reason}")
        ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
    start = f"MJD {t0:.5f}" if math.isfinite(t0) else "the first image"
    ax.set_xlabel(f"time since the first image ({start}) [{unit}]")
    ax.set_ylabel("flux density [mJy]")
    title = f"ch{s.channel} {s.target}: light curve, {_plural(s.flux.size, 'image')}"
    if s.aperture is not None:
        title += f"\nbest aperture: {s.aperture}"
    if n_missing and (s.used.any() or s.flagged.any() or s.outlier.any()):  # in the title, where it covers no point
        title += f"\n{n_missing} without a flux, not shown ({flag_reasons(s.flags[missing])})"
    ax.set_title(title, fontsize=10, parse_math=False)
    _legend(ax, below=True)


# ----------------------------------------------------------------------------------------------------------------
# The run overview
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MonitorPanel:
    """The AORs of one star: one channel x target, and for an ``auto`` target one OBJECT (``object``; None if the
    AORs have none). The AORs with a usable image (``aorkeys``) with their mean time [MJD], mean flux, error of the
    mean and std [mJy]; the first-image times [MJD] of the AORs with none (``empty_aorkeys``, in the same order)."""

    channel: int
    target: str
    auto: bool
    object: str | None
    aorkeys: tuple[int, ...]
    mjd: NDArray[np.float64]
    flux: NDArray[np.float64]
    err: NDArray[np.float64]
    std: NDArray[np.float64]
    empty_mjd: NDArray[np.float64]
    target_index: int = 0
    empty_aorkeys: tuple[int, ...] = ()

    @property
    def title(self) -> str:
        """``ch1 · star`` for a target with coordinates, ``ch1 · OBJECT (auto)`` for an ``auto`` one."""
        if not self.auto:
            return f"ch{self.channel} · {self.target}"
        name = "auto" if self.target == "auto" else f"{self.target}, auto"
        return f"ch{self.channel} · {self.object or 'no OBJECT'} ({name})"

    @property
    def weighted_mean(self) -> float:
        """Mean of the AOR fluxes weighted by 1 / err² [mJy] (plain mean if no AOR has a positive error)."""
        ok = np.isfinite(self.flux) & np.isfinite(self.err) & (self.err > 0)
        if ok.any():
            w = 1.0 / self.err[ok] ** 2
            return float(np.sum(w * self.flux[ok]) / np.sum(w))
        finite = self.flux[np.isfinite(self.flux)]
        return float(finite.mean()) if finite.size else math.nan


def _auto_target_indices(run: dict[str, Any]) -> frozenset[int]:
    """The ``target_index`` of each ``auto`` target of ``run`` (a target without coordinates, as given)."""
    targets = json.loads(run["params_json"]).get("targets", [])
    return frozenset(i for i, t in enumerate(targets) if t.get("ra_deg") is None)


def _monitor_panels(aors: list[dict[str, Any]], *, auto_targets: Collection[int]) -> list[_MonitorPanel]:
    """The monitoring panels of a run's ``aor_photometry`` rows, ordered by channel, target and OBJECT (no OBJECT
    last): one per channel x target, and for the targets in ``auto_targets`` one per channel x target x OBJECT, as
    the brightest source near the pointing is another star in another field."""
    groups: dict[tuple[int, int, str | None], list[dict[str, Any]]] = {}
    for row in aors:
        index = int(row["target_index"])
        field = (row["object"] or None) if index in auto_targets else None
        groups.setdefault((int(row["channel"]), index, field), []).append(row)
    panels = []
    for channel, index, field in sorted(groups, key=lambda k: (k[0], k[1], k[2] is None, k[2] or "")):
        rows = groups[channel, index, field]
        flux = np.array([_float(r["flux_mjy"]) for r in rows])
        usable = np.isfinite(flux) & np.array([(r["n_used"] or 0) > 0 for r in rows])
        mjd = np.array([_float(r["mjd"]) for r in rows])
        first = np.array([_float(r["first_mjd"]) for r in rows])
        empty = np.where(np.isfinite(first), first, mjd)[~usable]
        empty_keys = np.array([int(r["aorkey"]) for r in rows], dtype=np.int64)[~usable]
        panels.append(_MonitorPanel(
            channel=channel, target=str(rows[0]["target"]), auto=index in auto_targets, object=field,
            aorkeys=tuple(int(r["aorkey"]) for r, u in zip(rows, usable, strict=True) if u),
            mjd=mjd[usable], flux=flux[usable],
            err=np.array([_float(r["flux_err_mjy"]) for r in rows])[usable],
            std=np.array([_float(r["std_mjy"]) for r in rows])[usable], empty_mjd=empty[np.isfinite(empty)],
            target_index=index, empty_aorkeys=tuple(int(k) for k in empty_keys[np.isfinite(empty)]),
        ))  # fmt: skip
    return panels


def _empty_aor_flags(engine: Engine, run_name: str) -> dict[tuple[int, int, int], tuple[list[int], list[int]]]:
    """Per (AORKEY, channel, target_index) of the run: the distinct quality bits of its images not used, and how
    many images carry each (a grouped count, so small whatever the run's size)."""
    query = text("SELECT aorkey, channel, target_index, flags, COUNT(*) AS n FROM image_photometry "
                 f"WHERE run = :run AND NOT used AND {BEST_IMAGES} GROUP BY aorkey, channel, target_index, flags")
    out: dict[tuple[int, int, int], tuple[list[int], list[int]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query, {"run": run_name}):
            flags, counts = out.setdefault((int(row.aorkey), int(row.channel), int(row.target_index)), ([], []))
            flags.append(int(row.flags))
            counts.append(int(row.n))
    return out


def _empty_label(p: _MonitorPanel, flags: dict[tuple[int, int, int], tuple[list[int], list[int]]]) -> str:
    """The legend entry of a panel's AORs with no usable image: each AOR and its images' flags when there are at
    most :data:`NAMED_EMPTY_AORS`, else their number and the flags over all of them."""
    def reasons(keys: Iterable[int]) -> str:
        values: list[int] = []
        counts: list[int] = []
        for key in keys:
            f, n = flags.get((key, p.channel, p.target_index), ([], []))
            values += f
            counts += n
        return flag_reasons(values, counts) if values else "no image"
    if len(p.empty_aorkeys) <= NAMED_EMPTY_AORS:
        return "\n".join(f"AOR {key}: no usable image\n  ({reasons([key])})" for key in p.empty_aorkeys)
    return f"{len(p.empty_aorkeys)} AORs with no usable image\n  ({reasons(p.empty_aorkeys)})"


def _draw_monitor_panel(ax: Axes, p: _MonitorPanel,
                        flags: dict[tuple[int, int, int], tuple[list[int], list[int]]] | None = None) -> None:
    """One star's AOR means against time; ``flags`` (of :func:`_empty_aor_flags`) name why the AORs with no usable
    image have none. The time axis spans this panel's AORs only."""
    plotted = np.isfinite(p.mjd) & np.isfinite(p.flux)
    if plotted.any():
        x, y = p.mjd[plotted], p.flux[plotted]
        std = np.nan_to_num(p.std[plotted], nan=0.0)
        err = np.nan_to_num(p.err[plotted], nan=0.0)
        ax.errorbar(x, y, yerr=std, fmt="none", ecolor=_USED_COLOUR, alpha=0.3, elinewidth=3, label="std of images")
        ax.errorbar(x, y, yerr=err, fmt="o", ms=4, color=_USED_COLOUR, elinewidth=1.2, capsize=2,
                    label=f"AOR mean ± error ({_plural(int(plotted.sum()), 'AOR')})")
        if plotted.sum() <= LABELLED_AORS:  # a few points: say which AOR each is
            keys = np.array(p.aorkeys)[plotted]
            for key, xi, yi in zip(keys, x, y, strict=True):
                ax.annotate(str(key), (xi, yi), xytext=(6, 4), textcoords="offset points", fontsize=7, color="0.25")
        mean = p.weighted_mean
        if math.isfinite(mean):
            ax.axhline(mean, color="k", ls="--", lw=1.0, label=f"weighted mean {mean:.5g} mJy")
    else:  # said in the title: a note in the middle would sit on the line of a lone AOR with no usable image
        ax.tick_params(left=False, labelleft=False)
    if p.empty_mjd.size:
        ax.vlines(p.empty_mjd, 0, 1, transform=ax.get_xaxis_transform(), colors=_OUTLIER_COLOUR, linestyles=":",
                  lw=1.0, label=_empty_label(p, flags or {}))
    limits = time_limits(np.concatenate([p.mjd[plotted], p.empty_mjd]))
    if limits is not None:
        ax.set_xlim(*limits)
    ax.set_ylabel("flux density [mJy]")
    ax.set_title(p.title + ("" if plotted.any() else ": no usable images"), fontsize=10, loc="left", parse_math=False)
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    _legend(ax)


def _run_phase_sample(engine: Engine, run_name: str, *, batch_rows: int = BATCH_ROWS,
                      sample_size: int = PHASE_SAMPLE) -> dict[int, PhaseSample]:
    """Per channel: a uniform sample of at most ``sample_size`` of the run's used images with a position (radial
    phase [pix], flux / AOR median before and after correction), in random order; read in batches of ``batch_rows``
    rows. Each AOR x channel x target's median is over all of its used images."""
    reservoirs: dict[int, Reservoir] = {}
    query = text(
        "SELECT aorkey, channel, target_index, xc_full, yc_full, flux_mjy, correction FROM image_photometry "
        f"WHERE run = :run AND used AND {BEST_IMAGES} ORDER BY aorkey, channel, target_index")
    pending = np.empty((0, 7))
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(query, {"run": run_name})
        for part in result.partitions(batch_rows):
            rows = np.array([tuple(r) for r in part], dtype=np.float64).reshape(-1, 7)  # NULL -> NaN
            block = np.concatenate([pending, rows])
            tail = np.all(block[:, :3] == block[-1, :3], axis=1)  # the last group may go on in the next batch
            _add_groups(block[~tail], reservoirs, sample_size)
            pending = block[tail]
    _add_groups(pending, reservoirs, sample_size)
    out = {}
    for channel, reservoir in sorted(reservoirs.items()):
        rows = reservoir.rows[np.argsort(reservoir.keys)]  # random order: any stride of it is a uniform sample
        out[channel] = PhaseSample(rows[:, 0], rows[:, 1], rows[:, 2], n_total=reservoir.n_seen)
    return out


def _add_groups(block: NDArray[np.float64], reservoirs: dict[int, Reservoir], sample_size: int) -> None:
    """Normalise each AOR x channel x target of ``block`` (sorted by those keys) and add its rows (phase, before,
    after) with a position to its channel's reservoir."""
    if len(block) == 0:
        return
    flux, correction = block[:, 5], block[:, 6]
    before, after = flux * correction, flux.copy()
    starts = np.flatnonzero(np.any(np.diff(block[:, :3], axis=0) != 0, axis=1)) + 1
    for lo, hi in zip(np.r_[0, starts], np.r_[starts, len(block)], strict=True):
        before[lo:hi] = normalise(before[lo:hi])
        after[lo:hi] = normalise(after[lo:hi])
    rows = np.column_stack([radial_pixel_phase(block[:, 3], block[:, 4]), before, after])
    for channel in np.unique(block[:, 1]):
        if int(channel) not in reservoirs:
            reservoirs[int(channel)] = Reservoir(sample_size, 3, seed=int(channel))
        reservoirs[int(channel)].add(rows[(block[:, 1] == channel) & np.isfinite(rows[:, 0])])


# ----------------------------------------------------------------------------------------------------------------
# Shared drawing
# ----------------------------------------------------------------------------------------------------------------


def _draw_phase_panel(ax: Axes, sample: PhaseSample | None, title: str, legend: bool = True) -> None:
    """Flux / median against radial pixel phase, before and after correction: a light scatter (a uniform sample of
    at most SCATTER_POINTS) and the binned medians, over the phases the images cover (:func:`phase_limits`)."""
    ax.set_xlabel("radial pixel phase [pix]")
    n = 0 if sample is None else int(np.isfinite(sample.phase).sum())
    if sample is None or n == 0:
        ax.set_xlim(0.0, PHASE_MAX)
        ax.set_title(title, fontsize=10, parse_math=False)
        _note(ax, "no usable images")
        ax.tick_params(left=False, labelleft=False)
        return
    span = phase_limits(sample.phase)
    ax.set_xlim(*span)
    total = sample.n_total if sample.n_total is not None else sample.phase.size
    step = max(1, math.ceil(sample.phase.size / SCATTER_POINTS))  # an overview sample is in random order
    shown = 0
    no_medians = False
    for values, colour, name in ((sample.before, _BEFORE_COLOUR, "before correction"),
                                 (sample.after, _AFTER_COLOUR, "after correction")):
        ok = np.isfinite(sample.phase) & np.isfinite(values)
        if not ok.any():
            continue
        x, y = sample.phase[ok][::step], values[ok][::step]
        few = x.size <= 500  # a few points are drawn larger and darker than a cloud of thousands
        ax.scatter(x, y, s=14 if few else 5, color=colour, alpha=0.8 if few else 0.35, lw=0)
        shown = max(shown, x.size)
        bins = phase_bins(sample.phase, values, span=span)
        has = np.isfinite(bins.median)
        ax.plot(bins.centres[has], bins.median[has], "o-", color=colour, lw=1.8, ms=4, label=name)
        no_medians = no_medians or not has.any()
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    finite = np.concatenate([v[np.isfinite(v)] for v in (sample.before, sample.after)])
    if finite.size >= 1000:  # a cloud: leave out the most extreme 0.2% at either end; a few points: show all
        lo, hi = np.percentile(finite, [0.2, 99.8])
        pad = 0.1 * (hi - lo) or 0.01
        ax.set_ylim(lo - pad, hi + pad)
    counts = f"{total} image(s), {shown} drawn"
    if no_medians:  # in the title, where it covers no point
        counts += f"\nno medians (< {MIN_BIN_COUNT} images a bin)"
    ax.set_title(f"{title}: {counts}" if len(title) <= 12 else f"{title}\n{counts}", fontsize=10, parse_math=False)
    if legend:
        _legend(ax, below=True)


def _note(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="0.3")


def _legend(ax: Axes, *, below: bool = False) -> None:
    """The legend of ``ax``, outside it, where it covers no data: on the right, or ``below`` the x-axis label (in
    columns)."""
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    if below:  # the pad, in font sizes, clears the tick labels and the axis label
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), borderaxespad=4.8,
                  ncols=min(len(handles), 4))
    else:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _unique_legend_entries(axes: Iterable[Axes]) -> tuple[list[Any], list[str]]:
    """The legend handles and labels of ``axes``, each label once (the first axes' handle)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return list(entries.values()), list(entries)


def _check(engine: Engine, out: Path, overwrite: bool) -> None:
    """Refuse ``out`` before any work: it exists (without ``overwrite``), is a folder or a database file."""
    check_outputs([Path(out)], overwrite=overwrite, protected=database_files(engine.url))


def _save(fig: Figure, out: Path, fmt: str, *, overwrite: bool) -> Path:
    """Write ``fig`` in format ``fmt`` to a temporary file beside ``out`` and rename it into place."""
    out = Path(out)
    make_folder(out.parent)
    remove_stale_partials(out.parent, [out.name])
    temp = create_partial(out)
    try:
        try:
            fig.savefig(temp, format=fmt, dpi=DPI)
        except OSError as exc:
            raise cannot_write(out, exc) from None
        place(temp, out, overwrite=overwrite)
    finally:
        discard_partial(temp)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------


def _describe_params(run: dict[str, Any]) -> str:
    """The parameters that tell runs apart, in words."""
    p = json.loads(run["params_json"])
    parts = [
        f"aperture {radii_text(p.get('radius_px'))} px" if p.get("radius_px") is not None else None,
        f"annulus {annuli_text(p.get('annulus_in_px'), p.get('annulus_out_px'))} px"
        if p.get("annulus_in_px") is not None and p.get("annulus_out_px") is not None else None,
        f"centroid {p['centroid']}" if "," in str(p.get("centroid", "")) else None,
        f"corrections {p['corrections']}" if "corrections" in p else None,
        f"ap. corr. {p['aperture_correction']}" if "aperture_correction" in p else None,
        f"reject {p['reject']}" if "reject" in p else None,
        f"status {run['status']}" if run.get("status") not in (None, "complete") else None,
    ]
    return ", ".join(part for part in parts if part)


def _plural(n: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _columns(rows: Iterable[Any], names: tuple[str, ...]) -> dict[str, NDArray[np.float64]]:
    rows = list(rows)
    return {name: np.array([_float(getattr(r, name)) for r in rows], dtype=np.float64) for name in names}


__all__ = [
    "DPI", "PLOT_FORMATS", "AorSeries", "PhaseBins", "aor_figure", "aor_size_in", "default_plot_path",
    "overview_figure", "overview_size_in", "plot_aor", "plot_format", "plot_overview", "radial_pixel_phase",
]


# ----------------------------------------------------------------------------------------------------------------
# Flux against plane index (the first-frame effect)
# ----------------------------------------------------------------------------------------------------------------


def draw_plane_profile(ax: Axes, profile: PlaneProfile, title: str) -> None:
    """Draw a :class:`~iracdb.plot_data.PlaneProfile`: the median over the cubes of flux / the cube's median of
    planes 1-63 against plane index 0-63 (plane 0, ``FIRST_FRAME``, marked and its offset in the legend [%]), with
    the line at 1. A panel of the AOR figure for subarray runs, and of the aperture-grid figure.
    """
    has = profile.count > 0
    if not has.any():
        _note(ax, "no measured plane")
        ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
    else:
        ax.plot(profile.plane[has], profile.median[has], "o", ms=3, color=_USED_COLOUR,
                label=f"median of {int(profile.count[has].max())} cubes")
        if has[0]:
            ax.plot([0], [profile.median[0]], "o", ms=7, mfc="none", color=_OUTLIER_COLOUR,
                    label=f"plane 0: {100.0 * profile.first_frame_offset:+.2f} %")
        ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlim(-1.5, PLANES_PER_CUBE + 0.5)
    ax.set_xlabel("plane index")
    ax.set_ylabel("flux / cube median of planes 1-63")
    ax.set_title(title, fontsize=10, parse_math=False)
    _legend(ax, below=True)
# The aperture grid of a run
# ----------------------------------------------------------------------------------------------------------------

#: Grid figure: width and height [in].
GRID_SIZE_IN = (15.0, 4.8)


def default_grid_plot_path(run_name: str) -> Path:
    """The default file name of a run's grid figure: ``RUN_grid.png`` (``RUN`` as in :func:`default_plot_path`)."""
    return Path(f"{file_stem(run_name)}_grid.png")


def plot_grid(engine: Engine, run_name: str, out: Path, *, aorkey: int | None = None,
              overwrite: bool = False) -> Path:
    """Plot a run's aperture grid (:func:`grid_figure`) to a PNG, PDF or SVG file.

    Raises
    ------
    iracdb.errors.BadOption, iracdb.errors.NoSuchRun, iracdb.errors.NoSuchAor, iracdb.errors.OutputExists,
    iracdb.errors.CannotWrite
        As :func:`plot_aor`.
    """
    fmt = plot_format(out)
    get_run(engine, run_name)
    _check(engine, out, overwrite)
    return _save(grid_figure(engine, run_name, aorkey), out, fmt, overwrite=overwrite)


def grid_figure(engine: Engine, run_name: str, aorkey: int | None = None) -> Figure:
    """A run's aperture grid for one AOR, channel and target (``aorkey``'s first, default the run's first AOR).

    Left: the best-aperture score [ppm] against the aperture radius [pix], one line per annulus and centroid
    method, the best aperture ringed. Middle: for the best aperture, the RMS of the normalised light curve binned in
    N consecutive used images against N, with the white-noise expectation RMS(1) / sqrt(N). Right: the best
    aperture's flux over its median against the plane index 0-63 within the subarray cube (median and spread over
    the cubes; every measured plane, used or not), where the first-frame effect shows.

    Raises
    ------
    iracdb.errors.NoSuchRun
        No run has that name.
    iracdb.errors.NoSuchAor
        The run has no rows (for that AOR).
    """
    run = get_run(engine, run_name)
    rows = [r for r in run_summary(engine, run_name, aorkey=aorkey) if r["aorkey"] == (aorkey or r["aorkey"])]
    if not rows:
        raise NoSuchAor(f"run {run_name!r} has no AOR rows yet (see `iracdb summary {run_name}`)")
    first = rows[0]
    key = (first["aorkey"], first["channel"], first["target_index"])
    mine = [r for r in rows if (r["aorkey"], r["channel"], r["target_index"]) == key]
    best = next(r for r in mine if r["best"])
    images = _grid_images(engine, run_name, key, best["aperture_id"])
    fig = Figure(figsize=GRID_SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"iracdb run {run_name}: aperture grid, AOR {key[0]} ch{key[1]} {first['target']}; best by "
                 f"{json.loads(run['params_json']).get('best_by', 'binned-rms')}\n{_describe_params(run)}",
                 fontsize=11, parse_math=False)
    score_ax, rms_ax, plane_ax = fig.subplots(1, 3)
    _draw_scores(score_ax, mine, best)
    _draw_rms_vs_bin(rms_ax, images, best)
    _draw_plane_profile(plane_ax, images)
    return fig


def _grid_images(engine: Engine, run_name: str, key: tuple[int, int, int], aperture_id: int
                 ) -> dict[str, NDArray[Any]]:
    """The best aperture's images of one AOR, channel and target: time, plane, cube (expid, dcenum), flux, flags,
    used, in time order."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT mjd, plane, expid, dcenum, flux_mjy, flags, used FROM image_photometry WHERE run = :run AND "
            "aorkey = :aorkey AND "
            "channel = :channel AND target_index = :target AND aperture_id = :aperture ORDER BY mjd, expid, plane"),
            {"run": run_name, "aorkey": key[0], "channel": key[1], "target": key[2], "aperture": aperture_id}).all()
    out: dict[str, NDArray[Any]] = dict(_columns(rows, ("mjd", "plane", "flux_mjy")))
    for name in ("expid", "dcenum", "flags"):
        out[name] = np.array([getattr(r, name) or 0 for r in rows], dtype=np.int64)
    out["plane"] = np.nan_to_num(out["plane"], nan=-1).astype(np.int64)
    out["used"] = np.array([bool(r.used) for r in rows], dtype=bool) & np.isfinite(out["flux_mjy"])
    return out


def _draw_scores(ax: Axes, rows: list[dict[str, Any]], best: dict[str, Any]) -> None:
    lines: dict[tuple[float, float, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r["radius_px"] is not None and r["score"] is not None:
            lines.setdefault((r["annulus_in_px"], r["annulus_out_px"], r["centroid"]), []).append(
                (r["radius_px"], r["score"]))
    for (r_in, r_out, centroid), points in sorted(lines.items()):
        radius, score = np.array(sorted(points)).T
        ax.plot(radius, score, "o-", ms=4, label=f"{r_in:g}-{r_out:g} px, {centroid}")
    if best["radius_px"] is not None and best["score"] is not None:
        ax.plot([best["radius_px"]], [best["score"]], "o", ms=14, mfc="none", mec="red", mew=2,
                label=f"best: {best['radius_spec']} px, {best['annulus_in_px']:g}-{best['annulus_out_px']:g} px, "
                      f"{best['centroid']}")
    if not lines:
        _note(ax, "no score (too few used images)")
    ax.set_xlabel("aperture radius [pix]")
    ax.set_ylabel("score [ppm] (lower is better)")
    ax.set_title("score per aperture", fontsize=10)
    _legend(ax)


def _draw_rms_vs_bin(ax: Axes, images: dict[str, NDArray[Any]], best: dict[str, Any]) -> None:
    flux = images["flux_mjy"][images["used"]]
    sizes, rms = binned_rms_curve(flux)
    ax.set_title(f"best aperture ({best['radius_spec']} px): RMS vs bin size", fontsize=10)
    if len(sizes) == 0:
        _note(ax, "too few used images")
        return
    ax.loglog(sizes, rms * 1e6, "o-", ms=4, label="measured")
    ax.loglog(sizes, rms[0] * 1e6 / np.sqrt(sizes), "k--", label="white noise, RMS(1) / sqrt(N)")
    ax.set_xlabel("images per bin N")
    ax.set_ylabel("RMS of flux / median [ppm]")
    _legend(ax)


def _draw_plane_profile(ax: Axes, images: dict[str, NDArray[Any]]) -> None:
    """The best aperture's flux against plane index (:func:`draw_plane_profile`), or a note for data without
    subarray planes."""
    if not (images["plane"] > 0).any():
        _note(ax, "not subarray data (one plane per image)")
        ax.set_title("best aperture: flux vs plane in the cube", fontsize=10)
        return
    cube = images["expid"] * 10**6 + images["dcenum"]  # as AorSeries.cube
    draw_plane_profile(ax, plane_profile(images["plane"], cube, images["flux_mjy"], images["flags"]),
                       "best aperture: flux vs plane in the cube")
