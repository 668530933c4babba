"""The ledger: entries, Merkle subtree nodes, per-tenant heads, signed checkpoints, the log key,
anomaly rules and the event outbox.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_keys",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("vkey", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_log_keys")),
    )
    op.create_table(
        "checkpoints",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_checkpoints_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "tree_size", name=op.f("pk_checkpoints")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("leaf_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.String(length=200), nullable=True),
        sa.Column("tool", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_ledger_entries_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "leaf_index", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("tenant_id", "entry_id", name=op.f("uq_ledger_entries_tenant_id_entry_id")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_tenant_id_agent_id_leaf_index"),
            ["tenant_id", "agent_id", "leaf_index"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_tenant_id_created_at"), ["tenant_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_tenant_id_session_id_leaf_index"),
            ["tenant_id", "session_id", "leaf_index"],
            unique=False,
        )

    op.create_table(
        "ledger_heads",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.LargeBinary(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_ledger_heads_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_ledger_heads")),
    )
    op.create_table(
        "merkle_nodes",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_merkle_nodes_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "level", "idx", name=op.f("pk_merkle_nodes")),
    )
    op.create_table(
        "anomaly_rules",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_anomaly_rules_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "rule_id", name=op.f("pk_anomaly_rules")),
    )
    op.create_table(
        "events",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_events_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "event_id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_tenant_id_delivered_at"), ["tenant_id", "delivered_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_tenant_id_delivered_at"))

    op.drop_table("events")
    op.drop_table("anomaly_rules")
    op.drop_table("merkle_nodes")
    op.drop_table("ledger_heads")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_tenant_id_session_id_leaf_index"))
        batch_op.drop_index(batch_op.f("ix_ledger_entries_tenant_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_ledger_entries_tenant_id_agent_id_leaf_index"))

    op.drop_table("ledger_entries")
    op.drop_table("checkpoints")
    op.drop_table("log_keys")
