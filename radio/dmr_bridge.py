"""Forwarding DMR talkgroup traffic between Homebrew systems, AMBE voice left encoded (sans-I/O).

A command centre sits between radio systems that do not talk to each other: the city's
PDT/DMR network on one master, a neighbouring county's or a volunteer rescue team's on
another.  A *bridge* joins talkgroups on several DMR gateways (each a Homebrew peer of
a different master, or different talkgroups on one): a call heard on one member is
retransmitted on every other member, frame by frame, as HBlink's conference bridges do.

The payload is never decoded: AMBE+2 voice needs a vocoder dispatchd does not have, and
none is needed to forward it.  What the bridge changes per member is the destination
talkgroup, the timeslot (when the member names one) and the stream id; the source radio
id is kept so every system shows who is talking.

Rules (:meth:`DmrBridge.route`):

* only group calls are bridged (a private call is between two radios);
* one call at a time: while a stream holds the bridge, a stream from another member is
  dropped (``blocked``) until the holder's terminator or ``hold_s`` of silence -- two
  systems keying into each other would otherwise garble both;
* no loops: a frame carrying a stream id this bridge made up is never forwarded again
  (two masters that are themselves linked would send it back);
* every forwarded stream gets its own id per member, stable for the stream's life.

:class:`DmrBridge` never touches a clock or a socket: the caller passes ``now`` and sends
what :meth:`~DmrBridge.route` returns through the named gateways.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from radio.dmr import DATA_VOICE_TERMINATOR, FRAME_DATA_SYNC, Dmrd

__all__ = ["BridgeMember", "BridgeStream", "DmrBridge"]


@dataclass(frozen=True)
class BridgeMember:
    """One talkgroup on one DMR gateway; ``slot`` 0 means either timeslot (kept as heard)."""

    gateway: str
    talkgroup: int
    slot: int = 0

    def hears(self, gateway: str, frame: Dmrd) -> bool:
        """Whether ``frame``, received on ``gateway``, is traffic of this member."""
        return (gateway == self.gateway and frame.destination == self.talkgroup
                and not frame.private and self.slot in (0, frame.slot))


@dataclass
class BridgeStream:
    """The call holding the bridge: where it came from and its ids on every other member."""

    origin: BridgeMember
    stream: int
    source: int
    started: float
    last: float
    frames: int = 0
    out_ids: dict[BridgeMember, int] = field(default_factory=dict)


def _stream_id(bridge: str, member: BridgeMember, stream: int) -> int:
    """A stream id for ``stream`` forwarded to ``member``: stable, distinct per member."""
    digest = hashlib.blake2b(f"{bridge}|{member.gateway}|{member.talkgroup}|{stream}".encode(),
                             digest_size=4).digest()
    return int.from_bytes(digest, "big") or 1


class DmrBridge:
    """The forwarding core of one bridge."""

    def __init__(self, name: str, members: tuple[BridgeMember, ...], hold_s: float = 1.5):
        """``members``: at least two talkgroups; ``hold_s``: silence that ends a stream."""
        if len(members) < 2:
            raise ValueError(f"DMR bridge {name!r}: at least two members")
        if len(set(members)) != len(members):
            raise ValueError(f"DMR bridge {name!r}: a member is listed twice")
        self.name = name
        self.members = members
        self.hold_s = hold_s
        self.active: BridgeStream | None = None
        self._made: dict[int, float] = {}   # stream ids we generated -> last used
        self.counts = {"forwarded": 0, "blocked": 0, "looped": 0, "streams": 0}

    def member_for(self, gateway: str, frame: Dmrd) -> BridgeMember | None:
        """The member that heard ``frame`` on ``gateway``, if any."""
        return next((m for m in self.members if m.hears(gateway, frame)), None)

    def expire(self, now: float) -> BridgeStream | None:
        """End the holding stream after ``hold_s`` of silence; returns the stream that ended."""
        ended = None
        if self.active is not None and now - self.active.last >= self.hold_s:
            ended, self.active = self.active, None
        for sid, last in list(self._made.items()):
            if now - last > 60 * self.hold_s:
                del self._made[sid]
        return ended

    def route(self, gateway: str, frame: Dmrd, now: float) -> list[tuple[str, Dmrd]]:
        """Where ``frame`` (received on ``gateway``) goes: ``(gateway, frame)`` per member."""
        origin = self.member_for(gateway, frame)
        if origin is None:
            return []
        if frame.stream in self._made:
            self.counts["looped"] += 1
            return []
        self.expire(now)
        active = self.active
        if active is not None and (active.origin != origin or active.stream != frame.stream):
            self.counts["blocked"] += 1
            return []
        terminator = (frame.frame_type == FRAME_DATA_SYNC
                      and frame.data_type == DATA_VOICE_TERMINATOR)
        if active is None:
            if terminator:
                return []  # the end of a stream we never carried
            active = self.active = BridgeStream(origin, frame.stream, frame.source, now, now)
            self.counts["streams"] += 1
        active.last = now
        active.frames += 1
        out = []
        for member in self.members:
            if member == origin:
                continue
            sid = active.out_ids.get(member)
            if sid is None:
                sid = active.out_ids[member] = _stream_id(self.name, member, frame.stream)
            self._made[sid] = now
            out.append((member.gateway, replace(
                frame, destination=member.talkgroup, peer_id=0,
                slot=member.slot or frame.slot, stream=sid)))
        self.counts["forwarded"] += len(out)
        if terminator:
            self.active = None
        return out
