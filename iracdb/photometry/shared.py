"""The shared window of each plane: every pixel a measurement reads, cut once.

:func:`iracdb.photometry.measure.measure` cuts one square window per plane around the expected position (values,
bad pixels, mask and uncertainty; :func:`cut_windows`), whose size depends only on the radii and the maximum shift
(:class:`Geometry`); the centroid, the backgrounds (:func:`annulus_in_windows`) and the aperture then index into
it. The numbers are those of :func:`~iracdb.photometry.aperture.windows` and
:func:`~iracdb.photometry.background.annulus_pixels` on the whole stack, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from iracdb.photometry.aperture import Stack, flat_index, pick


@dataclass(frozen=True)
class Geometry:
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
def window_geometry(
    radius: float, r_in: float, r_out: float, centroid_radius: float, max_shift: float, extent: int
) -> Geometry:
    """The shared window of images at most ``extent`` pixels wide and high (see :class:`Geometry`)."""
    # |round(a) - round(b)| <= floor(|a - b|) + 1, and the centre used is within max_shift of the expected one.
    shift = int(np.floor(max_shift)) + 1
    limit = extent - 1 + shift  # farthest image pixel from a centre used, along x or y
    reach = min(int(np.ceil(r_out)) + 1, limit)
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    d = np.hypot(dx, dy)
    keep = (d >= r_in - np.sqrt(0.5)) & (d < r_out + np.sqrt(0.5))  # the candidates of annulus_pixels
    dx, dy = dx[keep], dy[keep]
    centroid_reach = max_shift + 1.5  # how far the moment centroid may wander: see measure._centroid
    centroid_half = int(np.ceil(centroid_radius + centroid_reach)) + 1  # as moment_centroid
    ap_half = min(int(np.ceil(radius)) + 1, limit)
    ann_half = int(max(np.abs(dx).max(initial=0), np.abs(dy).max(initial=0)))
    half = max(centroid_half, ann_half + shift, ap_half + shift)
    size = 2 * half + 1
    a = np.arange(-ap_half, ap_half + 1)
    return Geometry(
        half, size, dx, dy, dy * size + dx, centroid_half, ap_half, (a[:, None] * size + a).ravel(), shift
    )


def rebased(geometry: Geometry, half: int) -> Geometry:
    """``geometry`` on a larger shared window of half-size ``half`` (same pixels, flat offsets for the new size):
    the apertures of a grid index one window cut for the largest of them."""
    if half == geometry.half:
        return geometry
    if half < geometry.half:
        raise ValueError(f"a window of half-size {half} cannot hold one of {geometry.half}")
    size = 2 * half + 1
    a = np.arange(-geometry.ap_half, geometry.ap_half + 1)
    return replace(geometry, half=half, size=size, ann_flat=geometry.ann_dy * size + geometry.ann_dx,
                   ap_flat=(a[:, None] * size + a).ravel())


@dataclass(frozen=True)
class SharedWindows:
    """The shared windows of a stack (see :class:`Geometry`), flat per plane: ``(n, s * s)``."""

    values: NDArray[np.float64]  # NaN at bad pixels and outside the image
    outside: NDArray[np.bool_]
    mask: NDArray | None
    unc: NDArray | None
    cx: NDArray[np.int64]  # window centre pixel (a far-away sentinel for non-finite positions)
    cy: NDArray[np.int64]


def whole_cleaned(clean: Stack, geometry: Geometry) -> NDArray[np.floating] | None:
    """The whole stack as floats (``_cleaned``) with NaN at its bad pixels when the shared windows cover much
    of it (a subarray cube: the bad-pixel rule in one sequential pass over whole images is then faster than on
    scattered window pixels, and every later cut is one take); else None (e.g. a full-array frame)."""
    _, ny, nx = clean.shape
    return _cleaned(clean) if 4 * geometry.size**2 >= ny * nx else None


def cut_windows(
    clean: Stack, x: NDArray[np.float64], y: NDArray[np.float64], geometry: Geometry,
    cleaned: NDArray[np.floating] | None = None,
) -> SharedWindows:
    """Cut the shared window of every plane once, with its mask and uncertainty, as
    :func:`~iracdb.photometry.aperture.windows` would (same centre, outside pixels, bad-pixel rule); from
    ``cleaned`` (:func:`whole_cleaned`) when given."""
    n = len(x)
    _, ny, nx = clean.shape
    finite = np.isfinite(x) & np.isfinite(y)
    cx = np.where(finite, np.floor(np.where(finite, x, 0) + 0.5), -(10**6)).astype(np.int64)
    cy = np.where(finite, np.floor(np.where(finite, y, 0) + 0.5), -(10**6)).astype(np.int64)
    offsets = np.arange(-geometry.half, geometry.half + 1)
    rows = cy[:, None] + offsets
    cols = cx[:, None] + offsets
    outside = ~(((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :])
    index = (
        np.arange(n)[:, None, None],
        np.minimum(np.maximum(rows, 0), ny - 1)[:, :, None],
        np.minimum(np.maximum(cols, 0), nx - 1)[:, None, :],
    )
    flat = flat_index(clean.shape, index)
    mask = None if clean.mask is None else pick(clean.mask, index, flat)
    unc = None if clean.uncertainty is None else pick(clean.uncertainty, index, flat)
    if cleaned is not None:  # the same pixels come out NaN
        values = pick(cleaned, index, flat).astype(np.float64, copy=False)
        values[outside] = np.nan
    else:
        values = pick(clean.data, index, flat).astype(np.float64)
        bad = outside.copy()
        if mask is not None and clean.mask_bits:
            bad |= (mask & clean.mask_bits) != 0
        if unc is not None:
            bad |= ~np.isfinite(unc)
        values[bad] = np.nan
    shape = (n, geometry.size * geometry.size)
    return SharedWindows(
        values.reshape(shape), outside.reshape(shape), None if mask is None else mask.reshape(shape),
        None if unc is None else unc.reshape(shape), cx, cy,
    )


def _cleaned(clean: Stack) -> NDArray[np.floating]:
    """The whole stack as floats with NaN at its bad pixels (see :class:`Stack`): float32 for float32 (or
    narrower) data, which it holds exactly (half the memory to write and to cut from; every cut is turned into
    float64, the same values the data give as float64), else float64."""
    narrow = clean.data.dtype.kind == "f" and clean.data.dtype.itemsize <= 4
    values: NDArray[np.floating] = clean.data.astype(np.float32 if narrow else np.float64)
    bad = None
    if clean.mask is not None and clean.mask_bits:
        bad = (clean.mask & clean.mask_bits) != 0
    if clean.uncertainty is not None:
        bad = ~np.isfinite(clean.uncertainty) if bad is None else bad | ~np.isfinite(clean.uncertainty)
    if bad is not None:
        values[bad] = np.nan
    return values


class Nearest(NamedTuple):
    """The pixel nearest to each plane's position (0 where the position is not finite) and its offset from the
    centre of the plane's shared window (0 where not finite: such planes have an all-outside window)."""

    px: NDArray[np.int64]
    py: NDArray[np.int64]
    dx: NDArray[np.int64]
    dy: NDArray[np.int64]


def nearest_pixel(
    shared: SharedWindows, x: NDArray[np.float64], y: NDArray[np.float64], geometry: Geometry
) -> tuple[NDArray[np.float64], NDArray[np.float64], Nearest]:
    """``(x, y)`` with 0 where not finite, and the pixel nearest to them (see :class:`Nearest`)."""
    finite = np.isfinite(x) & np.isfinite(y)
    xs = np.where(finite, x, 0.0)
    ys = np.where(finite, y, 0.0)
    px = np.floor(xs + 0.5).astype(np.int64)
    py = np.floor(ys + 0.5).astype(np.int64)
    dx = np.where(finite, px - shared.cx, 0)
    dy = np.where(finite, py - shared.cy, 0)
    if np.abs(dx).max(initial=0) > geometry.shift or np.abs(dy).max(initial=0) > geometry.shift:
        raise RuntimeError("a centre left the shared window")  # cannot happen: see window_geometry
    return xs, ys, Nearest(px, py, dx, dy)


def annulus_in_windows(
    shared: SharedWindows, x: NDArray[np.float64], y: NDArray[np.float64], geometry: Geometry, r_in: float, r_out: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64], Nearest]:
    """Annulus values (NaN where not used), ring membership and nominal count around ``(x, y)``: what
    :func:`~iracdb.photometry.background.annulus_pixels` gives, from the shared windows; and the nearest pixel
    (:class:`Nearest`)."""
    xs, ys, nearest = nearest_pixel(shared, x, y, geometry)
    n, size2 = shared.values.shape
    start = np.arange(n) * size2 + (geometry.half + nearest.dy) * geometry.size + (geometry.half + nearest.dx)
    index = start[:, None] + geometry.ann_flat
    values = shared.values.reshape(-1)[index]
    outside = shared.outside.reshape(-1)[index]
    px = (nearest.px[:, None] + geometry.ann_dx) - xs[:, None]  # as annulus_pixels, operation for operation
    py = (nearest.py[:, None] + geometry.ann_dy) - ys[:, None]
    d2 = px * px + py * py
    ring = (d2 >= r_in * r_in) & (d2 < r_out * r_out)
    return np.where(ring, values, np.nan), ring, np.sum(ring & ~outside, axis=1), nearest


__all__ = ["Geometry", "Nearest", "SharedWindows", "annulus_in_windows", "cut_windows", "nearest_pixel",
           "rebased", "whole_cleaned", "window_geometry"]
