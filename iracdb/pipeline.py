"""The 2018 pipeline's one-call interface: lists of BCD files in, per-AOR and per-image tables out.

The 2018 pipeline was called as ``pipeline.run(AORs, sky, r, rIn, rOut, ...)`` with ``AORs`` a list of lists of
BCD file names, one list per AOR. :func:`photometry` takes the same list, catalogues exactly those files (and the
uncertainty and mask files beside each, which the archive path reads too) into a temporary in-memory archive,
reduces them as one run and returns its tables: the numbers are those of ``iracdb ingest`` + ``iracdb reduce`` on
the same files, bit for bit, because it is that code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iracdb.errors import BadOption

if TYPE_CHECKING:
    from astropy.table import Table

    from iracdb.api import Archive, ProgressArg

#: A science file's name -> the names of its uncertainty and mask files (the archive's naming).
_COMPANIONS = ((re.compile(r"_cbcd(\.fits(?:\.gz)?)$"), ("_cbunc", "_bimsk")),
               (re.compile(r"_bcd(\.fits(?:\.gz)?)$"), ("_bunc", "_bimsk")),
               (re.compile(r"_sub2d(\.fits(?:\.gz)?)$"), ("_unc2d", "_msk2d")))


def photometry(
    AORs: Sequence[Sequence[str | os.PathLike[str]]],
    target: Any = "auto",
    *,
    db: str | None = None,
    run_name: str = "photometry",
    progress: ProgressArg = False,
    **options: Any,
) -> tuple[Table, Table, Table]:
    """Aperture photometry of the given files, one list per AOR, as the 2018 pipeline's ``run`` did.

    Parameters
    ----------
    AORs : list of lists of paths
        The science files (``_bcd`` or ``_cbcd``), one list per AOR. Exactly these files are measured (never the
        rest of their folders); each one's uncertainty (``_bunc``/``_cbunc``) and mask (``_bimsk``) files are
        catalogued with it when they are beside it, as the archive path would.
    target : str, (float, float), SkyCoord, Table or list
        Where to measure (as :meth:`iracdb.Archive.reduce`; default ``"auto"``, the brightest source near each
        image's pointing). ``(ra_deg, dec_deg)`` in degrees.
    db : str, optional
        A database URL or path to keep the archive in. Default: a temporary in-memory SQLite database, gone when
        this returns (nothing is written to disk).
    run_name : str
        The run's name (in a ``db`` kept, a name already used with other parameters is refused).
    progress : bool, callable or None
        A progress bar (default none; None: on a terminal or in Jupyter).
    **options
        Any option of :meth:`iracdb.Archive.reduce`: ``radius`` [px], ``annulus`` (IN, OUT) [px], ``centroid``,
        ``background``, ``corrections``, ``aperture_correction``, ``reject``, ``subarray``, ``workers`` ...
        (``file_type`` follows the files given: ``cbcd`` when they are CBCDs). With ``workers`` > 1 (the default:
        the CPU cores), a script run as ``python file.py`` needs ``if __name__ == "__main__":`` (see
        :mod:`iracdb.api`).

    Returns
    -------
    aor_data : astropy.table.Table
        One row per AOR x channel x target (the export's ``RUN_aor_data``): mean flux [mJy], its error, spread
        [%], times [MJD] ...; the column ``aor_index`` is the AOR's position in ``AORs``.
    img_data : astropy.table.Table
        One row per image and target (the export's ``RUN_img_data``), with ``aor_index``.
    problem_aors : astropy.table.Table
        ``aor_index``, ``aorkey`` (masked when unknown) and ``reason``: AORs with files that could not be read or
        catalogued, and AORs without a single usable image.

    Raises
    ------
    iracdb.errors.BadOption
        ``AORs`` is not a list of lists of paths, a file does not exist, or an option is wrong.
    """
    from iracdb.api import open as open_archive

    groups = _check_aors(AORs)
    files = [path for group in groups for path in group]
    options.setdefault("file_type", "cbcd" if all("_cbcd" in Path(f).name for f in files) else "bcd")
    with open_archive(db if db is not None else "sqlite://") as archive:
        summary = archive.ingest([*files, *_companions(files)], workers=options.get("workers"), progress=progress)
        keys = _aorkeys_of(archive, groups)
        catalogued = sorted({key for group in keys for key in group})
        if not catalogued:
            raise BadOption("none of the files could be catalogued: " + "; ".join(
                f"{path}: {reason}" for path, reason in summary.rejected[:5]))
        run = archive.reduce(run_name, target, aor=catalogued, progress=progress, **options)
        aor_data, img_data = run.aors(), run.images()
        _add_aor_index(aor_data, keys)
        _add_aor_index(img_data, keys)
        problems = _problems(groups, keys, summary.rejected, aor_data)
    return aor_data, img_data, problems


def _check_aors(AORs: Any) -> list[list[str]]:
    if isinstance(AORs, str | bytes | os.PathLike) or not isinstance(AORs, Sequence) or not AORs:
        raise BadOption("AORs is a list of lists of FITS files, one list per AOR (e.g. [[bcd1, bcd2, ...]])")
    groups = []
    for index, group in enumerate(AORs):
        if isinstance(group, str | bytes | os.PathLike) or not isinstance(group, Sequence) or not group:
            raise BadOption(f"AORs[{index}] is not a list of FITS files: AORs is a list of lists, one per AOR")
        paths = [os.path.realpath(os.fspath(path)) for path in group]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise BadOption(f"AORs[{index}]: no such file: {missing[0]}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        groups.append(paths)
    return groups


def _companions(files: Sequence[str]) -> list[str]:
    """The uncertainty and mask files beside the given science files (those that exist), as the archive has."""
    found: set[str] = set()
    for path in files:
        for pattern, suffixes in _COMPANIONS:
            match = pattern.search(path)
            if match:
                stem = path[:match.start()]
                found.update(p for p in (stem + s + match.group(1) for s in suffixes) if os.path.isfile(p))
                break
    return sorted(found - set(files))


def _aorkeys_of(archive: Archive, groups: list[list[str]]) -> list[set[int]]:
    """The AORKEYs of the catalogued files of each group."""
    from sqlalchemy import select

    from iracdb.db.models import Exposure, File

    by_path: dict[str, int] = {}
    with archive.engine().connect() as conn:
        paths = [path for group in groups for path in group]
        for start in range(0, len(paths), 500):
            query = (select(File.path, Exposure.aorkey).join(Exposure, Exposure.id == File.exposure_id)
                     .where(File.path.in_(paths[start:start + 500])))
            by_path.update({path: aorkey for path, aorkey in conn.execute(query)})
    return [{by_path[path] for path in group if path in by_path} for group in groups]


def _add_aor_index(table: Table, keys: list[set[int]]) -> None:
    index_of = {key: index for index, group in enumerate(keys) for key in group}
    table.add_column([index_of.get(int(key), -1) for key in table["aorkey"]], name="aor_index", index=0)
    table["aor_index"].description = "position of the AOR in the AORs list given"


def _problems(groups: list[list[str]], keys: list[set[int]], rejected: list[tuple[str, str]],
              aor_data: Table) -> Table:
    import numpy as np
    from astropy.table import Column, MaskedColumn, Table

    rejected_by_path = dict(rejected)
    rows: list[tuple[int, int | None, str]] = []
    for index, (group, aorkeys) in enumerate(zip(groups, keys, strict=True)):
        bad = [f"{Path(p).name}: {rejected_by_path[p]}" for p in group if p in rejected_by_path]
        aorkey = min(aorkeys) if aorkeys else None
        if bad:
            rows.append((index, aorkey, f"{len(bad)} file(s) not catalogued: " + "; ".join(bad[:3])))
        if len(aorkeys) > 1:
            rows.append((index, aorkey, f"files of several AORs in one list: {sorted(aorkeys)}"))
    for row in aor_data:
        if int(row["n_used"]) == 0:
            rows.append((int(row["aor_index"]), int(row["aorkey"]),
                         f"no usable image in channel {row['channel']} for target {row['target']!s} "
                         f"({row['n_flagged']} flagged, {row['n_rejected']} rejected)"))
    rows.sort(key=lambda row: row[0])
    return Table([
        Column([row[0] for row in rows], name="aor_index", dtype=np.int64,
               description="position of the AOR in the AORs list given"),
        MaskedColumn([row[1] or 0 for row in rows], name="aorkey", dtype=np.int64,
                     mask=[row[1] is None for row in rows], description="AORKEY (masked when unknown)"),
        Column([row[2] for row in rows], name="reason", dtype=str, description="what went wrong"),
    ])


__all__ = ["photometry"]
