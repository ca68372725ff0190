"""The full measurement of a stack of images: target position -> centroid -> background -> aperture -> flux.

:func:`measure` takes a ``(n, ny, nx)`` stack (a subarray cube, or one full-array frame as ``n = 1``) and returns
one result per plane, vectorised over the planes. Failed planes are kept, with NaN values and flag bits.

Every pixel the measurement reads is cut once per plane, in one window around the expected position (see
:mod:`iracdb.photometry.shared`); the steps then index into it. The numbers are those of the step functions of the
submodules (``annulus_background``, ``moment_centroid``, ``aperture_sum``) called on the whole stack, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from iracdb.choices import BACKGROUND_METHODS, CENTROID_METHODS, one_of
from iracdb.errors import BadOption
from iracdb.flags import PROCBITS, SATURATION_BITS, Flag
from iracdb.photometry import apcorr, units
from iracdb.photometry.aperture import ApertureSum, Stack, Windows, aperture_in_windows
from iracdb.photometry.background import Background, BackgroundMethod, background_of
from iracdb.photometry.box import HALF_BOX_PX, box_centroid
from iracdb.photometry.centroid import Centroid, CentroidMethod, gauss_centroid, moment_in_windows
from iracdb.photometry.corrections import (
    SUBARRAY_OFFSET,
    CorrectionMaps,
    correction_factor,
    irac_aphot_corr_idl,
    is_correctable,
    load_idl,
    map_correction_factor,
)
from iracdb.photometry.shared import (
    Geometry,
    Nearest,
    SharedWindows,
    annulus_in_windows,
    cut_windows,
    rebased,
    whole_cleaned,
    window_geometry,
)

#: Flag bits as plain ints (numpy arithmetic with the enum members is slow).
_BIT = {name: int(member) for name, member in Flag.__members__.items()}

CorrectionChoice = Literal["numpy", "idl", "maps", "reach", "hora", "none"]

#: :func:`measure` cuts at most this many shared-window pixels at once (a few tens of MB of working arrays): 2048
#: subarray planes at the default radii in one batch, fewer planes per batch when the aperture is larger.
MAX_WINDOW_PIXELS = 1 << 21


def beta_max_radius(scale: float, offset: float) -> float:
    """The largest radius [pixels] a variable aperture ``SCALE * sqrt(beta) + OFFSET`` can take: noise pixels
    ``beta = (sum I)^2 / sum I^2`` over the N pixels of the box centroider's box (:mod:`iracdb.photometry.box`,
    N = 7 x 7) are at most N (Cauchy-Schwarz)."""
    return scale * (2 * HALF_BOX_PX + 1) + offset


@dataclass(frozen=True)
class PhotometryParams:
    """The choices of a photometry run (everything except the images and their header facts).

    Attributes
    ----------
    radius_px : float
        Aperture radius, pixels. Default 3 (the aperture of the IRAC pixel-phase correction). For a variable
        aperture (``radius_beta``), the largest radius it may take (:func:`beta_max_radius`).
    radius_beta : tuple of float, optional
        ``(SCALE, OFFSET)``: a variable aperture, ``r = SCALE * sqrt(noise_pixels) + OFFSET`` pixels per image
        (the image's ``noise_pixels``, :func:`iracdb.photometry.box.box_centroid`).
    annulus_in_px, annulus_out_px : float
        Background annulus radii, pixels (pixel centres with ``in <= d < out``). Default 3-7.
    centroid : {"box", "moment", "gauss"}
        Centroid method: ``"box"`` (default), the IRAC team's box centroider that the pixel-phase correction was
        derived with (:mod:`iracdb.photometry.box`); ``"moment"`` or ``"gauss"`` (:mod:`iracdb.photometry.centroid`).
    centroid_radius_px : float
        Radius of the first-moment window, pixels.
    gauss_box_px : int
        Half-width of the Gaussian fitting box, pixels.
    background : {"median", "mean"}
        Sigma-clipped median (default) or plain mean of the annulus.
    clip_sigma : float
        Clipping threshold of the median background, standard deviations.
    max_shift_px : float
        A centroid further than this from the expected position is flagged ``CENTROID_SHIFTED`` and not used:
        the aperture is then placed at the expected position.
    mask_bits : int
        Bits of the mask companion (``_bimsk``) that exclude a pixel. Default PROCBITS (32256).
    corrections : {"numpy", "idl", "maps", "reach", "hora", "none"}
        Pixel-phase x array-location correction: the numpy port of ``irac_aphot_corr.pro`` (default), the user's IDL
        copy (needs ``iracdb[idl]``), the per-pixel cryo maps (pass them to :func:`measure`), the Reach et al. or
        Hora et al. cryo variants, or none.
    pp_only, al_only : bool
        Apply only the pixel-phase or only the array-location part (``numpy``, ``idl``, ``reach``, ``hora``).
    aperture_correction : float or {"table", "none"}
        Multiplicative aperture correction: an explicit value, the published table's value (default; an error
        when there is none for this mission, channel, radius and annulus), or none (flagged).
    pixel_area : {"nominal", "header"}
        Pixel solid angle for MJy/sr -> mJy: the channel's nominal one (default) or ``PXSCAL1 * PXSCAL2``.
    min_background_fraction : float
        Fewer usable annulus pixels than this fraction of the full annulus' area sets ``FEW_BACKGROUND_PIXELS``.
    """

    radius_px: float = 3.0
    radius_beta: tuple[float, float] | None = None
    annulus_in_px: float = 3.0
    annulus_out_px: float = 7.0
    centroid: CentroidMethod = "box"
    centroid_radius_px: float = 3.0
    gauss_box_px: int = 4
    background: BackgroundMethod = "median"
    clip_sigma: float = 3.0
    max_shift_px: float = 2.0
    mask_bits: int = PROCBITS
    corrections: CorrectionChoice = "numpy"
    pp_only: bool = False
    al_only: bool = False
    aperture_correction: float | Literal["table", "none"] = "table"
    pixel_area: Literal["nominal", "header"] = "nominal"
    min_background_fraction: float = 0.5

    def __post_init__(self) -> None:
        # In this order: the first problem found is the one reported.
        self._check_windows()
        self._check_methods()
        self._check_shift_and_aperture_correction()

    def _check_windows(self) -> None:
        # Comparisons are False for NaN; infinity is refused explicitly (a window cannot be infinite).
        if not 0 < self.radius_px < math.inf:
            raise BadOption(f"the aperture radius must be positive and finite, not {self.radius_px} px")
        if not 0 <= self.annulus_in_px < self.annulus_out_px < math.inf:
            raise BadOption(
                f"the background annulus needs 0 <= inner < outer radius, both finite, not {self.annulus_in_px}-"
                f"{self.annulus_out_px} px"
            )
        if not 0 < self.centroid_radius_px < math.inf or self.gauss_box_px < 2:
            raise BadOption("the centroid window must be positive and the Gaussian box at least 2 px")

    def _check_methods(self) -> None:
        if self.centroid not in CENTROID_METHODS:
            raise BadOption(f"centroid method must be {one_of(CENTROID_METHODS)}, not {self.centroid!r}")
        if self.background not in BACKGROUND_METHODS:
            raise BadOption(f"background method must be {one_of(BACKGROUND_METHODS)}, not {self.background!r}")
        if self.corrections not in ("numpy", "idl", "maps", "reach", "hora", "none"):
            raise BadOption(
                f"corrections must be one of numpy, idl, maps, reach, hora, none, not {self.corrections!r}"
            )
        if self.pp_only and self.al_only:
            raise BadOption("pp_only and al_only cannot both be set")
        if self.pixel_area not in ("nominal", "header"):
            raise BadOption(f"pixel_area must be 'nominal' or 'header', not {self.pixel_area!r}")

    def _check_shift_and_aperture_correction(self) -> None:
        if not 0 < self.max_shift_px < math.inf:
            raise BadOption(f"the maximum centroid shift must be positive and finite, not {self.max_shift_px} px")
        if isinstance(self.aperture_correction, str):
            if self.aperture_correction not in ("table", "none"):
                raise BadOption(
                    f"aperture correction must be a number, 'table' or 'none', not {self.aperture_correction!r}"
                )
        else:
            apcorr.resolve(self.aperture_correction, "warm", 1, 0, 0, 0)  # validates the number


@dataclass(frozen=True)
class ImageInfo:
    """What the photometry needs to know about the images (from their header: see
    :func:`iracdb.fitsio.image.image_info`).

    Attributes
    ----------
    channel : int
        IRAC channel, 1-4 (``CHNLNUM``).
    mission : {"warm", "cryo"}
        See :func:`iracdb.photometry.units.mission_from_mjd`.
    subarray : bool
        Subarray data (positions are subarray pixels; full-array position = + (8, 216) for ch1/ch2, (8, 8) ch3/ch4).
    gain : float, optional
        ``GAIN``, electrons per DN (for the error model without an uncertainty companion).
    ronoise : float, optional
        ``RONOISE``, read noise in electrons.
    exptime : float, optional
        ``EXPTIME``, effective exposure time of one image or plane, seconds.
    fluxconv : float, optional
        ``FLUXCONV``, (MJy/sr) per (DN/s).
    pxscal1, pxscal2 : float, optional
        ``PXSCAL1``, ``PXSCAL2``, arcsec per pixel (for ``pixel_area="header"``).
    """

    channel: int
    mission: Literal["warm", "cryo"]
    subarray: bool = False
    gain: float | None = None
    ronoise: float | None = None
    exptime: float | None = None
    fluxconv: float | None = None
    pxscal1: float | None = None
    pxscal2: float | None = None

    def __post_init__(self) -> None:
        if self.channel not in (1, 2, 3, 4):
            raise BadOption(f"IRAC channel must be 1, 2, 3 or 4, not {self.channel!r}")
        if self.mission not in ("warm", "cryo"):
            raise BadOption(f"mission must be 'warm' or 'cryo', not {self.mission!r}")

    @property
    def full_array_offset(self) -> tuple[int, int]:
        """(x, y) to add to image pixels to get full-array pixels."""
        return SUBARRAY_OFFSET[self.channel] if self.subarray else (0, 0)


@dataclass(frozen=True)
class Photometry:
    """Results of :func:`measure`: one element per plane in every array.

    Positions are pixels, 0-based, centre of the bottom-left pixel at (0, 0). Sums are in MJy/sr summed over
    the aperture's pixels (MJy/sr x px); fluxes in mJy. NaN marks a value that could not be measured; ``flags``
    says why.

    Attributes
    ----------
    x_expected, y_expected : numpy.ndarray
        Where the target was expected (image pixels).
    x_centroid, y_centroid : numpy.ndarray
        Measured centroid (image pixels); NaN if it failed.
    shift_px : numpy.ndarray
        Distance centroid - expected position, pixels.
    x, y : numpy.ndarray
        Aperture centre actually used (image pixels): the centroid, or the expected position when the centroid
        failed or moved more than ``max_shift_px``.
    x_full, y_full : numpy.ndarray
        ``x``, ``y`` in full-array pixels (equal to them for full-array data).
    fwhm_x_px, fwhm_y_px : numpy.ndarray
        FWHM along x and y, pixels.
    noise_pixels : numpy.ndarray
        Noise pixels ``beta = (sum I)^2 / sum(I^2)`` (pixels) of the box centroider's background-subtracted 7 x 7 box
        about the pixel holding its centroid (:func:`iracdb.photometry.box.box_centroid`), whatever the centroid
        method; NaN where the box centroider failed.
    background_mjy_sr, background_err_mjy_sr : numpy.ndarray
        Background per pixel (surface brightness, MJy/sr) and its 1-sigma uncertainty.
    background_std_mjy_sr : numpy.ndarray
        Standard deviation of the annulus pixels used (MJy/sr).
    background_npix : numpy.ndarray
        Number of annulus pixels used.
    aperture_area_px : numpy.ndarray
        Area of the usable pixels inside the aperture, px² (``pi r²`` unless pixels are masked or off the edge).
    raw_sum_mjy_sr, raw_sum_err_mjy_sr : numpy.ndarray
        Aperture sum (exact pixel overlap) and its uncertainty, MJy/sr x px.
    net_sum_mjy_sr, net_sum_err_mjy_sr : numpy.ndarray
        Background-subtracted sum ``raw - area * background`` and its uncertainty, MJy/sr x px.
    correction_factor : numpy.ndarray
        Pixel-phase x array-location divisor (dimensionless; 1 when none was applied).
    aperture_correction : numpy.ndarray
        Multiplicative aperture correction (dimensionless; 1 when none was applied).
    flux_mjy, flux_err_mjy : numpy.ndarray
        ``net_sum * pixel_sr * 1e9 * aperture_correction / correction_factor`` and its uncertainty, mJy.
    flags : numpy.ndarray
        int64 bitmask of :class:`iracdb.flags.Flag`.
    pixel_sr : float
        Pixel solid angle used, steradians.
    error_model : str
        Per-pixel errors from ``"uncertainty"`` (the companion), ``"gain"`` (Poisson + read noise from GAIN,
        RONOISE, EXPTIME, FLUXCONV) or ``"background"`` (the annulus scatter; background-limited).
    """

    x_expected: NDArray[np.float64]
    y_expected: NDArray[np.float64]
    x_centroid: NDArray[np.float64]
    y_centroid: NDArray[np.float64]
    shift_px: NDArray[np.float64]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    x_full: NDArray[np.float64]
    y_full: NDArray[np.float64]
    fwhm_x_px: NDArray[np.float64]
    fwhm_y_px: NDArray[np.float64]
    noise_pixels: NDArray[np.float64]
    background_mjy_sr: NDArray[np.float64]
    background_err_mjy_sr: NDArray[np.float64]
    background_std_mjy_sr: NDArray[np.float64]
    background_npix: NDArray[np.int64]
    aperture_area_px: NDArray[np.float64]
    raw_sum_mjy_sr: NDArray[np.float64]
    raw_sum_err_mjy_sr: NDArray[np.float64]
    net_sum_mjy_sr: NDArray[np.float64]
    net_sum_err_mjy_sr: NDArray[np.float64]
    correction_factor: NDArray[np.float64]
    aperture_correction: NDArray[np.float64]
    flux_mjy: NDArray[np.float64]
    flux_err_mjy: NDArray[np.float64]
    flags: NDArray[np.int64]
    pixel_sr: float = field(default=np.nan)
    error_model: str = "uncertainty"

    def __len__(self) -> int:
        return len(self.flags)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per plane of the per-plane fields, as Python scalars (NaN stays NaN: map it to NULL)."""
        names = [f.name for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)]
        columns = {name: getattr(self, name).tolist() for name in names}
        return [{name: columns[name][i] for name in names} for i in range(len(self))]

    def as_dict(self) -> dict[str, Any]:
        """All fields, arrays as numpy arrays."""
        return asdict(self)


def _pixel_sr(info: ImageInfo, params: PhotometryParams) -> float:
    if params.pixel_area == "nominal":
        return units.nominal_pixel_sr(info.channel)
    if info.pxscal1 is None or info.pxscal2 is None:
        raise BadOption("pixel_area='header' needs PXSCAL1 and PXSCAL2 in the header; use pixel_area='nominal'")
    return units.header_pixel_sr(info.pxscal1, info.pxscal2)


@lru_cache(maxsize=64)
def _choices(info: ImageInfo, params: PhotometryParams) -> tuple[float | None, float]:
    """Aperture correction and pixel solid angle of a run (depend on the header facts and choices only).

    Raises :class:`~iracdb.errors.BadOption` for impossible choices (exceptions are not cached).
    """
    apc = apcorr.resolve(
        params.aperture_correction, info.mission, info.channel,
        params.radius_px, params.annulus_in_px, params.annulus_out_px,
    )
    return apc, _pixel_sr(info, params)


def _as_stack(a: ArrayLike, name: str, shape: tuple[int, ...] | None = None) -> NDArray:
    arr = np.asarray(a)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise BadOption(f"{name} must be a 2-D image or a 3-D (planes, y, x) stack, not {arr.ndim}-D")
    if shape is not None and arr.shape != shape:
        if arr.shape[1:] == shape[1:] and arr.shape[0] == 1:
            arr = np.broadcast_to(arr, shape)
        else:
            raise BadOption(f"{name} has shape {arr.shape}, the images {shape}")
    return arr


def measure(
    data: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    info: ImageInfo,
    params: PhotometryParams | None = None,
    *,
    uncertainty: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    maps: CorrectionMaps | None = None,
    off_image: ArrayLike | None = None,
) -> Photometry:
    """Aperture photometry of a target on every plane of a stack.

    Parameters
    ----------
    data : array_like
        ``(n, ny, nx)`` images in MJy/sr (a subarray cube), or one ``(ny, nx)`` image. NaN pixels are bad.
    x, y : array_like
        Expected target position per plane (or one for all), image pixels (0-based, centre of the bottom-left pixel
        at (0, 0)); see :mod:`iracdb.photometry.targets`. NaN means the position could not be computed.
    info : ImageInfo
        Channel, mission, subarray, and the header values of the error model and pixel scale.
    params : PhotometryParams, optional
        The run's choices (defaults: 3 px aperture, 3-7 px annulus, moment centroid, clipped median).
    uncertainty : array_like, optional
        Per-pixel 1-sigma uncertainty (``_bunc``/``_cbunc``), MJy/sr, same shape as ``data`` (or one plane).
        Without it, errors come from GAIN/RONOISE/EXPTIME/FLUXCONV if all are in ``info``, else from the annulus
        scatter.
    mask : array_like, optional
        Integer bit mask (``_bimsk``), same shape as ``data`` (or one plane). Pixels with any of
        ``params.mask_bits`` are excluded; pixels with a saturation bit inside the aperture set ``SATURATED``.
    maps : CorrectionMaps, optional
        Required when ``params.corrections == "maps"``.
    off_image : array_like of bool, optional
        Per plane (or one for all): the target is known to be off the image without a pixel position (see
        :meth:`iracdb.photometry.tansip.TanSip.far_off_image`); such planes are flagged ``NOT_IN_FOV`` rather than
        ``COORD_CONVERSION_FAILED`` and not measured.

    Returns
    -------
    Photometry

    Raises
    ------
    iracdb.errors.BadOption
        Inconsistent inputs or choices: shapes, no published aperture correction for ``"table"``, maps missing,
        ``"idl"`` without mirpyidl, Reach/Hora on warm data, header pixel scale missing.
    """
    [result] = measure_apertures(data, x, y, info, [PhotometryParams() if params is None else params],
                                 uncertainty=uncertainty, mask=mask, maps=maps, off_image=off_image)
    return result


def _shared_choices(params: PhotometryParams) -> PhotometryParams:
    """``params`` without what may differ between the apertures of one :func:`measure_apertures` call."""
    return replace(params, radius_px=1.0, radius_beta=None, annulus_in_px=0.0, annulus_out_px=1.0,
                   centroid="moment", aperture_correction="none")


def measure_apertures(
    data: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    info: ImageInfo,
    apertures: Sequence[PhotometryParams],
    *,
    uncertainty: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    maps: CorrectionMaps | None = None,
    off_image: ArrayLike | None = None,
) -> list[Photometry]:
    """:func:`measure` for a grid of apertures at once: one :class:`Photometry` per aperture, each the same as
    :func:`measure` with that aperture's parameters alone gives when the grid has one centroid method and one
    annulus.

    The apertures may differ in radius (fixed or variable), annulus, centroid method and aperture correction only.
    Every pixel is cut once per plane; the centroid (with its noise pixels and FWHM) is computed once per plane and
    centroid method, on the image minus the background of that method's first annulus around the expected position;
    the background once per plane, centroid method and annulus; the aperture sum once per aperture.

    Raises
    ------
    iracdb.errors.BadOption
        As :func:`measure`; or no aperture, or apertures that differ in another choice.
    """
    if not apertures:
        raise BadOption("measure_apertures needs at least one aperture")
    shared_choices = _shared_choices(apertures[0])
    if any(_shared_choices(p) != shared_choices for p in apertures[1:]):
        raise BadOption(
            "the apertures of one grid may differ in radius, annulus, centroid and aperture correction only")
    params = apertures[0]
    stack = _as_stack(data, "data")
    n = stack.shape[0]
    unc = None if uncertainty is None else _as_stack(uncertainty, "uncertainty", stack.shape)
    msk = None if mask is None else _as_stack(mask, "mask", stack.shape)
    xe = np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)).copy()
    ye = np.broadcast_to(np.asarray(y, dtype=np.float64), (n,)).copy()
    off = np.zeros(n, bool) if off_image is None else np.broadcast_to(np.asarray(off_image, dtype=bool), (n,))

    # Choices that can fail are checked before any work.
    choices = [_choices(info, p) for p in apertures]
    if params.corrections in ("reach", "hora") and info.mission != "cryo":
        raise BadOption(f"the {params.corrections.title()} et al. correction applies to cryogenic data only")
    if params.corrections == "maps" and maps is None:
        raise BadOption("corrections='maps' needs the correction maps (see corrections.load_correction_maps)")
    if params.corrections == "idl":
        load_idl()
    geometries = _grid_geometries(apertures, max(stack.shape[1:]))
    size = geometries[0].size
    # Planes are measured in batches whose shared windows hold at most MAX_WINDOW_PIXELS pixels: a subarray
    # cube's 64 planes (or an AOR's thousands) at the default radii in one batch, fewer planes at a time for a
    # large aperture, so that memory stays bounded whatever the radii and the number of planes.
    step = max(1, MAX_WINDOW_PIXELS // size**2)
    batches = [slice(start, start + step) for start in range(0, n, step)] or [slice(0, 0)]
    parts = []
    # Failed planes carry NaN through the arithmetic by design; their flags say why.
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in batches:
            parts.append(_measure(
                _Batch(stack[b], None if unc is None else unc[b], None if msk is None else msk[b], xe[b], ye[b],
                       off[b]),
                info, apertures, maps, choices, geometries,
            ))
    return [parts[0][k] if len(parts) == 1 else _concatenate([p[k] for p in parts]) for k in range(len(apertures))]


def _grid_geometries(apertures: Sequence[PhotometryParams], extent: int) -> list[Geometry]:
    """Each aperture's shared-window geometry, all on the window of the largest (so that they index one cut)."""
    own = [window_geometry(p.radius_px, p.annulus_in_px, p.annulus_out_px, p.centroid_radius_px, p.max_shift_px,
                           extent) for p in apertures]
    half = max(g.half for g in own)
    return [rebased(g, half) for g in own]


def _concatenate(parts: list[Photometry]) -> Photometry:
    """The results of consecutive batches of planes as one :class:`Photometry`."""
    first = parts[0]
    arrays: dict[str, Any] = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts])
        for f in fields(Photometry) if isinstance(getattr(first, f.name), np.ndarray)
    }
    return replace(first, **arrays)


_Array = TypeVar("_Array", bound=np.ndarray)


def _merge(old: Background, new: Background, idx: NDArray[np.int64]) -> Background:
    """``old`` with the planes ``idx`` replaced by ``new`` (computed for those planes only)."""

    def merged(a: _Array, b: _Array) -> _Array:
        out = a.copy()
        out[idx] = b
        return out

    return Background(merged(old.level, new.level), merged(old.error, new.error), merged(old.std, new.std),
                      merged(old.npix, new.npix), merged(old.nominal_npix, new.nominal_npix))


@dataclass(frozen=True)
class _Batch:
    """One batch of planes to measure and their expected positions."""

    stack: NDArray
    uncertainty: NDArray | None
    mask: NDArray | None
    x_expected: NDArray[np.float64]
    y_expected: NDArray[np.float64]
    off_image: NDArray[np.bool_]


@dataclass(frozen=True)
class _Located:
    """Where one centroid method put the aperture centre of each plane (see :func:`_locate`)."""

    centroid: Centroid
    shift: NDArray[np.float64]
    x: NDArray[np.float64]  # the centre used
    y: NDArray[np.float64]
    flags: NDArray[np.int64]  # field of view and centroid bits
    annulus: tuple[float, float]  # the annulus of the background the centroid was measured on
    start_ring: NDArray[np.bool_]
    start_bkg: Background
    factor: NDArray[np.float64]  # pixel-phase x array-location divisor at (x, y)
    noise_pixels: NDArray[np.float64]  # beta of the box centroider's box (iracdb.photometry.box)


def _measure(
    batch: _Batch,
    info: ImageInfo,
    apertures: Sequence[PhotometryParams],
    maps: CorrectionMaps | None,
    choices: Sequence[tuple[float | None, float]],
    geometries: Sequence[Geometry],
) -> list[Photometry]:
    """Measure one batch of planes (see :func:`measure_apertures`) from their shared windows: per centroid method
    the centroid and the correction at the centre used; per annulus the background there; per aperture the sum,
    errors, flags and flux."""
    _, ny, nx = batch.stack.shape
    clean = Stack(batch.stack, batch.mask, apertures[0].mask_bits, batch.uncertainty)
    in_fov, fov_flags = _field_of_view(batch.x_expected, batch.y_expected, batch.off_image, nx, ny)
    # Where the measurement starts: the expected position, NaN off the image.
    x_start = np.where(in_fov, batch.x_expected, np.nan)
    y_start = np.where(in_fov, batch.y_expected, np.nan)
    cleaned = whole_cleaned(clean, geometries[0])
    # Every pixel the measurement reads, cut once (the box centroider's, further out, from the cleaned stack).
    shared = cut_windows(clean, x_start, y_start, geometries[0], cleaned)
    located: dict[str, _Located] = {}
    backgrounds: dict[tuple[str, float, float], tuple[Background, Nearest]] = {}
    cuts: dict[str, _ApertureCut] = {}
    sums: dict[tuple[str, float, tuple[float, float] | None], _ApertureParts] = {}
    largest = {c: max(g.ap_half for p, g in zip(apertures, geometries, strict=True) if p.centroid == c)
               for c in {p.centroid for p in apertures}}
    results = []
    for params, geometry, (apc, pixel_sr) in zip(apertures, geometries, choices, strict=True):
        if params.centroid not in located:
            located[params.centroid] = _locate(clean, cleaned, shared, geometry, x_start, y_start, in_fov,
                                               fov_flags, info, params, maps)
        loc = located[params.centroid]
        key = (params.centroid, params.annulus_in_px, params.annulus_out_px)
        if key not in backgrounds:
            same = loc.annulus == key[1:]
            backgrounds[key] = _background_at(shared, geometry, loc.x, loc.y, loc.start_ring if same else None,
                                              loc.start_bkg if same else None, params)
        bkg, nearest = backgrounds[key]
        if params.centroid not in cuts:
            cuts[params.centroid] = _cut_apertures(shared, geometry, nearest, largest[params.centroid])
        radius = _radius(params, loc)
        size = (params.centroid, params.radius_px, params.radius_beta)
        if size not in sums:  # the same for every annulus
            sums[size] = _aperture_parts(
                _aperture_at(cuts[params.centroid], geometry.ap_half, loc.x, loc.y, radius), radius, batch, info, loc)
        results.append(_photometry(sums[size], batch, info, params, loc, bkg, in_fov, apc, pixel_sr))
    return results


def _locate(
    clean: Stack, cleaned: NDArray[np.floating] | None, shared: SharedWindows, geometry: Geometry,
    x_start: NDArray[np.float64], y_start: NDArray[np.float64], in_fov: NDArray[np.bool_],
    fov_flags: NDArray[np.int64], info: ImageInfo, params: PhotometryParams, maps: CorrectionMaps | None,
) -> _Located:
    """The centroid (on the image minus the background of ``params``' annulus around the expected position), the
    centre used, its flags and the correction divisor there. ``cleaned``: the whole stack cleaned
    (:func:`~iracdb.photometry.shared.whole_cleaned`) or None."""
    r_in, r_out = params.annulus_in_px, params.annulus_out_px
    start_values, start_ring, start_nominal, _ = annulus_in_windows(shared, x_start, y_start, geometry, r_in, r_out)
    start_bkg = background_of(start_values, start_nominal, params.background, params.clip_sigma)
    active = in_fov & np.isfinite(start_bkg.level)
    box = box_centroid(clean if cleaned is None else cleaned, np.where(active, x_start, np.nan),
                       np.where(active, y_start, np.nan))
    centroid = box if params.centroid == "box" else _centroid(
        clean, shared, geometry, x_start, y_start, active, start_bkg.level, params)
    shift = np.hypot(centroid.x - x_start, centroid.y - y_start)
    shifted = centroid.ok & (shift > params.max_shift_px)
    use = centroid.ok & ~shifted
    flags = fov_flags | ((in_fov & ~centroid.ok) * _BIT["CENTROID_FAILED"]) | (
        (in_fov & shifted) * _BIT["CENTROID_SHIFTED"])
    x = np.where(use, centroid.x, x_start)  # the centre used
    y = np.where(use, centroid.y, y_start)
    factor = _correction(x, y, info, params, maps)
    return _Located(centroid, shift, x, y, flags, (r_in, r_out), start_ring, start_bkg, factor, box.noise_pixels)


def _radius(params: PhotometryParams, loc: _Located) -> float | NDArray[np.float64]:
    """The aperture radius, pixels: fixed, or per plane ``SCALE * sqrt(noise pixels) + OFFSET`` (NaN where the
    noise pixels could not be measured; at most ``params.radius_px``, the bound the windows were cut for)."""
    if params.radius_beta is None:
        return params.radius_px
    scale, offset = params.radius_beta
    radius = scale * np.sqrt(loc.noise_pixels) + offset
    return np.where(radius > 0, np.minimum(radius, params.radius_px), np.nan)


@dataclass(frozen=True)
class _ApertureParts:
    """What one aperture size gives every annulus measured with it (computed once per size, not per aperture)."""

    sum: ApertureSum
    bits: NDArray[np.int64]  # the flag bits of the aperture alone (:func:`_aperture_bits`)
    variance: NDArray[np.float64]  # see :func:`_raw_variance`
    error_model: str


def _aperture_parts(aperture: tuple[ApertureSum, NDArray | None], radius: float | NDArray[np.float64],
                    batch: _Batch, info: ImageInfo, loc: _Located) -> _ApertureParts:
    """An aperture size's sum (and mask window), its flag bits and its variance, shared by its annuli."""
    _, ny, nx = batch.stack.shape
    ap, ap_mask = aperture
    variance, error_model = _raw_variance(ap, info, has_uncertainty=batch.uncertainty is not None)
    return _ApertureParts(ap, _aperture_bits(ap, ap_mask, loc.x, loc.y, nx, ny, radius), variance, error_model)


def _photometry(
    parts: _ApertureParts, batch: _Batch, info: ImageInfo, params: PhotometryParams, loc: _Located,
    bkg: Background, in_fov: NDArray[np.bool_], apc: float | None, pixel_sr: float,
) -> Photometry:
    """One aperture's results from the centre used, its aperture size's parts and its background."""
    n, ny, nx = batch.stack.shape
    x, y = loc.x, loc.y
    ap, error_model = parts.sum, parts.error_model
    # The "background" error model's variance is the annulus scatter times the summed squared weights.
    raw_var = parts.variance * bkg.std**2 if error_model == "background" else parts.variance
    net = ap.sum - ap.area * bkg.level
    net_var = raw_var + (ap.area * bkg.error) ** 2

    bits = parts.bits | _annulus_bits(bkg, x, y, nx, ny, params)
    factor = loc.factor
    bits |= _correction_bits(info, params, apc)
    apc_value = 1.0 if apc is None else apc
    to_mjy = units.mjy_per_mjy_sr_px(pixel_sr) * apc_value / factor
    flux = net * to_mjy
    flux_err = np.sqrt(net_var) * to_mjy
    finite_values = np.isfinite(np.stack([ap.sum, net, bkg.level, flux, flux_err])).all(axis=0)
    bits |= ~finite_values * _BIT["NON_FINITE"]
    flags = loc.flags | (bits * in_fov)

    full_dx, full_dy = info.full_array_offset
    return Photometry(
        x_expected=batch.x_expected.copy(),
        y_expected=batch.y_expected.copy(),
        x_centroid=loc.centroid.x,
        y_centroid=loc.centroid.y,
        shift_px=loc.shift,
        x=x,
        y=y,
        x_full=x + full_dx,
        y_full=y + full_dy,
        fwhm_x_px=loc.centroid.fwhm_x,
        fwhm_y_px=loc.centroid.fwhm_y,
        noise_pixels=loc.noise_pixels,
        background_mjy_sr=bkg.level,
        background_err_mjy_sr=bkg.error,
        background_std_mjy_sr=bkg.std,
        background_npix=bkg.npix,
        aperture_area_px=ap.area,
        raw_sum_mjy_sr=ap.sum,
        raw_sum_err_mjy_sr=np.sqrt(raw_var),
        net_sum_mjy_sr=net,
        net_sum_err_mjy_sr=np.sqrt(net_var),
        correction_factor=factor,
        aperture_correction=np.full(n, apc_value),
        flux_mjy=flux,
        flux_err_mjy=flux_err,
        flags=flags,
        pixel_sr=pixel_sr,
        error_model=error_model,
    )


def _field_of_view(
    x: NDArray[np.float64], y: NDArray[np.float64], off_image: NDArray[np.bool_], nx: int, ny: int
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Which expected positions lie on the image, and the flags of those that do not (known to be off the image,
    or finite and outside it: outside the field of view; otherwise not finite: the coordinate conversion failed)."""
    finite = np.isfinite(x) & np.isfinite(y)
    in_fov = finite & ~off_image & (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    failed = ~finite & ~off_image
    flags = (failed * _BIT["COORD_CONVERSION_FAILED"]) | ((~in_fov & ~failed) * _BIT["NOT_IN_FOV"])
    return in_fov, flags


def _centroid(
    clean: Stack, shared: SharedWindows, geometry: Geometry, x_start: NDArray[np.float64], y_start: NDArray[np.float64],
    active: NDArray[np.bool_], background: NDArray[np.float64], params: PhotometryParams,
) -> Centroid:
    """The centroid of the planes ``active``, on the image minus ``background`` (per plane, MJy/sr).

    The moment centroid may wander a little beyond ``max_shift_px``, so that a shift is measured before it is
    flagged (moment_centroid with reach = max_shift_px + 1.5, on the part of the shared window it would have cut).
    """
    n = len(x_start)
    half, centroid_half = geometry.half, geometry.centroid_half
    lo, hi = half - centroid_half, half + centroid_half + 1
    window = shared.values.reshape(n, geometry.size, geometry.size)[:, lo:hi, lo:hi]
    values = np.where(np.isfinite(window), window - background[:, None, None], 0.0)
    x0, y0 = shared.cx - centroid_half, shared.cy - centroid_half
    mx, my, fx, fy, ok = moment_in_windows(values, x_start - x0, y_start - y0, active, params.centroid_radius_px)
    found = Centroid(mx + x0, my + y0, fx, fy, ok)
    if params.centroid == "gauss":  # as centroid(): the fit starts from the moment centroid
        fwhm0 = np.sqrt(found.fwhm_x * found.fwhm_y)
        found = gauss_centroid(
            clean, np.where(found.ok, found.x, x_start), np.where(found.ok, found.y, y_start), background,
            np.where(np.isfinite(fwhm0), fwhm0, 1.5), params.gauss_box_px,
        )
    return found


def _background_at(
    shared: SharedWindows, geometry: Geometry, x: NDArray[np.float64], y: NDArray[np.float64],
    start_ring: NDArray[np.bool_] | None, start_bkg: Background | None, params: PhotometryParams,
) -> tuple[Background, Nearest]:
    """The background around the centre used ``(x, y)``, and the pixel nearest to that centre.

    Where it has the same nearest pixel and the same annulus pixels as the expected position (the centroid failed
    or was not used, or barely moved), the first background ``start_bkg`` (of the annulus ``start_ring``) is that
    plane's answer exactly (same values, same order): it is only recomputed for the other planes. Without a first
    background (another annulus than the centroid's), it is computed for every plane.
    """
    values, ring, nominal, nearest = annulus_in_windows(
        shared, x, y, geometry, params.annulus_in_px, params.annulus_out_px)
    if start_ring is None or start_bkg is None:
        return background_of(values, nominal, params.background, params.clip_sigma), nearest
    redo = np.flatnonzero((nearest.dx != 0) | (nearest.dy != 0) | (ring != start_ring).any(axis=1))
    if redo.size == len(x):
        return background_of(values, nominal, params.background, params.clip_sigma), nearest
    if redo.size == 0:
        return start_bkg, nearest
    redone = background_of(values[redo], nominal[redo], params.background, params.clip_sigma)
    return _merge(start_bkg, redone, redo), nearest


@dataclass(frozen=True)
class _ApertureCut:
    """The square windows about the pixel nearest to each plane's centre used, cut once from the shared windows
    for the largest aperture of a centroid method; smaller apertures take their central part."""

    half: int
    values: NDArray[np.float64]
    outside: NDArray[np.bool_]
    mask: NDArray | None
    unc: NDArray | None
    nearest: Nearest


def _cut_apertures(shared: SharedWindows, geometry: Geometry, nearest: Nearest, half: int) -> _ApertureCut:
    """Cut the ``(2 half + 1)``-pixel aperture windows about ``nearest`` from the shared windows (``geometry``
    gives their size)."""
    n = len(nearest.px)
    start = np.arange(n) * geometry.size**2 + (geometry.half + nearest.dy) * geometry.size + (
        geometry.half + nearest.dx)
    a = np.arange(-half, half + 1)
    index = start[:, None] + (a[:, None] * geometry.size + a).ravel()
    shape = (n, 2 * half + 1, 2 * half + 1)

    def cut(array: NDArray | None) -> NDArray | None:
        return None if array is None else array.reshape(-1)[index].reshape(shape)

    values, outside = cut(shared.values), cut(shared.outside)
    assert values is not None and outside is not None
    return _ApertureCut(half, values, outside, cut(shared.mask), cut(shared.unc), nearest)


def _aperture_at(
    cut: _ApertureCut, half: int, x: NDArray[np.float64], y: NDArray[np.float64], radius: float | NDArray[np.float64],
) -> tuple[ApertureSum, NDArray | None]:
    """The aperture sum of ``radius`` px around the centre used ``(x, y)``, from the central ``(2 half + 1)``
    pixels of the cut windows (as aperture_sum), and the mask bits of the aperture's window (None without a
    mask)."""
    n = len(x)
    k = cut.half - half
    inner = (slice(None), slice(k, cut.values.shape[1] - k), slice(k, cut.values.shape[2] - k))

    def part(array: NDArray | None) -> NDArray | None:  # contiguous, as a cut of its own: the same sums, bit for bit
        return None if array is None else (array if k == 0 else np.ascontiguousarray(array[inner]))

    values, outside = part(cut.values), part(cut.outside)
    assert values is not None and outside is not None
    empty = np.empty((n, 0), np.int64)  # image rows and columns are not needed: the companions come cut too
    window = Windows(values, outside, cut.nearest.px - half, cut.nearest.py - half, empty, empty, np.arange(n))
    return aperture_in_windows(window, part(cut.unc), x - window.x0, y - window.y0, radius), part(cut.mask)


def _raw_variance(ap: ApertureSum, info: ImageInfo, *, has_uncertainty: bool) -> tuple[NDArray[np.float64], str]:
    """Variance of the aperture sum ((MJy/sr x px)²) and the error model that gave it: the uncertainty companion;
    else Poisson and read noise from the header (GAIN, RONOISE, EXPTIME, FLUXCONV); else the annulus scatter, for
    which this returns the sum of the squared weights of the good pixels (px²) that the annulus variance
    (``Background.std**2``, (MJy/sr)²) multiplies."""
    if has_uncertainty:
        return ap.variance, "uncertainty"
    weights2 = np.where(np.isfinite(ap.window.values), ap.weights**2, 0.0)
    gain, ronoise, exptime, fluxconv = info.gain, info.ronoise, info.exptime, info.fluxconv
    if gain is not None and ronoise is not None and exptime is not None and fluxconv is not None and (
            gain * exptime > 0):
        e_per_unit = exptime * gain / fluxconv  # electrons per (MJy/sr) in one pixel
        values = np.where(np.isfinite(ap.window.values), ap.window.values, 0.0)
        pixel_var = (np.maximum(values, 0.0) * e_per_unit + ronoise**2) / e_per_unit**2
        return np.sum(weights2 * pixel_var, axis=(1, 2)) * np.where(np.isfinite(ap.sum), 1.0, np.nan), "gain"
    return np.sum(weights2, axis=(1, 2)), "background"


def _off_edge(x: NDArray[np.float64], y: NDArray[np.float64], radius: float | NDArray[np.float64], nx: int, ny: int
              ) -> NDArray[np.bool_]:
    """Whether a circle of ``radius`` px about ``(x, y)`` reaches beyond an ``(ny, nx)`` image."""
    return (x - radius < -0.5) | (x + radius > nx - 0.5) | (y - radius < -0.5) | (y + radius > ny - 0.5)


def _aperture_bits(
    ap: ApertureSum, ap_mask: NDArray | None, x: NDArray[np.float64], y: NDArray[np.float64], nx: int, ny: int,
    radius: float | NDArray[np.float64],
) -> NDArray[np.int64]:
    """The flag bits of the aperture (of ``radius`` px) around the centre used ``(x, y)``."""
    bits = (ap.n_bad > 0) * _BIT["MASKED_IN_APERTURE"]
    if ap_mask is not None:
        saturated = (ap_mask & SATURATION_BITS) != 0
        hit = (saturated & (ap.weights > 0) & ~ap.window.outside).any(axis=(1, 2))
        bits |= hit * _BIT["SATURATED"]
    bits |= _off_edge(x, y, radius, nx, ny) * _BIT["APERTURE_OFF_EDGE"]
    return bits


def _annulus_bits(bkg: Background, x: NDArray[np.float64], y: NDArray[np.float64], nx: int, ny: int,
                  params: PhotometryParams) -> NDArray[np.int64]:
    """The flag bits of the annulus of ``params`` around the centre used ``(x, y)``."""
    bits = _off_edge(x, y, params.annulus_out_px, nx, ny) * _BIT["ANNULUS_OFF_EDGE"]
    r_in, r_out = params.annulus_in_px, params.annulus_out_px
    few = bkg.npix < params.min_background_fraction * np.pi * (r_out**2 - r_in**2)
    bits |= few * _BIT["FEW_BACKGROUND_PIXELS"]
    return bits


def _correction_bits(info: ImageInfo, params: PhotometryParams, apc: float | None) -> int:
    """The flag bits of the corrections not applied (the same for every plane)."""
    bits = 0
    uncorrectable = params.corrections in ("numpy", "idl") and not is_correctable(info.channel, info.mission)
    if params.corrections == "none" or uncorrectable:
        bits |= _BIT["NO_PHOTOMETRIC_CORRECTION"]
    if apc is None:
        bits |= _BIT["NO_APERTURE_CORRECTION"]
    return bits


def _correction(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    info: ImageInfo,
    params: PhotometryParams,
    maps: CorrectionMaps | None,
) -> NDArray[np.float64]:
    """Correction divisor per plane for the chosen correction (NaN where the position is NaN)."""
    choice = params.corrections
    if choice in ("numpy", "reach", "hora"):
        return correction_factor(
            x, y, info.channel, mission=info.mission, subarray=info.subarray,
            pp_only=params.pp_only, al_only=params.al_only, model="ingalls" if choice == "numpy" else choice,
        )
    nan = np.where(np.isfinite(x) & np.isfinite(y), 1.0, np.nan)
    if choice == "none":
        return nan
    if choice == "maps":
        assert maps is not None  # measure() refuses corrections="maps" without maps, before any work
        return map_correction_factor(x, y, maps, info.full_array_offset)
    if choice == "idl":
        ok = np.isfinite(nan)
        out = nan.copy()
        if ok.any():
            corrected = irac_aphot_corr_idl(
                np.ones(ok.sum()), x[ok], y[ok], info.channel, mission=info.mission, subarray=info.subarray,
                pp_only=params.pp_only, al_only=params.al_only,
            )
            out[ok] = 1.0 / corrected
        return out
    raise BadOption(f"unknown corrections choice {choice!r}")  # PhotometryParams rejects it first
