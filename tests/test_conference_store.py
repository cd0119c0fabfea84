"""Conference rows and audit, recording retention on a stepped clock, dial targets, settings.

The stored parts run on SQLite and PostgreSQL (the ``database`` fixture); the
retention sweeper deletes real files in a temporary recordings directory as
the injected wall clock is stepped past the retention.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from dispatch.audit import AuditTrail
from dispatch.conference_service import ConferenceService, unit_target
from dispatch.config import ConfigError, parse_settings
from dispatch.events import Envelope
from dispatch.models import AuditEntry, CallRecordRow, ConferenceRow, UnitRow
from dispatch.recording_retention import DAY_S, RecordingExpired, RecordingSweeper
from dispatch.storage import Database
from telephony.b2bua.conference import ConferenceChanged, ConferenceError, DialTarget, parse_target

T0 = 1_790_000_000.0  # 2026-09-21


class Clock:
    """A wall clock the test steps."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def recording(directory: Path, call_id: str, mtime: float) -> Path:
    """A recording file (and its .sha256) last written at ``mtime``."""
    day = directory / "2026-09-21"
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"{call_id}-20260921T000000Z.wav"
    path.write_bytes(b"RIFF....WAVE")
    side = path.with_name(path.name + ".sha256")
    side.write_text("0" * 64 + f"  {path.name}\n")
    for p in (path, side):
        os.utime(p, (mtime, mtime))
    return path


async def test_retention_sweeper_deletes_expired_recordings_on_a_stepped_clock(
    database: Database, tmp_path: Path
) -> None:
    rec = tmp_path / "rec"
    old_call, new_call = str(uuid.uuid4()), str(uuid.uuid4())
    old = recording(rec, old_call, T0)
    new = recording(rec, new_call, T0 + 5 * DAY_S)
    (rec / "2026-09-21" / "notes.txt").write_text("not a recording")
    os.utime(rec / "2026-09-21" / "notes.txt", (T0 - 100 * DAY_S, T0 - 100 * DAY_S))
    async with database.session() as s:
        s.add(CallRecordRow(id=old_call, sip_call_id="x", caller="13800000000", called="110",
                            hotline="110", queue="police", trunk="", priority=0,
                            agent_id="alice", outcome="answered", cause="", released_by="",
                            offered_at=dt.datetime.fromtimestamp(T0, dt.UTC),
                            timeline=[{"kind": "recording", "path": str(old)}]))
    clock = Clock(T0 + 10 * DAY_S)
    published: list[object] = []
    sweeper = RecordingSweeper(rec, 30, database, AuditTrail(lambda e: None, clock), clock,
                               published.append)

    assert await sweeper.sweep() == []  # nothing is 30 days old yet
    assert old.exists() and new.exists()

    clock.now = T0 + 31 * DAY_S
    assert await sweeper.sweep() == [str(old)]
    assert not old.exists() and not Path(f"{old}.sha256").exists()
    assert new.exists() and Path(f"{new}.sha256").exists()
    async with database.session() as s:
        row = await s.get(CallRecordRow, old_call)
        assert row is not None
        deleted = [t for t in row.timeline if t["kind"] == "recording_deleted"]
        audit = list(await s.scalars(select(AuditEntry).where(
            AuditEntry.action == "recording.expired")))
    assert deleted == [{"kind": "recording_deleted", "path": str(old), "reason": "retention",
                        "at": dt.datetime.fromtimestamp(clock.now, dt.UTC).isoformat()}]
    assert [(a.actor, a.subject) for a in audit] == [("system", f"call:{old_call}")]
    assert json.loads(json.dumps(audit[0].details))["age_days"] == 31.0
    assert published == [RecordingExpired(str(old), old_call, 31.0)]

    clock.now = T0 + 36 * DAY_S
    assert await sweeper.sweep() == [str(new)]  # no CDR for it: audited all the same
    assert (rec / "2026-09-21" / "notes.txt").exists()  # only recordings are touched
    assert sweeper.health()["deleted"] == 2


async def test_conference_changes_become_a_row_with_history_and_audit_rows(
    database: Database
) -> None:
    clock = Clock(T0)
    no_sip = SimpleNamespace(open_conferences=lambda: [])  # the writer alone, no B2BUA
    service = ConferenceService(cast(Any, no_sip), "dispatch.test", database,
                                AuditTrail(lambda e: None, clock), clock)
    await service.start()
    conf = str(uuid.uuid4())
    steps = [("created", "", "", "cc1", "flood"), ("ringing", "l0", "user:u1", "cc1", ""),
             ("joined", "l0", "user:u1", "cc1", ""), ("muted", "l0", "", "sup", ""),
             ("left", "l0", "user:u1", "remote", "hung up"), ("ended", "", "", "sup", "done")]
    for i, (step, leg, target, actor, detail) in enumerate(steps):
        service(Envelope(i, T0, "conference.changed", ConferenceChanged(
            conf, step, leg, target, actor, detail, T0 + i, "flood talk", "")))
    # A call's room has no conference row: its changes are audited only.
    service(Envelope(9, T0, "conference.changed", ConferenceChanged(
        "call-1", "muted", "call-1:caller", "", "sup", "", T0, "call 1", "")))
    await service.stop()
    async with database.session() as s:
        row = await s.get(ConferenceRow, conf)
        audit = list(await s.scalars(select(AuditEntry).where(
            AuditEntry.action.like("conference.%")).order_by(AuditEntry.id)))
    assert row is not None
    assert (row.name, row.created_by, row.ended_by, row.end_reason) == (
        "flood talk", "cc1", "sup", "done")
    assert row.ended_at == dt.datetime.fromtimestamp(T0 + 5, dt.UTC)
    assert [h["step"] for h in row.history] == [s[0] for s in steps]
    assert [(a.action, a.actor, a.subject) for a in audit][-2:] == [
        ("conference.ended", "sup", f"conference:{conf}"),
        ("conference.muted", "sup", "conference:call-1")]
    assert len(audit) == len(steps) + 1


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("alice", "user", "alice"),
    ("+8613800138000", "number", "+8613800138000"),
    ("110", "number", "110"),
    ("sip:u1@dispatch.test", "user", "u1"),
    ("sip:u1@DISPATCH.test", "user", "u1"),
    ("sip:u1@dispatch.test:5070", "uri", "sip:u1@dispatch.test:5070"),
    ("sip:e101@ecc.example", "uri", "sip:e101@ecc.example"),
])
def test_dial_targets(text: str, kind: str, value: str) -> None:
    assert parse_target(text, "dispatch.test") == DialTarget(kind, value)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "a\r\nb", "sip:@host", "sip:a b@host", "x" * 300,
                                  "tel:+86138", "al ice", "sip:u1@host\x00"])
def test_bad_dial_targets_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text, "dispatch.test")


@given(st.one_of(st.text(max_size=300),
                 st.builds(lambda rest: "sip:" + rest, st.text(max_size=100)),
                 st.builds(lambda user, rest: f"sip:{user}@{rest}",
                           st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), st.text(max_size=60))))
def test_any_text_is_a_dial_target_or_a_value_error(text: str) -> None:
    try:
        target = parse_target(text, "dispatch.test")
    except ValueError:
        return
    # Whatever is accepted is safe to put in a Request-URI and a To header.
    assert target.value.isprintable() and not any(c in target.value for c in "\r\n<>\" ")


def test_a_unit_is_called_on_its_sip_uri_else_phone_else_satphone() -> None:
    def unit(**contacts: str) -> UnitRow:
        row = UnitRow(id="U-1", name="boat", sip_uri="", phone="", satphone="")
        for key, value in contacts.items():
            setattr(row, key, value)
        return row

    assert str(unit_target(unit(sip_uri="sip:u1@d.test", phone="+8613800000001"), "d.test")
               ) == "user:u1"
    assert str(unit_target(unit(phone="+8613800000001", satphone="+870772000001"), "d.test")
               ) == "number:+8613800000001"
    assert str(unit_target(unit(satphone="+870772000001"), "d.test")) == "number:+870772000001"
    with pytest.raises(ConferenceError) as err:
        unit_target(unit(), "d.test")
    assert err.value.status == 409


@pytest.mark.parametrize(("text", "expected"), [
    ("[media]\nrecording_retention_days = -1",
     "f.toml: media.recording_retention_days: Input should be greater than or equal to 0"),
    ("[media]\njoin_tone = \"../etc/passwd\"", "f.toml: media.join_tone: String should match"),
    ("[media]\nretention = 3", "f.toml: media.retention: "),
])
def test_media_settings_refuse_bad_values(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(tomllib.loads(text), "f.toml")
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems


def test_media_retention_defaults_to_keeping_recordings() -> None:
    media = parse_settings({}, "f").media
    assert (media.recording_retention_days, media.join_tone, media.leave_tone) == (
        0, "join", "leave")
