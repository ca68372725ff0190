"""Files checksummed in a child process while this one reads and parses their headers (ingest with two workers).

Reading a whole file and its SHA-256 cost ingest ~0.2 ms of CPU for a 135 kB Level-1 file, a third of what a
file cost in all. :func:`read_all_hashed` has a small child process (a bare interpreter, no iracdb
import: it starts in ~10 ms) read and hash every file, while this process reads only the header blocks and parses
them. Only paths and one short line per file cross the pipes, not header text (sending that to a worker process
cost more than the work it moved, see :data:`iracdb.ingest.MIN_WORKERS_FOR_PROCESSES`), and no GIL is shared (a
reading thread in this process had to take turns with the parsing one).

The child and this process each open the file; their results are used together only when both saw the same file
(device, inode, size, modification time); otherwise (a file changed meanwhile, a child that is gone) this process
reads and hashes the file itself, as :func:`~iracdb.fitsio.products.read_and_hash` does. The records are the same
whichever way.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from typing import IO

from iracdb.fitsio.products import ReadFile, Rejection, read_and_hash, read_head

#: The child: NUL-terminated paths on stdin; for each, in order, one line on stdout: "bytes mtime_ns device inode
#: sha256" of a regular file that starts like FITS (the bytes read to its end), else "-" (anything else, including
#: a file that cannot be read: the parent then reads it itself and says why). Paths are read as they come and
#: answered in batches; it ends at the end of its input, or quietly when the parent is gone. A terminal's Ctrl-C
#: and a batch system's SIGTERM go to the whole process group: the parent handles them (and ends the child), the
#: child ignores them from its first line on (before that, one ends it silently: the parent then hashes itself).
_CHILD = r"""
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
import hashlib, os, stat
CHUNK = 1 << 20
FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
def digest(path):
    fd = os.open(path, FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b"-"
        data = os.read(fd, min(CHUNK, st.st_size + 1))
        if not data.startswith(b"SIMPLE  ="):
            return b"-"
        h = hashlib.sha256(data)
        n = len(data)
        while data := os.read(fd, CHUNK):
            h.update(data)
            n += len(data)
        return b"%d %d %d %d %s" % (n, st.st_mtime_ns, st.st_dev, st.st_ino, h.hexdigest().encode())
    finally:
        os.close(fd)
def main():
    rest = b""
    while data := os.read(0, 1 << 16):
        *paths, rest = (rest + data).split(b"\0")
        out = []
        for path in paths:
            try:
                out.append(digest(path))
            except OSError:
                out.append(b"-")
        buf = b"".join(line + b"\n" for line in out)
        while buf:
            buf = buf[os.write(1, buf):]
try:
    main()
except BaseException:
    pass
os._exit(0)
"""
#: Paths queued for the child at a time, and the most it may be sent ahead of the parsing (its answers, ~100 bytes
#: each, then wait in their pipe).
_SEND_FILES = 128
_AHEAD_FILES = 2 * _SEND_FILES


@contextlib.contextmanager
def read_all_hashed(paths: Sequence[str]) -> Iterator[Iterator[ReadFile | Rejection]]:
    """What :func:`~iracdb.fitsio.products.read_and_hash` gives for each of ``paths``, in order, the hashing done
    by a child process (see the module's documentation). The child is ended when the context ends (on an error or
    a Ctrl-C too), and ends by itself soon after this process dies. Where no child can be started, the files are
    read and hashed here."""
    try:
        if os.name != "posix":
            raise OSError("no pipes to poll")
        child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except (OSError, ValueError):  # no interpreter to start (an embedded Python), no processes allowed
        yield map(read_and_hash, paths)
        return
    try:
        yield _read(paths, child)
    finally:
        if child.poll() is None:
            child.kill()
        for pipe in (child.stdin, child.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        child.wait()


def _read(paths: Sequence[str], child: subprocess.Popen[bytes]) -> Iterator[ReadFile | Rejection]:
    assert child.stdin is not None and child.stdout is not None
    sender = _Sender(child.stdin)
    for i, path in enumerate(paths):
        if sender.queued < len(paths) and sender.queued - i < _AHEAD_FILES - _SEND_FILES:
            sender.queue(paths[sender.queued : sender.queued + _SEND_FILES])
        answer = child.stdout.readline() if sender.send(through=i) else b""
        yield _joined(path, answer)


class _Sender:
    """Sends the child its paths without ever waiting for it while it may be waiting for us (its answers unread):
    paths sent ahead go only as far as its input pipe takes them; the path whose answer is wanted next is sent
    whole (the child has then answered every earlier path, and reads)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        os.set_blocking(self._fd, False)
        self._pending = bytearray()
        self._sent_bytes = 0
        self._ends: deque[int] = deque()  # where each queued path ends, in bytes since the first
        self.queued = 0  # paths queued
        self._done = 0  # paths sent whole
        self._gone = False

    def queue(self, paths: Sequence[str]) -> None:
        end = self._sent_bytes + len(self._pending)
        for path in paths:
            encoded = os.fsencode(path) + b"\0"
            self._pending += encoded
            end += len(encoded)
            self._ends.append(end)
        self.queued += len(paths)

    def send(self, *, through: int) -> bool:
        """Send what the pipe takes, and at least the path of index ``through``; False if the child is gone."""
        while not self._gone and self._pending:
            try:
                written = os.write(self._fd, self._pending)
            except BlockingIOError:
                written = 0
            except OSError:  # BrokenPipeError: the child is gone
                self._gone = True
                break
            del self._pending[:written]
            self._sent_bytes += written
            while self._ends and self._ends[0] <= self._sent_bytes:
                self._ends.popleft()
                self._done += 1
            if self._done > through:
                break
            if not written:
                select.select([], [self._fd], [])
        return not self._gone and self._done > through


def _joined(path: str, answer: bytes) -> ReadFile | Rejection:
    """The file at ``path``: its header blocks read here and the child's ``answer`` for it, when both saw the same
    file; else read and hashed here."""
    head = read_head(path)
    if not isinstance(head, tuple):
        return head  # not readable, not a regular file or not FITS: rejected, as read_and_hash would
    data, stat = head
    fields = answer.split()
    try:
        size, mtime_ns, device, inode = map(int, fields[:4])
        sha256 = fields[4].decode("ascii")
    except (ValueError, IndexError):  # "-", or nothing (the child is gone)
        return read_and_hash(path)
    if (size, mtime_ns, device, inode) != (stat.st_size, stat.st_mtime_ns, stat.st_dev, stat.st_ino):
        return read_and_hash(path)  # changed since the child read it
    return ReadFile(path, data, size, mtime_ns, sha256)


__all__ = ["read_all_hashed"]
