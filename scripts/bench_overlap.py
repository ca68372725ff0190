"""Benchmark of the exact circle-pixel overlap: iracdb's numpy version against photutils' compiled geometry.

iracdb computes the overlap of a circle with every pixel of a grid itself (``iracdb.photometry.aperture.
circle_overlap``), for all planes of a stack in one call; ``measure()`` calls it on the window around each
aperture (9x9 pixels for radius 3). photutils offers ``photutils.geometry.circular_overlap_grid`` (Cython, one
circle and one grid per call) and, for many apertures, ``CircularAperture(positions, r).to_mask(method="exact")``
(a Python loop over the positions calling the same function). This script times them on the same grids and
centres and prints the largest absolute difference of the overlap weights (px², any pixel) and of their sum
over each plane (the aperture area, px²). Synthetic centres (sub-pixel offsets), so the script needs no data
files; it asserts nothing.

Cases: the radius-3 aperture on the 9x9 window ``measure()`` uses and on a whole 32x32 subarray plane, the exact
3-7 px annulus (outer minus inner circle; note that ``measure()`` picks annulus pixels by their centre, not by
overlap), the radius-3 aperture through photutils' many-aperture masks (timed without placing them on the plane)
against iracdb's 9x9 windows, and whole 256x256 frames (the whole grid, and the 9x9 window).

    .venv/bin/python scripts/bench_overlap.py [--planes 4096] [--frames 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from photutils.aperture import CircularAperture
from photutils.geometry import circular_overlap_grid

from iracdb.photometry.aperture import circle_overlap


def best_time(function: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time in seconds of ``repeat`` calls, and the last result."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def photutils_grids(cx: np.ndarray, cy: np.ndarray, radius: float, shape: tuple[int, int]) -> np.ndarray:
    """``circular_overlap_grid`` per plane on the grid of :func:`circle_overlap` (pixel ``[0, 0]`` centred at
    (0, 0)), stacked as ``(n, ny, nx)``."""
    ny, nx = shape
    return np.stack([
        circular_overlap_grid(-0.5 - x, nx - 0.5 - x, -0.5 - y, ny - 0.5 - y, nx, ny, radius, 1, 1)
        for x, y in zip(cx, cy, strict=True)
    ])


def photutils_masks(cx: np.ndarray, cy: np.ndarray, radius: float) -> list:
    """``CircularAperture(positions, radius).to_mask(method="exact")``: one mask per centre, each on the bounding
    box of its circle."""
    return CircularAperture(np.column_stack([cx, cy]), radius).to_mask(method="exact")


def masks_on_grid(masks: list, shape: tuple[int, int]) -> np.ndarray:
    """photutils masks placed on a ``shape`` grid, stacked as ``(n, ny, nx)`` (for the differences only)."""
    return np.stack([mask.to_image(shape) for mask in masks])


def windows_on_grid(w: np.ndarray, x0: np.ndarray, y0: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Window weights ``w`` ``(n, s, s)`` with pixel ``[0, 0]`` at ``(x0, y0)`` placed on a ``shape`` grid."""
    grid = np.zeros((len(w), *shape))
    s = w.shape[1]
    for k, (i, j) in enumerate(zip(x0.astype(int), y0.astype(int), strict=True)):
        grid[k, j : j + s, i : i + s] = w[k]
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planes", type=int, default=4096, help="subarray planes (default 4096 = 64 cubes)")
    parser.add_argument("--frames", type=int, default=40, help="full-array 256x256 frames (default 40)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many timings (default 3)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    # Centres as measure() sees them: a window centred on the nearest pixel, the star a sub-pixel away.
    wx, wy = 4.0 + rng.uniform(-0.5, 0.5, args.planes), 4.0 + rng.uniform(-0.5, 0.5, args.planes)
    ax, ay = 8.0 + rng.uniform(-0.5, 0.5, args.planes), 8.0 + rng.uniform(-0.5, 0.5, args.planes)
    sx, sy = 15.0 + rng.uniform(-0.6, 0.6, args.planes), 15.0 + rng.uniform(-0.6, 0.6, args.planes)
    fx, fy = 127.0 + rng.uniform(-0.6, 0.6, args.frames), 127.0 + rng.uniform(-0.6, 0.6, args.frames)

    x0, y0 = np.floor(sx + 0.5) - 4, np.floor(sy + 0.5) - 4  # window corners, as measure() cuts them

    def annulus(grid: Callable, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
        return lambda: grid(x, y, 7.0, (17, 17)) - grid(x, y, 3.0, (17, 17))

    cases = [
        # label, planes, iracdb call, photutils call
        ("r=3, 9x9 window (measure)", args.planes,
         lambda: circle_overlap(wx, wy, 3.0, (9, 9)), lambda: photutils_grids(wx, wy, 3.0, (9, 9))),
        ("r=3, whole 32x32 plane", args.planes,
         lambda: circle_overlap(sx, sy, 3.0, (32, 32)), lambda: photutils_grids(sx, sy, 3.0, (32, 32))),
        ("annulus 3-7, 17x17 window", args.planes, annulus(circle_overlap, ax, ay), annulus(photutils_grids, ax, ay)),
        ("r=3, 9x9 window, to_mask", args.planes,
         lambda: circle_overlap(sx - x0, sy - y0, 3.0, (9, 9)), lambda: photutils_masks(sx, sy, 3.0)),
        ("r=3, whole 256x256 frame", args.frames,
         lambda: circle_overlap(fx, fy, 3.0, (256, 256)), lambda: photutils_grids(fx, fy, 3.0, (256, 256))),
        ("r=3, 256x256, 9x9 window", args.frames,
         lambda: circle_overlap(fx - 123.0, fy - 123.0, 3.0, (9, 9)),
         lambda: photutils_grids(fx - 123.0, fy - 123.0, 3.0, (9, 9))),
    ]
    for _, _, ours, theirs in cases:  # warm-up (imports, caches)
        ours(), theirs()

    print(f"exact circle-pixel overlap, best of {args.repeat}; photutils: circular_overlap_grid per plane "
          "unless noted")
    print(f"{'case':<28}{'planes':>7}{'iracdb planes/s':>17}{'photutils planes/s':>20}{'ratio':>8}"
          f"{'max |diff|':>12}{'area |diff|':>13}")
    for label, n, ours, theirs in cases:
        t_ours, w_ours = best_time(ours, args.repeat)
        t_theirs, w_theirs = best_time(theirs, args.repeat)
        if isinstance(w_theirs, list):  # photutils masks against iracdb windows: both on the 32x32 plane
            w_ours, w_theirs = windows_on_grid(w_ours, x0, y0, (32, 32)), masks_on_grid(w_theirs, (32, 32))
        diff = float(np.max(np.abs(w_ours - w_theirs)))
        area_diff = float(np.max(np.abs(w_ours.sum(axis=(1, 2)) - w_theirs.sum(axis=(1, 2)))))
        print(f"{label:<28}{n:>7,}{n / t_ours:>17,.0f}{n / t_theirs:>20,.0f}{t_theirs / t_ours:>7.1f}x"
              f"{diff:>12.1e}{area_diff:>13.1e}")
    print("ratio = photutils time / iracdb time (above 1: iracdb faster)")
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")


if __name__ == "__main__":
    main()
