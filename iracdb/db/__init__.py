"""The database layer: SQLAlchemy models, engine set-up, Alembic migration helpers and queries.

Never imports the photometry package (house style: imports flow one way).
"""
