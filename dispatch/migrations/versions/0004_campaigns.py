"""Broadcast campaigns, their recipients and SMSC message ids.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dispatch.models import BigId, UtcDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``campaigns``, ``campaign_recipients`` and ``sms_message_ids``."""
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tag", sa.String(5), nullable=False, unique=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("incident_id", sa.String(36), nullable=True),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("approved_by", sa.String(64), nullable=True),
        sa.Column("approved_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=False),
    )
    op.create_index("ix_campaigns_status", "campaigns", ["status"])
    op.create_table(
        "campaign_recipients",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.String(36),
                  sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("msisdn", sa.String(20), nullable=False),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("resend_replace", sa.Boolean(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("message_ids", sa.JSON(), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("campaign_id", "msisdn", name="uq_campaign_recipient"),
    )
    op.create_index("ix_campaign_recipients_campaign_id", "campaign_recipients", ["campaign_id"])
    op.create_index("ix_campaign_recipients_state", "campaign_recipients", ["state"])
    op.create_table(
        "sms_message_ids",
        sa.Column("message_id", sa.String(65), primary_key=True),
        sa.Column("recipient_id", BigId,
                  sa.ForeignKey("campaign_recipients.id", ondelete="CASCADE"), nullable=False),
    )
    op.create_index("ix_sms_message_ids_recipient_id", "sms_message_ids", ["recipient_id"])


def downgrade() -> None:
    """Drop the campaign tables."""
    for table in ("sms_message_ids", "campaign_recipients", "campaigns"):
        op.drop_table(table)
