"""Per-tenant anomaly settings: the built-in burst detector's threshold and window, or the detector off.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anomaly_settings",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("burst_max_actions", sa.Integer(), nullable=True),
        sa.Column("burst_window_seconds", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_anomaly_settings_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_anomaly_settings")),
    )


def downgrade() -> None:
    op.drop_table("anomaly_settings")
