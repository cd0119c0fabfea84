"""Reports, incidents and classification corrections (intake).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dispatch.models import UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``incidents``, ``reports`` and ``classification_corrections``."""
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("category", sa.String(32), nullable=True),
        sa.Column("subtype", sa.String(64), nullable=True),
        sa.Column("agencies", sa.JSON(), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("grade_reasons", sa.JSON(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("needs_location", sa.Boolean(), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("last_report_at", UtcDateTime(), nullable=False),
        sa.Column("report_count", sa.Integer(), nullable=False),
        sa.Column("merged_into", sa.String(36), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_incidents_status", "incidents", ["status"])
    op.create_index("ix_incidents_last_report_at", "incidents", ["last_report_at"])
    op.create_table(
        "reports",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("source_ref", sa.String(160), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("lang", sa.String(8), nullable=True),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("assessed", sa.Boolean(), nullable=False),
        sa.Column("category", sa.String(32), nullable=True),
        sa.Column("subtype", sa.String(64), nullable=True),
        sa.Column("agencies", sa.JSON(), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=True),
        sa.Column("assessment", sa.JSON(), nullable=False),
        sa.Column(
            "incident_id",
            sa.String(36),
            sa.ForeignKey("incidents.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.UniqueConstraint("channel", "source_ref", name="uq_reports_source"),
    )
    op.create_index("ix_reports_channel", "reports", ["channel"])
    op.create_index("ix_reports_received_at", "reports", ["received_at"])
    op.create_index("ix_reports_incident_id", "reports", ["incident_id"])
    op.create_table(
        "classification_corrections",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("subtype", sa.String(64), nullable=True),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("note", sa.String(512), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop the intake tables."""
    for table in ("classification_corrections", "reports", "incidents"):
        op.drop_table(table)
