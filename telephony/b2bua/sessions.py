"""Session timers (RFC 4028) on the B2BUA's legs: negotiation, refreshes, expiry.

Each leg negotiates its own session interval (a B2BUA's two dialogs are
independent): the caller's INVITE is checked by :meth:`SessionKeeper.check_invite`
(422 with ``Min-SE`` when the interval asked for is too small, 400 when the
header is malformed), our 2xx carries ``Session-Expires`` and ``Require: timer``
when the caller supports timers; INVITEs we send offer ``Supported: timer``
with our interval and ``refresher=uac`` (a 422 to one is answered by sending it
again once, asking for the peer's ``Min-SE``, section 7.4).

Once a leg is confirmed a :class:`~telephony.sip.timers.SessionTimer` keeps
its clock, driven by one ``loop.call_at`` per leg.  When we are the refresher
we send a bodiless UPDATE when the peer allows UPDATE, otherwise an in-dialog
OPTIONS: a peer without UPDATE does not do session timers either (it never
sent ``timer``), so for it the OPTIONS is a liveness probe and nothing more
(a re-INVITE would need an SDP offer of ours, which the pass-through anchor
does not have).  The global OPTIONS sweep of earlier versions is gone: every
confirmed caller and call-taker leg has a timer.  A 408/481 (or no answer)
to a refresh releases the call (cause ``dead_call``); a peer refresher that
stays silent past the expiry gets BYE with
``Reason: SIP;cause=408;text="session expired"`` (cause ``session_expired``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from telephony.b2bua.legs import CallState, Leg
from telephony.sip.dialog import DialogError
from telephony.sip.errors import SipParseError
from telephony.sip.message import SipRequest, SipResponse
from telephony.sip.timers import (
    MAX_INTERVAL,
    RefreshDue,
    Refresher,
    SessionTimer,
    TooSmall,
    UasAgreement,
    negotiate_uas,
    parse_min_se,
    parse_session_expires,
)

if TYPE_CHECKING:
    from telephony.b2bua.core import B2bua

__all__ = ["EXPIRED_REASON", "SessionKeeper"]

log = logging.getLogger(__name__)

EXPIRED_REASON = 'SIP;cause=408;text="session expired"'


def _allows_update(allow: list[str]) -> bool:
    return any(m.strip().upper() == "UPDATE" for value in allow for m in value.split(","))


class SessionKeeper:
    """The B2BUA's session-timer collaborator (module docs)."""

    def __init__(self, b2bua: B2bua, interval: int, min_se: int) -> None:
        self.b2bua = b2bua
        self.interval = max(1, interval)
        self.min_se = max(1, min(min_se, self.interval))
        self.counts = {"refreshes": 0, "expired": 0, "too_small": 0}

    # -- negotiation -----------------------------------------------------------

    def _agreement(self, request: SipRequest) -> UasAgreement:
        h = request.headers
        return negotiate_uas(h.get("Session-Expires"), h.get("Min-SE"),
                             h.get_all("Supported") + h.get_all("Require"),
                             local_min_se=self.min_se, default_interval=self.interval)

    def check_invite(self, request: SipRequest) -> bool:
        """An initial INVITE: False (and answered 422/400) when its timer request is
        unacceptable."""
        try:
            self._agreement(request)
        except TooSmall as exc:
            self.counts["too_small"] += 1
            self.b2bua.respond(request, 422, extra=(("Min-SE", str(exc.min_se)),))
            return False
        except SipParseError as exc:
            self.b2bua.respond(request, 400, reason="Bad Session-Expires",
                               extra=(("Warning", f'399 dispatchd "{exc.detail[:80]}"'),))
            return False
        return True

    def uas_headers(self, request: SipRequest) -> list[tuple[str, str]]:
        """Session-Expires (and Require: timer) for our 2xx to ``request``."""
        try:
            return self._agreement(request).headers()
        except SipParseError:  # includes TooSmall: checked before, a refresh may differ
            return [("Session-Expires", f"{self.interval};refresher=uas")]

    def uac_headers(self) -> list[tuple[str, str]]:
        """What an INVITE we send offers."""
        return [("Supported", "timer"), ("Session-Expires", f"{self.interval};refresher=uac"),
                ("Min-SE", str(self.min_se))]

    def retry_422(self, leg: Leg, response: SipResponse) -> SipRequest | None:
        """Our INVITE got 422: the same INVITE again with the peer's Min-SE as the
        interval (section 7.4), once; None when there is nothing sensible to retry."""
        invite = leg.invite
        value = response.headers.get("Min-SE")
        if invite is None or value is None or leg.session_retried:
            return None
        try:
            wanted = parse_min_se(value)
        except SipParseError:
            return None
        if not 0 < wanted <= MAX_INTERVAL:
            return None
        leg.session_retried = True
        headers = invite.headers.copy()
        headers.set("Via", self.b2bua.via(leg.peer))
        headers.set("CSeq", f"{invite.cseq.number + 1} INVITE")
        headers.set("Session-Expires", f"{wanted};refresher=uac")
        headers.set("Min-SE", str(wanted))
        return SipRequest(headers, invite.body, "INVITE", invite.uri)

    # -- starting and stopping -------------------------------------------------

    def start_uas(self, leg: Leg, request: SipRequest) -> None:
        """Our 2xx to the caller's INVITE went out: start the leg's clock."""
        agreement = self._agreement_or_default(request)
        leg.refresh_by_update = _allows_update(request.headers.get_all("Allow"))
        self._start(leg, agreement.interval, agreement.refresher is Refresher.UAS)

    def _agreement_or_default(self, request: SipRequest) -> UasAgreement:
        try:
            return self._agreement(request)
        except SipParseError:
            return UasAgreement(self.interval, Refresher.UAS, False)

    def start_uac(self, leg: Leg, response: SipResponse) -> None:
        """The 2xx to an INVITE we sent: the UAS's choice, or we refresh (section 7.4)."""
        leg.refresh_by_update = _allows_update(response.headers.get_all("Allow"))
        value = response.headers.get("Session-Expires")
        interval, we_refresh = self.interval, True
        offered = leg.invite.headers.get("Session-Expires") if leg.invite else None
        if offered is not None:  # what we asked for (raised after a 422)
            with contextlib.suppress(SipParseError):
                interval = parse_session_expires(offered).interval
        if value is not None:
            try:
                offer = parse_session_expires(value)
                interval = offer.interval
                we_refresh = offer.refresher is not Refresher.UAS
            except SipParseError:
                log.info("leg %s: bad Session-Expires in 2xx %r; we refresh", leg.leg_id, value)
        self._start(leg, interval, we_refresh)

    def _start(self, leg: Leg, interval: int, we_refresh: bool) -> None:
        leg.session = SessionTimer(interval, we_refresh, self.b2bua.mono())
        self._arm(leg)

    def stop(self, leg: Leg) -> None:
        """The leg ended: forget its clock."""
        if leg.session_handle is not None:
            leg.session_handle.cancel()
            leg.session_handle = None
        leg.session = None

    def _arm(self, leg: Leg) -> None:
        if leg.session_handle is not None:
            leg.session_handle.cancel()
            leg.session_handle = None
        deadline = leg.session.get_timer() if leg.session is not None else None
        if deadline is not None and leg.live:
            leg.session_handle = asyncio.get_running_loop().call_at(deadline, self._due, leg)

    # -- refreshes -------------------------------------------------------------

    def refresh_received(self, leg: Leg, request: SipRequest) -> list[tuple[str, str]]:
        """The peer refreshed with re-INVITE/UPDATE: restart the clock; the headers for
        our 2xx (section 9: the answer repeats the interval and refresher)."""
        session = leg.session
        if session is None:
            return []
        interval, we_refresh = session.interval, session.we_refresh
        value = request.headers.get("Session-Expires")
        if value is not None:
            try:
                offer = parse_session_expires(value)
                interval = max(offer.interval, self.min_se)
                # The peer is the UAC of its refresh: refresher=uas means us.
                we_refresh = offer.refresher is Refresher.UAS
            except SipParseError:
                pass
        session.refreshed(self.b2bua.mono(), interval, we_refresh)
        self._arm(leg)
        refresher = "uas" if we_refresh else "uac"
        return [("Session-Expires", f"{interval};refresher={refresher}")]

    def answer_bare_update(self, leg: Leg, request: SipRequest) -> None:
        """A bodiless UPDATE is a pure session refresh: answered here, not relayed."""
        headers = self.refresh_received(leg, request)
        self.b2bua.respond(request, 200, to_tag=leg.local_tag, extra=headers)

    def refresh_result(self, leg: Leg, status: int | None) -> None:
        """The answer to our refresh (None: no answer)."""
        session = leg.session
        if status is None or status in (408, 481):
            if leg.live and leg.call.state is CallState.CONNECTED:
                log.info("call %s: leg %s did not answer its session refresh (%s)",
                         leg.call.call_id, leg.leg_id, status)
                self.b2bua.session_ended(leg, "dead_call")
            return
        if session is not None and not session.expired:
            self.counts["refreshes"] += 1
            session.refreshed(self.b2bua.mono(), we_refresh=True)
            self._arm(leg)

    def _due(self, leg: Leg) -> None:
        leg.session_handle = None
        session = leg.session
        if session is None or not leg.live:
            return
        session.handle_timer(self.b2bua.mono())
        while (event := session.next_event()) is not None:
            if isinstance(event, RefreshDue):
                self._send_refresh(leg)
            else:
                self.counts["expired"] += 1
                log.info("call %s: session of leg %s expired", leg.call.call_id, leg.leg_id)
                self.b2bua.session_ended(leg, "session_expired")
                return
        self._arm(leg)

    def _send_refresh(self, leg: Leg) -> None:
        b2bua = self.b2bua
        if leg.dialog is None:
            return
        session = leg.session
        assert session is not None
        extra: tuple[tuple[str, str], ...] = ()
        method = "OPTIONS"
        if leg.refresh_by_update:
            # We are the UAC of our refresh and stay the refresher.
            extra = (("Session-Expires", f"{session.interval};refresher=uac"),
                     ("Supported", "timer"))
            method = "UPDATE"
        try:
            request = leg.dialog.create_request(method, b2bua.via(leg.peer),
                                                contact=b2bua.contact(leg.peer)
                                                if method == "UPDATE" else None,
                                                extra_headers=extra)
        except DialogError:
            return
        b2bua.track_client(b2bua.send_request(request, leg.peer), leg, "refresh")
