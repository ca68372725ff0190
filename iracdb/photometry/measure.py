"""The full measurement of a stack of images: target position -> centroid -> background -> aperture -> flux.

:func:`measure` takes a ``(n, ny, nx)`` stack (a subarray cube, or one full-array frame as ``n = 1``) and returns
one result per plane, vectorised over the planes. Failed planes are kept, with NaN values and flag bits.

Every pixel the measurement reads is cut once per plane, in one window around the expected position (see
:class:`_Geometry`); the steps then index into it. The numbers are those of the step functions of the submodules
(``annulus_background``, ``moment_centroid``, ``aperture_sum``) called on the whole stack, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from iracdb.choices import BACKGROUND_METHODS, CENTROID_METHODS, one_of
from iracdb.errors import BadOption
from iracdb.flags import PROCBITS, SATURATION_BITS, Flag
from iracdb.photometry import apcorr, units
from iracdb.photometry.aperture import Stack, Windows, aperture_in_windows, flat_index, pick
from iracdb.photometry.background import Background, BackgroundMethod, background_of
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

#: Flag bits as plain ints (numpy arithmetic with the enum members is slow).
_BIT = {name: int(member) for name, member in Flag.__members__.items()}

CorrectionChoice = Literal["numpy", "idl", "maps", "reach", "hora", "none"]

#: :func:`measure` cuts at most this many shared-window pixels at once (a few tens of MB of working arrays): 2048
#: subarray planes at the default radii in one batch, fewer planes per batch when the aperture is larger.
MAX_WINDOW_PIXELS = 1 << 21


@dataclass(frozen=True)
class PhotometryParams:
    """The choices of a photometry run (everything except the images and their header facts).

    Attributes
    ----------
    radius_px : float
        Aperture radius, pixels. Default 3 (the aperture of the IRAC pixel-phase correction).
    annulus_in_px, annulus_out_px : float
        Background annulus radii, pixels (pixel centres with ``in <= d < out``). Default 3-7.
    centroid : {"moment", "gauss"}
        Centroid method (see :mod:`iracdb.photometry.centroid`). Default ``"moment"``.
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
    annulus_in_px: float = 3.0
    annulus_out_px: float = 7.0
    centroid: CentroidMethod = "moment"
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

    Returns
    -------
    Photometry

    Raises
    ------
    iracdb.errors.BadOption
        Inconsistent inputs or choices: shapes, no published aperture correction for ``"table"``, maps missing,
        ``"idl"`` without mirpyidl, Reach/Hora on warm data, header pixel scale missing.
    """
    params = PhotometryParams() if params is None else params
    stack = _as_stack(data, "data")
    n = stack.shape[0]
    unc = None if uncertainty is None else _as_stack(uncertainty, "uncertainty", stack.shape)
    msk = None if mask is None else _as_stack(mask, "mask", stack.shape)
    xe = np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)).copy()
    ye = np.broadcast_to(np.asarray(y, dtype=np.float64), (n,)).copy()

    # Choices that can fail are checked before any work.
    apc, pixel_sr = _choices(info, params)
    if params.corrections in ("reach", "hora") and info.mission != "cryo":
        raise BadOption(f"the {params.corrections.title()} et al. correction applies to cryogenic data only")
    if params.corrections == "maps" and maps is None:
        raise BadOption("corrections='maps' needs the correction maps (see corrections.load_correction_maps)")
    if params.corrections == "idl":
        load_idl()
    geo = _geometry(
        params.radius_px, params.annulus_in_px, params.annulus_out_px, params.centroid_radius_px,
        params.max_shift_px, max(stack.shape[1:]),
    )
    # Planes are measured in batches whose shared windows hold at most MAX_WINDOW_PIXELS pixels: a subarray
    # cube's 64 planes (or an AOR's thousands) at the default radii in one batch, fewer planes at a time for a
    # large aperture, so that memory stays bounded whatever the radii and the number of planes.
    step = max(1, MAX_WINDOW_PIXELS // geo.size**2)
    batches = [slice(start, start + step) for start in range(0, n, step)] or [slice(0, 0)]
    parts = []
    # Failed planes carry NaN through the arithmetic by design; their flags say why.
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in batches:
            parts.append(_measure(
                stack[b], None if unc is None else unc[b], None if msk is None else msk[b], xe[b], ye[b], info,
                params, maps, apc, pixel_sr, geo,
            ))
    return parts[0] if len(parts) == 1 else _concatenate(parts)


def _concatenate(parts: list[Photometry]) -> Photometry:
    """The results of consecutive batches of planes as one :class:`Photometry`."""
    first = parts[0]
    arrays = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts])
        for f in fields(Photometry) if isinstance(getattr(first, f.name), np.ndarray)
    }
    return replace(first, **arrays)


@dataclass(frozen=True)
class _Geometry:
    """Index grids of one run's shared window (they depend on the radii and the maximum shift only).

    Every plane is measured from one ``(s, s)`` window, ``s = 2 * half + 1``, centred on the pixel nearest to the
    expected position and cut once (values, bad pixels, mask and uncertainty): the annulus around the expected
    position, the moment-centroid window, and the annulus and aperture around the centre finally used, which is
    at most ``max_shift_px`` from the expected position, all lie inside it.

    The window is clipped to the image: the expected pixel lies in the image and the centre used within ``shift``
    pixels of it, so no image pixel is further than ``extent - 1 + shift`` pixels (along x or y) from a centre,
    and annulus candidates or aperture pixels beyond that are always outside the image. A radius larger than the
    image therefore costs no more memory than one as large as the image.
    """

    half: int
    size: int
    ann_dx: NDArray[np.int64]  # annulus candidate pixels, offsets from the centre pixel (as annulus_pixels)
    ann_dy: NDArray[np.int64]
    ann_flat: NDArray[np.int64]  # ... as flat offsets in the window
    centroid_half: int  # half-size of the moment-centroid window (as moment_centroid)
    ap_half: int  # half-size of the aperture window (as aperture_sum)
    ap_flat: NDArray[np.int64]  # flat offsets of the aperture window's pixels from its centre
    shift: int  # largest |offset| of the final centre pixel from the expected one


@lru_cache(maxsize=32)
def _geometry(
    radius: float, r_in: float, r_out: float, centroid_radius: float, max_shift: float, extent: int
) -> _Geometry:
    """The shared window of images at most ``extent`` pixels wide and high (see :class:`_Geometry`)."""
    # |round(a) - round(b)| <= floor(|a - b|) + 1, and the centre used is within max_shift of the expected one.
    shift = int(np.floor(max_shift)) + 1
    limit = extent - 1 + shift  # farthest image pixel from a centre used, along x or y
    reach = min(int(np.ceil(r_out)) + 1, limit)
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    d = np.hypot(dx, dy)
    keep = (d >= r_in - np.sqrt(0.5)) & (d < r_out + np.sqrt(0.5))  # the candidates of annulus_pixels
    dx, dy = dx[keep], dy[keep]
    centroid_reach = max_shift + 1.5  # how far the moment centroid may wander: see _measure
    centroid_half = int(np.ceil(centroid_radius + centroid_reach)) + 1  # as moment_centroid
    ap_half = min(int(np.ceil(radius)) + 1, limit)
    ann_half = int(max(np.abs(dx).max(initial=0), np.abs(dy).max(initial=0)))
    half = max(centroid_half, ann_half + shift, ap_half + shift)
    size = 2 * half + 1
    a = np.arange(-ap_half, ap_half + 1)
    return _Geometry(
        half, size, dx, dy, dy * size + dx, centroid_half, ap_half, (a[:, None] * size + a).ravel(), shift
    )


@dataclass(frozen=True)
class _Shared:
    """The shared windows of a stack (see :class:`_Geometry`), flat per plane: ``(n, s * s)``."""

    values: NDArray[np.float64]  # NaN at bad pixels and outside the image
    outside: NDArray[np.bool_]
    mask: NDArray | None
    unc: NDArray | None
    cx: NDArray[np.int64]  # window centre pixel (a far-away sentinel for non-finite positions)
    cy: NDArray[np.int64]


def _cut(clean: Stack, x: NDArray[np.float64], y: NDArray[np.float64], geo: _Geometry) -> _Shared:
    """Cut the shared window of every plane once, with its mask and uncertainty, as
    :func:`~iracdb.photometry.aperture.windows` would (same centre, outside pixels, bad-pixel rule)."""
    n = len(x)
    _, ny, nx = clean.shape
    finite = np.isfinite(x) & np.isfinite(y)
    cx = np.where(finite, np.floor(np.where(finite, x, 0) + 0.5), -(10**6)).astype(np.int64)
    cy = np.where(finite, np.floor(np.where(finite, y, 0) + 0.5), -(10**6)).astype(np.int64)
    off = np.arange(-geo.half, geo.half + 1)
    rows = cy[:, None] + off
    cols = cx[:, None] + off
    outside = ~(((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :])
    index = (
        np.arange(n)[:, None, None],
        np.minimum(np.maximum(rows, 0), ny - 1)[:, :, None],
        np.minimum(np.maximum(cols, 0), nx - 1)[:, None, :],
    )
    flat = flat_index(clean.shape, index)
    mask = None if clean.mask is None else pick(clean.mask, index, flat)
    unc = None if clean.uncertainty is None else pick(clean.uncertainty, index, flat)
    if 4 * outside.size >= clean.data.size:
        # The windows cover much of the stack (a subarray cube): the bad-pixel rule in one sequential pass over
        # whole images is faster than on scattered window pixels; the same pixels come out NaN.
        values = pick(_cleaned(clean), index, flat)
        values[outside] = np.nan
    else:
        values = pick(clean.data, index, flat).astype(np.float64)
        bad = outside.copy()
        if mask is not None and clean.mask_bits:
            bad |= (mask & clean.mask_bits) != 0
        if unc is not None:
            bad |= ~np.isfinite(unc)
        values[bad] = np.nan
    shape = (n, geo.size * geo.size)
    return _Shared(
        values.reshape(shape), outside.reshape(shape), None if mask is None else mask.reshape(shape),
        None if unc is None else unc.reshape(shape), cx, cy,
    )


def _cleaned(clean: Stack) -> NDArray[np.float64]:
    """The whole stack as float64 with NaN at its bad pixels (see :class:`Stack`)."""
    values = clean.data.astype(np.float64)
    bad = None
    if clean.mask is not None and clean.mask_bits:
        bad = (clean.mask & clean.mask_bits) != 0
    if clean.uncertainty is not None:
        bad = ~np.isfinite(clean.uncertainty) if bad is None else bad | ~np.isfinite(clean.uncertainty)
    if bad is not None:
        values[bad] = np.nan
    return values


def _offsets(sh: _Shared, x: NDArray[np.float64], y: NDArray[np.float64], geo: _Geometry):
    """Pixel nearest to ``(x, y)`` (0 where not finite) and its offset from the window centre (0 where not
    finite; such planes have an all-outside window)."""
    finite = np.isfinite(x) & np.isfinite(y)
    xs = np.where(finite, x, 0.0)
    ys = np.where(finite, y, 0.0)
    cx = np.floor(xs + 0.5).astype(np.int64)
    cy = np.floor(ys + 0.5).astype(np.int64)
    ox = np.where(finite, cx - sh.cx, 0)
    oy = np.where(finite, cy - sh.cy, 0)
    if np.abs(ox).max(initial=0) > geo.shift or np.abs(oy).max(initial=0) > geo.shift:
        raise RuntimeError("a centre left the shared window")  # cannot happen: see _geometry
    return xs, ys, cx, cy, ox, oy


def _annulus(
    sh: _Shared, x: NDArray[np.float64], y: NDArray[np.float64], geo: _Geometry, r_in: float, r_out: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64], tuple[NDArray[np.int64], ...]]:
    """Annulus values (NaN where not used), ring membership and nominal count around ``(x, y)``: what
    :func:`~iracdb.photometry.background.annulus_pixels` gives, from the shared windows; and the nearest pixel
    and its offset from the window centre (``cx, cy, ox, oy`` of :func:`_offsets`)."""
    xs, ys, cx, cy, ox, oy = _offsets(sh, x, y, geo)
    n, size2 = sh.values.shape
    start = np.arange(n) * size2 + (geo.half + oy) * geo.size + (geo.half + ox)
    index = start[:, None] + geo.ann_flat
    values = sh.values.reshape(-1)[index]
    outside = sh.outside.reshape(-1)[index]
    px = (cx[:, None] + geo.ann_dx) - xs[:, None]  # as annulus_pixels, operation for operation
    py = (cy[:, None] + geo.ann_dy) - ys[:, None]
    d2 = px * px + py * py
    ring = (d2 >= r_in * r_in) & (d2 < r_out * r_out)
    return np.where(ring, values, np.nan), ring, np.sum(ring & ~outside, axis=1), (cx, cy, ox, oy)


def _merge(old: Background, new: Background, idx: NDArray[np.int64]) -> Background:
    """``old`` with the planes ``idx`` replaced by ``new`` (computed for those planes only)."""
    parts = []
    for a, b in zip(
        (old.level, old.error, old.std, old.npix, old.nominal_npix),
        (new.level, new.error, new.std, new.npix, new.nominal_npix), strict=True,
    ):
        a = a.copy()
        a[idx] = b
        parts.append(a)
    return Background(*parts)


def _measure(
    stack: NDArray,
    unc: NDArray | None,
    msk: NDArray | None,
    xe: NDArray[np.float64],
    ye: NDArray[np.float64],
    info: ImageInfo,
    params: PhotometryParams,
    maps: CorrectionMaps | None,
    apc: float | None,
    pixel_sr: float,
    geo: _Geometry,
) -> Photometry:
    n, ny, nx = stack.shape
    x_expected, y_expected = xe.copy(), ye.copy()

    clean = Stack(stack, msk, params.mask_bits, unc)

    finite = np.isfinite(xe) & np.isfinite(ye)
    in_fov = finite & (xe >= -0.5) & (xe < nx - 0.5) & (ye >= -0.5) & (ye < ny - 0.5)
    flags = (~finite * _BIT["COORD_CONVERSION_FAILED"]) | ((finite & ~in_fov) * _BIT["NOT_IN_FOV"])
    xe[~in_fov] = np.nan
    ye[~in_fov] = np.nan
    sh = _cut(clean, xe, ye, geo)  # every pixel the measurement reads, once

    # Centroid on the image minus the background around the expected position.
    r_in, r_out = params.annulus_in_px, params.annulus_out_px
    vals0, ring0, nominal0, _ = _annulus(sh, xe, ye, geo, r_in, r_out)
    bkg0 = background_of(vals0, nominal0, params.background, params.clip_sigma)
    # The centroid may wander a little beyond max_shift_px, so that a shift is measured before it is flagged
    # (moment_centroid with reach = max_shift_px + 1.5, on the part of the shared window it would have cut).
    h, hc = geo.half, geo.centroid_half
    active = in_fov & np.isfinite(bkg0.level)
    win = sh.values.reshape(n, geo.size, geo.size)[:, h - hc : h + hc + 1, h - hc : h + hc + 1]
    v = np.where(np.isfinite(win), win - bkg0.level[:, None, None], 0.0)
    x0, y0 = sh.cx - hc, sh.cy - hc
    mx, my, fx, fy, ok = moment_in_windows(v, xe - x0, ye - y0, active, params.centroid_radius_px)
    cen = Centroid(mx + x0, my + y0, fx, fy, ok)
    if params.centroid == "gauss":  # as centroid(): the fit starts from the moment centroid
        f0 = np.sqrt(cen.fwhm_x * cen.fwhm_y)
        cen = gauss_centroid(
            clean, np.where(cen.ok, cen.x, xe), np.where(cen.ok, cen.y, ye), bkg0.level,
            np.where(np.isfinite(f0), f0, 1.5), params.gauss_box_px,
        )
    shift = np.hypot(cen.x - xe, cen.y - ye)
    shifted = cen.ok & (shift > params.max_shift_px)
    use = cen.ok & ~shifted
    flags |= ((in_fov & ~cen.ok) * _BIT["CENTROID_FAILED"]) | ((in_fov & shifted) * _BIT["CENTROID_SHIFTED"])
    xc = np.where(use, cen.x, xe)
    yc = np.where(use, cen.y, ye)

    # The background around the centre used. Where it has the same nearest pixel and the same annulus pixels
    # as the expected position (the centroid failed or was not used, or barely moved), the first background is
    # that plane's answer exactly (same values, same order): it is only recomputed for the other planes.
    vals, ring, nominal, (cxa, cya, ox, oy) = _annulus(sh, xc, yc, geo, r_in, r_out)
    redo = np.flatnonzero((ox != 0) | (oy != 0) | (ring != ring0).any(axis=1))
    if redo.size == n:
        bkg = background_of(vals, nominal, params.background, params.clip_sigma)
    elif redo.size == 0:
        bkg = bkg0
    else:
        bkg = _merge(bkg0, background_of(vals[redo], nominal[redo], params.background, params.clip_sigma), redo)

    # The aperture, from the shared window around the centre used (as aperture_sum).
    start = np.arange(n) * geo.size**2 + (h + oy) * geo.size + (h + ox)
    index = start[:, None] + geo.ap_flat
    sa = 2 * geo.ap_half + 1
    ap_shape = (n, sa, sa)
    empty = np.empty((n, 0), np.int64)  # image rows and columns are not needed: the companions come cut too
    ap_win = Windows(
        sh.values.reshape(-1)[index].reshape(ap_shape), sh.outside.reshape(-1)[index].reshape(ap_shape),
        cxa - geo.ap_half, cya - geo.ap_half, empty, empty, np.arange(n),
    )
    ap_mask = None if sh.mask is None else sh.mask.reshape(-1)[index].reshape(ap_shape)
    ap_unc = None if sh.unc is None else sh.unc.reshape(-1)[index].reshape(ap_shape)
    ap = aperture_in_windows(ap_win, ap_unc, xc - ap_win.x0, yc - ap_win.y0, params.radius_px)

    # Per-pixel variance of the aperture sum when there is no uncertainty companion.
    if unc is None:
        w2 = np.where(np.isfinite(ap.window.values), ap.weights**2, 0.0)
    if unc is not None:
        error_model = "uncertainty"
        raw_var = ap.variance
    elif None not in (info.gain, info.ronoise, info.exptime, info.fluxconv) and info.gain * info.exptime > 0:
        error_model = "gain"
        e_per_unit = info.exptime * info.gain / info.fluxconv  # electrons per (MJy/sr) in one pixel
        v = np.where(np.isfinite(ap.window.values), ap.window.values, 0.0)
        pix_var = (np.maximum(v, 0.0) * e_per_unit + info.ronoise**2) / e_per_unit**2
        raw_var = np.sum(w2 * pix_var, axis=(1, 2)) * np.where(np.isfinite(ap.sum), 1.0, np.nan)
    else:
        error_model = "background"
        raw_var = np.sum(w2, axis=(1, 2)) * bkg.std**2

    net = ap.sum - ap.area * bkg.level
    net_var = raw_var + (ap.area * bkg.error) ** 2

    # Flag bits of the planes in the field (bool x int: the bit or 0).
    bits = (ap.n_bad > 0) * _BIT["MASKED_IN_APERTURE"]
    if msk is not None:
        sat = (ap_mask & SATURATION_BITS) != 0
        hit = (sat & (ap.weights > 0) & ~ap.window.outside).any(axis=(1, 2))
        bits |= hit * _BIT["SATURATED"]
    r, ro = params.radius_px, r_out
    off = (xc - r < -0.5) | (xc + r > nx - 0.5) | (yc - r < -0.5) | (yc + r > ny - 0.5)
    bits |= off * _BIT["APERTURE_OFF_EDGE"]
    off = (xc - ro < -0.5) | (xc + ro > nx - 0.5) | (yc - ro < -0.5) | (yc + ro > ny - 0.5)
    bits |= off * _BIT["ANNULUS_OFF_EDGE"]
    few = bkg.npix < params.min_background_fraction * np.pi * (r_out**2 - r_in**2)
    bits |= few * _BIT["FEW_BACKGROUND_PIXELS"]

    factor = _correction(xc, yc, info, params, maps)
    uncorrectable = params.corrections in ("numpy", "idl") and not is_correctable(info.channel, info.mission)
    if params.corrections == "none" or uncorrectable:
        bits |= _BIT["NO_PHOTOMETRIC_CORRECTION"]
    if apc is None:
        bits |= _BIT["NO_APERTURE_CORRECTION"]
    apc_value = 1.0 if apc is None else apc

    to_mjy = units.mjy_per_mjy_sr_px(pixel_sr) * apc_value / factor
    flux = net * to_mjy
    flux_err = np.sqrt(net_var) * to_mjy
    finite_values = np.isfinite(np.stack([ap.sum, net, bkg.level, flux, flux_err])).all(axis=0)
    bits |= ~finite_values * _BIT["NON_FINITE"]
    flags |= bits * in_fov

    ox, oy = info.full_array_offset
    return Photometry(
        x_expected=x_expected,
        y_expected=y_expected,
        x_centroid=cen.x,
        y_centroid=cen.y,
        shift_px=shift,
        x=xc,
        y=yc,
        x_full=xc + ox,
        y_full=yc + oy,
        fwhm_x_px=cen.fwhm_x,
        fwhm_y_px=cen.fwhm_y,
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
        return map_correction_factor(x, y, maps, info.full_array_offset)  # type: ignore[arg-type]
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
