"""SQL-backed registrar stores: SIP accounts (HA1 only) and bindings.

:class:`SqlCredentialStore` keeps, per account, the realm and H(user:realm:password)
for MD5 and SHA-256 — never the password.  :class:`SqlBindingStore` keeps
every binding in ``sip_bindings`` so registrations survive a restart (and are
seen by every node sharing the database); the registrar's sweeper deletes
them when they expire.  Each AoR update is one transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select

from dispatch.models import SipAccount, SipBindingRow
from dispatch.storage import Database
from telephony.registrar.store import Binding, base_algorithm, ha1

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256


class AccountError(ValueError):
    """A bad user name or password, or a duplicate/missing account."""


@dataclass(frozen=True)
class AccountInfo:
    """What ``sip account list`` shows (never a secret)."""

    username: str
    realm: str
    display_name: str
    disabled: bool


def _row_to_binding(row: SipBindingRow) -> Binding:
    return Binding(row.aor, row.contact, row.expires_at, row.call_id, row.cseq,
                   row.source_transport, row.source_host, row.source_port, row.q,
                   row.user_agent, row.registered_at)


class SqlBindingStore:
    """:class:`~telephony.registrar.store.BindingStore` over ``sip_bindings``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, aor: str) -> list[Binding]:
        """Every stored binding of ``aor``."""
        async with self.db.session() as s:
            rows = await s.scalars(select(SipBindingRow).where(SipBindingRow.aor == aor))
            return [_row_to_binding(r) for r in rows]

    async def replace(self, aor: str, bindings: Sequence[Binding]) -> None:
        """Make ``bindings`` the complete set for ``aor`` (one transaction)."""
        async with self.db.session() as s:
            await s.execute(delete(SipBindingRow).where(SipBindingRow.aor == aor))
            for b in bindings:
                s.add(SipBindingRow(
                    aor=b.aor, contact=b.contact[:512], expires_at=b.expires_at,
                    call_id=b.call_id[:200], cseq=b.cseq, source_transport=b.source_transport,
                    source_host=b.source_host[:64], source_port=b.source_port, q=b.q,
                    user_agent=b.user_agent[:200], registered_at=b.registered_at))

    async def expire(self, now: float) -> list[Binding]:
        """Delete and return every binding due at ``now``."""
        async with self.db.session() as s:
            rows = list(await s.scalars(
                select(SipBindingRow).where(SipBindingRow.expires_at <= now)))
            if rows:
                await s.execute(delete(SipBindingRow).where(
                    SipBindingRow.id.in_([r.id for r in rows])))
            return [_row_to_binding(r) for r in rows]

    async def count(self) -> int:
        """Number of stored bindings."""
        async with self.db.session() as s:
            return int(await s.scalar(select(func.count()).select_from(SipBindingRow)) or 0)


class SqlCredentialStore:
    """:class:`~telephony.registrar.store.CredentialStore` over ``sip_accounts``."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    async def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """The stored HA1 for an enabled account of ``realm``, else None."""
        if not USERNAME.match(username):
            return None
        async with self.db.session() as s:
            row = await s.get(SipAccount, username)
        if row is None or row.disabled or row.realm != realm:
            return None
        return row.ha1_md5 if base_algorithm(algorithm) == "MD5" else row.ha1_sha256

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    @staticmethod
    def _check(username: str, password: str | None) -> None:
        if not USERNAME.match(username):
            raise AccountError(f"bad SIP user name {username!r}: letters, digits, _ . + -")
        if password is not None and not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise AccountError(f"a SIP password needs {MIN_PASSWORD} to {MAX_PASSWORD} "
                               "characters")

    async def add(self, username: str, realm: str, password: str,
                  display_name: str = "") -> None:
        """Create an account; AccountError if it exists or the input is bad."""
        self._check(username, password)
        async with self.db.session() as s:
            if await s.get(SipAccount, username) is not None:
                raise AccountError(f"SIP account {username!r} already exists")
            now = self._now()
            s.add(SipAccount(username=username, realm=realm,
                             ha1_md5=ha1(username, realm, password, "MD5"),
                             ha1_sha256=ha1(username, realm, password, "SHA-256"),
                             display_name=display_name[:128], disabled=False,
                             created_at=now, updated_at=now))

    async def update(self, username: str, *, realm: str | None = None,
                     password: str | None = None, disabled: bool | None = None) -> None:
        """Set a new password (with ``realm``) and/or enable/disable; KeyError if unknown."""
        self._check(username, password)
        async with self.db.session() as s:
            row = await s.get(SipAccount, username)
            if row is None:
                raise KeyError(username)
            if password is not None:
                assert realm is not None
                row.realm = realm
                row.ha1_md5 = ha1(username, realm, password, "MD5")
                row.ha1_sha256 = ha1(username, realm, password, "SHA-256")
            if disabled is not None:
                row.disabled = disabled
            row.updated_at = self._now()

    async def all(self) -> list[AccountInfo]:
        """Every account, by name."""
        async with self.db.session() as s:
            rows = await s.scalars(select(SipAccount).order_by(SipAccount.username))
            return [AccountInfo(r.username, r.realm, r.display_name, r.disabled) for r in rows]


class CachedBindingStore:
    """A read cache in front of :class:`SqlBindingStore` for the call path.

    Ringing an agent looks its bindings up; without a cache every ring is a
    database round trip.  Writes go through to the database first (it stays
    the truth across restarts), then to the cache; entries older than ``ttl``
    seconds are re-read, so a registration written by another node sharing
    the database is seen within ``ttl``.
    """

    def __init__(self, inner: SqlBindingStore, ttl: float = 30.0,
                 clock: Callable[[], float] | None = None, max_entries: int = 100_000) -> None:
        import time

        self.inner = inner
        self.ttl = ttl
        self.clock = clock or time.monotonic
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, list[Binding]]] = {}

    async def get(self, aor: str) -> list[Binding]:
        """Cached bindings of ``aor`` (re-read when older than ``ttl``)."""
        now = self.clock()
        hit = self._cache.get(aor)
        if hit is not None and now - hit[0] < self.ttl:
            return list(hit[1])
        bindings = await self.inner.get(aor)
        self._put(aor, bindings, now)
        return bindings

    def _put(self, aor: str, bindings: Sequence[Binding], now: float) -> None:
        if len(self._cache) >= self.max_entries and aor not in self._cache:
            self._cache.clear()  # a crude bound: correctness never depends on the cache
        self._cache[aor] = (now, list(bindings))

    async def replace(self, aor: str, bindings: Sequence[Binding]) -> None:
        """Write through."""
        await self.inner.replace(aor, bindings)
        self._put(aor, bindings, self.clock())

    async def expire(self, now: float) -> list[Binding]:
        """Expire in the database and drop the affected cache entries."""
        gone = await self.inner.expire(now)
        for binding in gone:
            self._cache.pop(binding.aor, None)
        return gone

    async def count(self) -> int:
        """Number of stored bindings."""
        return await self.inner.count()
