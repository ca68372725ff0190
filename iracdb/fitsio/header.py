"""FITS primary headers -> cards and values, fast. No SQL, no numpy.

Headers are parsed straight from the file's header blocks (2880-byte blocks of 80-character cards), which is an
order of magnitude faster than building an ``astropy.io.fits.Header``. Every problem with a file raises
:class:`iracdb.errors.NotIracFile`, whose message is the one-line reason (the caller adds the path).
"""

from __future__ import annotations

import functools
import operator
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from iracdb.errors import NotIracFile

BLOCK_BYTES = 2880
CARD_BYTES = 80
#: How every FITS file starts: the SIMPLE card's keyword and value indicator.
SIGNATURE = b"SIMPLE  ="


@dataclass(frozen=True)
class HeaderCards:
    """A primary header: its cards, and where each keyword's first card is."""

    #: The cards one after the other, 80 characters each (END excluded): one string, not one per card, which
    #: ingest would build only to join them again.
    image: str
    #: keyword -> index in :attr:`cards` of its first ``KEYWORD = value`` card
    index: dict[str, int]
    header_bytes: int

    @functools.cached_property
    def cards(self) -> list[str]:
        """The cards, one 80-character string each."""
        return _CARD.findall(self.image)

    @property
    def n_cards(self) -> int:
        return len(self.image) // CARD_BYTES

    def value_field(self, position: int) -> str:
        """What follows the keyword and value indicator (characters 11-80) of the card at ``position``."""
        start = position * CARD_BYTES
        return self.image[start + 10 : start + CARD_BYTES]

    def text(self) -> str:
        """The header as text, one card per line, trailing blanks removed (pad to 80 to restore the cards)."""
        # Cut and stripped as bytes, in C (the header is printable ASCII: its only blank is the space).
        cards = _cutter(self.n_cards).unpack(self.image.encode("ascii"))
        return b"\n".join(map(bytes.rstrip, cards)).decode("ascii")

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.index

    def get(self, keyword: str, kind: type = str) -> Any:
        """The value of ``keyword`` as ``kind`` (str, int, float or bool), or None when absent or blank.

        A long string continued over ``CONTINUE`` cards (the FITS long-string convention) is joined.
        """
        position = self.index.get(keyword)
        if position is None:
            return None
        raw = self.value_field(position)
        if kind is int:  # the usual integer card, as parse_value reads it (int() ignores the blanks around)
            try:
                return int(raw.partition("/")[0])
            except ValueError:
                pass
        try:
            value = parse_value(raw, kind)
            if kind is str and value is not None and value.endswith("&"):
                for following in range(position + 1, self.n_cards):
                    card = self.image[following * CARD_BYTES : (following + 1) * CARD_BYTES]
                    if not (value.endswith("&") and card.startswith("CONTINUE")):
                        break
                    value = value[:-1] + (parse_value(card[8:], str) or "")
            return value
        except ValueError as exc:
            raise NotIracFile(f"keyword {keyword} has an unreadable value {raw.strip()!r}") from exc


@functools.lru_cache(maxsize=64)
def _cutter(n_cards: int) -> struct.Struct:
    """Cuts ``n_cards`` cards (bytes) into one bytes object each."""
    return struct.Struct(f"{CARD_BYTES}s" * n_cards)


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


def split_header(data: bytes | bytearray, keywords: frozenset[str] | None = None) -> HeaderCards:
    """Split the primary header at the start of ``data`` into cards; raise NotIracFile if it is not FITS.

    With ``keywords``, only those keywords are indexed (every card is still kept); ingest needs ~70 of a BCD's
    ~670 cards, and skipping the rest halves the parsing time.
    """
    check_signature(data)
    position = find_end_card(data)
    if position == -1:
        raise NotIracFile(f"truncated FITS header: it stops after {len(data)} bytes without an END card")
    # translate() is a fast C loop; the regex only runs to say where a bad byte is.
    head = data[:position]  # the cards, END excluded
    bad = _NOT_PRINTABLE.search(data, 0, position) if head.translate(None, _PRINTABLE) else None
    if bad is not None:
        raise NotIracFile(
            f"not valid FITS: header card {bad.start() // CARD_BYTES + 1} holds the byte 0x{data[bad.start()]:02x} "
            "(header cards must be printable ASCII)"
        )
    header_bytes = (position // BLOCK_BYTES + 1) * BLOCK_BYTES
    image = head.decode("ascii")
    n_cards = len(image) // CARD_BYTES
    if keywords is not None:
        return HeaderCards(image=image, index=_index_of(keywords, head, n_cards), header_bytes=header_bytes)
    cards = _CARD.findall(image)  # cut in C
    # Reversed so that the first occurrence of a repeated keyword wins, as in astropy.
    numbered = range(n_cards - 1, -1, -1)
    index = {cards[i][:8].rstrip(): i for i in numbered if cards[i][8:10] == "= "}
    header = HeaderCards(image=image, index=index, header_bytes=header_bytes)
    header.__dict__["cards"] = cards  # (the cached property, already cut)
    return header


#: One card (the header text has no line ends: cards are 80 characters each).
_CARD = re.compile(f".{{{CARD_BYTES}}}", re.DOTALL)
#: A card's keyword and value indicator (its first 10 bytes), the rest skipped.
_CARD_START = struct.Struct("10s70x")
_FIRST = operator.itemgetter(0)


#: Indexes already built, by keywords and header layout (see :func:`_index_of`); emptied when it holds
#: :data:`_MAX_LAYOUTS`.
_LAYOUTS: dict[tuple[frozenset[str], bytes], dict[str, int]] = {}
_MAX_LAYOUTS = 256


def _index_of(keywords: frozenset[str], header: bytes | bytearray, n_cards: int) -> dict[str, int]:
    """keyword -> index of its first ``KEYWORD = value`` card, for those of ``keywords`` in ``header`` (the header's
    cards, END excluded).

    The index depends only on the first 10 bytes of every card (keyword and value indicator): the header's layout.
    Files of one product from one pipeline share their layout, so indexes are kept by layout: for a header whose
    layout was seen before, the index costs ten strided slices and a dictionary lookup, not a pass over its cards.
    """
    layout = (keywords, b"".join([bytes(header[k::CARD_BYTES]) for k in range(10)]))
    known = _LAYOUTS.get(layout)
    if known is None:
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        known = _LAYOUTS[layout] = _build_index(keywords, header, n_cards)
    return dict(known)  # a copy: the caller's to keep


def _build_index(keywords: frozenset[str], header: bytes | bytearray, n_cards: int) -> dict[str, int]:
    starts = list(map(_FIRST, _CARD_START.iter_unpack(header)))
    # Built in C, reversed so that each keyword's first card wins.
    first = dict(zip(reversed(starts), range(n_cards - 1, -1, -1), strict=True))
    index = {}
    for keyword, start in _starts(keywords):
        i = first.get(start)
        if i is not None:
            index[keyword] = i
    return index


def check_signature(data: bytes | bytearray) -> None:
    """Raise :class:`~iracdb.errors.NotIracFile` unless ``data``, a file's first bytes, start like a FITS file."""
    if not data.startswith(SIGNATURE):
        raise NotIracFile("not a FITS file (it does not start with a SIMPLE card)")


#: ``bytes`` or ``bytearray``: :func:`read_header_bytes` gives back what it was given.
_Bytes = TypeVar("_Bytes", bytes, bytearray)


def read_header_bytes(first: _Bytes, read_more: Callable[[int], bytes | bytearray]) -> _Bytes:
    """A file's first bytes, extended until they hold the primary header's END card or the file ends.

    The signature is checked before anything more is read, so that a large file that is not FITS is not read.

    Parameters
    ----------
    first : bytes or bytearray
        The file's first bytes (a bytearray is extended in place).
    read_more : callable
        ``read_more(n)``: the bytes that follow the file's first ``n`` bytes (some or all of them; empty at the end
        of the file).

    Returns
    -------
    bytes or bytearray
        ``first`` and what was read after it; :func:`split_header` says whether the END card is in it.

    Raises
    ------
    iracdb.errors.NotIracFile
        ``first`` does not start with a SIMPLE card.
    """
    check_signature(first)
    data = first
    while find_end_card(data) == -1:
        more = read_more(len(data))
        if not more:
            break  # split_header says how it is truncated
        data += more
    return data


def find_end_card(data: bytes | bytearray) -> int:
    """Offset of the END card in ``data`` (on a card boundary), or -1 when there is none yet."""
    position = data.find(_END_CARD)
    while position != -1 and position % CARD_BYTES:
        position = data.find(_END_CARD, position + 1)  # an END inside a card's text: not the END card
    return position


@functools.cache
def _starts(keywords: frozenset[str]) -> tuple[tuple[str, bytes], ...]:
    """Each keyword with how its ``KEYWORD = value`` cards start (keyword field and value indicator, 10 bytes)."""
    return tuple((keyword, keyword.ljust(8).encode("ascii") + b"= ") for keyword in sorted(keywords))


def n_planes(header: HeaderCards) -> int | None:
    """Planes of the primary image: ``NAXIS3`` of a cube (``NAXIS = 3``; None without NAXIS3), else 1."""
    return header.get("NAXIS3", int) if header.get("NAXIS", int) == 3 else 1


def is_subarray(header: HeaderCards) -> bool:
    """Whether the file holds IRAC subarray data (32 x 32 pixels at a corner of the array; cubes of 64 planes).

    The one rule: ``READMODE = 'SUB'`` when the header gives the read mode, else a cube of more than one plane.
    """
    readmode = header.get("READMODE")
    if readmode is not None:
        return readmode.upper() == "SUB"
    return (n_planes(header) or 0) > 1


def data_bytes(header: HeaderCards) -> int:
    """Size of the primary data array in bytes (unpadded), from BITPIX and NAXISn."""
    bitpix = header.get("BITPIX", int)
    naxis = header.get("NAXIS", int)
    if bitpix is None or naxis is None:
        raise NotIracFile("FITS header lacks BITPIX or NAXIS")
    if naxis == 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        length = header.get(f"NAXIS{axis}", int)
        if length is None:
            raise NotIracFile(f"FITS header lacks NAXIS{axis}")
        count *= length
    return count * abs(bitpix) // 8
