"""PRACK / 100rel (RFC 3262) on the B2BUA's legs.

*Towards a caller* (we are UAS): an INVITE that says ``Require: 100rel``, or
``Supported: 100rel`` from a trunk configured with ``require_100rel = true``,
gets its 180/183 reliably (RSeq, retransmitted at T1 doubling by a
:class:`~telephony.sip.reliable.ReliableSender`).  Its PRACK is answered 200
(481 when the RAck matches nothing).  A trunk that requires 100rel and sends
an INVITE without it is refused with ``421 Extension Required``.  When our
183 carried the SDP answer reliably, the offer/answer exchange is complete:
the 200 waits for that PRACK and carries no SDP of its own (RFC 3262 section
5).  No PRACK within 64·T1 rejects the INVITE with 504.

*Towards a callee* (we are UAC): INVITEs through a trunk with
``require_100rel`` carry ``Require: 100rel``, every other INVITE
``Supported: 100rel``; each new reliable 18x (a
:class:`~telephony.sip.reliable.ReliableReceiver` decides) gets a PRACK in
the early dialog, and an SDP answer in it is kept as the leg's answer (the
2xx may then carry none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from telephony.b2bua.config import SipTrunk
from telephony.b2bua.legs import Leg
from telephony.sip.dialog import Dialog, DialogError
from telephony.sip.errors import SipError, SipParseError
from telephony.sip.message import SipRequest, SipResponse, build_response
from telephony.sip.reliable import (
    ReliableFailed,
    ReliableReceiver,
    ReliableSender,
    parse_rack,
    wants_100rel,
)

if TYPE_CHECKING:
    from telephony.b2bua.core import B2bua

__all__ = ["Reliability"]

log = logging.getLogger(__name__)


def _options(request: SipRequest, name: str) -> list[str]:
    return request.headers.get_all(name)


class Reliability:
    """The B2BUA's 100rel collaborator (module docs)."""

    def __init__(self, b2bua: B2bua) -> None:
        self.b2bua = b2bua
        self._acked: dict[str, asyncio.Event] = {}
        self.early_answered: set[str] = set()
        self._sent: dict[str, set[int]] = {}
        self.counts = {"reliable_sent": 0, "pracks_in": 0, "pracks_out": 0, "no_prack": 0}

    # -- admission -------------------------------------------------------------

    def check_invite(self, request: SipRequest, trunk: SipTrunk | None) -> bool:
        """False (answered 421) when our trunk requires 100rel and the INVITE lacks it."""
        if trunk is None or not trunk.require_100rel:
            return True
        if wants_100rel(_options(request, "Supported") + _options(request, "Require")):
            return True
        self.b2bua.respond(request, 421, extra=(("Require", "100rel"),))
        return False

    def wants_reliable(self, leg: Leg, trunk: SipTrunk | None) -> bool:
        """Whether this caller leg's 18x go reliably."""
        request = leg.invite
        if request is None:
            return False
        if wants_100rel(_options(request, "Require")):
            return True
        return (trunk is not None and trunk.require_100rel
                and wants_100rel(_options(request, "Supported")))

    def uac_headers(self, trunk: SipTrunk | None) -> list[tuple[str, str]]:
        """The 100rel option tag for an INVITE we send."""
        if trunk is not None and trunk.require_100rel:
            return [("Require", "100rel")]
        return [("Supported", "100rel")]

    # -- sending 18x to the caller -----------------------------------------------

    def provisional(self, leg: Leg, status: int, extra: Iterable[tuple[str, str]] = (),
                    body: bytes = b"") -> None:
        """Send a 180/183 to the caller leg, reliably when its INVITE asked for that."""
        b2bua = self.b2bua
        if leg.invite is None:
            return
        response = build_response(leg.invite, status, None,
                                  [*extra, ("Server", b2bua.user_agent)],
                                  to_tag=leg.local_tag, body=body)
        sender = leg.reliable
        if sender is None:
            b2bua.send_response(response)
            return
        sent = self._sent.setdefault(leg.leg_id, set())
        if not body and status in sent:
            return  # the caller already has this reliably (a second 180 adds nothing)
        sent.add(status)
        if response.headers.get("Contact") is None:  # the early dialog's target for PRACK
            response.headers.add("Contact", b2bua.contact(leg.peer))
        if body:
            self.early_answered.add(leg.leg_id)
        self._acked.setdefault(leg.leg_id, asyncio.Event()).clear()
        sender.send(response, b2bua.mono())
        self._pump(leg)

    def start(self, leg: Leg) -> None:
        """Make ``leg`` send its provisionals reliably."""
        assert leg.invite is not None
        leg.reliable = ReliableSender(leg.invite.cseq.number, self.b2bua.timers())

    def _pump(self, leg: Leg) -> None:
        sender = leg.reliable
        if sender is None:
            return
        while (event := sender.next_event()) is not None:
            if isinstance(event, ReliableFailed):
                self.counts["no_prack"] += 1
                log.info("leg %s: no PRACK for RSeq %d", leg.leg_id, event.rseq)
                self._release_event(leg)
                self.b2bua.reliable_failed(leg)
                return
            self.counts["reliable_sent"] += 1
            self.b2bua.send_response(event.response)
        if leg.reliable_handle is not None:
            leg.reliable_handle.cancel()
            leg.reliable_handle = None
        deadline = sender.get_timer()
        if deadline is not None and leg.live:
            leg.reliable_handle = asyncio.get_running_loop().call_at(deadline, self._due, leg)
        elif deadline is None:
            self._release_event(leg)

    def _release_event(self, leg: Leg) -> None:
        event = self._acked.get(leg.leg_id)
        if event is not None:
            event.set()

    def _due(self, leg: Leg) -> None:
        leg.reliable_handle = None
        if leg.reliable is not None:
            leg.reliable.handle_timer(self.b2bua.mono())
            self._pump(leg)

    def on_prack(self, leg: Leg, request: SipRequest) -> None:
        """A PRACK from the caller: 200 when its RAck matches, 481 otherwise."""
        b2bua = self.b2bua
        self.counts["pracks_in"] += 1
        try:
            rack = parse_rack(request.headers.get("RAck") or "")
        except SipParseError as exc:
            b2bua.respond(request, 400, reason="Bad RAck", to_tag=leg.local_tag,
                          extra=(("Warning", f'399 dispatchd "{exc.detail[:60]}"'),))
            return
        sender = leg.reliable
        if sender is None or not sender.prack(rack, b2bua.mono()):
            b2bua.respond(request, 481, to_tag=leg.local_tag)
            return
        b2bua.respond(request, 200, to_tag=leg.local_tag)
        self._pump(leg)

    async def before_final(self, leg: Leg) -> bool:
        """Wait (bounded by 64·T1) until no reliable 18x is unacknowledged; True when the
        183 already carried our SDP answer (the 200 then carries none)."""
        sender = leg.reliable
        if sender is not None and sender.unacknowledged:
            event = self._acked.setdefault(leg.leg_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(64 * self.b2bua.timers().t1 + 1):
                    await event.wait()
        return leg.leg_id in self.early_answered

    def stop(self, leg: Leg) -> None:
        """The leg answered or ended: no more retransmissions."""
        if leg.reliable is not None:
            leg.reliable.stop()
        if leg.reliable_handle is not None:
            leg.reliable_handle.cancel()
            leg.reliable_handle = None
        self._release_event(leg)
        self._acked.pop(leg.leg_id, None)
        self._sent.pop(leg.leg_id, None)
        self.early_answered.discard(leg.leg_id)

    # -- receiving 18x from a callee -----------------------------------------------

    def on_provisional(self, leg: Leg, response: SipResponse) -> None:
        """A 18x to an INVITE we sent: PRACK it when it is a new reliable one."""
        if leg.invite is None:
            return
        if leg.prack_rx is None:
            leg.prack_rx = ReliableReceiver()
        rack = leg.prack_rx.needs_prack(response)
        if rack is None:
            return
        if response.body:
            leg.answer_sdp = response.body.decode("utf-8", "replace")
        b2bua = self.b2bua
        try:
            if leg.early is None or leg.early.id.remote_tag != response.to.tag:
                leg.early = Dialog.as_uac(leg.invite, response)
            prack = leg.early.create_request("PRACK", b2bua.via(leg.peer),
                                             extra_headers=(("RAck", str(rack)),))
        except (ValueError, SipError, DialogError) as exc:
            log.info("leg %s: cannot PRACK: %s", leg.leg_id, exc)
            return
        self.counts["pracks_out"] += 1
        b2bua.track_client(b2bua.send_request(prack, leg.peer), leg, "prack")

    def confirmed(self, leg: Leg) -> None:
        """The 2xx made the dialog: its CSeq continues after our PRACKs."""
        if leg.early is not None and leg.dialog is not None:
            leg.dialog.local_cseq = max(leg.dialog.local_cseq, leg.early.local_cseq)
