"""Aperture photometry of IRAC images as a pure library: arrays in, measurements out (no database, no printing).

The entry point is :func:`measure`; its parts live in the submodules (``targets``, ``centroid``, ``background``,
``aperture``, ``corrections``, ``apcorr``, ``units``, ``psf``).
"""

from iracdb.photometry.corrections import CorrectionMaps, correction_factor, irac_aphot_corr, load_correction_maps
from iracdb.photometry.measure import ImageInfo, Photometry, PhotometryParams, measure

__all__ = [
    "CorrectionMaps",
    "ImageInfo",
    "Photometry",
    "PhotometryParams",
    "correction_factor",
    "irac_aphot_corr",
    "load_correction_maps",
    "measure",
]
