"""A RoIP gateway: a radio interface that is a SIP endpoint, held on one permanent call.

Theory of operation
-------------------
A RoIP box (Icom VE-PG4's transceiver controller, JPS ARA-1, the many
"RoIP-302"-style gateways) sits between an analogue or trunked radio and the
IP network and answers SIP calls: the call's RTP is the radio's audio both
ways.  :class:`RoipGateway` is an :class:`~radio.audio_gateway.AudioGateway`
(floor, keying, transmit gating, receive path, reconnect are shared with the
sound-card kind); only how the device is reached differs.

**Primary mode: dispatchd calls the device** (the injected link: dispatch wires
:mod:`telephony.roip_link`; ``radio`` imports nothing of ``telephony``) and keeps
that call up for ever, at the configured ``uri`` or at the contact the device
registered under ``account``.  We chose dialling out over waiting for the
device's call because dispatchd then owns the call's life: it knows at once
when the call is missing (no answer, BYE, keep-alive failure) and redials on
its own schedule, and every box supports being called while fewer support a
permanent auto-dial.

**PTT signalling to the device** (``ptt``):

* ``"dtmf"``: RFC 4733 events, ``key_digits`` (default ``*``) to transmit,
  ``unkey_digits`` (default ``#``) to stop -- the PTT-on/PTT-off tones of
  Icom's VE-PG4 and the "SIP actions" DTMF sequences of the JPS ARA-1 are
  configured the same way on the device;
* ``"info"``: a SIP INFO with ``info_content_type`` (default
  ``application/x-ptt``) and ``info_key_body`` / ``info_unkey_body`` (default
  ``PTT: on`` / ``PTT: off``, the convention :mod:`telephony.media.pttkeys`
  already reads from consoles; no vendor standard exists, so both are
  settings); a refused or unanswered INFO is a fault and the device is lost;
* ``"vox"``: nothing is signalled; the device keys on the voice it receives
  (VE-PG4's "VOX" PTT control type).  Unkeyed we send silence only.

**Squelch (COS) from the device** (``cos``): ``"dtmf"`` digits
(``cos_open_digits`` / ``cos_close_digits``), an ``"info"`` body
(``info_cos_open_body`` / ``info_cos_close_body``), or ``"vox"``: voice
activity on the device's RTP (threshold and hang as the sound-card kind); with
VOX the squelch also closes ``vox_hang_s`` after the device stops sending RTP.
Digit sequences are matched like the ARA-1 does: digits closer than
``digit_timeout_s`` belong to one sequence.

**Never left keyed**: the first thing after every call set-up (start-up and
each redial) is the unkey signal; stop sends unkey then BYE; a lost call
revokes every grant at once (a device losing its call unkeys by itself: the
VE-PG4's no-voice release timer, the ARA-1's RTP timeout).  Unkeyed, only
silence is sent (it also keeps the device's RTP inactivity timer fed).

**Redial**: after a loss every ``retry_s``, doubling up to ``retry_max_s``
(:func:`redial_delay`); an alarm (``LinkDown`` / ``LinkUp``) when it is
lost and back, as for every gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from radio.audio import FRAME_BYTES
from radio.audio_gateway import AudioGateway, Vox
from radio.floor import FloorSettings
from radio.tetra import GatewayFault

__all__ = ["DigitMatcher", "LinkFactory", "RadioLink", "RoipError", "RoipGateway", "RoipSettings",
           "redial_delay"]

log = logging.getLogger(__name__)

Signalling = Literal["dtmf", "info", "vox"]
#: An account name -> (Request-URI, host, port) of its registered contact, or None.
Resolver = Callable[[str], Awaitable[tuple[str, str, int] | None]]
SILENCE = bytes(FRAME_BYTES)
MAX_SEQUENCE = 16
STOP_SETTLE_S = 1.0


class RoipError(ConnectionError):
    """The device cannot be used now (an ``OSError``: the gateway retries).

    Links raise their own ``ConnectionError`` subclasses; both are handled alike."""


class _Answer(Protocol):
    @property
    def status(self) -> int: ...


class RadioLink(Protocol):
    """The call to the device (:class:`telephony.roip_link.SipRadioLink` in the daemon)."""

    counters: dict[str, int]

    @property
    def up(self) -> bool:
        """The call is established and not lost."""
        ...

    async def open(self) -> None:
        """Place the call; a ``ConnectionError`` when it cannot be placed."""

    def close(self, *, bye: bool = True) -> None:
        """End the call (with a BYE unless ``bye`` is false)."""

    async def in_dialog(self, method: str, *, content_type: str | None = None,
                        body: bytes = b"") -> _Answer:
        """Send ``method`` in the call and return its final answer."""
        ...

    def send_info(self, content_type: str, body: bytes,
                  on_failure: Callable[[str], None]) -> None:
        """INFO now; ``on_failure(why)`` if it is refused or not answered."""

    async def drain(self) -> None:
        """Wait until everything queued to the device has been sent."""

    def send_audio(self, frame: bytes) -> None:
        """One 20 ms frame of 8 kHz s16le PCM to the device."""

    def send_dtmf(self, digits: str) -> None:
        """RFC 4733 digits to the device."""


class LinkFactory(Protocol):
    """Builds the link to call ``uri`` (at ``where``, or the URI's own host when None)."""

    def __call__(self, settings: RoipSettings, uri: str, where: tuple[str, int] | None, /, *,
                 on_audio: Callable[[bytes], None], on_digit: Callable[[str], None],
                 on_info: Callable[[str, bytes], bool],
                 on_lost: Callable[[str], None]) -> RadioLink: ...


@dataclass(frozen=True)
class RoipSettings:
    """One RoIP device (see the module docstring for every setting's meaning)."""

    name: str
    group: str
    uri: str | None = None
    account: str | None = None
    codec: Literal["PCMU", "PCMA"] = "PCMU"
    ptt: Signalling = "dtmf"
    cos: Signalling = "vox"
    key_digits: str = "*"
    unkey_digits: str = "#"
    cos_open_digits: str = "A"
    cos_close_digits: str = "B"
    digit_timeout_s: float = 1.0
    info_content_type: str = "application/x-ptt"
    info_key_body: str = "PTT: on"
    info_unkey_body: str = "PTT: off"
    info_cos_open_body: str = "COS: on"
    info_cos_close_body: str = "COS: off"
    vox_threshold_dbfs: float = -40.0
    vox_hang_s: float = 0.5
    local_host: str = "127.0.0.1"
    keepalive_s: float = 10.0
    request_timeout_s: float = 4.0
    invite_timeout_s: float = 8.0
    retry_s: float = 2.0
    retry_max_s: float = 60.0
    floor: FloorSettings = field(default_factory=FloorSettings)


def redial_delay(failures: int, base: float, cap: float) -> float:
    """Seconds before redial attempt ``failures`` (1, 2, ...): ``base`` doubling up to ``cap``."""
    return float(min(cap, base * 2.0 ** min(max(failures - 1, 0), 30)))


class DigitMatcher:
    """Digit sequences (sans-I/O): digits closer than ``timeout_s`` form one sequence."""

    def __init__(self, sequences: dict[str, str], timeout_s: float) -> None:
        """``sequences`` maps a name to its digits (e.g. ``{"open": "A"}``)."""
        self.sequences = {name: digits for name, digits in sequences.items() if digits}
        self.timeout_s = timeout_s
        self._buffer = ""
        self._last: float | None = None

    def feed(self, digit: str, now: float) -> str | None:
        """One digit at ``now``: the name of the sequence it completes, or None."""
        if self._last is not None and now - self._last > self.timeout_s:
            self._buffer = ""
        self._last = now
        self._buffer = (self._buffer + digit)[-MAX_SEQUENCE:]
        for name, digits in self.sequences.items():
            if self._buffer.endswith(digits):
                self._buffer = ""
                return name
        return None


def _body_matches(body: bytes, expected: str) -> bool:
    lines = [" ".join(line.split()).lower() for line in body.decode("utf-8", "replace")
             .splitlines() if line.strip()]
    return " ".join(expected.split()).lower() in lines


class RoipGateway(AudioGateway):
    """A RoIP device on a permanent SIP call (see the module docstring)."""

    def __init__(self, settings: RoipSettings, on_event: Callable[[object], None], *,
                 link_factory: LinkFactory, resolve: Resolver | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        """Describe the gateway; nothing is sent until :meth:`start`."""
        if (settings.uri is None) == (settings.account is None):
            raise ValueError(f"RoIP gateway {settings.name!r}: name exactly one of uri, account")
        super().__init__(settings.name, settings.group, settings.floor, settings.retry_s,
                         on_event, clock=clock)
        self.settings = settings
        self.resolve = resolve
        self.link_factory = link_factory
        self.link: RadioLink | None = None
        self._vox = Vox(settings.vox_threshold_dbfs, settings.vox_hang_s)
        self._digits = DigitMatcher({"open": settings.cos_open_digits,
                                     "close": settings.cos_close_digits},
                                    settings.digit_timeout_s)
        self._cos_open = False
        self._vox_timer: asyncio.TimerHandle | None = None
        self._dialled: str | None = None
        self.counters.update(dict.fromkeys(("calls", "cos_signals", "tx_silence"), 0))

    def _retry_delay(self, failures: int) -> float:
        return redial_delay(failures, self.settings.retry_s, self.settings.retry_max_s)

    # --- the call ------------------------------------------------------------------------------

    async def _target(self) -> tuple[str, tuple[str, int] | None]:
        s = self.settings
        if s.uri is not None:
            return s.uri, None
        assert s.account is not None
        found = await self.resolve(s.account) if self.resolve is not None else None
        if found is None:
            raise RoipError(f"RoIP account {s.account!r} is not registered")
        uri, host, port = found
        return uri, (host, port)

    async def _connect(self) -> None:
        """Call the device, then unkey it first thing (it may have been left keyed)."""
        s = self.settings
        uri, where = await self._target()
        self._dialled = uri
        link = self.link_factory(s, uri, where, on_audio=self._audio_in, on_digit=self._digit_in,
                                 on_info=self._info_in, on_lost=self._link_lost)
        self.link = link
        await link.open()
        self.counters["calls"] += 1
        self._cos_open = False
        self._vox.reset()
        if s.ptt == "dtmf":
            link.send_dtmf(s.unkey_digits)
        elif s.ptt == "info":
            answer = await link.in_dialog("INFO", content_type=s.info_content_type,
                                          body=s.info_unkey_body.encode())
            if not 200 <= answer.status < 300:
                raise RoipError(f"the device refused the unkey INFO: {answer.status}")

    async def _settle(self) -> None:
        """Stop: the unkey just sent must be taken before our BYE ends the call.

        RTP (a DTMF unkey) and SIP travel on different sockets, so a BYE sent right after the
        digits can be read first and the digits dropped with the call.  An in-dialog OPTIONS
        answered proves the device read what we sent before it; an unkey INFO is awaited."""
        link = self.link
        if link is None or not link.up or self.settings.ptt == "vox":
            return
        with contextlib.suppress(OSError, TimeoutError):
            # Bounded well inside the daemon's radio stop budget, even for several boxes.
            async with asyncio.timeout(min(self.settings.request_timeout_s, STOP_SETTLE_S)):
                await link.drain()
                await link.in_dialog("OPTIONS")

    def _disconnect(self) -> None:
        if self._vox_timer is not None:
            self._vox_timer.cancel()
            self._vox_timer = None
        self._cos_open = False
        if self.link is not None:
            self.link.close(bye=True)
            self.link = None

    def _link_lost(self, why: str) -> None:
        self.lost(why)

    def _set_ptt(self, on: bool) -> None:
        s = self.settings
        link = self.link
        if link is None or not link.up:
            if on:
                raise RoipError("no call to the RoIP device")
            return  # the call is gone: the device unkeys on its own
        if s.ptt == "dtmf":
            link.send_dtmf(s.key_digits if on else s.unkey_digits)
        elif s.ptt == "info":
            body = s.info_key_body if on else s.info_unkey_body
            link.send_info(s.info_content_type, body.encode(), self._signal_failed)

    def _signal_failed(self, why: str) -> None:
        """An INFO was refused or not answered: the device cannot be trusted to be unkeyed."""
        self.on_event(GatewayFault(self.name, why))
        self.lost(why)

    def _write(self, frame: bytes) -> None:
        if self.link is None:
            raise RoipError("no call to the RoIP device")
        self.link.send_audio(frame)

    def transmit(self, frame: bytes) -> None:
        """One frame of the talkgroup's mix: on air while keyed; silence otherwise."""
        if not self._keyed and self._up and self.link is not None and self.link.up:
            try:
                self.link.send_audio(SILENCE)
                self.counters["tx_silence"] += 1
            except OSError:
                pass  # the loss is reported by the link itself
        super().transmit(frame)

    # --- from the device ---------------------------------------------------------------------

    def _audio_in(self, frame: bytes) -> None:
        if not self._up:
            return
        if self.settings.cos == "vox":
            now = self._now()
            open_ = self._vox.feed(frame, now)
            if open_:
                self._arm_vox_close()
            self._received(frame, "vox" if open_ else None)
        else:
            self._received(frame, "cos" if self._cos_open else None)

    def _arm_vox_close(self) -> None:
        """Close the squelch ``vox_hang_s`` after the last loud frame even if RTP stops."""
        if self._vox_timer is not None:
            self._vox_timer.cancel()
        loop = asyncio.get_running_loop()
        self._vox_timer = loop.call_later(self.settings.vox_hang_s + 0.1, self._vox_closed)

    def _vox_closed(self) -> None:
        self._vox_timer = None
        self._vox.reset()
        self._set_receiving(None)

    def _cos(self, open_: bool) -> None:
        self.counters["cos_signals"] += 1
        self._cos_open = open_
        if not open_:
            self._set_receiving(None)

    def _digit_in(self, digit: str) -> None:
        if self.settings.cos != "dtmf" or not self._up:
            return
        matched = self._digits.feed(digit, self._now())
        if matched is not None:
            self._cos(matched == "open")

    def _info_in(self, content_type: str, body: bytes) -> bool:
        """An INFO from the device: True if it was a COS signal we understood (200)."""
        s = self.settings
        kind = content_type.split(";", 1)[0].strip().lower()
        if s.cos != "info" or kind != s.info_content_type.lower():
            return False
        if _body_matches(body, s.info_cos_open_body):
            self._cos(True)
        elif _body_matches(body, s.info_cos_close_body):
            self._cos(False)
        else:
            return False
        return True

    def health(self) -> dict[str, Any]:
        """The base health plus the device, the call and the link's counters."""
        link = self.link
        return {**super().health(), "device": self._dialled or self.settings.uri,
                "account": self.settings.account, "ptt": self.settings.ptt,
                "cos": self.settings.cos, "call": bool(link is not None and link.up),
                "link": dict(link.counters) if link is not None else {}}
