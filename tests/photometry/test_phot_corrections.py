"""The numpy port of irac_aphot_corr.pro against outputs of the original routine, and its IDL semantics."""

import csv
import sys
import types

import numpy as np
import pytest

from iracdb.errors import BadOption
from iracdb.photometry import corrections as corr
from iracdb.photometry.corrections import correction_factor, idl_fix, idl_round, irac_aphot_corr, is_correctable

#: Agreement with the original routine (GDL run), relative; the port is exact to a few ulp.
REL_TOL = 1e-12


def _vectors(shared):
    with open(shared / "reference" / "irac_aphot_corr_vectors.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 960
    return rows


def test_every_reference_row(shared):
    rows = _vectors(shared)
    bad = []
    for r in rows:
        got = irac_aphot_corr(
            float(r["flux"]), float(r["x"]), float(r["y"]), int(r["channel"]),
            mission=r["mission"], subarray=r["subarray"] == "1",
        )
        ref = float(r["corrected_flux"])
        if not abs(got - ref) <= REL_TOL * abs(ref):
            bad.append((r, float(got)))
    assert not bad, f"{len(bad)} rows differ, first: {bad[0]}"


@pytest.mark.parametrize("mission", ["warm", "cryo"])
@pytest.mark.parametrize("subarray", [False, True])
@pytest.mark.parametrize("channel", [1, 2, 3, 4])
def test_reference_vectorised(shared, channel, mission, subarray):
    rows = [
        r for r in _vectors(shared)
        if int(r["channel"]) == channel and r["mission"] == mission and (r["subarray"] == "1") == subarray
    ]
    assert len(rows) == 60
    x, y, flux, ref = (np.array([float(r[k]) for r in rows]) for k in ("x", "y", "flux", "corrected_flux"))
    got = irac_aphot_corr(flux, x, y, channel, mission=mission, subarray=subarray)
    np.testing.assert_allclose(got, ref, rtol=REL_TOL, atol=0)
    factor = correction_factor(x, y, channel, mission=mission, subarray=subarray)
    np.testing.assert_allclose(flux / factor, ref, rtol=REL_TOL, atol=0)


def test_float64_coefficients_would_fail(shared, monkeypatch):
    """The reference is sensitive to the float32 rounding of the coefficients: the test above can fail."""
    exact = np.array([0.98397385, -8.6387206e-05, 3.6310403e-05, -5.6284359e-07, 1.6023687e-06, 1.3574380e-06,
                      0.039129220, 0.059108698, 0.15899583, 0.037160298, 0.18512016, 0.17005089, 0.95685578, 1.0])
    monkeypatch.setitem(corr.COEFFICIENTS, ("warm", 1), exact)
    rows = [r for r in _vectors(shared) if r["channel"] == "1" and r["mission"] == "warm" and r["subarray"] == "0"]
    x, y, flux, ref = (np.array([float(r[k]) for r in rows]) for k in ("x", "y", "flux", "corrected_flux"))
    rel = np.abs(irac_aphot_corr(flux, x, y, 1) / ref - 1)
    assert rel.max() > 1e-9


def test_idl_fix_and_round():
    np.testing.assert_array_equal(idl_fix([-1.7, -0.5, -0.2, 0.2, 0.5, 1.7]), [-1, -0, -0, 0, 0, 1])
    np.testing.assert_array_equal(idl_round([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]), [-3, -2, -1, 1, 2, 3])
    np.testing.assert_array_equal(idl_round([-0.49999999999999994, 0.49999999999999994, 3.2, -3.7]), [0, 0, 3, -4])


def test_warm_ch3_ch4_unchanged_and_signalled():
    for channel in (3, 4):
        assert not is_correctable(channel, "warm")
        assert is_correctable(channel, "cryo")
        np.testing.assert_array_equal(correction_factor([10.3, np.nan], [100.2, 5.0], channel), [1.0, np.nan])
    assert is_correctable(1, "warm") and is_correctable(2, "warm")


def test_subarray_offset_equals_full_array():
    x, y = np.array([3.2, 15.5, 30.9]), np.array([0.1, 15.0, 31.4])
    for channel, (ox, oy) in corr.SUBARRAY_OFFSET.items():
        for mission in ("warm", "cryo") if channel < 3 else ("cryo",):
            sub = correction_factor(x, y, channel, mission=mission, subarray=True)
            full = correction_factor(x + ox, y + oy, channel, mission=mission)
            np.testing.assert_array_equal(sub, full)


def test_pp_only_times_al_only_is_full():
    x, y = np.array([20.3, 128.7, 240.45]), np.array([11.9, 127.5, 60.02])
    pp = correction_factor(x, y, 1, pp_only=True)
    al = correction_factor(x, y, 1, al_only=True)
    np.testing.assert_allclose(pp * al, correction_factor(x, y, 1), rtol=1e-15)
    # The array-location term is constant within a pixel, the pixel phase term is periodic.
    np.testing.assert_array_equal(correction_factor([20.1, 20.4], [11.9, 11.6], 1, al_only=True)[0],
                                  correction_factor([20.1, 20.4], [11.9, 11.6], 1, al_only=True)[1])
    np.testing.assert_allclose(correction_factor(20.3, 11.9, 1, pp_only=True),
                               correction_factor(90.3, 140.9, 1, pp_only=True), rtol=1e-12)


def test_reach_and_hora():
    k = float(np.float32(0.0535))
    # Reach et al.: array location normalised at the array centre; phase 0 there.
    got = correction_factor(127.0, 127.0, 1, mission="cryo", model="reach")
    np.testing.assert_allclose(got, 1 + k / np.sqrt(2 * np.pi), rtol=1e-7)
    # Reach has no ch2 pixel phase term, Hora does.
    assert correction_factor(127.0, 127.0, 2, mission="cryo", model="reach", al_only=False) == pytest.approx(1.0)
    assert correction_factor(127.3, 127.0, 2, mission="cryo", model="hora", pp_only=True) == pytest.approx(
        1 + float(np.float32(0.0309)) * (1 / np.sqrt(2 * np.pi) - 0.3), rel=1e-7)
    # Hora et al.: array location normalised to its median over the array.
    g = np.arange(256.0)
    al = correction_factor(g[None, :], g[:, None], 3, mission="cryo", model="hora", al_only=True)
    assert np.median(al) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(BadOption, match="cryogenic"):
        correction_factor(1.0, 1.0, 1, mission="warm", model="hora")


@pytest.mark.parametrize("kwargs", [dict(channel=5), dict(channel=1, mission="hot"), dict(channel=1, model="x")])
def test_bad_options(kwargs):
    with pytest.raises(BadOption):
        correction_factor(1.0, 1.0, **kwargs)


def test_map_correction_lookup():
    lm = np.full((256, 256), 1.0)
    lm[216 + 15, 8 + 16] = 1.05  # subarray pixel (16, 15)
    maps = corr.CorrectionMaps(location=lm)
    f = corr.map_correction_factor([16.2, 15.4, 300.0], [15.3, 15.0, 1.0], maps, subarray_offset=(8, 216))
    np.testing.assert_allclose(f[:2], [1 / 1.05, 1.0])  # the location map multiplies the flux
    assert np.isnan(f[2])
    pm = np.ones((101, 101))
    pm[50 + 20, 50 - 30] = 1.02  # phase x = -0.30, y = +0.20
    f = corr.map_correction_factor([10.7, 10.0, 10.705], [3.2, 3.0, 3.2], corr.CorrectionMaps(phase=pm))
    np.testing.assert_allclose(f, [1.02, 1.0, 1.01])  # the last one interpolated halfway


@pytest.mark.parametrize("channel", [1, 2, 3, 4])
def test_shared_maps_agree_with_cryo_routine(shared, channel):
    """The IRAC team's maps encode (nearly) the /CRYO model: location = 1/R_al, phase = R_pp."""
    maps = corr.load_correction_maps(shared / "data" / "corrections", channel)
    assert (maps.phase is not None) == (channel in (1, 2))
    rng = np.random.default_rng(channel)
    # Phases in [0, 0.5) so that FIX (routine) and the pixel containing the centroid (maps) agree.
    x = rng.integers(0, 256, 400) + rng.uniform(0, 0.49, 400)
    y = rng.integers(0, 256, 400) + rng.uniform(0, 0.49, 400)
    al = correction_factor(x, y, channel, mission="cryo", al_only=True)
    got_al = corr.map_correction_factor(x, y, corr.CorrectionMaps(location=maps.location))
    # The maps were normalised slightly differently from the routine: 1e-4 (ch1, ch2), 1e-3 (ch3, ch4).
    np.testing.assert_allclose(got_al, al, rtol=2e-4 if channel < 3 else 2e-3)
    if maps.phase is not None:
        pp = correction_factor(x, y, channel, mission="cryo", pp_only=True)
        got_pp = corr.map_correction_factor(x, y, corr.CorrectionMaps(phase=maps.phase))
        # Same functional form, parameters of another fit generation: agreement to 0.6%, far better than
        # the ~5% of the inverse (which a wrong orientation or multiply/divide choice would give).
        np.testing.assert_allclose(got_pp, pp, rtol=6e-3)


def test_idl_backend_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "mirpyidl", None)  # makes the import fail even where it is installed
    with pytest.raises(BadOption, match=r"iracdb\[idl\].*licensed IDL"):
        corr.irac_aphot_corr_idl(1.0, 10.0, 10.0, 1)


def test_idl_backend_calls_routine(monkeypatch):
    calls = {}
    fake = types.ModuleType("mirpyidl")
    fake.setVariable = lambda name, value: calls.setdefault(name, value)
    fake.execute = lambda cmd: calls.setdefault("cmd", cmd)
    fake.getVariable = lambda name: calls["iracdb_flux"] * 2
    monkeypatch.setitem(sys.modules, "mirpyidl", fake)
    out = corr.irac_aphot_corr_idl([1.0, 2.0], [10.0, 11.0], [12.0, 13.0], 2, mission="cryo", subarray=True)
    np.testing.assert_array_equal(out, [2.0, 4.0])
    assert calls["cmd"] == "iracdb_out = irac_aphot_corr(iracdb_flux, iracdb_x, iracdb_y, 2, /CRYO, /SUBARRAY)"
