"""Logged costs are records of what happened: a session's `spent` may pass its limit.

Payment authorizations and the gateway's reservations still never overspend (their conditional UPDATEs
check the limit); only the database's own `spent <= spend_limit` check goes, `spent >= 0` stays.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite cannot alter a CHECK constraint: batch mode copies the table (nothing references it).
    with op.batch_alter_table("sessions", recreate="auto") as batch_op:
        batch_op.drop_constraint(op.f("ck_sessions_budget"), type_="check")
        batch_op.create_check_constraint(op.f("ck_sessions_spent"), "spent >= 0")


def downgrade() -> None:
    with op.batch_alter_table("sessions", recreate="auto") as batch_op:
        batch_op.drop_constraint(op.f("ck_sessions_spent"), type_="check")
        batch_op.create_check_constraint(op.f("ck_sessions_budget"), "spent >= 0 AND spent <= spend_limit")
