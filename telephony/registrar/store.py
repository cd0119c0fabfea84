"""Bindings and credentials: the records, the storage Protocols, in-memory stores.

Persistence is pluggable.  The registrar only talks to a :class:`BindingStore`
and a :class:`CredentialStore`; the daemon supplies SQL-backed ones, tests and
single-node set-ups use :class:`MemoryBindingStore` and
:class:`MemoryCredentialStore`.  Times are wall-clock epoch seconds, so a
binding written by one node means the same thing to every other node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Binding",
    "BindingStore",
    "CredentialStore",
    "MemoryBindingStore",
    "MemoryCredentialStore",
    "base_algorithm",
    "ha1",
]

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


def base_algorithm(algorithm: str) -> str:
    """``MD5`` or ``SHA-256`` for any digest algorithm name (``-sess`` stripped)."""
    upper = algorithm.upper()
    if upper.endswith("-SESS"):
        upper = upper[:-5]
    if upper not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return upper


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password) in hex: what a credential store keeps instead of passwords.

    Store one value per algorithm offered (MD5 and SHA-256); a change of
    realm invalidates them, so the realm belongs next to them in the table.
    """
    name = _HASHES[base_algorithm(algorithm)]
    return hashlib.new(name, f"{username}:{realm}:{password}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Binding:
    """One Contact bound to an address-of-record (RFC 3261 10.3).

    ``source_*`` is where the REGISTER really came from (after NAT): requests
    for this contact are sent there over the same transport (RFC 3581 style
    symmetric routing), since the Contact host may be a private address.
    """

    aor: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    source_transport: str
    source_host: str
    source_port: int
    q: float | None = None
    user_agent: str = ""
    registered_at: float = 0.0

    def remaining(self, now: float) -> int:
        """Whole seconds left (never negative)."""
        return max(0, int(self.expires_at - now + 0.5))


class BindingStore(Protocol):
    """Where bindings live.  Every method is a coroutine; none may block the loop.

    ``replace`` is the registrar's only write: it computes the complete new
    set for one AoR and hands it over (an empty sequence deletes the AoR).
    The registrar serialises calls per AoR on one node; a multi-node store
    should also make ``get`` + ``replace`` of one AoR atomic (row lock).
    """

    async def get(self, aor: str) -> list[Binding]:
        """Every stored binding of ``aor`` (expired ones may be included)."""
        ...

    async def replace(self, aor: str, bindings: Sequence[Binding]) -> None:
        """Make ``bindings`` the complete set for ``aor``."""
        ...

    async def expire(self, now: float) -> list[Binding]:
        """Delete and return every binding with ``expires_at <= now``."""
        ...

    async def count(self) -> int:
        """Number of stored bindings (for health figures)."""
        ...


class CredentialStore(Protocol):
    """Digest secrets of the users allowed to register."""

    async def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """The stored HA1 (hex) for ``algorithm`` (``MD5``/``SHA-256``), None if unknown."""
        ...


class MemoryBindingStore:
    """Bindings in a dict: for tests and a single node without a database."""

    def __init__(self) -> None:
        self._by_aor: dict[str, list[Binding]] = {}

    async def get(self, aor: str) -> list[Binding]:
        """Every stored binding of ``aor``."""
        return list(self._by_aor.get(aor, ()))

    async def replace(self, aor: str, bindings: Sequence[Binding]) -> None:
        """Make ``bindings`` the complete set for ``aor``."""
        if bindings:
            self._by_aor[aor] = list(bindings)
        else:
            self._by_aor.pop(aor, None)

    async def expire(self, now: float) -> list[Binding]:
        """Delete and return every binding due at ``now``."""
        gone: list[Binding] = []
        for aor in list(self._by_aor):
            keep = [b for b in self._by_aor[aor] if b.expires_at > now]
            gone += [b for b in self._by_aor[aor] if b.expires_at <= now]
            await self.replace(aor, keep)
        return gone

    async def count(self) -> int:
        """Number of stored bindings."""
        return sum(len(v) for v in self._by_aor.values())


class MemoryCredentialStore:
    """HA1 values in a dict, built from ``{user: password}`` or given directly."""

    def __init__(self, ha1s: Mapping[tuple[str, str, str], str] | None = None) -> None:
        self._ha1s: dict[tuple[str, str, str], str] = dict(ha1s or {})

    @classmethod
    def from_passwords(
        cls, realm: str, passwords: Mapping[str, str],
        algorithms: Iterable[str] = ("MD5", "SHA-256"),
    ) -> MemoryCredentialStore:
        """Hash each password for each algorithm (the passwords are not kept)."""
        algos = tuple(algorithms)
        return cls({(user, realm, a): ha1(user, realm, pw, a)
                    for user, pw in passwords.items() for a in algos})

    async def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """The stored HA1, or None."""
        return self._ha1s.get((username, realm, base_algorithm(algorithm)))
