"""The media engine: the asyncio adapter that anchors every call's RTP in one mixer.

Theory of operation
-------------------
Each leg owns an RTP/RTCP port pair from the configured range, bound with
asyncio UDP.  A datagram is size-checked, parsed (:mod:`.rtp`), judged by the
leg's :class:`~.jitter.RtpLatch` (symmetric RTP: strangers and SSRC floods are
dropped), then either fed to the RFC 4733 receiver or, if it is 160 samples of
the negotiated codec, to the leg's :class:`~.jitter.JitterBuffer`.  Nothing is
mixed on arrival.

One steady clock drives everything: :meth:`MediaEngine.tick` runs every 20 ms
on an absolute schedule (``t0 + k * 20 ms``, so lateness never accumulates
into drift; a late tick is caught up, a long stall is skipped and counted as
an overrun).  A tick pops one frame per leg from its jitter buffer
(concealing losses), decodes all legs' G.711 in one table look-up, mixes every
room in one :class:`~.mixer.Mixer` call (each leg hears the others minus
itself; ``listen`` legs are heard by nobody, ``whisper:X`` only by X, ``barge``
by all), adds prompts, encodes all legs at once and sends one RTP packet per
leg.  Rooms with recording on write their two-channel block (caller side,
call-taker side) to a WAV file; when the room empties the file is closed, its
SHA-256 is computed off the loop and written beside it, and
:class:`~.anchor.RecordingFinished` is published.  A disk error never touches
the call: it publishes :class:`~.anchor.RecordingFailed` and stops recording.

A *local* leg (:meth:`MediaEngine.add_local`, :mod:`.local`) has no socket:
its frame comes from an in-process object (a radio talkgroup's sound card)
and its share of the mix is handed back to it; it is mixed like any other leg.

Every ``housekeeping`` interval the engine checks for dead media (no accepted
RTP for ``dead_media_s`` on a leg that should be receiving:
:class:`~.anchor.DeadMedia`, once until RTP resumes) and sends a minimal RTCP
SR or RR with a CNAME.

``clock`` is injectable: the ticker is optional (``start(run_clock=False)``)
so tests drive :meth:`tick` with a stepped ``now``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from telephony.media.anchor import (
    DeadMedia,
    DtmfReceived,
    MediaCallback,
    MediaEvent,
    PromptFinished,
    RecordingFailed,
    RecordingFinished,
)
from telephony.media.dtmf import DtmfReceiver, InbandDtmfDetector, dtmf_candidates
from telephony.media.errors import MediaError
from telephony.media.forcein import ModeKeys
from telephony.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from telephony.media.jitter import (
    ConcealmentKind,
    Frame,
    JitterBuffer,
    JitterSettings,
    LatchSettings,
    LatchVerdict,
    RtpLatch,
)
from telephony.media.local import LocalAudio, LocalPort
from telephony.media.mixer import Channel, LegConfig, LegMode, Mixer
from telephony.media.prompts import PromptError, PromptPlayer, SequencePlayer, load_prompt
from telephony.media.recorder import RoomRecorder, recording_path
from telephony.media.rtp import (
    MAX_DATAGRAM,
    ReportBlock,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpUnknown,
    build_rtcp,
    is_rtcp,
    parse_rtcp,
    parse_rtp,
)
from telephony.media.sdp import (
    PCMA,
    LocalMedia,
    Negotiated,
    SdpError,
    SessionDescription,
    accept_answer,
    answer_offer,
    build_sdp,
    make_offer,
    parse_sdp,
)

__all__ = ["EngineSettings", "MediaEngine", "MediaUnavailable", "parse_mode"]

log = logging.getLogger(__name__)

FRAME = 160
Pcm = npt.NDArray[np.int16]
_RTP_HEADER = struct.Struct("!BBHII")
_NTP_EPOCH = 2208988800
_NAME = re.compile(r"^(?:[a-z]{2}/)?[A-Za-z0-9_-]{1,64}$")  # "hold", "zh/n5" (a language)
_NOWHERE = ("0.0.0.0", 0)
MAX_CATCHUP = 3  # late ticks run back to back at most this many; beyond that they are skipped


class MediaUnavailable(RuntimeError):
    """No port pair or leg slot is free (the B2BUA answers 503, not 488)."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine binds, times out, records and finds prompts."""

    bind_address: str = "127.0.0.1"
    advertise_address: str | None = None  # put in SDP; default bind_address
    port_min: int = 20000
    port_max: int = 20999
    dead_media_s: float = 30.0
    recordings_dir: Path | None = None  # None: no recordings
    record_on_answer: bool = False  # True: a room records from record(), not its first join
    prompts_dir: Path | None = None
    symmetric_rtp: bool = True
    max_legs: int = 2000
    tick_s: float = 0.02
    housekeeping_s: float = 0.5
    rtcp_interval_s: float = 5.0
    jitter: JitterSettings = field(default_factory=JitterSettings)

    def advertised(self) -> str:
        """The address our SDP carries; an unspecified bind address needs an explicit one."""
        address = self.advertise_address or self.bind_address
        if ipaddress.ip_address(address).is_unspecified:
            raise ValueError("media: bind_address is unspecified; set advertise_address")
        return address


def parse_mode(mode: str) -> tuple[LegMode, str | None]:
    """``talk``, ``listen``, ``barge`` or ``whisper:<leg_id>`` -> (mode, whisper target)."""
    name, _, target = mode.partition(":")
    try:
        parsed = LegMode(name)
    except ValueError:
        raise ValueError(
            f"unknown mode {mode!r}: use talk, listen, barge or whisper:<leg>") from None
    if (parsed is LegMode.WHISPER) != bool(target):
        raise ValueError(f"mode {mode!r}: whisper needs a target leg and only whisper takes one")
    return parsed, target or None


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, handler: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._handler = handler

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._handler(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away: dead media will say so.
        log.debug("media socket error: %s", exc)


@dataclass(eq=False)
class _Leg:
    leg_id: str
    port: int
    rtp: asyncio.DatagramTransport | None  # None: a local (in-process audio) leg
    rtcp: asyncio.DatagramTransport | None
    jitter: JitterBuffer
    session_id: int
    ssrc: int
    seq: int
    ts: int
    latch: RtpLatch = field(default_factory=lambda: RtpLatch(_NOWHERE))
    version: int = 1
    negotiated: Negotiated | None = None
    pending_offer: SessionDescription | None = None
    dtmf: DtmfReceiver | None = None
    inband: InbandDtmfDetector | None = None
    last: Pcm | None = None
    room: str | None = None
    prompt: PromptPlayer | None = None
    last_rx: float = 0.0
    dead_reported: bool = False
    rtcp_next: float = 0.0
    marker: bool = True
    alaw: bool = False
    keys: ModeKeys | None = None
    sock: socket.socket | None = None  # the RTP socket itself: sending skips asyncio's buffering
    local: LocalPort | None = None  # audio from/to an in-process object instead of RTP
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("rx", "rx_bad", "rx_foreign", "rx_ignored", "rx_bad_size", "rtcp_rx", "rtcp_bad",
         "tx", "tx_octets", "tx_dropped"), 0))

    def destination(self, symmetric: bool) -> tuple[str, int] | None:
        neg = self.negotiated
        if neg is None or not neg.direction.sends:
            return None
        if symmetric and self.latch.latched is not None:
            return self.latch.latched
        return neg.remote


@dataclass(eq=False)
class _Room:
    name: str
    legs: list[str] = field(default_factory=list)
    caller: str | None = None
    prompt: PromptPlayer | None = None
    recorder: RoomRecorder | None = None


class MediaEngine:
    """Anchors RTP for every leg of this node and mixes rooms on a steady 20 ms clock.

    Implements :class:`~telephony.media.anchor.MediaAnchor`; see the module docstring.
    """

    name = "media"

    def __init__(self, settings: EngineSettings, *, clock: Callable[[], float] | None = None,
                 wallclock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.address = settings.advertised()
        self._clock_arg = clock
        self._wallclock = wallclock
        self._rng = rng or random.SystemRandom()
        self._mixer = Mixer(FRAME)
        self._legs: dict[str, _Leg] = {}
        self._rooms: dict[str, _Room] = {}
        self._subscribers: list[MediaCallback] = []
        self._next_port = settings.port_min + (settings.port_min % 2)
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._prompt_cache: dict[str, Pcm] = {}
        self._prompting: set[_Leg | _Room] = set()  # owners of a playing prompt
        self._next_housekeeping = 0.0
        self.tick_cost_us: deque[float] = deque(maxlen=3000)
        self.lateness_ms: deque[float] = deque(maxlen=3000)
        self.stats: dict[str, int] = dict.fromkeys(
            ("ticks", "overruns", "catchups", "tick_errors", "dead_media", "dtmf",
             "recordings_finished", "recordings_failed"), 0)

    # -- lifecycle ------------------------------------------------------------

    def now(self) -> float:
        """The engine's clock (the loop's monotonic time unless injected)."""
        if self._clock_arg is not None:
            return self._clock_arg()
        return asyncio.get_running_loop().time()

    async def start(self, run_clock: bool = True) -> None:
        """Start the 20 ms ticker (``run_clock=False``: the caller steps :meth:`tick`)."""
        if self.settings.recordings_dir is not None:
            self.settings.recordings_dir.mkdir(parents=True, exist_ok=True)
        if run_clock and self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._run_clock(),
                                                                   name="media-clock")

    async def stop(self) -> None:
        """Stop the clock, release every leg, close recordings and wait for their hashes."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for leg_id in list(self._legs):
            await self.release(leg_id)
        await self.drain()

    async def drain(self) -> None:
        """Wait until every recording being finalised has published its event."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def subscribe(self, callback: MediaCallback) -> Callable[[], None]:
        """Call ``callback`` with every :data:`MediaEvent`; returns the unsubscriber."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def _emit(self, event: MediaEvent) -> None:
        if isinstance(event, RecordingFinished):
            self.stats["recordings_finished"] += 1
        elif isinstance(event, RecordingFailed):
            self.stats["recordings_failed"] += 1
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("media event subscriber failed (a bug)", extra={"event": event})

    # -- ports ----------------------------------------------------------------

    async def _bind(self, port: int, handler: Callable[[bytes, tuple[str, int]], None]
                    ) -> tuple[asyncio.DatagramTransport, socket.socket]:
        family = socket.AF_INET6 if ":" in self.settings.bind_address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.settings.bind_address, port))
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Rtp(handler), sock=sock)
        except OSError:
            sock.close()
            raise
        return transport, sock

    async def _open_leg(self, leg_id: str) -> _Leg:
        if len(leg_id) > 256 or not leg_id.isprintable():
            raise ValueError("leg id must be printable and at most 256 characters")
        if len(self._legs) >= self.settings.max_legs:
            raise MediaUnavailable(f"media: {self.settings.max_legs} legs already anchored")
        s = self.settings
        first = s.port_min + (s.port_min % 2)
        pairs = max(0, (s.port_max - first + 1) // 2)
        for _ in range(pairs):
            port = self._next_port
            self._next_port = port + 2 if port + 3 <= s.port_max else first
            if any(leg.port == port for leg in self._legs.values()):
                continue
            try:
                rtp, sock = await self._bind(port, lambda d, a: self._rtp_in(leg_id, d, a))
            except OSError:
                continue
            try:
                rtcp, _ = await self._bind(port + 1, lambda d, a: self._rtcp_in(leg_id, d, a))
            except OSError:
                rtp.close()
                continue
            leg = self._new_leg(leg_id, port, rtp, rtcp)
            leg.sock = sock
            return leg
        raise MediaUnavailable(f"media: no free RTP port pair in {s.port_min}-{s.port_max}")

    def _new_leg(self, leg_id: str, port: int, rtp: asyncio.DatagramTransport | None,
                 rtcp: asyncio.DatagramTransport | None) -> _Leg:
        r = self._rng
        leg = _Leg(leg_id, port, rtp, rtcp, JitterBuffer(self.settings.jitter),
                   session_id=r.getrandbits(62), ssrc=r.getrandbits(32),
                   seq=r.getrandbits(16), ts=r.getrandbits(32))
        self._legs[leg_id] = leg
        self._mixer.add_leg(leg_id, LegConfig(("solo", leg_id)))
        return leg

    def _local(self, leg: _Leg) -> LocalMedia:
        return LocalMedia(self.address, leg.port, leg.session_id, leg.version)

    # -- the MediaAnchor contract -----------------------------------------------

    async def answer(self, leg_id: str, remote_offer: str) -> str:
        """Our answer to a leg's offer (a new leg or a re-INVITE); SdpError -> 488."""
        offer = parse_sdp(remote_offer)
        leg = self._legs.get(leg_id)
        is_new = leg is None
        if leg is None:
            leg = await self._open_leg(leg_id)
        else:
            leg.version += 1
        try:
            sd, agreed = answer_offer(offer, self._local(leg))
        except SdpError:
            if is_new:
                await self.release(leg_id)
            raise
        self._apply(leg, agreed)
        return build_sdp(sd)

    async def offer(self, leg_id: str) -> str:
        """Our offer for a new outbound leg (or a new offer on an existing one)."""
        leg = self._legs.get(leg_id)
        if leg is None:
            leg = await self._open_leg(leg_id)
        else:
            leg.version += 1
        leg.pending_offer = make_offer(self._local(leg))
        return build_sdp(leg.pending_offer)

    async def accept(self, leg_id: str, remote_answer: str) -> None:
        """The far end's answer to our offer; SdpError if it does not fit the offer."""
        leg = self._leg(leg_id)
        if leg.pending_offer is None:
            raise SdpError(f"leg {leg_id!r} has no offer outstanding")
        agreed = accept_answer(leg.pending_offer, parse_sdp(remote_answer))
        leg.pending_offer = None
        self._apply(leg, agreed)

    async def join(self, room: str, leg_id: str, mode: str = "talk") -> None:
        """Move a leg into ``room`` (created on first join) in ``mode``; or change its mode.

        A leg not seen before is opened here (its ports bound), so the B2BUA may
        join a leg to its call's room before it answers or offers for it.
        """
        parsed, target = parse_mode(mode)
        if not room or len(room) > 256 or not room.isprintable():
            raise ValueError("room name must be printable and 1..256 characters")
        leg = self._legs.get(leg_id) or await self._open_leg(leg_id)
        if target is not None and (target == leg_id or target not in self._legs):
            raise ValueError(f"whisper target {target!r} is not another live leg")
        if leg.room == room:
            self._mixer.set_mode(leg_id, parsed, target)
            return
        self._leave_room(leg)
        r = self._rooms.get(room)
        if r is None:
            r = self._rooms[room] = _Room(room)
        talks = parsed is LegMode.TALK
        if r.caller is None and talks:
            r.caller = leg_id
        # A radio patched in is the far side, like the public caller.
        channel = (Channel.CALLER if r.caller == leg_id or leg.local is not None
                   else Channel.CALL_TAKER)
        self._mixer.remove_leg(leg_id)
        self._mixer.add_leg(leg_id, LegConfig(room, parsed, target, channel=channel))
        r.legs.append(leg_id)
        leg.room = room
        if (r.recorder is None and self.settings.recordings_dir is not None
                and not self.settings.record_on_answer):
            self._start_recording(r)

    async def release(self, leg_id: str) -> None:
        """Stop a leg's media, free its ports; the last leg out closes the room's recording."""
        leg = self._legs.pop(leg_id, None)
        if leg is None:
            return
        self._leave_room(leg)
        self._mixer.remove_leg(leg_id)
        self._set_prompt(leg_id, leg, None)
        if leg.local is not None:
            leg.local.close()
            return
        self._send_rtcp(leg, bye=True)
        assert leg.rtp is not None and leg.rtcp is not None
        leg.rtp.close()
        leg.rtcp.close()

    def add_local(self, leg_id: str, audio: LocalAudio) -> None:
        """Anchor a leg whose audio is an in-process object (:mod:`.local`), then
        :meth:`join` it to a room like any other leg; :meth:`release` detaches it."""
        if leg_id in self._legs:
            raise ValueError(f"leg {leg_id!r} already exists")
        if len(leg_id) > 256 or not leg_id.isprintable():
            raise ValueError("leg id must be printable and at most 256 characters")
        if len(self._legs) >= self.settings.max_legs:
            raise MediaUnavailable(f"media: {self.settings.max_legs} legs already anchored")
        leg = self._new_leg(leg_id, 0, None, None)
        leg.local = LocalPort(audio)
        leg.local.open()

    def set_mode(self, leg_id: str, mode: str) -> None:
        """Switch a joined leg's mode mid-call (force-in: listen -> whisper -> barge)."""
        leg = self._leg(leg_id)
        if leg.room is None:
            raise ValueError(f"leg {leg_id!r} is in no room")
        parsed, target = parse_mode(mode)
        if target is not None and (target == leg_id or target not in self._legs):
            raise ValueError(f"whisper target {target!r} is not another live leg")
        self._mixer.set_mode(leg_id, parsed, target)

    def record(self, room: str) -> None:
        """Start recording ``room`` (the call was answered) unless it already records;
        a no-op without ``recordings_dir``.  ValueError if there is no such room."""
        r = self._rooms.get(room)
        if r is None:
            raise ValueError(f"unknown room {room!r}")
        if r.recorder is None and self.settings.recordings_dir is not None:
            self._start_recording(r)

    def expect_media(self, leg_id: str) -> None:
        """Restart a leg's dead-media timer: a queued caller's phone may send no RTP
        until it gets its 200, so the count starts again when the call connects."""
        leg = self._leg(leg_id)
        leg.last_rx = self.now()
        leg.dead_reported = False

    def mode_keys(self, leg_id: str, whisper_to: str | None) -> None:
        """Let a force-in leg switch mode by DTMF (*1 listen, *2 whisper to ``whisper_to``,
        *3 barge); ``None`` turns it off.  Digits are still published as events."""
        self._leg(leg_id).keys = ModeKeys(whisper_to) if whisper_to is not None else None

    def mute(self, leg_id: str, muted: bool = True) -> None:
        """Nobody hears this leg while muted."""
        self._leg(leg_id)
        self._mixer.update(leg_id, muted=muted)

    def deafen(self, leg_id: str, deaf: bool = True) -> None:
        """This leg hears nothing (prompts excepted) while deaf."""
        self._leg(leg_id)
        self._mixer.update(leg_id, deaf=deaf)

    def _leg(self, leg_id: str) -> _Leg:
        try:
            return self._legs[leg_id]
        except KeyError:
            raise ValueError(f"unknown leg {leg_id!r}") from None

    def _apply(self, leg: _Leg, agreed: Negotiated) -> None:
        old = leg.negotiated
        if old is None or old.remote != agreed.remote:
            leg.latch.reset(agreed.remote or _NOWHERE)
        types = {agreed.payload_type}
        if agreed.dtmf_payload_type is not None:
            types.add(agreed.dtmf_payload_type)
        leg.latch.settings = LatchSettings(payload_types=frozenset(types))
        leg.dtmf = (DtmfReceiver(agreed.dtmf_payload_type)
                    if agreed.dtmf_payload_type is not None else None)
        leg.inband = InbandDtmfDetector() if leg.dtmf is None else None
        leg.negotiated = agreed
        leg.alaw = agreed.codec == PCMA
        leg.last_rx = self.now()
        leg.dead_reported = False

    def _leave_room(self, leg: _Leg) -> None:
        if leg.room is None:
            return
        r = self._rooms[leg.room]
        r.legs.remove(leg.leg_id)
        leg.room = None
        self._mixer.remove_leg(leg.leg_id)
        self._mixer.add_leg(leg.leg_id, LegConfig(("solo", leg.leg_id)))
        if not r.legs:
            del self._rooms[r.name]
            self._set_prompt(r.name, r, None)
            self._finish_recording(r)

    # -- receiving ------------------------------------------------------------------

    def _rtp_in(self, leg_id: str, data: bytes, source: tuple[str, int]) -> None:
        leg = self._legs.get(leg_id)
        if leg is None:
            return
        c = leg.counters
        if len(data) > MAX_DATAGRAM:
            c["rx_bad"] += 1
            return
        if is_rtcp(data):
            self._rtcp_in(leg_id, data, source)  # RFC 5761 multiplexing
            return
        try:
            packet = parse_rtp(data)
        except MediaError:
            c["rx_bad"] += 1
            return
        agreed = leg.negotiated
        if agreed is None or not agreed.direction.receives:
            c["rx_ignored"] += 1
            return
        now = self.now()
        verdict = leg.latch.receive(source, packet, now)
        if verdict is not LatchVerdict.ACCEPT:
            c["rx_foreign" if verdict is LatchVerdict.FOREIGN else "rx_ignored"] += 1
            return
        c["rx"] += 1
        leg.last_rx = now
        leg.dead_reported = False
        if packet.payload_type == agreed.dtmf_payload_type and leg.dtmf is not None:
            for digit in leg.dtmf.receive_all(packet):
                self._digit(leg, digit.digit, "rfc4733", now)
            return
        if len(packet.payload) != FRAME:
            c["rx_bad_size"] += 1  # we negotiated ptime 20: 160 G.711 octets
            return
        leg.jitter.push(packet, now)

    def _rtcp_in(self, leg_id: str, data: bytes, source: tuple[str, int]) -> None:
        leg = self._legs.get(leg_id)
        if leg is None:
            return
        try:
            parse_rtcp(data)
        except MediaError:
            leg.counters["rtcp_bad"] += 1
            return
        leg.counters["rtcp_rx"] += 1

    # -- the clock ---------------------------------------------------------------------

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.settings.tick_s
        deadline = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            woke = loop.time()
            self.lateness_ms.append(1000.0 * (woke - deadline))
            ran = 0
            while deadline <= woke + 1e-4 and ran < MAX_CATCHUP:
                started = time.perf_counter()
                try:
                    self.tick(self.now())
                except Exception:
                    self.stats["tick_errors"] += 1
                    log.exception("media tick failed (a bug); the clock keeps running")
                self.tick_cost_us.append(1e6 * (time.perf_counter() - started))
                deadline += period
                ran += 1
            self.stats["catchups"] += max(0, ran - 1)
            if deadline <= loop.time():
                skipped = int((loop.time() - deadline) // period) + 1
                self.stats["overruns"] += skipped
                deadline += skipped * period

    def tick(self, now: float) -> None:
        """One 20 ms frame for every leg: jitter buffers, decode, mix, prompts, encode, send."""
        self.stats["ticks"] += 1
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + self.settings.housekeeping_s
            self._housekeeping(now)
        order = self._mixer.order
        if not order:
            return
        legs = [self._legs[key] for key in order]  # type: ignore[index]
        block = self._collect(legs, now)
        out, recordings = self._mixer.mix_block(block)
        self._add_prompts(legs, out)
        self._send(legs, out)
        for room_name, rec in recordings.items():
            self._record(self._rooms[room_name], rec)  # type: ignore[index]

    def _collect(self, legs: list[_Leg], now: float) -> Pcm:
        block = np.zeros((len(legs), FRAME), dtype=np.int16)
        rows: tuple[list[int], list[int]] = ([], [])
        payloads: tuple[list[bytes], list[bytes]] = ([], [])
        for i, leg in enumerate(legs):
            if leg.local is not None:
                frame = leg.local.pop()
                if frame is not None:
                    block[i] = frame
                continue
            got = leg.jitter.pop(now)
            if isinstance(got, Frame):
                law = int(leg.alaw)
                rows[law].append(i)
                payloads[law].append(got.packet.payload)
            elif got.kind is ConcealmentKind.REPEAT and leg.last is not None:
                block[i] = (leg.last * got.gain).astype(np.int16)
        for law, decode in ((0, ulaw_decode), (1, alaw_decode)):
            if rows[law]:
                block[rows[law]] = decode(b"".join(payloads[law])).reshape(-1, FRAME)
        fresh = rows[0] + rows[1]
        for i in fresh:
            legs[i].last = block[i]
        self._inband(legs, block, [i for i in fresh if legs[i].inband is not None])
        return block

    def _inband(self, legs: list[_Leg], block: Pcm, rows: list[int]) -> None:
        if not rows:
            return
        flagged = dtmf_candidates(block[rows])
        for i, tone in zip(rows, flagged, strict=True):
            detector = legs[i].inband
            assert detector is not None
            if not tone:
                detector.reset()
            elif (digit := detector.feed(block[i])) is not None:
                self._digit(legs[i], digit.digit, "inband", self.now())

    def _digit(self, leg: _Leg, digit: str, source: Literal["rfc4733", "inband"],
               now: float) -> None:
        self.stats["dtmf"] += 1
        self._emit(DtmfReceived(leg.leg_id, digit, source))
        if leg.keys is None or leg.room is None or leg.leg_id not in self._legs:
            return
        mode = leg.keys.feed(digit, now)
        if mode is None:
            return
        try:
            self.set_mode(leg.leg_id, mode)
        except ValueError as exc:  # the call taker has left: keep the current mode
            log.info("force-in key ignored", extra={"leg": leg.leg_id, "error": str(exc)})
            return
        log.info("force-in mode switched by DTMF", extra={"leg": leg.leg_id, "mode": mode})

    def _add_prompts(self, legs: list[_Leg], out: Pcm) -> None:
        if not self._prompting:
            return
        room_frames: dict[str, Pcm | None] = {}
        for i, leg in enumerate(legs):
            frames = []
            if leg.prompt is not None:
                frames.append(self._prompt_frame(leg.leg_id, leg, None))
            if leg.room is not None and self._rooms[leg.room].prompt is not None:
                if leg.room not in room_frames:
                    room = self._rooms[leg.room]
                    room_frames[leg.room] = self._prompt_frame(room.name, None, room)
                frames.append(room_frames[leg.room])
            for frame in frames:
                if frame is not None:
                    mixed = out[i].astype(np.int32) + frame
                    out[i] = np.clip(mixed, -32768, 32767).astype(np.int16)

    def _prompt_frame(self, target: str, leg: _Leg | None, room: _Room | None) -> Pcm | None:
        owner: _Leg | _Room = leg if leg is not None else room  # type: ignore[assignment]
        player = owner.prompt
        assert player is not None
        frame = player.next_frame()
        if frame is None:
            owner.prompt = None
            self._prompting.discard(owner)
            self._emit(PromptFinished(target, player.name, stopped=False))
        return frame

    def _send(self, legs: list[_Leg], out: Pcm) -> None:
        symmetric = self.settings.symmetric_rtp
        # One vectorised encode per law, each leg's frame in its own law only.
        payloads: list[bytes] = [b""] * len(legs)
        for alaw, encode in ((False, ulaw_encode), (True, alaw_encode)):
            rows = [i for i, leg in enumerate(legs) if leg.alaw is alaw]
            if rows:
                for i, payload in zip(rows, _split(encode(out[rows])), strict=True):
                    payloads[i] = payload
        for i, leg in enumerate(legs):
            if leg.local is not None:
                leg.local.send(out[i])
                continue
            dest = leg.destination(symmetric)
            if dest is not None:
                assert leg.negotiated is not None
                payload = payloads[i]
                header = _RTP_HEADER.pack(0x80, leg.negotiated.payload_type
                                          | (0x80 if leg.marker else 0), leg.seq, leg.ts, leg.ssrc)
                try:
                    leg.sock.sendto(header + payload, dest)  # type: ignore[union-attr]
                except OSError:  # full buffer, or ICMP unreachable: a lost frame, not a fault
                    leg.counters["tx_dropped"] += 1
                else:
                    leg.marker = False
                    leg.counters["tx"] += 1
                    leg.counters["tx_octets"] += FRAME
                leg.seq = (leg.seq + 1) & 0xFFFF
            leg.ts = (leg.ts + FRAME) & 0xFFFFFFFF

    # -- housekeeping: dead media and RTCP ---------------------------------------------

    def _housekeeping(self, now: float) -> None:
        limit = self.settings.dead_media_s
        for leg in list(self._legs.values()):
            agreed = leg.negotiated
            if agreed is None:
                continue
            silent = now - leg.last_rx
            if agreed.direction.receives and not leg.dead_reported and silent >= limit:
                leg.dead_reported = True
                self.stats["dead_media"] += 1
                log.warning("dead media", extra={"leg": leg.leg_id, "silent_s": round(silent, 1)})
                self._emit(DeadMedia(leg.leg_id, silent))
            if now >= leg.rtcp_next:
                leg.rtcp_next = now + self.settings.rtcp_interval_s
                self._send_rtcp(leg)

    def _send_rtcp(self, leg: _Leg, bye: bool = False) -> None:
        dest = leg.destination(self.settings.symmetric_rtp)
        if dest is None:
            return
        stats = leg.jitter.stats()
        block = ReportBlock(leg.latch.ssrc or 0, 0, max(-(1 << 23), min(stats.lost, (1 << 23) - 1)),
                            0, int(stats.jitter_ms * 8), 0, 0)
        reports = (block,) if leg.latch.ssrc is not None else ()
        first: RtcpSenderReport | RtcpReceiverReport
        if leg.counters["tx"]:
            wall = self._wallclock() + _NTP_EPOCH
            ntp = (int(wall) << 32 | int((wall % 1) * (1 << 32))) & ((1 << 64) - 1)
            first = RtcpSenderReport(leg.ssrc, ntp, leg.ts, leg.counters["tx"] & 0xFFFFFFFF,
                                     leg.counters["tx_octets"] & 0xFFFFFFFF, reports)
        else:
            first = RtcpReceiverReport(leg.ssrc, reports)
        cname = b"dispatchd@" + self.address.encode()
        item = bytes((1, len(cname))) + cname
        sdes = leg.ssrc.to_bytes(4, "big") + item + bytes(4 - len(item) % 4)
        packets: list[Any] = [first, RtcpUnknown(202, 1, sdes)]
        if bye:
            packets.append(RtcpUnknown(203, 1, leg.ssrc.to_bytes(4, "big")))
        assert leg.rtcp is not None  # a local leg has no destination
        leg.rtcp.sendto(build_rtcp(packets), (dest[0], dest[1] + 1))

    # -- recording ---------------------------------------------------------------------

    def _start_recording(self, room: _Room) -> None:
        assert self.settings.recordings_dir is not None
        path = recording_path(self.settings.recordings_dir, room.name, self._wallclock())
        room.recorder = RoomRecorder(room.name, path, self._emit)
        if room.recorder.open():
            self._mixer.set_recording(room.name, True)

    def _record(self, room: _Room, block: Pcm) -> None:
        if room.recorder is not None and not room.recorder.write(block) and room.legs:
            self._mixer.set_recording(room.name, False)

    def _finish_recording(self, room: _Room) -> None:
        task = room.recorder.finish() if room.recorder is not None else None
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- prompts -------------------------------------------------------------------------

    def _load(self, prompt: str) -> Pcm:
        if not _NAME.match(prompt):
            raise PromptError(f"prompt name {prompt!r} must be 1..64 of A-Z a-z 0-9 _ - "
                              "(after an optional xx/ language)")
        if self.settings.prompts_dir is None:
            raise PromptError("media: no prompts_dir configured")
        if prompt not in self._prompt_cache:
            if len(self._prompt_cache) >= 128:  # two languages of announcement clips
                self._prompt_cache.pop(next(iter(self._prompt_cache)))
            self._prompt_cache[prompt] = load_prompt(self.settings.prompts_dir / f"{prompt}.wav")
        return self._prompt_cache[prompt]

    def play_to_leg(self, leg_id: str, prompt: str, loop: bool = False) -> None:
        """Play ``prompts_dir/<prompt>.wav`` to one leg (replacing any prompt it hears)."""
        leg = self._leg(leg_id)
        self._set_prompt(leg_id, leg, PromptPlayer(prompt, self._load(prompt), loop))

    def play_sequence(self, leg_id: str, prompts: Sequence[str], then: str | None) -> None:
        """Play ``prompts`` back to back to one leg, then loop ``then`` (a queue
        announcement followed by music on hold); PromptError if any cannot play."""
        leg = self._leg(leg_id)
        intro = np.concatenate([self._load(p) for p in prompts]) if prompts else None
        tail = self._load(then) if then is not None else None
        if intro is None:
            if tail is None:
                raise PromptError("nothing to play")
            intro, tail = tail, tail
        name = prompts[0] if prompts else str(then)
        self._set_prompt(leg_id, leg, SequencePlayer(name, intro, tail))

    def play_to_room(self, room: str, prompt: str, loop: bool = False) -> None:
        """Play a prompt to every leg of a room (e.g. a join tone or an announcement)."""
        r = self._rooms.get(room)
        if r is None:
            raise ValueError(f"unknown room {room!r}")
        self._set_prompt(room, r, PromptPlayer(prompt, self._load(prompt), loop))

    def stop_prompt(self, target: str) -> None:
        """Stop whatever a leg (or else a room) named ``target`` is hearing."""
        owner: _Leg | _Room | None = self._legs.get(target) or self._rooms.get(target)
        if owner is not None:
            self._set_prompt(target, owner, None)

    def _set_prompt(self, target: str, owner: _Leg | _Room, player: PromptPlayer | None) -> None:
        if owner.prompt is not None:
            self._emit(PromptFinished(target, owner.prompt.name, stopped=True))
        owner.prompt = player
        if player is None:
            self._prompting.discard(owner)
        else:
            self._prompting.add(owner)

    # -- observation -----------------------------------------------------------------------

    def leg_counters(self, leg_id: str) -> dict[str, int]:
        """Packet counters of one leg (received, rejected by kind, sent)."""
        leg = self._leg(leg_id)
        return dict(leg.local.counters if leg.local is not None else leg.counters)

    def rooms(self) -> dict[str, tuple[str, ...]]:
        """Every room and its legs."""
        return {name: tuple(r.legs) for name, r in self._rooms.items()}

    def health(self) -> dict[str, Any]:
        """Rooms, legs, clock overruns and per-tick cost for ``/health`` and metrics."""
        totals = dict.fromkeys(("rx", "rx_bad", "rx_foreign", "tx"), 0)
        for leg in self._legs.values():
            for key in totals:
                totals[key] += leg.counters[key]
        return {
            "rooms": len(self._rooms), "legs": len(self._legs),
            "recording": sum(1 for r in self._rooms.values()
                             if r.recorder is not None and r.recorder.active),
            **self.stats, **{f"packets_{k}": v for k, v in totals.items()},
            "tick_us_p50": _percentile(self.tick_cost_us, 50),
            "tick_us_p99": _percentile(self.tick_cost_us, 99),
            "lateness_ms_p99": _percentile(self.lateness_ms, 99),
        }


def _split(data: bytes) -> list[bytes]:
    return [data[i:i + FRAME] for i in range(0, len(data), FRAME)]


def _percentile(values: deque[float], pct: float) -> float:
    if not values:
        return 0.0
    return round(float(np.percentile(np.fromiter(values, dtype=np.float64), pct)), 3)
