"""Output files (exports, figures): their names, and writing them without ever replacing a file by accident.

- :func:`file_stem` turns a run's name into a file-name-safe stem, one to one: two runs never share a file name.
- :func:`check_outputs` refuses, before any work is done, an output that exists already (unless ``overwrite``), a
  folder, and any file of the SQLite database being read (even with ``overwrite``).
- Each file is written under a temporary name beside its final one (:func:`create_partial`:
  ``.NAME.PID.partial``, created as a plain ``open`` would create it, so with the umask's permissions), and renamed
  into place by :func:`place` only once complete; without ``overwrite`` the rename cannot replace a file that
  appeared meanwhile. :func:`remove_stale_partials` removes the temporary files that a killed process left.
- Every :class:`OSError` becomes a :class:`~iracdb.errors.CannotWrite` naming the path (one line on the command
  line, exit status 2).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from iracdb.errors import CannotWrite, OutputExists
from iracdb.workers import pid_alive

#: The longest file name (bytes) Linux, macOS and Windows file systems take.
NAME_MAX = 255
#: The longest stem :func:`file_stem` gives [bytes]: room is left for the longest suffix (``_aor_data.parquet``,
#: ``_aor_AORKEY.png``) and the temporary name's ``.`` + ``.PID.partial``.
MAX_STEM_BYTES = 200
#: Bytes a stem keeps as they are; any other byte is written ``%XX`` (its hex value).
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
#: Hex digits of the SHA-256 of the name that end a shortened stem.
_HASH_CHARS = 16
_PARTIAL = re.compile(r"(.+)\.(\d{1,10})\.partial")
#: The temporary files this process is writing (absolute paths): two threads never write the same one.
_WRITING: set[str] = set()
_WRITING_LOCK = threading.Lock()


def file_stem(name: str) -> str:
    """A run's name as it appears in file names, one to one (different names never give the same stem).

    Letters, digits, ``.``, ``_`` and ``-`` are kept; every other byte of the name's UTF-8 is written ``%XX``
    (percent-encoding: ``a/b`` -> ``a%2Fb``, ``a b`` -> ``a%20b``, ``%`` -> ``%25``), and so is a leading ``.`` or
    ``-`` (no hidden file, no name taken for an option). A stem longer than :data:`MAX_STEM_BYTES` is cut and ends
    with ``~`` and the first 16 hex digits of the SHA-256 of the name (``~`` appears in no other stem).

    Parameters
    ----------
    name : str
        The run's name.

    Returns
    -------
    str
        ASCII, at most :data:`MAX_STEM_BYTES` characters.
    """
    raw = name.encode("utf-8", "surrogatepass")  # surrogatepass: any str encodes, still one to one
    stem = "".join(chr(b) if b in _SAFE_BYTES and not (i == 0 and b in b".-") else f"%{b:02X}"
                   for i, b in enumerate(raw))
    if len(stem) <= MAX_STEM_BYTES:
        return stem
    cut = stem[:MAX_STEM_BYTES - 1 - _HASH_CHARS]
    if "%" in cut[-2:]:  # do not cut an escape in two
        cut = cut[:cut.rindex("%")]
    return f"{cut}~{hashlib.sha256(raw).hexdigest()[:_HASH_CHARS]}"


def _reason(exc: OSError) -> str:
    """The reason of an OSError, in one line and without the path (the message names it already)."""
    return exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _same_file(path: Path, other: Path) -> bool:
    """Whether ``path`` is ``other``: the same file (a hard link, a symbolic link to it) or, if either is missing,
    the same resolved path."""
    try:
        if os.path.samefile(path, other):
            return True
    except OSError:
        pass
    try:
        return path.resolve() == other.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return False


def check_outputs(paths: Sequence[Path], *, overwrite: bool, protected: Iterable[Path] = ()) -> None:
    """Refuse outputs that must not be written, before any work is done.

    Parameters
    ----------
    paths : sequence of Path
        The files about to be written.
    overwrite : bool
        Whether existing files may be replaced.
    protected : iterable of Path
        Files that are never an output, even with ``overwrite`` (:func:`iracdb.db.backend.database_files`).

    Raises
    ------
    iracdb.errors.CannotWrite
        A path is one of ``protected`` or an existing folder.
    iracdb.errors.OutputExists
        Without ``overwrite``: a path exists (a file, or a symbolic link, even a broken one).
    """
    protected = tuple(protected)
    for path in paths:
        for database in protected:
            if _same_file(path, database):
                raise CannotWrite(f"cannot write {path}: it is the database being read ({database}); "
                                  "choose another file name")
        if os.path.isdir(path):
            raise CannotWrite(f"cannot write {path}: it is a folder")
    existing = [path for path in paths if os.path.lexists(path)]
    if existing and not overwrite:
        if len(existing) == 1:
            raise OutputExists(f"{existing[0]} already exists (--overwrite replaces it)")
        raise OutputExists(f"{existing[0]} and {len(existing) - 1} more output file(s) already exist "
                           "(--overwrite replaces them)")


def make_folder(folder: Path) -> None:
    """Create ``folder`` and its parents if missing.

    Raises
    ------
    iracdb.errors.CannotWrite
        It exists and is not a folder, or it cannot be created (a parent is a file, no permission, ...).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CannotWrite(f"cannot write into {folder}: it exists and is not a folder") from None
    except OSError as exc:
        raise CannotWrite(f"cannot create folder {folder}: {_reason(exc)}") from None


def _partial_prefix(name: str) -> str:
    """The temporary name of file ``name`` up to ``.PID.partial``: ``.NAME``, or a hash of a name too long."""
    prefix = f".{name}"
    if len(os.fsencode(prefix)) + len(".4294967295.partial") > NAME_MAX:
        prefix = f".{hashlib.sha256(os.fsencode(name)).hexdigest()[:32]}"
    return prefix


def partial_path(final: Path, pid: int | None = None) -> Path:
    """The temporary file beside ``final`` that process ``pid`` (default: this one) writes: ``.NAME.PID.partial``."""
    return final.with_name(f"{_partial_prefix(final.name)}.{os.getpid() if pid is None else pid}.partial")


def create_partial(final: Path) -> Path:
    """Create, empty, the temporary file of ``final`` (:func:`partial_path`) and return its path.

    It is created as a plain ``open`` would (mode 0666 less the umask) and never through a symbolic link: a file
    already there under that name (a symbolic link, or a partial left by a killed process that had this one's
    process id) is removed first. Pass it to :func:`place` when complete, and to :func:`discard_partial` in any
    case.

    Raises
    ------
    iracdb.errors.CannotWrite
        The file cannot be created (no such folder, no permission, another thread of this process writes the same
        file, ...); the message names ``final``.
    """
    temp = partial_path(final)
    with _WRITING_LOCK:
        if os.path.abspath(temp) in _WRITING:
            raise CannotWrite(f"cannot write {final}: this process is writing it already")
        _WRITING.add(os.path.abspath(temp))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        for _ in range(3):
            try:
                os.close(os.open(temp, flags, 0o666))
                return temp
            except FileExistsError:  # not this process's (see _WRITING): stale or planted
                temp.unlink(missing_ok=True)
        raise CannotWrite(f"cannot write {final}: {temp.name} keeps reappearing")
    except OSError as exc:
        _WRITING.discard(os.path.abspath(temp))
        if isinstance(exc, CannotWrite):
            raise
        raise CannotWrite(f"cannot write {final}: {_reason(exc)}") from None


def discard_partial(temp: Path) -> None:
    """Remove the temporary file ``temp`` of :func:`create_partial` if it is still there (the write failed)."""
    try:
        temp.unlink(missing_ok=True)
    finally:
        with _WRITING_LOCK:
            _WRITING.discard(os.path.abspath(temp))


def open_for_writing(path: Path, mode: str = "wb", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for a write mode (``"w"`` or ``"wb"``, ``kwargs`` as for :func:`open`), but truncating the
    file only when it is not empty.

    A partial (:func:`create_partial`) is empty already. Truncating it changes nothing in it, but on ext4 (with its
    default ``auto_da_alloc``) a file truncated to nothing and then written is flushed to disk when it is closed,
    and the close waits for that to start: 0.25-1 s for the 650 MB CSV of a 1,000,000-row export.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
        return open(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def place(temp: Path, final: Path, *, overwrite: bool) -> None:
    """Rename the complete ``temp`` to ``final``; without ``overwrite`` never replacing a file.

    Raises
    ------
    iracdb.errors.OutputExists
        Without ``overwrite``: ``final`` exists (it appeared since :func:`check_outputs`).
    iracdb.errors.CannotWrite
        The rename failed.
    """
    try:
        if overwrite:
            os.replace(temp, final)
            return
        try:
            os.link(temp, final)  # atomic, and fails if final exists: no file that appeared meanwhile is replaced
        except FileExistsError:
            raise OutputExists(f"{final} already exists (--overwrite replaces it)") from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(final):
                raise OutputExists(f"{final} already exists (--overwrite replaces it)") from None
            os.replace(temp, final)
            return
        os.unlink(temp)
    except OutputExists:
        raise
    except OSError as exc:
        raise CannotWrite(f"cannot write {final}: {_reason(exc)}") from None


def remove_stale_partials(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporary files of ``names`` in ``folder`` that processes no longer running left behind.

    Only regular files named as :func:`partial_path` names a temporary file of one of ``names`` are removed, and
    only when the process of that id is not running (a file of a running process is left alone). Processes on
    another machine sharing the folder cannot be told apart from dead ones: do not write the same output from two
    machines at once.

    Returns
    -------
    list of Path
        The files removed.
    """
    prefixes = {_partial_prefix(name) for name in names}
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.fullmatch(entry.name)
        if (match and match[1] in prefixes and not pid_alive(int(match[2]))
                and entry.is_file(follow_symlinks=False)):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def cannot_write(what: str | Path, exc: OSError) -> CannotWrite:
    """The error to raise for ``exc`` while writing ``what`` (a path, or words naming the files)."""
    return CannotWrite(f"cannot write {what}: {_reason(exc)}")


__all__ = [
    "MAX_STEM_BYTES", "NAME_MAX", "cannot_write", "check_outputs", "create_partial",
    "discard_partial", "file_stem", "make_folder", "open_for_writing", "partial_path", "place",
    "remove_stale_partials",
]
