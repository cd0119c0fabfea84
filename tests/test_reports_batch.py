"""``ReportService.submit_many``: a batch gets the same decisions as one-by-one submits.

Run on SQLite and PostgreSQL (the ``daemon`` fixture).  The batch path is what
the SIP record writer uses for the voice reports of a burst of calls.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from dispatch.audit import query
from dispatch.models import IncidentRow, ReportRow
from dispatch.reports import NewReport
from intake.model import Channel

FIRE = "东城街道一栋居民楼起火，三人死亡，十二人受伤"
FIRE_AGAIN = "东城那栋楼还在烧，浓烟很大，有人被困"
FLOOD_FAR = "Flash flood in the village, 40 people evacuated"
AT = dt.datetime.now(dt.UTC)  # the daemon runs on the wall clock: reports of now


def new(text: str, ref: str | None, lat: float | None = None, lon: float | None = None,
        channel: Channel = Channel.VOICE) -> NewReport:
    return NewReport(channel, text, AT, caller="13800138000", lat=lat, lon=lon, source_ref=ref)


async def test_a_batch_is_stored_assessed_and_correlated_like_single_submits(
        daemon: Any) -> None:
    seen: list[str] = []
    daemon.hub.listen(lambda env: seen.append(env.topic))
    batch = [new(FIRE, "call-1", 23.0205, 113.7518), new(FIRE_AGAIN, "call-2", 23.0210, 113.7520),
             new(FLOOD_FAR, "call-3", 22.80, 113.95), new("Voice call to 110", "call-4")]
    done = await daemon.reports.submit_many(batch, actor="sip")
    assert [d.duplicate for d in done] == [False] * 4
    # The second report of the same fire joined the incident the first opened, in the
    # same transaction; the flood far away and the unlocated call opened their own.
    assert done[1].incident_id == done[0].incident_id
    assert len({done[0].incident_id, done[2].incident_id, done[3].incident_id}) == 3
    async with daemon.db.session() as s:
        rows = {r.source_ref: r for r in await s.scalars(select(ReportRow))}
        fire = await s.get(IncidentRow, done[0].incident_id)
        actions = [a.action for a in await query(s, limit=50)]
    assert {r.source_ref for r in rows.values() if r.assessed} == {f"call-{i}" for i in range(1, 5)}
    assert rows["call-1"].category == "accident" and rows["call-1"].grade == 3
    assert fire is not None and fire.report_count == 2
    assert actions.count("report.received") == 4 and actions.count("report.assessed") == 4
    assert actions.count("incident.opened") == 3 and actions.count("incident.report_joined") == 1
    assert seen.count("report.received") == 4 and seen.count("report.assessed") == 4


async def test_duplicates_in_the_database_and_in_the_batch_are_not_stored_twice(
        daemon: Any) -> None:
    first = await daemon.reports.submit(new(FIRE, "call-1", 23.02, 113.75), actor="sip")
    done = await daemon.reports.submit_many(
        [new(FIRE, "call-1", 23.02, 113.75), new(FLOOD_FAR, "call-2"),
         new(FLOOD_FAR, "call-2"), new(FLOOD_FAR, None), new(FLOOD_FAR, None)], actor="sip")
    assert done[0].duplicate and done[0].report_id == first.report_id
    assert done[0].incident_id == first.incident_id
    assert not done[1].duplicate and done[2].duplicate
    assert done[2].report_id == done[1].report_id
    # Reports without a source reference are never duplicates of each other.
    assert not done[3].duplicate and not done[4].duplicate
    assert done[3].report_id != done[4].report_id
    async with daemon.db.session() as s:
        count = await s.scalar(select(func.count()).select_from(ReportRow))
    assert count == 4
    assert daemon.reports.counts["duplicates"] == 2


async def test_an_empty_batch_does_nothing(daemon: Any) -> None:
    assert await daemon.reports.submit_many([], actor="sip") == []


async def test_a_summary_dispatchd_wrote_is_stored_but_not_read_as_what_was_said(
        daemon: Any) -> None:
    # A voice call's summary line is dispatchd's own text: intake must not find an
    # incident in it.  Here it is worded like a real fire report to prove it is not read.
    summary = NewReport(Channel.VOICE, FIRE, AT, caller="13800138000", source_ref="call-9",
                        said=False)
    [done] = await daemon.reports.submit_many([summary], actor="sip")
    async with daemon.db.session() as s:
        row = await s.get(ReportRow, done.report_id)
    assert row is not None and row.text == FIRE and row.assessed
    assert row.category is None and row.grade == 4
    # What the call taker then writes down is assessed (with the summary before it).
    await daemon.reports.describe(done.report_id, FIRE_AGAIN, actor="agent:a1")
    async with daemon.db.session() as s:
        row = await s.get(ReportRow, done.report_id)
    assert row is not None and row.text == f"{FIRE}\n{FIRE_AGAIN}"
    assert row.category == "accident"
