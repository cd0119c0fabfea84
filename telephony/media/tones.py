"""Join and leave tones for conferences: short, generated, click-free.

``join`` rises (E6 then A6), ``leave`` falls (A6 then E6); each note lasts
120 ms under a raised-cosine envelope, so the tone has no energy far from its
two notes and cannot be mistaken for speech or a DTMF digit.  The shipped
``conf/prompts/join.wav`` and ``leave.wav`` are written by :func:`write_tones`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from telephony.media.prompts import RATE, write_prompt

__all__ = ["JOIN_NOTES", "LEAVE_NOTES", "notes", "write_tones"]

JOIN_NOTES = (1318.5, 1760.0)
LEAVE_NOTES = (1760.0, 1318.5)
NOTE_S = 0.12


def notes(freqs: tuple[float, ...], seconds: float = NOTE_S,
          level: float = 5000.0) -> npt.NDArray[np.int16]:
    """Each frequency for ``seconds`` under a raised-cosine envelope, one after another."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    parts = [level * envelope * np.sin(2 * np.pi * f * t) for f in freqs]
    return np.round(np.concatenate(parts)).astype(np.int16)


def write_tones(directory: Path) -> tuple[Path, Path]:
    """Write ``join.wav`` and ``leave.wav`` into ``directory``; their paths."""
    join, leave = directory / "join.wav", directory / "leave.wav"
    write_prompt(join, notes(JOIN_NOTES))
    write_prompt(leave, notes(LEAVE_NOTES))
    return join, leave
