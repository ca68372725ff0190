"""Opening a database: one engine per URL, configured by its backend (:mod:`iracdb.db.backend`); URLs shown without
secrets."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from iracdb.errors import BadOption

# SQLAlchemy is imported inside the functions that open a database: the CLI imports this module for its URL
# helpers, and `iracdb --help` should not pay for SQLAlchemy.
if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import URL

#: What a database URL looks like, for messages about one that is not (which never repeat it: it may hold a password).
EXPECTED_URL = "expected sqlite:///FILE or postgresql+psycopg://USER@HOST/DB"

#: What replaces a secret in anything shown or stored.
MASK = "***"

# A query parameter (or libpq keyword) that holds a secret or names a file of them; its value ends at "&" (and, in
# free text, at white space or a quote). In free text a value already masked is left alone, so that the punctuation
# after it ("...?password=***: connection failed") stays.
_SECRET_PARAM = r"(?i)(?<![A-Za-z0-9_])((?:ssl)?password|passfile)="
_SECRET_PARAM_IN_VALUE = re.compile(_SECRET_PARAM + r"[^&]*")
_SECRET_PARAM_IN_TEXT = re.compile(_SECRET_PARAM + r"(?!\*\*\*(?:[&\s'\":,;.)]|$))[^&\s'\"]*")
# A URL scheme and what follows it, up to the end of the value (or, in free text, of the word). The separator may be
# mistyped ("//" or ":/" for "://"): such a value is refused, but is masked all the same wherever it appears.
_SCHEME = r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*(?::/+|//))"
_URL_IN_VALUE = re.compile(_SCHEME + r"(?P<rest>.*)", re.DOTALL)
_URL_IN_TEXT = re.compile(_SCHEME + r"(?P<rest>[^\s'\"]*)")


def mask_secrets(text: str, *, single: bool = False) -> str:
    """``text`` with every secret-looking part of any URL in it replaced by ``***``.

    The password of a URL's user information (everything between the user name's ``:`` and the *last* ``@``, so
    that an unencoded ``@`` in a password hides all of it) and the values of the query parameters ``password``,
    ``sslpassword`` and ``passfile`` (in any case) are masked. Works on text, not on parsed URLs, so that a
    malformed URL, an option such as ``--db=URL`` or an error message is masked too.

    Parameters
    ----------
    text : str
        Free text (an error message, a log line), or one value (see ``single``).
    single : bool
        ``text`` is one value (a URL, one command-line argument): a secret in it may then contain white space.

    Returns
    -------
    str
        The text with the secrets replaced by ``***``; the rest (user name, host, database) kept.
    """
    param, url = (_SECRET_PARAM_IN_VALUE, _URL_IN_VALUE) if single else (_SECRET_PARAM_IN_TEXT, _URL_IN_TEXT)
    # Parameters first: a secret parameter's value may contain an "@", which must not be taken for userinfo's end.
    text = param.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return url.sub(_mask_userinfo, text)


def _mask_userinfo(match: re.Match[str]) -> str:
    rest = match.group("rest")
    at = rest.rfind("@")  # a host never holds an "@": the user information ends at the last one
    if at < 0 or ":" not in rest[:at]:
        return match.group(0)
    user = rest[:at].split(":", 1)[0]
    return f"{match.group('scheme')}{user}:{MASK}{rest[at:]}"


def safe_url(url: str | URL) -> str:
    """The URL as it may be shown to people or stored: every secret in it replaced by ``***`` (see
    :func:`mask_secrets`), even when it cannot be parsed."""
    if not isinstance(url, str):  # a sqlalchemy URL
        url = url.render_as_string(hide_password=True)
    return mask_secrets(url, single=True)


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url``: ``sqlite:///path`` or ``postgresql+psycopg://user@host/db``.

    Each backend configures its engine (:meth:`iracdb.db.backend.Backend.make_engine`): SQLite gets foreign keys
    on, a write-ahead log (readers never block the writer) and a busy timeout, so that it enforces the same
    constraints as PostgreSQL and tolerates a second process.

    Parameters
    ----------
    url : str
        The database URL.
    create : bool
        Whether a SQLite file that does not exist may be created (on first connection). False for commands that
        only read: a mistyped path is then an error, not a new empty archive.

    Raises
    ------
    iracdb.errors.BadOption
        ``url`` is not a URL of a database iracdb works with (the message never repeats it: it may hold a password).
    iracdb.errors.NoSuchDatabase
        Without ``create``, the SQLite file does not exist.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    # Imported here: the backends use this module's URL helpers.
    from iracdb.db.backend import backend_class

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        # Never echo the value (nor the exception, which may quote it): it may hold a password.
        raise BadOption(f"not a database URL ({EXPECTED_URL})") from None
    backend = backend_class(parsed.get_backend_name())
    if backend is None:
        raise BadOption(f"unsupported database {safe_url(url)}: iracdb works with SQLite and PostgreSQL")
    return backend.make_engine(parsed, create=create)


def create_checked_engine(url: URL, **kwargs: object) -> Engine:
    """``sqlalchemy.create_engine(url, **kwargs)``; :class:`~iracdb.errors.BadOption` (which never quotes the URL)
    when the dialect refuses the URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError

    try:
        return create_engine(url, **kwargs)
    except ArgumentError:  # a dialect refusing the URL: its message may quote the URL
        raise BadOption(f"cannot use this database URL ({EXPECTED_URL})") from None
