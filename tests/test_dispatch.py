"""Dispatch services on SQLite and PostgreSQL: lifecycle, units, plans, roster, escalation.

Notifications go to a real SMTP server (aiosmtpd, ``mailpeer.py``) and the escalation
timeline runs on a stepped clock: ``run_once(now)`` is called at chosen instants, nothing
sleeps.  SMS goes through an in-process ``TextSender`` that records what it was asked to
send (the SMPP/modem transports implement the same one-method protocol).
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from mailpeer import MailSink, make_cert
from sqlalchemy import select

from dispatch.audit import AuditTrail, query
from dispatch.auth import Principal, Role
from dispatch.config import ConfigError, DispatchSettings, SmtpSettings
from dispatch.dispatchconf import DispatchFiles, OfficialSpec, UnitNeed, load_dispatch_files
from dispatch.incidents import IncidentError, IncidentService, LinkKind, Status
from dispatch.models import IncidentRow, NotificationRow, UnitAssignmentRow
from dispatch.notify import AckSigner, NotificationService, SmtpMailer
from dispatch.plans import PlanError, PlanService
from dispatch.roster import RosterService
from dispatch.stats import StatsService
from dispatch.storage import Database
from dispatch.units import UnitError, UnitService, UnitStatus

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_795_000_000.0  # 2026-11-18T...Z


class Clock:
    """A stepped clock."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class RecordingSms:
    """A TextSender that keeps what it sent; can fail the next N sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail_next = 0

    async def send(self, msisdn: str, text: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("SMSC link down")
        self.sent.append((msisdn, text))


def who(role: Role, name: str | None = None) -> Principal:
    return Principal(1, name or role.value, role)


class World:
    """Every dispatch service on one database and one stepped clock."""

    def __init__(self, db: Database, files: DispatchFiles, mailer: Any = None,
                 sms: RecordingSms | None = None) -> None:
        self.clock = Clock()
        self.events: list[object] = []
        self.db = db
        self.audit = AuditTrail(self.events.append, self.clock)
        pub = self.events.append
        self.incidents = IncidentService(db, self.audit, pub, self.clock)
        self.roster = RosterService(db, self.audit, pub, self.clock, files.officials)
        self.sms = sms
        self.notes = NotificationService(db, self.audit, pub, self.clock, self.roster,
                                         AckSigner(b"k" * 32), mailer=mailer, sms=sms,
                                         ack_timeout_s=600, retry_s=30, max_attempts=3)
        self.units = UnitService(db, self.audit, pub, self.clock, self.incidents,
                                 road_factor=1.4, notifier=self.notes, seed_units=files.units,
                                 seed_depots=files.depots)
        self.plans = PlanService(db, self.audit, pub, self.clock, files, self.incidents,
                                 self.units, self.roster, self.notes)

    async def start(self) -> World:
        await self.roster.start()
        await self.units.start()
        return self

    async def incident(self, category: str = "accident", subtype: str = "building_fire",
                       grade: int = 3, lat: float | None = 23.0205,
                       lon: float | None = 113.7518, iid: str = "inc-1") -> str:
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        async with self.db.session() as s:
            s.add(IncidentRow(id=iid, status="new", category=category, subtype=subtype,
                              agencies=["119", "120"], grade=grade, grade_reasons=[], lat=lat,
                              lon=lon, needs_location=lat is None, opened_at=now,
                              last_report_at=now, report_count=1, updated_at=now))
        return iid


def shipped(**over: Any) -> DispatchFiles:
    settings = DispatchSettings(plans_dir=str(ROOT / "conf/plans"),
                                units_file=str(ROOT / "conf/units.toml"),
                                roster_file=str(ROOT / "conf/roster.toml"), **over)
    return load_dispatch_files(settings)


# ---------------------------------------------------------------- lifecycle


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_lifecycle_follows_the_table_and_the_role(database: Database) -> None:
    w = await World(database, DispatchFiles()).start()
    iid = await w.incident()
    ct, disp, sup = who(Role.CALL_TAKER, "ct"), who(Role.DISPATCHER, "disp"), who(Role.SUPERVISOR)
    with pytest.raises(IncidentError) as refused:
        await w.incidents.transition(iid, Status.ON_SCENE, disp)
    assert refused.value.status == 409 and "allowed: acknowledged, closed, dispatched" in str(
        refused.value)
    w.clock.now += 30
    assert await w.incidents.transition(iid, Status.ACKNOWLEDGED, ct) is Status.ACKNOWLEDGED
    with pytest.raises(IncidentError) as role:
        await w.incidents.transition(iid, Status.DISPATCHED, ct)
    assert role.value.status == 403 and "needs units.dispatch" in str(role.value)
    w.clock.now += 60
    await w.incidents.transition(iid, Status.DISPATCHED, disp)
    await w.incidents.transition(iid, Status.ON_SCENE, disp)
    await w.incidents.transition(iid, Status.CONTAINED, disp, "fire knocked down")
    with pytest.raises(IncidentError) as close:
        await w.incidents.transition(iid, Status.CLOSED, disp)
    assert close.value.status == 403
    await w.incidents.transition(iid, Status.CLOSED, sup)
    with pytest.raises(IncidentError) as why:
        await w.incidents.transition(iid, Status.ACKNOWLEDGED, sup)
    assert why.value.status == 422, "reopening needs a reason"
    await w.incidents.transition(iid, Status.ACKNOWLEDGED, sup, "flare-up reported")
    with pytest.raises(IncidentError):
        await w.incidents.transition(iid, Status.ACKNOWLEDGED, sup, "bad\x07reason")
    with pytest.raises(IncidentError) as unknown:
        await w.incidents.transition("nope", Status.ACKNOWLEDGED, sup)
    assert unknown.value.status == 404

    async with database.session() as s:
        rows = await query(s, subject=f"incident:{iid}", limit=50)
    steps = [(r.action, r.actor) for r in reversed(rows)]
    assert steps == [("incident.acknowledged", "ct"), ("incident.dispatched", "disp"),
                     ("incident.on_scene", "disp"), ("incident.contained", "disp"),
                     ("incident.closed", "supervisor"), ("incident.acknowledged", "supervisor")]
    assert [getattr(e, "to_status", None) for e in w.events if hasattr(e, "to_status")] == [
        "acknowledged", "dispatched", "on_scene", "contained", "closed", "acknowledged"]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_notes_links_and_timeline_in_order(database: Database) -> None:
    w = await World(database, DispatchFiles()).start()
    iid = await w.incident()
    ct = who(Role.CALL_TAKER, "ct")
    w.clock.now += 1
    await w.incidents.add_note(iid, "caller says two trapped on 3rd floor", ct)
    w.clock.now += 1
    assert await w.incidents.link(iid, LinkKind.CALL, "call-7f3a", "ct")
    assert not await w.incidents.link(iid, LinkKind.CALL, "call-7f3a", "ct"), "once only"
    w.clock.now += 1
    await w.incidents.transition(iid, Status.ACKNOWLEDGED, ct)
    w.clock.now += 1
    assert await w.incidents.link(iid, LinkKind.RECORDING, "rec/2026/11/call-7f3a.wav", "sip")
    with pytest.raises(IncidentError):
        await w.incidents.link(iid, LinkKind.CALL, "bad ref with spaces", "ct")
    with pytest.raises(IncidentError):
        await w.incidents.add_note(iid, "x" * 4001, ct)
    line = await w.incidents.timeline(iid)
    kinds = [(i["kind"], i.get("action") or i.get("link_kind") or i.get("text")) for i in line]
    assert kinds == [
        ("audit", "incident.note_added"), ("note", "caller says two trapped on 3rd floor"),
        ("audit", "incident.linked"), ("link", "call"),
        ("audit", "incident.acknowledged"),
        ("audit", "incident.linked"), ("link", "recording")]
    assert [i["at"] for i in line] == sorted(i["at"] for i in line)


# ---------------------------------------------------------------- plan files


def test_plan_file_mistakes_are_one_line_each(tmp_path: Path) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "a.toml").write_text('''
[[plan]]
id = "ok"
name = "fine"
category = "accident"
grade = "II"
units = [{ type = "fire_engine", count = 1 }]

[[plan]]
id = "bad"
name = "bad\\none"
category = "acident"
grade = "V"
units = [{ type = "fire_engine", count = 0 }, { type = "submarine", count = 1 }]
notify = [{ agency = "119", rank = 2 }]
colour = "red"
''', encoding="utf-8")
    (plans / "b.toml").write_text('''
[[plan]]
id = "ok"
name = "dup"
category = "accident"
grade = 2
units = [{ type = "hovercraft", count = 1 }]
''', encoding="utf-8")
    (plans / "c.toml").write_text('[[plan]\nid = "x"\n', encoding="utf-8")
    settings = DispatchSettings(plans_dir=str(plans), units_file=str(ROOT / "conf/units.toml"))
    with pytest.raises(ConfigError) as err:
        load_dispatch_files(settings)
    a, b, c = (str(plans / n) for n in ("a.toml", "b.toml", "c.toml"))
    assert err.value.problems[:6] == [
        f"{a}: plan 'bad': name: control characters (such as newlines) are not allowed "
        "(got 'bad\\none')",
        f"{a}: plan 'bad': category: unknown category 'acident' (one of natural_disaster, "
        "accident, public_health, social_security) (got 'acident')",
        f"{a}: plan 'bad': grade: unknown grade 'V' (I, II, III or IV) (got 'V')",
        f"{a}: plan 'bad': notify[0].rank: unknown key",
        f"{a}: plan 'bad': units[0].count: Input should be greater than or equal to 1 (got 0)",
        f"{a}: plan 'bad': colour: unknown key",
    ]
    assert err.value.problems[6] == f"{b}: plan 'ok': id: already used in {a}"
    assert err.value.problems[7].startswith(f"{c}: invalid TOML: ")
    assert len(err.value.problems) == 8
    # The second copy of "ok" was refused, so its unknown unit type is not reported twice;
    # a unit type no unit has is a mistake of its own:
    (plans / "b.toml").unlink()
    (plans / "c.toml").unlink()
    (plans / "a.toml").write_text('[[plan]]\nid = "p"\nname = "n"\ncategory = "accident"\n'
                                  'grade = "I"\nunits = [{ type = "submarine", count = 1 }]\n')
    with pytest.raises(ConfigError) as err2:
        load_dispatch_files(settings)
    assert err2.value.problems == [
        f"{plans}: plan 'p': units[0].type: no unit of type 'submarine' in "
        f"{ROOT / 'conf/units.toml'} (types: aerial_ladder, ambulance, fire_engine, "
        "police_car, rescue_team, traffic_police)"]


def test_shipped_files_load() -> None:
    files = shipped()
    assert len(files.plans) >= 4 and len(files.units) >= 8 and files.officials
    assert [p.id for p in files.plans_for("accident", "building_fire", 3)] == [
        "building-fire-IV", "building-fire-III"]
    assert files.plans_for("accident", "building_fire", 4)[0].id == "building-fire-IV"
    assert files.plans_for("accident", "traffic_accident", 1) == []


# ---------------------------------------------------------------- units


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_recommend_assign_notify_and_positions(database: Database) -> None:
    sms = RecordingSms()
    w = await World(database, shipped(), sms=sms).start()
    assert await w.units.seed(shipped().units, ()) == 0, "seeding twice adds nothing"
    nowhere = await w.incident(lat=None, lon=None, iid="inc-nowhere")
    with pytest.raises(UnitError) as unplaced:
        await w.units.recommend(nowhere, [UnitNeed(type="fire_engine", count=1)])
    assert unplaced.value.status == 409 and "no location" in str(unplaced.value)
    iid = await w.incident()
    picks = await w.units.recommend(iid, [UnitNeed(type="fire_engine", count=2),
                                          UnitNeed(type="ambulance", count=1)])
    assert [c.unit_id for c in picks] == ["E-101", "E-102", "A-11"]
    assert picks[0].distance_km < picks[2].distance_km or picks[2].unit_id == "A-11"
    assert re.match(r"nearest available fire_engine #1 of 2: \d+\.\d km by road "
                    r"\(\d+\.\d km straight × 1\.4\), 119 东城消防站, position from station "
                    r"0 min ago", picks[0].reason), picks[0].reason
    hazmat = await w.units.recommend(iid, [UnitNeed(type="fire_engine", count=1,
                                                    capabilities=("hazmat",))])
    assert [c.unit_id for c in hazmat] == ["E-102"]

    # A radio location report moves E-201 right next to the incident: it becomes nearest.
    w.clock.now += 120
    assert await w.units.update_position(radio_id="1190201", lat=23.0206, lon=113.7519,
                                         source="radio") == "E-201"
    assert await w.units.update_position(radio_id="999", lat=1, lon=1, source="radio") is None
    old = dt.datetime.fromtimestamp(T0, dt.UTC)
    await w.units.update_position(radio_id="1190201", lat=10, lon=10, source="radio", at=old)
    assert (await w.units.get("E-201")).lat == 23.0206, "an older fix is ignored"
    with pytest.raises(UnitError):
        await w.units.update_position(unit_id="E-201", lat=91, lon=0, source="api")
    picks = await w.units.recommend(iid, [UnitNeed(type="fire_engine", count=1)])
    assert picks[0].unit_id == "E-201" and "position from radio 0 min ago" in picks[0].reason

    w.clock.now += 60
    refs = await w.units.assign(iid, ["E-201", "A-11"], who(Role.DISPATCHER, "disp"))
    assert len(refs) == 2
    await w.notes.run_once()
    assert (await w.units.get("E-201")).status == "assigned"
    async with database.session() as s:
        inc = await s.get(IncidentRow, iid)
        assert inc is not None and inc.status == "dispatched"
        unit_notes = (await s.scalars(select(NotificationRow).where(
            NotificationRow.target_kind == "unit"))).all()
    assert len(unit_notes) == 2
    assert sorted(m for m, _ in sms.sent) == ["+8613800119201", "+8613800120011"]
    assert "DISPATCH incident inc-1" in sms.sent[0][1]
    with pytest.raises(UnitError) as busy:
        await w.units.assign(iid, ["E-101", "E-201"], who(Role.DISPATCHER))
    assert busy.value.status == 409 and "E-201 (assigned)" in str(busy.value)
    assert (await w.units.get("E-101")).status == "available", "all or nothing"

    w.clock.now += 300
    await w.units.set_status("E-201", UnitStatus.EN_ROUTE, "radio:1190201")
    w.clock.now += 420
    await w.units.set_status("E-201", UnitStatus.ON_SCENE, "radio:1190201")
    with pytest.raises(UnitError):
        await w.units.set_status("E-201", UnitStatus.ASSIGNED, "disp")
    async with database.session() as s:
        inc = await s.get(IncidentRow, iid)
        assert inc is not None and inc.status == "on_scene", "first unit on scene"
        a = (await s.scalars(select(UnitAssignmentRow).where(
            UnitAssignmentRow.unit_id == "E-201"))).one()
    assert (a.on_scene_at - a.assigned_at).total_seconds() == 720

    stats = await StatsService(database, (), 8).incidents(
        dt.datetime.fromtimestamp(T0 - 3600, dt.UTC), dt.datetime.fromtimestamp(T0 + 3600,
                                                                                 dt.UTC))
    assert stats["times"]["call_to_dispatch"]["count"] == 1
    assert stats["times"]["call_to_dispatch"]["median_s"] == 180.0
    assert stats["times"]["dispatch_to_on_scene"]["median_s"] == 720.0
    assert stats["per_agency"]["119"]["dispatch_to_on_scene"]["count"] == 1
    await w.units.set_status("E-201", UnitStatus.RETURNING, "disp")
    await w.units.set_status("E-201", UnitStatus.AVAILABLE, "disp")
    assert (await w.units.get("E-201")).incident_id is None


# ---------------------------------------------------------------- plans, mail, escalation


@pytest.fixture
async def mail_sink() -> Any:
    sink = await MailSink().start()
    yield sink
    await sink.stop()


def _ack_link(message: Any) -> str:
    body = message.get_content()
    found = re.search(r"/ack/([0-9a-f-]{36}\.[0-9a-f]{40})", body)
    assert found, body
    return found.group(1)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_plan_activation_notifies_and_escalates_on_a_stepped_clock(
        database: Database, mail_sink: MailSink) -> None:
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=mail_sink.port, security="none",
                                     sender="ecc@ecc.test"))
    w = await World(database, shipped(), mailer=mailer).start()
    iid = await w.incident(grade=3)
    assert await w.plans.activate(iid) == ["building-fire-III", "building-fire-IV"]
    assert await w.plans.activate(iid) == [], "a plan activates once per incident"
    await w.notes.run_once()

    # Officials hear at once: 119 rank 1 and 120 rank 1.  Both plans name 119, but one
    # incident texts an official once: the most severe plan's notice covers the other.
    got = [await mail_sink.next() for _ in range(2)]
    assert sorted(m["To"] for m in got) == ["duty-119@ecc.example", "duty-120@ecc.example"]
    assert all(m["From"] == "ecc@ecc.test" for m in got)
    first_119 = next(m for m in got if m["To"] == "duty-119@ecc.example"
                     and "较大" in m["Subject"])
    assert first_119["Subject"] == "[III] 建筑火灾 较大"
    assert "grade III 较大 (yellow)" in first_119.get_content()

    # Proposed actions wait for a human; units, talkgroups of the III plan.
    actions = await w.plans.actions(incident_id=iid)
    assert [(a.plan_id, a.kind, a.status) for a in actions] == [
        ("building-fire-III", "units", "proposed"),
        ("building-fire-III", "talkgroups", "proposed"), ("building-fire-IV", "units", "proposed")]

    # The 120 duty officer acknowledges through the link at +4 min.
    by_to = {m["To"]: m for m in got}
    w.clock.now = T0 + 240
    acked = await w.notes.acknowledge_token(_ack_link(by_to["duty-120@ecc.example"]),
                                            source="127.0.0.1")
    assert acked.status == "acknowledged" and acked.person == "王医生"
    token = _ack_link(by_to["duty-120@ecc.example"])
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    with pytest.raises(LookupError):
        await w.notes.acknowledge_token(forged, source="x")

    # +9 min 59 s: nothing escalates yet.
    await w.notes.run_once(T0 + 599)
    assert mail_sink.messages.empty()
    # +10 min: the unacknowledged 119 notification goes to rank 2.
    w.clock.now = T0 + 600
    await w.notes.run_once()
    esc = await mail_sink.next()
    assert esc["To"] == "deputy-119@ecc.example" and esc["Subject"].startswith("[ESCALATED] ")
    assert "Not acknowledged by 张值班 in 10.0 min." in esc.get_content()
    rows = await w.notes.recent(status="sent")
    deputy = [r for r in rows if r.person == "李副支队长"]
    assert len(deputy) == 1
    # +20 min: nobody after rank 2: unanswered, audited.
    w.clock.now = T0 + 1200
    await w.notes.run_once()
    assert mail_sink.messages.empty()
    final = {r.id: r for r in await w.notes.recent()}
    assert final[deputy[0].id].status == "unanswered"
    # A dispatcher who reached the deputy by phone records it from the console.
    w.clock.now = T0 + 1300
    await w.notes.acknowledge(deputy[0].id, actor="disp", via="console")
    final = {r.id: r for r in await w.notes.recent()}
    assert sorted(r.status for r in final.values()) == [
        "acknowledged", "acknowledged", "escalated"]
    async with database.session() as s:
        trail = [(r.action, r.actor) for r in reversed(await query(s, subject=f"incident:{iid}",
                                                                   limit=100))]
    actions_seen = [a for a, _ in trail]
    assert actions_seen.count("plan.activated") == 2
    assert actions_seen.count("notification.sent") == 3
    assert actions_seen.count("notification.escalated") == 1
    assert actions_seen.count("notification.unanswered") == 1
    assert ("notification.acknowledged", "disp") in trail
    assert ("notification.acknowledged", "王医生 (link)") in trail


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_delivery_retries_with_backoff_and_unreachable_escalates_at_once(
        database: Database, mail_sink: MailSink) -> None:
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=mail_sink.port, security="none"))
    sms = RecordingSms()
    officials = (OfficialSpec(agency="119", rank=1, person="A", email="a@x.test"),
                 OfficialSpec(agency="119", rank=2, person="B", phone="+8613900000002"),
                 OfficialSpec(agency="119", rank=3, person="C"))
    w = await World(database, DispatchFiles(officials=officials), mailer=mailer,
                    sms=sms).start()
    mail_sink.refuse_next = 2
    a = (await w.roster.on_duty("119"))[0]
    nid = await w.notes.notify_official(a, incident_id=None, plan_id=None, subject="test",
                                        text="hello", actor="t")
    await w.notes.run_once(T0)
    await w.notes.run_once(T0 + 29)   # first retry is due at +30 s
    assert mail_sink.refused == 1
    await w.notes.run_once(T0 + 30)   # refused again; next at +30 + 60
    await w.notes.run_once(T0 + 89)
    assert mail_sink.refused == 2 and mail_sink.messages.empty()
    await w.notes.run_once(T0 + 90)
    assert (await mail_sink.next())["To"] == "a@x.test"
    row = next(r for r in await w.notes.recent() if r.id == nid)
    assert (row.status, row.attempts) == ("sent", 3)

    # B has only a phone: the SMS sender is used; it fails 3 times → failed → escalate to C
    # at once; C has no contact at all: failed, and nobody after C: unanswered.
    w.clock.now = T0 + 600
    sms.fail_next = 3
    for step in (0, 30, 90):          # +600: A unacknowledged → B, whose SMS fails thrice
        await w.notes.run_once(T0 + 600 + step)
    rows = {r.person: r for r in await w.notes.recent()}
    assert rows["B"].status == "escalated" and rows["B"].attempts == 3
    assert "SMSC link down" in (rows["B"].last_error or "")
    await w.notes.run_once(T0 + 691)
    rows = {r.person: r for r in await w.notes.recent()}
    assert rows["C"].status == "unanswered" and rows["C"].channel == "none"
    assert sms.sent == []


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_over_tls_with_login(tmp_path: Path, security: str) -> None:
    cert = make_cert(tmp_path)
    sink = await MailSink(security, cert, login=("ecc", "s3cret")).start()
    try:
        settings = SmtpSettings(host="127.0.0.1", port=sink.port, security=security,  # type: ignore[arg-type]
                                username="ecc", ca_file=str(cert[0]))
        await SmtpMailer(settings, "s3cret").send("duty@x.test", "主题 test", "正文 body")
        message = await sink.next()
        assert message["Subject"] == "主题 test" and "正文 body" in message.get_content()
        import aiosmtplib

        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await SmtpMailer(settings, "wrong").send("duty@x.test", "s", "b")
        untrusted = settings.model_copy(update={"ca_file": None})
        with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError)):
            await SmtpMailer(untrusted, "s3cret").send("duty@x.test", "s", "b")
        with pytest.raises(ValueError):
            await SmtpMailer(settings, "s3cret").send("a@x.test\r\nBcc: e@x", "s", "b")
    finally:
        await sink.stop()


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_confirming_units_assigns_them_and_rejecting_is_final(database: Database) -> None:
    w = await World(database, shipped()).start()
    iid = await w.incident(grade=3)
    await w.plans.activate(iid)
    units_iii = next(a for a in await w.plans.actions(incident_id=iid)
                     if a.plan_id == "building-fire-III" and a.kind == "units")
    talk = next(a for a in await w.plans.actions(incident_id=iid) if a.kind == "talkgroups")
    w.clock.now += 90
    done = await w.plans.decide(units_iii.id, True, who(Role.DISPATCHER, "disp"), "go")
    assert done.status == "confirmed" and done.payload["assigned"] == [
        "E-101", "E-102", "A-11", "A-12"]
    with pytest.raises(PlanError) as twice:
        await w.plans.decide(units_iii.id, False, who(Role.SUPERVISOR), "")
    assert "already confirmed by disp" in str(twice.value)
    await w.plans.decide(talk.id, False, who(Role.SUPERVISOR, "sup"), "patched by hand")
    # The IV plan's single engine: nothing of the type is left available → refused, kept open.
    iv = next(a for a in await w.plans.actions(incident_id=iid) if a.plan_id == "building-fire-IV")
    await w.units.set_status("E-201", UnitStatus.OUT_OF_SERVICE, "disp", "pump fault")
    with pytest.raises(PlanError):
        await w.plans.decide(iv.id, True, who(Role.DISPATCHER))
    assert next(a for a in await w.plans.actions(incident_id=iid) if a.id == iv.id
                ).status == "proposed"
    async with database.session() as s:
        inc = await s.get(IncidentRow, iid)
        assert inc is not None and inc.status == "dispatched"
        trail = [r.action for r in await query(s, subject=f"incident:{iid}", limit=100)]
    assert "plan.action_confirmed" in trail and "plan.action_rejected" in trail
    assert trail.count("unit.assigned") == 4


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_roster_hand_over(database: Database) -> None:
    w = await World(database, shipped()).start()
    before = await w.roster.on_duty("119")
    assert [(o.rank, o.person) for o in before] == [(1, "张值班"), (2, "李副支队长")]
    w.clock.now += 8 * 3600
    await w.roster.hand_over(OfficialSpec(agency="119", rank=1, person="孙值班",
                                          email="sun@ecc.example"), actor="sup", note="夜班")
    after = await w.roster.on_duty("119")
    assert [(o.rank, o.person) for o in after] == [(1, "孙值班"), (2, "李副支队长")]
    history = await w.roster.history()
    old = next(h for h in history if h["person"] == "张值班")
    assert old["off_at"] is not None and history[0]["handed_over_by"] == "sup"
    await w.roster.start()
    assert len(await w.roster.on_duty()) == 6, "seeding never runs on a roster in use"


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_plan_activates_when_the_grade_rises_and_after_a_restart(
        database: Database) -> None:
    w = await World(database, shipped()).start()
    iid = await w.incident(grade=4)
    flood = await w.incident(category="natural_disaster", subtype="flood", grade=3, iid="inc-2")
    # The events were "lost" (no hook ran): start() finds both incidents without their plans.
    await w.plans.start()
    assert {(a.incident_id, a.plan_id) for a in await w.plans.actions()} == {
        (iid, "building-fire-IV"), (flood, "flood-III")}
    broadcast = next(a for a in await w.plans.actions(incident_id=flood) if a.kind == "broadcast")
    assert broadcast.payload["text"].startswith("【防汛提醒】23.0205,113.7518 一带发生内涝")
    assert broadcast.status == "proposed", "a public broadcast always waits for a human"
    async with database.session() as s:
        row = await s.get(IncidentRow, iid)
        assert row is not None
        row.grade = 3
    assert await w.plans.activate(iid) == ["building-fire-III"]
    async with database.session() as s:
        row = await s.get(IncidentRow, iid)
        assert row is not None
        row.status = "closed"
    async with database.session() as s:
        row = await s.get(IncidentRow, iid)
        assert row is not None
        row.grade = 1
    assert await w.plans.activate(iid) == [], "a closed incident activates nothing"


@pytest.mark.parametrize(("utc", "shift"), [
    ("2026-11-21T00:00:00+00:00", "day"),      # 08:00 local (UTC+8): the day shift starts
    ("2026-11-20T23:59:00+00:00", "night"),    # 07:59 local: still last night's shift
    ("2026-11-21T11:59:00+00:00", "day"),      # 19:59 local
    ("2026-11-21T12:00:00+00:00", "night"),    # 20:00 local
    ("2026-11-21T16:30:00+00:00", "night"),    # 00:30 local, after midnight
])
def test_shift_of_local_times(utc: str, shift: str) -> None:
    from dispatch.config import ShiftSettings
    from dispatch.stats import shift_of, summary

    shifts = (ShiftSettings(name="night", start="20:00"), ShiftSettings(name="day", start="08:00"))
    assert shift_of(dt.datetime.fromisoformat(utc), shifts, 8.0) == shift
    assert summary([]) == {"count": 0, "mean_s": None, "median_s": None, "p90_s": None}
    assert summary([float(x) for x in range(1, 11)])["p90_s"] == 9.0


async def test_answer_time_runs_from_the_call_not_the_incident(database: Database) -> None:
    """An incident that began with calls: answer time is the first call offered → the first
    answered, and call-to-dispatch starts at that call; one without a call keeps the
    incident's own open → acknowledged."""
    from dispatch.models import CallRecordRow, IncidentTransitionRow, ReportRow

    t0 = dt.datetime(2026, 11, 21, 2, 0, tzinfo=dt.UTC)

    def at(seconds: float) -> dt.datetime:
        return t0 + dt.timedelta(seconds=seconds)

    def incident(iid: str, opened: float) -> IncidentRow:
        return IncidentRow(id=iid, status="dispatched", grade=2, agencies=["119"],
                           grade_reasons=[], opened_at=at(opened), last_report_at=at(opened),
                           updated_at=at(opened))

    def step(iid: str, to: str, when: float) -> IncidentTransitionRow:
        return IncidentTransitionRow(incident_id=iid, from_status="new", to_status=to,
                                     at=at(when), actor="disp")

    def report(rid: str, iid: str, when: float) -> ReportRow:
        return ReportRow(id=rid, channel="voice", source_ref=rid, received_at=at(when),
                         text="着火了", caller="13800000000", fields={}, created_by="sip",
                         incident_id=iid)

    def cdr(cid: str, rid: str, offered: float, answered: float | None) -> CallRecordRow:
        return CallRecordRow(id=cid, sip_call_id=cid, caller="13800000000", called="119",
                             hotline="119", queue="fire", trunk="carrier", priority=1,
                             offered_at=at(offered),
                             answered_at=None if answered is None else at(answered),
                             report_id=rid, timeline=[])

    async with database.session() as s:
        # Called at 0 s, abandoned; called again at 30 s, answered at 42 s; the voice
        # report opened the incident at 45 s; dispatched at 100 s.
        s.add_all([incident("inc-call", 45), incident("inc-sms", 0)])
        await s.flush()
        s.add_all([report("r1", "inc-call", 0), report("r2", "inc-call", 45),
                   report("r3", "inc-sms", 0)])
        await s.flush()
        s.add_all([cdr("c1", "r1", 0, None), cdr("c2", "r2", 30, 42),
                   step("inc-call", "acknowledged", 60), step("inc-call", "dispatched", 100),
                   step("inc-sms", "acknowledged", 20), step("inc-sms", "dispatched", 50)])
    stats = await StatsService(database, (), 8).incidents(at(-3600), at(3600))
    assert stats["times"]["answer"]["count"] == 2
    answers = sorted(i.answer_s for i in await StatsService(database, (), 8)._load(
        at(-3600), at(3600)) if i.answer_s is not None)
    assert answers == [20.0, 42.0], "call: 0 s offered → 42 s answered; SMS: open → ack"
    assert stats["times"]["call_to_dispatch"]["median_s"] == 75.0  # (100 + 50) / 2
