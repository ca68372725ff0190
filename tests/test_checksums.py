"""Files checksummed by a child process (ingest with two workers) give what reading them here gives."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from iracdb.fitsio import ReadFile, Rejection, read_and_hash, record_of
from iracdb.fitsio.checksums import _joined, _read, read_all_hashed

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_FILES = sorted((SHARED_DATA / "irac").rglob("*.fits"))


def _mixed_files(tmp_path: Path) -> list[str]:
    """Real files of every kind, and every way a file can fail before or after it is hashed."""
    good = [str(path) for path in REAL_FILES]
    data = REAL_FILES[0].read_bytes()
    bad = {
        "not_fits.fits": b"PK\x03\x04 a zip file" * 100_000,  # larger than one read: never hashed
        "empty.fits": b"",
        "truncated_header.fits": data[:2880],
        "truncated_data.fits": data[:-100],
        "long_header.fits": data[:80] + b"COMMENT " + b"x" * 72 * 2000,  # no END in the first 64 kB, nor after
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    unreadable = tmp_path / "unreadable.fits"
    shutil.copy(REAL_FILES[1], unreadable)
    unreadable.chmod(0)  # (root reads it all the same)
    os.mkfifo(tmp_path / "fifo.fits")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "socket.fits"))
    others = [str(tmp_path / name) for name in [*bad, "unreadable.fits", "fifo.fits", "socket.fits", "gone.fits"]]
    mixed = list(good)
    for n, path in enumerate(others):  # spread among the good ones
        mixed.insert(3 * n + 1, path)
    return mixed


def test_the_child_hashes_as_this_process_would(tmp_path: Path) -> None:
    paths = _mixed_files(tmp_path) * 3  # several sends to the child
    with read_all_hashed(paths) as read:
        got = list(read)
    expected = [read_and_hash(path) for path in paths]
    # The same records, rejections and reasons (the header bytes kept may differ: the child's way reads fewer).
    assert list(map(record_of, got)) == list(map(record_of, expected))
    assert [_without_head(item) for item in got] == [_without_head(item) for item in expected]
    assert sum(isinstance(item, ReadFile) for item in got) >= 3 * len(REAL_FILES)  # (not all rejections)
    assert sum(isinstance(item, Rejection) for item in got) >= 3 * 5


def _without_head(item: ReadFile | Rejection) -> ReadFile | Rejection:
    return replace(item, head=b"") if isinstance(item, ReadFile) else item


@pytest.mark.parametrize("answer", [b"", b"-\n", b"garbage\n"])
def test_a_missing_or_stale_answer_means_reading_the_file_here(tmp_path: Path, answer: bytes) -> None:
    path = tmp_path / "a.fits"
    shutil.copy(REAL_FILES[0], path)
    stat = path.stat()
    stale = b"%d %d %d %d %s\n" % (stat.st_size, stat.st_mtime_ns - 1, stat.st_dev, stat.st_ino, b"0" * 64)
    for given in (answer, stale):  # the child gone or confused; the file changed after the child read it
        read = _joined(str(path), given)
        assert read == read_and_hash(str(path))  # read here: the whole file's bytes kept
        assert read.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # type: ignore[union-attr]


@pytest.mark.parametrize("child_code", [
    "pass",
    "import os\nwhile data := os.read(0, 99): os.write(1, b'-\\n' * data.count(0))",
    "import os\nos.read(0, 10)\nos.write(1, b'1 2 3 4 ')",
])
def test_a_child_gone_or_saying_no_means_reading_the_files_here(tmp_path: Path, child_code: str) -> None:
    # Gone at once; answering "-" to everything; dying in the middle of an answer.
    paths = _mixed_files(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", child_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        got = list(_read(paths, child))
    finally:
        child.kill()
        child.communicate()
    assert got == [read_and_hash(path) for path in paths]  # read here: the whole file's bytes kept
