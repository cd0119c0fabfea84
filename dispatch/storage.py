"""The database: engine, sessions, schema version and migrations.

SQLite (WAL) under ``var/`` is the embedded default; PostgreSQL is used by
URL.  Both go through SQLAlchemy's asyncio engine (aiosqlite, asyncpg), so the
event loop never blocks on a query.  The schema is versioned by Alembic:
SQLite upgrades itself at start by default, while on PostgreSQL the daemon
refuses an out-of-date schema and names the command to run, because several
nodes may share that database and an upgrade is an administrator's decision.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Dialect,
    Table,
    Update,
    bindparam,
    event,
    inspect,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest migration shipped (a test keeps it equal to Alembic's head).  Known
#: here so that an up-to-date start reads one row and never imports Alembic,
#: which would cost a fifth of the start-up time.
SCHEMA_HEAD = "0013"
_HOOKS = "dispatchd.after_commit"


def after_commit(session: AsyncSession, hook: Callable[[], object]) -> None:
    """Run ``hook`` once the session's transaction has committed (never on rollback).

    Events about a change are published this way, so a console never sees a
    change that the database then rolled back.
    """
    session.sync_session.info.setdefault(_HOOKS, []).append(hook)


def _run_hooks(session: Session) -> None:
    for hook in session.info.pop(_HOOKS, []):
        try:
            hook()
        except Exception:  # the data is committed; a failing hook must not hide that
            log.exception("after-commit hook failed")


def _drop_hooks(session: Session, *_args: Any) -> None:
    session.info.pop(_HOOKS, None)


class Transaction:
    """A Core connection inside a transaction, for batch writers that need no ORM session.

    ``after_commit`` hooks run once the transaction has committed, never on rollback,
    as :func:`after_commit` does for a session.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        """Wrap ``conn`` (already in a transaction)."""
        self.conn = conn
        self.hooks: list[Callable[[], object]] = []

    def after_commit(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` after the commit."""
        self.hooks.append(hook)


class SchemaOutOfDate(RuntimeError):
    """The database schema is older (or newer) than this code expects."""


@dataclass(frozen=True)
class SchemaStatus:
    """Where the database's schema is, against where the code wants it."""

    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        """True when the database is at the code's newest migration."""
        return self.current == self.head


def async_url(url: str) -> str:
    """Pick the asyncio driver for a plain ``sqlite://`` or ``postgresql://`` URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (consoles, API) run while the writer commits; NORMAL
    # sync is durable across process crashes, which is what SIGKILL tests need.
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "busy_timeout=5000",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


@lru_cache(maxsize=64)
def _update_sql(table: Table, key: str, columns: tuple[str, ...], dialect: Dialect
                ) -> tuple[str, tuple[Callable[[Any], Any] | None, ...]]:
    """PostgreSQL's one-statement UPDATE of many rows, and each parameter's bind processor."""
    names = (key, *columns)
    arrays, sets = [], []
    for n, name in enumerate(names, 1):
        column = table.c[name]
        is_json = isinstance(column.type, JSON)
        sql_type = "TEXT" if is_json else column.type.compile(dialect=dialect)
        arrays.append(f"${n}::{sql_type}[]")
        if name != key:
            sets.append(f'"{name}" = v."{name}"' + ("::JSON" if is_json else ""))
    alias = ", ".join(f'"{name}"' for name in names)
    sql = (f'UPDATE "{table.name}" SET {", ".join(sets)} FROM unnest({", ".join(arrays)}) '
           f'AS v({alias}) WHERE "{table.name}"."{key}" = v."{key}"')
    processors = tuple(table.c[name].type._cached_bind_processor(dialect) for name in names)
    return sql, processors


@lru_cache(maxsize=64)
def _update_stmt(table: Table, key: str, columns: tuple[str, ...]) -> Update:
    return update(table).where(table.c[key] == bindparam(f"b_{key}")).values(
        {c: bindparam(f"b_{c}") for c in columns})


async def update_many(conn: AsyncConnection, table: Table, key: str,
                      columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """``UPDATE table SET columns WHERE key = ...`` for each row (a mapping of column values).

    On PostgreSQL one statement writes them all (``UPDATE ... FROM unnest(arrays)``): asyncpg's
    executemany would run the UPDATE once per row on the server.  SQLite, in process, keeps the
    executemany.  When two rows name the same key the later one wins, as it would one by one.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        await conn.execute(_update_stmt(table, key, tuple(columns)),
                           [{f"b_{c}": row[c] for c in (key, *columns)} for row in rows])
        return
    sql, processors = _update_sql(table, key, tuple(columns), conn.dialect)
    last = {row[key]: row for row in rows}.values()
    params = tuple([p(row[name]) if p else row[name] for row in last]
                   for name, p in zip((key, *columns), processors, strict=True))
    await conn.exec_driver_sql(sql, params)


def _ping(dbapi_connection: Any) -> bool:
    """The pool's check that a connection still works, in one round trip.

    SQLAlchemy's asyncpg ping wraps an empty statement in BEGIN and ROLLBACK: three
    round trips on every checkout, as many as a batch writer's real statements.  This
    runs the empty statement through the DBAPI cursor instead, which begins the
    transaction the checkout's work then uses; a dead connection raises the driver's
    error, which the pool takes as a disconnect, as before.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(";")
    finally:
        cursor.close()
    return True


def schema_head() -> str:
    """The newest migration in ``migrations/versions``, as Alembic sees it."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


class Database:
    """An async engine and session factory for one database URL."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        """Create the engine (no connection is made until first use)."""
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_size=pool_size, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            # asyncpg's executemany runs the INSERT once per row on the server; this
            # makes SQLAlchemy send a batch's rows as one multi-row INSERT (pages of
            # 1000), as it already does for an INSERT ... RETURNING and for psycopg2.
            self.engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
            self.engine.sync_engine.dialect.do_ping = _ping  # type: ignore[method-assign]
        session_class = type("DispatchdSession", (Session,), {})
        event.listen(session_class, "after_commit", _run_hooks)
        event.listen(session_class, "after_soft_rollback", _drop_hooks)
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=session_class
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success, rolls back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A Core transaction: commits on success, rolls back on error, then runs hooks.

        Cheaper than :meth:`session` for executemany statements on hot paths.
        """
        async with self.engine.begin() as conn:
            tx = Transaction(conn)
            yield tx
        for hook in tx.hooks:
            try:
                hook()
            except Exception:  # the data is committed; a failing hook must not hide that
                log.exception("after-commit hook failed")

    async def schema_status(self) -> SchemaStatus:
        """The current and wanted schema revisions."""
        def current(conn: Connection) -> str | None:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

        async with self.engine.connect() as conn:
            return SchemaStatus(current=await conn.run_sync(current), head=SCHEMA_HEAD)

    async def upgrade(self, revision: str = "head") -> SchemaStatus:
        """Apply every migration up to ``revision``."""
        from alembic import command

        cfg = _alembic_config()

        def run(conn: Connection) -> None:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

        async with self.engine.begin() as conn:
            await conn.run_sync(run)
        return await self.schema_status()

    async def ensure_schema(self, auto_migrate: bool) -> SchemaStatus:
        """Upgrade if allowed, else refuse an out-of-date schema by raising."""
        status = await self.schema_status()
        if status.up_to_date:
            return status
        if auto_migrate:
            log.info(
                "upgrading database schema",
                extra={"from_rev": status.current, "to_rev": status.head},
            )
            return await self.upgrade()
        raise SchemaOutOfDate(
            f"database schema is at {status.current or 'nothing'}, this dispatchd needs "
            f"{status.head}: run `dispatchd db upgrade -c CONFIG` (or set "
            "database.auto_migrate = true)"
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
