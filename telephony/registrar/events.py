"""What the registrar reports to the daemon (to publish and to audit)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from telephony.registrar.store import Binding

__all__ = [
    "AuthFailed",
    "BindingAdded",
    "BindingExpired",
    "BindingRefreshed",
    "BindingRemoved",
    "RateLimited",
    "RegistrarEvent",
    "SourceBlocked",
    "AuthFailure",
]


class AuthFailure(enum.Enum):
    """Why an authentication failed (kept for the audit trail, never sent on the wire)."""

    WRONG_CREDENTIALS = "wrong credentials"  # unknown user or wrong password: one case
    REPLAY = "replay"
    USER_MISMATCH = "username differs from the To user"


@dataclass(frozen=True, slots=True)
class BindingAdded:
    """A new contact was bound to an AoR."""

    binding: Binding


@dataclass(frozen=True, slots=True)
class BindingRefreshed:
    """An existing contact re-registered (new expiry)."""

    binding: Binding


@dataclass(frozen=True, slots=True)
class BindingRemoved:
    """A contact was removed by a REGISTER (expires=0 or ``Contact: *``)."""

    binding: Binding


@dataclass(frozen=True, slots=True)
class BindingExpired:
    """A contact's registration ran out."""

    binding: Binding


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """Credentials were refused; ``username`` is what the peer claimed."""

    source: str
    username: str
    reason: AuthFailure
    at: float


@dataclass(frozen=True, slots=True)
class SourceBlocked:
    """A source address is dropped until ``until`` after repeated failures."""

    source: str
    failures: int
    until: float


@dataclass(frozen=True, slots=True)
class RateLimited:
    """A REGISTER was refused 503 by the per-source rate limit."""

    source: str
    at: float


RegistrarEvent = (
    BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired
    | AuthFailed | SourceBlocked | RateLimited
)
