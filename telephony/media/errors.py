"""One exception tree for media packets.

Media errors never produce an answer on the wire: a bad RTP or RTCP datagram
is counted and dropped (RFC 3550 section 6.4 / A.1 validity checks).  The
``answer`` attribute says so explicitly, matching the other protocol trees.
"""

from __future__ import annotations

__all__ = ["InvalidPacket", "LimitExceeded", "MediaError", "Truncated"]


class MediaError(ValueError):
    """Base of every media decode error; the packet is dropped, nothing is sent."""

    answer: str | None = None


class Truncated(MediaError):
    """The packet ends before a field it announces."""


class InvalidPacket(MediaError):
    """A field holds a value the specification forbids (bad version, padding)."""


class LimitExceeded(MediaError):
    """The packet is larger than the configured hard limit."""
