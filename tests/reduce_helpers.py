"""Query helpers shared by the reduce test modules: a run's record, its rows and its summaries, in a fixed order."""

from __future__ import annotations

from sqlalchemy import Engine, select, text

from iracdb.db.models import MEASUREMENTS, AorSummary, Run

#: Every measurement column that is a result (not a database id).
MEASUREMENT_COLUMNS = tuple(c.name for c in MEASUREMENTS.columns if c.name not in ("id", "run_id", "input_id"))
#: Every summary column that is a result (not a database id).
SUMMARY_COLUMNS = tuple(c.name for c in AorSummary.__table__.columns if c.name not in ("id", "run_id"))
#: The canonical order of a run's rows.
ORDER = ("aorkey", "channel", "expid", "dcenum", "plane", "target_index", "aperture_id")


def sql_rows(engine: Engine, sql: str, **params: object) -> list[dict]:
    """The rows of a SQL query as dicts."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def run_record(engine: Engine, name: str) -> dict:
    """The ``runs`` row of ``name``."""
    with engine.connect() as conn:
        return dict(conn.execute(select(Run).where(Run.name == name)).mappings().one())


def measurements(engine: Engine, name: str) -> list[dict]:
    """A run's measurement rows (every result column; no ids), in the canonical order."""
    table = MEASUREMENTS
    with engine.connect() as conn:
        run_id = conn.execute(select(Run.id).where(Run.name == name)).scalar_one()
        query = (select(*(table.c[n] for n in MEASUREMENT_COLUMNS)).where(table.c.run_id == run_id)
                 .order_by(*(table.c[n] for n in ORDER)))
        return [dict(r._mapping) for r in conn.execute(query)]


def summaries(engine: Engine, name: str) -> list[dict]:
    """A run's summary rows (every result column; no ids), ordered by AOR, channel, target."""
    table = AorSummary.__table__
    with engine.connect() as conn:
        run_id = conn.execute(select(Run.id).where(Run.name == name)).scalar_one()
        query = (select(*(table.c[n] for n in SUMMARY_COLUMNS)).where(table.c.run_id == run_id)
                 .order_by(table.c.aorkey, table.c.channel, table.c.target_index, table.c.aperture_id))
        return [dict(r._mapping) for r in conn.execute(query)]
