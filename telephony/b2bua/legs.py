"""The B2BUA's bookkeeping: calls, their legs and how SIP messages find them.

A :class:`Call` has one caller leg (the INVITE we answer, as UAS) and any
number of agent legs (INVITEs we send, as UAC, one per ring).  Every leg
owns a *local tag* that no other leg shares, and every in-dialog request
carries our tag in its To header, whichever side created the dialog; so one
dictionary keyed by tag finds the leg of any in-dialog request or ACK.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from telephony.sip.dialog import AnswerRetransmitter, Dialog
from telephony.sip.events import TransactionKey
from telephony.sip.message import Destination, SipRequest
from telephony.sip.reliable import ReliableReceiver, ReliableSender
from telephony.sip.timers import SessionTimer

__all__ = ["Call", "CallState", "Leg", "LegRole", "LegState", "new_tag"]


def new_tag() -> str:
    """A fresh local tag (64 random bits, a token)."""
    return secrets.token_hex(8)


class LegRole(enum.Enum):
    """Which side of the call a leg is."""

    CALLER = "caller"  # the public, through a trunk or a registered phone (we are UAS)
    AGENT = "agent"  # a call taker's softphone we ring (we are UAC)
    OUTBOUND = "outbound"  # a number we call through a trunk (call-back, transfer)
    MONITOR = "monitor"  # a supervisor's phone forced into the call (listen/whisper/barge)
    PARTY = "party"  # a phone or number dialled into a conference (or added to a call)


class LegState(enum.Enum):
    """A leg's progress."""

    LOOKUP = "lookup"  # finding the agent's registration / our offer
    TRYING = "trying"  # INVITE sent (or received), no provisional yet
    EARLY = "early"  # a provisional response was sent or received
    CONFIRMED = "confirmed"  # 2xx exchanged: a dialog exists
    ENDED = "ended"


class CallState(enum.Enum):
    """A call's progress."""

    NEW = "new"  # authenticating and routing
    QUEUED = "queued"  # in the ACD (waiting or ringing agents)
    CONNECTING = "connecting"  # an agent answered; our 200 to the caller is being built
    CONNECTED = "connected"
    ENDED = "ended"


@dataclass(eq=False)
class Leg:
    """One SIP dialog (or dialog being set up) of a call."""

    leg_id: str
    call: Call
    role: LegRole
    peer: Destination
    local_tag: str = field(default_factory=new_tag)
    agent_id: str = ""
    state: LegState = LegState.TRYING
    invite: SipRequest | None = None  # received (caller) or sent (agent/outbound)
    invite_key: TransactionKey | None = None
    dialog: Dialog | None = None
    cancel_wanted: bool = False
    cancelled: bool = False  # the caller CANCELled our server transaction
    answer_sdp: str = ""  # the far end's SDP in its 2xx (UAC legs)
    retransmitter: AnswerRetransmitter | None = None
    timer: asyncio.TimerHandle | None = None
    late_offer: bool = False  # our INVITE had no SDP: the ACK carries our answer
    actor: str = ""  # monitor legs: the supervisor who forced in
    mode: str = ""  # monitor legs: listen, whisper or barge
    session: SessionTimer | None = None  # RFC 4028 refresh clock (telephony.b2bua.sessions)
    session_handle: asyncio.TimerHandle | None = None
    refresh_by_update: bool = False  # the peer allows UPDATE: refresh with it, else OPTIONS
    session_retried: bool = False  # our INVITE was sent again after a 422
    reliable: ReliableSender | None = None  # our 18x sent with 100rel (caller legs)
    reliable_handle: asyncio.TimerHandle | None = None
    prack_rx: ReliableReceiver | None = None  # PRACKs for the peer's reliable 18x (UAC legs)
    early: Dialog | None = None  # the early dialog PRACKs go in (UAC legs)
    on_status: Callable[[Leg, int], None] | None = None
    """Set on transfer legs: gets each provisional, the 2xx (200) and the failure status."""
    refers: int = 0  # REFERs received in this dialog (the second on gets Event id=, RFC 3515)

    @property
    def live(self) -> bool:
        """Not ended."""
        return self.state is not LegState.ENDED


@dataclass(eq=False)
class Call:
    """One emergency call across its legs."""

    call_id: str
    sip_call_id: str
    caller: str
    caller_display: str
    called: str
    trunk: str
    offered_at: float
    caller_leg: Leg | None = None
    hotline: str = ""
    queue: str = ""
    priority: int = 0
    route: str = ""
    state: CallState = CallState.NEW
    in_acd: bool = False
    agent_legs: dict[str, Leg] = field(default_factory=dict)
    connected: Leg | None = None
    answered_at: float | None = None
    released_at: float | None = None
    cause: str = ""
    answer_task: asyncio.Task[str] | None = None
    pai: str | None = None
    on_answer: Callable[[Leg], None] | None = None
    """Set for calls we originate (call-back): gets each UAC leg's 2xx instead of the ACD."""
    early_media: bool = False  # the caller got our SDP in a 183 and hears the hold prompt
    monitors: dict[str, Leg] = field(default_factory=dict)  # force-in legs by leg id
    parties: dict[str, Leg] = field(default_factory=dict)  # dialled-out conference legs

    def legs(self) -> list[Leg]:
        """Every leg of the call, caller first, supervisors last."""
        legs = [self.caller_leg] if self.caller_leg is not None else []
        return (legs + list(self.agent_legs.values()) + list(self.parties.values())
                + list(self.monitors.values()))

    def other(self, leg: Leg) -> Leg | None:
        """The leg bridged to ``leg``, if the call is connected."""
        if self.connected is None:
            return None
        if leg is self.connected:
            return self.caller_leg
        if leg is self.caller_leg:
            return self.connected
        return None
