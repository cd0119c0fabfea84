"""A sans-I/O token bucket (messages per second) and an index of message ids for receipts."""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Generic, TypeVar

from ..smpp.receipt import message_id_variants

K = TypeVar("K")


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``rate`` 0 means unlimited."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        """Start full."""
        if rate < 0 or (burst is not None and burst < 1):
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, int(rate)))
        self._tokens = self.burst
        self._stamp: float | None = None

    def take(self, now: float) -> float:
        """Take one token: 0.0 if taken, else the seconds until one is available (none taken)."""
        if self.rate == 0:
            return 0.0
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def give_back(self) -> None:
        """Return the token of a message that could not be sent after all."""
        if self.rate:
            self._tokens = min(self.burst, self._tokens + 1.0)


class IdFormat(enum.Enum):
    """How an SMSC's receipts write the message id its submit_sm_resp gave.

    ``ANY`` tries every :func:`~sms.smpp.message_id_variants` form; it cannot
    tell hex "15" from decimal "15", so an id that two messages could own
    matches neither (counted in :attr:`ReceiptIndex.ambiguous`).  Configure
    the SMSC's real habit when it is known.
    """

    SAME = "same"                      # same id, maybe other case / leading zeros
    HEX_AS_DECIMAL = "hex-as-decimal"  # answers hex, receipts in decimal
    DECIMAL_AS_HEX = "decimal-as-hex"  # answers decimal, receipts in hex
    ANY = "any"


def _norm(message_id: str) -> str:
    return message_id.strip().lower().lstrip("0") or "0"


def _keys(message_id: str, fmt: IdFormat) -> frozenset[str]:
    """Normalised forms under which a receipt may name ``message_id``."""
    try:
        if fmt is IdFormat.HEX_AS_DECIMAL:
            return frozenset({str(int(message_id.strip(), 16))})
        if fmt is IdFormat.DECIMAL_AS_HEX:
            return frozenset({_norm(f"{int(message_id.strip()):x}")})
    except ValueError:
        pass  # not the format this SMSC claims: fall back to the id as given
    if fmt is IdFormat.ANY:
        return frozenset(_norm(v) for v in message_id_variants(message_id))
    return frozenset({_norm(message_id)})


def _lookup(receipt_id: str, fmt: IdFormat) -> str:
    if fmt is IdFormat.HEX_AS_DECIMAL and receipt_id.strip().isdigit():
        return str(int(receipt_id.strip()))
    return _norm(receipt_id)


_AMBIGUOUS = ""


class ReceiptIndex(Generic[K]):
    """Finds what a delivery receipt is about, whatever form its message id comes back in.

    Bounded: beyond ``capacity`` ids the oldest is forgotten.
    """

    def __init__(self, fmt: IdFormat = IdFormat.SAME, capacity: int = 200_000) -> None:
        """An empty index keeping at most ``capacity`` message ids."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.fmt = fmt
        self.ambiguous = 0
        self._capacity = capacity
        self._ids: OrderedDict[str, tuple[frozenset[str], K]] = OrderedDict()
        self._keys: dict[str, str] = {}

    def __len__(self) -> int:
        """Message ids held."""
        return len(self._ids)

    def add(self, message_id: str, key: K) -> None:
        """Remember that ``message_id`` (as the submit_sm_resp gave it) belongs to ``key``."""
        keys = _keys(message_id, self.fmt)
        self._ids[message_id] = (keys, key)
        for k in keys:
            owner = self._keys.get(k)
            self._keys[k] = message_id if owner in (None, message_id) else _AMBIGUOUS
        while len(self._ids) > self._capacity:
            old, (old_keys, _) = self._ids.popitem(last=False)
            for k in old_keys:
                if self._keys.get(k) == old:
                    del self._keys[k]

    def match(self, receipt_id: str) -> K | None:
        """The key of the message a receipt's id names, or None (unknown or ambiguous)."""
        owner = self._keys.get(_lookup(receipt_id, self.fmt))
        if owner == _AMBIGUOUS:
            self.ambiguous += 1
            return None
        return None if owner is None else self._ids[owner][1]


def stored_id(message_id: str, fmt: IdFormat) -> str:
    """One canonical form of a submit_sm_resp id, fit to be stored and looked up later.

    :func:`receipt_id` gives the same string for the id a receipt carries, so a
    receipt that arrives after a restart still finds its message in the database.
    """
    if fmt is IdFormat.ANY:
        return _norm(message_id)
    return min(_keys(message_id, fmt))


def receipt_id(message_id: str, fmt: IdFormat) -> str:
    """The canonical form (see :func:`stored_id`) of the id a delivery receipt names."""
    return _lookup(message_id, fmt)
