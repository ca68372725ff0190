"""The closed choices of iracdb, each defined once with what every value means.

The library validates against these, and the command line derives its choices, metavars and help from them, so a
new method is added in one place. This module imports nothing (the command line reads it at start-up).
"""

from __future__ import annotations

#: The IRAC channels (CHNLNUM).
CHANNELS = (1, 2, 3, 4)
#: The mission phases (see iracdb.mission): cryogenic until MJD 54968, warm after.
MISSIONS = ("cryo", "warm")
#: Background estimators of the annulus (:mod:`iracdb.photometry.background`).
BACKGROUND_METHODS: dict[str, str] = {
    "median": "sigma-clipped median of the annulus pixels",
    "mean": "mean of the annulus pixels",
}
#: Centroid methods (:mod:`iracdb.photometry.centroid`).
CENTROID_METHODS: dict[str, str] = {
    "box": "first moment in a 7x7 box about the peak with its own background (the IRAC team's box_centroider, "
    "which the pixel-phase correction was derived with)",
    "moment": "first moment in a circular window",
    "gauss": "2-D Gaussian fit in a box about the peak",
}
#: Which images a run measures.
FILE_TYPES: dict[str, str] = {
    "bcd": "the BCD images (with _bunc and _bimsk)",
    "cbcd": "the artifact-corrected CBCD images (with _cbunc and _bimsk)",
}
#: How a run measures a subarray cube.
SUBARRAY_MODES: dict[str, str] = {
    "planes": "every plane of a cube",
    "median": "each cube's median image",
}
#: The pixel-phase x array-location coefficient sets a run applies.
CORRECTION_SETS: dict[str, str] = {
    "auto": "each AOR's mission's coefficients",
    "warm": "the warm-mission coefficients",
    "cryo": "the cryogenic-mission coefficients",
    "none": "no correction",
}
#: The per-AOR outlier rules (:class:`iracdb.summary.RejectRule`); ``sigma:N`` takes a threshold.
REJECT_RULES: dict[str, str] = {
    "none": "keep every usable image",
    "minmax": "drop the lowest and the highest usable flux",
    "sigma:N": "iterative clipping at N sample standard deviations about the median",
}
#: How the best aperture of each AOR, channel and target is chosen (:mod:`iracdb.best`); lower scores are better.
BEST_CRITERIA: dict[str, str] = {
    "binned-rms": "RMS (ppm) of the binned, normalised, detrended light curve of the used images",
    "scatter": "robust standard deviation (ppm) of the used images' fluxes about their median",
    "error": "error of the mean flux relative to the mean (ppm)",
}
#: The formats of ``iracdb export``.
EXPORT_FORMATS: dict[str, str] = {
    "csv": "comma-separated text (an empty field is missing)",
    "parquet": "Apache Parquet, with units, descriptions and provenance",
    "ecsv": "astropy's Enhanced CSV, with units and provenance",
    "votable": "IVOA VOTable, with VOUnits and provenance",
}


def one_of(choices: dict[str, str]) -> str:
    """The choices as text for a message: ``a, b or c``."""
    names = list(choices)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" or {names[-1]}"


__all__ = [
    "BACKGROUND_METHODS",
    "BEST_CRITERIA",
    "CENTROID_METHODS",
    "CORRECTION_SETS",
    "EXPORT_FORMATS",
    "FILE_TYPES",
    "REJECT_RULES",
    "SUBARRAY_MODES",
    "one_of",
]
