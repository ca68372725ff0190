"""The options of a run: what it measures (selection, targets) and how (photometry choices), and how it executes.

:class:`ReduceOptions` is a run's identity (hashed: a name reused with other options is refused); :class:`Execution`
is not (any choice gives the same rows)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import numpy as np

from iracdb import summary
from iracdb.choices import CORRECTION_SETS, FILE_TYPES, SUBARRAY_MODES, one_of
from iracdb.errors import BadOption
from iracdb.photometry.background import BackgroundMethod
from iracdb.photometry.centroid import CentroidMethod
from iracdb.photometry.measure import PhotometryParams
from iracdb.photometry.motion import DAYS_PER_JULIAN_YEAR, propagate

FileType = Literal["bcd", "cbcd"]
SubarrayMode = Literal["planes", "median"]



@dataclass(frozen=True)
class Target:
    """Where to measure: fixed ICRS coordinates, or ``auto`` (the brightest source near the commanded pointing).

    Attributes
    ----------
    name : str
        Shown in summaries and exports.
    ra_deg, dec_deg : float or None
        ICRS position, degrees; both None for ``auto``.
    aorkey : int or None
        Only for this AOR (a targets-file row keyed by AORKEY).
    object : str or None
        Only for AORs whose OBJECT contains this text (case and spaces ignored).
    pm_ra_cosdec_mas_per_yr, pm_dec_mas_per_yr : float or None
        Proper motion, mas/yr (RA times cos(dec), and Dec); None: a fixed position. With a proper motion, ``ra_deg``
        and ``dec_deg`` are the position at ``epoch_mjd`` and each image is measured at the position moved to its
        exposure's ``MJD_OBS`` (:meth:`position_at`).
    epoch_mjd : float or None
        The reference epoch of ``ra_deg``/``dec_deg`` when there is a proper motion, MJD (e.g. 57388.5 for
        J2016.0, Gaia DR3's epoch).
    """

    name: str
    ra_deg: float | None = None
    dec_deg: float | None = None
    aorkey: int | None = None
    object: str | None = None
    pm_ra_cosdec_mas_per_yr: float | None = None
    pm_dec_mas_per_yr: float | None = None
    epoch_mjd: float | None = None

    def __post_init__(self) -> None:
        motion = (self.pm_ra_cosdec_mas_per_yr, self.pm_dec_mas_per_yr, self.epoch_mjd)
        if any(value is not None for value in motion) and (
                self.auto or not all(value is not None and math.isfinite(value) for value in motion)):
            raise BadOption(f"target {self.name!r}: a proper motion needs RA and Dec, both components (mas/yr) and "
                            "the reference epoch, all finite")

    @property
    def auto(self) -> bool:
        return self.ra_deg is None

    @property
    def moving(self) -> bool:
        """Whether the target has a proper motion (its position depends on the image's time)."""
        return self.epoch_mjd is not None

    def position_at(self, mjd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ICRS ``(ra_deg, dec_deg)`` at the times ``mjd`` [MJD], degrees: the fixed position, or with a proper
        motion the position propagated from ``epoch_mjd`` (:func:`iracdb.photometry.motion.propagate`: linear
        space motion, no parallax or radial velocity; equal to astropy's ``apply_space_motion`` without them).
        The epoch's time scale (often TT) and the images' (UTC) differ by about a minute: 0.02 mas of motion for
        Barnard's star, the fastest, 1/50,000 of an IRAC pixel."""
        mjd = np.asarray(mjd, dtype=np.float64)
        if self.auto:
            raise ValueError("an auto target has no position")
        if not self.moving:
            return np.full(mjd.shape, self.ra_deg), np.full(mjd.shape, self.dec_deg)
        years = (mjd - self.epoch_mjd) / DAYS_PER_JULIAN_YEAR
        return propagate(self.ra_deg, self.dec_deg, self.pm_ra_cosdec_mas_per_yr,  # type: ignore[arg-type]
                         self.pm_dec_mas_per_yr, years)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The target as recorded with the run (the proper-motion fields only when it has one, so that a fixed
        target's record, and the run's parameter hash, are what they were before proper motions existed)."""
        data = asdict(self)
        if not self.moving:
            for key in ("pm_ra_cosdec_mas_per_yr", "pm_dec_mas_per_yr", "epoch_mjd"):
                del data[key]
        return data

    def applies_to(self, aorkey: int, object_: str | None) -> bool:
        """Whether this target is measured in the AOR ``aorkey`` whose OBJECT is ``object_``."""
        if self.aorkey is not None and self.aorkey != aorkey:
            return False
        return self.object is None or object_matches(object_, self.object)


def object_matches(object_: str | None, wanted: str) -> bool:
    """OBJECT ``object_`` contains ``wanted``, ignoring case and spaces (``HD165459`` matches ``HD 165459 ch1``)."""
    return object_ is not None and _squash(wanted) in _squash(object_)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def parse_sky_position(text: str) -> tuple[float, float]:
    """ICRS ``(ra_deg, dec_deg)`` from ``"RA DEC"``: degrees (``"65.4695 57.8172"``) or sexagesimal
    (``"04:21:52.7 +57:49:01.9"``, ``"4h21m52.7s +57d49m01.9s"``; hours for RA).

    Raises
    ------
    iracdb.errors.BadOption
        Not two coordinates, or out of range.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    parts = text.replace(",", " ").split()
    if len(parts) != 2:
        raise BadOption(f"a sky position is 'RA DEC' (degrees or sexagesimal), not {text!r}")
    try:
        if all(_is_number(p) for p in parts):
            ra, dec = float(parts[0]), float(parts[1])
            if not (0 <= ra < 360 and -90 <= dec <= 90):
                raise ValueError("RA must be in [0, 360) and Dec in [-90, 90] degrees")
            return ra, dec
        coord = SkyCoord(parts[0], parts[1], unit=(u.hourangle, u.deg), frame="icrs")
    except ValueError as exc:
        raise BadOption(f"cannot read the sky position {text!r}: {exc}") from exc
    return float(coord.ra.deg), float(coord.dec.deg)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def read_targets_file(path: str | os.PathLike[str]) -> list[Target]:
    """Targets from a CSV file with a header row: ``ra``, ``dec`` (degrees or sexagesimal) and, optionally,
    ``aorkey`` or ``object`` (the row applies to that AOR, or to AORs whose OBJECT contains it) and ``name``.

    Raises
    ------
    iracdb.errors.BadOption
        The file cannot be read, lacks ``ra``/``dec``, or a row is invalid (the message gives the line).
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            if "ra" not in columns or "dec" not in columns:
                raise BadOption(f"{path}: a targets file needs 'ra' and 'dec' columns, found {list(columns)}")
            targets = []
            for line, row in enumerate(reader, start=2):
                value = {key: (row.get(original) or "").strip() for key, original in columns.items()}
                try:
                    ra, dec = parse_sky_position(f"{value['ra']} {value['dec']}")
                    aorkey = int(value["aorkey"]) if value.get("aorkey") else None
                except (BadOption, ValueError) as exc:
                    raise BadOption(f"{path}, line {line}: {exc}") from exc
                obj = value.get("object") or None
                name = value.get("name") or obj or (f"AOR {aorkey}" if aorkey else f"{ra:.5f} {dec:+.5f}")
                targets.append(Target(name=name, ra_deg=ra, dec_deg=dec, aorkey=aorkey, object=obj))
    except OSError as exc:
        raise BadOption(f"cannot read the targets file {path}: {exc.strerror or exc}") from exc
    if not targets:
        raise BadOption(f"{path}: the targets file has no rows")
    return targets


@dataclass(frozen=True)
class ReduceOptions:
    """Everything that defines a run's numbers (hashed; a name reused with other options is refused).

    Attributes
    ----------
    aorkeys : tuple of int
        Only these AORs (empty: every catalogued AOR).
    object : str or None
        Only AORs whose OBJECT contains this text (case and spaces ignored).
    channel : int or None
        Only this IRAC channel.
    file_type : {"bcd", "cbcd"}
        Which images to measure (with their ``_bunc``/``_cbunc`` and ``_bimsk`` companions).
    targets : tuple of Target
        Where to measure; several allowed (each gets its own rows). ``auto`` targets have no coordinates.
    radius_px, annulus_in_px, annulus_out_px : float
        Aperture radius and background annulus, pixels.
    centroid : {"box", "moment", "gauss"}
        Centroid method (:data:`iracdb.choices.CENTROID_METHODS`); default ``box``, the convention the pixel-phase
        correction was derived with.
    background : {"median", "mean"}
    corrections : {"auto", "warm", "cryo", "none"}
        Pixel-phase x array-location correction: the coefficients of each AOR's mission (``auto``), always the
        warm or cryo set, or none. Subarray offsets are applied automatically.
    aperture_correction : str
        ``auto`` (the published value for the mission, channel and aperture, or none recorded as such when there
        is none), ``none``, or a number.
    reject : str
        Per-AOR outlier rule: ``none``, ``minmax`` or ``sigma:N``.
    subarray : {"planes", "median"}
        Measure every plane of a subarray cube, or the cube's median image.
    max_shift_px : float
        A centroid further than this from the expected position is not used (flagged).
    keep_first_frame : bool
        Let plane 0 of each subarray cube (which reads low, a known IRAC effect) into the summaries. By default it
        is flagged ``FIRST_FRAME`` and kept out of them (:data:`iracdb.flags.SUMMARY_EXCLUDED`).
    """

    aorkeys: tuple[int, ...] = ()
    object: str | None = None
    channel: int | None = None
    file_type: str = "bcd"
    targets: tuple[Target, ...] = ()
    radius_px: float = 3.0
    annulus_in_px: float = 3.0
    annulus_out_px: float = 7.0
    centroid: str = "box"
    background: str = "median"
    corrections: str = "auto"
    aperture_correction: str = "auto"
    reject: str = "sigma:3"
    subarray: str = "planes"
    max_shift_px: float = 2.0
    keep_first_frame: bool = False

    def __post_init__(self) -> None:
        if not self.targets:
            raise BadOption("say where to measure: --target 'RA DEC', --targets-file FILE or --auto")
        if self.file_type not in FILE_TYPES:
            raise BadOption(f"--file-type must be {one_of(FILE_TYPES)}, not {self.file_type!r}")
        if self.channel is not None and self.channel not in (1, 2, 3, 4):
            raise BadOption(f"--channel must be 1, 2, 3 or 4, not {self.channel}")
        if self.corrections not in CORRECTION_SETS:
            raise BadOption(f"--corrections must be {one_of(CORRECTION_SETS)}, not {self.corrections!r}")
        if self.subarray not in SUBARRAY_MODES:
            raise BadOption(f"--subarray must be {one_of(SUBARRAY_MODES)}, not {self.subarray!r}")
        # NaN fails every comparison; infinity is refused explicitly (before anything touches the database).
        if not 0 < self.radius_px < math.inf:
            raise BadOption(f"the aperture radius (--radius) must be positive and finite, not {self.radius_px} px")
        if not 0 <= self.annulus_in_px < self.annulus_out_px < math.inf:
            raise BadOption(
                "the background annulus (--annulus IN OUT) needs 0 <= inner < outer radius, both finite, not "
                f"{self.annulus_in_px} {self.annulus_out_px} px"
            )
        summary.RejectRule.parse(self.reject)
        self.aperture_choice()
        self.photometry_params(1.0)  # validates methods, shift (and the radii again)

    def aperture_choice(self) -> float | Literal["auto", "none"]:
        """``auto``, ``none`` or the given number (validated)."""
        text = str(self.aperture_correction).strip().lower()
        if text in ("auto", "none"):
            return text  # type: ignore[return-value]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise BadOption(f"--aperture-correction must be auto, none or a positive number, not {text!r}")
        return value

    def photometry_params(self, aperture_correction: float | None) -> PhotometryParams:
        """The photometry core's parameters, with the aperture correction resolved for one mission and channel."""
        return PhotometryParams(
            radius_px=self.radius_px, annulus_in_px=self.annulus_in_px, annulus_out_px=self.annulus_out_px,
            # checked against iracdb.choices when the options were made
            centroid=cast(CentroidMethod, self.centroid), background=cast(BackgroundMethod, self.background),
            max_shift_px=self.max_shift_px,
            corrections="none" if self.corrections == "none" else "numpy",
            aperture_correction="none" if aperture_correction is None else aperture_correction,
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what the parameter hash is computed from."""
        data = asdict(self)
        data["targets"] = [t.to_dict() for t in self.targets]
        data["aorkeys"] = sorted(self.aorkeys)
        data["reject"] = str(summary.RejectRule.parse(self.reject))
        data["aperture_correction"] = str(self.aperture_choice())
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ReduceOptions:
        data = json.loads(text)
        data["targets"] = tuple(Target(**t) for t in data["targets"])
        data["aorkeys"] = tuple(data["aorkeys"])
        return cls(**data)

    def params_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


@dataclass(frozen=True)
class Execution:
    """How a run is executed (not part of its identity: any choice gives the same rows).

    Attributes
    ----------
    workers : int
        Local worker processes (1: measure in this process).
    scheduler : str or None
        A Dask distributed scheduler: ``tcp://HOST:PORT``, or ``local:N`` for a local cluster of N processes.
    resume : bool
        Finish an interrupted, failed or killed run of the same name and parameters.
    command_line : str or None
        Recorded with the run (passwords in URLs masked).
    """

    workers: int = 1
    scheduler: str | None = None
    resume: bool = False
    command_line: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise BadOption(f"--workers must be at least 1, not {self.workers}")
        if self.scheduler is not None and not re.fullmatch(r"local:\d+|(tcp|tls|inproc|ucx)://\S+", self.scheduler):
            raise BadOption(f"--scheduler must be tcp://HOST:PORT or local:N, not {self.scheduler!r}")

    def describe(self) -> str:
        if self.scheduler is not None:
            return f"dask:{self.scheduler}"
        return "serial" if self.workers == 1 else f"processes:{self.workers}"


