"""SQLAlchemy 2 typed models of the foundation: users, tokens, audit, duty log.

Every schema change goes through an Alembic migration in
``dispatch/migrations/versions``; a test checks that the models and the
migrations agree.  Times are stored as UTC and always come back aware.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite has no 64-bit autoincrement type of its own: BigInteger must be INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC that is always returned timezone-aware.

    SQLite keeps no zone; PostgreSQL keeps ``timestamptz``.  Naive values are
    refused on the way in, so a local time can never be stored by mistake.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        """Convert an aware datetime to UTC before storing it."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        """Attach UTC to values that come back naive (SQLite)."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every dispatchd table."""

    type_annotation_map = {dt.datetime: UtcDateTime, dict[str, Any]: JSON}


class User(Base):
    """An operator or administrator who logs in to the consoles."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]


class ApiToken(Base):
    """A bearer token: a console session (expires) or a program's API token.

    Only the SHA-256 of the token is stored; the token itself is shown once.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEntry(Base):
    """One line of the append-only audit trail (过程溯源): who, when, what, why.

    Database triggers refuse UPDATE and DELETE on this table.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(128), index=True)
    details: Mapped[dict[str, Any]]


class DutyLogEntry(Base):
    """An entry in the shift's duty log (值班记录), written by an operator."""

    __tablename__ = "duty_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    author: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)


class UserKey(Base):
    """An SSH public key with which a user may log in to the SSH console."""

    __tablename__ = "user_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime]


class ReportRow(Base):
    """One contact (call, SMS, email, radio SDS, form, sensor), stored before it is acknowledged.

    The raw contact (``text``, ``fields``, coordinates) is written first; intake's
    assessment (category, grade, location, evidence) is filled in by a second
    transaction, so a crash between the two loses nothing the caller said.
    """

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("channel", "source_ref", name="uq_reports_source"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), index=True)
    source_ref: Mapped[str | None] = mapped_column(String(160))
    received_at: Mapped[dt.datetime] = mapped_column(index=True)
    text: Mapped[str] = mapped_column(Text)
    lang: Mapped[str | None] = mapped_column(String(8))
    caller: Mapped[str] = mapped_column(String(64), default="")
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str] = mapped_column(String(512), default="")
    fields: Mapped[dict[str, Any]]
    created_by: Mapped[str] = mapped_column(String(64))
    assessed: Mapped[bool] = mapped_column(Boolean, default=False)
    category: Mapped[str | None] = mapped_column(String(32))
    subtype: Mapped[str | None] = mapped_column(String(64))
    agencies: Mapped[list[str]] = mapped_column(JSON, default=list)
    grade: Mapped[int | None]
    assessment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    incident_id: Mapped[str | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="SET NULL"), index=True
    )


class IncidentRow(Base):
    """Reports about one event, with its category, agencies and grade (I-IV)."""

    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    category: Mapped[str | None] = mapped_column(String(32))
    subtype: Mapped[str | None] = mapped_column(String(64))
    agencies: Mapped[list[str]] = mapped_column(JSON, default=list)
    grade: Mapped[int]
    grade_reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    needs_location: Mapped[bool] = mapped_column(Boolean, default=False)
    opened_at: Mapped[dt.datetime]
    last_report_at: Mapped[dt.datetime] = mapped_column(index=True)
    report_count: Mapped[int] = mapped_column(Integer, default=0)
    merged_into: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[dt.datetime]


class CorrectionRow(Base):
    """An operator's correction of a classification, applied again to the same text."""

    __tablename__ = "classification_corrections"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    category: Mapped[str] = mapped_column(String(32))
    subtype: Mapped[str | None] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(512), default="")
    at: Mapped[dt.datetime]


class CampaignRow(Base):
    """A broadcast: who it reaches, what it says, who asked, who approved, how far it got."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tag: Mapped[str] = mapped_column(String(5), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    priority: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), index=True)
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    incident_id: Mapped[str | None] = mapped_column(String(36))
    target: Mapped[dict[str, Any]]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    recipients: Mapped[int] = mapped_column(Integer, default=0)


class CampaignRecipientRow(Base):
    """One recipient of one campaign: stored before anything is sent to them.

    ``state``: queued → submitting → submitted → delivered / failed / expired;
    ``unknown`` when a submit's outcome could not be learnt.  ``resend_replace``
    marks a recipient whose earlier submit may have reached the SMSC: it is sent
    again with SMPP's replace_if_present_flag, so the SMSC replaces rather than
    duplicates it.
    """

    __tablename__ = "campaign_recipients"
    __table_args__ = (
        UniqueConstraint("campaign_id", "msisdn", name="uq_campaign_recipient"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    msisdn: Mapped[str] = mapped_column(String(20))
    lang: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resend_replace: Mapped[bool] = mapped_column(Boolean, default=False)
    next_attempt_at: Mapped[dt.datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_gen: Mapped[int | None] = mapped_column(Integer)  # the claimer's fencing token
    message_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_error: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime]


class MessageIdRow(Base):
    """SMSC message id → campaign recipient, to match delivery receipts."""

    __tablename__ = "sms_message_ids"

    message_id: Mapped[str] = mapped_column(String(65), primary_key=True)
    recipient_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("campaign_recipients.id", ondelete="CASCADE"), index=True
    )


# ---------------------------------------------------------------- dispatch (issue 6)


class IncidentTransitionRow(Base):
    """One step of an incident's lifecycle: from, to, who, when and why."""

    __tablename__ = "incident_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(512), default="")


class IncidentNoteRow(Base):
    """A note written on an incident by an operator."""

    __tablename__ = "incident_notes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime]
    author: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)


class IncidentLinkRow(Base):
    """A typed link from an incident to a call, report, recording, broadcast or conference."""

    __tablename__ = "incident_links"
    __table_args__ = (UniqueConstraint("incident_id", "kind", "ref", name="uq_incident_link"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(160))
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(512), default="")


class UnitRow(Base):
    """A field unit: agency, type, home station, contacts, status, position, capabilities."""

    __tablename__ = "units"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    agency: Mapped[str] = mapped_column(String(32), index=True)
    type: Mapped[str] = mapped_column(String(32), index=True)
    station: Mapped[str] = mapped_column(String(128), default="")
    home_lat: Mapped[float] = mapped_column(Float)
    home_lon: Mapped[float] = mapped_column(Float)
    radio_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    sip_uri: Mapped[str] = mapped_column(String(255), default="")
    phone: Mapped[str] = mapped_column(String(20), default="")
    satphone: Mapped[str] = mapped_column(String(20), default="")
    capabilities: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), index=True)
    incident_id: Mapped[str | None] = mapped_column(String(36), index=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    position_source: Mapped[str] = mapped_column(String(16))
    position_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class UnitAssignmentRow(Base):
    """A unit sent to an incident, with the times that statistics are made of."""

    __tablename__ = "unit_assignments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.id", ondelete="CASCADE"), index=True)
    agency: Mapped[str] = mapped_column(String(32))
    assigned_at: Mapped[dt.datetime]
    assigned_by: Mapped[str] = mapped_column(String(64))
    distance_km: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(512), default="")
    en_route_at: Mapped[dt.datetime | None]
    on_scene_at: Mapped[dt.datetime | None]
    cleared_at: Mapped[dt.datetime | None]


class DepotRow(Base):
    """A resource depot (应急物资库)."""

    __tablename__ = "depots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    agency: Mapped[str] = mapped_column(String(32))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[dt.datetime]


class DepotStockRow(Base):
    """How much of one item a depot holds."""

    __tablename__ = "depot_stock"
    __table_args__ = (UniqueConstraint("depot_id", "item", name="uq_depot_item"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    depot_id: Mapped[str] = mapped_column(ForeignKey("depots.id", ondelete="CASCADE"), index=True)
    item: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    unit: Mapped[str] = mapped_column(String(16), default="")


class PlanActivationRow(Base):
    """A response plan activated for an incident (at most once per plan and incident)."""

    __tablename__ = "plan_activations"
    __table_args__ = (UniqueConstraint("incident_id", "plan_id", name="uq_plan_activation"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    plan_id: Mapped[str] = mapped_column(String(64))
    grade: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime]


class ProposedActionRow(Base):
    """A plan's action that moves resources or reaches the public: waits for a human."""

    __tablename__ = "proposed_actions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    plan_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[dt.datetime]
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[dt.datetime | None]
    decision_note: Mapped[str] = mapped_column(String(512), default="")


class DutyShiftRow(Base):
    """An official on duty (值班) for a role of an agency; ``rank`` orders escalation."""

    __tablename__ = "duty_roster"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agency: Mapped[str] = mapped_column(String(32), index=True)
    role: Mapped[str] = mapped_column(String(32))
    rank: Mapped[int] = mapped_column(Integer)
    person: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(20), default="")
    on_since: Mapped[dt.datetime]
    off_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    handed_over_by: Mapped[str] = mapped_column(String(64), default="")


class NotificationRow(Base):
    """A message to an official or a unit that must be delivered and acknowledged."""

    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    incident_id: Mapped[str | None] = mapped_column(String(36), index=True)
    plan_id: Mapped[str | None] = mapped_column(String(64))
    target_kind: Mapped[str] = mapped_column(String(16))
    agency: Mapped[str] = mapped_column(String(32), default="")
    role: Mapped[str] = mapped_column(String(32), default="")
    rank: Mapped[int] = mapped_column(Integer, default=0)
    person: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(20), default="")
    subject: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None]
    ack_due_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    acked_at: Mapped[dt.datetime | None]
    acked_by: Mapped[str | None] = mapped_column(String(64))
    escalated_to: Mapped[str | None] = mapped_column(String(36))
    last_error: Mapped[str | None] = mapped_column(String(200))
class ResidentRow(Base):
    """One resident or subscriber of the broadcast registry (imported from CSV)."""

    __tablename__ = "residents"

    msisdn: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), default="")
    language: Mapped[str] = mapped_column(String(8), default="zh")
    address: Mapped[str] = mapped_column(String(512), default="")
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    district: Mapped[str] = mapped_column(String(512), default="")
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    imported_at: Mapped[dt.datetime]


class OptOutRow(Base):
    """A number that asked not to receive broadcasts (registry or not)."""

    __tablename__ = "sms_opt_outs"

    msisdn: Mapped[str] = mapped_column(String(20), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[dt.datetime]
class SipAccount(Base):
    """A SIP user (softphone, call taker, field unit, digest trunk): digest HA1s, never passwords.

    One HA1 per algorithm for the account's realm; a realm change needs every
    password set again (``dispatchd sip account passwd``).
    """

    __tablename__ = "sip_accounts"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    realm: Mapped[str] = mapped_column(String(128))
    ha1_md5: Mapped[str] = mapped_column(String(32))
    ha1_sha256: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class SipBindingRow(Base):
    """One registered contact of an AoR; survives restarts, swept when it expires."""

    __tablename__ = "sip_bindings"
    __table_args__ = (UniqueConstraint("aor", "contact", name="uq_sip_binding"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    aor: Mapped[str] = mapped_column(String(200), index=True)
    contact: Mapped[str] = mapped_column(String(512))
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    call_id: Mapped[str] = mapped_column(String(200))
    cseq: Mapped[int] = mapped_column(BigInteger)
    source_transport: Mapped[str] = mapped_column(String(8))
    source_host: Mapped[str] = mapped_column(String(64))
    source_port: Mapped[int] = mapped_column(Integer)
    q: Mapped[float | None] = mapped_column(Float)
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    registered_at: Mapped[float] = mapped_column(Float)


class CallRecordRow(Base):
    """The CDR of one call: offered, queued, answered, released; linked to its report."""

    __tablename__ = "call_records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sip_call_id: Mapped[str] = mapped_column(String(200))
    caller: Mapped[str] = mapped_column(String(64), index=True)
    called: Mapped[str] = mapped_column(String(64))
    hotline: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(64))
    trunk: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str | None] = mapped_column(String(16))
    cause: Mapped[str] = mapped_column(String(64), default="")
    released_by: Mapped[str] = mapped_column(String(64), default="")
    offered_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    released_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    report_id: Mapped[str | None] = mapped_column(String(36), index=True)
    timeline: Mapped[list[Any]] = mapped_column(JSON, default=list)


class ConferenceRow(Base):
    """A conference: who opened it, for which incident, its legs' history and its end."""

    __tablename__ = "conferences"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    incident_id: Mapped[str | None] = mapped_column(String(36), index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    ended_by: Mapped[str] = mapped_column(String(64), default="")
    end_reason: Mapped[str] = mapped_column(String(200), default="")
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
class ClusterNodeRow(Base):
    """One dispatchd node of a cluster: where it answers and when it was last alive."""

    __tablename__ = "cluster_nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lease_name: Mapped[str] = mapped_column(String(64))  # the name its campaign leases carry
    http_url: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    alive: Mapped[bool] = mapped_column(Boolean)
    # Fencing token: +1 at every (re)start and every takeover; a node acts only while
    # the row still carries the generation it announced.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ClusterLeaseRow(Base):
    """A named lease (a radio gateway, a singleton job) held by one node until it expires."""

    __tablename__ = "cluster_leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    acquired_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    # Fencing token: +1 whenever the lease changes hands; renewals must match it.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AcdAgentRow(Base):
    """A call taker's ACD state as last seen anywhere in the cluster (survives restarts)."""

    __tablename__ = "acd_agents"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    node: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(120))
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
