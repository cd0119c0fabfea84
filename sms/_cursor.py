"""A bounds-checked read cursor shared by the TPDU and SMPP decoders.

Every read checks the remaining length first and raises the protocol's own
decode error, so a truncated frame can never turn into an ``IndexError``.
"""

from __future__ import annotations

from collections.abc import Callable


class Cursor:
    """Reads a byte string front to back; every overrun raises ``error(message)``."""

    __slots__ = ("_data", "_pos", "_end", "_error")

    def __init__(self, data: bytes, error: Callable[[str], Exception],
                 start: int = 0, end: int | None = None) -> None:
        """Read ``data[start:end]``; ``error`` builds the exception for overruns."""
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end
        self._error = error

    @property
    def position(self) -> int:
        """Offset of the next byte to read."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bytes left before the end."""
        return self._end - self._pos

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self._end - self._pos < n:
            raise self._error(f"truncated {what}: need {n} octets, {self.remaining} left")

    def u8(self, what: str = "octet") -> int:
        """Read one unsigned octet."""
        self._need(1, what)
        value = self._data[self._pos]
        self._pos += 1
        return value

    def u16(self, what: str = "16-bit integer") -> int:
        """Read a big-endian unsigned 16-bit integer."""
        self._need(2, what)
        value = int.from_bytes(self._data[self._pos:self._pos + 2], "big")
        self._pos += 2
        return value

    def u32(self, what: str = "32-bit integer") -> int:
        """Read a big-endian unsigned 32-bit integer."""
        self._need(4, what)
        value = int.from_bytes(self._data[self._pos:self._pos + 4], "big")
        self._pos += 4
        return value

    def take(self, n: int, what: str = "field") -> bytes:
        """Read exactly ``n`` octets."""
        self._need(n, what)
        value = self._data[self._pos:self._pos + n]
        self._pos += n
        return value

    def rest(self) -> bytes:
        """Read everything that is left."""
        value = self._data[self._pos:self._end]
        self._pos = self._end
        return value

    def c_string(self, max_len: int, what: str) -> bytes:
        """Read a NUL-terminated string of at most ``max_len`` octets including the NUL."""
        limit = min(self._end, self._pos + max_len)
        nul = self._data.find(b"\x00", self._pos, limit)
        if nul < 0:
            if limit < self._end or self._end - self._pos >= max_len:
                raise self._error(f"{what} longer than {max_len - 1} octets")
            raise self._error(f"truncated {what}: no NUL terminator")
        value = self._data[self._pos:nul]
        self._pos = nul + 1
        return value

    def sub(self, n: int, what: str) -> Cursor:
        """Split off a cursor over the next ``n`` octets and skip past them."""
        self._need(n, what)
        child = Cursor(self._data, self._error, self._pos, self._pos + n)
        self._pos += n
        return child
