"""Benchmark of the per-plane measurement: iracdb.photometry.measure against a per-plane photutils loop.

Prints planes per second of the full measurement (centroid, background, aperture, corrections, units; no file
reading) for subarray cubes (64 x 32 x 32) and full-array frames (256 x 256), next to a per-plane loop of
photutils (``centroid_2dg`` + ``aperture_photometry`` with an aperture and an annulus) on the same data, in the
same run. Synthetic stars with noise, bad pixels and companions, so the script needs no data files.

    .venv/bin/python scripts/bench_photometry.py [--cubes 20] [--frames 40] [--loop-planes 200]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
from photutils.centroids import centroid_2dg

from iracdb.photometry import ImageInfo, PhotometryParams, measure
from iracdb.photometry.psf import render_star

SUB = ImageInfo(channel=2, mission="warm", subarray=True, gain=3.71, ronoise=9.4, exptime=1.92, fluxconv=0.1447)
FULL = ImageInfo(channel=2, mission="warm", subarray=False, gain=3.71, ronoise=16.0, exptime=96.8, fluxconv=0.1447)


def synthetic(n: int, shape: tuple[int, int], centre: float, rng: np.random.Generator):
    """A stack of noisy stars with NaN bad pixels, an uncertainty companion and a mask companion."""
    x = centre + rng.uniform(-0.6, 0.6, n)
    y = centre + rng.uniform(-0.6, 0.6, n)
    data = render_star(shape, x, y, 1500.0, model="irac") + 0.5
    data += rng.normal(0.0, 0.3, data.shape)
    data[rng.random(data.shape) < 0.03] = np.nan
    unc = np.full(data.shape, 0.3, dtype=np.float32)
    mask = np.zeros(data.shape, dtype=np.int16)
    mask[rng.random(data.shape) < 0.005] = 512
    return data.astype(np.float32), unc, mask, np.round(x), np.round(y)


def photutils_loop(data, x0, y0, params: PhotometryParams) -> float:
    """Seconds per plane of a plain photutils loop: centroid_2dg in a 9x9 box, then aperture + annulus sums."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fitter warnings on noisy planes
        for k in range(len(data)):
            img = np.nan_to_num(data[k].astype(np.float64))
            bad = ~np.isfinite(data[k])
            ix, iy = int(x0[k]), int(y0[k])
            box = img[iy - 4 : iy + 5, ix - 4 : ix + 5]
            cx, cy = centroid_2dg(box, mask=bad[iy - 4 : iy + 5, ix - 4 : ix + 5])
            pos = (cx + ix - 4, cy + iy - 4)
            apertures = [
                CircularAperture(pos, params.radius_px),
                CircularAnnulus(pos, params.annulus_in_px, params.annulus_out_px),
            ]
            table = aperture_photometry(img, apertures, method="exact", mask=bad)
            _ = table["aperture_sum_0"][0] - table["aperture_sum_1"][0] / apertures[1].area * apertures[0].area
    return (time.perf_counter() - start) / len(data)


def iracdb_rate(stacks, info: ImageInfo, params: PhotometryParams, repeat: int) -> float:
    """Planes per second of measure() over the given (data, unc, mask, x, y) stacks."""
    planes = 0
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        for data, unc, mask, x, y in stacks:
            measure(data, x, y, info, params, uncertainty=unc, mask=mask)
        best = min(best, time.perf_counter() - start)
    planes = sum(len(s[0]) for s in stacks)
    return planes / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cubes", type=int, default=20, help="subarray cubes of 64 planes (default 20)")
    parser.add_argument("--frames", type=int, default=40, help="full-array frames (default 40)")
    parser.add_argument("--loop-planes", type=int, default=200, help="planes timed in the photutils loop")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many timings of iracdb")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    params = PhotometryParams()

    cubes = [synthetic(64, (32, 32), 15.0, rng) for _ in range(args.cubes)]
    frames = [synthetic(1, (256, 256), 127.0, rng) for _ in range(args.frames)]
    # The frames of an AOR measured in one call, as a (n, 256, 256) stack.
    batched = [tuple(np.concatenate([f[i] for f in frames]) for i in range(5))]
    measure(*cubes[0][:1], cubes[0][3], cubes[0][4], SUB, params)  # warm-up (imports, caches)

    loop_rate = np.nan
    print(f"{'data':<28}{'iracdb planes/s':>18}{'photutils loop planes/s':>26}{'speed-up':>11}")
    for label, stacks, info, method in [
        ("subarray 64x32x32, moment", cubes, SUB, "moment"),
        ("subarray 64x32x32, gauss", cubes, SUB, "gauss"),
        ("full array, 1 call/frame", frames, FULL, "moment"),
        ("full array, 1 call/frame gs", frames, FULL, "gauss"),
        ("full array, stacked, moment", batched, FULL, "moment"),
        ("full array, stacked, gauss", batched, FULL, "gauss"),
    ]:
        p = PhotometryParams(centroid=method)
        rate = iracdb_rate(stacks, info, p, args.repeat)
        all_data = np.concatenate([s[0] for s in stacks])[: args.loop_planes]
        x0 = np.concatenate([s[3] for s in stacks])[: args.loop_planes]
        y0 = np.concatenate([s[4] for s in stacks])[: args.loop_planes]
        if label.endswith(("gauss", "gs")):
            loop = loop_rate  # the same photutils loop as the line above
        else:
            loop = loop_rate = 1.0 / photutils_loop(all_data, x0, y0, p)
        print(f"{label:<28}{rate:>18,.0f}{loop:>26,.0f}{rate / loop:>10.0f}x")


if __name__ == "__main__":
    main()
