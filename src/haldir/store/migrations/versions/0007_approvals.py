"""Approval rules and approval requests: spends and calls that wait for a person's decision.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_rules",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=True),
        sa.Column("tool", sa.String(length=200), nullable=True),
        sa.Column("agent_id", sa.String(length=200), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_approval_rules_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "rule_id", name=op.f("pk_approval_rules")),
    )
    with op.batch_alter_table("approval_rules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_approval_rules_tenant_id_created_at"), ["tenant_id", "created_at"], unique=False
        )
    op.create_table(
        "approvals",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("approval_id", sa.String(length=64), nullable=False),
        sa.Column("binding", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=200), nullable=False),
        sa.Column("tool", sa.String(length=200), nullable=False),
        sa.Column("arguments_sha256", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("rule_ids", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=True),
        sa.Column("requested_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("consumed_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'denied', 'expired', 'consumed')",
            name=op.f("ck_approvals_status"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_approvals_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "approval_id", name=op.f("pk_approvals")),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_approvals_tenant_id_binding_requested_at"),
            ["tenant_id", "binding", "requested_at"],
            unique=False,
        )
        batch_op.create_index(
            "uq_approvals_open_binding",
            ["tenant_id", "binding"],
            unique=True,
            sqlite_where=sa.text("status IN ('pending', 'approved')"),
            postgresql_where=sa.text("status IN ('pending', 'approved')"),
        )
        batch_op.create_index(
            batch_op.f("ix_approvals_tenant_id_status_requested_at_approval_id"),
            ["tenant_id", "status", "requested_at", "approval_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_approvals_status_expires_at"), ["status", "expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approvals_status_expires_at"))
        batch_op.drop_index(batch_op.f("ix_approvals_tenant_id_status_requested_at_approval_id"))
        batch_op.drop_index("uq_approvals_open_binding")
        batch_op.drop_index(batch_op.f("ix_approvals_tenant_id_binding_requested_at"))
    op.drop_table("approvals")
    with op.batch_alter_table("approval_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approval_rules_tenant_id_created_at"))
    op.drop_table("approval_rules")
