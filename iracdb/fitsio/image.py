"""FITS image file -> plain data, fast: the header cards reduction needs and the pixel array. No SQL here.

:func:`read_image` reads an IRAC Level-1 image (a BCD, its ``_bunc``/``_bimsk`` companions, a subarray cube or a
``_sub2d`` product) with one ``open`` and, for a whole file, one ``read``; the header is split by
:func:`iracdb.fitsio.header.split_header` (no ``astropy.io.fits.Header``) and the pixels are a numpy view of the
bytes read (big-endian, as stored; no copy). A file that cannot be read raises :class:`iracdb.errors.NotIracFile`
with a one-line reason, which reduction records as ``FILE_UNREADABLE`` for that frame (it never stops a run).

:func:`image_info` reads what the photometry needs to know about an image (:class:`ImageInfo`) from its header, and
:func:`wcs_keywords` picks the WCS keywords out of the cards for :meth:`iracdb.photometry.tansip.TanSip.from_keywords`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

from iracdb.errors import BadOption, NotIracFile
from iracdb.fitsio.header import BLOCK_BYTES, HeaderCards, is_subarray, read_header_bytes, split_header
from iracdb.mission import mission_from_mjd
from iracdb.photometry.measure import ImageInfo
from iracdb.photometry.tansip import WCS_KEYWORDS

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = ["FRAME_KEYWORDS", "ImageFile", "image_info", "read_image", "wcs_keywords"]

#: Keywords indexed in :attr:`ImageFile.cards`: structure, identity, times, calibration, pointing and the WCS/SIP.
FRAME_KEYWORDS = frozenset(
    {
        # structure
        "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "BSCALE", "BZERO", "BLANK", "EXTEND", "BUNIT",
        # identity and observation
        "INSTRUME", "AORKEY", "CHNLNUM", "EXPID", "DCENUM", "DCEID", "DPID", "OBJECT", "AORLABEL", "PROGID",
        "READMODE", "AREADMOD", "HDRMODE", "CREATOR", "PROCBITS",
        # time
        "DATE_OBS", "MJD_OBS", "BMJD_OBS", "HMJD_OBS", "AINTBEG", "ATIMEEND",
        # exposure and calibration
        "FRAMTIME", "EXPTIME", "SAMPTIME", "AFOWLNUM", "GAIN", "RONOISE", "FLUXCONV", "ZODY_EST", "ISM_EST",
        # pointing
        "PXSCAL1", "PXSCAL2", "RA_REF", "DEC_REF", "RA_RQST", "DEC_RQST", "PA", "RADESYS", "EQUINOX",
    }
) | WCS_KEYWORDS  # fmt: skip

_NUMERIC_WCS_KEYWORDS = WCS_KEYWORDS - {"CTYPE1", "CTYPE2"}
#: FITS BITPIX -> numpy dtype as stored (big-endian).
_DTYPES: dict[int, np.dtype] = {8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8"),
           -32: np.dtype(">f4"), -64: np.dtype(">f8")}  # fmt: skip
#: Files up to this size are read whole in one system call; larger ones header first, then only the data.
WHOLE_READ_BYTES = 8 << 20
#: Bytes read for the header when the whole file is not read at once (a 670-card IRAC header is 54,720 bytes).
HEADER_READ_BYTES = 40 * BLOCK_BYTES


@dataclass(frozen=True)
class ImageFile:
    """One image file read by :func:`read_image`.

    Attributes
    ----------
    path : str
        The file read.
    cards : iracdb.fitsio.header.HeaderCards
        Every card of the primary header, :data:`FRAME_KEYWORDS` indexed (``cards.get("EXPTIME", float)``).
    data : numpy.ndarray
        ``(n, ny, nx)`` pixels (a 2-D image is ``n = 1``), in the header's unit (``BUNIT``, MJy/sr for a BCD).
        Pixels as stored (big-endian), a view of the bytes read (no copy); integer data (masks) scaled by
        ``BSCALE``/``BZERO`` when they are not 1/0 (unsigned integers for the usual ``BZERO = 2**(BITPIX-1)``), as
        ``astropy.io.fits.getdata`` returns it. With ``rows``, NaN outside the band.
    size_bytes : int
        File size, bytes.
    mtime_ns : int
        File modification time, ns since the epoch.
    """

    path: str
    cards: HeaderCards
    data: NDArray[Any]
    size_bytes: int
    mtime_ns: int

    @property
    def n_planes(self) -> int:
        """Number of planes (64 for a subarray cube, 1 for a 2-D image)."""
        return int(self.data.shape[0])


def read_image(
    path: str | os.PathLike[str],
    *,
    size_bytes: int | None = None,
    mtime_ns: int | None = None,
    rows: tuple[int, int] | None = None,
) -> ImageFile:
    """Read the primary header and image of a FITS file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    size_bytes, mtime_ns : int, optional
        The file's size (bytes) and modification time (ns) as catalogued at ingest; a file whose size or
        modification time differs raises ``NotIracFile("changed since ingest: ...")`` before it is read.
    rows : (int, int), optional
        Read only rows ``y0 <= y < y1`` (0-based, clipped to the image) of every plane: the rest of the pixel data
        is not read, and the returned array has the full shape with NaN outside the band (so that pixel
        coordinates keep their meaning). Floating-point data only (``ValueError`` otherwise).

    Returns
    -------
    ImageFile
        Header cards and ``(n, ny, nx)`` data.

    Raises
    ------
    NotIracFile
        The file is missing or unreadable, changed since ingest, not FITS, truncated, or not an image with a
        supported ``BITPIX`` (8, 16, 32, 64, -32, -64) and ``NAXIS`` (2 or 3). The message names the problem.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY)
    except FileNotFoundError:
        raise NotIracFile("file not found") from None
    except OSError as exc:
        raise NotIracFile(f"cannot be opened: {exc.strerror or exc}") from None
    try:
        stat = os.fstat(fd)
        _check_unchanged(stat, size_bytes, mtime_ns)
        size = stat.st_size
        whole = rows is None and size <= WHOLE_READ_BYTES
        buffer = read_header_bytes(
            _read_at(fd, 0, size if whole else min(size, HEADER_READ_BYTES)),
            lambda have: _read_at(fd, have, max(0, min(size - have, 4 * HEADER_READ_BYTES))),
        )
        cards = split_header(buffer, FRAME_KEYWORDS)
        header_end = cards.header_bytes
        dtype, shape, scale = _layout(cards)
        count = shape[0] * shape[1] * shape[2]
        nbytes = count * dtype.itemsize
        if size < header_end + nbytes:
            raise NotIracFile(
                f"truncated FITS file: {size} bytes, its header promises {header_end + nbytes} "
                f"({header_end} of header, {nbytes} of data)"
            )
        if rows is not None:
            data = _read_band(fd, header_end, dtype, shape, rows)
        else:
            if len(buffer) < header_end + nbytes:
                buffer = _read_at(fd, header_end, nbytes)
                offset = 0
            else:
                offset = header_end
            data = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
            if scale is not None:
                data = _scaled(data, *scale, cards)
    except OSError as exc:
        raise NotIracFile(f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return ImageFile(path=name, cards=cards, data=data, size_bytes=size, mtime_ns=stat.st_mtime_ns)


def wcs_keywords(cards: HeaderCards) -> dict[str, float | str | None]:
    """The WCS keywords present in ``cards`` (CTYPE as text, the rest as numbers), for ``TanSip.from_keywords``.

    Parameters
    ----------
    cards : iracdb.fitsio.header.HeaderCards
        Header cards indexed with (at least) :data:`iracdb.photometry.tansip.WCS_KEYWORDS`, e.g.
        :attr:`ImageFile.cards`.

    Returns
    -------
    dict
        Keyword -> value; a value that is not a number is passed on as text (``from_keywords`` says what is wrong).
    """
    index = cards.index
    keys = index.keys() & _NUMERIC_WCS_KEYWORDS
    out: dict[str, float | str | None]
    try:  # the usual fixed-format numbers, without the general parser (several times faster)
        out = {key: float(cards.value_field(index[key]).partition("/")[0]) for key in keys}
    except ValueError:
        out = {}
        for key in keys:
            try:
                out[key] = cards.get(key, float)
            except NotIracFile:
                out[key] = cards.get(key, str)
    for key in ("CTYPE1", "CTYPE2"):
        if key in index:
            out[key] = cards.get(key, str)
    return out


def image_info(
    header: HeaderCards | fits.Header, *, channel: int | None = None, mission: str | None = None
) -> ImageInfo:
    """What the photometry needs to know about an IRAC image, from its primary header.

    Parameters
    ----------
    header : iracdb.fitsio.header.HeaderCards or astropy.io.fits.Header
        The primary header: :attr:`ImageFile.cards`, or e.g. ``astropy.io.fits.getheader(path)``.
    channel : int, optional
        IRAC channel, 1-4. Default: ``CHNLNUM``.
    mission : {"warm", "cryo"}, optional
        The mission whose correction coefficients apply. Default: from ``MJD_OBS``
        (:func:`iracdb.mission.mission_from_mjd`). Reduction passes the catalogue's channel and the run's correction
        mission (``--corrections`` may force one).

    Returns
    -------
    ImageInfo
        Channel, mission, subarray (:func:`iracdb.fitsio.header.is_subarray`), and ``GAIN`` (electrons/DN),
        ``RONOISE`` (electrons), ``EXPTIME`` (s), ``FLUXCONV`` ((MJy/sr)/(DN/s)), ``PXSCAL1``/``PXSCAL2``
        (arcsec/pixel), each None when the header lacks it.

    Raises
    ------
    iracdb.errors.BadOption
        ``channel`` or ``mission`` is not given and the header lacks ``CHNLNUM`` or ``MJD_OBS``.
    iracdb.errors.NotIracFile
        One of these keywords has a value that is not a number.
    """
    cards = header if isinstance(header, HeaderCards) else split_header(header.tostring().encode("ascii"))
    if channel is None:
        channel = cards.get("CHNLNUM", int)
    if mission is None:
        mjd = cards.get("MJD_OBS", float)
        mission = None if mjd is None else mission_from_mjd(mjd)
    if channel is None or mission is None:
        raise BadOption("the header lacks CHNLNUM or MJD_OBS; is this an IRAC BCD header?")
    return ImageInfo(
        channel=channel, mission=cast(Literal["warm", "cryo"], mission), subarray=is_subarray(cards),
        gain=cards.get("GAIN", float), ronoise=cards.get("RONOISE", float), exptime=cards.get("EXPTIME", float),
        fluxconv=cards.get("FLUXCONV", float), pxscal1=cards.get("PXSCAL1", float),
        pxscal2=cards.get("PXSCAL2", float),
    )


# ----------------------------------------------------------------------------------------------------------------
# steps
# ----------------------------------------------------------------------------------------------------------------


def _check_unchanged(stat: os.stat_result, size_bytes: int | None, mtime_ns: int | None) -> None:
    changes = []
    if size_bytes is not None and stat.st_size != size_bytes:
        changes.append(f"size {stat.st_size} bytes, catalogued {size_bytes}")
    if mtime_ns is not None and stat.st_mtime_ns != mtime_ns:
        changes.append(f"mtime {stat.st_mtime_ns} ns, catalogued {mtime_ns}")
    if changes:
        raise NotIracFile("changed since ingest: " + "; ".join(changes) + " (run `iracdb ingest` again)")


def _read_at(fd: int, offset: int, nbytes: int) -> bytearray:
    """``nbytes`` from ``offset`` into a new buffer (one system call for a regular file; short only at EOF)."""
    buffer = bytearray(nbytes)
    view = memoryview(buffer)
    done = 0
    while done < nbytes:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            del buffer[done:]
            break
        done += got
    return buffer


def _layout(cards: HeaderCards) -> tuple[np.dtype, tuple[int, int, int], tuple[float, float] | None]:
    """dtype as stored, ``(n, ny, nx)`` and the (BSCALE, BZERO) to apply (None for none) of the primary image."""
    bitpix = cards.get("BITPIX", int)
    naxis = cards.get("NAXIS", int)
    axes = [cards.get(f"NAXIS{i}", int) for i in range(1, (naxis or 0) + 1)] if naxis in (2, 3) else []
    bscale = cards.get("BSCALE", float)
    bzero = cards.get("BZERO", float)
    if bitpix is None or naxis is None:
        raise NotIracFile("FITS header lacks BITPIX or NAXIS")
    dtype = _DTYPES.get(bitpix)
    if dtype is None:
        raise NotIracFile(f"unsupported BITPIX = {bitpix} (not 8, 16, 32, 64, -32 or -64)")
    if naxis not in (2, 3):
        raise NotIracFile(f"unsupported NAXIS = {naxis}: not a 2-D image or a cube")
    if any(length is None or length <= 0 for length in axes):
        raise NotIracFile(f"FITS header has no usable NAXIS1..NAXIS{naxis} ({axes})")
    shape = (axes[2] if naxis == 3 else 1, axes[1], axes[0])
    scale = None
    if (bscale is not None and bscale != 1.0) or (bzero is not None and bzero != 0.0):
        scale = (1.0 if bscale is None else bscale, 0.0 if bzero is None else bzero)
    return dtype, shape, scale


def _scaled(data: NDArray, bscale: float, bzero: float, cards: HeaderCards) -> NDArray:
    """Physical values ``BZERO + BSCALE * stored`` as astropy returns them (unsigned ints for the usual offset)."""
    kind = data.dtype.kind
    bits = data.dtype.itemsize * 8
    if bscale == 1.0 and ((kind == "i" and bzero == 2 ** (bits - 1)) or (kind == "u" and bzero == -128)):
        # Adding 2**(bits-1) modulo 2**bits flips the sign bit: int16 + 32768 -> uint16, uint8 - 128 -> int8.
        flipped = data.view(data.dtype.str.replace("i", "u")).astype(f"=u{data.dtype.itemsize}")
        flipped ^= np.array(1 << (bits - 1), dtype=flipped.dtype)
        return flipped if kind == "i" else flipped.view(np.int8)
    out_dtype = np.dtype(np.float32 if kind in "iu" and bits <= 16 else np.float64)
    out = data.astype(out_dtype) * out_dtype.type(bscale) + out_dtype.type(bzero)
    blank = cards.get("BLANK", int) if kind in "iu" else None
    if blank is not None:
        out[data == blank] = np.nan
    return out


def _read_band(
    fd: int, header_end: int, dtype: np.dtype, shape: tuple[int, int, int], rows: tuple[int, int]
) -> NDArray[np.floating]:
    """Rows ``y0 <= y < y1`` of every plane straight from the file; NaN elsewhere."""
    if dtype.kind != "f":
        raise ValueError(f"rows= needs floating-point data (NaN outside the band), not BITPIX {dtype.name}")
    n, ny, nx = shape
    y0, y1 = max(0, int(rows[0])), min(ny, int(rows[1]))
    out = np.full(shape, np.nan, dtype=dtype)
    if y1 <= y0:
        return out
    row_bytes = nx * dtype.itemsize
    plane_bytes = ny * row_bytes
    flat = out.reshape(-1).view(np.uint8).data  # a memoryview of the bytes of `out`
    for k in range(n):
        start = k * plane_bytes + y0 * row_bytes
        stop = k * plane_bytes + y1 * row_bytes
        got = os.preadv(fd, [flat[start:stop]], header_end + start)
        if got != stop - start:
            raise NotIracFile("truncated FITS file: the data ends inside the requested rows")
    return out
