"""Governed calls of local tools: an admitted call keeps what its finish, arriving in another request,
needs (`details`), and a closed call keeps its row for a while (`closed_at`, `outcome`) so a second
finish is refused as a conflict rather than answered as unknown.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("proxy_calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("details", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("closed_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.String(length=16), nullable=True))
        batch_op.drop_index(batch_op.f("ix_proxy_calls_admitted_at"))
        batch_op.create_index(
            batch_op.f("ix_proxy_calls_closed_at_admitted_at"), ["closed_at", "admitted_at"], unique=False
        )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM proxy_calls WHERE closed_at IS NOT NULL"))
    with op.batch_alter_table("proxy_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_proxy_calls_closed_at_admitted_at"))
        batch_op.create_index(batch_op.f("ix_proxy_calls_admitted_at"), ["admitted_at"], unique=False)
        batch_op.drop_column("outcome")
        batch_op.drop_column("closed_at")
        batch_op.drop_column("details")
