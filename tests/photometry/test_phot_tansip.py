"""TanSip (vectorised TAN-SIP) against astropy.wcs on every real IRAC header and on synthetic ones.

Reference: ``WCS(header, naxis=2).all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=100)`` and ``all_pix2world``.
Required: < 1e-6 px against astropy, < 1e-8 px for our own round trip (measured: ~2e-10 px and ~1e-10 px).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from hypothesis import given, settings
from hypothesis import strategies as st

from iracdb.photometry.tansip import WCS_KEYWORDS, TanSip

ASTROPY_TOL_PX = 1e-6
ROUND_TRIP_TOL_PX = 1e-8
EDGE_PX = 30.0


def _astropy_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, naxis=2)


def _keywords(header: fits.Header) -> dict:
    return {key: header[key] for key in WCS_KEYWORDS if key in header}


def _grid(nx: int, ny: int, n: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions over the array and EDGE_PX beyond its edges."""
    gx, gy = np.meshgrid(np.linspace(-EDGE_PX, nx - 1 + EDGE_PX, n), np.linspace(-EDGE_PX, ny - 1 + EDGE_PX, n))
    return gx.ravel(), gy.ravel()


_BUILT: dict[int, tuple[fits.Header, WCS, TanSip]] = {}


def _both(header: fits.Header) -> tuple[WCS, TanSip]:
    """astropy's WCS and our TanSip of a header, built once per header (astropy takes ~20 ms)."""
    if id(header) not in _BUILT:
        _BUILT[id(header)] = (header, _astropy_wcs(header), TanSip.from_keywords(_keywords(header)))
    _, wcs, tansip = _BUILT[id(header)]
    return wcs, tansip


def _compare_with_astropy(header: fits.Header, px: np.ndarray, py: np.ndarray) -> tuple[float, float]:
    """Largest |difference| (px) from astropy's all_world2pix, and of our own round trip."""
    wcs, one = _both(header)
    ra, dec = wcs.all_pix2world(px, py, 0)
    x_ref, y_ref = wcs.all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=100)
    tansip = TanSip.stack([one] * len(px))
    x, y = tansip.world_to_pixel(ra, dec)
    vs_astropy = max(np.max(np.abs(x - x_ref)), np.max(np.abs(y - y_ref)))
    ra2, dec2 = tansip.pixel_to_world(px, py)
    x2, y2 = tansip.world_to_pixel(ra2, dec2)
    round_trip = max(np.max(np.abs(x2 - px)), np.max(np.abs(y2 - py)))
    # forward transform against astropy as well (angles: 1e-10 deg ~ 3e-7 px)
    assert np.max(np.abs((ra2 - ra + 180.0) % 360.0 - 180.0) * np.cos(np.deg2rad(dec))) < 1e-10
    assert np.max(np.abs(dec2 - dec)) < 1e-10
    return vs_astropy, round_trip


# ----------------------------------------------------------------------------------------------------------------
# real headers
# ----------------------------------------------------------------------------------------------------------------


def _real_wcs_files(shared: Path) -> list[Path]:
    files = sorted((shared / "data" / "irac").rglob("*.fits"))
    return [f for f in files if "CTYPE1" in fits.getheader(f)]


@pytest.fixture(scope="module")
def real_headers(shared: Path) -> list[tuple[str, fits.Header]]:
    headers = [(f.name, fits.getheader(f)) for f in _real_wcs_files(shared)]
    assert any(h["NAXIS"] == 3 for _, h in headers) and any(h["NAXIS1"] == 256 for _, h in headers)
    return headers


def test_every_real_header_agrees_with_astropy(real_headers: list[tuple[str, fits.Header]]) -> None:
    for name, header in real_headers:
        vs_astropy, round_trip = _compare_with_astropy(header, *_grid(header["NAXIS1"], header["NAXIS2"]))
        assert vs_astropy < ASTROPY_TOL_PX, name
        assert round_trip < ROUND_TRIP_TOL_PX, name


def test_all_real_frames_at_once(real_headers: list[tuple[str, fits.Header]]) -> None:
    """One call over every frame (mixed subarray and full array) equals the per-frame astropy answers."""
    tansip = TanSip.stack([TanSip.from_keywords(_keywords(h)) for _, h in real_headers])
    rng = np.random.default_rng(1)
    px = np.array([rng.uniform(-EDGE_PX, h["NAXIS1"] - 1 + EDGE_PX) for _, h in real_headers])
    py = np.array([rng.uniform(-EDGE_PX, h["NAXIS2"] - 1 + EDGE_PX) for _, h in real_headers])
    ra = np.empty(len(px))
    dec = np.empty(len(px))
    x_ref = np.empty(len(px))
    y_ref = np.empty(len(px))
    for k, (_, header) in enumerate(real_headers):
        wcs = _astropy_wcs(header)
        ra[k], dec[k] = wcs.all_pix2world(px[k], py[k], 0)
        x_ref[k], y_ref[k] = wcs.all_world2pix(ra[k], dec[k], 0, tolerance=1e-8, maxiter=100)
    x, y = tansip.world_to_pixel(ra, dec)
    np.testing.assert_allclose(x, x_ref, rtol=0, atol=ASTROPY_TOL_PX)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=ASTROPY_TOL_PX)


def test_one_sky_position_broadcasts_to_every_frame(real_headers: list[tuple[str, fits.Header]]) -> None:
    headers = [h for _, h in real_headers if h["NAXIS"] == 3]
    tansip = TanSip.stack([TanSip.from_keywords(_keywords(h)) for h in headers])
    ra, dec = float(headers[0]["RA_REF"]), float(headers[0]["DEC_REF"])
    x, y = tansip.world_to_pixel(ra, dec)
    assert x.shape == y.shape == (len(headers),)
    for k, header in enumerate(headers):
        x_ref, y_ref = _astropy_wcs(header).all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=100)
        assert abs(x[k] - x_ref) < ASTROPY_TOL_PX and abs(y[k] - y_ref) < ASTROPY_TOL_PX


@pytest.mark.parametrize("kind", ["sub", "full"])
@settings(max_examples=60, deadline=None)
@given(fx=st.floats(0.0, 1.0), fy=st.floats(0.0, 1.0))
def test_real_positions_property(real_headers: list[tuple[str, fits.Header]], kind: str, fx: float, fy: float) -> None:
    header = next(h for _, h in real_headers if (h["NAXIS1"] == 256) == (kind == "full"))
    nx, ny = header["NAXIS1"], header["NAXIS2"]
    px = np.array([-EDGE_PX + fx * (nx - 1 + 2 * EDGE_PX)])
    py = np.array([-EDGE_PX + fy * (ny - 1 + 2 * EDGE_PX)])
    vs_astropy, round_trip = _compare_with_astropy(header, px, py)
    assert vs_astropy < ASTROPY_TOL_PX
    assert round_trip < ROUND_TRIP_TOL_PX


# ----------------------------------------------------------------------------------------------------------------
# synthetic headers (every channel, full array and subarray, cryo and warm)
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_headers(tmp_path_factory: pytest.TempPathFactory) -> list[fits.Header]:
    from iracdb.synth import write_archive

    archive = write_archive(tmp_path_factory.mktemp("synth_tansip"), seed=11, truth_csv=False)
    headers = []
    for path in archive.files:
        if path.name.endswith(("_bcd.fits", "_sub2d.fits")):
            headers.append(fits.getheader(path))
    assert len({(h["CHNLNUM"], h["NAXIS1"]) for h in headers}) >= 5
    return headers


def test_synthetic_headers_agree_with_astropy(synth_headers: list[fits.Header]) -> None:
    for header in synth_headers:
        vs_astropy, round_trip = _compare_with_astropy(header, *_grid(header["NAXIS1"], header["NAXIS2"], 9))
        assert vs_astropy < ASTROPY_TOL_PX
        assert round_trip < ROUND_TRIP_TOL_PX


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 10_000), fx=st.floats(0.0, 1.0), fy=st.floats(0.0, 1.0))
def test_synthetic_positions_property(synth_headers: list[fits.Header], index: int, fx: float, fy: float) -> None:
    header = synth_headers[index % len(synth_headers)]
    nx, ny = header["NAXIS1"], header["NAXIS2"]
    px = np.array([-EDGE_PX + fx * (nx - 1 + 2 * EDGE_PX)])
    py = np.array([-EDGE_PX + fy * (ny - 1 + 2 * EDGE_PX)])
    vs_astropy, round_trip = _compare_with_astropy(header, px, py)
    assert vs_astropy < ASTROPY_TOL_PX
    assert round_trip < ROUND_TRIP_TOL_PX


# ----------------------------------------------------------------------------------------------------------------
# hand-made headers: plain TAN, CDELT + PC, CDELT + CROTA2, the pole, RA wrap, mixed SIP orders
# ----------------------------------------------------------------------------------------------------------------


def _header(**cards: object) -> fits.Header:
    header = fits.Header()
    header["NAXIS"] = 2
    header["NAXIS1"] = header["NAXIS2"] = 256
    base = {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CRVAL1": 150.0,
        "CRVAL2": 2.0,
        "CRPIX1": 128.5,
        "CRPIX2": 120.25,
        "CD1_1": -3.3e-4,
        "CD1_2": 1.1e-5,
        "CD2_1": 1.2e-5,
        "CD2_2": 3.4e-4,
    }
    for key, value in {**base, **cards}.items():
        if value is None:
            header.remove(key, ignore_missing=True)
        else:
            header[key] = value
    return header


_LINEAR_ONLY = {f"CD{i}_{j}": None for i in (1, 2) for j in (1, 2)}
_SIP_CARDS = {
    "CTYPE1": "RA---TAN-SIP",
    "CTYPE2": "DEC--TAN-SIP",
    "A_ORDER": 3,
    "B_ORDER": 3,
    "A_2_0": 2e-5,
    "A_1_1": 3e-5,
    "A_0_2": 6e-7,
    "A_3_0": -1.6e-7,
    "B_0_2": 3.5e-5,
    "B_1_1": 1.9e-5,
    "B_2_1": -2e-7,
}


@pytest.mark.parametrize(
    "cards",
    [
        pytest.param({}, id="tan"),
        pytest.param(_SIP_CARDS, id="sip-no-inverse"),
        pytest.param({**_SIP_CARDS, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN"}, id="sip-without-suffix"),
        pytest.param(
            {
                **_LINEAR_ONLY,
                "CDELT1": -3.4e-4,
                "CDELT2": 3.4e-4,
                "PC1_1": 0.9,
                "PC1_2": -0.3,
                "PC2_1": 0.3,
                "PC2_2": 0.95,
            },
            id="cdelt-pc",
        ),
        pytest.param({**_LINEAR_ONLY, "CDELT1": -3.4e-4, "CDELT2": 3.3e-4, "CROTA2": 37.5}, id="cdelt-crota"),
        pytest.param({**_LINEAR_ONLY, "CDELT1": -3.4e-4, "CDELT2": 3.3e-4}, id="cdelt-only"),
        pytest.param({"CRVAL2": 89.99}, id="near-pole"),
        pytest.param({"CRVAL2": 90.0}, id="at-pole"),
        pytest.param({"CRVAL2": -89.95, **_SIP_CARDS}, id="south-pole-sip"),
        pytest.param({"CRVAL1": 0.01}, id="ra-wrap"),
        pytest.param({"LONPOLE": 170.0}, id="lonpole"),
    ],
)
def test_hand_made_headers_agree_with_astropy(cards: dict) -> None:
    header = _header(**cards)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy logs (not warns) the SIP-without-suffix case; keep quiet anyway
        vs_astropy, round_trip = _compare_with_astropy(header, *_grid(256, 256))
    assert vs_astropy < ASTROPY_TOL_PX
    assert round_trip < ROUND_TRIP_TOL_PX


def test_stack_pads_mixed_sip_orders(real_headers: list[tuple[str, fits.Header]]) -> None:
    """Frames without SIP, with order 3 and with order 5 in one stack give their one-frame answers."""
    frames = [
        TanSip.from_keywords(_keywords(_header())),
        TanSip.from_keywords(_keywords(_header(**_SIP_CARDS))),
        TanSip.from_keywords(_keywords(real_headers[0][1])),
    ]
    stacked = TanSip.stack(frames)
    assert stacked.a.shape == (3, 6, 6)
    px, py = np.array([3.0, 200.5, 10.25]), np.array([250.0, -20.0, 31.0])
    ra, dec = stacked.pixel_to_world(px, py)
    x, y = stacked.world_to_pixel(ra, dec)
    np.testing.assert_allclose(x, px, rtol=0, atol=ROUND_TRIP_TOL_PX)
    np.testing.assert_allclose(y, py, rtol=0, atol=ROUND_TRIP_TOL_PX)
    for k, frame in enumerate(frames):
        one_ra, one_dec = frame.pixel_to_world(px[k], py[k])
        assert one_ra[0] == pytest.approx(ra[k], abs=1e-12) and one_dec[0] == pytest.approx(dec[k], abs=1e-12)


def test_keyword_values_as_text_and_header_cards() -> None:
    """Numbers given as header text (D exponents too) are read as numbers."""
    values = {key: str(value) for key, value in _keywords(_header(**_SIP_CARDS)).items()}
    values["CD1_1"] = "-3.3D-4"
    tansip = TanSip.from_keywords(values)
    assert tansip.cd[0, 0, 0] == -3.3e-4
    assert tansip.a[0, 2, 0] == 2e-5


def test_behind_the_tangent_plane_is_nan() -> None:
    tansip = TanSip.stack([TanSip.from_keywords(_keywords(_header()))] * 3)
    x, y = tansip.world_to_pixel(np.array([330.0, 150.0, 240.0]), np.array([-2.0, 2.0, -1.0]))
    assert np.isnan(x[0]) and np.isnan(y[0])  # the antipode
    assert np.isfinite(x[1]) and np.isfinite(y[1])
    assert np.isnan(x[2]) and np.isnan(y[2])  # just over 90 degrees away


def test_far_off_image_uses_the_footprint(real_headers: list[tuple[str, fits.Header]]) -> None:
    """On the image and just beyond its corners: near (the inverse decides); a degree or more away, or behind the
    tangent plane: far off; the same answer for every real frame, and the frames' own size counts."""
    for name, header in real_headers:
        nx, ny = header["NAXIS1"], header["NAXIS2"]
        one = TanSip.from_keywords(_keywords(header))
        tansip = TanSip.stack([one] * 6)
        px = np.array([0.0, nx - 1.0, -0.5, nx * 1.3, nx / 2, nx / 2])
        py = np.array([0.0, ny - 1.0, ny - 0.5, ny / 2, ny * 1.3, -ny * 0.3])
        ra, dec = tansip.pixel_to_world(px, py)
        assert not tansip.far_off_image(ra, dec, nx, ny).any(), name
        ra0, dec0 = float(ra[0]), float(dec[0])
        far_ra = np.array([ra0 + 1.0 / np.cos(np.deg2rad(dec0)), ra0, ra0, ra0 + 180.0, ra0, ra0])
        far_dec = np.clip(np.array([dec0, dec0 + 1.0, dec0 - 1.0, -dec0, dec0 + 30.0, dec0 - 60.0]), -90, 90)
        assert tansip.far_off_image(far_ra, far_dec, nx, ny).all(), name
    # a 32 x 32 subarray's footprint is smaller than a full array's at the same WCS
    full = TanSip.from_keywords(_keywords(_header()))
    ra, dec = full.pixel_to_world(128.0 + 100.0, 128.0)
    assert not full.far_off_image(ra, dec, 256, 256)[0] and full.far_off_image(ra, dec, 32, 32)[0]


def test_non_convergence_is_nan_not_a_warning() -> None:
    """A distortion with no solution (u + 1e-3 u**2 = U has none for U < -250 px): NaN, and no RuntimeWarning."""
    tansip = TanSip.from_keywords(
        _keywords(_header(**_LINEAR_ONLY, CDELT1=-3.4e-4, CDELT2=3.4e-4, A_ORDER=2, B_ORDER=2, A_2_0=1e-3))
    )
    ra, dec = tansip.pixel_to_world(128.0, 120.0)
    x, y = tansip.world_to_pixel(ra, dec)
    assert abs(x[0] - 128.0) < ROUND_TRIP_TOL_PX
    x, y = tansip.world_to_pixel(150.5, 2.0)  # U ~ -1,470 px
    assert np.isnan(x[0]) and np.isnan(y[0])


@pytest.mark.parametrize(
    ("cards", "message"),
    [
        ({"CTYPE1": None, "CTYPE2": None}, "no celestial WCS: CTYPE1 is missing"),
        ({"CTYPE1": "RA---SIN"}, "unsupported WCS: CTYPE1 = 'RA---SIN'"),
        ({"CTYPE1": "GLON-TAN"}, "unsupported WCS: CTYPE1 = 'GLON-TAN'"),
        ({"CTYPE1": "DEC--TAN", "CTYPE2": "RA---TAN"}, "unsupported WCS: CTYPE1 = 'DEC--TAN'"),
        ({"CRVAL1": None}, "no celestial WCS: CRVAL1 is missing"),
        ({"CRPIX2": None}, "no celestial WCS: CRPIX2 is missing"),
        ({"CRVAL1": "abc"}, "invalid WCS: CRVAL1 = 'abc' is not a number"),
        ({"CRVAL2": 95.0}, "invalid WCS: CRVAL2 = 95.0 is not a declination"),
        (_LINEAR_ONLY, "no celestial WCS: neither CDi_j nor CDELTi"),
        ({"CD1_1": 1e-4, "CD1_2": 1e-4, "CD2_1": 1e-4, "CD2_2": 1e-4}, "invalid WCS: the CD matrix is singular"),
        ({"A_ORDER": 3}, "invalid SIP: A_ORDER given without B_ORDER"),
        ({"A_ORDER": 3.5, "B_ORDER": 3}, "invalid SIP: A_ORDER = 3.5"),
    ],
)
def test_bad_wcs_raises_value_error(cards: dict, message: str) -> None:
    values = _keywords(_header())
    for key, value in cards.items():
        values[key] = value
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("*", r"\*")) as info:
        TanSip.from_keywords(values)
    assert "\n" not in str(info.value)


def test_header_without_wcs_raises(shared: Path) -> None:
    header = fits.getheader(
        shared / "data" / "irac" / "r46466816" / "ch2" / "bcd" / "SPITZER_I2_46466816_0000_0000_2_bimsk.fits"
    )
    with pytest.raises(ValueError, match=r"^no celestial WCS: CTYPE1 is missing$"):
        TanSip.from_keywords(_keywords(header))


def test_stack_needs_a_frame() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        TanSip.stack([])
