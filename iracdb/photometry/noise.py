"""Noise pixels: the effective number of pixels a point source covers, per plane.

``beta = (sum I)^2 / sum I^2`` over the background-subtracted pixels whose centres lie within ``radius_px``
(3 px: the IRAC team's ``box_centroider.pro`` convention) of the centroid. For a Gaussian PSF of standard
deviation sigma [px], well sampled, beta = 4 pi sigma^2 (sigma^2 + 1/12 once the pixels integrate the PSF).
Variable apertures (``beta:SCALE:OFFSET``) have radius ``SCALE * sqrt(beta) + OFFSET`` pixels.

Pure numpy, vectorised over planes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["noise_pixels"]


def noise_pixels(
    values: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64], radius_px: float = 3.0
) -> NDArray[np.float64]:
    """Noise pixels of each plane of ``values``.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n, ny, nx)`` background-subtracted pixel values (any unit); NaN pixels are left out.
    x, y : numpy.ndarray
        ``(n,)`` centroid of each plane, in the pixels of ``values`` (centre of pixel ``[0, 0]`` at (0, 0)).
    radius_px : float
        Pixels whose centres are within this distance of the centroid count, pixels.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` beta, dimensionless (pixels); NaN where the centroid is not finite, no pixel counts or
        ``sum I^2`` is 0.
    """
    _, ny, nx = values.shape
    rows = np.arange(ny, dtype=np.float64)[None, :, None]
    cols = np.arange(nx, dtype=np.float64)[None, None, :]
    d2 = (cols - np.asarray(x, dtype=np.float64)[:, None, None]) ** 2 + (
        rows - np.asarray(y, dtype=np.float64)[:, None, None]) ** 2
    inside = (d2 <= radius_px * radius_px) & np.isfinite(values)
    v = np.where(inside, values, 0.0)
    total = v.sum(axis=(1, 2))
    square = (v * v).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = total * total / square
    return np.where(inside.any(axis=(1, 2)) & (square > 0), beta, np.nan)
