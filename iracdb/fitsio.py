"""FITS -> plain data: IRAC Level-1 headers, identity and product kind. No SQL here.

Headers are parsed straight from the file's header blocks (2880-byte blocks of 80-character cards), which is an
order of magnitude faster than building an ``astropy.io.fits.Header``; pixel data is never decoded, only hashed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat as stat_module
from dataclasses import dataclass, field
from typing import Any

from iracdb.errors import BadOption
from iracdb.mission import mission_from_mjd

BLOCK_BYTES = 2880
CARD_BYTES = 80

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


class FitsReadError(Exception):
    """A file that cannot be catalogued; the message is the reason recorded for it."""


@dataclass(frozen=True)
class HeaderCards:
    """A primary header: its cards, and where each keyword's first card is."""

    cards: list[str]
    #: keyword -> index in ``cards`` of its first ``KEYWORD = value`` card
    index: dict[str, int]
    header_bytes: int

    def text(self) -> str:
        """The header as text, one card per line, trailing blanks removed (pad to 80 to restore the cards)."""
        return "\n".join(map(str.rstrip, self.cards))

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.index

    def get(self, keyword: str, kind: type = str) -> Any:
        """The value of ``keyword`` as ``kind`` (str, int, float or bool), or None when absent or blank.

        A long string continued over ``CONTINUE`` cards (the FITS long-string convention) is joined.
        """
        position = self.index.get(keyword)
        if position is None:
            return None
        raw = self.cards[position][10:]
        try:
            value = parse_value(raw, kind)
            if kind is str and value is not None:
                following = self.cards[position + 1 :]
                for card in following:
                    if not (value.endswith("&") and card.startswith("CONTINUE")):
                        break
                    value = value[:-1] + (parse_value(card[8:], str) or "")
            return value
        except ValueError as exc:
            raise FitsReadError(f"keyword {keyword} has an unreadable value {raw.strip()!r}") from exc


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


def parse_value(raw: str, kind: type = str) -> Any:
    """Parse the value field of a card (the text after ``= ``) as ``kind``; None for an empty value."""
    text = raw.strip()
    if text.startswith("'"):
        value, _ = _parse_string(text)
        if kind is str:
            # Catalogue values are stripped both sides (e.g. HDRFRAME = '    long'); header_text keeps the card.
            return value.strip() or None
        text = value.strip()
    else:
        text = text.split("/", 1)[0].strip()
    if text == "":
        return None
    if kind is str:
        return text
    if kind is bool:
        if text in ("T", "F"):
            return text == "T"
        raise ValueError(text)
    if kind is int:
        try:
            return int(text)
        except ValueError:
            number = float(text.replace("D", "E"))
            if not number.is_integer():
                raise
            return int(number)
    return float(text.replace("D", "E"))


def _parse_string(text: str) -> tuple[str, str]:
    # FITS strings are quoted with ' and a doubled '' stands for one quote.
    end = text.find("'", 1)
    if end == -1:
        raise ValueError(f"unterminated string {text!r}")
    if text[end + 1 : end + 2] != "'":
        return text[1:end], text[end + 1 :]  # the usual case: no quote inside
    out = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == "'":
            if text[i + 1 : i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), text[i + 1 :]
        out.append(char)
        i += 1
    raise ValueError(f"unterminated string {text!r}")


_END_CARD = b"END" + b" " * 77
_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
_PRINTABLE = bytes(range(0x20, 0x7F))


def split_header(data: bytes, keywords: frozenset[str] | None = None) -> HeaderCards:
    """Split the primary header at the start of ``data`` into cards; raise FitsReadError if it is not FITS.

    With ``keywords``, only those keywords are indexed (every card is still kept); ingest needs ~70 of a BCD's
    ~670 cards, and skipping the rest halves the parsing time.
    """
    if not data.startswith(b"SIMPLE  ="):
        raise FitsReadError("not a FITS file (it does not start with a SIMPLE card)")
    position = find_end_card(data)
    if position == -1:
        raise FitsReadError(f"truncated FITS header: it stops after {len(data)} bytes without an END card")
    # translate() is a fast C loop; the regex only runs to say where a bad byte is.
    bad = _NOT_PRINTABLE.search(data, 0, position) if data[:position].translate(None, _PRINTABLE) else None
    if bad is not None:
        raise FitsReadError(
            f"not valid FITS: header card {bad.start() // CARD_BYTES + 1} holds the byte 0x{data[bad.start()]:02x} "
            "(header cards must be printable ASCII)"
        )
    header_bytes = (position // BLOCK_BYTES + 1) * BLOCK_BYTES
    text = data[:position].decode("ascii")
    cards = [text[start : start + CARD_BYTES] for start in range(0, position, CARD_BYTES)]
    # Reversed so that the first occurrence of a repeated keyword wins, as in astropy.
    numbered = range(len(cards) - 1, -1, -1)
    if keywords is None:
        index = {cards[i][:8].rstrip(): i for i in numbered if cards[i][8:10] == "= "}
    else:
        padded = _padded(keywords)
        index = {cards[i][:8].rstrip(): i for i in numbered if cards[i][:8] in padded and cards[i][8:10] == "= "}
    return HeaderCards(cards=cards, index=index, header_bytes=header_bytes)


def find_end_card(data: bytes) -> int:
    """Offset of the END card in ``data`` (on a card boundary), or -1 when there is none yet."""
    position = data.find(_END_CARD)
    while position != -1 and position % CARD_BYTES:
        position = data.find(_END_CARD, position + 1)  # an END inside a card's text: not the END card
    return position


@functools.cache
def _padded(keywords: frozenset[str]) -> frozenset[str]:
    return frozenset(keyword.ljust(8) for keyword in keywords)


def data_bytes(header: HeaderCards) -> int:
    """Size of the primary data array in bytes (unpadded), from BITPIX and NAXISn."""
    bitpix = header.get("BITPIX", int)
    naxis = header.get("NAXIS", int)
    if bitpix is None or naxis is None:
        raise FitsReadError("FITS header lacks BITPIX or NAXIS")
    if naxis == 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        length = header.get(f"NAXIS{axis}", int)
        if length is None:
            raise FitsReadError(f"FITS header lacks NAXIS{axis}")
        count *= length
    return count * abs(bitpix) // 8


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
    subarray_2d = naxis == 2 and (header.get("READMODE") or "").upper() == "SUB"
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


def _check_integer_ranges(values: dict[str, Any]) -> None:
    """Reject integers the database columns cannot hold (SQLite would take them, PostgreSQL would not)."""
    for column, value in values.items():
        if isinstance(value, int) and not isinstance(value, bool):
            limit = _INT_LIMITS[column in _BIGINT_COLUMNS or column == "aorkey"]
            if not -limit <= value < limit:
                raise FitsReadError(f"{column} = {value} is out of range for an IRAC header value")


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
    try:
        # Non-blocking: opening a FIFO for reading would otherwise wait for a writer forever (it makes no
        # difference to a regular file). What was opened is checked before a byte is read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as handle:
            stat = os.fstat(handle.fileno())
            problem = not_regular(stat.st_mode)
            if problem is not None:
                raise FitsReadError(problem)
            head = handle.read(READ_CHUNK_BYTES)
            if not head.startswith(b"SIMPLE  ="):
                raise FitsReadError("not a FITS file (it does not start with a SIMPLE card)")
            while find_end_card(head) == -1:
                more = handle.read(READ_CHUNK_BYTES)
                if not more:
                    break  # split_header says how it is truncated
                head += more
            digest = hashlib.sha256(head)
            size = len(head)
            for chunk in iter(lambda: handle.read(READ_CHUNK_BYTES), b""):
                digest.update(chunk)
                size += len(chunk)
        return _record_from_header(path, head, size, stat.st_mtime_ns, digest.hexdigest())
    except OSError as exc:
        return Rejection(path, 0, 0, f"cannot be read: {exc.strerror or exc}")
    except FitsReadError as exc:
        return Rejection(path, stat.st_size, stat.st_mtime_ns, str(exc))


def _record_from_header(path: str, head: bytes, size: int, mtime_ns: int, sha256: str) -> FileRecord:
    """``head``: the file's first bytes, the whole primary header included; ``size``: the file's bytes."""
    header = split_header(head, INGEST_KEYWORDS)
    expected = header.header_bytes + data_bytes(header)
    if size < expected:
        raise FitsReadError(f"truncated FITS file: {size} bytes, the header promises at least {expected}")
    instrument = header.get("INSTRUME")
    if instrument is None or instrument.strip().upper() != "IRAC":
        shown = "no INSTRUME keyword" if instrument is None else f"INSTRUME = {instrument!r}"
        raise FitsReadError(f"FITS but not an IRAC file ({shown})")
    missing = [key for key in IDENTITY_KEYWORDS if header.get(key, str) is None]
    if missing:
        raise FitsReadError(f"IRAC file lacks required keyword(s) {', '.join(missing)}: not a Level-1 product")
    kind = product_kind(path, header)
    aorkey = header.get("AORKEY", int)
    if aorkey <= 0:
        raise FitsReadError(f"AORKEY must be a positive integer, not {aorkey}")
    channel = header.get("CHNLNUM", int)
    expid = header.get("EXPID", int)
    dcenum = header.get("DCENUM", int)
    dpid = header.get("DPID", int)
    if kind not in ("sub2d", "unc2d", "cov2d", "msk2d"):
        missing = [key for key in EXPOSURE_KEYWORDS if header.get(key, str) is None]
        if missing:
            raise FitsReadError(f"IRAC {kind} file lacks required keyword(s) {', '.join(missing)}")
    elif dcenum is None and dpid is None:
        raise FitsReadError(f"IRAC {kind} file has neither DCENUM nor DPID: cannot link it to its exposure")

    exposure = {column: header.get(key, kind_) for key, (column, kind_) in EXPOSURE_COLUMNS.items()}
    _check_integer_ranges({**exposure, "aorkey": aorkey, "expid": expid, "dcenum": dcenum, "channel": channel})
    if channel not in (1, 2, 3, 4):
        raise FitsReadError(f"CHNLNUM = {channel} is not an IRAC channel (1-4)")
    naxis = header.get("NAXIS", int) or 0
    exposure["n_planes"] = header.get("NAXIS3", int) if naxis == 3 else 1
    if exposure["mjd_obs"] is not None:
        try:
            exposure["mission"] = mission_from_mjd(exposure["mjd_obs"])
        except BadOption as exc:
            raise FitsReadError(str(exc)) from exc
    exposure["header_source_kind"] = kind
    aor = {column: header.get(key, kind_) for key, (column, kind_) in AOR_COLUMNS.items()}
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
        n_header_cards=len(header.cards),
        exposure=exposure,
        aor=aor,
    )
