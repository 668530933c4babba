"""The proxy: upstreams, tool pins, policies, and the rate-limit and spend-limit counters.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.tenant_id"], name=op.f(f"fk_{table}_tenant_id_tenants")
    )


def upgrade() -> None:
    op.create_table(
        "proxy_upstreams",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("command", sa.Text(), nullable=True),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("transport IN ('http', 'stdio')", name=op.f("ck_proxy_upstreams_transport")),
        _tenant_fk("proxy_upstreams"),
        sa.PrimaryKeyConstraint("tenant_id", "name", name=op.f("pk_proxy_upstreams")),
    )
    op.create_table(
        "proxy_tools",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("upstream", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("pinned_hash", sa.String(length=64), nullable=False),
        sa.Column("current_hash", sa.String(length=64), nullable=False),
        sa.Column("pending_definition", sa.JSON(), nullable=True),
        sa.Column("first_seen_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("removed_at", sa.BigInteger(), nullable=True),
        _tenant_fk("proxy_tools"),
        sa.PrimaryKeyConstraint("tenant_id", "upstream", "name", name=op.f("pk_proxy_tools")),
    )
    op.create_table(
        "proxy_policies",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _tenant_fk("proxy_policies"),
        sa.PrimaryKeyConstraint("tenant_id", "policy_id", name=op.f("pk_proxy_policies")),
    )
    with op.batch_alter_table("proxy_policies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_proxy_policies_tenant_id_created_at"), ["tenant_id", "created_at"], unique=False
        )
    op.create_table(
        "proxy_rate_counters",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        _tenant_fk("proxy_rate_counters"),
        sa.PrimaryKeyConstraint("tenant_id", "policy_id", "subject", name=op.f("pk_proxy_rate_counters")),
    )
    op.create_table(
        "proxy_spend_counters",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("spent >= 0", name=op.f("ck_proxy_spend_counters_spent")),
        _tenant_fk("proxy_spend_counters"),
        sa.PrimaryKeyConstraint("tenant_id", "policy_id", "subject", name=op.f("pk_proxy_spend_counters")),
    )


def downgrade() -> None:
    op.drop_table("proxy_spend_counters")
    op.drop_table("proxy_rate_counters")
    with op.batch_alter_table("proxy_policies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_proxy_policies_tenant_id_created_at"))
    op.drop_table("proxy_policies")
    op.drop_table("proxy_tools")
    op.drop_table("proxy_upstreams")
