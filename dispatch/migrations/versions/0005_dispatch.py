"""Dispatch: incident lifecycle, notes, links, units, depots, plans, roster, notifications.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dispatch.models import BigId, UtcDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("notifications", "duty_roster", "proposed_actions", "plan_activations",
           "depot_stock", "depots", "unit_assignments", "units", "incident_links",
           "incident_notes", "incident_transitions")


def _incident_fk() -> sa.Column[str]:
    return sa.Column("incident_id", sa.String(36),
                     sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)


def _id() -> sa.Column[int]:
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def upgrade() -> None:
    """Create the dispatch tables."""
    op.create_table(
        "incident_transitions", _id(), _incident_fk(),
        sa.Column("from_status", sa.String(16), nullable=False),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(512), nullable=False),
    )
    op.create_table(
        "incident_notes", _id(), _incident_fk(),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_table(
        "incident_links", _id(), _incident_fk(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(160), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("note", sa.String(512), nullable=False),
        sa.UniqueConstraint("incident_id", "kind", "ref", name="uq_incident_link"),
    )
    op.create_table(
        "units",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("station", sa.String(128), nullable=False),
        sa.Column("home_lat", sa.Float(), nullable=False),
        sa.Column("home_lon", sa.Float(), nullable=False),
        sa.Column("radio_id", sa.String(32), nullable=True, unique=True),
        sa.Column("sip_uri", sa.String(255), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("satphone", sa.String(20), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("incident_id", sa.String(36), nullable=True),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("position_source", sa.String(16), nullable=False),
        sa.Column("position_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "unit_assignments", _id(), _incident_fk(),
        sa.Column("unit_id", sa.String(32), sa.ForeignKey("units.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("assigned_at", UtcDateTime(), nullable=False),
        sa.Column("assigned_by", sa.String(64), nullable=False),
        sa.Column("distance_km", sa.Float(), nullable=True),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("en_route_at", UtcDateTime(), nullable=True),
        sa.Column("on_scene_at", UtcDateTime(), nullable=True),
        sa.Column("cleared_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "depots",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "depot_stock", _id(),
        sa.Column("depot_id", sa.String(32), sa.ForeignKey("depots.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("item", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.UniqueConstraint("depot_id", "item", name="uq_depot_item"),
    )
    op.create_table(
        "plan_activations", _id(), _incident_fk(),
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("incident_id", "plan_id", name="uq_plan_activation"),
    )
    op.create_table(
        "proposed_actions", _id(), _incident_fk(),
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("decision_note", sa.String(512), nullable=False),
    )
    op.create_table(
        "duty_roster", _id(),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("person", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("on_since", UtcDateTime(), nullable=False),
        sa.Column("off_at", UtcDateTime(), nullable=True),
        sa.Column("handed_over_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("incident_id", sa.String(36), nullable=True),
        sa.Column("plan_id", sa.String(64), nullable=True),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("person", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("address", sa.String(254), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.Column("ack_due_at", UtcDateTime(), nullable=True),
        sa.Column("acked_at", UtcDateTime(), nullable=True),
        sa.Column("acked_by", sa.String(64), nullable=True),
        sa.Column("escalated_to", sa.String(36), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
    )
    for table, column in (
        ("incident_transitions", "incident_id"), ("incident_notes", "incident_id"),
        ("incident_links", "incident_id"), ("units", "agency"), ("units", "type"),
        ("units", "status"), ("units", "incident_id"), ("unit_assignments", "incident_id"),
        ("unit_assignments", "unit_id"), ("depot_stock", "depot_id"),
        ("plan_activations", "incident_id"), ("proposed_actions", "incident_id"),
        ("proposed_actions", "status"), ("duty_roster", "agency"), ("duty_roster", "off_at"),
        ("notifications", "incident_id"), ("notifications", "status"),
        ("notifications", "ack_due_at"),
    ):
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    """Drop the dispatch tables."""
    for table in _TABLES:
        op.drop_table(table)
