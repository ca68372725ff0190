"""``iracdb.photometry(AORs, ...)``, the 2018 one-call interface: equal to the archive path on the real XO-3 AOR,
problem AORs named with reasons, nothing written to disk unless asked, bad input one clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import iracdb
from iracdb.errors import BadOption
from tests.conftest import FULL_ARRAY_AOR_DIR, SUBARRAY_AOR_DIR

XO3 = "04:21:52.7 +57:49:01.9"
BCDS = sorted(str(p) for p in (SUBARRAY_AOR_DIR / "ch2" / "bcd").glob("*_bcd.fits"))


def _same(a: object, b: object) -> bool:
    """Equal values, masks included (masked entries compare equal when both are masked)."""
    a, b = np.ma.asanyarray(a), np.ma.asanyarray(b)
    mask_a, mask_b = np.ma.getmaskarray(a), np.ma.getmaskarray(b)
    return bool(np.array_equal(mask_a, mask_b) and np.array_equal(np.asarray(a)[~mask_a], np.asarray(b)[~mask_b]))


def test_photometry_equals_the_archive_path_on_the_real_xo3_aor(db_url: str) -> None:
    assert len(BCDS) == 11
    with iracdb.open(db_url) as arc:  # the archive path: catalogue the whole folder, reduce the AOR
        arc.ingest(SUBARRAY_AOR_DIR, workers=1)
        run = arc.reduce("xo3", XO3, aor=46466816, radius=3, annulus=(3, 7), workers=1)
        aors, images = run.aors(), run.images()
    aor_data, img_data, problems = iracdb.photometry([BCDS], target=XO3, radius=3, annulus=(3, 7), workers=1)
    assert len(problems) == 0 and len(img_data) == 704 and list(aor_data["aor_index"]) == [0]
    assert aor_data.colnames == ["aor_index", *aors.colnames] and img_data.colnames == ["aor_index", *images.colnames]
    for name in aors.colnames:  # every number, bit for bit
        assert _same(aor_data[name], aors[name]), name
    for name in images.colnames:
        assert _same(img_data[name], images[name]), name
    assert aor_data["flux_mjy"][0] == aors["flux_mjy"][0] and 55.9 < aor_data["flux_mjy"][0] < 56.0
    assert aor_data["flux_mjy"].unit == "mJy" and aor_data.meta["parameters"]["radius_px"] == 3.0


def test_problem_aors_are_named_with_their_reasons(tmp_path: Path) -> None:
    junk = tmp_path / "SPITZER_I2_1_0000_0000_1_bcd.fits"
    junk.write_bytes(b"not a FITS file")
    wise = sorted(str(p) for p in (FULL_ARRAY_AOR_DIR / "ch2" / "bcd").glob("*_bcd.fits"))
    # XO-3 is a degree away from the WISE AOR's field: that AOR has no usable image.
    aor_data, img_data, problems = iracdb.photometry([BCDS[:2], wise, [str(junk)]], target=XO3, workers=1)
    assert sorted(set(img_data["aor_index"])) == [0, 1] and len(img_data) == 2 * 64 + 1
    assert list(problems["aor_index"]) == [1, 2]
    assert problems["aorkey"][0] == 46987776 and "no usable image" in problems["reason"][0]
    assert bool(problems["aorkey"].mask[1]) and "not a FITS file" in problems["reason"][1]
    assert list(aor_data["n_used"][aor_data["aor_index"] == 1]) == [0]


def test_nothing_is_written_to_disk_unless_a_database_is_given(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "aor"
    folder.mkdir()
    for path in BCDS[:1]:  # one BCD with its companions, and a file beside them that is not measured
        for kind in ("bcd", "bunc", "bimsk"):
            shutil.copy(path.replace("_bcd.", f"_{kind}."), folder)
    shutil.copy(BCDS[1], folder)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    first = sorted(str(p) for p in folder.glob("*_bcd.fits"))[:1]
    aor_data, img_data, _ = iracdb.photometry([first], target=XO3, workers=1)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no database file, nothing else
    assert len(img_data) == 64 and set(img_data["expid"]) == {0}  # only the file given, not its folder
    kept = tmp_path / "kept.sqlite"
    again, _, _ = iracdb.photometry([first], target=XO3, db=str(kept), run_name="mine", workers=1)
    assert kept.is_file() and again["flux_mjy"][0] == aor_data["flux_mjy"][0]
    with iracdb.open(kept) as arc:
        assert list(arc.runs()["name"]) == ["mine"]
        # the file given and its uncertainty and mask files beside it, nothing else of the folder
        assert [(e["expid"], e["kinds"]) for e in arc.exposures(46466816)] == [(0, "bcd,bunc,bimsk")]
        assert arc.run("mine").provenance["inputs_summary"]["count"] == 3


@pytest.mark.parametrize(("aors", "message"), [
    ("a_bcd.fits", "AORs is a list of lists"),
    (BCDS, r"AORs\[0\] is not a list of FITS files"),
    ([[]], r"AORs\[0\] is not a list of FITS files"),
    ([["/no/such_bcd.fits"]], r"AORs\[0\]: no such file: /no/such_bcd\.fits"),
])
def test_bad_input_is_one_clear_bad_option(aors: object, message: str) -> None:
    with pytest.raises(BadOption, match=message):
        iracdb.photometry(aors, target=XO3)


def test_unknown_options_are_refused() -> None:
    with pytest.raises(BadOption, match="reduce has no option 'aperture'"):
        iracdb.photometry([BCDS[:1]], target=XO3, aperture=3)
