"""Usage counters: what the ledger recorded per tenant, UTC day and agent, filled in from the entries
already there; and an index for counting the sessions still in force.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_DAY_MICROS = 86_400_000_000
_COLUMNS = ("tenant_id", "day", "agent_id", "actions", "denied", "errors", "flagged", "vault", "charged")


def upgrade() -> None:
    op.create_table(
        "usage_days",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("agent_id", sa.String(length=200), nullable=False),
        sa.Column("actions", sa.BigInteger(), nullable=False),
        sa.Column("denied", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("flagged", sa.BigInteger(), nullable=False),
        sa.Column("vault", sa.BigInteger(), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_usage_days_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "day", "agent_id", name=op.f("pk_usage_days")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sessions_tenant_id_expires_at"), ["tenant_id", "expires_at"], unique=False
        )
    # The entries recorded before this revision, counted once.
    entries = sa.table(
        "ledger_entries",
        *(sa.column(name) for name in ("tenant_id", "agent_id", "status", "flagged", "tool")),
        sa.column("created_at", sa.BigInteger()),
        sa.column("charged", sa.BigInteger()),
    )
    usage = sa.table("usage_days", *(sa.column(name) for name in _COLUMNS))
    e = entries.c
    day, agent = e.created_at // _DAY_MICROS, sa.func.coalesce(e.agent_id, "")

    def tally(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    counted = sa.select(
        e.tenant_id,
        day,
        agent,
        sa.func.count(),
        tally(e.status == "denied"),
        tally(e.status == "error"),
        tally(e.flagged == sa.true()),
        tally(e.tool == "vault"),
        sa.func.sum(e.charged),
    ).group_by(e.tenant_id, day, agent)
    op.execute(sa.insert(usage).from_select(list(_COLUMNS), counted))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_tenant_id_expires_at"))
    op.drop_table("usage_days")
