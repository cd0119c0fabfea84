"""The broadcast registry: residents and the opt-out list.

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dispatch.models import UtcDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``residents`` and ``sms_opt_outs``."""
    op.create_table(
        "residents",
        sa.Column("msisdn", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("district", sa.String(512), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("opt_out", sa.Boolean(), nullable=False),
        sa.Column("imported_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "sms_opt_outs",
        sa.Column("msisdn", sa.String(20), primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop the registry tables."""
    op.drop_table("sms_opt_outs")
    op.drop_table("residents")
