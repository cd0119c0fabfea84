"""A sound-card radio gateway: one analogue radio channel as a talkgroup with audio.

Theory of operation
-------------------
The radio's audio is a sound card (:class:`hardware.soundcard.AudioDevice`),
its PTT and squelch are serial control lines
(:class:`hardware.soundcard.ControlLines`).  The gateway carries one group
(its ``group``), with the same sans-I/O :class:`~radio.floor.FloorControl` as
the TETRA gateway and the same events (``RadioKeyed``, ``RadioUnkeyed``,
``TalkerChanged``, ``LinkUp``, ``LinkDown``, ``GatewayFault``), so the radio
service treats both alike.

* **Keying**: a ``Key`` from the floor core drives PTT and reports
  ``RadioKeyed`` at once (the line is the radio's confirmation); an ``Unkey``
  drops PTT and reports ``RadioUnkeyed``.  If the line cannot be driven the
  gateway is lost: every grant is revoked and PTT dropped again.
* **Transmit** (:meth:`SoundcardGateway.transmit`, the
  :class:`~radio.audio.RadioAudioLeg` seam): frames reach the sound card only
  between ``RadioKeyed`` and ``RadioUnkeyed``; any other frame is dropped.
* **Receive**: each captured frame is judged by the squelch: the COS line if
  one is wired, else :class:`Vox` (energy above a threshold, held for a hang
  time).  While the squelch is open and we are not transmitting (a radio is
  half-duplex, and our own transmission must never come back: no echo loop),
  the frame goes to the attached leg, and ``TalkerChanged(talker="cos"|"vox")``
  / ``TalkerChanged(talker=None)`` mark the over.
* **Fail-safe**: PTT is dropped on open, on stop, on loss and on any error;
  :meth:`SoundcardGateway.revoke_all` is the service's crash handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hardware.soundcard import FRAME_BYTES, AudioDevice, ControlLines, SoundcardError
from radio import floor
from radio.floor import FloorControl, FloorEvent, FloorSettings, Priority
from radio.tetra import GatewayFault, LinkDown, LinkUp, RadioKeyed, RadioUnkeyed, TalkerChanged

__all__ = ["SoundcardGateway", "SoundcardSettings", "Vox"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SoundcardSettings:
    """One sound-card radio: its name, its group, VOX and floor settings."""

    name: str
    group: str
    vox_threshold_dbfs: float = -40.0
    vox_hang_s: float = 0.5
    floor: FloorSettings = FloorSettings()
    retry_s: float = 5.0  # reopen a lost port / sound card this often


class Vox:
    """Voice-operated squelch (sans-I/O): open above ``threshold_dbfs``, held ``hang_s``."""

    def __init__(self, threshold_dbfs: float, hang_s: float) -> None:
        """A squelch that opens on frames whose RMS level exceeds the threshold."""
        self.threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
        self.hang_s = hang_s
        self._last_loud: float | None = None

    def feed(self, frame: bytes, now: float) -> bool:
        """One received frame at ``now``: is the squelch open?"""
        pcm = np.frombuffer(frame, dtype="<i2").astype(np.float64)
        if float(np.sqrt(np.mean(pcm * pcm))) >= self.threshold:
            self._last_loud = now
        return self._last_loud is not None and now - self._last_loud <= self.hang_s


class SoundcardGateway:
    """A radio on a sound card and serial control lines (see the module docstring)."""

    def __init__(self, settings: SoundcardSettings, audio: AudioDevice, lines: ControlLines,
                 on_event: Callable[[object], None], *,
                 clock: Callable[[], float] | None = None) -> None:
        """Describe the gateway; nothing is opened until :meth:`start`."""
        self.settings = settings
        self.name = settings.name
        self.group = settings.group
        self.audio, self.lines = audio, lines
        self.on_event = on_event
        self._clock = clock
        self.floor = FloorControl({settings.group: settings.name}, settings.floor)
        self._vox = Vox(settings.vox_threshold_dbfs, settings.vox_hang_s)
        self._up = False
        self._keyed = False
        self._receiving: str | None = None
        self._listener: Callable[[bytes], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reopen: asyncio.Task[None] | None = None
        self._stopping = False
        self._calls = 0
        self._last_error: str | None = None
        self.counters = dict.fromkeys(("tx", "tx_dropped", "rx", "rx_squelched"), 0)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the control lines (PTT dropped at once), then the sound card."""
        self._stopping = False
        self._open()
        self._up = True
        self.on_event(LinkUp(self.name))

    def _open(self) -> None:
        try:
            self.lines.open()
            self.audio.open(self._captured)
        except OSError as exc:
            self.lines.close()
            self.audio.close()
            self._last_error = str(exc)
            raise

    async def stop(self) -> None:
        """Revoke every grant (unkeying), then close the lines and the sound card."""
        self._stopping = True
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self.revoke_all("gateway stopping")
        self._up = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.lines.close()
        self.audio.close()

    def lost(self, why: str) -> None:
        """The sound card or the serial port failed: unkey, report, refuse the floor."""
        if not self._up:
            return
        self._last_error = why
        self._events(self.floor.lost(self.name, self._now()))
        self._drop_ptt()
        self._up = False
        self._set_receiving(None)
        self.on_event(LinkDown(self.name, why))
        self.lines.close()
        self.audio.close()
        if not self._stopping and self._reopen is None:
            self._reopen = asyncio.get_running_loop().create_task(self._reopen_loop())

    async def _reopen_loop(self) -> None:
        """Reopen every ``retry_s`` until the adapter and the card are back (PTT dropped)."""
        try:
            while not self._stopping:
                await asyncio.sleep(self.settings.retry_s)
                try:
                    self._open()
                except OSError:
                    continue
                self.floor.restored(self.name)
                self._up = True
                self.on_event(LinkUp(self.name))
                return
        finally:
            self._reopen = None

    def health(self) -> dict[str, Any]:
        """Ready, keyed, who is on air, counters, last error."""
        return {"ready": self._up, "keyed_groups": [self.group] if self._keyed else [],
                "talkers": {self.group: self.floor.talker(self.group)},
                "receiving": self._receiving, "last_error": self._last_error, **self.counters}

    # --- floor ------------------------------------------------------------------------------

    def request_ptt(self, group: str, who: str, priority: Priority) -> list[FloorEvent]:
        """``who`` presses PTT; the floor events (a grant keys the radio)."""
        if not self._up:
            return [floor.FloorDenied(group, who, self._now(), f"{self.name} is down")]
        return self._events(self.floor.request(group, who, priority, self._now()))

    def release_ptt(self, group: str, who: str) -> list[FloorEvent]:
        """``who`` lets go (or withdraws a queued request)."""
        return self._events(self.floor.release(group, who, self._now()))

    def revoke_all(self, reason: str) -> list[FloorEvent]:
        """End every grant (unkeying the radio): the fail-safe."""
        events = self._events(self.floor.revoke_all(reason, self._now()))
        self._drop_ptt()
        return events

    def _events(self, events: list[floor.Event]) -> list[FloorEvent]:
        out: list[FloorEvent] = []
        for event in events:
            if isinstance(event, floor.Key):
                self._key()
            elif isinstance(event, floor.Unkey):
                self._unkey()
            else:
                out.append(event)
                self.on_event(event)
        self._arm()
        return out

    def _key(self) -> None:
        try:
            self.lines.set_ptt(True)
        except SoundcardError as exc:
            log.error("PTT failed", extra={"gateway": self.name, "error": str(exc)})
            self.on_event(GatewayFault(self.name, str(exc)))
            asyncio.get_running_loop().call_soon(self.lost, str(exc))
            return
        self._calls += 1
        self._keyed = True
        self._set_receiving(None)  # half-duplex: what we hear now is our own carrier
        self.on_event(RadioKeyed(self.name, self.group, self._calls))

    def _unkey(self) -> None:
        was = self._keyed
        self._drop_ptt()
        if was:
            self.on_event(RadioUnkeyed(self.name, self.group, self._calls))

    def _drop_ptt(self) -> None:
        self._keyed = False
        try:
            self.lines.set_ptt(False)
        except SoundcardError as exc:  # nothing else to do: the port is gone or going
            self._last_error = str(exc)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.floor.get_timer()
        if when is not None and self._up:
            self._timer = asyncio.get_running_loop().call_at(when, self._fire, when)

    def _fire(self, when: float) -> None:
        self._timer = None
        self._events(self.floor.handle_timer(max(self._now(), when)))

    # --- audio: the RadioAudioLeg seam --------------------------------------------------------

    def attach(self, on_frame: Callable[[bytes], None]) -> None:
        """Deliver what the radio receives to ``on_frame``."""
        self._listener = on_frame

    def detach(self) -> None:
        """Stop delivering received frames."""
        self._listener = None

    def transmit(self, frame: bytes) -> None:
        """One frame for the air: played only while keyed, else dropped."""
        if not self._keyed or len(frame) != FRAME_BYTES:
            self.counters["tx_dropped"] += 1
            return
        try:
            self.audio.write(frame)
        except (OSError, ValueError) as exc:
            self.counters["tx_dropped"] += 1
            self.lost(f"sound card: {exc}")
            return
        self.counters["tx"] += 1

    @property
    def keyed(self) -> bool:
        """True between ``RadioKeyed`` and ``RadioUnkeyed``."""
        return self._keyed

    def _captured(self, frame: bytes) -> None:
        """A frame from the sound card (on the loop): squelch, then the leg."""
        if not self._up or len(frame) != FRAME_BYTES:
            return
        try:
            cos = self.lines.cos()
        except SoundcardError as exc:
            self.lost(str(exc))
            return
        vox = self._vox.feed(frame, self._now()) if cos is None else False
        open_ = bool(cos) or vox
        if self._keyed or not open_:
            self.counters["rx_squelched"] += 1
            self._set_receiving(None)
            return
        self._set_receiving("cos" if cos else "vox")
        self.counters["rx"] += 1
        if self._listener is not None:
            try:
                self._listener(frame)
            except Exception:
                log.exception("radio audio listener failed (a bug)", extra={"gateway": self.name})

    def _set_receiving(self, talker: str | None) -> None:
        if talker == self._receiving:
            return
        self._receiving = talker
        self.on_event(TalkerChanged(self.name, self.group, self._calls, talker))
