"""Benchmark of image reading (iracdb.fitsio.image.read_image) and of the vectorised TAN-SIP sky -> pixel transform.

Prints, in one process (one core), on copies of the real IRAC files in a temporary folder (the page cache is warm
after the first pass; best of ``--repeat`` passes):

- ``read_image`` files/s and planes/s for subarray cubes (``_bcd``, ``_bunc``, ``_bimsk``) and full-array frames,
  next to ``astropy.io.fits.getdata`` + ``getheader`` on the same files;
- ``read_image(rows=...)`` (a band of rows) against the whole read for 256 x 256 frames;
- ``TanSip`` for N frames (``wcs_keywords`` + ``from_keywords`` + ``stack``, then ``world_to_pixel``) against an
  astropy loop (``WCS(header)`` + ``all_world2pix`` per frame) and the largest difference between the two;
- :func:`iracdb.photometry.measure` on the big-endian view ``read_image`` returns against native float32/float64.

    .venv/bin/python scripts/bench_frames.py [--copies 20] [--frames 1000] [--astropy-frames 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from iracdb.fitsio.image import image_info, read_image, wcs_keywords
from iracdb.photometry import PhotometryParams, measure
from iracdb.photometry.tansip import TanSip

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "irac"
SUB_DIR = SHARED / "r46466816" / "ch2" / "bcd"
FULL_DIR = SHARED / "r46987776" / "ch2" / "bcd"


def best(repeat: int, run: Callable[[], object]) -> float:
    """Smallest wall-clock seconds of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def copies(sources: list[Path], folder: Path, n: int) -> list[Path]:
    """``n`` copies of each source file in ``folder``."""
    out = []
    for k in range(n):
        for source in sources:
            target = folder / f"c{k:03d}_{source.name}"
            shutil.copyfile(source, target)
            out.append(target)
    return out


def bench_reading(files: list[Path], label: str, planes_per_file: float, repeat: int) -> None:
    def ours() -> None:
        for path in files:
            read_image(path)

    def astropy() -> None:
        for path in files:
            fits.getdata(path)
            fits.getheader(path)

    t_ours = best(repeat, ours)
    t_astropy = best(repeat, astropy)
    n = len(files)
    print(
        f"  {label:<34} read_image {n / t_ours:>8,.0f} files/s ({n * planes_per_file / t_ours:>9,.0f} planes/s, "
        f"{t_ours / n * 1e6:5.0f} us/file) | astropy getdata+getheader {n / t_astropy:>6,.0f} files/s "
        f"({t_astropy / t_ours:.1f}x slower)"
    )


def bench_rows(files: list[Path], repeat: int) -> None:
    def whole() -> None:
        for path in files:
            read_image(path)

    t_whole = best(repeat, whole)
    print(f"  whole 256x256 frame                 {len(files) / t_whole:>8,.0f} frames/s")
    for band in (16, 40, 256):
        rows = (100, 100 + band) if band < 256 else (0, 256)

        def banded(rows: tuple[int, int] = rows) -> None:
            for path in files:
                read_image(path, rows=rows)

        t_band = best(repeat, banded)
        print(
            f"  rows={rows!s:<12} ({band:>3} rows)      {len(files) / t_band:>8,.0f} frames/s "
            f"({t_whole / t_band:.2f}x the whole read)"
        )


def bench_tansip(headers: list[Path], n_frames: int, n_astropy: int, repeat: int) -> None:
    cards = [read_image(headers[k % len(headers)]).cards for k in range(n_frames)]
    frames = [TanSip.from_keywords(wcs_keywords(c)) for c in cards]
    tansip = TanSip.stack(frames)
    ra0 = np.array([c.get("RA_REF", float) for c in cards])
    dec0 = np.array([c.get("DEC_REF", float) for c in cards])
    rng = np.random.default_rng(0)
    ra = ra0 + rng.normal(0, 0.01, n_frames)
    dec = dec0 + rng.normal(0, 0.01, n_frames)

    t_build = best(repeat, lambda: TanSip.stack([TanSip.from_keywords(wcs_keywords(c)) for c in cards]))
    t_w2p = best(repeat, lambda: tansip.world_to_pixel(ra, dec))
    t_p2w = best(repeat, lambda: tansip.pixel_to_world(ra * 0 + 10.0, dec * 0 + 12.0))
    x, y = tansip.world_to_pixel(ra, dec)

    header_objects = [fits.getheader(headers[k % len(headers)]) for k in range(n_astropy)]
    x_ref = np.empty(n_astropy)
    y_ref = np.empty(n_astropy)

    def astropy_loop() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            for k, header in enumerate(header_objects):
                wcs = WCS(header, naxis=2)
                x_ref[k], y_ref[k] = wcs.all_world2pix(ra[k], dec[k], 0, tolerance=1e-8, maxiter=100)

    t_astropy = best(1, astropy_loop)
    diff = max(np.max(np.abs(x[:n_astropy] - x_ref)), np.max(np.abs(y[:n_astropy] - y_ref)))
    per_astropy = t_astropy / n_astropy
    print(
        f"  {n_frames} frames: wcs_keywords+from_keywords+stack {t_build * 1e3:7.2f} ms "
        f"({t_build / n_frames * 1e6:.0f} us/frame); world_to_pixel {t_w2p * 1e3:6.2f} ms; "
        f"pixel_to_world {t_p2w * 1e3:6.2f} ms"
    )
    print(
        f"  astropy loop (WCS + all_world2pix), {n_astropy} frames: {per_astropy * 1e3:.2f} ms/frame "
        f"-> {per_astropy * n_frames:.2f} s for {n_frames}; iracdb total {(t_build + t_w2p) * 1e3:.1f} ms "
        f"({per_astropy * n_frames / (t_build + t_w2p):,.0f}x faster)"
    )
    print(f"  largest |TanSip - astropy| over {n_astropy} frames: {diff:.1e} px")


def time_measure(images, info, params, xy, convert, calls: int, repeat: int) -> float:
    """Seconds per measure() call, converting the arrays first with ``convert``."""

    def run() -> None:
        for _ in range(calls):
            d, u, m = (None if im is None else convert(im.data) for im in images)
            measure(d, *xy, info, params, uncertainty=u, mask=m)

    return best(repeat, run) / calls


def bench_measure(sub_bcd: Path, sub_unc: Path, sub_msk: Path, full_bcd: Path, full_unc: Path, repeat: int) -> None:
    params = PhotometryParams(radius_px=3, annulus_in_px=3, annulus_out_px=7)
    for label, bcd, unc, msk, xy, calls in (
        ("subarray cube (64 planes)", sub_bcd, sub_unc, sub_msk, (15.0, 15.0), 100),
        ("full frame", full_bcd, full_unc, None, (128.0, 128.0), 300),
    ):
        images = [read_image(p) if p is not None else None for p in (bcd, unc, msk)]
        info = image_info(images[0].cards)
        variants: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "big-endian view": lambda a: a,
            "native float32": lambda a: a.astype(a.dtype.newbyteorder("=")),
            "float64": lambda a: a.astype(np.float64) if a.dtype.kind == "f" else a.astype(a.dtype.newbyteorder("=")),
        }
        results = {
            name: time_measure(images, info, params, xy, convert, calls, repeat) for name, convert in variants.items()
        }
        shown = ", ".join(f"{name} {t * 1e6:,.0f} us" for name, t in results.items())
        print(f"  {label:<26} per measure() call incl. conversion: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--copies", type=int, default=20, help="copies of each real file (default 20)")
    parser.add_argument("--frames", type=int, default=1000, help="frames for TanSip (default 1000)")
    parser.add_argument("--astropy-frames", type=int, default=200, help="frames for the astropy loop (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best is shown (default 3)")
    args = parser.parse_args()

    sub = {kind: sorted(SUB_DIR.glob(f"*_{kind}.fits")) for kind in ("bcd", "bunc", "bimsk")}
    full = sorted(FULL_DIR.glob("*.fits"))
    with tempfile.TemporaryDirectory(prefix="bench_frames_") as tmp:
        folder = Path(tmp)
        print(f"read_image ({args.copies} copies of each real file, best of {args.repeat}):")
        for kind, sources in sub.items():
            files = copies(sources, folder, args.copies)
            bench_reading(files, f"subarray {kind} 64x32x32 ({len(files)})", 64, args.repeat)
        full_files = copies(full, folder, args.copies * 10)
        bench_reading(full_files, f"full array 256x256 ({len(full_files)})", 1, args.repeat)
        print("read_image(rows=...) on 256x256 frames:")
        bench_rows(full_files, args.repeat)
        print("TanSip (real headers, subarray and full array mixed):")
        bench_tansip(sub["bcd"] + [p for p in full if "unc" not in p.name], args.frames, args.astropy_frames,
                     args.repeat)  # fmt: skip
        print("measure() on what read_image returns:")
        bench_measure(sub["bcd"][0], sub["bunc"][0], sub["bimsk"][0], FULL_DIR / full[1].name, full[2], args.repeat)


if __name__ == "__main__":
    main()
