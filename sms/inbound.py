"""Joining concatenated inbound SMS parts, whichever transport they came by.

Theory of operation: a modem (TS 23.040 SMS-DELIVER) or an SMSC (SMPP
deliver_sm) hands us :class:`InboundPart` objects.  A part without
concatenation information is a whole message at once.  Other parts wait in
:class:`Reassembler`, keyed by (sender, reference width, reference, total),
until every sequence number has arrived.  Nothing a resident wrote may be
lost: when a message stays incomplete past ``timeout`` seconds, or the pending
table is full and the oldest must make room, the parts we have are emitted as
one message marked ``complete=False`` with the missing part numbers.

UCS-2 parts are joined as bytes before decoding, because some phones cut a
surrogate pair across two parts.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from .errors import SmsError


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    """Concatenation header of one part (TS 23.040 IEI 0x00/0x08, or SMPP sar_* TLVs)."""

    ref: int
    total: int
    seq: int
    ref_bits: int = 8


@dataclass(frozen=True, slots=True)
class InboundPart:
    """One received SMS part, transport-neutral.

    ``ucs2_payload`` holds the raw UTF-16BE bytes of a UCS-2 part (so parts can
    be joined before decoding); it is None for other alphabets.
    """

    sender: str
    text: str
    concat: ConcatInfo | None = None
    timestamp: datetime | None = None
    ucs2_payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A whole inbound message, or as much of it as arrived before giving up."""

    sender: str
    text: str
    timestamp: datetime | None
    complete: bool
    parts_total: int
    parts_received: int
    missing: tuple[int, ...] = ()


@dataclass(slots=True)
class _Pending:
    first_seen: float
    total: int
    parts: dict[int, InboundPart] = field(default_factory=dict)


class Reassembler:
    """Sans-I/O joiner of concatenated parts with a bounded table and a timeout."""

    def __init__(self, *, timeout: float = 600.0, max_pending: int = 1000) -> None:
        """``timeout`` seconds after its first part, an incomplete message is flushed."""
        if timeout <= 0 or max_pending < 1:
            raise SmsError("timeout must be positive and max_pending at least 1")
        self._timeout = timeout
        self._max_pending = max_pending
        # Insertion order == first-seen order, so the oldest is always first.
        self._pending: OrderedDict[tuple[str, int, int, int], _Pending] = OrderedDict()

    @property
    def pending_count(self) -> int:
        """Messages waiting for more parts."""
        return len(self._pending)

    def add(self, part: InboundPart, now: float) -> list[InboundMessage]:
        """Offer one part; return messages completed, or flushed to make room, by it."""
        info = part.concat
        if info is None or info.total <= 1:
            return [_join(part.sender, 1, {1: part})]
        if not 1 <= info.seq <= info.total:
            # TS 23.040 §9.2.3.24.1: an out-of-range sequence number means ignore the IE.
            return [_join(part.sender, 1, {1: part})]
        key = (part.sender, info.ref_bits, info.ref, info.total)
        out: list[InboundMessage] = []
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self._max_pending:
                _, oldest = self._pending.popitem(last=False)
                out.append(_flush(oldest))
            pending = _Pending(first_seen=now, total=info.total)
            self._pending[key] = pending
        # A repeated sequence number is a retransmission: the first copy wins.
        pending.parts.setdefault(info.seq, part)
        if len(pending.parts) == pending.total:
            del self._pending[key]
            out.append(_join(part.sender, pending.total, pending.parts))
        return out

    def get_timer(self) -> float | None:
        """When the oldest incomplete message times out, or None if nothing waits."""
        for pending in self._pending.values():
            return pending.first_seen + self._timeout
        return None

    def handle_timer(self, now: float) -> list[InboundMessage]:
        """Flush every message whose timeout has passed, marked incomplete."""
        out: list[InboundMessage] = []
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if pending.first_seen + self._timeout > now:
                break
            del self._pending[key]
            out.append(_flush(pending))
        return out

    def flush_all(self) -> list[InboundMessage]:
        """Emit everything pending (on shutdown) so no part is lost."""
        out = [_flush(p) for p in self._pending.values()]
        self._pending.clear()
        return out


def _flush(pending: _Pending) -> InboundMessage:
    sender = next(iter(pending.parts.values())).sender
    return _join(sender, pending.total, pending.parts)


def _join(sender: str, total: int, parts: dict[int, InboundPart]) -> InboundMessage:
    ordered = [parts[i] for i in sorted(parts)]
    missing = tuple(i for i in range(1, total + 1) if i not in parts)
    if all(p.ucs2_payload is not None for p in ordered):
        raw = b"".join(p.ucs2_payload or b"" for p in ordered)
        text = raw.decode("utf-16-be", errors="replace")
    else:
        text = "".join(p.text for p in ordered)
    stamps = [p.timestamp for p in ordered if p.timestamp is not None]
    return InboundMessage(
        sender=sender,
        text=text,
        timestamp=stamps[0] if stamps else None,
        complete=not missing,
        parts_total=total,
        parts_received=len(parts),
        missing=missing,
    )
