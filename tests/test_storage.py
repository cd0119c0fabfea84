"""Storage on SQLite and PostgreSQL: migrations, the audit trail, users and tokens."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from dispatch.audit import AuditTrail, query
from dispatch.auth import AuthError, Role, UserExists, UserStore
from dispatch.models import AuditEntry, Base, DutyLogEntry
from dispatch.storage import SCHEMA_HEAD, Database, SchemaOutOfDate, schema_head

UTC = dt.UTC


class StepClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_fresh_database_is_out_of_date_and_refused_without_auto_migrate(db_url: str) -> None:
    db = Database(db_url)
    try:
        status = await db.schema_status()
        assert status.current is None and not status.up_to_date
        with pytest.raises(SchemaOutOfDate, match=r"run `dispatchd db upgrade -c CONFIG`"):
            await db.ensure_schema(auto_migrate=False)
        status = await db.ensure_schema(auto_migrate=True)
        assert status.up_to_date and status.current == status.head
    finally:
        await db.close()


def test_schema_head_constant_matches_the_migrations() -> None:
    assert schema_head() == SCHEMA_HEAD


async def test_migrations_match_models(database: Database) -> None:
    def diff(conn: Any) -> list[Any]:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)

    async with database.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_audit_trail_is_append_only(database: Database) -> None:
    published: list[object] = []
    trail = AuditTrail(published.append, StepClock())
    async with database.session() as s:
        trail.record(s, actor="alice", action="incident.created", subject="incident:1",
                     details={"grade": "IV", "reason": "两人受伤"})
    assert [type(e).__name__ for e in published] == ["AuditRecorded"]
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with database.session() as s:
                await s.execute(text(statement))
    async with database.session() as s:
        rows = await query(s)
        assert [(r.actor, r.details["reason"]) for r in rows] == [("alice", "两人受伤")]
        assert rows[0].at == dt.datetime.fromtimestamp(1_800_000_000.0, UTC)


async def test_audit_row_shares_the_transaction_of_its_change(database: Database) -> None:
    published: list[object] = []
    trail = AuditTrail(published.append, StepClock())
    with pytest.raises(RuntimeError):
        async with database.session() as s:
            s.add(DutyLogEntry(at=dt.datetime.now(UTC), author="bob", text="x"))
            trail.record(s, actor="bob", action="duty_log.written", subject="duty_log:?")
            await s.flush()
            raise RuntimeError("the change fails after the audit row was added")
    async with database.session() as s:
        assert (await s.scalars(select(AuditEntry))).all() == []
        assert (await s.scalars(select(DutyLogEntry))).all() == []
    assert published == [], "no event for a rolled-back change"


async def test_audit_query_filters_and_pages(database: Database) -> None:
    trail = AuditTrail(lambda e: None, StepClock())
    async with database.session() as s:
        for i in range(5):
            trail.record(s, actor="sys", action="a" if i % 2 else "b", subject=f"x:{i}")
    async with database.session() as s:
        newest = await query(s, limit=2)
        assert [r.subject for r in newest] == ["x:4", "x:3"]
        older = await query(s, limit=10, before_id=newest[-1].id)
        assert [r.subject for r in older] == ["x:2", "x:1", "x:0"]
        assert [r.subject for r in await query(s, action="a")] == ["x:3", "x:1"]


async def _store(database: Database, clock: StepClock) -> tuple[UserStore, list[object]]:
    published: list[object] = []
    return UserStore(database, AuditTrail(published.append, clock), clock,
                     max_failures=3, lockout_s=60), published


async def test_users_tokens_and_roles(database: Database) -> None:
    clock = StepClock()
    users, _ = await _store(database, clock)
    await users.add_user("alice", Role.SUPERVISOR, "correct horse", actor="test")
    with pytest.raises(UserExists):
        await users.add_user("alice", Role.ADMIN, "another pass", actor="test")
    issued = await users.login("alice", "correct horse", ttl_s=600, source="127.0.0.1")
    who = await users.authenticate(issued.token)
    assert (who.name, who.role) == ("alice", Role.SUPERVISOR)
    clock.now += 601
    with pytest.raises(AuthError):
        await users.authenticate(issued.token)
    api = await users.issue_api_token("alice", "cad-bridge", actor="test")
    assert (await users.authenticate(api.token)).name == "alice"
    await users.revoke(api.id, actor="alice")
    with pytest.raises(AuthError):
        await users.authenticate(api.token)
    api2 = await users.issue_api_token("alice", "again", actor="test")
    await users.update("alice", actor="admin", disabled=True)
    with pytest.raises(AuthError):
        await users.authenticate(api2.token)


async def test_login_lockout_and_no_user_enumeration(database: Database) -> None:
    clock = StepClock()
    users, _ = await _store(database, clock)
    await users.add_user("bob", Role.CALL_TAKER, "right password", actor="test")
    messages = set()
    for name, password in [("bob", "wrong"), ("nobody", "wrong"), ("bob", "wrong"),
                           ("bob", "wrong")]:
        with pytest.raises(AuthError) as err:
            await users.login(name, password, ttl_s=60, source="t")
        messages.add(str(err.value))
    assert len(messages) == 1, "unknown user and wrong password must look the same"
    with pytest.raises(AuthError):  # locked: even the right password is refused
        await users.login("bob", "right password", ttl_s=60, source="t")
    clock.now += 61
    await users.login("bob", "right password", ttl_s=60, source="t")
    async with database.session() as s:
        actions = [r.action for r in await query(s, subject="user:bob")]
    assert actions.count("auth.login_failed") == 4 and actions[0] == "auth.login"


async def test_password_rules(database: Database) -> None:
    users, _ = await _store(database, StepClock())
    with pytest.raises(ValueError, match="8 to 1024"):
        await users.add_user("carol", Role.ADMIN, "short", actor="t")
    with pytest.raises(KeyError):
        await users.update("nobody", actor="t", role=Role.ADMIN)
