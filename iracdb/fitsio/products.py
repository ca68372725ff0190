"""IRAC Level-1 products -> what ingest catalogues: identity, product kind and header columns. No SQL here.

:func:`read_irac_file` reads a file's primary header (see :mod:`iracdb.fitsio.header`) and checksums the file;
pixel data is never decoded, only hashed.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat as stat_module
from dataclasses import dataclass, field
from typing import Any

from iracdb.errors import BadOption, NotIracFile
from iracdb.fitsio.header import HeaderCards, data_bytes, is_subarray, n_planes, read_header_bytes, split_header
from iracdb.mission import mission_from_mjd

#: Product kinds, in order of preference as the source of an exposure's catalogued header columns.
KINDS = ("bcd", "cbcd", "bunc", "cbunc", "bimsk", "sub2d", "unc2d", "cov2d", "msk2d")
#: Kinds whose header carries the full set of observation keywords.
SCIENCE_KINDS = ("bcd", "cbcd")
UNCERTAINTY_KIND = {"bcd": "bunc", "cbcd": "cbunc"}
_SUFFIX = re.compile(r"_(" + "|".join(KINDS) + r")\.fits?$", re.IGNORECASE)

#: Keywords without which a file cannot be catalogued at all.
IDENTITY_KEYWORDS = ("AORKEY", "CHNLNUM", "EXPID")
#: Keywords an exposure row cannot do without (taken from the best file of the exposure).
EXPOSURE_KEYWORDS = ("DCENUM", "MJD_OBS")

#: Header keyword -> (exposure column, type). Physical units are in the column names (see db/models.py).
EXPOSURE_COLUMNS: dict[str, tuple[str, type]] = {
    "DCEID": ("dceid", int),
    "DPID": ("dpid", int),
    "SOS_VER": ("sos_ver", int),
    "CREATOR": ("creator", str),
    "OBJECT": ("object", str),
    "FOVNAME": ("fovname", str),
    "READMODE": ("read_mode", str),
    "AREADMOD": ("areadmod", int),
    "HDRMODE": ("hdr_mode", bool),
    "HDRFRAME": ("hdr_frame", str),
    "CYCLENUM": ("cycle_num", int),
    "DITHPOS": ("dither_pos", int),
    "DITHSCAL": ("dither_scale", str),
    "DATE_OBS": ("date_obs", str),
    "MJD_OBS": ("mjd_obs", float),
    "BMJD_OBS": ("bmjd_obs", float),
    "HMJD_OBS": ("hmjd_obs", float),
    "AINTBEG": ("aintbeg_s", float),
    "ATIMEEND": ("atimeend_s", float),
    "FRAMTIME": ("frame_time_s", float),
    "EXPTIME": ("exposure_time_s", float),
    "SAMPTIME": ("sample_time_s", float),
    "AFOWLNUM": ("fowler_number", int),
    "BUNIT": ("bunit", str),
    "FLUXCONV": ("fluxconv", float),
    "GAIN": ("gain_e_per_dn", float),
    "RONOISE": ("read_noise_e", float),
    "ZODY_EST": ("zody_est_mjy_sr", float),
    "ISM_EST": ("ism_est_mjy_sr", float),
    "CRVAL1": ("crval1_deg", float),
    "CRVAL2": ("crval2_deg", float),
    "CRPIX1": ("crpix1", float),
    "CRPIX2": ("crpix2", float),
    "RA_REF": ("ra_ref_deg", float),
    "DEC_REF": ("dec_ref_deg", float),
    "RA_RQST": ("ra_rqst_deg", float),
    "DEC_RQST": ("dec_rqst_deg", float),
    "PM_RA": ("pm_ra_arcsec_yr", float),
    "PM_DEC": ("pm_dec_arcsec_yr", float),
    "PA": ("pa_deg", float),
    "PXSCAL1": ("pxscal1_arcsec", float),
    "PXSCAL2": ("pxscal2_arcsec", float),
    "RMS_JIT": ("rms_jitter_arcsec", float),
    "PTGDIFF": ("pointing_diff_arcsec", float),
    "NAXIS1": ("naxis1", int),
    "NAXIS2": ("naxis2", int),
}
#: Header keyword -> (AOR column, type).
AOR_COLUMNS: dict[str, tuple[str, type]] = {
    "OBJECT": ("object", str),
    "AORLABEL": ("aor_label", str),
    "PROGID": ("program_id", int),
    "AOT_TYPE": ("aot_type", str),
    "READMODE": ("read_mode", str),
}


#: Every keyword ingest looks at (structure, identity, kind detection and the catalogued columns).
INGEST_KEYWORDS = frozenset(
    {"BITPIX", "NAXIS", *(f"NAXIS{n}" for n in range(1, 10)), "INSTRUME", "CHNLNUM", "AORKEY", "EXPID", "DCENUM",
     "DPID", "READMODE", "AREADMOD", "PROCBITS", "OLRCUTOF", "CTYPE1", "SATSRCFX", "CLPLDNFX", "PULLSFAC"}
    | set(EXPOSURE_COLUMNS)
    | set(AOR_COLUMNS)
    | set(IDENTITY_KEYWORDS)
    | set(EXPOSURE_KEYWORDS)
)


@dataclass
class FileRecord:
    """What ingest learns from one IRAC Level-1 file."""

    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    kind: str
    aorkey: int
    channel: int
    expid: int
    dcenum: int | None
    dpid: int | None
    header_text: str
    n_header_cards: int
    exposure: dict[str, Any] = field(default_factory=dict)
    aor: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rejection:
    """A file that could not be catalogued, and why."""

    path: str
    size_bytes: int
    mtime_ns: int
    reason: str


def product_kind(path: str, header: HeaderCards) -> str:
    """The product kind of an IRAC Level-1 file (bcd, cbcd, bunc, cbunc, bimsk, sub2d, unc2d, cov2d, msk2d).

    The header decides what it can: integer pixels are a mask (a cube, or with PROCBITS: ``bimsk``; a median-collapsed
    subarray product: ``cov2d`` with its outlier cut-off, else ``msk2d``), a 2-D float image from a subarray AOR is
    ``sub2d`` (with a WCS) or ``unc2d``. An image and its uncertainty share every identifying keyword, so between
    bcd/bunc and cbcd/cbunc the archive's product suffix (``_bcd.fits`` ...) decides; without one, an image without
    FLUXCONV and READMODE is ``bunc``, one with PULLSFAC ``cbunc``, one with the artifact-correction keywords
    ``cbcd``, else ``bcd``.
    """
    match = _SUFFIX.search(os.path.basename(path))
    suffix = match.group(1).lower() if match else None
    bitpix = header.get("BITPIX", int)
    naxis = header.get("NAXIS", int) or 0
    subarray_2d = naxis == 2 and is_subarray(header)
    if bitpix is not None and bitpix > 0:
        if naxis == 3 or "PROCBITS" in header:
            return "bimsk"
        if suffix in ("cov2d", "msk2d"):
            return suffix
        return "cov2d" if "OLRCUTOF" in header else "msk2d"
    if subarray_2d and "AREADMOD" not in header:
        return suffix if suffix in ("sub2d", "unc2d") else ("sub2d" if "CTYPE1" in header else "unc2d")
    if subarray_2d and suffix == "sub2d":
        return "sub2d"
    if suffix in ("bcd", "cbcd", "bunc", "cbunc"):
        return suffix
    if subarray_2d:
        return "sub2d"
    corrected = "SATSRCFX" in header or "CLPLDNFX" in header
    # Without the suffix: an uncertainty image carries no calibration keywords (a raw-style header: the real
    # subarray _bunc), or the pulldown noise scaling of a _cbunc.
    if "FLUXCONV" not in header and "READMODE" not in header:
        return "bunc"
    if "PULLSFAC" in header:
        return "cbunc"
    return "cbcd" if corrected else "bcd"


#: Bytes read at a time: a whole Level-1 file (at most ~400 kB) in one read, memory bounded for anything larger.
READ_CHUNK_BYTES = 1 << 20


#: Integer columns stored as 64-bit; every other integer column is 32-bit (as on PostgreSQL).
_BIGINT_COLUMNS = frozenset({"dceid", "dpid"})
_INT_LIMITS = {False: 2**31, True: 2**63}


def _check_irac_level1(header: HeaderCards, size: int) -> None:
    """Raise :class:`NotIracFile` unless the file is whole, IRAC's, and has the keywords of a Level-1 product."""
    expected = header.header_bytes + data_bytes(header)
    if size < expected:
        raise NotIracFile(f"truncated FITS file: {size} bytes, the header promises at least {expected}")
    instrument = header.get("INSTRUME")
    if instrument is None or instrument.strip().upper() != "IRAC":
        shown = "no INSTRUME keyword" if instrument is None else f"INSTRUME = {instrument!r}"
        raise NotIracFile(f"FITS but not an IRAC file ({shown})")
    missing = [key for key in IDENTITY_KEYWORDS if header.get(key, str) is None]
    if missing:
        raise NotIracFile(f"IRAC file lacks required keyword(s) {', '.join(missing)}: not a Level-1 product")


def _check_exposure_link(header: HeaderCards, kind: str, dcenum: int | None, dpid: int | None) -> None:
    """Raise :class:`NotIracFile` when a file cannot be linked to its exposure: an image without the exposure's
    keywords, or a subarray product (``*2d``) with neither DCENUM nor DPID."""
    if kind not in ("sub2d", "unc2d", "cov2d", "msk2d"):
        missing = [key for key in EXPOSURE_KEYWORDS if header.get(key, str) is None]
        if missing:
            raise NotIracFile(f"IRAC {kind} file lacks required keyword(s) {', '.join(missing)}")
    elif dcenum is None and dpid is None:
        raise NotIracFile(f"IRAC {kind} file has neither DCENUM nor DPID: cannot link it to its exposure")


def _check_integer_ranges(values: dict[str, Any]) -> None:
    """Reject integers the database columns cannot hold (SQLite would take them, PostgreSQL would not)."""
    for column, value in values.items():
        if isinstance(value, int) and not isinstance(value, bool):
            limit = _INT_LIMITS[column in _BIGINT_COLUMNS or column == "aorkey"]
            if not -limit <= value < limit:
                raise NotIracFile(f"{column} = {value} is out of range for an IRAC header value")


def not_regular(mode: int) -> str | None:
    """Why a file of ``st_mode`` ``mode`` is not read: None for a regular file, else what it is."""
    if stat_module.S_ISREG(mode):
        return None
    kinds = ((stat_module.S_ISFIFO, "a FIFO (named pipe)"), (stat_module.S_ISSOCK, "a socket"),
             (stat_module.S_ISCHR, "a character device"), (stat_module.S_ISBLK, "a block device"),
             (stat_module.S_ISDIR, "a folder"))
    what = next((name for test, name in kinds if test(mode)), "an unknown kind of file")
    return f"{what}, not a regular file: only regular files are read"


def read_irac_file(path: str) -> FileRecord | Rejection:
    """Read one file: parse its primary header, decide whether it is an IRAC Level-1 file, and checksum it.

    The file is read in chunks (memory stays bounded whatever its size); a file that does not start like FITS is
    rejected after its first chunk, unhashed. Anything but a regular file (a FIFO, a socket, a device) is rejected
    unread. Never raises for a bad file: returns a :class:`Rejection`.
    """
    return record_of(read_and_hash(path))


@dataclass(frozen=True)
class ReadFile:
    """A file read and checksummed, its header not parsed yet (:func:`read_and_hash`; :func:`record_of` parses)."""

    path: str
    #: The file's first bytes, the whole primary header included (unless the file is truncated).
    head: bytes
    size_bytes: int
    mtime_ns: int
    sha256: str


def read_and_hash(path: str) -> ReadFile | Rejection:
    """The I/O half of :func:`read_irac_file`: read the file in chunks, keep its header blocks, checksum it all.

    Almost all its time is spent without the GIL (reading, hashing), so a thread can run it while another parses
    and writes. Never raises for a bad file: returns a :class:`Rejection`.
    """
    opened = _opened(path)
    if isinstance(opened, Rejection):
        return opened
    fd, stat = opened
    try:
        with open(fd, "rb") as handle:
            # A usual file in one read of its size (+1: one that grew meanwhile is still read to its end below): a
            # buffer of READ_CHUNK_BYTES for a 100 kB file would cost more than the read.
            head = read_header_bytes(handle.read(min(READ_CHUNK_BYTES, stat.st_size + 1)),
                                     lambda _: handle.read(READ_CHUNK_BYTES))
            digest = hashlib.sha256(head)
            size = len(head)
            for chunk in iter(lambda: handle.read(READ_CHUNK_BYTES), b""):
                digest.update(chunk)
                size += len(chunk)
        return ReadFile(path, head, size, stat.st_mtime_ns, digest.hexdigest())
    except OSError as exc:
        return Rejection(path, 0, 0, f"cannot be read: {exc.strerror or exc}")
    except NotIracFile as exc:
        return Rejection(path, stat.st_size, stat.st_mtime_ns, str(exc))


#: Bytes :func:`read_head` reads first: the header blocks of every IRAC Level-1 file (a BCD's ~670 cards: 53.6 kB).
HEAD_BYTES = 1 << 16


def read_head(path: str) -> tuple[bytes, os.stat_result] | Rejection:
    """A file's first bytes, its whole primary header included (unless the file is truncated), and its status
    when opened; the rest of the file is not read. A file that :func:`read_and_hash` would reject before hashing
    (unreadable, not a regular file, not starting like FITS) is rejected with the same reason. Never raises for a
    bad file."""
    opened = _opened(path)
    if isinstance(opened, Rejection):
        return opened
    fd, stat = opened
    try:
        return read_header_bytes(os.read(fd, HEAD_BYTES), lambda _: os.read(fd, HEAD_BYTES)), stat
    except OSError as exc:
        return Rejection(path, 0, 0, f"cannot be read: {exc.strerror or exc}")
    except NotIracFile as exc:
        return Rejection(path, stat.st_size, stat.st_mtime_ns, str(exc))
    finally:
        os.close(fd)


def _opened(path: str) -> tuple[int, os.stat_result] | Rejection:
    """``path`` opened for reading (a file descriptor, for the caller to close), and its status; a Rejection if it
    cannot be, or is not a regular file."""
    try:
        # Non-blocking: opening a FIFO for reading would otherwise wait for a writer forever (it makes no
        # difference to a regular file). What was opened is checked before a byte is read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        return Rejection(path, 0, 0, f"cannot be read: {exc.strerror or exc}")
    try:
        stat = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        return Rejection(path, 0, 0, f"cannot be read: {exc.strerror or exc}")
    problem = not_regular(stat.st_mode)
    if problem is not None:
        os.close(fd)
        return Rejection(path, stat.st_size, stat.st_mtime_ns, problem)
    return fd, stat


def record_of(read: ReadFile | Rejection) -> FileRecord | Rejection:
    """The parsing half of :func:`read_irac_file`: what a file read by :func:`read_and_hash` is (a rejection
    stays one). Never raises for a bad file: returns a :class:`Rejection`."""
    if isinstance(read, Rejection):
        return read
    try:
        return _record_from_header(read.path, read.head, read.size_bytes, read.mtime_ns, read.sha256)
    except NotIracFile as exc:
        return Rejection(read.path, read.size_bytes, read.mtime_ns, str(exc))


#: (keyword, column, type) of the exposure's and the AOR's header columns, for :func:`_values`.
_EXPOSURE_SPEC = tuple((key, column, kind) for key, (column, kind) in EXPOSURE_COLUMNS.items())
_AOR_SPEC = tuple((key, column, kind) for key, (column, kind) in AOR_COLUMNS.items())


def _values(header: HeaderCards, spec: tuple[tuple[str, str, type], ...]) -> dict[str, Any]:
    """column -> ``header.get(keyword, type)`` for each of ``spec``, the same values, some 2x faster.

    The usual cards (a plain number; a quoted string with no quote inside, not continued) are parsed here with the
    very conversions :func:`~iracdb.fitsio.header.parse_value` makes (``int``/``float`` of the value field before
    any comment); anything else (an empty value, a D exponent, a boolean, a long string...) goes to
    :meth:`HeaderCards.get`, which also raises its errors.
    """
    index, value_field = header.index, header.value_field
    values: dict[str, Any] = {}
    for keyword, column, kind in spec:
        position = index.get(keyword)
        if position is None:
            values[column] = None
            continue
        raw = value_field(position)
        if kind is str:
            text = raw.lstrip()
            end = text.find("'", 1) if text[:1] == "'" else -1
            if end > 0 and text[end + 1 : end + 2] != "'":
                value = text[1:end].strip()
                if not value.endswith("&"):
                    values[column] = value or None
                    continue
        elif kind is float or kind is int:
            try:
                values[column] = kind(raw.partition("/")[0])
                continue
            except ValueError:
                pass
        values[column] = header.get(keyword, kind)
    return values


def _record_from_header(path: str, head: bytes, size: int, mtime_ns: int, sha256: str) -> FileRecord:
    """``head``: the file's first bytes, the whole primary header included; ``size``: the file's bytes."""
    header = split_header(head, INGEST_KEYWORDS)
    _check_irac_level1(header, size)
    kind = product_kind(path, header)
    aorkey = header.get("AORKEY", int)
    if aorkey <= 0:
        raise NotIracFile(f"AORKEY must be a positive integer, not {aorkey}")
    channel = header.get("CHNLNUM", int)
    expid = header.get("EXPID", int)
    dcenum = header.get("DCENUM", int)
    dpid = header.get("DPID", int)
    _check_exposure_link(header, kind, dcenum, dpid)

    exposure = _values(header, _EXPOSURE_SPEC)
    _check_integer_ranges({**exposure, "aorkey": aorkey, "expid": expid, "dcenum": dcenum, "channel": channel})
    if channel not in (1, 2, 3, 4):
        raise NotIracFile(f"CHNLNUM = {channel} is not an IRAC channel (1-4)")
    exposure["n_planes"] = n_planes(header)
    if exposure["mjd_obs"] is not None:
        try:
            exposure["mission"] = mission_from_mjd(exposure["mjd_obs"])
        except BadOption as exc:
            raise NotIracFile(str(exc)) from exc
    exposure["header_source_kind"] = kind
    aor = _values(header, _AOR_SPEC)
    return FileRecord(
        path=path,
        size_bytes=size,
        mtime_ns=mtime_ns,
        sha256=sha256,
        kind=kind,
        aorkey=aorkey,
        channel=channel,
        expid=expid,
        dcenum=dcenum,
        dpid=dpid,
        header_text=header.text(),
        n_header_cards=header.n_cards,
        exposure=exposure,
        aor=aor,
    )
