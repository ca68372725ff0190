"""iracdb: a database-backed reduction archive for Spitzer/IRAC Level-1 aperture photometry.

The Python API (:mod:`iracdb.api`)::

    import iracdb
    with iracdb.open("archive.sqlite") as arc:      # a path or URL; default $IRACDB_DB_URL, else ./iracdb.sqlite
        arc.ingest("/data/irac")
        run = arc.reduce("run1", target="04:21:52.7 +57:49:01.9", radius=3, annulus=(3, 7))
        run.aors()                                   # astropy Tables with units
    aor_data, img_data, problem_aors = iracdb.photometry([[bcd1, bcd2, ...], [...]], target=(ra_deg, dec_deg))

Importing the package does no I/O, opens no database and imports neither SQLAlchemy nor astropy: the names below
are loaded when first used (module ``__getattr__``).

``iracdb.photometry`` is both the photometry library (the subpackage :mod:`iracdb.photometry`, pure numpy:
``iracdb.photometry.measure``) and, called, the 2018 pipeline's one-call interface
(:func:`iracdb.pipeline.photometry`): the subpackage's module is callable (see its docstring).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from iracdb import photometry
    from iracdb.api import Archive, Run, open

#: Public name -> the module that defines it (imported on first use).
_LAZY = {"open": "iracdb.api", "Archive": "iracdb.api", "Run": "iracdb.api"}


def __getattr__(name: str) -> Any:
    if name == "photometry":  # the subpackage, callable (see its docstring); imported on first use
        return importlib.import_module("iracdb.photometry")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'iracdb' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["Archive", "Run", "__version__", "open", "photometry"]
