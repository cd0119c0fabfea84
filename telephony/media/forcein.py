"""Force-in (强插) mode keys: a supervisor switches mode with DTMF during the call.

``*1`` listen (silent monitor), ``*2`` whisper (heard by the call taker only),
``*3`` barge (heard by all).  :class:`ModeKeys` is sans-I/O: feed it each
digit with ``now``; it returns the mode string to apply (as accepted by
``MediaEngine.join``/``set_mode``) or None.  A ``*`` waits at most
``timeout_s`` for its second key; any other key cancels it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ModeKeys", "StarCode"]


@dataclass
class StarCode:
    """``*`` then one key within ``timeout_s``: :meth:`feed` returns that key, else None
    (a late key, or any key without a ``*`` before it).  Shared by the force-in mode
    keys and the PTT keys (:mod:`telephony.media.pttkeys`)."""

    timeout_s: float = 3.0
    _star_at: float | None = None

    def feed(self, digit: str, now: float) -> str | None:
        """One digit at ``now``; the key that completed a ``*`` code, or None."""
        if digit == "*":
            self._star_at = now
            return None
        star, self._star_at = self._star_at, None
        if star is None or now - star > self.timeout_s:
            return None
        return digit


@dataclass
class ModeKeys:
    """Turns a supervisor leg's digits into mode changes; ``whisper_to`` is the call taker."""

    whisper_to: str
    timeout_s: float = 3.0
    _code: StarCode = field(init=False)

    def __post_init__(self) -> None:
        """The ``*`` code reader, with this timeout."""
        self._code = StarCode(self.timeout_s)

    def feed(self, digit: str, now: float) -> str | None:
        """One digit at ``now``; the new mode, or None if this digit changes nothing."""
        key = self._code.feed(digit, now)
        return None if key is None else {
            "1": "listen", "2": f"whisper:{self.whisper_to}", "3": "barge"}.get(key)
