"""read_image: pixels and header values as astropy reads them; every way a file can be unreadable; row bands."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from iracdb.errors import BadOption, NotIracFile
from iracdb.fitsio import image as frames
from iracdb.fitsio.image import FRAME_KEYWORDS, image_info, read_image, wcs_keywords
from iracdb.photometry.tansip import TanSip
from tests.conftest import FULL_ARRAY_AOR_DIR, SUBARRAY_AOR_DIR

SUB_STEM = SUBARRAY_AOR_DIR / "ch2" / "bcd" / "SPITZER_I2_46466816_0003_0000_2_"
FULL_STEM = FULL_ARRAY_AOR_DIR / "ch2" / "bcd" / "SPITZER_I2_46987776_0136_0000_2_"
SUB_KINDS = ("bcd", "bunc", "bimsk", "sub2d", "unc2d", "cov2d", "msk2d")
FULL_KINDS = ("bcd", "cbcd", "cbunc")
REAL_FILES = [Path(f"{SUB_STEM}{kind}.fits") for kind in SUB_KINDS] + [
    Path(f"{FULL_STEM}{kind}.fits") for kind in FULL_KINDS
]


@pytest.fixture(autouse=True)
def _needs_shared_data() -> None:
    if not SUB_STEM.parent.is_dir() or not FULL_STEM.parent.is_dir():
        pytest.skip("shared IRAC data not found")


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name.split("_", 4)[-1])
def test_data_equals_astropy(path: Path) -> None:
    image = read_image(path)
    expected = fits.getdata(path)
    assert image.data.ndim == 3
    assert image.data.shape == (expected.shape if expected.ndim == 3 else (1, *expected.shape))
    assert image.data.dtype == expected.dtype
    np.testing.assert_array_equal(image.data, expected.reshape(image.data.shape))
    stat = path.stat()
    assert (image.size_bytes, image.mtime_ns, image.path) == (stat.st_size, stat.st_mtime_ns, str(path))
    assert image.n_planes == image.data.shape[0]


def test_mask_is_integer_as_stored() -> None:
    image = read_image(f"{SUB_STEM}bimsk.fits")
    assert image.data.dtype == np.dtype(">i2")  # IRAC masks: BITPIX 16, no BSCALE/BZERO
    assert image.data.shape == (64, 32, 32)


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name.split("_", 4)[-1])
def test_header_values_equal_astropy(path: Path) -> None:
    image = read_image(path)
    header = fits.getheader(path)
    compared = 0
    for key in FRAME_KEYWORDS:
        if key not in header:
            assert key not in image.cards
            continue
        value = header[key]
        kind = bool if isinstance(value, bool) else type(value)
        got = image.cards.get(key, kind)
        if isinstance(value, str):
            assert got == (value.strip() or None), key
        else:
            assert got == value, key
        compared += 1
    assert compared >= 10


def test_wcs_keywords_give_astropy_positions() -> None:
    path = Path(f"{FULL_STEM}bcd.fits")
    tansip = TanSip.from_keywords(wcs_keywords(read_image(path).cards))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(fits.getheader(path), naxis=2)
    ra, dec = wcs.all_pix2world([10.5, 200.0], [3.0, 250.25], 0)
    x, y = TanSip.stack([tansip, tansip]).world_to_pixel(ra, dec)
    np.testing.assert_allclose(x, [10.5, 200.0], atol=1e-8, rtol=0)
    np.testing.assert_allclose(y, [3.0, 250.25], atol=1e-8, rtol=0)


def test_wcs_keywords_of_a_file_without_wcs() -> None:
    keywords = wcs_keywords(read_image(f"{SUB_STEM}bimsk.fits").cards)
    assert "CTYPE1" not in keywords
    with pytest.raises(ValueError, match="CTYPE1 is missing"):
        TanSip.from_keywords(keywords)


@pytest.mark.parametrize("path", [Path(f"{SUB_STEM}bcd.fits"), Path(f"{FULL_STEM}cbcd.fits")], ids=["sub", "full"])
def test_image_info_from_cards_and_from_astropy(path: Path) -> None:
    header = fits.getheader(path)
    info = image_info(read_image(path).cards)
    assert info == image_info(header)
    assert (info.channel, info.mission, info.subarray) == (2, "warm", header["NAXIS"] == 3)
    assert (info.gain, info.ronoise, info.exptime, info.fluxconv, info.pxscal1, info.pxscal2) == tuple(
        header[key] for key in ("GAIN", "RONOISE", "EXPTIME", "FLUXCONV", "PXSCAL1", "PXSCAL2")
    )


def test_image_info_with_channel_and_mission_given(tmp_path: Path) -> None:
    cards = read_image(f"{SUB_STEM}bcd.fits").cards
    assert image_info(cards, mission="cryo").mission == "cryo"  # reduce --corrections cryo on warm data
    path = tmp_path / "bare.fits"
    path.write_bytes(_raw_fits({"BITPIX": -32, "NAXIS": 2, "NAXIS1": 4, "NAXIS2": 4, "EXPTIME": 2.0}, b"\0" * 64))
    bare = read_image(path).cards
    info = image_info(bare, channel=4, mission="warm")
    assert (info.channel, info.mission, info.subarray, info.exptime, info.gain) == (4, "warm", False, 2.0, None)
    with pytest.raises(BadOption, match="lacks CHNLNUM or MJD_OBS"):
        image_info(bare)


# ----------------------------------------------------------------------------------------------------------------
# unreadable files
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def copy_of(tmp_path: Path):
    def copy(kind: str = "bcd", stem: Path = SUB_STEM) -> Path:
        target = tmp_path / f"{Path(str(stem)).name}{kind}.fits"
        shutil.copyfile(f"{stem}{kind}.fits", target)
        return target

    return copy


def test_catalogued_size_and_mtime_match(copy_of) -> None:
    path = copy_of()
    stat = path.stat()
    image = read_image(path, size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
    assert image.data.shape == (64, 32, 32)


def test_size_mismatch_raises(copy_of) -> None:
    path = copy_of()
    stat = path.stat()
    with pytest.raises(NotIracFile, match=rf"^changed since ingest: size {stat.st_size} bytes, catalogued 123"):
        read_image(path, size_bytes=123, mtime_ns=stat.st_mtime_ns)


def test_mtime_mismatch_raises(copy_of) -> None:
    path = copy_of()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(NotIracFile, match=rf"^changed since ingest: mtime .* catalogued {stat.st_mtime_ns}"):
        read_image(path, size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)


@pytest.mark.parametrize("rows", [None, (0, 32)])
@pytest.mark.parametrize("short_bytes", [1, 100_000])
def test_truncated_data_raises(copy_of, short_bytes: int, rows: tuple[int, int] | None) -> None:
    path = copy_of()
    image = read_image(path)
    with open(path, "r+b") as handle:
        handle.truncate(image.cards.header_bytes + image.data.nbytes - short_bytes)
    with pytest.raises(NotIracFile, match=r"^truncated FITS file: \d+ bytes, its header promises \d+"):
        read_image(path, rows=rows)


def test_missing_final_padding_is_tolerated(copy_of) -> None:
    """As astropy: the last block's zero padding may be missing when all the data is there."""
    path = copy_of()
    expected = read_image(path).data.copy()
    image = read_image(path)
    with open(path, "r+b") as handle:
        handle.truncate(image.cards.header_bytes + image.data.nbytes)
    np.testing.assert_array_equal(read_image(path).data, expected)


def test_truncated_header_raises(copy_of) -> None:
    path = copy_of()
    with open(path, "r+b") as handle:
        handle.truncate(2880 * 3)
    with pytest.raises(NotIracFile, match=r"^truncated FITS header"):
        read_image(path)


def test_not_fits_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.fits"
    path.write_text("this is not a FITS file\n" * 200)
    with pytest.raises(NotIracFile, match=r"^not a FITS file"):
        read_image(path)


def test_empty_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    with pytest.raises(NotIracFile, match=r"^not a FITS file"):
        read_image(path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(NotIracFile, match=r"^file not found$"):
        read_image(tmp_path / "gone.fits")


def test_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(NotIracFile, match=r"^cannot be read: Is a directory"):
        read_image(tmp_path)


def _raw_fits(cards: dict[str, object], data: bytes = b"") -> bytes:
    header = fits.Header()
    header["SIMPLE"] = True
    for key, value in cards.items():
        header[key] = value
    text = header.tostring()
    return text.encode("ascii") + data + b"\0" * (-len(data) % 2880)


@pytest.mark.parametrize(
    ("cards", "message"),
    [
        ({"BITPIX": 24, "NAXIS": 2, "NAXIS1": 4, "NAXIS2": 4}, r"^unsupported BITPIX = 24"),
        ({"BITPIX": -32, "NAXIS": 1, "NAXIS1": 4}, r"^unsupported NAXIS = 1"),
        ({"BITPIX": -32, "NAXIS": 0}, r"^unsupported NAXIS = 0"),
        ({"BITPIX": -32, "NAXIS": 4, "NAXIS1": 1, "NAXIS2": 1, "NAXIS3": 1, "NAXIS4": 1}, r"^unsupported NAXIS = 4"),
        ({"BITPIX": -32, "NAXIS": 2, "NAXIS1": 4}, r"^FITS header has no usable NAXIS1..NAXIS2"),
        ({"NAXIS": 2, "NAXIS1": 4, "NAXIS2": 4}, r"^FITS header lacks BITPIX or NAXIS"),
        ({"BITPIX": "x", "NAXIS": 2, "NAXIS1": 4, "NAXIS2": 4}, r"^keyword BITPIX has an unreadable value"),
    ],
)
def test_unsupported_layout_raises(tmp_path: Path, cards: dict, message: str) -> None:
    path = tmp_path / "odd.fits"
    path.write_bytes(_raw_fits(cards, b"\0" * 2880))
    with pytest.raises(NotIracFile, match=message):
        read_image(path)


# ----------------------------------------------------------------------------------------------------------------
# scaled integers, long headers, large files
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "bscale", "bzero"),
    [("uint16", None, None), ("int8", None, None), ("int16", 2.0, 10.0), ("int32", 0.5, 0.0), ("float32", 2.0, 1.0)],
)
def test_scaled_data_equals_astropy(tmp_path: Path, dtype: str, bscale: float | None, bzero: float | None) -> None:
    rng = np.random.default_rng(3)
    if dtype == "float32":
        values = rng.normal(size=(3, 5, 7)).astype(dtype)
    elif bscale is None:  # astropy writes unsigned (and signed 8-bit) data with the BZERO offset
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=(3, 5, 7), endpoint=True).astype(dtype)
    else:
        values = rng.integers(-100, 100, size=(3, 5, 7)).astype(dtype)
    hdu = fits.PrimaryHDU(values)
    if bscale is not None:
        hdu.scale("int16" if dtype == "float32" else dtype, bscale=bscale, bzero=bzero)
    path = tmp_path / f"scaled_{dtype}.fits"
    hdu.writeto(path)
    expected = fits.getdata(path)
    image = read_image(path)
    assert image.data.dtype == expected.dtype
    np.testing.assert_array_equal(image.data, expected)


def test_blank_of_scaled_integers_is_nan(tmp_path: Path) -> None:
    hdu = fits.PrimaryHDU(np.array([[1, 2], [3, -99]], dtype=np.int16))
    hdu.header["BSCALE"] = 2.0
    hdu.header["BZERO"] = 1.0
    hdu.header["BLANK"] = -99
    path = tmp_path / "blank.fits"
    hdu.writeto(path)
    np.testing.assert_array_equal(read_image(path).data[0], [[3.0, 5.0], [7.0, np.nan]])


def test_long_header_and_large_file_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header longer than the first read, and a file too big to read whole: read in parts, same answer."""
    data = np.arange(4 * 50 * 40, dtype=">f8").reshape(4, 50, 40)
    hdu = fits.PrimaryHDU(data)
    for k in range(3000):
        hdu.header["HISTORY"] = f"filler card {k}"
    hdu.header["EXPTIME"] = 12.5
    path = tmp_path / "long.fits"
    hdu.writeto(path)
    assert len(hdu.header) * 80 > frames.HEADER_READ_BYTES
    monkeypatch.setattr(frames, "WHOLE_READ_BYTES", 1000)
    image = read_image(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.cards.get("EXPTIME", float) == 12.5
    band = read_image(path, rows=(10, 12))
    np.testing.assert_array_equal(band.data[:, 10:12], data[:, 10:12])


# ----------------------------------------------------------------------------------------------------------------
# row bands
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "kind", "rows"),
    [
        (FULL_STEM, "bcd", (100, 140)),
        (FULL_STEM, "cbunc", (0, 1)),
        (FULL_STEM, "bcd", (250, 400)),
        (SUB_STEM, "bcd", (5, 27)),
        (SUB_STEM, "bunc", (-3, 8)),
        (SUB_STEM, "sub2d", (31, 32)),
    ],
)
def test_rows_band_equals_full_read(stem: Path, kind: str, rows: tuple[int, int]) -> None:
    path = f"{stem}{kind}.fits"
    whole = read_image(path)
    band = read_image(path, rows=rows)
    assert band.data.shape == whole.data.shape
    y0, y1 = max(rows[0], 0), min(rows[1], whole.data.shape[1])
    np.testing.assert_array_equal(band.data[:, y0:y1], whole.data[:, y0:y1])
    outside = np.ones(whole.data.shape[1], dtype=bool)
    outside[y0:y1] = False
    assert np.isnan(band.data[:, outside]).all()
    assert band.cards.cards == whole.cards.cards


def test_empty_rows_band_is_all_nan() -> None:
    band = read_image(f"{FULL_STEM}bcd.fits", rows=(300, 310))
    assert band.data.shape == (1, 256, 256) and np.isnan(band.data).all()


def test_rows_band_of_a_mask_is_refused() -> None:
    with pytest.raises(ValueError, match="rows= needs floating-point data"):
        read_image(f"{SUB_STEM}bimsk.fits", rows=(0, 4))
