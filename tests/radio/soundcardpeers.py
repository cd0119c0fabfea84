"""Test ends of a sound-card radio: an audio device fed with real frames, and PTT/COS lines.

This machine has no sound card and a pty has no modem-control lines (TIOCMSET
answers ENOTTY), so these two stand in for the hardware:

* :class:`FrameAudio` is the sound card as the gateway sees it: ``capture``
  delivers real 20 ms PCM frames (tones) the way PyAudioDevice does (on the
  loop), and every frame the gateway plays is kept with the PTT state at that
  moment, so a test can prove nothing reached the air unkeyed.
* :class:`Lines` records every PTT change and lets the test open the squelch;
  ``fail`` makes the next call fail like a vanished USB adapter.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hardware.soundcard import SoundcardError

RATE = 8000


def tone_frames(freq: float, count: int, amplitude: float = 8000.0, start: int = 0
                ) -> list[bytes]:
    """``count`` consecutive 20 ms frames of a sine, as s16le bytes."""
    t = (np.arange(160 * count) + 160 * start) / RATE
    pcm = np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2")
    return [pcm[i * 160:(i + 1) * 160].tobytes() for i in range(count)]


def pcm_of(frames: list[bytes]) -> np.ndarray:
    """Frames joined into one int16 array."""
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.frombuffer(b"".join(frames), dtype="<i2").astype(np.int16)


class Lines:
    """PTT and COS lines of a radio interface, recorded."""

    def __init__(self) -> None:
        self.ptt = False
        self.history: list[bool] = []
        self.squelch_open: bool | None = False  # None: no COS line wired (VOX)
        self.fail = False
        self.opened = 0
        self.closed = 0

    def open(self) -> None:
        """Open: PTT dropped at once."""
        self._check()
        self.opened += 1
        self.set_ptt(False)

    def set_ptt(self, on: bool) -> None:
        """Drive PTT (fails while ``fail`` is set)."""
        self._check()
        self.ptt = on
        self.history.append(on)

    def cos(self) -> bool | None:
        """The squelch."""
        self._check()
        return self.squelch_open

    def close(self) -> None:
        """Drop PTT and close."""
        self.ptt = False
        self.history.append(False)
        self.closed += 1

    def _check(self) -> None:
        if self.fail:
            raise SoundcardError("/dev/ttyUSB9: [Errno 5] Input/output error")


class FrameAudio:
    """A sound card fed by the test with real frames; keeps what the gateway plays."""

    def __init__(self, lines: Lines) -> None:
        self.lines = lines
        self.on_frame: Callable[[bytes], None] | None = None
        self.played: list[bytes] = []
        self.played_unkeyed = 0

    def open(self, on_frame: Callable[[bytes], None]) -> None:
        """Start capturing."""
        self.on_frame = on_frame

    def capture(self, frames: list[bytes]) -> None:
        """The radio's receiver output arrives at the sound card."""
        assert self.on_frame is not None, "sound card not open"
        for frame in frames:
            self.on_frame(frame)

    def write(self, frame: bytes) -> None:
        """The gateway plays a frame into the radio's microphone input."""
        if not self.lines.ptt:
            self.played_unkeyed += 1
        self.played.append(frame)

    def close(self) -> None:
        """Stop."""
        self.on_frame = None
