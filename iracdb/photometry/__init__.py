"""Aperture photometry of IRAC images as a pure library: arrays in, measurements out (no database, no printing).

The entry point is :func:`measure`; its parts live in the submodules (``targets``, ``centroid``, ``background``,
``aperture``, ``corrections``, ``apcorr``, ``units``, ``psf``; ``box``: the IRAC team's box centroider and its noise
pixels).
"""

from iracdb.photometry.box import BoxCentroid, box_centroid
from iracdb.photometry.corrections import CorrectionMaps, correction_factor, irac_aphot_corr, load_correction_maps
from iracdb.photometry.measure import ImageInfo, Photometry, PhotometryParams, measure

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
