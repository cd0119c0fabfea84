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

__all__ = ["MAX_PROMPT_BYTES", "PromptError", "PromptPlayer", "SequencePlayer", "hold_music",
           "hold_tone", "load_prompt", "write_prompt"]

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


def hold_music(seconds: float = 8.0) -> Pcm:
    """The shipped music on hold (``conf/prompts/moh.wav``): generated, so royalty-free.

    Four bars (C, Am, F, G), each an arpeggio of eighth notes over a soft pad;
    every note and pad starts and ends at zero amplitude, so the loop is seamless.
    """
    chords = ((261.63, 329.63, 392.0), (220.0, 261.63, 329.63),
              (174.61, 220.0, 261.63), (196.0, 246.94, 293.66))
    bar = int(seconds * RATE) // len(chords)
    note_len = bar // 8
    t_note = np.arange(note_len) / RATE
    note_env = np.sin(np.pi * np.arange(note_len) / note_len) ** 2
    pad_env = np.sin(np.pi * np.arange(bar) / bar)
    t_bar = np.arange(bar) / RATE
    out = []
    for chord in chords:
        pad = sum(np.sin(2 * np.pi * f / 2 * t_bar) for f in chord) * pad_env * 900.0
        arp = np.concatenate([
            np.sin(2 * np.pi * chord[i % 3] * (2 if i >= 4 else 1) * t_note) * note_env * 3500.0
            for i in (0, 1, 2, 1, 0, 1, 2, 1)])
        arp = np.pad(arp, (0, bar - arp.size))
        out.append(pad + arp)
    return np.round(np.concatenate(out)).astype(np.int16)


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


class SequencePlayer(PromptPlayer):
    """Plays ``intro`` once, then loops ``tail`` (an announcement, then hold music).

    With no tail it finishes after the intro.
    """

    def __init__(self, name: str, intro: Pcm, tail: Pcm | None) -> None:
        """Both parts must be whole 20 ms frames (as :func:`load_prompt` returns them)."""
        super().__init__(name, intro, loop=False)
        self._tail = None if tail is None else PromptPlayer(f"{name}:tail", tail, loop=True)

    @property
    def finished(self) -> bool:
        """True once the intro has played and there is no tail."""
        return self._tail is None and super().finished

    def next_frame(self) -> Pcm | None:
        """The intro's next frame, then the tail's, forever."""
        frame = super().next_frame()
        if frame is None and self._tail is not None:
            return self._tail.next_frame()
        return frame
