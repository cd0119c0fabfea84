"""A streaming WAV writer for call recordings that stays readable after a crash.

The RIFF header is written first with the sizes known so far and rewritten
every ``header_every`` frames (default once a second), followed by a flush,
so a process killed mid-call leaves a valid WAV holding all but the last
second; :func:`repair_wav` then extends the header over whatever audio made it
to disk.  The writer takes any seekable binary file object, so tests use
``io.BytesIO`` and the recorder passes a real file; the optional ``sync``
callable (``os.fsync`` of the descriptor, say) runs after each header update.
Samples are 16-bit little-endian PCM, two channels by default (caller,
call taker) at 8 kHz, exactly what :meth:`Mixer.mix_block` yields.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

__all__ = ["HEADER_SIZE", "MAX_DATA_BYTES", "WavWriter", "repair_wav"]

HEADER_SIZE = 44
MAX_DATA_BYTES = 0xFFFFFFFF - HEADER_SIZE  # RIFF sizes are 32-bit


def _header(channels: int, rate: int, data_bytes: int) -> bytes:
    block = channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
            + b"data" + struct.pack("<I", data_bytes))


class WavWriter:
    """Appends (samples, channels) int16 blocks to a WAV file, patching the header periodically."""

    def __init__(self, file: BinaryIO, channels: int = 2, rate: int = 8000,
                 header_every: int = 50, sync: Callable[[], None] | None = None) -> None:
        self._file = file
        self.channels = channels
        self.rate = rate
        self._every = header_every
        self._sync = sync
        self.data_bytes = 0
        self._since_header = 0
        self._closed = False
        file.seek(0)
        file.write(_header(channels, rate, 0))
        file.flush()

    def write(self, block: npt.NDArray[np.int16]) -> None:
        """Append one block of interleaved frames (shape (n, channels), int16)."""
        if self._closed:
            raise ValueError("recording already closed")
        if block.dtype != np.int16 or block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"expected (n, {self.channels}) int16,"
                             f" got {block.shape} {block.dtype}")
        raw = np.ascontiguousarray(block).astype("<i2", copy=False).tobytes()
        if self.data_bytes + len(raw) > MAX_DATA_BYTES:
            raise ValueError("WAV data would exceed 4 GiB; start a new file")
        self._file.seek(HEADER_SIZE + self.data_bytes)
        self._file.write(raw)
        self.data_bytes += len(raw)
        self._since_header += 1
        if self._since_header >= self._every:
            self.flush_header()

    def flush_header(self) -> None:
        """Write the current sizes into the header and flush (and sync if configured)."""
        self._file.seek(0)
        self._file.write(_header(self.channels, self.rate, self.data_bytes))
        self._file.seek(HEADER_SIZE + self.data_bytes)
        self._file.flush()
        if self._sync is not None:
            self._sync()
        self._since_header = 0

    def close(self) -> None:
        """Final header update; the file object stays open (its owner closes it)."""
        if not self._closed:
            self.flush_header()
            self._closed = True


def repair_wav(file: BinaryIO, channels: int = 2, rate: int = 8000) -> int:
    """Rewrite the header of a crashed recording to cover every whole frame on disk.

    Returns the number of data bytes now described.  A trailing partial frame
    (the write the crash interrupted) is left outside the data chunk.
    """
    file.seek(0, 2)
    size = file.tell()
    if size < HEADER_SIZE:
        raise ValueError("no WAV header to repair")
    block = channels * 2
    data = min(MAX_DATA_BYTES, (size - HEADER_SIZE) // block * block)
    file.seek(0)
    file.write(_header(channels, rate, data))
    file.flush()
    return data
