"""``iracdb reduce``: measure every image of the chosen AORs under a named run, record it, summarise each AOR.

One job per module:

- :mod:`~iracdb.reduce.options`: what a run measures and how (:class:`ReduceOptions`, :class:`Target`), and how it
  executes (:class:`Execution`); targets files and sky positions.
- :mod:`~iracdb.reduce.worker`: FITS files in, columns of numbers out (:func:`measure_chunk`); no database.
- :mod:`~iracdb.reduce.run`: the run's life (:func:`reduce`): plan, record provenance, lock, execute the work units
  on :mod:`iracdb.workers` (this process, a process pool or Dask), finish.
- :mod:`~iracdb.reduce.store`: the writer (one transaction per unit; binary COPY on PostgreSQL).

The names below are imported lazily, so that a worker process that imports :mod:`iracdb.reduce.worker` loads no
database library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iracdb.reduce.options import Execution, ReduceOptions, Target, parse_sky_position, read_targets_file
    from iracdb.reduce.run import RunReport, git_revision, mask_command_line, reduce, software_versions
    from iracdb.reduce.store import aor_facts
    from iracdb.reduce.worker import Chunk, ChunkResult, measure_chunk

_WHERE = {
    "Execution": "options", "ReduceOptions": "options", "Target": "options", "parse_sky_position": "options",
    "read_targets_file": "options", "RunReport": "run", "git_revision": "run",
    "mask_command_line": "run", "reduce": "run", "software_versions": "run", "aor_facts": "store",
    "Chunk": "worker", "ChunkResult": "worker", "measure_chunk": "worker",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'iracdb.reduce' has no attribute {name!r}")
    return getattr(importlib.import_module(f"iracdb.reduce.{module}"), name)


__all__ = [
    "Chunk",
    "ChunkResult",
    "Execution",
    "ReduceOptions",
    "RunReport",
    "Target",
    "aor_facts",
    "git_revision",
    "mask_command_line",
    "measure_chunk",
    "parse_sky_position",
    "read_targets_file",
    "reduce",
    "software_versions",
]
