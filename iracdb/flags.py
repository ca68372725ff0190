"""The one registry of quality bits (house style: one flag registry).

Photometry returns these as a bitmask, the database stores the integer, exports decode it into readable columns.
Bit values are part of the stored data: never renumber a member, only add new ones.
"""

import enum


class Flag(enum.IntFlag):
    """Quality bits of one measured image (one full-array frame or one subarray plane)."""

    NONE = 0
    #: The target's sky position could not be converted to pixel coordinates (bad or missing WCS).
    COORD_CONVERSION_FAILED = 1 << 0
    #: The target position falls outside the image.
    NOT_IN_FOV = 1 << 1
    #: The aperture extends beyond the image edge.
    APERTURE_OFF_EDGE = 1 << 2
    #: The background annulus extends beyond the image edge.
    ANNULUS_OFF_EDGE = 1 << 3
    #: The centroid could not be computed (no flux, fit failed, not finite).
    CENTROID_FAILED = 1 << 4
    #: The centroid moved further than the allowed distance from the expected position.
    CENTROID_SHIFTED = 1 << 5
    #: NaN pixels or pixels with mask bits set lie inside the aperture.
    MASKED_IN_APERTURE = 1 << 6
    #: A pixel inside the aperture carries a saturation bit in the mask companion.
    SATURATED = 1 << 7
    #: A result (sum, background, flux or error) is not finite.
    NON_FINITE = 1 << 8
    #: No aperture correction was applied (none published for this aperture, or the user chose none).
    NO_APERTURE_CORRECTION = 1 << 9
    #: No photometric correction (pixel phase x array location) was applied.
    NO_PHOTOMETRIC_CORRECTION = 1 << 10
    #: The background annulus had too few usable pixels for a reliable estimate.
    FEW_BACKGROUND_PIXELS = 1 << 11
    #: The file could not be read at reduction time (corrupt, missing, changed since ingest).
    FILE_UNREADABLE = 1 << 12
    #: Rejected as an outlier by the per-AOR rule recorded with the run.
    OUTLIER = 1 << 13
    #: Plane 0 of a subarray cube, which reads low (a known IRAC effect); not set when the run keeps first frames.
    FIRST_FRAME = 1 << 14


#: Bits that mean the flux of an image must not be used at all.
UNUSABLE = (
    Flag.COORD_CONVERSION_FAILED
    | Flag.NOT_IN_FOV
    | Flag.APERTURE_OFF_EDGE
    | Flag.CENTROID_FAILED
    | Flag.NON_FINITE
    | Flag.FILE_UNREADABLE
)

#: Bits that keep an image out of its AOR's summary (and out of outlier rejection): :data:`UNUSABLE` (no
#: meaningful flux at all), plus two bits whose flux is a number but not a measurement of the target that may be
#: averaged: ``CENTROID_SHIFTED`` (the aperture was not placed on the measured centroid, so it sampled the PSF wing
#: or another source) and ``SATURATED`` (the aperture holds a saturated pixel, so the flux is biased low); and
#: ``FIRST_FRAME`` (plane 0 of a subarray cube reads 0.1-1 % low: a reduction with ``keep_first_frame`` does not
#: set the bit, so that plane enters the summary). :func:`iracdb.summary.summarize` applies it, and so does any
#: score computed over a run's used images.
SUMMARY_EXCLUDED = UNUSABLE | Flag.CENTROID_SHIFTED | Flag.SATURATED | Flag.FIRST_FRAME
#: Bits that mean an image was not used in its AOR's summary: :data:`SUMMARY_EXCLUDED` or rejected as an
#: ``OUTLIER``. The ``used`` column of the views and exports is "none of these bits and a measured flux".
NOT_USED = SUMMARY_EXCLUDED | Flag.OUTLIER


def decode(value: int) -> list[str]:
    """Names (lower case) of the bits set in ``value``, in bit order."""
    flags = Flag(int(value))
    return [member.name.lower() for member in Flag if member and member in flags and member.name]


def column_names() -> list[str]:
    """One readable column name per bit, ``flag_<name>``, in bit order (for exports)."""
    return [f"flag_{member.name.lower()}" for member in Flag if member and member.name]


#: `_bimsk` bits (value = 2**bit) that mean "do not trust this pixel": the pipeline's usual PROCBITS.
PROCBITS = 32256
#: `_bimsk` bits that mean saturation: 16 = corrected in pipeline, 8192 = uncorrected.
SATURATION_BITS = 16 | 8192
