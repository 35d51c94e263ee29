"""wider conversation ids: a direct conversation's id ("dm:" + both user ids percent-encoded)
takes up to 3 + 2 x 128 x 12 + 1 = 3,076 characters (a 4-byte character encodes to 12), not
800: two users with long non-ASCII ids (e.g. 45 CJK characters each) were refused by
PostgreSQL on their first direct message. SQLite does not enforce VARCHAR lengths, so only
PostgreSQL's columns change (widening a VARCHAR there rewrites nothing).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 21:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD, NEW = 800, 3076
COLUMNS = (("conversations", "id"), ("conversation_members", "conversation_id"),
           ("conversation_messages", "conversation_id"), ("messages", "conversation_id"))


def _resize(old: int, new: int) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(length=new),
                        existing_type=sa.String(length=old))


def upgrade() -> None:
    _resize(OLD, NEW)


def downgrade() -> None:
    _resize(NEW, OLD)
