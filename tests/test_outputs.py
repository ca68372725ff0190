"""`iracdb.outputs`: run names to file names one to one and within the file name limit; existing files, folders and
the database's files refused; temporary files placed without replacing a file, removed when their process is gone.

(Exports and figures go through these: tests/test_export.py, tests/test_plots.py and tests/test_results_cli.py test
them end to end.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from iracdb.db.backend import database_files
from iracdb.errors import CannotWrite, OutputExists
from iracdb.outputs import (
    MAX_STEM_BYTES,
    NAME_MAX,
    check_outputs,
    create_partial,
    discard_partial,
    file_stem,
    open_for_writing,
    partial_path,
    place,
    remove_stale_partials,
)

SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-%~")


def decode(stem: str) -> str:
    return unquote_to_bytes(stem).decode("utf-8", "surrogatepass")


@pytest.mark.parametrize(("name", "stem"), [
    ("a/b", "a%2Fb"), ("a_b", "a_b"), ("a b", "a%20b"), ("a%2Fb", "a%252Fb"), ("run-2.b_c", "run-2.b_c"),
    (".hidden", "%2Ehidden"), ("-rf", "%2Drf"), ("a.-", "a.-"), ("..", "%2E."), ("é", "%C3%A9"), ("~x", "%7Ex"),
    ("", ""),
])
def test_file_stem(name: str, stem: str) -> None:
    assert file_stem(name) == stem
    assert decode(stem) == name


@given(st.text(max_size=80))
def test_file_stem_decodes_back_to_the_name(name: str) -> None:
    """Short stems percent-decode to the name: different names never share a stem."""
    stem = file_stem(name)
    assert set(stem) <= SAFE and len(stem) <= MAX_STEM_BYTES and not stem.startswith((".", "-"))
    if "~" not in stem:
        assert decode(stem) == name
    else:  # only a long name is cut: the start of its stem, then a hash (the cut backs off a split %XX escape)
        raw = name.encode("utf-8", "surrogatepass")
        assert MAX_STEM_BYTES - 2 <= len(stem) <= MAX_STEM_BYTES
        assert raw.startswith(unquote_to_bytes(stem.split("~")[0]))


@given(st.text(min_size=1, max_size=5), st.text(min_size=1, max_size=5))
def test_long_names_keep_within_the_limit_and_apart(head: str, tail: str) -> None:
    """A long name's stem is cut and ends with a hash of the whole name: names that differ only past the cut (or
    only in their last character) still get different stems, and every file name stays within NAME_MAX bytes."""
    long_a, long_b = "r" * 300 + head, "r" * 300 + tail
    a, b = file_stem(long_a), file_stem(long_b)
    assert len(a) == len(b) == MAX_STEM_BYTES and "~" in a
    assert (a == b) == (long_a == long_b)
    names = [f"{a}_{suffix}" for suffix in ("aor_data.parquet", "img_data.ecsv", "log.txt", "provenance.json",
                                            "overview.png", f"aor_{2**63}.png")]
    assert all(len(os.fsencode(partial_path(Path(n), 2**32 - 1).name)) <= NAME_MAX for n in names)
    assert all(partial_path(Path(n)).name == f".{n}.{os.getpid()}.partial" for n in names)


def test_a_stem_is_never_cut_inside_an_escape() -> None:
    for n in range(1, 4):
        stem = file_stem("x" * (MAX_STEM_BYTES - 17 - n) + "/" * 50)
        body = stem.split("~")[0]
        assert not body.endswith("%") and not body[:-1].endswith("%"), stem


def test_database_files() -> None:
    assert database_files(make_url("sqlite:////data/a.sqlite")) == tuple(
        Path("/data/a.sqlite" + s) for s in ("", "-wal", "-shm", "-journal"))
    assert database_files(make_url("sqlite://")) == ()
    assert database_files(make_url("postgresql+psycopg://u@h/db")) == ()


def test_check_outputs(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    db.write_bytes(b"SQLite format 3\0")
    protected = database_files(make_url(f"sqlite:///{db}"))
    (tmp_path / "old.png").write_bytes(b"old")
    (tmp_path / "link.png").symlink_to(db)
    (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere")
    os.link(db, tmp_path / "hard.png")
    (tmp_path / "folder.png").mkdir()
    check_outputs([tmp_path / "new.png"], overwrite=False, protected=protected)
    check_outputs([tmp_path / "old.png", tmp_path / "broken.png"], overwrite=True, protected=protected)
    with pytest.raises(OutputExists, match=r"old.png already exists \(--overwrite replaces it\)$"):
        check_outputs([tmp_path / "new.png", tmp_path / "old.png"], overwrite=False, protected=protected)
    with pytest.raises(OutputExists, match=r"old.png and 1 more output file\(s\) already exist"):
        check_outputs([tmp_path / "old.png", tmp_path / "broken.png"], overwrite=False, protected=protected)
    # the database's files, by any name, even one that does not exist yet, never: not even with overwrite
    for name in ("db.sqlite", "link.png", "hard.png", "db.sqlite-wal", "db.sqlite-journal"):
        with pytest.raises(CannotWrite, match="it is the database being read"):
            check_outputs([tmp_path / name], overwrite=True, protected=protected)
    with pytest.raises(CannotWrite, match=r"folder\.png: it is a folder"):
        check_outputs([tmp_path / "folder.png"], overwrite=True, protected=protected)
    assert db.read_bytes() == b"SQLite format 3\0" and (tmp_path / "old.png").read_bytes() == b"old"


def test_place_never_replaces_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    final = tmp_path / "x.png"
    temp = create_partial(final)
    temp.write_bytes(b"new")
    final.write_bytes(b"theirs")  # appeared after the checks
    with pytest.raises(OutputExists):
        place(temp, final, overwrite=False)
    assert final.read_bytes() == b"theirs" and temp.exists()
    place(temp, final, overwrite=True)
    discard_partial(temp)
    assert final.read_bytes() == b"new" and not temp.exists()


def test_two_threads_never_write_the_same_partial(tmp_path: Path) -> None:
    final = tmp_path / "x.png"
    temp = create_partial(final)
    with pytest.raises(CannotWrite, match="this process is writing it already"):
        create_partial(final)
    assert temp.exists()
    discard_partial(temp)
    assert not temp.exists()
    discard_partial(create_partial(final))


def test_a_partial_is_never_written_through_a_symbolic_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    final = tmp_path / "x.png"
    partial_path(final).symlink_to(victim)
    temp = create_partial(final)
    assert not temp.is_symlink() and temp.stat().st_size == 0
    temp.write_text("partial")
    discard_partial(temp)
    assert victim.read_text() == "keep"


def test_only_stale_partials_of_the_given_names_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)  # a process that has exited (its id not reused within this test)
    mine = [partial_path(tmp_path / "a_log.txt", dead_pid), partial_path(tmp_path / "a_aor_data.csv", dead_pid)]
    kept = [
        partial_path(tmp_path / "a_log.txt"),  # this process's: running
        partial_path(tmp_path / "a_b_log.txt", dead_pid),  # another name's
        tmp_path / "a_log.txt",  # not a partial
        tmp_path / f".a_log.txt.{dead_pid}.partial.txt",
    ]
    for path in mine + kept:
        path.write_text("x")
    (tmp_path / "folder").mkdir()
    link = partial_path(tmp_path / "a_img_data.csv", dead_pid)
    link.symlink_to(tmp_path / "folder")  # not a regular file: left alone
    removed = remove_stale_partials(tmp_path, ["a_log.txt", "a_aor_data.csv", "a_img_data.csv"])
    assert sorted(removed) == sorted(mine)
    assert not any(p.exists() for p in mine) and all(p.exists() for p in kept) and link.is_symlink()


def test_open_for_writing_gives_only_what_is_written(tmp_path: Path) -> None:
    """A missing file is created, a longer one cut to what is written (text and bytes), an empty partial written."""
    longer = tmp_path / "longer.txt"
    longer.write_text("an older and much longer content\n")
    with open_for_writing(longer, "w", encoding="utf-8", newline="\n") as out:
        out.write("new\n")
    assert longer.read_bytes() == b"new\n"
    missing = tmp_path / "missing.csv"
    with open_for_writing(missing) as out:
        out.write(b"a,b\n")
    assert missing.read_bytes() == b"a,b\n" and missing.stat().st_mode & 0o777 == 0o666 & ~_umask()
    temp = create_partial(tmp_path / "x.csv")
    with open_for_writing(temp) as out:
        out.write(b"1,2\n")
    assert temp.read_bytes() == b"1,2\n"
    discard_partial(temp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
