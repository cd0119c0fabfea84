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

Floor, keying, transmit gating, the receive path and reconnecting are
:class:`radio.audio_gateway.AudioGateway`'s (shared with the RoIP kind); this
module only reaches the card and the lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from hardware.soundcard import FRAME_BYTES, AudioDevice, ControlLines, SoundcardError
from radio.audio_gateway import AudioGateway, Vox
from radio.floor import FloorSettings

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


class SoundcardGateway(AudioGateway):
    """A radio on a sound card and serial control lines (see the module docstring)."""

    def __init__(self, settings: SoundcardSettings, audio: AudioDevice, lines: ControlLines,
                 on_event: Callable[[object], None], *,
                 clock: Callable[[], float] | None = None) -> None:
        """Describe the gateway; nothing is opened until :meth:`start`."""
        super().__init__(settings.name, settings.group, settings.floor, settings.retry_s,
                         on_event, clock=clock)
        self.settings = settings
        self.audio, self.lines = audio, lines
        self._vox = Vox(settings.vox_threshold_dbfs, settings.vox_hang_s)

    async def _connect(self) -> None:
        """Open the control lines (PTT dropped at once), then the sound card."""
        self.lines.open()
        self.audio.open(self._captured)

    def _disconnect(self) -> None:
        self.lines.close()
        self.audio.close()

    def _set_ptt(self, on: bool) -> None:
        self.lines.set_ptt(on)

    def _write(self, frame: bytes) -> None:
        self.audio.write(frame)

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
        self._received(frame, "cos" if cos else "vox" if vox else None)
