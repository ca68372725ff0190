"""mask the secrets that runs recorded by an older iracdb may hold in their command line or message

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:30:00

iracdb has masked database passwords in what it records since the first PostgreSQL sessions, but a run recorded
before then may hold one in ``runs.command_line`` (``--db postgresql://user:secret@host/db``, ``?password=...``)
or in ``runs.message``, where anyone who may read the archive (``iracdb sql``, a reader role) could read it. This
revision masks them with the same rule iracdb applies to everything it shows or stores
(:func:`iracdb.db.engine.mask_secrets`). Masking cannot be undone: the downgrade leaves the text as it is.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from iracdb.db.engine import mask_secrets

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    for column in ("command_line", "message"):
        rows = bind.execute(sa.text(f"SELECT id, {column} FROM runs WHERE {column} IS NOT NULL")).all()
        changed = [{"id": run_id, "text": mask_secrets(value)} for run_id, value in rows
                   if mask_secrets(value) != value]
        if changed:
            bind.execute(sa.text(f"UPDATE runs SET {column} = :text WHERE id = :id"), changed)


def downgrade() -> None:
    pass  # a masked secret is gone
