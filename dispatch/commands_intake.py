"""SSH console commands for incidents and broadcasts (they mirror the API).

``show incidents``, ``show incident ID``, ``show broadcasts``,
``show broadcast ID``, ``broadcast approve ID`` and ``broadcast cancel ID
REASON``.  An ID may be abbreviated to any unique prefix of at least four
characters, as the consoles print the first eight.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from sqlalchemy import select

from dispatch.auth import Permission
from dispatch.campaigns import CampaignError, CampaignService
from dispatch.commands import Command, CommandError, Commands, Invocation, _limit, _table, _when
from dispatch.models import CampaignRow, IncidentRow, ReportRow
from dispatch.storage import Database

_ID = re.compile(r"^[0-9a-f-]{4,36}$")
GRADES = {1: "I", 2: "II", 3: "III", 4: "IV"}
Row = TypeVar("Row", IncidentRow, CampaignRow)


async def _resolve(db: Database, model: type[Row], prefix: str, what: str) -> Row:
    """The one row whose id starts with ``prefix``; a clear error otherwise."""
    prefix = prefix.lower()
    if not _ID.match(prefix):
        raise CommandError(f"{what} id must be 4 to 36 hexadecimal characters or '-'", 2)
    async with db.session() as s:
        rows = (await s.scalars(select(model).where(model.id.startswith(prefix, autoescape=True))
                                .limit(2))).all()
    if not rows:
        raise CommandError(f"no {what} {prefix}")
    if len(rows) > 1:
        raise CommandError(f"{what} id {prefix} is ambiguous: give more characters", 2)
    return rows[0]


def add_intake_commands(table: Commands, db: Database, campaigns: CampaignService) -> None:
    """Register the incident and broadcast commands in ``table``."""

    async def incidents(inv: Invocation) -> str:
        async with db.session() as s:
            rows = (await s.scalars(
                select(IncidentRow).where(IncidentRow.merged_into.is_(None))
                .order_by(IncidentRow.grade, IncidentRow.last_report_at.desc())
                .limit(_limit(inv.args)))).all()
        return _table([[r.id[:8], GRADES.get(r.grade, str(r.grade)), r.status,
                        r.category or "unclassified", r.subtype or "", ",".join(r.agencies),
                        str(r.report_count), _when(r.last_report_at)] for r in rows],
                      ["ID", "GRADE", "STATUS", "CATEGORY", "SUBTYPE", "AGENCIES", "REPORTS",
                       "LAST REPORT"]) if rows else "(no incidents)"

    async def incident(inv: Invocation) -> str:
        if len(inv.args) != 1:
            raise CommandError("usage: show incident ID", 2)
        row = await _resolve(db, IncidentRow, inv.args[0], "incident")
        async with db.session() as s:
            reports = (await s.scalars(select(ReportRow).where(ReportRow.incident_id == row.id)
                                       .order_by(ReportRow.received_at).limit(50))).all()
        where = f"{row.lat:.5f},{row.lon:.5f}" if row.lat is not None and row.lon is not None \
            else "needs location"
        head = [f"incident {row.id}  grade {GRADES.get(row.grade, row.grade)}  {row.status}",
                f"category {row.category or 'unclassified'} {row.subtype or ''}  agencies "
                f"{','.join(row.agencies) or '-'}  at {where}",
                "grade reasons: " + ("; ".join(str(r.get("detail", r)) for r in row.grade_reasons
                                            if r.get("applied", True)) or "-")]
        lines = [f"  {_when(r.received_at)}  {r.channel:<8} {r.caller or '-':<16} "
                 f"{r.text[:100]}" for r in reports]
        return "\n".join(head + [f"reports ({row.report_count}):", *lines])

    def _campaign_line(row: CampaignRow, counts: dict[str, int]) -> list[str]:
        done = sum(counts.get(k, 0) for k in ("submitted", "delivered", "failed", "expired"))
        return [row.id[:8], row.status, str(row.priority), str(row.recipients),
                f"{done}/{row.recipients}" if counts else "", row.created_by,
                row.approved_by or "", row.title[:40]]

    async def broadcasts(inv: Invocation) -> str:
        async with db.session() as s:
            rows = (await s.scalars(select(CampaignRow).order_by(CampaignRow.created_at.desc())
                                    .limit(_limit(inv.args)))).all()
        return _table([_campaign_line(r, {}) for r in rows],
                      ["ID", "STATUS", "PRIO", "RECIPIENTS", "", "BY", "APPROVED BY", "TITLE"]) \
            if rows else "(no broadcasts)"

    async def broadcast(inv: Invocation) -> str:
        if len(inv.args) != 1:
            raise CommandError("usage: show broadcast ID", 2)
        row = await _resolve(db, CampaignRow, inv.args[0], "broadcast")
        counts = await campaigns.counts(row.id)
        by_state = "  ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no recipients"
        return (f"broadcast {row.id} ({row.title})\nstatus {row.status}, priority "
                f"{row.priority}, {'public' if row.public else 'officials'}, created by "
                f"{row.created_by}, approved by {row.approved_by or '-'}\n{by_state}")

    async def approve(inv: Invocation) -> str:
        if len(inv.args) != 1:
            raise CommandError("usage: broadcast approve ID", 2)
        row = await _resolve(db, CampaignRow, inv.args[0], "broadcast")
        await _campaign_call(campaigns.approve(row.id, actor=inv.principal.name))
        return f"broadcast {row.id[:8]} approved: sending"

    async def cancel(inv: Invocation) -> str:
        if len(inv.args) < 2:
            raise CommandError("usage: broadcast cancel ID REASON", 2)
        row = await _resolve(db, CampaignRow, inv.args[0], "broadcast")
        reason = " ".join(inv.args[1:])[:500]
        stopped = await _campaign_call(campaigns.cancel(row.id, actor=inv.principal.name,
                                                        reason=reason))
        return f"broadcast {row.id[:8]} cancelled; {stopped} recipients not sent to"

    for command in (
        Command(("show", "incidents"), Permission.INCIDENTS_READ,
                "open incidents, most severe first", incidents, "[N]"),
        Command(("show", "incident"), Permission.INCIDENTS_READ,
                "one incident with its grade reasons and reports", incident, "ID"),
        Command(("show", "broadcasts"), Permission.BROADCAST_READ, "the newest broadcasts",
                broadcasts, "[N]"),
        Command(("show", "broadcast"), Permission.BROADCAST_READ,
                "one broadcast with its recipients counted by state", broadcast, "ID"),
        Command(("broadcast", "approve"), Permission.BROADCAST_APPROVE,
                "approve someone else's broadcast (two-person rule)", approve, "ID"),
        Command(("broadcast", "cancel"), Permission.BROADCAST_CREATE,
                "stop a broadcast; recipients not yet sent to are not sent to", cancel,
                "ID REASON"),
    ):
        table.add(command)


async def _campaign_call(call: Any) -> Any:
    try:
        return await call
    except CampaignError as exc:
        raise CommandError(str(exc)) from None
