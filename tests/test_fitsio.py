"""The header parser against astropy on real files, and FITS value syntax."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from astropy.io import fits

from iracdb.errors import NotIracFile
from iracdb.fitsio import INGEST_KEYWORDS, parse_value, product_kind, split_header
from iracdb.fitsio.header import is_subarray, n_planes

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

REAL_FILES = sorted((SHARED_DATA / "irac").rglob("*.fits"))


@pytest.mark.parametrize("path", REAL_FILES[::7] + REAL_FILES[-3:], ids=lambda p: p.name)
def test_values_match_astropy(path: Path) -> None:
    ours = split_header(path.read_bytes())
    theirs = fits.getheader(path)
    assert len(ours.cards) == len(theirs.cards)
    for keyword in set(theirs.keys()) - {"COMMENT", "HISTORY", ""}:
        expected = theirs[keyword]
        kind = bool if isinstance(expected, bool) else type(expected)
        value = ours.get(keyword, kind)
        if isinstance(expected, str):
            assert value == (expected.strip() or None), keyword
        else:
            assert value == expected, keyword
    restricted = split_header(path.read_bytes(), INGEST_KEYWORDS)
    assert set(restricted.index) <= INGEST_KEYWORDS
    assert restricted.index == {key: i for key, i in ours.index.items() if key in INGEST_KEYWORDS}
    assert restricted.cards == ours.cards
    assert restricted.get("AORKEY", int) == theirs["AORKEY"]


def test_restricted_index_takes_each_keywords_first_valued_card() -> None:
    cards = [
        "SIMPLE  =                    T",
        "OBJECT    no value indicator: commentary text, not a value",
        "AORKEY  =             46466816 / the first AORKEY",
        "OBJECT  = 'target'",
        "AORKEY  =                    1 / a repeated keyword: the first one counts",
        "EXPID   =                    7",
        "NOTWANTED=                   3",
        "END",
    ]
    data = "".join(card.ljust(80) for card in cards).encode("ascii")
    data += b" " * (2880 - len(data))
    full = split_header(data)
    restricted = split_header(data, frozenset({"AORKEY", "OBJECT", "EXPID", "DCENUM"}))
    assert restricted.index == {"OBJECT": 3, "AORKEY": 2, "EXPID": 5}
    assert {key: full.index[key] for key in restricted.index} == restricted.index
    assert restricted.get("AORKEY", int) == 46466816
    assert restricted.get("OBJECT") == "target"
    assert restricted.get("DCENUM", int) is None
    assert restricted.cards == full.cards and len(full.cards) == 7


def test_index_kept_by_layout_is_the_index_of_each_header() -> None:
    """Headers of one layout share an index (kept by the cards' first 10 bytes); any other layout gets its own."""
    def header(*cards: str) -> bytes:
        return "".join(c.ljust(80) for c in ("SIMPLE  =                    T", *cards, "END")).encode().ljust(2880)

    keywords = frozenset({"AORKEY", "EXPID"})
    layouts = [
        header("AORKEY  =                    1", "EXPID   =                    2"),
        header("AORKEY  =                   10", "EXPID   =                   20 / same layout, other values"),
        header("EXPID   =                    3", "AORKEY  =                    4"),
        header("AORKEY  =                    5", "EXPID     no value indicator", "EXPID   =                    6"),
        header("AORKEY  =                    7", "EXPIDX  =                    8"),
    ]
    expected = [(1, 2), (10, 20), (4, 3), (5, 6), (7, None)]
    for _ in range(2):  # built, then taken from what was kept
        parsed = [split_header(data, keywords) for data in layouts]
        assert [(h.get("AORKEY", int), h.get("EXPID", int)) for h in parsed] == expected
        assert [h.index for h in parsed] == [{key: i for key, i in split_header(data).index.items()
                                              if key in keywords} for data in layouts]
    parsed[0].index.clear()  # each caller gets its own copy
    assert split_header(layouts[0], keywords).index == {"AORKEY": 1, "EXPID": 2}


@pytest.mark.parametrize(
    ("raw", "kind", "value"),
    [
        ("'O''Brien '          / quoted quote", str, "O'Brien"),
        ("'a/b'                / slash inside", str, "a/b"),
        ("'    long'", str, "long"),
        ("''", str, None),
        ("T / logical", bool, True),
        ("                   F", bool, False),
        ("1.5D3 / exponent D", float, 1500.0),
        ("                  2. / integral float", int, 2),
        ("           46466816 / AORKEY", int, 46466816),
        ("                     / empty", float, None),
    ],
)
def test_value_syntax(raw: str, kind: type, value: object) -> None:
    assert parse_value(raw, kind) == value


@pytest.mark.parametrize(
    "raw",
    ["'O''Brien '          / quoted quote", "'a/b'                / slash inside", "'    long'", "''", "'   '",
     "'unterminated", "T / logical", "1.5D3 / exponent D", "                  2. / integral float",
     "           46466816 / AORKEY", "                     / empty", "", "      -12", " +7 / signed", "1.25E-3",
     "'1.5'", "'text &'", "inf", "1_000", "2.5 / not an integer", "'a' 'b'"],
)
def test_ingest_value_fast_path_equals_get(raw: str) -> None:
    from iracdb.fitsio.products import _values

    data = "".join(card.ljust(80) for card in ["SIMPLE  =                    T", f"KEY     = {raw}", "END"])
    header = split_header(data.encode("ascii").ljust(2880))
    for kind in (str, int, float, bool):
        try:
            expected: object = header.get("KEY", kind)
        except NotIracFile as exc:
            with pytest.raises(NotIracFile, match=re.escape(str(exc))):
                _values(header, (("KEY", "key", kind),))
            continue
        got = _values(header, (("KEY", "key", kind), ("ABSENT", "absent", kind)))
        assert got == {"key": expected, "absent": None} and type(got["key"]) is type(expected), kind


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_ingest_values_of_real_files_equal_get(path: Path) -> None:
    from iracdb.fitsio.products import _AOR_SPEC, _EXPOSURE_SPEC, _values

    header = split_header(path.read_bytes(), INGEST_KEYWORDS)
    for spec in (_EXPOSURE_SPEC, _AOR_SPEC):
        expected = {column: header.get(key, kind) for key, column, kind in spec}
        got = _values(header, spec)
        assert got == expected
        assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


def test_bad_values_and_files() -> None:
    with pytest.raises(ValueError, match="unterminated string"):
        parse_value("'unterminated", str)
    with pytest.raises(ValueError, match=r"invalid literal for int\(\)"):
        parse_value("2.5", int)
    with pytest.raises(NotIracFile, match="not a FITS file"):
        split_header(b"PK\x03\x04 a zip file")
    with pytest.raises(NotIracFile, match="without an END card"):
        split_header(b"SIMPLE  =                    T" + b" " * 50)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("SPITZER_I2_46466816_0000_0000_2_bcd.fits", "bcd"),
        ("SPITZER_I2_46466816_0000_0000_2_bunc.fits", "bunc"),
        ("SPITZER_I2_46466816_0000_0000_2_bimsk.fits", "bimsk"),
        ("SPITZER_I2_46466816_0000_0000_2_sub2d.fits", "sub2d"),
        ("SPITZER_I2_46466816_0000_0000_2_unc2d.fits", "unc2d"),
        ("SPITZER_I2_46466816_0000_0000_2_cov2d.fits", "cov2d"),
        ("SPITZER_I2_46466816_0000_0000_2_msk2d.fits", "msk2d"),
    ],
)
def test_kind_from_header_where_it_can(name: str, kind: str) -> None:
    path = SHARED_DATA / "irac" / "r46466816" / "ch2" / "bcd" / name
    header = split_header(path.read_bytes())
    assert product_kind(str(path), header) == kind
    # Renamed without the archive's suffix, the header alone still tells them apart.
    assert product_kind("/somewhere/renamed.fits", header) == kind


def test_cbcd_without_suffix_is_recognised() -> None:
    path = SHARED_DATA / "irac" / "r46987776" / "ch2" / "bcd" / "SPITZER_I2_46987776_0136_0000_2_cbcd.fits"
    assert product_kind("/x/renamed.fits", split_header(path.read_bytes())) == "cbcd"


def test_long_strings_over_continue_cards() -> None:
    label = "WISE J1828+2650 second-epoch astrometry and photometry, channel 2, " * 3
    header = fits.Header({"SIMPLE": True, "BITPIX": 8, "NAXIS": 0, "AORLABEL": label, "OBJECT": "short"})
    data = header.tostring().encode("ascii")
    assert b"CONTINUE" in data
    parsed = split_header(data)
    assert parsed.get("AORLABEL") == label.strip()
    assert parsed.get("OBJECT") == "short"


def test_control_bytes_in_a_header_are_refused() -> None:
    data = bytearray(fits.Header({"SIMPLE": True, "BITPIX": 8, "NAXIS": 0}).tostring().encode("ascii"))
    data[85] = 0
    with pytest.raises(NotIracFile, match="card 2 holds the byte 0x00"):
        split_header(bytes(data))


@pytest.mark.parametrize(
    ("cards", "planes", "subarray"),
    [
        ({"NAXIS": 3, "NAXIS3": 64, "READMODE": "SUB"}, 64, True),  # a subarray cube
        ({"NAXIS": 2, "READMODE": "SUB"}, 1, True),  # a _sub2d product
        ({"NAXIS": 2, "READMODE": "FULL"}, 1, False),
        ({"NAXIS": 3, "NAXIS3": 64, "READMODE": "FULL"}, 64, False),  # the read mode, when given, decides
        ({"NAXIS": 3, "NAXIS3": 64}, 64, True),  # without it, a cube of planes is subarray data
        ({"NAXIS": 3, "NAXIS3": 1}, 1, False),
        ({"NAXIS": 2}, 1, False),
    ],
)
def test_one_subarray_rule(cards: dict, planes: int, subarray: bool) -> None:
    header = split_header(fits.Header({"SIMPLE": True, "BITPIX": -32, **cards}).tostring().encode("ascii"))
    assert n_planes(header) == planes
    assert is_subarray(header) is subarray


def test_real_subarray_and_full_array_files() -> None:
    sub = SHARED_DATA / "irac" / "r46466816" / "ch2" / "bcd" / "SPITZER_I2_46466816_0000_0000_2_"
    full = SHARED_DATA / "irac" / "r46987776" / "ch2" / "bcd" / "SPITZER_I2_46987776_0136_0000_2_"
    for kind in ("bcd", "bunc", "bimsk", "sub2d", "unc2d"):
        assert is_subarray(split_header(Path(f"{sub}{kind}.fits").read_bytes())), kind
    for kind in ("bcd", "cbcd", "cbunc"):
        assert not is_subarray(split_header(Path(f"{full}{kind}.fits").read_bytes())), kind
