"""`iracdb ingest` on real IRAC files and on every kind of bad input, on both backends."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import Engine, text

from iracdb.db.engine import make_engine
from iracdb.fitsio import Rejection, read_irac_file
from iracdb.ingest import ingest

SUB_BCD = "r46466816/ch2/bcd/SPITZER_I2_46466816_0000_0000_2_bcd.fits"
FULL_BCD = "r46987776/ch2/bcd/SPITZER_I2_46987776_0136_0000_2_bcd.fits"


def _scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def _rows(engine: Engine, sql: str, **params: object) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def _catalogue_dump(engine: Engine) -> dict[str, list[dict]]:
    return {
        "aors": _rows(engine, "SELECT * FROM aors ORDER BY aorkey"),
        "exposures": _rows(engine, "SELECT * FROM exposures ORDER BY id"),
        "files": _rows(engine, "SELECT * FROM files ORDER BY id"),
        "rejected_files": _rows(engine, "SELECT * FROM rejected_files ORDER BY id"),
    }


def test_real_files_counts_and_keywords(engine: Engine, real_archive: Path) -> None:
    summary = ingest(engine, [str(real_archive)])
    assert (summary.n_seen, summary.n_new, summary.n_rejected) == (80, 80, 0)
    assert _scalar(engine, "SELECT count(*) FROM aors") == 2
    assert _scalar(engine, "SELECT count(*) FROM exposures") == 12
    assert _scalar(engine, "SELECT count(*) FROM files") == 80

    [sub] = _rows(engine, "SELECT * FROM aors WHERE aorkey = 46466816")
    assert sub["object"] == "XO-3 ch2 peak-up"
    assert sub["aor_label"] == "XO3_ch2_eclipse6_peakup"
    assert (sub["program_id"], sub["aot_type"], sub["read_mode"], sub["mission"]) == (90032, "IracMapPC", "SUB", "warm")
    assert sub["first_mjd"] == pytest.approx(56270.4731344, abs=1e-9)
    assert sub["first_date_obs"] == "2012-12-09T11:21:18.813"

    [exp0] = _rows(engine, "SELECT * FROM exposures WHERE aorkey = 46466816 AND expid = 0")
    header = fits.getheader(real_archive / SUB_BCD)
    assert exp0["channel"] == 2 and exp0["dcenum"] == 0 and exp0["n_planes"] == 64
    assert exp0["dceid"] == header["DCEID"] == 148637849
    assert exp0["mjd_obs"] == header["MJD_OBS"]
    assert exp0["bmjd_obs"] == header["BMJD_OBS"]
    assert exp0["frame_time_s"] == 2.0 and exp0["exposure_time_s"] == 1.92
    assert (exp0["fluxconv"], exp0["gain_e_per_dn"], exp0["read_noise_e"]) == (0.1447, 3.71, 9.4)
    assert exp0["zody_est_mjy_sr"] == header["ZODY_EST"]
    assert (exp0["crval1_deg"], exp0["crval2_deg"]) == (header["CRVAL1"], header["CRVAL2"])
    assert (exp0["ra_ref_deg"], exp0["dec_ref_deg"]) == (header["RA_REF"], header["DEC_REF"])
    assert exp0["pxscal1_arcsec"] == header["PXSCAL1"]
    assert exp0["creator"] == "S19.2.0" and exp0["read_mode"] == "SUB" and exp0["areadmod"] == 1
    assert exp0["dither_pos"] is None  # not a dithered AOR: the keys are absent

    [full] = _rows(engine, "SELECT * FROM exposures WHERE aorkey = 46987776")
    assert (full["expid"], full["n_planes"], full["naxis1"], full["naxis2"]) == (136, 1, 256, 256)
    assert full["frame_time_s"] == 100.0 and full["hdr_frame"] == "long" and bool(full["hdr_mode"]) is True
    assert full["cycle_num"] == 1

    # Companions are linked to their exposure: a BCD finds its uncertainty and its mask.
    kinds = _rows(engine, "SELECT kind FROM files WHERE exposure_id = :id ORDER BY kind", id=exp0["id"])
    assert [r["kind"] for r in kinds] == ["bcd", "bimsk", "bunc", "cov2d", "msk2d", "sub2d", "unc2d"]
    full_kinds = _rows(engine, "SELECT kind FROM files WHERE exposure_id = :id ORDER BY kind", id=full["id"])
    assert [r["kind"] for r in full_kinds] == ["bcd", "cbcd", "cbunc"]


def test_header_text_is_the_whole_header(engine: Engine, real_archive: Path) -> None:
    ingest(engine, [str(real_archive)])
    path = str((real_archive / SUB_BCD).resolve())
    [row] = _rows(engine, "SELECT header_text, n_header_cards, sha256, size_bytes FROM files WHERE path = :p", p=path)
    cards = fits.getheader(path).cards
    assert row["n_header_cards"] == len(cards) == 669
    restored = fits.Header.fromstring("".join(line.ljust(80) for line in row["header_text"].split("\n")))
    assert list(restored.keys()) == list(fits.getheader(path).keys())
    assert restored["PROTITLE"] == fits.getheader(path)["PROTITLE"]
    import hashlib

    assert row["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert row["size_bytes"] == os.path.getsize(path)


def test_reingest_unchanged_tree_changes_nothing(engine: Engine, real_archive: Path) -> None:
    ingest(engine, [str(real_archive)])
    before = _catalogue_dump(engine)
    again = ingest(engine, [str(real_archive)])
    assert (again.n_unchanged, again.n_new, again.n_updated, again.n_moved, again.n_rejected) == (80, 0, 0, 0, 0)
    assert _catalogue_dump(engine) == before
    assert _scalar(engine, "SELECT count(*) FROM ingest_events") == 2


def test_changed_file_is_reread_and_updated(engine: Engine, real_archive: Path) -> None:
    ingest(engine, [str(real_archive)])
    path = real_archive / FULL_BCD
    old_sha = _scalar(engine, "SELECT sha256 FROM files WHERE path = :p", p=str(path.resolve()))
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["EXPTIME"] = 93.6
        hdul[0].data[0, 0] = 1.0
    summary = ingest(engine, [str(real_archive)])
    assert (summary.n_updated, summary.n_unchanged, summary.n_new) == (1, 79, 0)
    new_sha = _scalar(engine, "SELECT sha256 FROM files WHERE path = :p", p=str(path.resolve()))
    assert new_sha != old_sha
    assert _scalar(engine, "SELECT exposure_time_s FROM exposures WHERE aorkey = 46987776") == 93.6
    assert _scalar(engine, "SELECT count(*) FROM files") == 80


def test_touched_file_is_reread_but_unchanged(engine: Engine, real_archive: Path) -> None:
    ingest(engine, [str(real_archive)])
    path = real_archive / FULL_BCD
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    summary = ingest(engine, [str(real_archive)])
    assert (summary.n_unchanged, summary.n_updated) == (80, 0)
    assert _scalar(engine, "SELECT mtime_ns FROM files WHERE path = :p", p=str(path.resolve())) == 1_000_000_000
    assert ingest(engine, [str(real_archive)]).n_unchanged == 80


def test_moved_file_updates_its_path(engine: Engine, real_archive: Path) -> None:
    ingest(engine, [str(real_archive)])
    old = real_archive / FULL_BCD
    new = real_archive / "elsewhere" / "renamed_but_same.fits"
    new.parent.mkdir()
    file_id = _scalar(engine, "SELECT id FROM files WHERE path = :p", p=str(old.resolve()))
    shutil.move(old, new)
    summary = ingest(engine, [str(real_archive)])
    assert (summary.n_moved, summary.n_new, summary.n_unchanged, summary.n_rejected) == (1, 0, 79, 0)
    assert _scalar(engine, "SELECT path FROM files WHERE id = :i", i=file_id) == str(new.resolve())
    assert _scalar(engine, "SELECT count(*) FROM files") == 80


def test_identical_copy_is_rejected_not_duplicated(engine: Engine, real_archive: Path) -> None:
    ingest(engine, [str(real_archive)])
    copy = real_archive / "copy.fits"
    shutil.copy(real_archive / FULL_BCD, copy)
    summary = ingest(engine, [str(real_archive)])
    assert summary.n_rejected == 1
    [(path, reason)] = summary.rejected
    assert path == str(copy.resolve()) and "identical copy" in reason and "already catalogued" in reason
    assert _scalar(engine, "SELECT count(*) FROM files") == 80


def _write_bad_files(folder: Path, real_archive: Path) -> dict[str, str]:
    """One file of every bad kind; returns name -> expected words in the reason."""
    folder.mkdir()
    good = (real_archive / FULL_BCD).read_bytes()
    (folder / "notes_bcd.fits").write_text("this is not a FITS file\n")
    (folder / "header_cut_bcd.fits").write_bytes(good[:4000])
    (folder / "data_cut_bcd.fits").write_bytes(good[: len(good) - 50_000])
    (folder / "empty_bcd.fits").write_bytes(b"")
    fits.PrimaryHDU(np.zeros((4, 4), np.float32), header=fits.Header({"INSTRUME": "MIPS", "AORKEY": 1})).writeto(
        folder / "mips_bcd.fits"
    )
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(folder / "no_instrument.fits")
    header = fits.getheader(real_archive / FULL_BCD)
    del header["AORKEY"]
    fits.PrimaryHDU(np.zeros((4, 4), np.float32), header=header).writeto(folder / "no_aorkey_bcd.fits")
    header = fits.getheader(real_archive / FULL_BCD)
    header["EXPID"] = 999
    del header["MJD_OBS"]
    fits.PrimaryHDU(np.zeros((4, 4), np.float32), header=header).writeto(folder / "no_mjd_bcd.fits")
    return {
        "notes_bcd.fits": "not a FITS file",
        "header_cut_bcd.fits": "truncated FITS header",
        "data_cut_bcd.fits": "truncated FITS file",
        "empty_bcd.fits": "not a FITS file",
        "mips_bcd.fits": "not an IRAC file (INSTRUME = 'MIPS')",
        "no_instrument.fits": "not an IRAC file (no INSTRUME keyword)",
        "no_aorkey_bcd.fits": "lacks required keyword(s) AORKEY",
        "no_mjd_bcd.fits": "lacks required keyword(s) MJD_OBS",
    }


def test_bad_files_are_recorded_and_good_files_committed(engine: Engine, real_archive: Path) -> None:
    expected = _write_bad_files(real_archive / "bad", real_archive)
    summary = ingest(engine, [str(real_archive)])
    assert summary.n_new == 80
    assert _scalar(engine, "SELECT count(*) FROM files") == 80
    reasons = {Path(path).name: reason for path, reason in summary.rejected}
    assert set(reasons) == set(expected)
    for name, words in expected.items():
        assert words in reasons[name], (name, reasons[name])
    stored = {Path(r["path"]).name: r["reason"] for r in _rows(engine, "SELECT path, reason FROM rejected_files")}
    assert stored == reasons

    # Rejected files are read again next time (a fix is noticed); fixing one clears its rejection.
    shutil.copy(real_archive / FULL_BCD, real_archive / "bad" / "notes_bcd.fits")
    os.remove(real_archive / FULL_BCD)
    again = ingest(engine, [str(real_archive)])
    assert again.n_rejected == len(expected) - 1 and again.n_moved == 1
    assert _scalar(engine, "SELECT count(*) FROM rejected_files") == len(expected) - 1


def test_unreadable_file_is_a_rejection(tmp_path: Path) -> None:
    result = read_irac_file(str(tmp_path / "vanished_bcd.fits"))
    assert isinstance(result, Rejection) and result.reason.startswith("cannot be read")


def test_companion_without_its_exposure_is_rejected(engine: Engine, real_archive: Path) -> None:
    name = "SPITZER_I2_46466816_0003_0000_2_unc2d.fits"
    lone = real_archive / "lone"
    lone.mkdir()
    shutil.move(real_archive / "r46466816/ch2/bcd" / name, lone / name)
    summary = ingest(engine, [str(lone)])
    [(_, reason)] = summary.rejected
    assert "no catalogued exposure" in reason
    # Once its exposure is catalogued, the same unchanged file is read again and accepted.
    summary = ingest(engine, [str(real_archive)])
    assert (summary.n_rejected, summary.n_new) == (0, 80)
    assert _scalar(engine, "SELECT count(*) FROM rejected_files") == 0
    assert _scalar(engine, "SELECT kind FROM files WHERE path = :p", p=str((lone / name).resolve())) == "unc2d"


def test_moving_a_file_onto_a_catalogued_path(engine: Engine, real_archive: Path) -> None:
    """`mv exp1_bcd exp0_bcd`: exposure 1's BCD now lives at exposure 0's old path."""
    folder = real_archive / "r46466816/ch2/bcd"
    ingest(engine, [str(real_archive)])
    target = folder / "SPITZER_I2_46466816_0000_0000_2_bcd.fits"
    shutil.move(folder / "SPITZER_I2_46466816_0001_0000_2_bcd.fits", target)
    for _ in range(2):  # and the catalogue stays consistent afterwards
        summary = ingest(engine, [str(real_archive)])
        assert summary.n_rejected == 0
    rows = _rows(
        engine,
        "SELECT e.expid, f.path FROM files f JOIN exposures e ON e.id = f.exposure_id "
        "WHERE f.kind = 'bcd' AND e.aorkey = 46466816 AND e.expid IN (0, 1) ORDER BY e.expid",
    )
    assert rows == [{"expid": 1, "path": str(target.resolve())}]
    assert _scalar(engine, "SELECT count(*) FROM files") == 79


def test_rejected_duplicate_never_changes_the_exposure(engine: Engine, real_archive: Path) -> None:
    ingest(engine, [str(real_archive)])
    before = _rows(engine, "SELECT * FROM exposures WHERE aorkey = 46987776")
    with fits.open(real_archive / FULL_BCD) as hdul:
        hdul[0].header["EXPTIME"] = 50.0
        hdul[0].header["CREATOR"] = "S18.25.0"
        hdul.writeto(real_archive / "reprocessed_bcd.fits")
    summary = ingest(engine, [str(real_archive)])
    [(_, reason)] = summary.rejected
    assert "a different file for the same bcd" in reason
    assert _rows(engine, "SELECT * FROM exposures WHERE aorkey = 46987776") == before


def test_catalogued_files_turning_bad_leave_no_orphans(engine: Engine, real_archive: Path) -> None:
    ingest(engine, [str(real_archive)])
    for path in (real_archive / "r46987776").rglob("*.fits"):
        path.write_bytes(path.read_bytes()[:5000])
    summary = ingest(engine, [str(real_archive)])
    assert summary.n_rejected == 3
    assert _scalar(engine, "SELECT count(*) FROM aors WHERE aorkey = 46987776") == 0
    assert _scalar(engine, "SELECT count(*) FROM exposures WHERE aorkey = 46987776") == 0
    assert _scalar(engine, "SELECT count(*) FROM files") == 77


def test_file_changing_identity_moves_its_exposure(engine: Engine, real_archive: Path) -> None:
    ingest(engine, [str(real_archive)])
    for path in (real_archive / "r46466816").rglob("*_0010_0000_2_*.fits"):
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["AORKEY"] = 1
    summary = ingest(engine, [str(real_archive)])
    assert (summary.n_updated, summary.n_rejected) == (7, 0)
    assert _scalar(engine, "SELECT count(*) FROM exposures WHERE aorkey = 46466816") == 10
    assert _scalar(engine, "SELECT count(*) FROM exposures WHERE aorkey = 1") == 1
    [aor] = _rows(engine, "SELECT last_mjd FROM aors WHERE aorkey = 46466816")
    assert aor["last_mjd"] == pytest.approx(56270.4866125, abs=1e-9)  # EXPID 9 is now the last
    assert _scalar(engine, "SELECT count(*) FROM files") == 80


def test_symlink_and_its_target_are_one_file(engine: Engine, real_archive: Path) -> None:
    (real_archive / "a_link_bcd.fits").symlink_to(real_archive / FULL_BCD)
    for _ in range(2):
        summary = ingest(engine, [str(real_archive)])
        assert summary.n_rejected == 0 and summary.n_seen == 80
    assert _scalar(engine, "SELECT path FROM files WHERE kind = 'bcd' AND size_bytes = :s",
                   s=os.path.getsize(real_archive / FULL_BCD)) == str((real_archive / FULL_BCD).resolve())


def _ingest_cli(db_url: str, *roots: Path) -> subprocess.CompletedProcess[str]:
    """``iracdb ingest`` in a real process, with a timeout: an ingest that hangs fails the test instead."""
    return subprocess.run([sys.executable, "-m", "iracdb", "ingest", *map(str, roots), "--db", db_url],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])


def test_fifos_sockets_and_devices_are_rejected_unopened(db_url: str, real_archive: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO given as a root, or found in a folder, is never opened (opening one for reading waits for a
    writer: ingest used to hang for good); it is rejected with the reason, like a socket or a device."""
    os.mkfifo(real_archive / "r46987776" / "pipe_bcd.fits")
    root_fifo = tmp_path / "root_fifo"
    os.mkfifo(root_fifo)
    monkeypatch.chdir(real_archive)  # a relative socket path: AF_UNIX paths are short
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind("a_socket")
        result = _ingest_cli(db_url, real_archive, root_fifo, Path("/dev/null"))
    assert result.returncode == 4, result.stderr
    assert "80 new" in result.stdout and "4 rejected" in result.stdout, result.stdout
    not_regular = "not a regular file: only regular files are read"
    assert sorted(line for line in result.stderr.splitlines() if line.startswith("rejected: ")) == sorted([
        f"rejected: {real_archive / 'r46987776' / 'pipe_bcd.fits'}: a FIFO (named pipe), {not_regular}",
        f"rejected: {root_fifo}: a FIFO (named pipe), {not_regular}",
        f"rejected: {real_archive / 'a_socket'}: a socket, {not_regular}",
        f"rejected: /dev/null: a character device, {not_regular}",
    ])
    engine = make_engine(db_url)
    try:
        assert _scalar(engine, "SELECT count(*) FROM files") == 80
        assert _scalar(engine, "SELECT count(*) FROM rejected_files") == 4
    finally:
        engine.dispose()


def test_reading_a_fifo_never_waits_for_a_writer(tmp_path: Path) -> None:
    """What the walk could not see (a file replaced by a FIFO after it was listed) is caught when it is opened."""
    fifo = tmp_path / "late_bcd.fits"
    os.mkfifo(fifo)
    results: list[object] = []
    reader = threading.Thread(target=lambda: results.append(read_irac_file(str(fifo))), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "read_irac_file is waiting for a writer on a FIFO"
    [result] = results
    assert isinstance(result, Rejection) and "a FIFO (named pipe), not a regular file" in result.reason


def test_symbolic_link_loops_and_folder_links_are_rejected_with_the_reason(engine: Engine, real_archive: Path,
                                                                          tmp_path: Path) -> None:
    links = real_archive / "links"
    links.mkdir()
    (links / "ping").symlink_to("pong")  # a loop of two links
    (links / "pong").symlink_to("ping")
    (links / "self").symlink_to("self")
    (links / "up").symlink_to("..")  # points to an ancestor: would walk the tree forever if followed
    (links / "here").symlink_to(".")
    (links / "gone_bcd.fits").symlink_to(tmp_path / "missing_bcd.fits")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (links / "away").symlink_to(elsewhere)
    root_loop = tmp_path / "root_loop"
    root_loop.symlink_to(root_loop)
    summary = ingest(engine, [str(real_archive), str(root_loop)])
    loop = "symbolic link loop: its target is itself, through one or more links (not followed)"
    expected = {
        str(links / "ping"): loop,
        str(links / "pong"): loop,
        str(links / "self"): loop,
        str(root_loop): loop,
        str(links / "up"): f"symbolic link loop: it points to {real_archive}, its own folder or one above it "
                           "(not followed)",
        str(links / "here"): f"symbolic link loop: it points to {links}, its own folder or one above it "
                             "(not followed)",
        str(links / "gone_bcd.fits"): f"broken symbolic link: its target {tmp_path / 'missing_bcd.fits'} does not "
                                      "exist",
        str(links / "away"): f"symbolic link to the folder {elsewhere}: not followed (give that folder to ingest "
                             "it)",
    }
    assert dict(summary.rejected) == expected
    assert summary.n_new == 80 and _scalar(engine, "SELECT count(*) FROM files") == 80
    stored = {r["path"]: r["reason"] for r in _rows(engine, "SELECT path, reason FROM rejected_files")}
    assert stored == expected


def test_a_negative_or_zero_aorkey_is_rejected(engine: Engine, real_archive: Path) -> None:
    header = fits.getheader(real_archive / FULL_BCD)
    odd = real_archive / "odd"
    odd.mkdir()
    for name, aorkey in [("negative_bcd.fits", -46987776), ("zero_bcd.fits", 0)]:
        changed = header.copy()
        changed["AORKEY"] = aorkey
        fits.PrimaryHDU(np.zeros((256, 256), np.float32), header=changed).writeto(odd / name)
    summary = ingest(engine, [str(real_archive)])
    assert {Path(p).name: r for p, r in summary.rejected} == {
        "negative_bcd.fits": "AORKEY must be a positive integer, not -46987776",
        "zero_bcd.fits": "AORKEY must be a positive integer, not 0",
    }
    assert summary.n_new == 80
    assert _scalar(engine, "SELECT count(*) FROM aors WHERE aorkey <= 0") == 0


def test_values_the_database_cannot_hold_are_rejections(engine: Engine, real_archive: Path) -> None:
    header = fits.getheader(real_archive / FULL_BCD)
    odd = real_archive / "odd"
    odd.mkdir()
    for name, changes in [
        ("huge_expid_bcd.fits", {"EXPID": 3_000_000_000}),
        ("huge_dceid_bcd.fits", {"EXPID": 7, "DCEID": 99_999_999_999_999_999_999}),
        ("long_bunit_bcd.fits", {"EXPID": 8, "BUNIT": "MJy/sr " * 9, "CREATOR": "x" * 60}),
    ]:
        changed = header.copy()
        changed.update(changes)
        fits.PrimaryHDU(np.zeros((256, 256), np.float32), header=changed).writeto(odd / name)
    data = bytearray((real_archive / FULL_BCD).read_bytes())
    comment = data.index(b"COMMENT")
    data[comment + 20] = 0  # a NUL byte inside a COMMENT card
    (odd / "nul_bcd.fits").write_bytes(bytes(data))
    with open(os.path.join(os.fsencode(odd), b"caf\xe9_bcd.fits"), "wb") as handle:  # a Latin-1 file name
        handle.write((real_archive / FULL_BCD).read_bytes())
    summary = ingest(engine, [str(real_archive)])
    reasons = {Path(path).name: reason for path, reason in summary.rejected}
    assert "expid = 3000000000 is out of range" in reasons["huge_expid_bcd.fits"]
    assert "out of range" in reasons["huge_dceid_bcd.fits"]
    assert "printable ASCII" in reasons["nul_bcd.fits"]
    assert "not valid UTF-8" in reasons["caf\\udce9_bcd.fits"]
    bunit = _scalar(engine, "SELECT bunit FROM exposures WHERE aorkey = 46987776 AND expid = 8")
    assert bunit == ("MJy/sr " * 9).strip()
    assert summary.n_new == 81 and _scalar(engine, "SELECT count(*) FROM files") == 81


@pytest.mark.parametrize("workers", [1, 2])  # written in this thread; in a second one
def test_a_row_the_database_refuses_loses_only_that_file(engine: Engine, real_archive: Path, workers: int) -> None:
    """The last line of defence: whatever the database refuses is rejected alone, the rest of the batch commits."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON files WHEN NEW.path LIKE '%0004_0000_2_bunc%' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
            ))
        else:
            conn.execute(text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.path LIKE '%0004_0000_2_bunc%' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; "
                "RETURN NEW; END $$"
            ))
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON files FOR EACH ROW EXECUTE FUNCTION refuse()"))
    summary = ingest(engine, [str(real_archive)], workers=workers)
    [(path, reason)] = summary.rejected
    assert path.endswith("_0004_0000_2_bunc.fits") and "refused by the test trigger" in reason
    assert summary.n_new == 79 and _scalar(engine, "SELECT count(*) FROM files") == 79
    assert _scalar(engine, "SELECT count(*) FROM rejected_files") == 1


def test_an_error_of_the_writing_thread_stops_the_ingest_and_keeps_the_batches_before(
        engine: Engine, real_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iracdb import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "BATCH_FILES", 10)
    written = []
    write_transaction = ingest_module._write_transaction

    def failing_third(engine: Engine, batch: list[Any], *args: Any) -> None:
        if len(written) == 2:
            raise OSError("disk on fire")
        write_transaction(engine, batch, *args)
        written.append(len(batch))

    monkeypatch.setattr(ingest_module, "_write_transaction", failing_third)
    with pytest.raises(OSError, match="disk on fire"):
        ingest(engine, [str(real_archive)], workers=2)
    assert written == [10, 10] and _scalar(engine, "SELECT count(*) FROM files") == 20


def test_parallel_workers_give_the_same_catalogue(backend: str, request: pytest.FixtureRequest,
                                                  real_archive: Path) -> None:
    from iracdb.db.engine import make_engine
    from iracdb.ingest import MIN_FILES_FOR_WORKERS, MIN_WORKERS_FOR_PROCESSES

    # In this process (PostgreSQL: with a reading thread), with a child process that checksums (two workers), and
    # in worker processes.
    assert len(list(real_archive.rglob("*.fits"))) >= MIN_FILES_FOR_WORKERS
    dumps = []
    for n, workers in enumerate((1, 2, MIN_WORKERS_FOR_PROCESSES)):
        engine = make_engine(request.getfixturevalue("db_url") if n == 0 else _fresh_url(request, backend, n))
        switch_interval_s = sys.getswitchinterval()
        ingest(engine, [str(real_archive)], workers=workers)
        assert sys.getswitchinterval() == switch_interval_s  # the reading thread's setting is undone
        assert _scalar(engine, "SELECT workers FROM ingest_events") == workers  # as used
        dump = _catalogue_dump(engine)
        for table in dump.values():
            for row in table:
                for column in ("id", "updated_at", "ingested_at", "rejected_at", "ingest_id", "exposure_id"):
                    row.pop(column, None)
        dumps.append(dump)
        engine.dispose()
    assert dumps[0] == dumps[1] == dumps[2]
    assert dumps[0]["files"]  # (not three empty catalogues)


def _fresh_url(request: pytest.FixtureRequest, backend: str, n: int = 1) -> str:
    if backend == "sqlite":
        path = Path(request.getfixturevalue("tmp_path")) / f"fresh_{n}.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    return request.getfixturevalue("pg_server").create(template=request.getfixturevalue("pg_template"))


def _renumbered_copies(real_archive: Path, copies: int) -> None:
    """Copies of the real AORs under new AORKEYs, so the tree is large enough for several batches."""
    for n in range(1, copies + 1):
        for aor_dir in ("r46466816", "r46987776"):
            target = real_archive / f"copy{n}" / aor_dir
            shutil.copytree(real_archive / aor_dir, target)
            for path in target.rglob("*.fits"):
                with fits.open(path, mode="update") as hdul:
                    hdul[0].header["AORKEY"] = hdul[0].header["AORKEY"] + 1000 * n


@pytest.mark.parametrize("backend", ["postgresql"])
def test_concurrent_ingests_of_one_tree(db_url: str, real_archive: Path) -> None:
    _renumbered_copies(real_archive, 8)  # 720 files: several batches each
    command = [sys.executable, "-m", "iracdb", "ingest", str(real_archive), "--db", db_url]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    from iracdb.db.engine import make_engine

    engine = make_engine(db_url)
    assert _scalar(engine, "SELECT count(*) FROM files") == 720
    assert _scalar(engine, "SELECT count(*) FROM exposures") == 108
    assert _scalar(engine, "SELECT count(*) FROM aors") == 18
    assert _scalar(engine, "SELECT sum(n_new) FROM ingest_events") == 720
    assert _scalar(engine, "SELECT count(*) FROM rejected_files") == 0
    # The two really ran at the same time (otherwise this test would not test concurrency).
    first_event, second_event = _rows(engine, "SELECT started_at, finished_at FROM ingest_events ORDER BY id")
    assert second_event["started_at"] < first_event["finished_at"]
    engine.dispose()


def test_synthetic_archive_all_channels_and_missions(engine: Engine, tmp_path: Path) -> None:
    from iracdb.synth import write_archive

    archive = write_archive(tmp_path / "synth", truth_csv=False)
    summary = ingest(engine, [str(archive.root)])
    assert (summary.n_new, summary.n_rejected) == (len(archive.files), 0)
    exposures = {(t.aorkey, t.channel, t.expid, t.dcenum) for t in archive.truth}
    assert _scalar(engine, "SELECT count(*) FROM exposures") == len(exposures)
    assert _scalar(engine, "SELECT sum(n_planes) FROM exposures") == len(archive.truth)
    assert {r["channel"] for r in _rows(engine, "SELECT DISTINCT channel FROM exposures")} == {1, 2, 3, 4}
    missions = {r["aorkey"]: r["mission"] for r in _rows(engine, "SELECT aorkey, mission FROM aors")}
    assert missions == {spec.aorkey: spec.mission for spec in archive.aors}
    for record in archive.truth[:: max(1, len(archive.truth) // 20)]:
        if record.plane:
            continue
        [row] = _rows(
            engine,
            "SELECT mjd_obs, frame_time_s FROM exposures WHERE aorkey = :a AND channel = :c AND expid = :e",
            a=record.aorkey, c=record.channel, e=record.expid,
        )
        assert row["mjd_obs"] == pytest.approx(record.mjd_obs, abs=1e-9)
        assert row["frame_time_s"] == record.framtime_s


def test_catalogue_inside_the_tree_is_not_ingested(real_archive: Path) -> None:
    from iracdb.db.engine import make_engine
    from iracdb.db.migrate import ensure_schema

    engine = make_engine(f"sqlite:///{real_archive / 'iracdb.sqlite'}")
    ensure_schema(engine)
    summary = ingest(engine, [str(real_archive)])
    assert (summary.n_seen, summary.n_new, summary.n_rejected) == (80, 80, 0)
    engine.dispose()


def test_read_ahead_thread_gives_everything_in_order_raises_its_errors_and_stops() -> None:
    """The reading thread of a PostgreSQL ingest: items in order; its error raised in the writing thread; leaving
    early stops it (nothing more is read)."""
    from iracdb.ingest import _HANDOVER_FILES, _HANDOVERS_AHEAD, _ReadAhead

    with _ReadAhead(iter(range(1000))) as items:
        assert list(items) == list(range(1000))

    def failing() -> object:
        yield from range(30)
        raise OSError("disk on fire")

    seen: list[object] = []
    with pytest.raises(OSError, match="disk on fire"), _ReadAhead(failing()) as items:
        seen.extend(items)
    assert seen == list(range(25))  # the whole hand-overs before the error
    read: list[int] = []

    def counted() -> object:
        for n in range(100_000):
            read.append(n)
            yield n

    reader = _ReadAhead(counted())
    with reader as items:
        assert next(items) == 0
    assert not reader._thread.is_alive()
    assert len(read) <= _HANDOVER_FILES * (_HANDOVERS_AHEAD + 2)  # stopped: never read to the end


def test_an_archive_in_memory_is_written_in_the_ingest_thread(real_archive: Path) -> None:
    """Two workers write each batch in a second thread, but a connection opened in another thread to ``sqlite://``
    is a new, empty database: an archive in memory is written in the ingest's own thread, and every file is there."""
    import iracdb

    n_files = len(list(real_archive.rglob("*.fits")))
    with iracdb.open("sqlite://") as archive:
        summary = archive.ingest(real_archive, workers=2)
        assert (summary.n_new, summary.n_rejected) == (n_files, 0)
        assert archive.sql("SELECT count(*) AS n FROM files")["n"][0] == n_files
        assert archive.sql("SELECT workers FROM ingest_events")["workers"][0] == 2
