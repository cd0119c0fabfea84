"""One room's call recording: a two-channel WAV sealed with its SHA-256.

:class:`RoomRecorder` opens ``DIR/YYYY-MM-DD/<room>-<UTC time>.wav`` (never
overwriting: a clash gets ``-2``, ``-3`` ...), takes the mixer's (160, 2)
blocks each tick and, when the room ends, closes the file, hashes it in an
executor (off the loop) and writes ``<file>.sha256`` in ``sha256sum`` format
(atomically, through a temporary file).  Every failure becomes a
:class:`~.anchor.RecordingFailed` event and the recorder goes quiet: the call
is never affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from telephony.media.anchor import MediaEvent, RecordingFailed, RecordingFinished
from telephony.media.wav import WavWriter

__all__ = ["RoomRecorder", "recording_path"]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
BYTES_PER_SECOND = 4 * 8000  # two 16-bit channels at 8 kHz


def recording_path(directory: Path, room: str, wall: float) -> Path:
    """A fresh file name for ``room`` started at ``wall`` (seconds since the epoch)."""
    stamp = time.gmtime(wall)
    day = directory / time.strftime("%Y-%m-%d", stamp)
    base = f"{_UNSAFE.sub('_', room)[:64]}-{time.strftime('%Y%m%dT%H%M%SZ', stamp)}"
    path, n = day / f"{base}.wav", 1
    while path.exists():
        n += 1
        path = day / f"{base}-{n}.wav"
    return path


class RoomRecorder:
    """Records one room; ``emit`` receives RecordingFinished or RecordingFailed."""

    def __init__(self, room: str, path: Path, emit: Callable[[MediaEvent], None]) -> None:
        self.room = room
        self.path = path
        self._emit = emit
        self._file: BinaryIO | None = None
        self._writer: WavWriter | None = None

    @property
    def active(self) -> bool:
        """True while blocks are being written."""
        return self._writer is not None

    def open(self) -> bool:
        """Create the file; False (and an event) if it cannot be created."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "xb+")  # noqa: SIM115 - held open for the room's life
            self._writer = WavWriter(self._file)
        except OSError as exc:
            self._fail(exc)
            return False
        return True

    def write(self, block: npt.NDArray[np.int16]) -> bool:
        """Append one tick; False (and an event) once the recording has failed."""
        if self._writer is None:
            return False
        try:
            self._writer.write(block)
        except (OSError, ValueError) as exc:
            self._fail(exc)
            return False
        return True

    def _fail(self, exc: BaseException) -> None:
        log.error("recording failed; the call continues unrecorded",
                  extra={"room": self.room, "path": str(self.path), "error": str(exc)})
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file, self._writer = None, None
        self._emit(RecordingFailed(self.room, str(self.path), str(exc)))

    def finish(self) -> asyncio.Task[None] | None:
        """Close the file and seal it in the background; the task publishes the outcome."""
        writer, file = self._writer, self._file
        if writer is None or file is None:
            return None
        self._writer, self._file = None, None
        try:
            writer.close()
            file.close()
        except OSError as exc:
            self._fail(exc)
            return None
        duration = writer.data_bytes / BYTES_PER_SECOND
        return asyncio.get_running_loop().create_task(self._seal(duration))

    async def _seal(self, duration: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            digest = await loop.run_in_executor(None, hash_and_stamp, self.path)
        except OSError as exc:
            self._fail(exc)
            return
        self._emit(RecordingFinished(self.room, str(self.path), digest, duration))


def hash_and_stamp(path: Path) -> str:
    """SHA-256 of ``path``, also written to ``path.sha256`` (``sha256sum -c`` format)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    hexdigest = digest.hexdigest()
    side = path.with_name(path.name + ".sha256")
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(f"{hexdigest}  {path.name}\n", encoding="ascii")
    os.replace(tmp, side)
    return hexdigest
