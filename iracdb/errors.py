"""The exceptions iracdb raises on purpose.

The library raises these with a message that says what was wrong, where, and how to fix it; the CLI turns any
:class:`UserError` into one line on stderr and a non-zero exit status. Anything else is a bug and shows a traceback.
"""


class IracdbError(Exception):
    """Base class of every error iracdb raises deliberately."""


class UserError(IracdbError):
    """Something the user can fix: a wrong option, a missing file, an unknown run, an out-of-date database."""

    exit_code = 2


class BadOption(ValueError, UserError):
    """An option or argument has a value iracdb cannot use."""


class OutputExists(FileExistsError, UserError):
    """An output file that exists already: iracdb replaces a file only when asked to (``--overwrite``)."""


class CannotWrite(OSError, UserError):
    """An output file or folder that cannot be written: no such folder, not a folder, no permission, name too long,
    disk full; or a file that must never be an output (the database being read)."""


class DatabaseError(UserError):
    """The database cannot be reached or opened."""

    exit_code = 3


class NoSuchDatabase(FileNotFoundError, UserError):
    """A SQLite database file that does not exist, given to a command that only reads (a mistyped ``--db``)."""

    exit_code = 2


class SchemaOutOfDate(DatabaseError):
    """The database schema is behind the newest migration; ``iracdb db upgrade`` brings it up to date."""


class NoSuchAor(LookupError, UserError):
    """An AORKEY that the catalogue does not hold."""


class NotIracFile(ValueError, UserError):
    """A file that is not an IRAC Level-1 FITS file (or cannot be read as one): the one exception of
    :mod:`iracdb.fitsio`. The message is the one-line reason, without the path; ingest records it as the file's
    rejection, reduction as the frame's ``FILE_UNREADABLE``."""


class NoSuchRun(LookupError, UserError):
    """A run name that the database does not hold."""


class RunConflict(UserError):
    """A run name already used with other parameters, or a run that cannot be continued as asked."""


class RunInterrupted(UserError):
    """The run was stopped by the user (Ctrl-C); what was committed stays and ``--resume`` finishes it."""

    exit_code = 130


class RunTerminated(RunInterrupted):
    """The run was stopped by SIGTERM (a batch system, ``kill``); as :class:`RunInterrupted`, exit status 143."""

    exit_code = 143


class ExecutionError(UserError):
    """The workers could not do the work: a Dask cluster left without workers or a lost scheduler, a local worker
    process that died. The run is marked ``failed`` and ``--resume`` finishes it once the workers are back."""

    exit_code = 3


class ReadOnlyViolation(UserError):
    """A statement that would change the database (or the session), refused because ``iracdb sql`` is read-only."""


class QueryError(UserError):
    """A statement the database cannot run: a syntax error, an unknown table or column, more than one statement,
    or one cancelled at the time limit."""


class PrivilegedRole(UserError):
    """``iracdb sql`` connected to PostgreSQL as a role that a read-only transaction cannot contain (a superuser,
    CREATEROLE, BYPASSRLS, REPLICATION, or a member of a role that reads or writes server files)."""
