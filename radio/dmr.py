"""DMR over IP: a peer of the Homebrew Repeater Protocol (MMDVM / HBlink), sans-I/O plus adapter.

Theory of operation
-------------------
:class:`HomebrewPeer` is the protocol core.  It never reads a clock or a
socket: every call takes ``now``; :meth:`~HomebrewPeer.datagrams_to_send`
hands out what to write and :meth:`~HomebrewPeer.get_timer` says when to call
:meth:`~HomebrewPeer.handle_timer`.  States (``_State``):

* ``LOGIN``: ``RPTL<peer id>`` sent; the master answers ``RPTACK<salt:4>``.
* ``AUTH``: ``RPTK<peer id><sha256(salt + passphrase)>`` sent; ``RPTACK``.
* ``CONFIG``: ``RPTC<peer id><302-byte configuration>`` sent; ``RPTACK``.
* ``CONNECTED``: ``RPTPING<peer id>`` every ``ping_s``; ``MSTPONG`` keeps the
  link alive; ``DMRD`` frames carry traffic.
* ``WAITING``: lost (``MSTNAK``, ``MSTCL``, a login step or the keep-alive
  timed out); a new login starts after ``retry_s``.

A ``DMRD`` frame is 53 bytes (55 with BER and RSSI): ``DMRD``, sequence (1),
source (3), destination (3), peer id (4), bits (1: slot 0x80, private call
0x40, frame type 0x30, data type / voice sequence 0x0F), stream id (4),
33 bytes of DMR payload.  A stream's first frame (or a voice LC header)
starts a call; a terminator with LC, or ``stream_timeout_s`` of silence,
ends it.  The payload stays AMBE-encoded: with no vocoder, dispatchd
monitors DMR talkgroups (who talks where) and does not originate voice; it
does forward whole frames between systems (:mod:`radio.dmr_bridge`):
:meth:`HomebrewPeer.frames_received` hands out the frames heard and
:meth:`HomebrewPeer.send_frame` puts one on the master under our peer id.

Bad input never raises: a datagram that is too long, too short or of an
unknown kind is dropped and reported as :class:`DmrFault`.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "DmrCallEnded", "DmrCallStarted", "DmrEvent", "DmrFault", "DmrGateway", "DmrLinkDown",
    "DmrLinkUp", "DmrSettings", "HomebrewPeer", "parse_dmrd",
]

log = logging.getLogger(__name__)

MAX_DATAGRAM = 512
DMRD_LENGTH = 53
FRAME_VOICE, FRAME_VOICE_SYNC, FRAME_DATA_SYNC = 0, 1, 2
DATA_VOICE_HEADER, DATA_VOICE_TERMINATOR = 1, 2
CONFIG_LENGTH = 302


class DmrError(ValueError):
    """A datagram that is not a well-formed Homebrew packet."""


@dataclass(frozen=True)
class DmrSettings:
    """One Homebrew master this peer logs in to."""

    name: str
    host: str
    port: int
    peer_id: int
    passphrase: bytes
    callsign: str = "DISPATCH"
    ping_s: float = 5.0
    timeout_s: float = 15.0
    retry_s: float = 10.0
    stream_timeout_s: float = 1.5

    def __post_init__(self) -> None:
        """Refuse values that cannot go on the wire."""
        if not 1 <= self.peer_id <= 0xFFFFFFFF:
            raise DmrError(f"{self.name}: peer id {self.peer_id} is not a 32-bit id")
        if not self.callsign.isascii() or len(self.callsign) > 8:
            raise DmrError(f"{self.name}: callsign must be at most 8 ASCII characters")


@dataclass(frozen=True)
class DmrLinkUp:
    """Logged in to the master."""

    gateway: str


@dataclass(frozen=True)
class DmrLinkDown:
    """The master refused us, closed, or stopped answering."""

    gateway: str
    why: str


@dataclass(frozen=True)
class DmrCallStarted:
    """``source`` started talking to ``destination`` (a talkgroup unless ``private``)."""

    gateway: str
    source: int
    destination: int
    slot: int
    stream: int
    private: bool


@dataclass(frozen=True)
class DmrCallEnded:
    """A call's stream ended (``terminator`` or ``timeout``)."""

    gateway: str
    source: int
    destination: int
    slot: int
    stream: int
    why: str


@dataclass(frozen=True)
class DmrFault:
    """A datagram was dropped (malformed, unknown, from another peer id)."""

    gateway: str
    detail: str


DmrEvent = DmrLinkUp | DmrLinkDown | DmrCallStarted | DmrCallEnded | DmrFault


@dataclass(frozen=True)
class Dmrd:
    """One decoded ``DMRD`` frame."""

    seq: int
    source: int
    destination: int
    peer_id: int
    slot: int
    private: bool
    frame_type: int
    data_type: int
    stream: int
    payload: bytes


def parse_dmrd(data: bytes) -> Dmrd:
    """Decode a ``DMRD`` frame; :class:`DmrError` if it is not one."""
    if len(data) < DMRD_LENGTH or len(data) > DMRD_LENGTH + 2 or data[:4] != b"DMRD":
        raise DmrError(f"DMRD frame of {len(data)} bytes (53 or 55 expected)")
    bits = data[15]
    return Dmrd(data[4], int.from_bytes(data[5:8], "big"), int.from_bytes(data[8:11], "big"),
                int.from_bytes(data[11:15], "big"), 2 if bits & 0x80 else 1, bool(bits & 0x40),
                (bits & 0x30) >> 4, bits & 0x0F, int.from_bytes(data[16:20], "big"),
                data[20:53])


def build_dmrd(frame: Dmrd) -> bytes:
    """Encode a ``DMRD`` frame (emulators, forwarding)."""
    bits = (0x80 if frame.slot == 2 else 0) | (0x40 if frame.private else 0) \
        | (frame.frame_type << 4) | (frame.data_type & 0x0F)
    payload = frame.payload[:33].ljust(33, b"\x00")
    return (b"DMRD" + bytes([frame.seq & 0xFF]) + frame.source.to_bytes(3, "big")
            + frame.destination.to_bytes(3, "big") + frame.peer_id.to_bytes(4, "big")
            + bytes([bits]) + frame.stream.to_bytes(4, "big") + payload)


class _State(enum.Enum):
    WAITING = "waiting"
    LOGIN = "login"
    AUTH = "auth"
    CONFIG = "config"
    CONNECTED = "connected"


@dataclass
class _Stream:
    source: int
    destination: int
    slot: int
    private: bool
    last: float


@dataclass
class HomebrewPeer:
    """The Homebrew peer protocol core."""

    settings: DmrSettings
    state: _State = _State.WAITING
    _out: list[bytes] = field(default_factory=list)
    _deadline: float | None = None      # login step or keep-alive deadline
    _next_ping: float | None = None
    _retry_at: float | None = None
    _streams: dict[int, _Stream] = field(default_factory=dict)
    #: Frames heard, for forwarding; bounded, so a core nobody drains cannot grow.
    _heard: deque[Dmrd] = field(default_factory=lambda: deque(maxlen=64))
    faults: int = 0
    sent_frames: int = 0

    @property
    def connected(self) -> bool:
        """True once logged in."""
        return self.state is _State.CONNECTED

    def _id(self) -> bytes:
        return self.settings.peer_id.to_bytes(4, "big")

    def connect(self, now: float) -> None:
        """Start (or restart) the login."""
        self.state = _State.LOGIN
        self._out.append(b"RPTL" + self._id())
        self._deadline = now + self.settings.timeout_s
        self._next_ping = self._retry_at = None

    def close(self) -> None:
        """Say goodbye (``RPTCL``) if connected; the link is down afterwards."""
        if self.state is not _State.WAITING:
            self._out.append(b"RPTCL" + self._id())
        self.state = _State.WAITING
        self._deadline = self._next_ping = self._retry_at = None

    def datagrams_to_send(self) -> list[bytes]:
        """What to write to the master, in order."""
        out, self._out = self._out, []
        return out

    def frames_received(self) -> list[Dmrd]:
        """The ``DMRD`` frames heard since the last call, oldest first."""
        out = list(self._heard)
        self._heard.clear()
        return out

    def send_frame(self, frame: Dmrd) -> bool:
        """Queue ``frame`` for the master under our peer id; False while not connected."""
        if not self.connected:
            return False
        self._out.append(build_dmrd(replace(frame, peer_id=self.settings.peer_id)))
        self.sent_frames += 1
        return True

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run."""
        times = [t for t in (self._deadline, self._next_ping, self._retry_at) if t is not None]
        times += [s.last + self.settings.stream_timeout_s for s in self._streams.values()]
        return min(times, default=None)

    def handle_timer(self, now: float) -> list[DmrEvent]:
        """Fire the deadlines at or before ``now``."""
        events: list[DmrEvent] = []
        for stream_id, s in list(self._streams.items()):
            if now >= s.last + self.settings.stream_timeout_s:
                del self._streams[stream_id]
                events.append(DmrCallEnded(self.settings.name, s.source, s.destination, s.slot,
                                           stream_id, "timeout"))
        if self._retry_at is not None and now >= self._retry_at:
            self.connect(now)
        elif self._deadline is not None and now >= self._deadline:
            what = "keep-alive" if self.connected else f"{self.state.value} step"
            events += self._lose(now, f"no answer from the master ({what} timed out)")
        elif self._next_ping is not None and now >= self._next_ping:
            self._out.append(b"RPTPING" + self._id())
            self._next_ping = now + self.settings.ping_s
        return events

    def receive_datagram(self, data: bytes, now: float) -> list[DmrEvent]:
        """One datagram from the master."""
        try:
            return self._receive(data, now)
        except DmrError as exc:
            self.faults += 1
            return [DmrFault(self.settings.name, str(exc))]

    def _receive(self, data: bytes, now: float) -> list[DmrEvent]:
        if len(data) > MAX_DATAGRAM:
            raise DmrError(f"datagram of {len(data)} bytes is longer than any Homebrew packet")
        if data.startswith(b"DMRD"):
            return self._on_dmrd(parse_dmrd(data), now) if self.connected else []
        if data.startswith(b"MSTPONG"):
            self._check_id(data[7:])
            if self.connected:
                self._deadline = now + self.settings.timeout_s
            return []
        if data.startswith(b"MSTNAK"):
            self._check_id(data[6:])
            return self._lose(now, "the master refused us (MSTNAK)")
        if data.startswith(b"MSTCL"):
            self._check_id(data[5:])
            return self._lose(now, "the master closed (MSTCL)")
        if data.startswith(b"RPTACK"):
            return self._on_ack(data[6:], now)
        raise DmrError(f"unknown Homebrew packet {data[:8]!r}")

    def _check_id(self, body: bytes) -> None:
        if len(body) != 4 or body != self._id():
            raise DmrError(f"packet for peer {body.hex() or '(none)'}, we are "
                           f"{self.settings.peer_id}")

    def _on_ack(self, body: bytes, now: float) -> list[DmrEvent]:
        if len(body) != 4:
            raise DmrError(f"RPTACK with {len(body)} bytes (4 expected)")
        deadline = now + self.settings.timeout_s
        if self.state is _State.LOGIN:
            digest = hashlib.sha256(body + self.settings.passphrase).digest()
            self._out.append(b"RPTK" + self._id() + digest)
            self.state, self._deadline = _State.AUTH, deadline
            return []
        self._check_id(body)
        if self.state is _State.AUTH:
            self._out.append(b"RPTC" + self._id() + self._config())
            self.state, self._deadline = _State.CONFIG, deadline
            return []
        if self.state is _State.CONFIG:
            self.state, self._deadline = _State.CONNECTED, deadline
            self._next_ping = now + self.settings.ping_s
            return [DmrLinkUp(self.settings.name)]
        return []  # a late duplicate

    def _config(self) -> bytes:
        def f(text: str, width: int) -> bytes:
            return text.encode("ascii")[:width].ljust(width)

        body = (f(self.settings.callsign, 8) + f("000000000", 9) + f("000000000", 9)
                + f("00", 2) + f("01", 2) + f("+00.0000", 8) + f("+000.0000", 9) + f("000", 3)
                + f("dispatchd", 20) + f("dispatch console", 19) + f("4", 1) + f("", 124)
                + f("dispatchd", 40) + f("dispatchd-hbp", 40))
        assert len(body) == CONFIG_LENGTH - 8
        return body

    def _lose(self, now: float, why: str) -> list[DmrEvent]:
        was_up = self.state is not _State.WAITING
        self.state = _State.WAITING
        self._deadline = self._next_ping = None
        self._retry_at = now + self.settings.retry_s
        events: list[DmrEvent] = [
            DmrCallEnded(self.settings.name, s.source, s.destination, s.slot, sid, "link lost")
            for sid, s in self._streams.items()]
        self._streams.clear()
        if was_up:
            events.append(DmrLinkDown(self.settings.name, why))
        return events

    def _on_dmrd(self, frame: Dmrd, now: float) -> list[DmrEvent]:
        self._heard.append(frame)
        stream = self._streams.get(frame.stream)
        name = self.settings.name
        terminator = (frame.frame_type == FRAME_DATA_SYNC
                      and frame.data_type == DATA_VOICE_TERMINATOR)
        events: list[DmrEvent] = []
        if stream is None:
            if terminator:
                return []  # the end of a call we never saw start
            stream = _Stream(frame.source, frame.destination, frame.slot, frame.private, now)
            self._streams[frame.stream] = stream
            events.append(DmrCallStarted(name, frame.source, frame.destination, frame.slot,
                                         frame.stream, frame.private))
        stream.last = now
        if terminator:
            del self._streams[frame.stream]
            events.append(DmrCallEnded(name, stream.source, stream.destination, stream.slot,
                                       frame.stream, "terminator"))
        return events


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: DmrGateway) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._datagram(data)

    def error_received(self, exc: Exception) -> None:
        self.owner.last_error = f"UDP error: {exc}"


class DmrGateway:
    """The UDP adapter of :class:`HomebrewPeer`, on the asyncio loop."""

    def __init__(self, settings: DmrSettings, on_event: Callable[[DmrEvent], None],
                 on_frame: Callable[[str, Dmrd], None] | None = None) -> None:
        """Describe the peer; nothing is sent until :meth:`start`.  ``on_frame`` gets every
        ``DMRD`` frame heard (for bridges), before the events that frame caused."""
        self.settings = settings
        self.name = settings.name
        self.core = HomebrewPeer(settings)
        self._on_event = on_event
        self.on_frame = on_frame
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.last_error: str | None = None
        self.received = 0

    async def start(self) -> None:
        """Open the UDP socket and start logging in (``OSError`` if it cannot be opened)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), remote_addr=(self.settings.host, self.settings.port))
        self._transport = transport
        self.core.connect(loop.time())
        self._after([])

    async def stop(self) -> None:
        """Say goodbye and close the socket."""
        self.core.close()
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def health(self) -> dict[str, Any]:
        """Link state and counters."""
        return {"ready": self.core.connected, "state": self.core.state.value,
                "master": f"{self.settings.host}:{self.settings.port}",
                "peer_id": self.settings.peer_id, "received": self.received,
                "faults": self.core.faults, "sent_frames": self.core.sent_frames,
                "last_error": self.last_error}

    def send_frame(self, frame: Dmrd) -> bool:
        """Transmit ``frame`` on our master now; False while the link is down."""
        if not self.core.send_frame(frame):
            return False
        self._flush()
        return True

    def _datagram(self, data: bytes) -> None:
        self.received += 1
        events = self.core.receive_datagram(data, asyncio.get_running_loop().time())
        frames = self.core.frames_received()
        if self.on_frame is not None:
            for frame in frames:
                try:
                    self.on_frame(self.name, frame)
                except Exception:  # a bridge's bug must not stop the link
                    log.exception("DMR frame callback failed", extra={"gateway": self.name})
        self._after(events)

    def _fire(self, when: float) -> None:
        self._timer = None
        now = max(asyncio.get_running_loop().time(), when)
        self._after(self.core.handle_timer(now))

    def _flush(self) -> None:
        for datagram in self.core.datagrams_to_send():
            if self._transport is not None:
                self._transport.sendto(datagram)

    def _after(self, events: list[DmrEvent]) -> None:
        self._flush()
        for event in events:
            if isinstance(event, DmrLinkDown | DmrFault):
                self.last_error = event.why if isinstance(event, DmrLinkDown) else event.detail
            try:
                self._on_event(event)
            except Exception:  # a subscriber's bug must not stop the link
                log.exception("DMR event callback failed", extra={"gateway": self.name})
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.core.get_timer()
        if when is not None and self._transport is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._fire, when)
