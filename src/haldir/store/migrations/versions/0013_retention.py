"""Retention: a payment authorization neither captured nor voided within its TTL becomes `expired`;
indexes let the retention sweep find lapsed authorizations and old Idempotency-Keys without a scan.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_BEFORE = "status IN ('authorized', 'captured', 'voided')"
_AFTER = "status IN ('authorized', 'captured', 'voided', 'expired')"


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_payments_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_payments_status"), _AFTER)
        batch_op.create_index(
            batch_op.f("ix_payments_status_created_at"), ["status", "created_at"], unique=False
        )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    # An expired authorization released what it held beyond its reported costs, as a capture of those
    # would have: it goes back as a capture, the ledger entry of its expiry stays.
    op.execute("UPDATE payments SET status = 'captured' WHERE status = 'expired'")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_status_created_at"))
        batch_op.drop_constraint(batch_op.f("ck_payments_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_payments_status"), _BEFORE)
