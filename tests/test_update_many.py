"""``storage.update_many``, multi-row INSERTs and the pool ping: fewer round trips, same results.

On PostgreSQL a batch UPDATE is one ``UPDATE ... FROM unnest(...)`` statement and a batch
INSERT one multi-row INSERT (asyncpg's executemany would run each once per row); SQLite
keeps its in-process executemany.  Either way each row ends up as it would one by one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import asyncpg
from sqlalchemy import Table, event, insert, select, text

from dispatch.models import CallRecordRow
from dispatch.storage import Database, update_many

CDR = cast(Table, CallRecordRow.__table__)
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def cdr(i: int) -> dict[str, Any]:
    return {"id": f"c{i}", "sip_call_id": f"s{i}", "caller": "138", "called": "110",
            "hotline": "110", "queue": "police", "trunk": "t", "priority": 1, "agent_id": "",
            "outcome": None, "cause": "", "released_by": "", "offered_at": T0,
            "answered_at": None, "released_at": None, "report_id": None, "timeline": []}


class Statements:
    """What the driver is handed: (verb, how many times the driver runs it).

    An executemany hands a list of parameter rows (run once per row); a single execution
    (PostgreSQL's multi-row INSERT included) hands one parameter tuple.
    """

    def __init__(self, db: Database) -> None:
        self.seen: list[tuple[str, int]] = []
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._heard)

    def _heard(self, _conn: Any, _cursor: Any, statement: str, params: Any, _context: Any,
               executemany: bool) -> None:
        runs = len(params) if executemany and isinstance(params, list) else 1
        self.seen.append((statement.split()[0].upper(), runs))


async def test_update_many_writes_each_row_and_the_last_of_a_key_wins(
        database: Database) -> None:
    async with database.transaction() as tx:
        await tx.conn.execute(insert(CDR), [cdr(i) for i in range(5)])
    later = T0 + dt.timedelta(seconds=30)
    async with database.transaction() as tx:
        await update_many(tx.conn, CDR, "id", ("agent_id", "answered_at", "timeline", "priority"), [
            {"id": "c0", "agent_id": "a0", "answered_at": later,
             "timeline": [{"kind": "answered", "after_s": 2.5}], "priority": 3},
            {"id": "c1", "agent_id": "first", "answered_at": None, "timeline": [], "priority": 1},
            {"id": "c2", "agent_id": "a2", "answered_at": None, "timeline": None, "priority": 2},
            {"id": "c1", "agent_id": "second", "answered_at": later, "timeline": [{"k": "v"}],
             "priority": 4},
            {"id": "nobody", "agent_id": "x", "answered_at": None, "timeline": [], "priority": 9},
        ])
        await update_many(tx.conn, CDR, "id", ("agent_id",), [])
    async with database.engine.connect() as conn:
        rows = {r["id"]: r for r in (await conn.execute(select(CDR).order_by(CDR.c.id)))
                .mappings()}
    assert sorted(rows) == ["c0", "c1", "c2", "c3", "c4"]
    assert (rows["c0"]["agent_id"], rows["c0"]["answered_at"], rows["c0"]["priority"]) == (
        "a0", later, 3)
    assert rows["c0"]["timeline"] == [{"kind": "answered", "after_s": 2.5}]
    assert (rows["c1"]["agent_id"], rows["c1"]["answered_at"], rows["c1"]["timeline"]) == (
        "second", later, [{"k": "v"}])
    assert (rows["c2"]["agent_id"], rows["c2"]["timeline"]) == ("a2", None)
    for untouched in ("c3", "c4"):  # columns and rows not named are left as they were
        assert {k: v for k, v in rows[untouched].items()} == cdr(int(untouched[1:]))
    assert rows["c0"]["sip_call_id"] == "s0" and rows["c0"]["offered_at"] == T0


async def test_a_batch_is_one_statement_on_postgresql(database: Database) -> None:
    heard = Statements(database)
    async with database.transaction() as tx:
        await tx.conn.execute(insert(CDR), [cdr(i) for i in range(40)])
        await update_many(tx.conn, CDR, "id", ("report_id",),
                          [{"id": f"c{i}", "report_id": f"r{i}"} for i in range(40)])
    async with database.engine.connect() as conn:
        linked = dict((await conn.execute(select(CDR.c.id, CDR.c.report_id))).all())
    assert linked == {f"c{i}": f"r{i}" for i in range(40)}
    writes = [s for s in heard.seen if s[0] in ("INSERT", "UPDATE")]
    if database.dialect == "postgresql":
        assert writes == [("INSERT", 1), ("UPDATE", 1)]
    else:  # SQLite's executemany runs in process: no round trips to save
        assert writes == [("INSERT", 40), ("UPDATE", 40)]


async def test_a_pooled_connection_the_server_dropped_is_replaced_at_checkout(
        database: Database) -> None:
    """The one-round-trip pre-ping still finds a dead connection before the work uses it."""
    if database.dialect != "postgresql":
        return  # SQLite has no server to drop a connection
    async with database.engine.connect() as conn:
        victim = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    killer = await asyncpg.connect(database.url)  # not from the pool
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", victim) is True
    finally:
        await killer.close()
    async with database.transaction() as tx:  # checks out the pooled connections again
        await tx.conn.execute(insert(CDR), [cdr(1)])
    async with database.engine.connect() as conn:
        assert (await conn.execute(select(CDR.c.id))).scalars().all() == ["c1"]
        assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != victim
