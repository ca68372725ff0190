"""The log of an export (``RUN_log.txt``): a human-readable account of a run, like the 2018 pipeline's log.

Formatting only: :func:`write_log` is given what :mod:`iracdb.export` fetched from the database (the provenance,
the per-AOR rows, the flag counts, the input files) and writes the sections in order: run, parameters, per-AOR
results, problem AORs, comments, provenance, inputs and the files of the export.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import IO, Any, NamedTuple

#: Images per flag name of each (aorkey, channel, target_index, aperture_id).
FlagCounts = Mapping[tuple[int, int, int, int], Mapping[str, int]]


class AorLine(NamedTuple):
    """The ``aor_photometry`` columns of one AOR x channel x target (its best aperture) that the log shows."""

    aorkey: int
    channel: int
    target_index: int
    aperture_id: int
    target: str | None
    object: str | None
    n_used: int
    n_total: int
    n_rejected: int
    n_flagged: int
    flux_mjy: float | None
    flux_err_mjy: float | None
    spread_pct: float | None


#: The columns of :class:`AorLine`, in its order.
AOR_LINE_COLUMNS = AorLine._fields


def write_log(log: IO[str], prov: dict[str, Any], export_info: dict[str, Any], aor_lines: Iterable[AorLine],
              flag_counts: FlagCounts, inputs: Iterable[dict[str, Any]]) -> None:
    """Write a run's log.

    Parameters
    ----------
    log : text file
        Where to write.
    prov : dict
        The run's provenance (:func:`iracdb.export.run_provenance` without ``inputs``).
    export_info : dict
        What the export wrote: ``date``, ``format``, ``files`` (names), ``n_aor_rows``, ``n_image_rows``.
    aor_lines : iterable of AorLine
        The run's per-AOR rows, in the order of the ``aor_photometry`` view (fluxes in mJy, spread in %).
    flag_counts : mapping
        Images per flag name of each (aorkey, channel, target_index, aperture_id).
    inputs : iterable of dict
        Every input file (``path``, ``kind``, ``size_bytes`` [bytes], ``sha256``), by path.
    """
    record = prov["run"]
    log.write(f"iracdb reduction run {record['name']!r}: log\n")
    log.write(f"exported: {export_info['date']} by iracdb {export_info['iracdb_version']} "
              f"({export_info['format']})\n\n")
    log.write(_run_section(record))
    log.write(_parameters_section(prov))
    problems = _write_aor_results(log, aor_lines, flag_counts)
    problems += _unit_problems(prov["units"])
    log.write("\n== Problem AORs\n")
    log.write("".join(problems) if problems else "  none\n")
    log.write(_comments_section(record["message"], prov["resolved"]))
    log.write(_provenance_section(prov))
    _write_inputs(log, prov["inputs_summary"], inputs)
    log.write(_files_section(export_info))


def _fmt(value: Any, spec: str = ".6g") -> str:
    """A value as text: ``-`` for none, a float with ``spec``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _run_section(record: dict[str, Any]) -> str:
    lines = ["== Run\n"]
    for key in ("status", "created_at", "started_at", "finished_at"):
        lines.append(f"{key.replace('_at', '').replace('_', ' '):<10} {_fmt(record[key])}\n")
    lines.append(f"units      {record['n_units_done']} of {record['n_units']} AOR x channel units complete\n")
    lines.append(f"images     {record['n_images']} image rows, {record['n_flagged']} flagged, "
                 f"{record['n_outliers']} outliers\n")
    return "".join(lines)


def _parameters_section(prov: dict[str, Any]) -> str:
    params = prov["parameters"] or {}
    lines = [
        "\n== Parameters\n",
        f"file type          {params.get('file_type')}\n",
        f"selection          aorkeys={params.get('aorkeys') or 'all'} object={params.get('object')} "
        f"channel={params.get('channel') or 'all'}\n",
        f"aperture radius    {params.get('radius_px')} px\n",
        f"annulus radii      {params.get('annulus_in_px')} - {params.get('annulus_out_px')} px\n",
        f"centroid           {params.get('centroid')} (max shift {params.get('max_shift_px')} px)\n",
        f"background         {params.get('background')}\n",
        f"corrections        {params.get('corrections')}\n",
        f"aperture corr.     {params.get('aperture_correction')}\n",
        f"reject rule        {params.get('reject')}\n",
        f"best aperture by   {params.get('best_by', 'binned-rms')} (bin {params.get('best_bin', 64)} images); the "
        "per-AOR results below are the best aperture's\n",
        f"subarray mode      {params.get('subarray')}\n",
        f"parameter hash     {prov['params_hash']}\n",
        "targets:\n",
        *map(_target_line, prov["targets"]),
    ]
    resolved = (prov["resolved"] or {}).get("per_mission_channel", {})
    if resolved:
        lines.append("as applied, per mission and channel:\n")
        for key, value in sorted(resolved.items()):
            lines.append(f"  {key}: correction {value.get('correction')}; aperture correction "
                         f"{_fmt(value.get('aperture_correction'))} ({value.get('aperture_correction_source')})\n")
    lines.append(f"channels: {', '.join(str(c) for c in prov['channels']) or '-'}; "
                 f"missions: {', '.join(prov['missions']) or '-'}\n")
    return "".join(lines)


def _target_line(target: dict[str, Any]) -> str:
    where = ("auto (brightest source near the commanded pointing)" if target["ra_deg"] is None
             else f"RA {target['ra_deg']:.7f} deg, Dec {target['dec_deg']:+.7f} deg (ICRS)")
    only = "".join(f", only {k} {target[k]}" for k in ("aorkey", "object") if target[k] is not None)
    return f"  [{target['target_index']}] {target['name']}: {where}{only}\n"


def _write_aor_results(log: IO[str], aor_lines: Iterable[AorLine], flag_counts: FlagCounts) -> list[str]:
    """The per-AOR table, one line per row as the rows stream past; the problem lines of its AORs."""
    log.write("\n== Per-AOR results (flux = mean of the used images; err = error of the mean; "
              "spread = 100 std / mean)\n")
    log.write(f"{'aorkey':>10} {'ch':>2} {'target':<16} {'object':<20} {'used/total':>10} {'flux_mJy':>14} "
              f"{'err_mJy':>11} {'spread_%':>8}\n")
    problems: list[str] = []
    for row in aor_lines:
        log.write(f"{row.aorkey:>10} {row.channel:>2} {_fmt(row.target):<16.16} {_fmt(row.object):<20.20} "
                  f"{f'{row.n_used}/{row.n_total}':>10} {_fmt(row.flux_mjy, '.6f'):>14} "
                  f"{_fmt(row.flux_err_mjy, '.6f'):>11} {_fmt(row.spread_pct, '.3f'):>8}\n")
        counts = flag_counts.get((int(row.aorkey), int(row.channel), int(row.target_index), int(row.aperture_id)),
                                 {})
        problem = _aor_problem(row, counts)
        if problem:
            problems.append(problem)
    return problems


def _aor_problem(row: AorLine, counts: Mapping[str, int]) -> str | None:
    """What is wrong with an AOR's result (no usable image, flagged images, outliers), or None."""
    what = []
    if not row.n_used:
        what.append("no usable image")
    # Plane 0 of a subarray cube (first_frame) is kept out by design: listed only beside a real problem.
    problems = {name: n for name, n in counts.items() if name != "outlier"}
    listed = ", ".join(f"{name} x{n}" for name, n in problems.items()) if set(problems) - {"first_frame"} else ""
    if listed:
        what.append(f"flagged images: {listed} ({row.n_flagged} of {row.n_total} kept out of the statistics)")
    if row.n_rejected:
        what.append(f"{row.n_rejected} outlier(s) rejected")
    if not what:
        return None
    return f"  {row.aorkey} ch{row.channel} target {row.target!r}: {'; '.join(what)}\n"


def _unit_problems(units: list[dict[str, Any]]) -> list[str]:
    """The units not reduced, then the complete units without an image row."""
    problems = [f"  {u['aorkey']} ch{u['channel']}: not reduced (unit {u['status']})\n"
                for u in units if u["status"] != "complete"]
    problems += [f"  {u['aorkey']} ch{u['channel']}: complete with no image rows\n"
                 for u in units if u["status"] == "complete" and not u["n_images"]]
    return problems


def _comments_section(message: str | None, resolved: dict[str, Any] | None) -> str:
    lines = ["\n== Comments\n", f"  {message}\n" if message else "  none\n"]
    lines += [f"  note: {note}\n" for note in (resolved or {}).get("notes", [])]
    return "".join(lines)


def _provenance_section(prov: dict[str, Any]) -> str:
    software = prov["software"]
    lines = [
        "\n== Provenance\n",
        f"iracdb version     {software['iracdb_version']}\n",
        f"git revision       {software['git_revision'] or '-'}\n",
        *(f"  {package:<16} {version}\n" for package, version in sorted(software["versions"].items())),
        *(f"{key.replace('_', ' '):<18} {_fmt(prov[key])}\n"
          for key in ("host", "user", "pid", "execution", "command_line", "database")),
    ]
    return "".join(lines)


def _write_inputs(log: IO[str], summary: dict[str, Any], inputs: Iterable[dict[str, Any]]) -> None:
    """The inputs' counts, then every input file (streamed: a run may have millions)."""
    log.write(f"\n== Inputs: {summary['count']} files, {summary['total_bytes']} bytes\n")
    for kind, info in summary["by_kind"].items():
        log.write(f"  {kind}: {info['count']} files, {info['bytes']} bytes\n")
    log.write(f"{'size_bytes':>12} {'kind':<6} {'sha256':<64} path\n")
    for item in inputs:
        log.write(f"{item['size_bytes']:>12} {item['kind']:<6} {item['sha256']:<64} {item['path']}\n")


def _files_section(export_info: dict[str, Any]) -> str:
    lines = ["\n== Files of this export\n", *(f"  {name}\n" for name in export_info["files"])]
    lines.append(f"  rows: {export_info['n_aor_rows']} per-AOR, {export_info['n_image_rows']} per-image\n")
    return "".join(lines)


__all__ = ["AOR_LINE_COLUMNS", "AorLine", "FlagCounts", "write_log"]
