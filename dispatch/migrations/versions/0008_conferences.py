"""Conferences (who opened them, for which incident, their legs' history).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dispatch.models import UtcDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``conferences``."""
    op.create_table(
        "conferences",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("incident_id", sa.String(36), nullable=True),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("ended_by", sa.String(64), nullable=False),
        sa.Column("end_reason", sa.String(200), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
    )
    op.create_index("ix_conferences_created_at", "conferences", ["created_at"])
    op.create_index("ix_conferences_incident_id", "conferences", ["incident_id"])


def downgrade() -> None:
    """Drop ``conferences``."""
    op.drop_index("ix_conferences_incident_id", table_name="conferences")
    op.drop_index("ix_conferences_created_at", table_name="conferences")
    op.drop_table("conferences")
