"""The database layer: SQLAlchemy models, engine set-up, Alembic migration helpers, queries, and the backends
(:mod:`iracdb.db.backend`: what differs between SQLite and PostgreSQL, behind one interface).

Never imports the photometry package (house style: imports flow one way).
"""
