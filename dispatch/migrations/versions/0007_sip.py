"""SIP accounts (digest HA1s), registrar bindings and call records (CDR).

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dispatch.models import BigId, UtcDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``sip_accounts``, ``sip_bindings`` and ``call_records``."""
    op.create_table(
        "sip_accounts",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("realm", sa.String(128), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "sip_bindings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("aor", sa.String(200), nullable=False),
        sa.Column("contact", sa.String(512), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("cseq", sa.BigInteger(), nullable=False),
        sa.Column("source_transport", sa.String(8), nullable=False),
        sa.Column("source_host", sa.String(64), nullable=False),
        sa.Column("source_port", sa.Integer(), nullable=False),
        sa.Column("q", sa.Float(), nullable=True),
        sa.Column("user_agent", sa.String(200), nullable=False),
        sa.Column("registered_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("aor", "contact", name="uq_sip_binding"),
    )
    op.create_index("ix_sip_bindings_aor", "sip_bindings", ["aor"])
    op.create_index("ix_sip_bindings_expires_at", "sip_bindings", ["expires_at"])
    op.create_table(
        "call_records",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("sip_call_id", sa.String(200), nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("called", sa.String(64), nullable=False),
        sa.Column("hotline", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("trunk", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("cause", sa.String(64), nullable=False),
        sa.Column("released_by", sa.String(64), nullable=False),
        sa.Column("offered_at", UtcDateTime(), nullable=False),
        sa.Column("answered_at", UtcDateTime(), nullable=True),
        sa.Column("released_at", UtcDateTime(), nullable=True),
        sa.Column("report_id", sa.String(36), nullable=True),
        sa.Column("timeline", sa.JSON(), nullable=False),
    )
    op.create_index("ix_call_records_caller", "call_records", ["caller"])
    op.create_index("ix_call_records_offered_at", "call_records", ["offered_at"])
    op.create_index("ix_call_records_report_id", "call_records", ["report_id"])


def downgrade() -> None:
    """Drop the SIP tables."""
    op.drop_table("call_records")
    op.drop_table("sip_bindings")
    op.drop_table("sip_accounts")
