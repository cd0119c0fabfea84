"""Users, roles, passwords and bearer tokens.

Passwords are hashed with scrypt (RFC 7914, in the standard library) with a
random salt; tokens are random 256-bit strings of which only the SHA-256 is
stored.  Console log-ins get session tokens that expire; programs get API
tokens that last until revoked.  Repeated failed log-ins lock an account for a
while, and unknown users get exactly the same answer as wrong passwords.

Every change to users and tokens is written to the audit trail in the same
transaction.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.audit import AuditTrail
from dispatch.models import ApiToken, User, UserKey
from dispatch.storage import Database


class Role(enum.StrEnum):
    """The roles of a command centre, from DESIGN.md."""

    CALL_TAKER = "call_taker"
    DISPATCHER = "dispatcher"
    SUPERVISOR = "supervisor"
    COMMANDER = "commander"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    """What an action needs; roles grant sets of these."""

    EVENTS_READ = "events.read"
    DUTY_LOG_READ = "duty_log.read"
    DUTY_LOG_WRITE = "duty_log.write"
    AUDIT_READ = "audit.read"
    USERS_READ = "users.read"
    USERS_MANAGE = "users.manage"
    REPORTS_READ = "reports.read"
    REPORTS_WRITE = "reports.write"
    INCIDENTS_READ = "incidents.read"
    INCIDENTS_CORRELATE = "incidents.correlate"
    BROADCAST_READ = "broadcast.read"
    BROADCAST_CREATE = "broadcast.create"
    BROADCAST_APPROVE = "broadcast.approve"
    INCIDENTS_MANAGE = "incidents.manage"
    INCIDENTS_CLOSE = "incidents.close"
    UNITS_READ = "units.read"
    UNITS_DISPATCH = "units.dispatch"
    UNITS_MANAGE = "units.manage"
    PLANS_READ = "plans.read"
    PLANS_DECIDE = "plans.decide"
    ROSTER_READ = "roster.read"
    ROSTER_MANAGE = "roster.manage"
    NOTIFICATIONS_READ = "notifications.read"
    NOTIFICATIONS_ACK = "notifications.ack"
    STATS_READ = "stats.read"
    RESIDENTS_MANAGE = "residents.manage"
    RADIO_READ = "radio.read"
    RADIO_PTT = "radio.ptt"
    RADIO_SEND = "radio.send"
    CALLS_READ = "calls.read"
    AGENT_STATE = "calls.agent_state"
    CALLS_SUPERVISE = "calls.supervise"
    CONFERENCES = "conferences.manage"


_EVERYONE = {
    Permission.EVENTS_READ, Permission.DUTY_LOG_READ, Permission.DUTY_LOG_WRITE,
    Permission.REPORTS_READ, Permission.REPORTS_WRITE, Permission.INCIDENTS_READ,
    # "A call taker can merge and split" incidents, and correct a classification.
    Permission.INCIDENTS_CORRELATE, Permission.RADIO_READ,
    Permission.CALLS_READ, Permission.AGENT_STATE,
    # Notes, links and the lifecycle steps the transition table allows the role.
    Permission.INCIDENTS_MANAGE, Permission.UNITS_READ, Permission.PLANS_READ,
    Permission.ROSTER_READ, Permission.NOTIFICATIONS_READ, Permission.NOTIFICATIONS_ACK,
}
#: Keying talkgroups, sending SDS/SMS and calling satphones: dispatchers and above.
_RADIO = {Permission.RADIO_PTT, Permission.RADIO_SEND}
_DISPATCH = {Permission.UNITS_DISPATCH, Permission.PLANS_DECIDE, Permission.CONFERENCES} | _RADIO
_LEAD = _DISPATCH | {Permission.ROSTER_MANAGE, Permission.STATS_READ, Permission.INCIDENTS_CLOSE}

#: Which role may do what.  Later capabilities add their permissions here.
GRANTS: dict[Role, frozenset[Permission]] = {
    Role.CALL_TAKER: frozenset(_EVERYONE),
    Role.DISPATCHER: frozenset(_EVERYONE | _DISPATCH),
    Role.SUPERVISOR: frozenset(_EVERYONE | _LEAD | {Permission.AUDIT_READ, Permission.USERS_READ,
                                                    Permission.BROADCAST_READ,
                                                    Permission.BROADCAST_CREATE,
                                                    Permission.RESIDENTS_MANAGE,
                                                    Permission.CALLS_SUPERVISE}),
    # The two-person rule: a commander approves what someone else created.
    Role.COMMANDER: frozenset(_EVERYONE | _LEAD | {Permission.AUDIT_READ,
                                                   Permission.BROADCAST_READ,
                                                   Permission.BROADCAST_CREATE,
                                                   Permission.BROADCAST_APPROVE,
                                                   Permission.RESIDENTS_MANAGE,
                                                   Permission.CALLS_SUPERVISE}),
    Role.ADMIN: frozenset(Permission),
}

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_PASSWORD = 1024
MIN_PASSWORD = 8
TOKEN_PREFIX = "dpd_"


def hash_password(password: str) -> str:
    """A salted scrypt hash in the form ``scrypt$N$r$p$salt$hash``."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Check a password against :func:`hash_password`'s output in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or len(password) > MAX_PASSWORD:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A hash to verify against when the user does not exist, so that an unknown
# name costs the same time as a wrong password (no user enumeration by timing).
_DUMMY_HASH = hash_password("not-a-real-password")


def token_hash(token: str) -> str:
    """The stored form of a bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a user and their role."""

    user_id: int
    name: str
    role: Role
    token_id: int | None = None

    def can(self, permission: Permission) -> bool:
        """True if this principal's role grants ``permission``."""
        return permission in GRANTS[self.role]


@dataclass(frozen=True)
class IssuedToken:
    """A token as issued: shown to its owner once, never stored in clear."""

    token: str
    id: int
    expires_at: dt.datetime | None


class AuthError(Exception):
    """Authentication failed; the message is safe to show."""


class UserExists(Exception):
    """A user of that name already exists."""


class UserStore:
    """Users and tokens in the database, with audit rows for every change."""

    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        clock: Callable[[], float],
        *,
        max_failures: int = 5,
        lockout_s: int = 300,
    ) -> None:
        """Keep the database, audit trail and lock-out policy."""
        self.db = db
        self.audit = audit
        self.clock = clock
        self.max_failures = max_failures
        self.lockout_s = lockout_s

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def add_user(
        self, name: str, role: Role, password: str, *, actor: str, display_name: str = ""
    ) -> User:
        """Create a user; raise :class:`UserExists` or ``ValueError``."""
        password_hash = await asyncio.to_thread(hash_password, password)
        try:
            async with self.db.session() as s:
                user = User(
                    name=name,
                    role=role.value,
                    password_hash=password_hash,
                    display_name=display_name,
                    disabled=False,
                    failed_logins=0,
                    created_at=self._now(),
                )
                s.add(user)
                await s.flush()
                self.audit.record(
                    s, actor=actor, action="user.created", subject=f"user:{name}",
                    details={"role": role.value},
                )
        except IntegrityError:
            raise UserExists(f"user {name!r} already exists") from None
        return user

    async def get(self, name: str) -> User | None:
        """The user called ``name``, if any."""
        async with self.db.session() as s:
            return await s.scalar(select(User).where(User.name == name))

    async def all_users(self) -> Sequence[User]:
        """Every user, by name."""
        async with self.db.session() as s:
            return (await s.scalars(select(User).order_by(User.name))).all()

    async def update(
        self,
        name: str,
        *,
        actor: str,
        role: Role | None = None,
        password: str | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Change a user's role, password or disabled flag; ``KeyError`` if unknown."""
        password_hash = None
        if password is not None:
            password_hash = await asyncio.to_thread(hash_password, password)
        async with self.db.session() as s:
            user = await s.scalar(select(User).where(User.name == name))
            if user is None:
                raise KeyError(name)
            changed: dict[str, object] = {}
            if role is not None and role.value != user.role:
                changed["role"] = [user.role, role.value]
                user.role = role.value
            if password_hash is not None:
                user.password_hash = password_hash
                user.failed_logins, user.locked_until = 0, None
                changed["password"] = "changed"
            if disabled is not None and disabled != user.disabled:
                user.disabled = disabled
                changed["disabled"] = disabled
                if disabled:
                    await self._revoke_all(s, user.id)
            if changed:
                self.audit.record(
                    s, actor=actor, action="user.updated", subject=f"user:{name}", details=changed
                )
            return user

    async def _revoke_all(self, s: AsyncSession, user_id: int) -> None:
        for token in await s.scalars(select(ApiToken).where(ApiToken.user_id == user_id)):
            token.revoked = True

    async def check_password(self, name: str, password: str, *, source: str, via: str) -> Principal:
        """Check a user's password (console log-in, SSH); audit the attempt.

        Raises :class:`AuthError` with the same message whether the user is
        unknown, disabled, locked or the password wrong.  Repeated failures
        lock the account for ``lockout_s``.
        """
        refused = AuthError("invalid user name or password, or account locked")
        async with self.db.session() as s:
            user = await s.scalar(select(User).where(User.name == name))
            if user is None:
                await asyncio.to_thread(verify_password, password, _DUMMY_HASH)
                raise refused
            now = self._now()
            locked = user.locked_until is not None and user.locked_until > now
            # scrypt is deliberately slow: keep it off the event loop.
            good = await asyncio.to_thread(verify_password, password, user.password_hash)
            ok = good and not user.disabled and not locked
            if ok:
                user.failed_logins, user.locked_until = 0, None
            elif not locked:
                user.failed_logins += 1
                if user.failed_logins >= self.max_failures:
                    user.locked_until = now + dt.timedelta(seconds=self.lockout_s)
                    user.failed_logins = 0
            self.audit.record(
                s, actor=name, action="auth.login" if ok else "auth.login_failed",
                subject=f"user:{name}",
                details={"source": source, "via": via,
                         "locked": user.locked_until is not None and user.locked_until > now},
            )
            principal = Principal(user.id, user.name, Role(user.role))
        # Raised outside the block so the failure count and audit row commit.
        if not ok:
            raise refused
        return principal

    async def login(self, name: str, password: str, *, ttl_s: int, source: str) -> IssuedToken:
        """Check a password and issue a console session token (see :meth:`check_password`)."""
        principal = await self.check_password(name, password, source=source, via="http")
        async with self.db.session() as s:
            user = await s.get(User, principal.user_id)
            assert user is not None
            return await self._issue(s, user, "session", "console", ttl_s)

    async def issue_api_token(self, name: str, label: str, *, actor: str) -> IssuedToken:
        """A long-lived token for a program acting as user ``name``."""
        return await self._issue_audited(name, "api", label, None, actor=actor)

    async def relay_token(self, name: str, *, ttl_s: int, label: str) -> IssuedToken:
        """A short-lived token for commands this node relays to another on behalf of
        ``name``, who authenticated here another way (the SSH console); audited.
        ``KeyError`` for an unknown or disabled user."""
        return await self._issue_audited(name, "relay", label, ttl_s, actor=name,
                                         enabled_only=True)

    async def _issue_audited(self, name: str, kind: str, label: str, ttl_s: int | None, *,
                             actor: str, enabled_only: bool = False) -> IssuedToken:
        """Issue a ``kind`` token to user ``name`` with a ``token.issued`` audit row
        (``KeyError`` if there is no such user, or it is disabled and ``enabled_only``)."""
        async with self.db.session() as s:
            user = await s.scalar(select(User).where(User.name == name))
            if user is None or (enabled_only and user.disabled):
                raise KeyError(name)
            issued = await self._issue(s, user, kind, label, ttl_s)
            self.audit.record(s, actor=actor, action="token.issued", subject=f"user:{name}",
                              details={"token_id": issued.id, "label": label, "kind": kind,
                                       "ttl_s": ttl_s})
            return issued

    async def _issue(
        self, s: AsyncSession, user: User, kind: str, label: str, ttl_s: int | None
    ) -> IssuedToken:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        expires = now + dt.timedelta(seconds=ttl_s) if ttl_s is not None else None
        row = ApiToken(
            user_id=user.id, kind=kind, label=label[:128], token_hash=token_hash(token),
            created_at=now, expires_at=expires, revoked=False,
        )
        s.add(row)
        await s.flush()
        return IssuedToken(token=token, id=row.id, expires_at=expires)

    async def authenticate(self, token: str) -> Principal:
        """The principal a bearer token stands for; :class:`AuthError` if none."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            raise AuthError("invalid or expired token")
        async with self.db.session() as s:
            row = await s.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
            now = self._now()
            if row is None or row.revoked or (row.expires_at is not None and row.expires_at <= now):
                raise AuthError("invalid or expired token")
            user = await s.get(User, row.user_id)
            if user is None or user.disabled:
                raise AuthError("invalid or expired token")
            # Touch last_used at most once a minute: not a write per request.
            if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
                row.last_used_at = now
            return Principal(user.id, user.name, Role(user.role), row.id)

    async def add_key(self, name: str, key: str, fingerprint: str, *, actor: str,
                      label: str = "") -> None:
        """Let ``name`` log in to the SSH console with an OpenSSH public key.

        The caller parses the key (``fingerprint`` is its SHA-256 fingerprint);
        a key can belong to one user only.
        """
        try:
            async with self.db.session() as s:
                user = await s.scalar(select(User).where(User.name == name))
                if user is None:
                    raise KeyError(name)
                s.add(UserKey(user_id=user.id, key=key, fingerprint=fingerprint,
                              label=label[:128], created_at=self._now()))
                self.audit.record(s, actor=actor, action="user.key_added",
                                  subject=f"user:{name}", details={"fingerprint": fingerprint})
        except IntegrityError:
            raise UserExists(f"key {fingerprint} is already registered") from None

    async def keys(self, name: str) -> list[str]:
        """The OpenSSH public keys of an enabled user (none for unknown or disabled)."""
        async with self.db.session() as s:
            rows = await s.scalars(
                select(UserKey.key).join(User, User.id == UserKey.user_id)
                .where(User.name == name, User.disabled.is_(False))
            )
            return list(rows)

    async def principal(self, name: str) -> Principal | None:
        """The principal of an enabled user, or ``None``."""
        user = await self.get(name)
        if user is None or user.disabled:
            return None
        return Principal(user.id, user.name, Role(user.role))

    async def revoke(self, token_id: int, *, actor: str) -> None:
        """Revoke one token (log-out, or an administrator's decision)."""
        async with self.db.session() as s:
            row = await s.get(ApiToken, token_id)
            if row is None:
                raise KeyError(token_id)
            row.revoked = True
            self.audit.record(
                s, actor=actor, action="token.revoked", subject=f"token:{token_id}",
                details={"user_id": row.user_id},
            )
