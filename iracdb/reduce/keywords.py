"""A run's options from keywords: the one translation used by ``iracdb reduce`` (its options) and by
:meth:`iracdb.Archive.reduce` (its keyword arguments), so that both accept the same things and mean the same by them.

Adding an option to ``reduce`` is one keyword of :func:`reduce_settings` (and its field in
:class:`~iracdb.reduce.options.ReduceOptions` or :class:`~iracdb.reduce.options.Execution`), plus its declaration
in ``iracdb.cli.reduction``; the Python API passes its keywords through.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from iracdb.config import default_workers
from iracdb.errors import BadOption
from iracdb.reduce.options import (
    POOL_MIN_IMAGES,
    Execution,
    ReduceOptions,
    Target,
    parse_sky_position,
    read_targets_file,
)


def reduce_settings(
    *,
    target: Any = None,
    targets_file: str | os.PathLike[str] | None = None,
    auto: bool = False,
    aor: int | Iterable[int] | None = None,
    object: str | None = None,
    channel: int | None = None,
    file_type: str = "bcd",
    radius: float | str | Sequence[float | str] = 3.0,
    annulus: Sequence[float] | Sequence[Sequence[float] | str] | None = (3.0, 7.0),
    centroid: str | Sequence[str] = "box",
    background: str = "median",
    corrections: str = "auto",
    aperture_correction: str | float = "auto",
    reject: str = "sigma:3",
    subarray: str = "planes",
    keep_first_frame: bool = False,
    best_by: str = "binned-rms",
    best_bin: int = 64,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    command_line: str | None = None,
) -> tuple[ReduceOptions, Execution]:
    """The options of a run and how to execute it, from the keywords of ``iracdb reduce`` (``--file-type`` is
    ``file_type``, and so on).

    Parameters
    ----------
    target : str, (float, float), SkyCoord, Table, Target, or a list of them, optional
        Where to measure (see :func:`targets_from`): ``"RA DEC"`` in degrees or sexagesimal (RA in hours),
        ``(ra_deg, dec_deg)``, an ICRS-convertible :class:`~astropy.coordinates.SkyCoord` (with a proper motion and
        ``obstime``: measured at its position at each image's time), a table of targets, or ``"auto"``.
    targets_file : path, optional
        A CSV file of targets (columns ``ra``, ``dec``, optionally ``aorkey``, ``object``, ``name``).
    auto : bool
        Also measure the brightest source within 5 px of each image's commanded pointing.
    aor : int or iterable of int, optional
        Only these AORKEYs (default: every catalogued AOR).
    object : str, optional
        Only AORs whose OBJECT contains this text (case and spaces ignored).
    channel : int, optional
        Only this IRAC channel (1-4).
    file_type : {"bcd", "cbcd"}
        Which images to measure.
    radius : float, str or list
        Aperture radius, pixels; several make a grid: a list (``[2, 2.5, 3]`` or ``"2,2.5,3"``), a range
        ``"START:STOP:STEP"`` (stop included when on the grid), or ``"beta:SCALE:OFFSET"`` (r = SCALE x
        sqrt(noise pixels) + OFFSET per image, pixels), also within a list.
    annulus : (float, float) or list of them
        Inner and outer radius of the background annulus, pixels; a list of pairs for several annuli (a grid).
    centroid : str or list of str
        How each image's centroid is found: ``box`` (the IRAC team's box_centroider, which the pixel-phase
        correction was derived with), ``moment``, ``gauss``, or a list of them (a grid).
    background : {"median", "mean"}
    corrections : {"auto", "warm", "cryo", "none"}
        Pixel-phase x array-location correction coefficients.
    aperture_correction : "auto", "none" or float
        ``auto``: the published value for the mission, channel and aperture.
    reject : str
        Per-AOR outlier rule: ``none``, ``minmax`` or ``sigma:N``.
    subarray : {"planes", "median"}
        Every plane of a subarray cube, or one median image per cube.
    keep_first_frame : bool
        Use plane 0 of each subarray cube in summaries (by default it is flagged ``FIRST_FRAME`` and left out).
    best_by : {"binned-rms", "scatter", "error"}
        How each AOR's best aperture is chosen (:data:`iracdb.choices.BEST_CRITERIA`).
    best_bin : int
        Images per bin of the ``binned-rms`` score (64: one subarray cube).
    workers : int, optional
        Local worker processes (default: the CPU cores this process may use, or 1 for a run of fewer than
        :data:`~iracdb.reduce.options.POOL_MIN_IMAGES` images; 1: measure in this process).
    scheduler : str, optional
        A Dask scheduler: ``tcp://HOST:PORT`` or ``local:N``.
    resume : bool
        Finish an interrupted, failed or killed run of the same name and parameters.
    command_line : str, optional
        Recorded with the run (passwords already masked).

    Returns
    -------
    (ReduceOptions, Execution)

    Raises
    ------
    iracdb.errors.BadOption
        A value that cannot be used (the message names the option as ``iracdb reduce`` does).
    """
    targets = targets_from(target)
    if targets_file is not None:
        targets += read_targets_file(targets_file)
    if auto:
        targets.append(Target(name="auto"))
    options = ReduceOptions(
        aorkeys=_aorkeys(aor), object=object, channel=channel, file_type=str(file_type),
        targets=tuple(targets), radius_px=_radii(radius), annulus_in_px=_annuli(annulus)[0],
        annulus_out_px=_annuli(annulus)[1], centroid=_centroids(centroid), background=str(background),
        corrections=str(corrections), aperture_correction=str(aperture_correction), reject=str(reject),
        subarray=str(subarray), keep_first_frame=bool(keep_first_frame),
        best_by=str(best_by), best_bin=int(best_bin) if isinstance(best_bin, np.integer) else best_bin,
    )
    # The default (the cores) measures a small run in this process, where a pool would not pay for its start.
    execution = Execution(workers=default_workers() if workers is None else int(workers), scheduler=scheduler,
                          resume=bool(resume), command_line=command_line,
                          min_images_for_pool=POOL_MIN_IMAGES if workers is None else 0)
    return options, execution


def reduce_keywords() -> tuple[str, ...]:
    """The keywords :func:`reduce_settings` takes that a user gives (all but ``command_line``)."""
    return tuple(name for name in inspect.signature(reduce_settings).parameters if name != "command_line")


def check_keywords(given: Mapping[str, Any]) -> None:
    """Refuse (:class:`~iracdb.errors.BadOption`) a keyword that is not an option of ``reduce``, naming the closest."""
    known = reduce_keywords()
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadOption(f"reduce has no option {name!r}{hint}; its options: {', '.join(known)}")


def targets_from(target: Any) -> list[Target]:
    """Targets from what a user gives (None gives none).

    Accepted: ``"auto"``; a string ``"RA DEC"`` (degrees, or sexagesimal with RA in hours; its name is the text);
    ``(ra_deg, dec_deg)`` (named ``"RA +DEC"`` with 5 decimals); a :class:`~astropy.coordinates.SkyCoord`, scalar
    or array (converted to ICRS; with a proper motion it needs ``obstime``, the epoch of its position, and each
    image is measured at the position moved to that image's time; parallax, distance and radial velocity are
    not used); a :class:`~iracdb.reduce.options.Target`; a table of targets (an astropy
    :class:`~astropy.table.Table` or a list of dicts) with columns ``ra``, ``dec`` [deg] and optionally ``name``,
    ``aorkey``, ``object``, ``pm_ra_cosdec_mas_per_yr``, ``pm_dec_mas_per_yr``, ``epoch_mjd``; or a list of any
    of these.

    Raises
    ------
    iracdb.errors.BadOption
        Something that is not a target.
    """
    if target is None:
        return []
    if isinstance(target, Target):
        return [target]
    if isinstance(target, str):
        name = " ".join(target.replace(",", " ").split())
        if name.lower() == "auto":
            return [Target(name="auto")]
        ra, dec = parse_sky_position(target)
        return [Target(name=name, ra_deg=ra, dec_deg=dec)]
    if _is_skycoord(target):
        return _from_skycoord(target)
    if hasattr(target, "colnames"):  # an astropy Table
        return [_from_row({name: row[name] for name in target.colnames}) for row in target]
    if isinstance(target, Mapping):
        return [_from_row(target)]
    if isinstance(target, Sequence | Iterable):
        items = list(target)
        if len(items) == 2 and all(_is_real(item) for item in items):
            return [_fixed(float(items[0]), float(items[1]))]
        return [t for item in items for t in targets_from(item)]
    raise BadOption(f"not a target: {target!r} (give 'RA DEC', (ra_deg, dec_deg), a SkyCoord, a table or 'auto')")


def _is_real(value: Any) -> bool:
    try:
        return not isinstance(value, str | bytes | bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _fixed(ra_deg: float, dec_deg: float, name: str | None = None, scope: Mapping[str, Any] | None = None) -> Target:
    if not (0 <= ra_deg < 360 and -90 <= dec_deg <= 90):
        raise BadOption(f"a target's RA must be in [0, 360) and Dec in [-90, 90] degrees, not ({ra_deg}, {dec_deg})")
    return Target(name=name or f"{ra_deg:.5f} {dec_deg:+.5f}", ra_deg=ra_deg, dec_deg=dec_deg, **(scope or {}))


def _is_skycoord(value: Any) -> bool:
    return any(cls.__name__ == "SkyCoord" and cls.__module__.startswith("astropy.") for cls in type(value).__mro__)


def _from_skycoord(coord: Any) -> list[Target]:
    from astropy import units as u

    icrs = coord.icrs
    if icrs.isscalar:
        icrs = icrs.reshape((1,))
    moving = "s" in icrs.data.differentials
    if moving and coord.obstime is None:
        raise BadOption("a SkyCoord with a proper motion needs obstime, the epoch of its position "
                        "(e.g. obstime=Time('J2016.0') for Gaia DR3)")
    targets = []
    for index in range(len(icrs)):
        one = icrs[index]
        ra, dec = float(one.ra.deg), float(one.dec.deg)
        motion: dict[str, float] = {}
        if moving:
            epoch = coord.obstime if coord.obstime.isscalar else coord.obstime[index]
            motion = {"pm_ra_cosdec_mas_per_yr": float(one.pm_ra_cosdec.to_value(u.mas / u.yr)),
                      "pm_dec_mas_per_yr": float(one.pm_dec.to_value(u.mas / u.yr)), "epoch_mjd": float(epoch.mjd)}
        targets.append(_fixed(ra, dec, scope=motion))
    return targets


def _from_row(row: Mapping[str, Any]) -> Target:
    values = {str(key).lower(): row[key] for key in row}
    if "ra" not in values or "dec" not in values:
        raise BadOption(f"a table of targets needs 'ra' and 'dec' columns [deg], found {list(values)}")
    scope: dict[str, Any] = {}
    for key, kind in (("aorkey", int), ("object", str), ("pm_ra_cosdec_mas_per_yr", float),
                      ("pm_dec_mas_per_yr", float), ("epoch_mjd", float)):
        value = _present(values.get(key))
        if value is not None:
            scope[key] = kind(value)
    name = _present(values.get("name"))
    return _fixed(_degrees(values["ra"]), _degrees(values["dec"]), None if name is None else str(name), scope)


def _present(value: Any) -> Any:
    """None for a missing value (None, a masked entry, an empty string, NaN)."""
    if value is None or value is np.ma.masked or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _degrees(value: Any) -> float:
    if hasattr(value, "unit") and hasattr(value, "to_value"):  # a Quantity or an Angle
        return float(value.to_value("deg"))
    if isinstance(value, str):
        raise BadOption(f"a table of targets gives ra and dec in degrees, not {value!r}")
    return float(value)


def _aorkeys(aor: int | Iterable[int] | None) -> tuple[int, ...]:
    if aor is None:
        return ()
    if isinstance(aor, int | str):
        aor = [int(aor)]
    try:
        return tuple(int(key) for key in aor)
    except (TypeError, ValueError):
        raise BadOption(f"aor must be an AORKEY or a list of them, not {aor!r}") from None


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadOption(f"--{name} must be a number of pixels, not {value!r}") from None


def _radii(radius: Any) -> float | str | tuple[float | str, ...]:
    """``radius`` as ReduceOptions reads it: a number, a text (list, range, beta), or a tuple of them."""
    if isinstance(radius, str):
        return radius
    if isinstance(radius, Iterable):
        return tuple(item if isinstance(item, str) else _number("radius", item) for item in radius)
    return _number("radius", radius)


def _annuli(annulus: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The inner and outer radii [pixels] of one annulus ``(IN, OUT)`` or of several (a list of pairs, or of
    ``"IN OUT"`` texts as ``--annulus`` gives them); default 3 7."""
    if annulus is None:
        annulus = (3.0, 7.0)
    if isinstance(annulus, str) or (len(annulus) == 2 and not any(isinstance(a, Sequence) for a in annulus)):
        annulus = [annulus]
    pairs = [_annulus(item) for item in annulus]
    if not pairs:
        raise BadOption("--annulus needs two radii in pixels, IN OUT")
    return tuple(a for a, _ in pairs), tuple(b for _, b in pairs)


def _annulus(item: Any) -> tuple[float, float]:
    parts = item.replace(",", " ").split() if isinstance(item, str) else item
    if isinstance(parts, str) or not isinstance(parts, Sequence) or len(parts) != 2:
        raise BadOption(f"--annulus takes two radii in pixels, IN OUT, not {item!r}")
    return _number("annulus", parts[0]), _number("annulus", parts[1])


def _centroids(centroid: Any) -> str:
    if isinstance(centroid, str):
        return centroid
    return ",".join(str(item) for item in centroid)


__all__ = ["check_keywords", "reduce_keywords", "reduce_settings", "targets_from"]
