"""Compare the centroid methods on real and synthetic subarray data, and measure the first-frame effect.

    python scripts/compare_centroids.py [--shared ../shared]

For each method of :data:`iracdb.choices.CENTROID_METHODS` (the default 3 px aperture, 3-7 px annulus, the warm
pixel-phase x array-location correction, the published aperture correction), it prints:

- on the real XO-3 warm ch2 subarray AOR 46466816 (11 cubes of 64 planes, ``../shared/data``): the planes used
  (no excluding flag, planes 1-63), the median corrected flux, its scatter per plane (robust: 1.4826 x MAD, and the
  plain standard deviation; %), the mean centroid offset from the box centroid (px), the median flux relative to the
  box centroid's (%), and the **residual trend** of the corrected flux against pixel phase: the least-squares
  ``f / median - 1 = a + b dx + c dy + d (dx² + dy²)`` over the used planes (``dx``, ``dy`` the centroid's offset from
  its pixel centre), its coefficients in % per px (per px² for ``d``) and the RMS of ``b dx + c dy + d r²`` over the
  used planes (``trend``, %): the flux variation the correction left correlated with pixel phase;
- on a synthetic warm ch1 subarray AOR (0.1 s frames; the IRAC-like PSF with wings; the pixel-phase response
  injected at the true position; noise; made by :mod:`iracdb.synth`), the same, and the corrected flux against the
  truth (median and scatter of flux / aperture correction / true flux - 1, %: the synthetic PSF lacks the far wings
  the published aperture correction restores) and the centroid's distance from the true position (median, px);
- the first-frame offset on the real AOR: per cube, the median plane-0 flux over the median of planes 1-63 (box
  centroid), and their median over the cubes (%).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iracdb.choices import CENTROID_METHODS
from iracdb.fitsio.image import image_info
from iracdb.flags import SUMMARY_EXCLUDED, Flag
from iracdb.photometry import PhotometryParams, measure
from iracdb.photometry.targets import brightest_near, pointing_pixel
from iracdb.synth import AorSpec, write_archive

ROOT = Path(__file__).resolve().parents[1]
XO3 = Path("data") / "irac" / "r46466816" / "ch2" / "bcd"
EXCLUDED = int(SUMMARY_EXCLUDED & ~Flag.FIRST_FRAME)  # photometry alone never sets FIRST_FRAME: planes 1-63 below


@dataclass
class Cube:
    """One subarray cube with its companions, where the star starts, and (synthetic) the truth per plane."""

    data: np.ndarray
    unc: np.ndarray | None
    mask: np.ndarray | None
    header: fits.Header
    true_x: np.ndarray | None = None
    true_y: np.ndarray | None = None
    true_flux_mjy: np.ndarray | None = None


@dataclass
class Result:
    """Every plane of every cube measured by one method."""

    flux: np.ndarray
    x: np.ndarray
    y: np.ndarray
    plane: np.ndarray
    used: np.ndarray
    ap_corr: np.ndarray


def _read_cube(path: Path) -> Cube:
    data, header = fits.getdata(path, header=True)
    companions = []
    for kind in ("_bunc", "_bimsk"):
        other = path.with_name(path.name.replace("_bcd", kind))
        companions.append(fits.getdata(other) if other.exists() else None)
    return Cube(data, companions[0], companions[1], header)


def _measure(cubes: list[Cube], method: str) -> Result:
    parts = []
    for cube in cubes:
        info = image_info(cube.header)
        x0, y0 = brightest_near(cube.data, *pointing_pixel(cube.header))
        params = PhotometryParams(centroid=method)  # type: ignore[arg-type]
        r = measure(cube.data, x0, y0, info, params, uncertainty=cube.unc, mask=cube.mask)
        plane = np.arange(len(r))
        parts.append((r.flux_mjy, r.x, r.y, plane, ((r.flags & EXCLUDED) == 0) & np.isfinite(r.flux_mjy),
                      r.aperture_correction))
    flux, x, y, plane, used, apc = (np.concatenate(p) for p in zip(*parts, strict=True))
    return Result(flux, x, y, plane, used, apc)


def _phase_trend(result: Result, use: np.ndarray) -> tuple[np.ndarray, float]:
    """The coefficients (a, b, c, d) of the residual fit, in %, and the RMS of its phase part over the planes, %."""
    f = result.flux[use] / np.median(result.flux[use]) - 1.0
    dx = result.x[use] - np.round(result.x[use])
    dy = result.y[use] - np.round(result.y[use])
    design = np.column_stack([np.ones_like(dx), dx, dy, dx**2 + dy**2])
    coef, *_ = np.linalg.lstsq(design, f, rcond=None)
    model = design[:, 1:] @ coef[1:]
    return 100.0 * coef, 100.0 * float(np.std(model))


def _robust_pct(values: np.ndarray) -> float:
    median = np.median(values)
    return float(100.0 * 1.4826 * np.median(np.abs(values - median)) / median)


def _report(title: str, cubes: list[Cube]) -> dict[str, Result]:
    results = {method: _measure(cubes, method) for method in CENTROID_METHODS}
    box = results["box"]
    print(f"\n{title}")
    print(f"{'method':8} {'planes':>6} {'median mJy':>11} {'robust %':>9} {'std %':>7} {'dx-box':>8} {'dy-box':>8} "
          f"{'flux/box %':>10} {'b %/px':>7} {'c %/px':>7} {'d %/px2':>8} {'trend %':>7}", end="")
    synthetic = cubes[0].true_flux_mjy is not None
    print(f" {'vs truth %':>10} {'truth rms %':>11} {'pos err px':>10}" if synthetic else "")
    for method, r in results.items():
        use = r.used & (r.plane > 0)
        both = use & box.used & (box.plane > 0)
        coef, trend = _phase_trend(r, use)
        flux = r.flux[use]
        ratio = 100.0 * (np.median(r.flux[both] / box.flux[both]) - 1.0)
        line = (f"{method:8} {use.sum():6d} {np.median(flux):11.4f} {_robust_pct(flux):9.4f} "
                f"{100 * np.std(flux) / np.median(flux):7.4f} {np.mean(r.x[both] - box.x[both]):+8.4f} "
                f"{np.mean(r.y[both] - box.y[both]):+8.4f} {ratio:+10.4f} {coef[1]:+7.3f} {coef[2]:+7.3f} "
                f"{coef[3]:+8.3f} {trend:7.4f}")
        if synthetic:
            truth = np.concatenate([c.true_flux_mjy for c in cubes])[use]  # type: ignore[misc]
            tx = np.concatenate([c.true_x for c in cubes])[use]  # type: ignore[misc]
            ty = np.concatenate([c.true_y for c in cubes])[use]  # type: ignore[misc]
            rel = flux / r.ap_corr[use] / truth - 1.0  # the synthetic PSF lacks the wings ap_corr restores
            line += (f" {100 * np.median(rel):+10.4f} {100 * np.std(rel):11.4f} "
                     f"{np.median(np.hypot(r.x[use] - tx, r.y[use] - ty)):10.4f}")
        print(line)
    return results


def _synthetic_cubes(folder: Path) -> list[Cube]:
    spec = AorSpec(aorkey=73000064, channels=(1,), read_mode="SUB", n_exposures=12, mission="warm",
                   framtime_s=0.1, flux_mjy=400.0, nan_fraction=0.0)
    archive = write_archive(folder, [spec], seed=3, inject_response=True, noise=True, truth_csv=False)
    cubes = []
    for path in sorted({archive.image_path(t) for t in archive.truth}):
        records = sorted((t for t in archive.truth if archive.image_path(t) == path), key=lambda t: t.plane)
        cube = _read_cube(path)
        cube.true_x = np.array([t.x_px for t in records])
        cube.true_y = np.array([t.y_px for t in records])
        cube.true_flux_mjy = np.array([t.flux_mjy for t in records])
        cubes.append(cube)
    return cubes


def _first_frame(result: Result) -> None:
    print("\nfirst-frame offset, real XO-3 AOR 46466816 (box centroid): median plane-0 flux / median of planes "
          "1-63 - 1, per cube (%)")
    ratios = []
    for start in range(0, len(result.flux), 64):
        cube = slice(start, start + 64)
        flux, used, plane = result.flux[cube], result.used[cube], result.plane[cube]
        rest = flux[used & (plane > 0)]
        if used[0] and rest.size:
            ratios.append(flux[0] / np.median(rest) - 1.0)
    values = 100.0 * np.array(ratios)
    print("  " + " ".join(f"{v:+.3f}" for v in values))
    scatter = np.std(values, ddof=1) / np.sqrt(len(values))
    print(f"  median over {len(values)} cubes: {np.median(values):+.3f} %  (mean {np.mean(values):+.3f} % "
          f"± {scatter:.3f} % standard error)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared data folder")
    args = parser.parse_args()
    folder = args.shared / XO3
    real = [_read_cube(p) for p in sorted(folder.glob("*_bcd.fits"))]
    results = _report(f"real XO-3 warm ch2 subarray AOR 46466816, {len(real)} cubes, 2 s frames", real)
    with tempfile.TemporaryDirectory() as tmp:
        _report("synthetic warm ch1 subarray AOR, 12 cubes, 0.1 s frames, IRAC-like PSF, pixel-phase response "
                "injected", _synthetic_cubes(Path(tmp) / "archive"))
    _first_frame(results["box"])


if __name__ == "__main__":
    main()
