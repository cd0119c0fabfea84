"""Session timers (RFC 4028) as a sans-I/O core: negotiation and the refresh clock.

Theory of operation
-------------------
A dialog's *session interval* is agreed in the INVITE transaction: the UAC
offers ``Session-Expires: N[;refresher=uac|uas]`` (and ``Min-SE``), a UAS that
finds N below its own minimum answers **422** with its ``Min-SE`` (the UAC
retries with a larger N), otherwise it answers 2xx with the interval and the
refresher it settled on, adding ``Require: timer`` when the UAC supports timers
(section 9).  When the UAC does not support timers the UAS refreshes itself
(section 9: refresher=uas) so a dead call is still found.

Once the 2xx is exchanged one side is the *refresher*.  :class:`SessionTimer`
keeps the clock for one dialog:

* we refresh: at ``interval / 2`` it emits :class:`RefreshDue` (the adapter
  sends UPDATE or re-INVITE); each successful refresh restarts the clock;
* the peer refreshes: if no refresh arrives by ``interval - min(32, interval / 3)``
  (section 10) it emits :class:`SessionExpired` (the adapter sends BYE with a
  Reason header).

Every method takes ``now``; :meth:`get_timer` is the next deadline.  Nothing
here reads a clock or touches a socket.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from telephony.sip.errors import SipError, SipParseError

__all__ = [
    "MAX_INTERVAL",
    "MIN_SE_FLOOR",
    "Refresher",
    "RefreshDue",
    "SessionExpired",
    "SessionTimer",
    "TimerOffer",
    "TooSmall",
    "negotiate_uas",
    "parse_min_se",
    "parse_session_expires",
    "supports_timer",
]

MIN_SE_FLOOR = 90
"""RFC 4028 section 4: nobody may ask for less than 90 s (the default ``min_se``;
a lower configured value is for tests on a fast clock only)."""
_DIGITS = re.compile(r"[0-9]{1,10}")
MAX_INTERVAL = 86400
"""Intervals above a day are capped (a hostile peer cannot park a dead call forever)."""


class Refresher(enum.Enum):
    """Which side of the dialog sends the refreshes."""

    UAC = "uac"
    UAS = "uas"


class TooSmall(SipError):
    """The offered Session-Expires is below our Min-SE: answer 422 with ``min_se``."""

    default_status = 422
    default_reason = "Session Interval Too Small"

    def __init__(self, offered: int, min_se: int) -> None:
        super().__init__(f"Session-Expires {offered} below Min-SE {min_se}")
        self.min_se = min_se


@dataclass(frozen=True, slots=True)
class TimerOffer:
    """A parsed ``Session-Expires`` value."""

    interval: int
    refresher: Refresher | None


@dataclass(frozen=True, slots=True)
class RefreshDue:
    """Time for us to refresh the session (send UPDATE or re-INVITE)."""

    interval: int


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """The peer did not refresh in time: the session is over (send BYE)."""

    interval: int


def _delta(text: str, what: str) -> int:
    value = text.strip()
    if not _DIGITS.fullmatch(value):  # ASCII only: str.isdigit() takes '¹' too
        raise SipParseError(f"{what} is not a delta-seconds: {text[:40]!r}")
    return int(value)


def parse_session_expires(value: str) -> TimerOffer:
    """``Session-Expires: 1800;refresher=uac`` (also the compact ``x``); SipParseError."""
    first, *params = value.split(";")
    interval = _delta(first, "Session-Expires")
    refresher = None
    for param in params:
        name, _, arg = param.partition("=")
        if name.strip().lower() == "refresher":
            try:
                refresher = Refresher(arg.strip().lower())
            except ValueError:
                raise SipParseError(f"refresher must be uac or uas, not {arg[:20]!r}") from None
    if interval < 1:
        raise SipParseError("Session-Expires must be at least 1")
    return TimerOffer(min(interval, MAX_INTERVAL), refresher)


def parse_min_se(value: str) -> int:
    """``Min-SE: 90`` (parameters ignored); SipParseError."""
    return _delta(value.split(";", 1)[0], "Min-SE")


def supports_timer(option_values: Iterable[str]) -> bool:
    """True when ``timer`` is among the option tags of Supported/Require headers."""
    return any(tag.strip().lower() == "timer"
               for value in option_values for tag in value.split(","))


@dataclass(frozen=True, slots=True)
class UasAgreement:
    """What the UAS settled on for a dialog: put these headers in the 2xx."""

    interval: int
    refresher: Refresher
    require_timer: bool

    def headers(self) -> list[tuple[str, str]]:
        """Session-Expires (and Require: timer when the UAC supports timers)."""
        out = [("Session-Expires", f"{self.interval};refresher={self.refresher.value}")]
        if self.require_timer:
            out.append(("Require", "timer"))
        return out


def negotiate_uas(session_expires: str | None, min_se: str | None, supported: Iterable[str],
                  *, local_min_se: int, default_interval: int) -> UasAgreement:
    """The UAS side of section 9 for an initial INVITE.

    ``session_expires``/``min_se`` are the header values (None if absent),
    ``supported`` the Supported and Require values.  Raises :class:`TooSmall`
    (answer 422) or SipParseError (answer 400).
    """
    uac_timer = supports_timer(supported)
    floor = local_min_se
    if min_se is not None:
        floor = max(floor, parse_min_se(min_se))
    if session_expires is None:
        # The UAC asked for nothing: we still want dead calls found, so we refresh.
        return UasAgreement(max(default_interval, floor), Refresher.UAS, False)
    offer = parse_session_expires(session_expires)
    if offer.interval < local_min_se:
        raise TooSmall(offer.interval, local_min_se)
    if not uac_timer:
        return UasAgreement(offer.interval, Refresher.UAS, False)
    return UasAgreement(offer.interval, offer.refresher or Refresher.UAC, True)


class SessionTimer:
    """The refresh clock of one dialog (module docs); ``we_refresh`` says who refreshes."""

    def __init__(self, interval: int, we_refresh: bool, now: float) -> None:
        if interval < 1:
            raise ValueError("a session interval is at least 1 s")
        self.interval = interval
        self.we_refresh = we_refresh
        self.expired = False
        self._deadline = 0.0
        self._events: list[RefreshDue | SessionExpired] = []
        self.refreshed(now)

    def refreshed(self, now: float, interval: int | None = None,
                  we_refresh: bool | None = None) -> None:
        """A refresh succeeded (sent or received) at ``now``; the clock starts again,
        possibly with a new interval or refresher (the refresh renegotiated them)."""
        if interval is not None:
            self.interval = max(1, interval)
        if we_refresh is not None:
            self.we_refresh = we_refresh
        if self.we_refresh:
            self._deadline = now + self.interval / 2
        else:
            self._deadline = now + self.interval - min(32.0, self.interval / 3)

    def get_timer(self) -> float | None:
        """The next deadline (None once expired)."""
        return None if self.expired else self._deadline

    def handle_timer(self, now: float) -> None:
        """Emit what is due at ``now``."""
        if self.expired or now < self._deadline:
            return
        if self.we_refresh:
            self._events.append(RefreshDue(self.interval))
            # If the refresh gets no answer the session still ends at its expiry.
            self.we_refresh = False
            self._deadline = now + self.interval / 2 - min(32.0, self.interval / 3)
            if self._deadline <= now:
                self._deadline = now + 1.0
        else:
            self.expired = True
            self._events.append(SessionExpired(self.interval))

    def next_event(self) -> RefreshDue | SessionExpired | None:
        """The next pending event, oldest first."""
        return self._events.pop(0) if self._events else None
