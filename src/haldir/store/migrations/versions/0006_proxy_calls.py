"""Governed calls admitted and not yet finished, so that a call whose outcome was lost in a crash is
recorded as "outcome unknown" instead of going missing.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proxy_calls",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=200), nullable=False),
        sa.Column("tool", sa.String(length=200), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("admitted_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_proxy_calls_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "call_id", name=op.f("pk_proxy_calls")),
    )
    with op.batch_alter_table("proxy_calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_proxy_calls_admitted_at"), ["admitted_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("proxy_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_proxy_calls_admitted_at"))
    op.drop_table("proxy_calls")
