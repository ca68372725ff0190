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
from iracdb.choices import BEST_CRITERIA, CENTROID_METHODS, CORRECTION_SETS, FILE_TYPES, SUBARRAY_MODES, one_of
from iracdb.errors import BadOption
from iracdb.photometry.background import BackgroundMethod
from iracdb.photometry.centroid import CentroidMethod
from iracdb.photometry.measure import PhotometryParams, beta_max_radius
from iracdb.photometry.motion import DAYS_PER_JULIAN_YEAR, propagate

FileType = Literal["bcd", "cbcd"]
SubarrayMode = Literal["planes", "median"]


#: At most this many apertures in one run (radii x annuli x centroid methods).
MAX_APERTURES = 1000
_BETA = re.compile(r"beta:([^:]+):([^:]+)")


def _float_of(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadOption(f"{what}: {text.strip()!r} is not a finite number")
    return value


def _number(value: float | str) -> float:
    """A radius as a float (``inf`` and ``nan`` too: the caller says why they are refused)."""
    try:
        return float(value)
    except ValueError:
        raise BadOption(f"the aperture radius (--radius) must be a number of pixels, a list, a range "
                        f"START:STOP:STEP or beta:SCALE:OFFSET, not {str(value).strip()!r}") from None


def _radius_range(text: str) -> list[float]:
    """``START:STOP:STEP``: START, START + STEP, ... up to STOP, included when on the grid (to 1e-9 of a step)."""
    start, stop, step = (_float_of(p, f"--radius range {text!r}") for p in text.split(":"))
    if not (step > 0 and stop >= start):
        raise BadOption(f"--radius range {text!r}: START:STOP:STEP needs STEP > 0 and STOP >= START")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_APERTURES:
        raise BadOption(f"--radius range {text!r} has {count} radii; at most {MAX_APERTURES}")
    return [round(start + i * step, 10) for i in range(count)]


def _beta_spec(text: str) -> str:
    """``beta:SCALE:OFFSET`` in canonical form (r = SCALE * sqrt(noise pixels) + OFFSET, pixels)."""
    match = _BETA.fullmatch(text)
    if match is None:
        raise BadOption(f"a variable radius is beta:SCALE:OFFSET (e.g. beta:1:0.5), not {text!r}")
    scale = _float_of(match[1], f"--radius {text!r}")
    offset = _float_of(match[2], f"--radius {text!r}")
    if scale <= 0:
        raise BadOption(f"--radius {text!r}: the scale of a variable radius must be positive")
    return f"beta:{scale:g}:{offset:g}"


def parse_radii(value: float | str | tuple[float | str, ...] | list[float | str]) -> tuple[float | str, ...]:
    """The aperture radii of a run from ``--radius``: a number (``3``), a list (``2,2.5,3``), a range
    ``START:STOP:STEP`` (``2:4:0.5`` is 2, 2.5, 3, 3.5, 4), variable radii ``beta:SCALE:OFFSET``, or a list mixing
    them. Fixed radii (pixels, floats) come sorted first, then the variable ones (canonical text), without repeats.

    Raises
    ------
    iracdb.errors.BadOption
        Anything else, a radius that is not positive and finite, or more than :data:`MAX_APERTURES` radii.
    """
    items = value if isinstance(value, (tuple, list)) else [value]
    fixed: set[float] = set()
    variable: set[str] = set()
    for item in items:
        for part in (str(item).split(",") if isinstance(item, str) else [item]):
            text = str(part).strip().lower()
            if text.startswith("beta"):
                variable.add(_beta_spec(text))
            elif isinstance(part, str) and text.count(":") == 2:
                fixed.update(_radius_range(text))
            else:
                fixed.add(_number(part))
    if not fixed and not variable:
        raise BadOption("--radius needs at least one radius")
    for radius in fixed:
        if not 0 < radius < math.inf:
            raise BadOption(f"the aperture radius (--radius) must be positive and finite, not {radius} px")
    return (*sorted(fixed), *sorted(variable, key=_beta_numbers))


def _beta_numbers(spec: str) -> tuple[float, float]:
    _, scale, offset = spec.split(":")
    return float(scale), float(offset)


def parse_annuli(inner: float | tuple[float, ...], outer: float | tuple[float, ...]) -> tuple[tuple[float, float], ...]:
    """The background annuli ``(inner, outer)`` [pixels] of a run, paired, sorted, without repeats.

    Raises
    ------
    iracdb.errors.BadOption
        Not ``0 <= inner < outer``, both finite, or the inner and outer lists differ in length.
    """
    ins = inner if isinstance(inner, (tuple, list)) else (inner,)
    outs = outer if isinstance(outer, (tuple, list)) else (outer,)
    if len(ins) != len(outs) or not ins:
        raise BadOption("each background annulus (--annulus IN OUT) needs an inner and an outer radius")
    annuli = sorted({(float(a), float(b)) for a, b in zip(ins, outs, strict=True)})
    for r_in, r_out in annuli:
        if not 0 <= r_in < r_out < math.inf:
            raise BadOption(
                "the background annulus (--annulus IN OUT) needs 0 <= inner < outer radius, both finite, not "
                f"{r_in} {r_out} px"
            )
    return tuple(annuli)


def parse_centroids(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The centroid methods of a run from ``--centroid`` (``moment`` or a list ``moment,gauss``), in the order of
    :data:`iracdb.choices.CENTROID_METHODS`, without repeats."""
    items = text if isinstance(text, (tuple, list)) else [text]
    wanted = {p.strip().lower() for item in items for p in str(item).split(",") if p.strip()}
    unknown = sorted(wanted - set(CENTROID_METHODS))
    if unknown or not wanted:
        raise BadOption(f"--centroid must be {one_of(CENTROID_METHODS)} or a list of them, not {text!r}")
    return tuple(m for m in CENTROID_METHODS if m in wanted)


@dataclass(frozen=True)
class Aperture:
    """One aperture of a run's grid: a radius, a background annulus and a centroid method.

    Attributes
    ----------
    aperture_id : int
        0, 1, ... in the grid's order (centroid method, then annulus, then radius).
    radius : float or str
        Fixed radius, pixels, or a variable one, ``beta:SCALE:OFFSET`` (r = SCALE x sqrt(noise pixels) + OFFSET
        per image, pixels).
    annulus_in_px, annulus_out_px : float
        Background annulus radii, pixels.
    centroid : str
        Centroid method (:data:`iracdb.choices.CENTROID_METHODS`).
    """

    aperture_id: int
    radius: float | str
    annulus_in_px: float
    annulus_out_px: float
    centroid: str

    @property
    def radius_px(self) -> float | None:
        """The fixed radius, pixels (None for a variable one)."""
        return None if isinstance(self.radius, str) else float(self.radius)

    @property
    def beta(self) -> tuple[float, float] | None:
        """``(SCALE, OFFSET)`` of a variable radius (None for a fixed one)."""
        return _beta_numbers(self.radius) if isinstance(self.radius, str) else None

    @property
    def radius_spec(self) -> str:
        """The radius as text: ``3`` or ``beta:1:0.5``."""
        return self.radius if isinstance(self.radius, str) else f"{self.radius:g}"


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
    radius_px : float, str or tuple
        Aperture radius, pixels; or several (a grid): anything :func:`parse_radii` reads (``"2:4:0.5"``,
        ``"2,3,beta:1:0.5"``, a tuple). Kept as a float when there is one fixed radius, else as the canonical tuple.
    annulus_in_px, annulus_out_px : float or tuple of float
        Background annulus radii, pixels; tuples of the same length for several annuli (paired).
    centroid : str
        A centroid method of :data:`iracdb.choices.CENTROID_METHODS` or a comma-separated list of them; default
        ``box``, the convention the pixel-phase correction was derived with.
    background : {"median", "mean"}
    corrections : {"auto", "warm", "cryo", "none"}
        Pixel-phase x array-location correction: the coefficients of each AOR's mission (``auto``), always the
        warm or cryo set, or none. Subarray offsets are applied automatically.
    aperture_correction : str
        ``auto`` (the published value for the mission, channel and aperture, or none recorded as such when there
        is none), ``none``, a number, or ``growth`` (full-array data only: each aperture corrected to the IRAC
        calibration aperture, 10 px radius and 12-20 px annulus, by the median ratio of the two fluxes over the
        used images of the AOR and target: its own curve of growth; see ``iracdb.reduce.store``).
    reject : str
        Per-AOR outlier rule: ``none``, ``minmax`` or ``sigma:N``.
    subarray : {"planes", "median"}
        Measure every plane of a subarray cube, or the cube's median image.
    max_shift_px : float
        A centroid further than this from the expected position is not used (flagged).
    keep_first_frame : bool
        Let plane 0 of each subarray cube (which reads low, a known IRAC effect) into the summaries. By default it
        is flagged ``FIRST_FRAME`` and kept out of them (:data:`iracdb.flags.SUMMARY_EXCLUDED`).
    best_by : str
        How the best aperture of each AOR, channel and target is chosen (:data:`iracdb.choices.BEST_CRITERIA`).
    best_bin : int
        Images per bin of the ``binned-rms`` score (64: one subarray cube).

    The grid of apertures is the product of the radii, annuli and centroid methods (:meth:`apertures`). A run with
    one aperture and the default best-aperture choice has the JSON (and hash) it had before grids existed.
    """

    aorkeys: tuple[int, ...] = ()
    object: str | None = None
    channel: int | None = None
    file_type: str = "bcd"
    targets: tuple[Target, ...] = ()
    radius_px: float | str | tuple[float | str, ...] = 3.0
    annulus_in_px: float | tuple[float, ...] = 3.0
    annulus_out_px: float | tuple[float, ...] = 7.0
    centroid: str = "box"
    background: str = "median"
    corrections: str = "auto"
    aperture_correction: str = "auto"
    reject: str = "sigma:3"
    subarray: str = "planes"
    max_shift_px: float = 2.0
    keep_first_frame: bool = False
    best_by: str = "binned-rms"
    best_bin: int = 64

    def __post_init__(self) -> None:
        self._canonical_grid()
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
        if self.best_by not in BEST_CRITERIA:
            raise BadOption(f"--best-by must be {one_of(BEST_CRITERIA)}, not {self.best_by!r}")
        if isinstance(self.best_bin, bool) or not isinstance(self.best_bin, int) or self.best_bin < 1:
            raise BadOption(f"--bin must be a positive whole number of images, not {self.best_bin!r}")
        summary.RejectRule.parse(self.reject)
        self.aperture_choice()
        for aperture in self.apertures():
            self.photometry_params(1.0, aperture)  # validates methods, shift (and the radii again)

    def _canonical_grid(self) -> None:
        """Radii, annuli and centroid methods in canonical form (one value: a plain number or name, as before
        grids existed; several: sorted tuples), so that the same grid always has the same JSON and hash."""
        radii = parse_radii(self.radius_px)
        annuli = parse_annuli(self.annulus_in_px, self.annulus_out_px)
        centroids = parse_centroids(self.centroid)
        count = len(radii) * len(annuli) * len(centroids)
        if count > MAX_APERTURES:
            raise BadOption(f"the grid has {count} apertures (radii x annuli x centroid methods); at most "
                            f"{MAX_APERTURES}")
        one_radius = len(radii) == 1 and not isinstance(radii[0], str)
        object.__setattr__(self, "radius_px", radii[0] if one_radius else radii)
        ins, outs = tuple(a for a, _ in annuli), tuple(b for _, b in annuli)
        object.__setattr__(self, "annulus_in_px", ins[0] if len(annuli) == 1 else ins)
        object.__setattr__(self, "annulus_out_px", outs[0] if len(annuli) == 1 else outs)
        object.__setattr__(self, "centroid", ",".join(centroids))

    def apertures(self) -> tuple[Aperture, ...]:
        """The run's grid: every (centroid method, annulus, radius) combination, numbered 0, 1, ... in that
        order (so radii vary fastest; one aperture: ``aperture_id`` 0)."""
        radii = parse_radii(self.radius_px)
        annuli = parse_annuli(self.annulus_in_px, self.annulus_out_px)
        combos = [(c, a, r) for c in parse_centroids(self.centroid) for a in annuli for r in radii]
        return tuple(Aperture(i, r, a[0], a[1], c) for i, (c, a, r) in enumerate(combos))

    def aperture_choice(self) -> float | Literal["auto", "none", "growth"]:
        """``auto``, ``none``, ``growth`` or the given number (validated)."""
        text = str(self.aperture_correction).strip().lower()
        if text in ("auto", "none", "growth"):
            return text  # type: ignore[return-value]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise BadOption(f"--aperture-correction must be auto, none, growth or a positive number, not {text!r}")
        return value

    def photometry_params(self, aperture_correction: float | None, aperture: Aperture | None = None
                          ) -> PhotometryParams:
        """The photometry core's parameters of one aperture of the grid (default: the first), with the aperture
        correction resolved for one mission and channel."""
        aperture = aperture or self.apertures()[0]
        beta = aperture.beta
        return PhotometryParams(
            radius_px=beta_max_radius(*beta) if beta else float(aperture.radius), radius_beta=beta,
            annulus_in_px=aperture.annulus_in_px, annulus_out_px=aperture.annulus_out_px,
            # checked against iracdb.choices when the options were made
            centroid=cast(CentroidMethod, aperture.centroid), background=cast(BackgroundMethod, self.background),
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
        for key in ("radius_px", "annulus_in_px", "annulus_out_px"):
            if isinstance(data[key], tuple):
                data[key] = list(data[key])
        for key, default in (("best_by", "binned-rms"), ("best_bin", 64)):
            if data[key] == default:  # runs made before the best-aperture choice existed keep their hash
                del data[key]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ReduceOptions:
        data = json.loads(text)
        data["targets"] = tuple(Target(**t) for t in data["targets"])
        data["aorkeys"] = tuple(data["aorkeys"])
        for key in ("radius_px", "annulus_in_px", "annulus_out_px"):
            if isinstance(data[key], list):
                data[key] = tuple(data[key])
        return cls(**data)

    def params_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


#: Below this much work (subarray planes, a full-array frame counted as :data:`FULL_FRAME_PLANES`), the default
#: ``--workers`` measures in the driver's process (see ``Execution.min_images_for_pool``): a local pool's start (a
#: fork server that imports the worker's modules, forked workers, chunks and results through pipes) and the driver's
#: share of two cores then cost more than the second worker saves. Measured on the 2-core development machine
#: (`iracdb reduce`, SQLite, serial against ``-j 2``, each twice): 10,240 planes 3.8-4.5 s against 4.0-4.2 s (even),
#: 20,480 planes 5.8-6.2 s against 5.1 s; 1,000 full-array frames (`bench_reduce.py --mode full --aors 40`) 2.19 s
#: against 1.69 s.
POOL_MIN_IMAGES = 12_000
#: What a full-array frame costs to measure, in subarray planes: 457 frames/s against ~9,600 planes/s serially on
#: the development machine (`bench_reduce.py`, SQLite), so about 20.
FULL_FRAME_PLANES = 20


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
    min_images_for_pool : int
        With ``workers`` > 1 (no scheduler), measure in this process when the run has less work left than this
        (planes of subarray cubes counted one by one, a full-array frame as :data:`FULL_FRAME_PLANES`): starting a
        pool would take longer than it saves. 0 (the
        default): always start the pool. The command line's default ``--workers`` uses
        :data:`POOL_MIN_IMAGES`. The run records what was used.
    """

    workers: int = 1
    scheduler: str | None = None
    resume: bool = False
    command_line: str | None = None
    min_images_for_pool: int = 0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise BadOption(f"--workers must be at least 1, not {self.workers}")
        if self.scheduler is not None and not re.fullmatch(r"local:\d+|(tcp|tls|inproc|ucx)://\S+", self.scheduler):
            raise BadOption(f"--scheduler must be tcp://HOST:PORT or local:N, not {self.scheduler!r}")

    def describe(self) -> str:
        if self.scheduler is not None:
            return f"dask:{self.scheduler}"
        return "serial" if self.workers == 1 else f"processes:{self.workers}"


