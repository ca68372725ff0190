"""The synthetic archive writer: layout, headers, WCS, flux, noise, masks, determinism, missions (iracdb.synth)."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from iracdb import synth
from iracdb.errors import BadOption
from iracdb.photometry.corrections import correction_factor

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "irac"
NAME = re.compile(
    r"^SPITZER_I(?P<ch>[1-4])_(?P<aor>\d+)_(?P<exp>\d{4})_(?P<dce>\d{4})_(?P<ver>\d+)_(?P<type>[a-z0-9]+)\.fits$"
)

#: irac-photometry.md §1, "Header keywords worth cataloguing" (dither keys only in dithered AORs, checked apart).
SECTION1 = (
    "AORKEY CHNLNUM EXPID DCENUM DCEID SOS_VER CREATOR OBJECT AORLABEL PROGID AOT_TYPE FOVNAME READMODE AREADMOD "
    "HDRMODE DATE_OBS MJD_OBS BMJD_OBS HMJD_OBS AINTBEG ATIMEEND FRAMTIME EXPTIME SAMPTIME AFOWLNUM BUNIT FLUXCONV "
    "GAIN RONOISE ZODY_EST ISM_EST CRVAL1 CRVAL2 CRPIX1 CRPIX2 CD1_1 CD1_2 CD2_1 CD2_2 CTYPE1 CTYPE2 A_ORDER B_ORDER "
    "AP_ORDER BP_ORDER PXSCAL1 PXSCAL2 PA RA_REF DEC_REF RA_RQST DEC_RQST PM_RA PM_DEC RMS_JIT PTGDIFF"
).split()
DITHER_KEYS = ("CYCLENUM", "DITHPOS", "DITHSCAL")
TYPES = {
    **dict.fromkeys("AORKEY CHNLNUM EXPID DCENUM DCEID SOS_VER PROGID AREADMOD AFOWLNUM A_ORDER".split(), int),
    **dict.fromkeys("CREATOR OBJECT AORLABEL AOT_TYPE FOVNAME READMODE DATE_OBS BUNIT CTYPE1".split(), str),
    **dict.fromkeys("MJD_OBS BMJD_OBS FRAMTIME EXPTIME FLUXCONV GAIN RONOISE ZODY_EST CRVAL1 PA".split(), float),
    "HDRMODE": bool,
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> synth.SynthArchive:
    """The default archive without noise, with the §3 response injected."""
    return synth.write_archive(tmp_path_factory.mktemp("clean"), seed=3, inject_response=True, noise=False)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> synth.SynthArchive:
    """The default archive as the demo writes it: noise, no injected response."""
    return synth.write_archive(tmp_path_factory.mktemp("noisy"), seed=5)


def _header(path: Path) -> fits.Header:
    return fits.getheader(path)


def _images(archive: synth.SynthArchive) -> dict[str, list[synth.TruthRecord]]:
    """Truth records grouped by image file."""
    out: dict[str, list[synth.TruthRecord]] = defaultdict(list)
    for record in archive.truth:
        out[record.path].append(record)
    return out


# -- layout ------------------------------------------------------------------------------------------------------


def test_layout_names_and_counts(clean: synth.SynthArchive) -> None:
    expected = 0
    for spec in clean.aors:
        expected += spec.n_exposures * len(spec.channels) * len(spec.types())
    assert len(clean.files) == expected == len(set(clean.files))
    assert 60 <= len(clean.files) <= 150
    for path in clean.files:
        assert path.is_file()
        match = NAME.match(path.name)
        assert match, path.name
        rel = path.relative_to(clean.root).parts
        assert rel[0] == f"r{match['aor']}" and rel[1] == f"ch{match['ch']}" and rel[2] == "bcd"
        header = _header(path)
        assert header["AORKEY"] == int(match["aor"])
        assert header["CHNLNUM"] == int(match["ch"])
        assert header["EXPID"] == int(match["exp"])
        if match["type"] not in ("unc2d", "cov2d", "msk2d"):
            assert header["DCENUM"] == int(match["dce"])
    kinds = Counter(NAME.match(p.name)["type"] for p in clean.files)  # type: ignore[index]
    assert set(kinds) == {"bcd", "bunc", "bimsk", "cbcd", "cbunc", "sub2d", "unc2d", "cov2d", "msk2d"}
    assert clean.truth_csv == clean.root / "truth.csv" and clean.truth_csv.is_file()


def test_shapes_dtypes_and_read_modes(clean: synth.SynthArchive) -> None:
    for path in clean.files:
        kind = NAME.match(path.name)["type"]  # type: ignore[index]
        with fits.open(path) as hdul:
            hdul.verify("exception")
            assert len(hdul) == 1
            header, data = hdul[0].header, hdul[0].data
        sub = "r71000064" in str(path) or "r24000640" in str(path)
        if kind in ("sub2d", "unc2d", "cov2d", "msk2d"):
            assert data.shape == (32, 32) and header["NAXIS"] == 2
        elif sub:
            assert data.shape == (64, 32, 32)
            assert (header["NAXIS"], header["NAXIS1"], header["NAXIS2"], header["NAXIS3"]) == (3, 32, 32, 64)
        else:
            assert data.shape == (256, 256) and header["NAXIS"] == 2
        integer = kind in ("bimsk", "cov2d", "msk2d")
        assert data.dtype == (np.dtype(">i2") if integer else np.dtype(">f4"))
        if kind in ("bcd", "cbcd", "bimsk", "sub2d"):
            assert header["AREADMOD"] == (1 if sub else 0)
        if kind in ("bcd", "cbcd", "sub2d"):
            assert header["READMODE"] == ("SUB" if sub else "FULL")
        if kind in ("bcd", "cbcd", "bunc", "cbunc", "sub2d", "unc2d"):
            assert header["BUNIT"] == "MJy/sr"


# -- headers -----------------------------------------------------------------------------------------------------


def test_science_headers_have_every_section1_keyword(clean: synth.SynthArchive) -> None:
    dithered = {spec.aorkey: spec.dithered for spec in clean.aors}
    for path in clean.files:
        kind = NAME.match(path.name)["type"]  # type: ignore[index]
        if kind not in ("bcd", "cbcd"):
            continue
        header = _header(path)
        missing = [key for key in SECTION1 if key not in header]
        assert not missing, (path.name, missing)
        for key, kind_ in TYPES.items():
            assert type(header[key]) is kind_, (key, header[key])
        assert 300 <= len(header) <= 700, len(header)
        assert any(card.keyword == "" and "/ " in card.image for card in header.cards), "section headings"
        assert "COMMENT" in header and "HISTORY" in header
        assert header["CTYPE1"] == "RA---TAN-SIP" and header["CTYPE2"] == "DEC--TAN-SIP"
        assert header["A_ORDER"] == header["B_ORDER"] == header["AP_ORDER"] == header["BP_ORDER"] == 5
        assert header["PXSCAL1"] < 0 < header["PXSCAL2"]
        has_dither = [key in header for key in DITHER_KEYS]
        assert has_dither == [dithered[header["AORKEY"]]] * 3
        assert "CHECKSUM" not in header and "DATASUM" not in header


def test_dceids_are_unique_and_shared_by_companions(clean: synth.SynthArchive) -> None:
    by_exposure: dict[tuple, set[int]] = defaultdict(set)
    for path in clean.files:
        header = _header(path)
        if "DCEID" in header:
            key = (header["AORKEY"], header["CHNLNUM"], header["EXPID"], header["DCENUM"])
            by_exposure[key].add(header["DCEID"])
    assert all(len(ids) == 1 for ids in by_exposure.values())
    all_ids = [next(iter(ids)) for ids in by_exposure.values()]
    assert len(all_ids) == len(set(all_ids))
    assert all(0 < dceid < 2**31 for dceid in all_ids)


def test_mask_and_small_headers(clean: synth.SynthArchive) -> None:
    for path in clean.files:
        kind = NAME.match(path.name)["type"]  # type: ignore[index]
        header = _header(path)
        if kind == "bimsk":
            assert header["BITPIX"] == 16
            assert [header[f"BIT{bit:02d}"] for bit in range(15)] == [2**bit for bit in range(15)]
            assert header["PROCBITS"] == 32256
            assert {"MJD_OBS", "DATE_OBS", "DCEID", "DCENUM"} <= set(header)
        if kind in ("unc2d", "cov2d", "msk2d"):
            assert {"AORKEY", "CHNLNUM", "EXPID", "INSTRUME", "READMODE", "DPID"} <= set(header)
            bcd = _header(path.with_name(path.name.replace(f"_{kind}", "_bcd")))
            assert header["DPID"] == bcd["DPID"]


def test_sip_differs_per_channel_and_read_mode() -> None:
    sets = {(mode, ch): synth._sip(mode, ch) for mode in ("FULL", "SUB") for ch in (1, 2, 3, 4)}
    values = {key: tuple(v for k, v in cards.items() if k.startswith("A_") and k[2].isdigit())
              for key, cards in sets.items()}  # fmt: skip
    assert len(set(values.values())) == 8
    for cards in sets.values():
        coefficients = [abs(v) for k, v in cards.items() if "_" in k and k.split("_")[-1].isdigit()]
        assert 0 < max(coefficients) < 1e-4


# -- WCS and positions --------------------------------------------------------------------------------------------


def test_wcs_loads_cleanly_and_places_the_star(clean: synth.SynthArchive) -> None:
    for rel, records in _images(clean).items():
        header = _header(clean.root / rel)
        # Warnings are errors in this suite: this proves the WCS loads without any. A cube's header has NAXIS=3, so
        # astropy needs naxis=2 for its SIP, exactly as with the real subarray files.
        wcs = WCS(header, naxis=2)
        assert wcs.sip is not None and wcs.pixel_n_dim == 2
        first = records[0]
        x, y = wcs.all_world2pix(first.ra_deg, first.dec_deg, 0, tolerance=1e-12, maxiter=50)
        assert abs(x - first.x_wcs_px) < 1e-6 and abs(y - first.y_wcs_px) < 1e-6
        if first.read_mode == "FULL":
            assert (first.x_px, first.y_px) == (first.x_wcs_px, first.y_wcs_px)
        else:  # the header WCS holds the cube's mean pointing
            assert abs(np.mean([r.x_px for r in records]) - first.x_wcs_px) < 1e-9
            assert abs(np.mean([r.y_px for r in records]) - first.y_wcs_px) < 1e-9
        # world <-> pixel round trip over the whole array, with the SIP distortion
        n = header["NAXIS1"]
        px = np.array([[0.0, 0.0], [n - 1.0, 0.0], [0.0, n - 1.0], [n - 1.0, n - 1.0], [n / 2, n / 3]])
        back = wcs.all_world2pix(wcs.all_pix2world(px, 0), 0, tolerance=1e-12, maxiter=50)
        assert np.max(np.abs(back - px)) < 1e-6
        # the fitted inverse polynomials (AP/BP) agree with the iterative inverse to a thousandth of a pixel
        focal = wcs.wcs_world2pix(wcs.all_pix2world(px, 0), 0)  # undistorted (TAN only) pixel positions
        u, v = focal[:, 0] - (header["CRPIX1"] - 1), focal[:, 1] - (header["CRPIX2"] - 1)
        for axis, name in ((0, "AP"), (1, "BP")):
            terms = [(int(k.split("_")[1]), int(k.split("_")[2]), header[k]) for k in header
                     if k.startswith(name + "_") and k[3].isdigit()]  # fmt: skip
            inverse = focal[:, axis] + sum(c * u**p * v**q for p, q, c in terms)
            assert np.max(np.abs(inverse - px[:, axis])) < 1e-3


def test_pixel_phase_varies_between_images(clean: synth.SynthArchive) -> None:
    for spec in clean.aors:
        records = [r for r in clean.truth if r.aorkey == spec.aorkey and r.channel == spec.channels[0]]
        x = np.array([r.x_px for r in records])
        y = np.array([r.y_px for r in records])
        phase = np.concatenate([x - np.round(x), y - np.round(y)])
        assert np.ptp(phase) > 0.05
        if spec.read_mode == "SUB":
            assert np.all(np.abs(x - 15.5) < 1.5) and np.all(np.abs(y - 15.5) < 1.5)
            for expid in range(spec.n_exposures):
                planes = [r for r in records if r.expid == expid]
                assert len(planes) == 64
                spread = math.hypot(np.ptp([r.x_px for r in planes]), np.ptp([r.y_px for r in planes]))
                assert 0.1 < spread < 0.8
        elif spec.dithered:
            assert np.ptp(x) > 3 or np.ptp(y) > 3


def test_dither_and_hdr_keywords(clean: synth.SynthArchive) -> None:
    for spec in clean.aors:
        ch = spec.channels[0]
        headers = [_header(clean.root / r.path) for r in clean.truth if r.aorkey == spec.aorkey and r.channel == ch
                   and r.plane == 0]  # fmt: skip
        if spec.dithered:
            assert [h["DITHPOS"] for h in headers] == list(range(1, spec.n_exposures + 1))
            assert {h["DITHSCAL"] for h in headers} == {spec.dither_scale}
            assert {h["CYCLENUM"] for h in headers} == {1}
        if spec.hdr:
            assert [h["HDRFRAME"].strip() for h in headers] == ["short", "long"] * (spec.n_exposures // 2)
            assert [h["FRAMTIME"] for h in headers] == [0.6, 12.0] * (spec.n_exposures // 2)
            assert all(h["HDRMODE"] is True for h in headers)
        else:
            assert all(h.get("HDRMODE", False) is False for h in headers)
        for h in headers:  # FRAMTIME = (AWAITPER + 2 AFOWLNUM) SAMPTIME, EXPTIME = (AWAITPER + AFOWLNUM) SAMPTIME
            assert math.isclose(h["FRAMTIME"], (h["AWAITPER"] + 2 * h["AFOWLNUM"]) * h["SAMPTIME"])
            assert math.isclose(h["EXPTIME"], (h["AWAITPER"] + h["AFOWLNUM"]) * h["SAMPTIME"])


# -- pixels: flux, response, noise, NaNs, masks --------------------------------------------------------------------


def test_noise_free_flux_equals_truth(clean: synth.SynthArchive) -> None:
    """Sum of (image - background) over the image and over a 21x21 box gives the injected flux (gauss PSF)."""
    for rel, records in _images(clean).items():
        data = fits.getdata(clean.root / rel).astype(np.float64)
        cube = data if data.ndim == 3 else data[None]
        omega = synth.pixel_solid_angle_sr(records[0].channel)
        for record, image in zip(records, cube, strict=True):
            star = image - np.float32(record.background_mjy_sr)  # the background as stored, in float32
            expected = record.image_flux_mjy * record.fraction_on_valid_px
            assert record.image_flux_mjy == pytest.approx(record.flux_mjy * record.response_factor, rel=1e-15)
            assert np.nansum(star) * omega * 1e9 == pytest.approx(expected, rel=2e-6)
            ix, iy = round(record.x_px), round(record.y_px)
            box = star[max(iy - 10, 0) : iy + 11, max(ix - 10, 0) : ix + 11]
            assert np.nansum(box) * omega * 1e9 == pytest.approx(expected, rel=2e-6)
            # the light is centred where the truth says (first moment over a 13x13 box, noise-free)
            yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
            near = (np.abs(xx - ix) <= 6) & (np.abs(yy - iy) <= 6)
            weight = np.where(near, star, 0.0)
            assert np.nansum(weight * xx) / np.nansum(weight) == pytest.approx(record.x_px, abs=0.01)
            assert np.nansum(weight * yy) / np.nansum(weight) == pytest.approx(record.y_px, abs=0.01)


def test_injected_response_is_the_section3_factor(clean: synth.SynthArchive, noisy: synth.SynthArchive) -> None:
    factors = []
    for record in clean.truth:
        expected = correction_factor(record.x_px, record.y_px, record.channel, mission=record.mission,
                                     subarray=record.read_mode == "SUB")  # fmt: skip
        assert record.response_factor == pytest.approx(float(expected), rel=1e-12)
        factors.append(record.response_factor)
    assert 0.9 < min(factors) < max(factors) < 1.1 and np.ptp(factors) > 0.005
    assert {r.response_factor for r in noisy.truth} == {1.0}
    assert all(r.image_flux_mjy == r.flux_mjy for r in noisy.truth)


def test_noise_matches_the_uncertainty_file(noisy: synth.SynthArchive) -> None:
    pulls = []
    for rel, records in _images(noisy).items():
        image = fits.getdata(noisy.root / rel).astype(np.float64)
        unc_name = rel.replace("_cbcd.fits", "_cbunc.fits").replace("_bcd.fits", "_bunc.fits")
        sigma = fits.getdata(noisy.root / unc_name).astype(np.float64)
        assert np.array_equal(np.isnan(image), np.isnan(sigma))
        cube, sig = (image, sigma) if image.ndim == 3 else (image[None], sigma[None])
        for record, plane, s in zip(records, cube, sig, strict=True):
            yy, xx = np.mgrid[0 : plane.shape[0], 0 : plane.shape[1]]
            far = np.hypot(xx - record.x_px, yy - record.y_px) > 8
            pulls.append(((plane - record.background_mjy_sr) / s)[far & np.isfinite(plane)])
    pull = np.concatenate(pulls)
    assert pull.size > 100_000
    assert abs(np.mean(pull)) < 0.02
    assert np.std(pull) == pytest.approx(1.0, abs=0.02)


def test_nan_pixels_and_mask_bits(noisy: synth.SynthArchive) -> None:
    for rel, records in _images(noisy).items():
        image = fits.getdata(noisy.root / rel)
        mask = fits.getdata(noisy.root / rel.replace("_cbcd.fits", "_bimsk.fits").replace("_bcd.fits", "_bimsk.fits"))
        assert mask.shape == image.shape
        nan = np.isnan(image)
        assert np.array_equal(nan, (mask & synth._MASK_BAD) != 0)
        assert 0.005 < nan.mean() < 0.04
        cube = nan if nan.ndim == 3 else nan[None]
        for record, plane in zip(records, cube, strict=True):
            assert record.n_nan == plane.sum()
            yy, xx = np.nonzero(plane)
            assert np.all(np.hypot(xx - record.x_px, yy - record.y_px) >= 4.0)


def test_subarray_collapsed_products(noisy: synth.SynthArchive) -> None:
    stems = {r.path[: -len("_bcd.fits")] for r in noisy.truth if r.read_mode == "SUB"}
    assert stems
    for stem in stems:
        cube = fits.getdata(noisy.root / f"{stem}_bcd.fits")
        cov = fits.getdata(noisy.root / f"{stem}_cov2d.fits")
        med = fits.getdata(noisy.root / f"{stem}_sub2d.fits")
        msk = fits.getdata(noisy.root / f"{stem}_msk2d.fits")
        unc = fits.getdata(noisy.root / f"{stem}_unc2d.fits")
        count = np.isfinite(cube).sum(axis=0)
        assert np.array_equal(cov, count)
        good = count > 0
        assert np.array_equal(np.isnan(med), ~good) and np.array_equal(msk != 0, ~good)
        assert np.array_equal(np.isnan(unc), ~good)
        some = np.argwhere(good)[:50]
        for iy, ix in some:
            assert med[iy, ix] == pytest.approx(np.nanmedian(cube[:, iy, ix]), rel=1e-6)


def test_radiation_hits_are_flagged(tmp_path: Path) -> None:
    spec = synth.AorSpec(aorkey=33000001, channels=(1,), n_exposures=1, mission="warm", mjd_start=56400.5,
                         radhit_fraction=0.002, file_types=("bcd", "bimsk"))  # fmt: skip
    archive = synth.write_archive(tmp_path, [spec], noise=False)
    image = fits.getdata(archive.files[0])
    mask = fits.getdata(archive.files[1])
    hit = (mask & 512) != 0
    record = archive.truth[0]
    assert 50 < hit.sum() < 250
    assert np.all(image[hit] > record.background_mjy_sr + 0.1)
    assert not np.any(hit & np.isnan(image))


# -- time and mission ---------------------------------------------------------------------------------------------


def test_times_are_consistent(clean: synth.SynthArchive) -> None:
    by_aor: dict[tuple[int, int], list[fits.Header]] = defaultdict(list)
    for record in clean.truth:
        if record.plane == 0:
            by_aor[(record.aorkey, record.channel)].append(_header(clean.root / record.path))
    for headers in by_aor.values():
        headers.sort(key=lambda h: h["EXPID"])
        mjd = np.array([h["MJD_OBS"] for h in headers])
        for h in headers:
            t = Time(h["DATE_OBS"], format="isot", scale="utc")
            assert abs(t.mjd - h["MJD_OBS"]) * 86400 < 1e-3
            assert abs(h["BMJD_OBS"] - h["MJD_OBS"]) * 86400 < 520  # light time across ~1 AU
            assert abs(h["HMJD_OBS"] - h["BMJD_OBS"]) * 86400 < 10
            leap = 33 if h["MJD_OBS"] < 54832 else (34 if h["MJD_OBS"] < 56109 else 35)
            assert h["ET_OBS"] - h["UTCS_OBS"] == pytest.approx(leap + 32.184, abs=2e-3)
            assert h["ATIMEEND"] > h["AINTBEG"] > 0
        frames = np.array([h["FRAMTIME"] * h.get("NAXIS3", 1) for h in headers])
        assert np.all(np.diff(mjd) * 86400 > frames[:-1])
        assert np.allclose(np.diff([h["AINTBEG"] for h in headers]), np.diff(mjd) * 86400, atol=0.02)
        bmjd_offset = np.array([h["BMJD_OBS"] - h["MJD_OBS"] for h in headers]) * 86400
        assert np.ptp(bmjd_offset) < 1.0


def test_cryo_and_warm(clean: synth.SynthArchive) -> None:
    seen = set()
    for record in clean.truth:
        header = _header(clean.root / record.path)
        mission = "cryo" if header["MJD_OBS"] <= synth.CRYO_END_MJD else "warm"
        assert mission == record.mission
        assert header["CREATOR"] == ("S18.25.0" if mission == "cryo" else "S19.2.0")
        assert header["FLUXCONV"] == synth._FLUXCONV[mission][record.channel]
        seen.add((mission, record.channel))
    assert seen == {("cryo", 1), ("cryo", 2), ("cryo", 3), ("cryo", 4), ("warm", 1), ("warm", 2)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mission": "cryo", "mjd_start": 54968.5}, "cryo AOR must end"),
        ({"mission": "cryo", "mjd_start": 54967.9999}, "cryo AOR must end"),  # would straddle the boundary
        ({"mission": "warm", "mjd_start": 54968.0}, "warm AOR must start after"),
        ({"mission": "warm", "channels": (1, 3)}, "only channels 1 and 2"),
        ({"read_mode": "SUB", "framtime_s": 12.0}, "framtime_s"),
        ({"read_mode": "SUB", "dithered": True}, "full-array AORs only"),
        ({"file_types": ("bunc", "bimsk")}, "must include 'bcd' or 'cbcd'"),
        ({"file_types": ("bcd", "sub2d")}, "file_types"),
        ({"channels": (5,)}, "among 1-4"),
        ({"flux_mjy": {1: 10.0}}, "no value given for channel 2"),
        ({"flux_mjy": -1.0}, "must be positive"),
    ],
)
def test_spec_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(BadOption, match=re.escape(message)):
        synth.AorSpec(aorkey=12345678, **kwargs)


def test_mission_boundary_is_inclusive_for_cryo() -> None:
    spec = synth.AorSpec(aorkey=1, mission="cryo", channels=(3,), mjd_start=54967.9, n_exposures=2)
    assert spec.start_mjd() + spec.duration_days() <= synth.CRYO_END_MJD
    warm = synth.AorSpec(aorkey=2, mission="warm", mjd_start=54968.0001)
    assert warm.start_mjd() > synth.CRYO_END_MJD
    assert synth.AorSpec(aorkey=3).start_mjd() > synth.CRYO_END_MJD
    assert synth.AorSpec(aorkey=3, mission="cryo").start_mjd() < synth.CRYO_END_MJD


def test_overlapping_aors_are_refused(tmp_path: Path) -> None:
    a = synth.AorSpec(aorkey=11, mjd_start=56500.0, n_exposures=3)
    b = synth.AorSpec(aorkey=12, mjd_start=56500.0, n_exposures=3)
    with pytest.raises(BadOption, match="overlap in time"):
        synth.write_archive(tmp_path, [a, b])
    with pytest.raises(BadOption, match="unique"):
        synth.write_archive(tmp_path, [a, a])


# -- determinism and the truth table ------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    aors = synth.default_aors()[:2]
    one = synth.write_archive(tmp_path / "one", aors, seed=7)
    two = synth.write_archive(tmp_path / "two", aors, seed=7)
    other = synth.write_archive(tmp_path / "other", aors, seed=8)
    for a, b, c in zip(one.files, two.files, other.files, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.name == c.name
    assert one.truth_csv.read_bytes() == two.truth_csv.read_bytes()  # type: ignore[union-attr]
    assert one.files[0].read_bytes() != other.files[0].read_bytes()


def test_truth_csv_round_trips(clean: synth.SynthArchive) -> None:
    with clean.truth_csv.open(newline="") as handle:  # type: ignore[union-attr]
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == synth.TRUTH_COLUMNS
    assert len(rows) == len(clean.truth)
    for row, record in zip(rows, clean.truth, strict=True):
        assert float(row["x_px"]) == record.x_px and float(row["mjd_obs"]) == record.mjd_obs
        assert int(row["dceid"]) == record.dceid and row["path"] == record.path
        assert (clean.root / row["path"]).is_file()
    n_sub = sum(64 * s.n_exposures * len(s.channels) for s in clean.aors if s.read_mode == "SUB")
    n_full = sum(s.n_exposures * len(s.channels) for s in clean.aors if s.read_mode == "FULL")
    assert len(rows) == n_sub + n_full


def test_many_aors_for_benchmarks(tmp_path: Path) -> None:
    specs = synth.many_aors(3, channels=(1, 2), n_exposures=2)
    assert len({s.aorkey for s in specs}) == 3
    archive = synth.write_archive(tmp_path, specs, truth_csv=False)
    assert len(archive.files) == 3 * 2 * 2 * 3 and archive.truth_csv is None
    cryo = synth.many_aors(2000, mission="cryo", n_exposures=1)
    assert cryo[-1].start_mjd() + cryo[-1].duration_days() <= synth.CRYO_END_MJD


def test_irac_psf_model(tmp_path: Path) -> None:
    spec = synth.AorSpec(aorkey=44000001, read_mode="SUB", framtime_s=0.1, n_exposures=1, psf_model="irac",
                         mission="warm", mjd_start=56700.25, file_types=("bcd",), flux_mjy=80.0,
                         nan_fraction=0.05)  # fmt: skip
    archive = synth.write_archive(tmp_path, [spec], noise=False)
    cube = fits.getdata(archive.files[0]).astype(np.float64)
    omega = synth.pixel_solid_angle_sr(2)
    for record, plane in zip(archive.truth, cube, strict=True):
        # the halo spills over the 32x32 subarray's edges and into NaN pixels
        assert 0.95 < record.fraction_on_valid_px < 0.999
        total = np.nansum(plane - np.float32(record.background_mjy_sr)) * omega * 1e9
        assert total == pytest.approx(80.0 * record.fraction_on_valid_px, rel=2e-6)


def test_ingest_reader_recognises_every_file(clean: synth.SynthArchive) -> None:
    fitsio = pytest.importorskip("iracdb.fitsio")
    for path in clean.files:
        record = fitsio.read_irac_file(str(path))
        assert isinstance(record, fitsio.FileRecord), getattr(record, "reason", None)
        assert record.kind == NAME.match(path.name)["type"]  # type: ignore[index]


def test_spec_is_hashable_and_frozen() -> None:
    spec = synth.AorSpec(aorkey=5, channels=[1, 2], flux_mjy={2: 5.0, 1: 9.0})  # type: ignore[arg-type]
    assert spec.channels == (1, 2) and spec.star_flux_mjy(1) == 9.0 and spec.star_flux_mjy(2) == 5.0
    assert hash(spec) == hash(synth.AorSpec(aorkey=5, channels=(1, 2), flux_mjy={1: 9.0, 2: 5.0}))
    with pytest.raises(AttributeError):
        spec.aorkey = 6  # type: ignore[misc]


# -- against the real headers in ../shared (skipped when they are not there) ------------------------------------------


@pytest.mark.skipif(not REAL.is_dir(), reason="real IRAC files not available")
def test_keyword_types_match_real_headers(clean: synth.SynthArchive) -> None:
    real_full = fits.getheader(REAL / "r46987776/ch2/bcd/SPITZER_I2_46987776_0136_0000_2_bcd.fits")
    real_sub = fits.getheader(REAL / "r46466816/ch2/bcd/SPITZER_I2_46466816_0000_0000_2_bcd.fits")
    ours_full = _header(next(p for p in clean.files if p.name.endswith("_bcd.fits") and "r71000320" in str(p)))
    ours_sub = _header(next(p for p in clean.files if p.name.endswith("_bcd.fits") and "r71000064" in str(p)))
    for real, ours in ((real_full, ours_full), (real_sub, ours_sub)):
        for key in SECTION1:
            if key in real:
                assert type(ours[key]) is type(real[key]), key
        shared = [k for k in real if k and k not in ("COMMENT", "HISTORY")]
        present = sum(k in ours for k in shared)
        assert present / len(shared) > 0.8
