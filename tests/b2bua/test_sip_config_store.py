"""The SIP configuration (strict, key paths named) and the SQL registrar stores."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dispatch.config import ConfigError, parse_settings
from dispatch.sip_store import AccountError, SqlBindingStore, SqlCredentialStore
from telephony.registrar.store import Binding, ha1

ROOT = Path(__file__).resolve().parents[2]
GOOD = """
[sip]
enabled = true
[routing]
fallback = "110"
[[hotlines]]
number = "110"
queue = "police"
[[queues]]
name = "police"
[[trunks]]
name = "carrier"
address = "127.0.0.1:5080"
max_calls = 2
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_settings(tomllib.loads(text), "f.toml")
    return err.value.problems


def test_good_telephony_config_loads() -> None:
    settings = parse_settings(tomllib.loads(GOOD), "f.toml")
    tel = settings.telephony()
    assert tel.trunks[0].name == "carrier" and tel.trunks[0].max_calls == 2
    assert tel.trunks[0].matches_source("127.0.0.1", 1234)
    assert not tel.trunks[0].matches_source("10.0.0.1", 5080)
    assert tel.routing.fallback.number == "110"


@pytest.mark.parametrize(("change", "expected"), [
    (("max_calls = 2", "max_calls = 2\nbogus = 1"), "f.toml: trunks[0].bogus: unknown key"),
    (("max_calls = 2", "max_calls = 0"), "f.toml: trunks[0].max_calls: must be >= 1"),
    (('address = "127.0.0.1:5080"', 'address = "carrier.example"'),
     "f.toml: trunks[0].address: must be HOST:PORT, not 'carrier.example'"),
    (('address = "127.0.0.1:5080"', 'address = "carrier.example:5060"'),
     "f.toml: trunks[0].address: the host must be an IP address "
     "(names would be resolved on the event loop)"),
    (('fallback = "110"', 'fallback = "999"'),
     "f.toml: routing.fallback: no hotline numbered '999'"),
    (('queue = "police"', 'queue = "nope"'), "f.toml: hotlines[0].queue: no queue named 'nope'"),
    (('name = "police"', 'name = "police"\nring_timeout = -1'),
     "f.toml: queues[0].ring_timeout: must be > 0"),
    (("enabled = true", "enabled = true\nlisten = [{transport = \"sctp\"}]"),
     "f.toml: sip.listen[0].transport: Input should be 'udp', 'tcp' or 'tls'"),
    (("enabled = true", "enabled = true\n[sip.registrar]\nbogus = 1"),
     "f.toml: sip.registrar.bogus: unknown key"),
    (("enabled = true", "enabled = true\nlisten = [{transport = \"tls\"}]"),
     "f.toml: sip: a tls listener needs tls_cert and tls_key"),
])
def test_each_problem_names_its_key(change: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*change, 1)
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_sip_enabled_needs_routing() -> None:
    assert problems("[sip]\nenabled = true\n") == ["f.toml: routing.fallback: is required"]


def test_unknown_trunk_key_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("max_calls = 2", "max_calls = 2\nmax_cals = 3"))
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "check-config", str(bad)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip() == f"{bad}: trunks[0].max_cals: unknown key"


class Clock:
    now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_credentials_store_hashes_only(database: object) -> None:
    from sqlalchemy import select

    from dispatch.models import SipAccount

    store = SqlCredentialStore(database, Clock())  # type: ignore[arg-type]
    await store.add("1001", "dispatch.test", "correct-horse", "Wang")
    assert await store.ha1("1001", "dispatch.test", "MD5") == ha1(
        "1001", "dispatch.test", "correct-horse", "MD5")
    assert await store.ha1("1001", "dispatch.test", "SHA-256") == ha1(
        "1001", "dispatch.test", "correct-horse", "SHA-256")
    assert await store.ha1("1001", "other.realm", "MD5") is None
    assert await store.ha1("nobody", "dispatch.test", "MD5") is None
    async with database.session() as s:  # type: ignore[attr-defined]
        row = (await s.scalars(select(SipAccount))).one()
    assert "correct-horse" not in repr(vars(row))
    with pytest.raises(AccountError):
        await store.add("1001", "dispatch.test", "another-pass")
    with pytest.raises(AccountError):
        await store.add("bad name", "dispatch.test", "another-pass")
    with pytest.raises(AccountError):
        await store.add("1002", "dispatch.test", "short")
    await store.update("1001", disabled=True)
    assert await store.ha1("1001", "dispatch.test", "MD5") is None
    await store.update("1001", disabled=False, realm="dispatch.test", password="new-password")
    assert await store.ha1("1001", "dispatch.test", "MD5") == ha1(
        "1001", "dispatch.test", "new-password", "MD5")
    with pytest.raises(KeyError):
        await store.update("ghost", disabled=True)
    assert [a.username for a in await store.all()] == ["1001"]


def binding(aor: str, contact: str, expires_at: float) -> Binding:
    return Binding(aor, contact, expires_at, "cid", 1, "UDP", "127.0.0.1", 5062, 0.5, "ua", 1.0)


async def test_binding_store_replaces_expires_and_survives(database: object) -> None:
    store = SqlBindingStore(database)  # type: ignore[arg-type]
    a = binding("sip:a@d", "sip:a@h:1", 100.0)
    b = binding("sip:a@d", "sip:a@h:2", 200.0)
    c = binding("sip:c@d", "sip:c@h:1", 150.0)
    await store.replace("sip:a@d", [a, b])
    await store.replace("sip:c@d", [c])
    assert sorted(x.contact for x in await store.get("sip:a@d")) == ["sip:a@h:1", "sip:a@h:2"]
    assert await store.count() == 3
    # A new store on the same database (a restart) sees the same bindings.
    again = SqlBindingStore(database)  # type: ignore[arg-type]
    assert (await again.get("sip:c@d")) == [c]
    gone = await again.expire(150.0)
    assert sorted(x.contact for x in gone) == ["sip:a@h:1", "sip:c@h:1"]
    assert [x.contact for x in await again.get("sip:a@d")] == ["sip:a@h:2"]
    await again.replace("sip:a@d", [])
    assert await again.count() == 0


async def test_reports_owed_by_a_previous_run_are_filed_once(database: object) -> None:
    import datetime as dt

    from dispatch.audit import AuditTrail
    from dispatch.call_records import CallRecorder
    from dispatch.models import CallRecordRow, ReportRow
    from dispatch.reports import ReportService

    clock = Clock()
    audit = AuditTrail(lambda e: None, clock)
    reports = ReportService(database, audit, lambda e: None, clock)  # type: ignore[arg-type]
    await reports.start()
    now = dt.datetime.now(dt.UTC)
    async with database.session() as s:  # type: ignore[attr-defined]
        for call_id, outcome in (("c1", "answered"), ("c2", "abandoned"), ("c3", None)):
            s.add(CallRecordRow(id=call_id, sip_call_id="x", caller="13800138000", called="110",
                                hotline="110", queue="police", trunk="carrier", priority=30,
                                agent_id="alice" if outcome == "answered" else "",
                                outcome=outcome, cause="", released_by="", offered_at=now,
                                timeline=[]))
    recorder = CallRecorder(database, audit, reports, clock)  # type: ignore[arg-type]
    assert await recorder.refile() == 2
    assert await recorder.refile() == 0
    from sqlalchemy import select

    async with database.session() as s:  # type: ignore[attr-defined]
        rows = {r.id: r.report_id for r in await s.scalars(select(CallRecordRow))}
        filed = list(await s.scalars(select(ReportRow)))
    assert rows["c1"] and rows["c2"] and rows["c3"] is None
    assert sorted(r.source_ref for r in filed) == ["c1", "c2"]
    assert all(r.channel == "voice" and r.caller == "13800138000" for r in filed)
