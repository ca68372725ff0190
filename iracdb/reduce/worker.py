"""The reduction worker: FITS files in, columns of numbers out (no database; guarded by the lint rule as
``photometry/`` is).

:func:`measure_chunk` is the whole job of a worker process, local or on a Dask cluster. Times of images are the
middle of the image: ``MJD_OBS + (plane + 0.5) * FRAMTIME / 86400`` (``plane = 0`` for a full-array frame; a subarray
plane's offset within its cube), the same for ``BMJD_OBS``; a cube's median image gets the middle of the cube.
``bmjd_tdb`` is that barycentric time on the TDB scale (:func:`iracdb.timescales.utc_mjd_to_tdb_mjd`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from iracdb.columns import IMAGE_COLUMNS
from iracdb.errors import NotIracFile
from iracdb.fitsio.image import ImageFile, image_info, read_image, wcs_keywords
from iracdb.flags import SATURATION_BITS, Flag
from iracdb.photometry.measure import ImageInfo, Photometry, PhotometryParams, measure_apertures
from iracdb.photometry.tansip import TanSip
from iracdb.photometry.targets import brightest_near
from iracdb.reduce.options import Target
from iracdb.timescales import utc_mjd_to_tdb_mjd

#: Search radius of ``--auto`` around the commanded pointing, pixels.
AUTO_SEARCH_RADIUS_PX = 5.0
SECONDS_PER_DAY = 86400.0



@dataclass(frozen=True)
class FileRef:
    """A catalogued file as ingest saw it (a file whose size or mtime changed since is not measured)."""

    path: str
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class ExposureWork:
    """One exposure to measure: its science file, companions and times."""

    exposure_id: int
    expid: int
    dcenum: int
    n_planes: int
    mjd_obs: float
    bmjd_obs: float | None
    frame_time_s: float | None
    science: FileRef
    uncertainty: FileRef | None
    mask: FileRef | None


@dataclass(frozen=True)
class Chunk:
    """Consecutive exposures of one work unit (an AOR's images of one channel), with everything needed to measure
    them: the resolved photometry parameters of each aperture of the grid (``apertures[aperture_id]``) and the
    targets (index, target) that apply."""

    unit_id: int
    index: int  # position of the chunk within its unit
    n_chunks: int
    channel: int
    correction_mission: str  # the coefficient set: the data's mission, or the one forced by --corrections
    apertures: tuple[PhotometryParams, ...]
    subarray_mode: str  # iracdb.choices.SUBARRAY_MODES
    targets: tuple[tuple[int, Target], ...]
    exposures: tuple[ExposureWork, ...]
    keep_first_frame: bool = False  # ReduceOptions.keep_first_frame: plane 0 of a cube is not flagged FIRST_FRAME


#: The stored per-image columns (:data:`iracdb.columns.IMAGE_COLUMNS`).
_STORED_IMAGE_COLUMNS = tuple(c for c in IMAGE_COLUMNS if c.stored)
#: The per-image columns a worker returns (numpy arrays of equal length): the exposure's id (the writer turns it
#: into the science input's) and every stored column but the two the writer sets for the whole unit.
ROW_COLUMNS = ("exposure_id", *(c.name for c in _STORED_IMAGE_COLUMNS if c.name not in ("aorkey", "channel")))
_INT_COLUMNS = frozenset({"exposure_id", *(c.name for c in _STORED_IMAGE_COLUMNS if c.type in ("int", "bigint"))})
#: The columns the photometry core computes (each a field of Photometry, named by the column's ``origin``).
_PHOTOMETRY_COLUMNS = tuple(c for c in IMAGE_COLUMNS if c.source == "photometry")


@dataclass
class ChunkResult:
    """What a worker returns: the chunk's rows as columns, and the files it could not read (path, reason)."""

    unit_id: int
    index: int
    columns: dict[str, np.ndarray]
    unreadable: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Loaded:
    """The readable images of one exposure."""

    work: ExposureWork
    science: ImageFile
    uncertainty: ImageFile | None
    mask: ImageFile | None


def measure_chunk(chunk: Chunk) -> ChunkResult:
    """Measure every image of a chunk for every target: the worker's whole job (reads files, no database).

    Rows come out ordered by exposure, then target, then aperture, then plane. An exposure whose files cannot be
    read (missing, corrupt, changed since ingest) still gets its rows, with NULL values and ``FILE_UNREADABLE``.
    """
    loaded: list[_Loaded] = []
    unreadable: list[tuple[str, str]] = []
    parts: list[dict[str, np.ndarray]] = []
    by_exposure: dict[int, list[dict[str, np.ndarray]]] = {}
    for work in chunk.exposures:
        try:
            loaded.append(_load(work))
        except _Unreadable as exc:
            unreadable.append((exc.path, exc.reason))
            by_exposure[work.exposure_id] = [_unreadable_rows(chunk, work)]
    # Images that share their photometric facts are measured in one call (one stack per group).
    groups: dict[ImageInfo, list[_Loaded]] = {}
    for item in loaded:
        groups.setdefault(_image_info(item.science, chunk), []).append(item)
    for info, items in groups.items():
        for exposure_id, columns in _measure_group(chunk, info, items):
            by_exposure.setdefault(exposure_id, []).append(columns)
    for work in chunk.exposures:
        parts.extend(by_exposure[work.exposure_id])
    columns = {name: np.concatenate([p[name] for p in parts]) for name in ROW_COLUMNS}
    return ChunkResult(chunk.unit_id, chunk.index, columns, unreadable)


class _Unreadable(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _read(ref: FileRef) -> ImageFile:
    try:
        return read_image(ref.path, size_bytes=ref.size_bytes, mtime_ns=ref.mtime_ns)
    except NotIracFile as exc:
        raise _Unreadable(ref.path, str(exc)) from exc


def _load(work: ExposureWork) -> _Loaded:
    science = _read(work.science)
    shape = science.data.shape
    companions = []
    for ref in (work.uncertainty, work.mask):
        image = None if ref is None else _read(ref)
        if image is not None and image.data.shape != shape:
            raise _Unreadable(ref.path, f"shape {image.data.shape} differs from its image's {shape}")  # type: ignore[union-attr]
        companions.append(image)
    if shape[0] != work.n_planes:
        raise _Unreadable(work.science.path, f"{shape[0]} planes, the catalogue says {work.n_planes}")
    return _Loaded(work, science, companions[0], companions[1])


def _image_info(image: ImageFile, chunk: Chunk) -> ImageInfo:
    return image_info(image.cards, channel=chunk.channel, mission=chunk.correction_mission)


def _measure_group(
    chunk: Chunk, info: ImageInfo, items: list[_Loaded]
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Measure the exposures of one group for every target; yield (exposure_id, rows of that exposure+target)."""
    median = chunk.subarray_mode == "median" and info.subarray
    data, unc, mask = _stack(items, median, chunk.apertures[0].mask_bits)
    per_image = np.array([1 if median else item.science.data.shape[0] for item in items])
    starts = np.concatenate([[0], np.cumsum(per_image)])
    n = int(starts[-1])
    exposure_of_image = np.repeat(np.arange(len(items)), per_image)
    plane = np.arange(n) - starts[exposure_of_image]
    n_combined = np.where(median, np.array([item.science.data.shape[0] for item in items]), 1)[exposure_of_image]
    times = _middle_times(
        _per_exposure(items, "mjd_obs")[exposure_of_image], _per_exposure(items, "bmjd_obs")[exposure_of_image],
        _per_exposure(items, "frame_time_s")[exposure_of_image], plane, n_combined, median,
    )
    wcs = _wcs(items)
    for target_index, target in chunk.targets:
        x, y, off_image = _expected(target, wcs, data, exposure_of_image, _per_exposure(items, "mjd_obs"))
        grid = measure_apertures(data, x, y, info, chunk.apertures, uncertainty=unc, mask=mask, off_image=off_image)
        per_aperture = [
            _columns_from(phot, items, exposure_of_image, plane, n_combined, (target_index, aperture_id), times)
            for aperture_id, phot in enumerate(grid)
        ]
        if info.subarray and not median and not chunk.keep_first_frame:
            first = np.where(plane == 0, int(Flag.FIRST_FRAME), 0)
            for columns in per_aperture:
                columns["flags"] = columns["flags"] | first
        # Each exposure's rows, aperture after aperture, taken at once from the apertures' columns end to end.
        joined = {name: np.concatenate([columns[name] for columns in per_aperture]) for name in per_aperture[0]}
        aperture_offsets = np.arange(len(per_aperture))[:, None] * n
        for i, item in enumerate(items):
            rows = (aperture_offsets + np.arange(starts[i], starts[i + 1])[None, :]).ravel()
            yield item.work.exposure_id, {name: values[rows] for name, values in joined.items()}


def _stack(
    items: list[_Loaded], median: bool, mask_bits: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The images of a group as one (n, ny, nx) stack, with uncertainty and mask stacks when every exposure has
    them (a group where only some have a companion measures without it: the error model must be one per call).
    With ``median``, each cube's median image, leaving out the pixels with any of ``mask_bits``."""
    data = [item.science.data for item in items]
    unc = None if any(item.uncertainty is None for item in items) else [item.uncertainty.data for item in items]  # type: ignore[union-attr]
    mask = None if any(item.mask is None for item in items) else [item.mask.data for item in items]  # type: ignore[union-attr]
    if not median:
        return (
            np.concatenate(data),
            None if unc is None else np.concatenate(unc),
            None if mask is None else np.concatenate(mask),
        )
    return _median_images(data, unc, mask, mask_bits)


def _median_images(
    data: list[np.ndarray], unc: list[np.ndarray] | None, mask: list[np.ndarray] | None, mask_bits: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Each cube's median image (bad pixels and those with any of ``mask_bits``, the photometry's
    :attr:`~iracdb.photometry.measure.PhotometryParams.mask_bits`, left out of the median), its uncertainty and a
    mask that keeps only the saturation bits of any plane (the other bad pixels are already left out).

    The uncertainty of a median of n values is taken as sqrt(pi/2) times that of their mean.
    """
    images, sigmas, masks = [], [], []
    for k, cube in enumerate(data):
        values = cube.astype(np.float64)
        if mask is not None:
            values[(mask[k] & mask_bits) != 0] = np.nan
        if unc is not None:
            values[~np.isfinite(unc[k])] = np.nan
        valid = np.isfinite(values)
        count = valid.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            images.append(_nanmedian(values))
            if unc is not None:
                var = np.where(valid, unc[k].astype(np.float64) ** 2, 0.0).sum(axis=0)
                sigmas.append(np.sqrt(np.pi / 2) * np.sqrt(var) / np.where(count > 0, count, np.nan))
        if mask is not None:
            masks.append(np.bitwise_or.reduce(mask[k] & SATURATION_BITS, axis=0))
    return (
        np.stack(images),
        None if unc is None else np.stack(sigmas),
        None if mask is None else np.stack(masks),
    )


def _nanmedian(values: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN; NaN where every value is NaN (without numpy's warning)."""
    out = np.full(values.shape[1:], np.nan)
    some = np.isfinite(values).any(axis=0)
    if some.any():
        out[some] = np.nanmedian(values[:, some], axis=0)
    return out


def _per_exposure(items: list[_Loaded], name: str) -> np.ndarray:
    """An :class:`ExposureWork` value of each exposure as floats (None -> NaN)."""
    return np.array([_float(getattr(item.work, name)) for item in items])


def _middle_times(
    mjd_obs: ArrayLike, bmjd_obs: ArrayLike, frame_time_s: ArrayLike, plane: np.ndarray, n_combined: np.ndarray,
    median: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Middle of each image, MJD (UTC), BMJD (UTC) and BMJD (TDB) (see the module docstring), from its exposure's
    start times [days] and FRAMTIME [s]: a plane's middle, or for a cube's median image the middle of the cube."""
    middle = n_combined / 2.0 if median else plane + 0.5
    offset = middle * np.asarray(frame_time_s, dtype=np.float64) / SECONDS_PER_DAY
    bmjd = np.asarray(bmjd_obs, dtype=np.float64) + offset
    return np.asarray(mjd_obs, dtype=np.float64) + offset, bmjd, utc_mjd_to_tdb_mjd(bmjd)


@dataclass(frozen=True)
class _Wcs:
    tansip: TanSip | None  # None when no exposure of the group has a usable WCS
    valid: np.ndarray  # per exposure
    pointing: tuple[np.ndarray, np.ndarray]  # RA_REF, DEC_REF per exposure (NaN when absent)


def _wcs(items: list[_Loaded]) -> _Wcs:
    solutions, valid = [], []
    for item in items:
        try:
            solutions.append(TanSip.from_keywords(wcs_keywords(item.science.cards)))
            valid.append(True)
        except ValueError:
            valid.append(False)
    # One frame in ``tansip`` per valid exposure, in order: ``world_to_pixel`` fills ``x[valid]``.
    tansip = TanSip.stack(solutions) if solutions else None
    ra = np.array([_float(item.science.cards.get("RA_REF", float)) for item in items])
    dec = np.array([_float(item.science.cards.get("DEC_REF", float)) for item in items])
    return _Wcs(tansip, np.array(valid, dtype=bool), (ra, dec))


def _float(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _world_to_pixel(wcs: _Wcs, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel of (ra, dec) per exposure (NaN where the exposure has no WCS)."""
    x = np.full(len(wcs.valid), np.nan)
    y = np.full(len(wcs.valid), np.nan)
    if wcs.tansip is not None:
        x[wcs.valid], y[wcs.valid] = wcs.tansip.world_to_pixel(ra[wcs.valid], dec[wcs.valid])
    return x, y


def _far_off(wcs: _Wcs, ra: np.ndarray, dec: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per exposure: (ra, dec) is far off the image (``shape`` (n, ny, nx)), as the forward transform tells."""
    off = np.zeros(len(wcs.valid), dtype=bool)
    if wcs.tansip is not None:
        off[wcs.valid] = wcs.tansip.far_off_image(ra[wcs.valid], dec[wcs.valid], nx=shape[2], ny=shape[1])
    return off


def _expected(
    target: Target, wcs: _Wcs, data: np.ndarray, exposure_of_image: np.ndarray, mjd_obs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected pixel position of the target on every image (NaN: COORD_CONVERSION_FAILED), and whether it is far
    off the image (NaN position, NOT_IN_FOV): such a position is not converted, as the SIP inverse need not converge
    there. A target with a proper motion is where it was at each exposure's ``MJD_OBS`` (``mjd_obs``, per exposure;
    :meth:`~iracdb.reduce.options.Target.position_at`)."""
    if not target.auto:
        ra, dec = target.position_at(mjd_obs)
        off = _far_off(wcs, ra, dec, data.shape)
        x, y = _world_to_pixel(wcs, np.where(off, np.nan, ra), np.where(off, np.nan, dec))
        return x[exposure_of_image], y[exposure_of_image], off[exposure_of_image]
    # auto: the brightest source within AUTO_SEARCH_RADIUS_PX of the commanded pointing, image by image.
    px, py = _world_to_pixel(wcs, *wcs.pointing)
    x, y = brightest_near(data, px[exposure_of_image], py[exposure_of_image], AUTO_SEARCH_RADIUS_PX)
    return x, y, np.zeros(len(x), dtype=bool)


def _columns_from(
    phot: Photometry,
    items: list[_Loaded],
    exposure_of_image: np.ndarray,
    plane: np.ndarray,
    n_combined: np.ndarray,
    key: tuple[int, int],
    times: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """The rows of one target (``key``: target index, aperture id) as columns."""
    n = len(phot)
    target_index, aperture_id = key
    ids = np.array([[item.work.exposure_id, item.work.expid, item.work.dcenum] for item in items], dtype=np.int64)
    columns: dict[str, np.ndarray] = {
        "expid": ids[exposure_of_image, 1], "dcenum": ids[exposure_of_image, 2], "plane": plane.astype(np.int64),
        "n_combined": n_combined.astype(np.int64), "target_index": np.full(n, target_index, dtype=np.int64),
        "aperture_id": np.full(n, aperture_id, dtype=np.int64),
        "exposure_id": ids[exposure_of_image, 0], "mjd": times[0], "bmjd": times[1], "bmjd_tdb": times[2],
    }
    for column in _PHOTOMETRY_COLUMNS:
        values = np.asarray(getattr(phot, column.origin))
        # A count (sky_npix) as floats, so that a value not measured can be NaN (NULL) like the others; not flags.
        is_count = column.type == "int" and column.name != "flags"
        columns[column.name] = values.astype(np.float64) if is_count else values
    return columns


def _unreadable_rows(chunk: Chunk, work: ExposureWork) -> dict[str, np.ndarray]:
    """Rows of an exposure whose files could not be read: identity, times, NULL values, FILE_UNREADABLE."""
    median = chunk.subarray_mode == "median" and work.n_planes > 1
    per_target = 1 if median else work.n_planes
    n_apertures = len(chunk.apertures)
    per_block = per_target * n_apertures  # a target's rows: each aperture's planes
    n = per_block * len(chunk.targets)
    plane = np.tile(np.zeros(1, np.int64) if median else np.arange(work.n_planes), len(chunk.targets) * n_apertures)
    n_combined = np.full(n, work.n_planes if median else 1, dtype=np.int64)
    mjd, bmjd, bmjd_tdb = _middle_times(
        work.mjd_obs, _float(work.bmjd_obs), _float(work.frame_time_s), plane, n_combined, median
    )
    columns = {name: np.full(n, np.nan) for name in ROW_COLUMNS}
    columns.update(
        expid=np.full(n, work.expid, np.int64), dcenum=np.full(n, work.dcenum, np.int64), plane=plane,
        n_combined=n_combined, exposure_id=np.full(n, work.exposure_id, np.int64),
        target_index=np.repeat(np.array([i for i, _ in chunk.targets], np.int64), per_block),
        aperture_id=np.tile(np.repeat(np.arange(n_apertures, dtype=np.int64), per_target), len(chunk.targets)),
        mjd=mjd, bmjd=bmjd, bmjd_tdb=bmjd_tdb,
        flags=np.full(n, int(Flag.FILE_UNREADABLE), np.int64),
    )
    return columns


