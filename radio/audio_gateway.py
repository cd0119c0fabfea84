"""What every radio gateway that carries audio shares: floor, keying, squelch, the audio seam.

Theory of operation
-------------------
An *audio gateway* is one radio channel (one talkgroup) whose audio we move
ourselves, frame by frame: a radio on a sound card
(:class:`radio.soundcard.SoundcardGateway`) or a RoIP box that is a SIP
endpoint (:class:`radio.roip.RoipGateway`).  They differ only in how the
device is reached; this base holds everything else, once:

* **floor**: the sans-I/O :class:`~radio.floor.FloorControl` of the group; a
  ``Key`` from it calls :meth:`AudioGateway._set_ptt` (``True``) and reports
  ``RadioKeyed`` (the device took the command: that is its confirmation); an
  ``Unkey`` calls ``_set_ptt(False)`` and reports ``RadioUnkeyed``.  A keying
  command that fails is a ``GatewayFault`` and the device is lost.
* **transmit** (:meth:`AudioGateway.transmit`, the
  :class:`~radio.audio.RadioAudioLeg` seam): a frame reaches
  :meth:`AudioGateway._write` only between ``RadioKeyed`` and ``RadioUnkeyed``.
* **receive**: the subclass hands each received frame and its squelch verdict
  to :meth:`AudioGateway._received` (``"cos"``, ``"vox"``, or ``None`` for
  closed).  While the squelch is open and we are not transmitting
  (half-duplex: our own transmission never comes back, no echo loop) the
  frame goes to the attached leg, and ``TalkerChanged`` marks the over.
* **loss and return**: :meth:`AudioGateway.lost` revokes every grant, drops
  PTT, reports ``LinkDown`` and reconnects every ``retry_s`` (the subclass's
  :meth:`AudioGateway._retry_delay` may back off) until
  :meth:`AudioGateway._connect` succeeds, then reports ``LinkUp``.
* **fail-safe**: PTT is dropped on connect (the subclass's ``_connect``
  unkeys the device first thing), on stop, on loss and on any error;
  :meth:`AudioGateway.revoke_all` is the service's crash handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from radio import floor
from radio.audio import FRAME_BYTES
from radio.floor import FloorControl, FloorEvent, FloorSettings, Priority
from radio.tetra import GatewayFault, LinkDown, LinkUp, RadioKeyed, RadioUnkeyed, TalkerChanged

__all__ = ["AudioGateway", "Vox"]

log = logging.getLogger(__name__)


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

    def reset(self) -> None:
        """Forget the last loud frame (the squelch closes now)."""
        self._last_loud = None


class AudioGateway:
    """One radio channel with audio; subclasses reach the device (see the module docstring)."""

    def __init__(self, name: str, group: str, floor_settings: FloorSettings, retry_s: float,
                 on_event: Callable[[object], None], *,
                 clock: Callable[[], float] | None = None) -> None:
        """Describe the gateway; nothing is opened until :meth:`start`."""
        self.name = name
        self.group = group
        self.retry_s = retry_s
        self.on_event = on_event
        self._clock = clock
        self.floor = FloorControl({group: name}, floor_settings)
        self._up = False
        self._keyed = False
        self._receiving: str | None = None
        self._listener: Callable[[bytes], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reopen: asyncio.Task[None] | None = None
        self._stopping = False
        self._calls = 0
        self._failures = 0
        self._last_error: str | None = None
        self.counters = dict.fromkeys(("tx", "tx_dropped", "rx", "rx_squelched"), 0)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # --- what a subclass provides -------------------------------------------------------------

    async def _connect(self) -> None:
        """Reach the device, PTT dropped; raise ``OSError`` if it is not there."""
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Let go of the device (idempotent; never raises)."""
        raise NotImplementedError

    def _set_ptt(self, on: bool) -> None:
        """Key or unkey the device; raise ``OSError`` if the command cannot be given."""
        raise NotImplementedError

    def _write(self, frame: bytes) -> None:
        """One frame for the air (called only while keyed); raise ``OSError`` on failure."""
        raise NotImplementedError

    async def _settle(self) -> None:
        """Before letting go at stop: wait (bounded) until the device has the unkey."""

    def _retry_delay(self, failures: int) -> float:
        """Seconds before reconnect attempt number ``failures`` (1, 2, ...)."""
        return self.retry_s

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Reach the device (PTT dropped at once) and report ``LinkUp``; ``OSError`` if absent."""
        self._stopping = False
        try:
            await self._connect()
        except OSError as exc:
            self._disconnect()
            self._last_error = str(exc)
            raise
        self._up = True
        self._failures = 0
        self.on_event(LinkUp(self.name))

    async def stop(self) -> None:
        """Revoke every grant (unkeying), then let go of the device."""
        self._stopping = True
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self.revoke_all("gateway stopping")
        if self._up:
            try:
                await self._settle()
            except Exception:  # whatever happens, the device is let go of below
                log.exception("settling a gateway at stop failed", extra={"gateway": self.name})
        self._up = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._disconnect()

    def lost(self, why: str) -> None:
        """The device went away: unkey, report, refuse the floor, reconnect in the background."""
        if not self._up:
            return
        self._last_error = why
        self._events(self.floor.lost(self.name, self._now()))
        self._drop_ptt()
        self._up = False
        self._set_receiving(None)
        self.on_event(LinkDown(self.name, why))
        self._disconnect()
        if not self._stopping and self._reopen is None:
            self._reopen = asyncio.get_running_loop().create_task(self._reopen_loop())

    async def _reopen_loop(self) -> None:
        """Reconnect until the device is back (its PTT dropped first), then report ``LinkUp``."""
        try:
            while not self._stopping:
                self._failures += 1
                await asyncio.sleep(self._retry_delay(self._failures))
                try:
                    await self._connect()
                except OSError as exc:
                    self._last_error = str(exc)
                    self._disconnect()
                    continue
                if self._stopping:
                    self._disconnect()
                    return
                self.floor.restored(self.name)
                self._up = True
                self._failures = 0
                self.on_event(LinkUp(self.name))
                return
        finally:
            self._reopen = None

    @property
    def ready(self) -> bool:
        """True while the device is reached."""
        return self._up

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
            self._set_ptt(True)
        except OSError as exc:
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
            self._set_ptt(False)
        except OSError as exc:  # nothing else to do: the device is gone or going
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
        """One frame for the air: sent only while keyed, else dropped."""
        if not self._keyed or len(frame) != FRAME_BYTES:
            self.counters["tx_dropped"] += 1
            return
        try:
            self._write(frame)
        except (OSError, ValueError) as exc:
            self.counters["tx_dropped"] += 1
            self.lost(f"{self.name}: {exc}")
            return
        self.counters["tx"] += 1

    @property
    def keyed(self) -> bool:
        """True between ``RadioKeyed`` and ``RadioUnkeyed``."""
        return self._keyed

    def _received(self, frame: bytes, squelch: str | None) -> None:
        """A received frame and its squelch verdict: to the leg while open and not keyed."""
        if self._keyed or squelch is None:
            self.counters["rx_squelched"] += 1
            self._set_receiving(None)
            return
        self._set_receiving(squelch)
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
