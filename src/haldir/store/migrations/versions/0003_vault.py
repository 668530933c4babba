"""The Vault (master key versions, wrapped data keys, secrets and their sealed versions), payment
authorizations, and the signed budget charge of each ledger entry.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.tenant_id"], name=op.f(f"fk_{table}_tenant_id_tenants")
    )


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:  # secrets are named by text
        batch_op.alter_column(
            "resource_id",
            existing_type=sa.String(length=64),
            type_=sa.String(length=255),
            existing_nullable=False,
        )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("charged", sa.BigInteger(), server_default="0", nullable=False))

    op.create_table(
        "vault_master_keys",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("check_value", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_vault_master_keys")),
        sa.UniqueConstraint("check_value", name=op.f("uq_vault_master_keys_check_value")),
    )
    op.create_table(
        "vault_data_keys",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("master_version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _tenant_fk("vault_data_keys"),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_vault_data_keys")),
    )
    with op.batch_alter_table("vault_data_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vault_data_keys_master_version"), ["master_version"], unique=False
        )

    op.create_table(
        "secrets",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("access_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_accessed_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        _tenant_fk("secrets"),
        sa.PrimaryKeyConstraint("tenant_id", "name", name=op.f("pk_secrets")),
    )
    op.create_table(
        "secret_versions",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("scope_required", sa.String(length=200), nullable=False),
        sa.Column("data_key_version", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("value_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _tenant_fk("secret_versions"),
        sa.PrimaryKeyConstraint("tenant_id", "name", "version", name=op.f("pk_secret_versions")),
    )
    op.create_table(
        "payments",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=True),
        sa.Column("reported", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "amount > 0 AND captured >= 0 AND captured <= amount AND reported >= 0 "
            "AND reported <= COALESCE(captured, amount)",
            name=op.f("ck_payments_amounts"),
        ),
        sa.CheckConstraint("status IN ('authorized', 'captured', 'voided')", name=op.f("ck_payments_status")),
        _tenant_fk("payments"),
        sa.PrimaryKeyConstraint("tenant_id", "payment_id", name=op.f("pk_payments")),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payments_tenant_id_created_at_payment_id"),
            ["tenant_id", "created_at", "payment_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_payments_tenant_id_session_id_created_at_payment_id"),
            ["tenant_id", "session_id", "created_at", "payment_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_tenant_id_session_id_created_at_payment_id"))
        batch_op.drop_index(batch_op.f("ix_payments_tenant_id_created_at_payment_id"))
    op.drop_table("payments")
    op.drop_table("secret_versions")
    op.drop_table("secrets")
    with op.batch_alter_table("vault_data_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vault_data_keys_master_version"))
    op.drop_table("vault_data_keys")
    op.drop_table("vault_master_keys")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_column("charged")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.alter_column(
            "resource_id",
            existing_type=sa.String(length=255),
            type_=sa.String(length=64),
            existing_nullable=False,
        )
