"""Push-to-talk from a dispatcher's softphone: DTMF keys and SIP INFO bodies.

``*7`` asks for the floor of the radio patched into the caller's room, ``*8``
lets it go (``*1``..``*3`` stay force-in's mode keys).  :class:`PttKeys` is
sans-I/O like :class:`~telephony.media.forcein.ModeKeys`: feed each digit with
``now``; it returns ``"key"``, ``"unkey"`` or None.  A ``*`` waits at most
``timeout_s`` for its second key.

:func:`parse_info` reads an in-dialog INFO body:

* ``application/dtmf-relay`` (``Signal=7`` / ``Duration=160``) and
  ``application/dtmf`` (the digit alone): a digit, fed to :class:`PttKeys`;
* ``application/x-ptt`` or ``text/plain`` with a ``PTT: on`` / ``PTT: off``
  line (RoIP consoles' convention): ``"key"`` / ``"unkey"`` directly.

Anything else is not ours (None) and the INFO is relayed as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telephony.media.forcein import StarCode

__all__ = ["MAX_INFO_BODY", "PttAction", "PttKeys", "parse_info"]

PttAction = Literal["key", "unkey"]
MAX_INFO_BODY = 1024
_DIGITS = frozenset("0123456789*#ABCD")


@dataclass
class PttKeys:
    """Turns one leg's digits into floor requests (``*7`` key, ``*8`` unkey)."""

    timeout_s: float = 3.0
    _code: StarCode = field(init=False)

    def __post_init__(self) -> None:
        """The ``*`` code reader, with this timeout."""
        self._code = StarCode(self.timeout_s)

    def feed(self, digit: str, now: float) -> PttAction | None:
        """One digit at ``now``: the PTT action it completes, or None."""
        key = self._code.feed(digit, now)
        return "key" if key == "7" else "unkey" if key == "8" else None


def parse_info(content_type: str, body: bytes) -> PttAction | str | None:
    """An INFO body: ``"key"``/``"unkey"``, a DTMF digit, or None if it is not PTT or DTMF."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if len(body) > MAX_INFO_BODY:
        return None
    text = body.decode("utf-8", "replace")
    if kind == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                digit = value.strip().upper()
                return digit if digit in _DIGITS and len(digit) == 1 else None
        return None
    if kind == "application/dtmf":
        digit = text.strip().upper()
        return digit if len(digit) == 1 and digit in _DIGITS else None
    if kind in ("application/x-ptt", "text/plain"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "ptt":
                state = value.strip().lower()
                if state in ("on", "1", "true"):
                    return "key"
                if state in ("off", "0", "false"):
                    return "unkey"
    return None
