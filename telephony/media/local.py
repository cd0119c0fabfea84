"""In-process audio legs: a radio talkgroup or a sound card mixed like an RTP leg.

Theory of operation
-------------------
A *local* leg has no RTP socket.  Its audio comes from, and goes to, an object
offering the radio seam's three methods (:class:`LocalAudio`, duck-typed so
``telephony`` never imports ``radio``): 20 ms frames of 8 kHz mono signed
16-bit little-endian PCM (320 bytes).

* **receive**: the audio object calls the callback given to ``attach`` with
  each frame it hears.  :meth:`LocalPort.push` checks the size (a wrong size
  is counted and dropped, never mixed) and keeps at most ``depth`` frames: a
  source whose clock runs fast loses its oldest frame rather than adding
  delay.  The engine's tick takes one frame (:meth:`LocalPort.pop`); an empty
  FIFO is silence, so a radio that stops sending is simply quiet.  A burst
  leaves frames standing in the FIFO for good (source and engine both run at
  20 ms), adding up to ``depth`` x 20 ms to every later frame: when the FIFO
  never held fewer than :data:`STANDING` frames during a whole
  :data:`TRIM_WINDOW` of ticks, its oldest frame is dropped (20 ms of audio
  lost, once per window, instead of a standing delay).
* **transmit**: every tick the leg's share of the mix (everything it may hear
  in its room, minus itself) is handed to ``transmit``.  Whether that reaches
  the air is the audio object's business (a radio transmits only while keyed).

Mode, mute, deafness, whisper and recording are the mixer's, exactly as for an
RTP leg; a local leg records on the caller side of its room.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["FRAME_BYTES", "LocalAudio", "LocalPort"]

log = logging.getLogger(__name__)

FRAME_SAMPLES = 160
FRAME_BYTES = FRAME_SAMPLES * 2
DEFAULT_DEPTH = 3  # 60 ms: enough to absorb a sound card's bursty callbacks
TRIM_WINDOW = 25  # ticks (500 ms) over which the FIFO's lowest fill is watched
STANDING = 2      # frames that never drained during a window: one is dropped
Pcm = npt.NDArray[np.int16]


class LocalAudio(Protocol):
    """What a local leg needs of its audio (the shape of ``radio.audio.RadioAudioLeg``)."""

    def attach(self, on_frame: Callable[[bytes], None]) -> None:
        """Start delivering received 20 ms frames to ``on_frame``."""

    def detach(self) -> None:
        """Stop delivering received frames."""

    def transmit(self, frame: bytes) -> None:
        """One 20 ms frame of the leg's mix."""


class LocalPort:
    """The engine's end of one local leg: a bounded receive FIFO and the transmit call."""

    def __init__(self, audio: LocalAudio, depth: int = DEFAULT_DEPTH) -> None:
        """Wrap ``audio``; nothing flows until :meth:`open`."""
        if depth < 1:
            raise ValueError("local leg depth must be at least one frame")
        self.audio = audio
        self._fifo: deque[Pcm] = deque(maxlen=depth)
        self.counters: dict[str, int] = dict.fromkeys(
            ("rx", "rx_bad_size", "rx_overflow", "rx_underrun", "rx_trimmed", "tx",
             "tx_errors"), 0)
        self._open = False
        self._ticks = 0
        self._lowest = depth

    def open(self) -> None:
        """Attach to the audio object."""
        self._open = True
        self.audio.attach(self.push)

    def close(self) -> None:
        """Detach from the audio object (idempotent)."""
        if self._open:
            self._open = False
            try:
                self.audio.detach()
            except Exception:
                log.exception("local audio detach failed (a bug)")
            self._fifo.clear()

    def push(self, frame: bytes) -> None:
        """One received frame (called by the audio object on the loop)."""
        if not self._open:
            return
        if len(frame) != FRAME_BYTES:
            self.counters["rx_bad_size"] += 1
            return
        if len(self._fifo) == self._fifo.maxlen:
            self.counters["rx_overflow"] += 1
        self._fifo.append(np.frombuffer(frame, dtype="<i2").astype(np.int16))
        self.counters["rx"] += 1

    def pop(self) -> Pcm | None:
        """The oldest frame not yet mixed, or None (silence); trims a standing queue."""
        self._lowest = min(self._lowest, len(self._fifo))
        self._ticks += 1
        if self._ticks >= TRIM_WINDOW:
            if self._lowest >= STANDING:
                self._fifo.popleft()
                self.counters["rx_trimmed"] += 1
            self._ticks = 0
            self._lowest = len(self._fifo)
        if self._fifo:
            return self._fifo.popleft()
        self.counters["rx_underrun"] += 1
        return None

    def send(self, frame: Pcm) -> None:
        """Hand one tick of this leg's mix to the audio object; its failure is counted."""
        try:
            self.audio.transmit(frame.astype("<i2").tobytes())
        except Exception:
            self.counters["tx_errors"] += 1
            log.exception("local audio transmit failed (a bug); the mix goes on")
        else:
            self.counters["tx"] += 1
