"""A bounds-checked big-endian cursor for binary frames."""

from __future__ import annotations

import struct

from telephony.media.errors import Truncated

__all__ = ["Cursor"]


class Cursor:
    """Read fields from ``data`` front to back; running past the end raises Truncated."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        """Bytes left before the end."""
        return self._end - self._pos

    @property
    def position(self) -> int:
        """Offset of the next byte in the underlying buffer."""
        return self._pos

    def take(self, n: int, what: str) -> bytes:
        """Return the next ``n`` bytes, naming ``what`` in the error if they are missing."""
        if n < 0 or n > self.remaining:
            raise Truncated(f"{what}: need {n} bytes, {self.remaining} left")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def unpack(self, layout: struct.Struct, what: str) -> tuple[int, ...]:
        """Several fixed-width fields at once (one bounds check, one C call)."""
        if layout.size > self.remaining:
            raise Truncated(f"{what}: need {layout.size} bytes, {self.remaining} left")
        fields = layout.unpack_from(self._data, self._pos)
        self._pos += layout.size
        return tuple(fields)

    def u8(self, what: str) -> int:
        """One unsigned byte."""
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        """A big-endian unsigned 16-bit field."""
        return int.from_bytes(self.take(2, what), "big")

    def u32(self, what: str) -> int:
        """A big-endian unsigned 32-bit field."""
        return int.from_bytes(self.take(4, what), "big")

    def rest(self) -> bytes:
        """Everything left, possibly empty."""
        return self.take(self.remaining, "rest")
