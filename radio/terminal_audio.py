"""Audio of TETRA terminals and satellite phones through their sound cards.

Theory of operation
-------------------
A TETRA terminal's PEI (:mod:`radio.tetra`) and a satphone's AT port
(:mod:`radio.satphone`) carry no audio: the voice is on the terminal's
analogue/USB audio interface, wired to a sound card
(:class:`hardware.soundcard.AudioDevice`).  This module gates that sound card
by what the control channel says, and offers it to the media engine through
the radio seam (:class:`radio.audio.RadioAudioLeg`: ``attach``, ``detach``,
``transmit`` of 20 ms, 8 kHz s16le frames).

TETRA (:class:`TetraAudio`) -- a terminal is in *one* group call at a time,
so one sound card serves every group the terminal carries, and one group at a
time may hold the card (:meth:`TetraAudio.leg` gives each group its own leg;
attaching a second group's leg raises :class:`TerminalBusy`).  The gateway's
events drive two gates:

* **receive**: from ``IncomingGroupCall`` (``+CTICN``) or ``TalkerChanged``
  naming another talker (``+CTXG`` granted to someone else) until ``TalkerChanged(None)``
  (``+CDTXC``), ``CallReleased`` (``+CTCR``), our own keying or ``LinkDown``,
  captured frames go to the leg of *that* group, if it is the attached one;
* **transmit**: from ``RadioKeyed`` (``+CTXG`` granted to us after
  ``AT+CTXD`` or a dial) until ``RadioUnkeyed`` (reported before
  ``AT+CUTXC`` is written), ``CallReleased``, pre-emption on air or
  ``LinkDown``; and at every frame the floor core must still grant the group
  (``granted``): a revoke closes the gate before its ``Unkey`` reaches the
  radio.  Any other frame is dropped: never audio to an unkeyed radio.

Satphone (:class:`SatphoneAudio`) -- a phone call is full duplex: both ways
flow while, and only while, the phone reports an ``active`` call on a live
link (``is_active``, read at every frame).

Both open their card at :meth:`start`; a card that cannot be opened or fails
mid-call is reported through ``on_fault`` and reopened every ``retry_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hardware.soundcard import FRAME_BYTES, AudioDevice
from radio.tetra import (
    CallReleased,
    IncomingGroupCall,
    LinkDown,
    RadioKeyed,
    RadioUnkeyed,
    TalkerChanged,
)

__all__ = ["SatphoneAudio", "TerminalBusy", "TetraAudio", "TetraGroupLeg"]

log = logging.getLogger(__name__)


class TerminalBusy(RuntimeError):
    """The terminal's sound card is already held by another group's leg."""


class _Card:
    """One sound card opened at start, reopened after a failure (shared plumbing)."""

    def __init__(self, name: str, audio: AudioDevice, on_fault: Callable[[str], None],
                 retry_s: float) -> None:
        self.name = name
        self.audio = audio
        self.on_fault = on_fault
        self.retry_s = retry_s
        self.open = False
        self.last_error: str | None = None
        self._listener: Callable[[bytes], None] | None = None
        self._reopen: asyncio.Task[None] | None = None
        self._stopping = False
        self.counters = dict.fromkeys(("tx", "tx_dropped", "rx", "rx_dropped"), 0)

    async def start(self) -> None:
        """Open the card; a failure is a fault (the control channel still works) and retried."""
        self._stopping = False
        if not self._try_open():
            self._schedule_reopen()

    async def stop(self) -> None:
        """Close the card and stop reopening it."""
        self._stopping = True
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self.open = False
        self.audio.close()

    def _try_open(self) -> bool:
        try:
            self.audio.open(self._captured)
        except OSError as exc:
            self.audio.close()
            self._fault(f"sound card: {exc}")
            return False
        self.open = True
        return True

    def _fault(self, why: str) -> None:
        self.last_error = why
        log.warning("terminal sound card fault", extra={"gateway": self.name, "error": why})
        try:
            self.on_fault(why)
        except Exception:
            log.exception("sound card fault callback failed (a bug)")

    def _schedule_reopen(self) -> None:
        if self._stopping or self._reopen is not None:
            return
        self._reopen = asyncio.get_running_loop().create_task(self._reopen_loop())

    async def _reopen_loop(self) -> None:
        try:
            while not self._stopping:
                await asyncio.sleep(self.retry_s)
                if self._try_open():
                    return
        finally:
            self._reopen = None

    def _write(self, frame: bytes) -> None:
        """Play one frame (the gate has been passed); a failing card is closed and retried."""
        if not self.open or len(frame) != FRAME_BYTES:
            self.counters["tx_dropped"] += 1
            return
        try:
            self.audio.write(frame)
        except (OSError, ValueError) as exc:
            self.counters["tx_dropped"] += 1
            self.open = False
            self.audio.close()
            self._fault(f"sound card: {exc}")
            self._schedule_reopen()
            return
        self.counters["tx"] += 1

    def _deliver(self, frame: bytes) -> None:
        listener = self._listener
        if listener is None:
            self.counters["rx_dropped"] += 1
            return
        self.counters["rx"] += 1
        try:
            listener(frame)
        except Exception:
            log.exception("terminal audio listener failed (a bug)", extra={"gateway": self.name})

    def _captured(self, frame: bytes) -> None:
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        """Whether the card is open, its last error and frame counters."""
        return {"audio_open": self.open, "audio_error": self.last_error,
                **{f"audio_{k}": v for k, v in self.counters.items()}}


class TetraAudio(_Card):
    """A TETRA terminal's sound card, gated by its group calls (see the module docstring)."""

    def __init__(self, name: str, audio: AudioDevice, granted: Callable[[str], bool], *,
                 on_fault: Callable[[str], None], retry_s: float = 5.0) -> None:
        """``granted(gssi)``: does the floor core still grant ``gssi`` (checked every frame)?"""
        super().__init__(name, audio, on_fault, retry_s)
        self.granted = granted
        self.holder: str | None = None      # the GSSI whose leg is attached
        self.transmitting: str | None = None  # the GSSI the terminal confirmed keyed on
        self.receiving: str | None = None     # the GSSI whose call another member talks on
        self._groups: dict[int, str] = {}     # call instance -> GSSI
        self._legs: dict[str, TetraGroupLeg] = {}

    def leg(self, gssi: str) -> TetraGroupLeg:
        """The audio leg of one group of this terminal (one object per group)."""
        leg = self._legs.get(gssi)
        if leg is None:
            leg = self._legs[gssi] = TetraGroupLeg(self, gssi)
        return leg

    def on_event(self, event: object) -> None:
        """A report of the TETRA gateway: move the receive and transmit gates."""
        if isinstance(event, RadioKeyed):
            self._groups[event.cc] = event.group
            self.transmitting = event.group
            self.receiving = None  # half-duplex: what the card hears now is not the group
        elif isinstance(event, RadioUnkeyed):
            if self.transmitting == event.group:
                self.transmitting = None
        elif isinstance(event, TalkerChanged):
            self._groups[event.cc] = event.group
            if event.talker is None:
                if self.receiving == event.group:
                    self.receiving = None
            elif event.talker != "self":
                if self.transmitting == event.group:
                    self.transmitting = None  # pre-empted on air
                self.receiving = event.group
        elif isinstance(event, IncomingGroupCall):
            self._groups[event.cc] = event.group
            if self.transmitting is None:
                self.receiving = event.group  # the caller holds the floor at set-up
        elif isinstance(event, CallReleased):
            group = event.group or self._groups.get(event.cc)
            self._groups.pop(event.cc, None)
            if self.transmitting == group:
                self.transmitting = None
            if self.receiving == group:
                self.receiving = None
        elif isinstance(event, LinkDown):
            self.transmitting = self.receiving = None
            self._groups.clear()

    def _captured(self, frame: bytes) -> None:
        """A frame from the card: to the attached group's leg while that group is heard."""
        if len(frame) != FRAME_BYTES or self.transmitting is not None \
                or self.receiving is None or self.receiving != self.holder:
            self.counters["rx_dropped"] += 1
            return
        self._deliver(frame)

    def _transmit(self, gssi: str, frame: bytes) -> None:
        if self.transmitting != gssi or self.holder != gssi or not self.granted(gssi):
            self.counters["tx_dropped"] += 1
            return
        self._write(frame)

    def _attach(self, gssi: str, on_frame: Callable[[bytes], None]) -> None:
        if self.holder is not None and self.holder != gssi:
            raise TerminalBusy(f"TETRA terminal {self.name} carries one group call at a time "
                               f"and its audio is already patched for GSSI {self.holder}")
        self.holder = gssi
        self._listener = on_frame

    def _detach(self, gssi: str) -> None:
        if self.holder == gssi:
            self.holder = None
            self._listener = None

    def health(self) -> dict[str, Any]:
        """The card, which group holds it, and the two gates."""
        return {**super().health(), "audio_group": self.holder,
                "audio_transmitting": self.transmitting, "audio_receiving": self.receiving}


class TetraGroupLeg:
    """One talkgroup's view of a terminal's sound card (a :class:`radio.audio.RadioAudioLeg`)."""

    def __init__(self, terminal: TetraAudio, gssi: str) -> None:
        """The leg of ``gssi`` on ``terminal``."""
        self.terminal = terminal
        self.gssi = gssi

    def attach(self, on_frame: Callable[[bytes], None]) -> None:
        """Hold the terminal's card for this group (:class:`TerminalBusy` if another holds it)."""
        self.terminal._attach(self.gssi, on_frame)

    def detach(self) -> None:
        """Let go of the card."""
        self.terminal._detach(self.gssi)

    def transmit(self, frame: bytes) -> None:
        """One frame for the air: played only while the terminal transmits on this group."""
        self.terminal._transmit(self.gssi, frame)

    @property
    def held_by_other(self) -> str | None:
        """The GSSI of another group holding the card, if any."""
        holder = self.terminal.holder
        return holder if holder not in (None, self.gssi) else None


class SatphoneAudio(_Card):
    """A satphone's handset audio on a sound card: both ways only during an active call."""

    def __init__(self, name: str, audio: AudioDevice, is_active: Callable[[], bool], *,
                 on_fault: Callable[[str], None], retry_s: float = 5.0) -> None:
        """``is_active()``: does the phone report an active call on a live link now?"""
        super().__init__(name, audio, on_fault, retry_s)
        self.is_active = is_active

    def attach(self, on_frame: Callable[[bytes], None]) -> None:
        """Deliver what the far end says to ``on_frame`` (one leg at a time)."""
        if self._listener is not None:
            raise TerminalBusy(f"satphone {self.name} is already in a conference")
        self._listener = on_frame

    def detach(self) -> None:
        """Stop delivering."""
        self._listener = None

    @property
    def attached(self) -> bool:
        """True while a leg holds the phone's audio."""
        return self._listener is not None

    def transmit(self, frame: bytes) -> None:
        """One frame of the conference's mix for the far end (dropped unless a call is up)."""
        if not self.is_active():
            self.counters["tx_dropped"] += 1
            return
        self._write(frame)

    def _captured(self, frame: bytes) -> None:
        if len(frame) != FRAME_BYTES or not self.is_active():
            self.counters["rx_dropped"] += 1
            return
        self._deliver(frame)
