"""Prompts: 8 kHz mono WAV announcements, hold music and tones played into legs or rooms.

:func:`load_prompt` reads a 16-bit PCM mono 8 kHz WAV with a size limit and
a clear error for anything else (stereo, 44.1 kHz, 8-bit, compressed).
:class:`PromptPlayer` is sans-I/O: the engine asks it for one 160-sample
frame per tick; it loops (queue hold) or reports that it has finished.
:func:`hold_tone` generates the shipped hold prompt (``conf/prompts/hold.wav``)
so the repository never needs a recording it cannot regenerate.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_PROMPT_BYTES", "PromptError", "PromptPlayer", "hold_tone", "load_prompt",
           "write_prompt"]

FRAME = 160
RATE = 8000
MAX_PROMPT_BYTES = 16 * 1024 * 1024  # about 17 minutes of 8 kHz 16-bit mono
Pcm = npt.NDArray[np.int16]


class PromptError(ValueError):
    """A prompt file that cannot be played: missing, too large or not 8 kHz mono 16-bit."""


def load_prompt(path: str | Path) -> Pcm:
    """Read a prompt into int16 samples, padded with silence to whole 20 ms frames."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_PROMPT_BYTES:
            raise PromptError(f"{p}: {size} bytes exceeds the {MAX_PROMPT_BYTES}-byte limit")
        raw = p.read_bytes()
    except OSError as exc:
        raise PromptError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        with wave.open(io.BytesIO(raw)) as w:
            shape = (w.getnchannels(), w.getframerate(), w.getsampwidth())
            if shape != (1, RATE, 2):
                raise PromptError(f"{p}: must be mono 8000 Hz 16-bit PCM, got "
                                  f"{shape[0]} channel(s) {shape[1]} Hz {8 * shape[2]}-bit")
            data = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise PromptError(f"{p}: not a PCM WAV file: {exc}") from None
    samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
    if samples.size == 0:
        raise PromptError(f"{p}: no audio")
    pad = -samples.size % FRAME
    return np.concatenate([samples, np.zeros(pad, dtype=np.int16)]) if pad else samples


def write_prompt(path: str | Path, samples: Pcm) -> None:
    """Write int16 samples as an 8 kHz mono WAV (used to generate shipped prompts)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def hold_tone(seconds: float = 4.0) -> Pcm:
    """A soft two-note chime (G4, C5) every two seconds: the shipped hold prompt.

    Each note has a raised-cosine envelope that starts and ends at zero, so the
    prompt has no clicks (and no energy far from its two notes).
    """
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    phase = t % 2.0
    note = np.where(phase < 0.5, 392.0, 523.25)
    envelope = np.where(phase < 1.0, 0.5 - 0.5 * np.cos(2 * np.pi * (phase % 0.5) / 0.5), 0.0)
    signal = 6000.0 * envelope * np.sin(2 * np.pi * note * t)
    return np.round(signal).astype(np.int16)


class PromptPlayer:
    """Plays one prompt frame by frame; loops if asked."""

    def __init__(self, name: str, samples: Pcm, loop: bool = False, gain: float = 1.0) -> None:
        if samples.size == 0 or samples.size % FRAME:
            raise PromptError("prompt samples must be whole 20 ms frames")
        self.name = name
        self.loop = loop
        self._frames = samples.reshape(-1, FRAME)
        if gain != 1.0:
            self._frames = np.clip(self._frames * gain, -32768, 32767).astype(np.int16)
        self._next = 0

    @property
    def finished(self) -> bool:
        """True once a non-looping prompt has played its last frame."""
        return not self.loop and self._next >= len(self._frames)

    def next_frame(self) -> Pcm | None:
        """The next 160 samples, or None when finished."""
        if self._next >= len(self._frames):
            if not self.loop:
                return None
            self._next = 0
        frame: Pcm = self._frames[self._next]
        self._next += 1
        return frame
