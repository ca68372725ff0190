"""The readable SQL views over a run's results, and what each of their columns means (name, unit, description).

Migration 0003 creates the views ``image_photometry`` (one row per measured image) and ``aor_photometry`` (one row
per AOR x channel x target); exports, ``iracdb summary``, ``iracdb sql`` users and plots all read these, so the same
column always means the same thing. The migration freezes the SQL; ``tests/test_views.py`` checks that the views'
columns are exactly the ones listed here and that their flag columns follow :mod:`iracdb.flags`.
"""

from __future__ import annotations

from dataclasses import dataclass

from iracdb.flags import Flag

IMAGE_VIEW = "image_photometry"
AOR_VIEW = "aor_photometry"


@dataclass(frozen=True)
class Column:
    """A view column: its name, its unit (astropy unit string; '' for dimensionless or none) and its meaning."""

    name: str
    unit: str
    description: str


#: ``image_photometry``: one row per measured image (a full-array frame or one subarray plane, or a cube's median)
#: and target. Positions are 0-based pixels, the centre of the bottom-left pixel at (0, 0).
IMAGE_COLUMNS: tuple[Column, ...] = (
    Column("run", "", "name of the reduction run"),
    Column("aorkey", "", "AORKEY: the astronomical observation request"),
    Column("channel", "", "IRAC channel 1-4"),
    Column("target", "", "target name (as given, or 'auto')"),
    Column("target_index", "", "0, 1, ... in the order the run's targets were given"),
    Column("expid", "", "EXPID: exposure number within the AOR"),
    Column("dcenum", "", "DCENUM: data collection event number"),
    Column("plane", "", "subarray plane 0-63; 0 for a full-array frame or a cube median"),
    Column("n_combined", "", "planes combined into the image (64 for a cube median, else 1)"),
    Column("file", "", "path of the science file measured"),
    Column("mjd", "d", "middle of the image, MJD (UTC)"),
    Column("bmjd", "d", "middle of the image, barycentric MJD"),
    Column("xc", "pix", "x of the aperture centre in the image itself (subarray pixels for subarray data)"),
    Column("yc", "pix", "y of the aperture centre in the image itself"),
    Column("xc_full", "pix", "x of the aperture centre on the full 256x256 array"),
    Column("yc_full", "pix", "y of the aperture centre on the full 256x256 array"),
    Column("x_expected", "pix", "x where the target was expected (from the WCS), image pixels"),
    Column("y_expected", "pix", "y where the target was expected, image pixels"),
    Column("shift_px", "pix", "distance of the centroid from the expected position"),
    Column("fwhm_x", "pix", "FWHM of the source along x"),
    Column("fwhm_y", "pix", "FWHM of the source along y"),
    Column("sky", "MJy/sr", "background per pixel from the annulus"),
    Column("sky_err", "MJy/sr", "1-sigma error of the background per pixel"),
    Column("sky_npix", "", "annulus pixels used for the background"),
    Column("aperture_area", "pix2", "usable aperture area (masked and NaN pixels excluded)"),
    Column("raw_flux", "MJy pix2 / sr", "aperture sum before background subtraction (MJy/sr summed over pixels)"),
    Column("raw_flux_err", "MJy pix2 / sr", "1-sigma error of raw_flux"),
    Column("net_flux", "MJy pix2 / sr", "aperture sum minus the background (MJy/sr summed over pixels)"),
    Column("net_flux_err", "MJy pix2 / sr", "1-sigma error of net_flux"),
    Column("correction", "", "pixel-phase x array-location correction, a divisor: "
           "flux_mjy = net_flux x pixel solid angle [sr] x 1e9 x ap_corr / correction"),
    Column("ap_corr", "", "multiplicative aperture correction applied (1 with flag_no_aperture_correction when "
           "none was applied)"),
    Column("flux_mjy", "mJy", "corrected flux density"),
    Column("flux_err_mjy", "mJy", "1-sigma photometric error of flux_mjy"),
    Column("flags", "", "quality bits (iracdb.flags.Flag); decoded in the flag_* columns"),
    Column("used", "", "true when the image entered its AOR's summary (no excluding flag, not an outlier)"),
    *(Column(f"flag_{member.name.lower()}", "", (member.__doc__ or "").strip() or member.name.lower())
      for member in Flag if member and member.name),
)

#: ``aor_photometry``: one row per AOR x channel x target of a run.
AOR_COLUMNS: tuple[Column, ...] = (
    Column("run", "", "name of the reduction run"),
    Column("aorkey", "", "AORKEY"),
    Column("channel", "", "IRAC channel 1-4"),
    Column("target", "", "target name"),
    Column("target_index", "", "0, 1, ... in the order the run's targets were given"),
    Column("object", "", "OBJECT of the AOR's first exposure"),
    Column("date_obs", "", "DATE_OBS of the AOR's first exposure (UTC, ISO 8601)"),
    Column("mjd", "d", "mean time of the used images, MJD (UTC)"),
    Column("bmjd", "d", "mean time of the used images, barycentric MJD"),
    Column("first_mjd", "d", "time of the first image, MJD (UTC)"),
    Column("mission", "", "cryo or warm"),
    Column("read_mode", "", "READMODE: FULL or SUB"),
    Column("frame_time_s", "s", "FRAMTIME: frame time"),
    Column("exposure_time_s", "s", "EXPTIME: effective exposure time"),
    Column("dither_scale", "", "DITHSCAL (empty when not dithered)"),
    Column("dither_positions", "", "number of distinct DITHPOS values"),
    Column("cycles", "", "largest CYCLENUM"),
    Column("n_total", "", "images measured"),
    Column("n_used", "", "images in the statistics"),
    Column("n_rejected", "", "images rejected as outliers by reject_rule"),
    Column("n_flagged", "", "images kept out by their quality flags"),
    Column("reject_rule", "", "outlier rule: none, minmax or sigma:N"),
    Column("flux_mjy", "mJy", "mean flux density of the used images"),
    Column("median_flux_mjy", "mJy", "median flux density of the used images"),
    Column("std_mjy", "mJy", "sample standard deviation of the used images' fluxes"),
    Column("flux_err_mjy", "mJy", "error of the mean, std_mjy / sqrt(n_used)"),
    Column("mean_image_err_mjy", "mJy", "mean per-image photometric error"),
    Column("spread_pct", "%", "100 x std_mjy / flux_mjy"),
    Column("correction", "", "photometric correction applied, e.g. numpy:warm"),
    Column("ap_corr", "", "aperture correction applied (empty: none)"),
)

IMAGE_COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in IMAGE_COLUMNS)
AOR_COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in AOR_COLUMNS)

#: Row order of each view within a run (``image_photometry``'s follows the measurements' unique index).
IMAGE_ORDER = ("aorkey", "channel", "expid", "dcenum", "plane", "target_index")
AOR_ORDER = ("aorkey", "channel", "target_index")

__all__ = [
    "AOR_COLUMNS",
    "AOR_COLUMN_NAMES",
    "AOR_ORDER",
    "AOR_VIEW",
    "IMAGE_COLUMNS",
    "IMAGE_COLUMN_NAMES",
    "IMAGE_ORDER",
    "IMAGE_VIEW",
    "Column",
]
