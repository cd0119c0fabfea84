"""Trunks: OPTIONS keep-alives, outbound registration with re-registration, failover.

:class:`TrunkManager` sends an out-of-dialog OPTIONS to every trunk with a
``keepalive`` interval; any response means the trunk is up, a timeout
(timer F) or a transport error means it is down.  Trunks with
``register = true`` are registered with digest credentials (the password
is read from ``password_file``), re-registered at 80 % of the granted
expiry, and retried every 30 s after a failure.  :meth:`TrunkManager.best`
orders the usable trunks for an outbound call: up (or not yet probed) before
down, then ``outbound_priority`` (larger first), so calls fail over when a
trunk stops answering.  Every change is reported as :class:`TrunkStatus`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from telephony.b2bua.config import SipTrunk
from telephony.b2bua.events import TrunkStatus
from telephony.b2bua.legs import new_tag
from telephony.b2bua.sipio import SipIo
from telephony.sip.digest import DigestClient, select_challenge
from telephony.sip.errors import SipParseError
from telephony.sip.events import DeliverResponse, TransactionKey, TransactionTimeout
from telephony.sip.message import Destination

__all__ = ["TrunkManager"]

log = logging.getLogger(__name__)

RETRY_S = 30.0


@dataclass
class _TrunkState:
    trunk: SipTrunk
    up: bool | None = None
    registered: bool = False
    detail: str = ""
    call_id: str = field(default_factory=lambda: secrets.token_hex(12))
    tag: str = field(default_factory=new_tag)
    cseq: int = 0
    auth_tries: int = 0
    client: DigestClient | None = None
    handles: dict[str, asyncio.TimerHandle] = field(default_factory=dict)

    @property
    def dest(self) -> Destination:
        return Destination(self.trunk.transport, self.trunk.host, self.trunk.port)


class TrunkManager(SipIo):
    """Keep-alives and registrations of the configured trunks (module docs)."""

    name = "sip-trunks"

    def __init__(self, trunks: tuple[SipTrunk, ...], *, on_event: Callable[[object], None],
                 user_agent: str, domain: str, wall_clock: Callable[[], float] | None = None
                 ) -> None:
        super().__init__(user_agent)
        self.states = {t.name: _TrunkState(t) for t in trunks}
        self.on_event = on_event
        self.domain = domain
        self._pending: dict[TransactionKey, tuple[_TrunkState, str]] = {}
        import time

        self.wall = wall_clock or time.time

    def on_response_hook(self, b2bua: object) -> None:
        """Receive responses the B2BUA does not own."""
        b2bua.other_client = self  # type: ignore[attr-defined]

    async def start(self) -> None:
        """Probe and register every trunk that asks for it."""
        for state in self.states.values():
            trunk = state.trunk
            if trunk.register:
                assert trunk.username and trunk.password_file
                password = Path(trunk.password_file).read_text(encoding="utf-8").strip()
                state.client = DigestClient(trunk.username, password)
                self._register(state)
            if trunk.keepalive > 0:
                self._options(state)

    async def stop(self) -> None:
        """Cancel timers (registrations are left to expire)."""
        for state in self.states.values():
            for handle in state.handles.values():
                handle.cancel()
            state.handles.clear()

    def health(self) -> dict[str, object]:
        """Each trunk's reachability and registration."""
        return {name: {"up": s.up, "registered": s.registered, "detail": s.detail}
                for name, s in self.states.items()}

    def best(self) -> list[SipTrunk]:
        """Trunks for an outbound call, best first (failover order)."""
        ranked = sorted(self.states.values(),
                        key=lambda s: (s.up is False, -s.trunk.outbound_priority, s.trunk.name))
        return [s.trunk for s in ranked]

    # -- scheduling ------------------------------------------------------------

    def _later(self, state: _TrunkState, what: str, delay: float) -> None:
        old = state.handles.pop(what, None)
        if old is not None:
            old.cancel()
        action = self._options if what == "options" else self._register
        state.handles[what] = asyncio.get_running_loop().call_later(delay, action, state)

    def _status(self, state: _TrunkState, up: bool | None, registered: bool, detail: str) -> None:
        changed = (up, registered) != (state.up, state.registered)
        state.up, state.registered, state.detail = up, registered, detail
        if changed:
            log.info("trunk %s: up=%s registered=%s (%s)", state.trunk.name, up, registered,
                     detail)
            self.on_event(TrunkStatus(state.trunk.name, bool(up), registered, detail,
                                      self.wall()))

    # -- OPTIONS ---------------------------------------------------------------

    def _options(self, state: _TrunkState) -> None:
        t = state.trunk
        target = f"sip:{t.host}:{t.port}"
        request = self.new_invite(target, f"<sip:dispatchd@{self.domain}>", f"<{target}>",
                                  new_tag(), state.dest, b"", method="OPTIONS")
        self._pending[self.send_request(request, state.dest)] = (state, "options")

    # -- REGISTER --------------------------------------------------------------

    def _register(self, state: _TrunkState, authorization: str | None = None) -> None:
        t = state.trunk
        state.cseq += 1
        target = f"sip:{t.host}:{t.port}"
        aor = f"<sip:{t.username}@{t.host}>"
        extra = [("Expires", str(t.register_expires))]
        if authorization:
            extra.append(("Authorization", authorization))
        request = self.new_invite(target, aor, aor, state.tag, state.dest, b"", extra,
                                  method="REGISTER", call_id=state.call_id, cseq=state.cseq)
        self._pending[self.send_request(request, state.dest)] = (state, "register")

    def on_response(self, event: DeliverResponse) -> None:
        """OPTIONS and REGISTER answers."""
        entry = self._pending.get(event.key)
        response = event.response
        if entry is None or response.status < 200:
            return
        del self._pending[event.key]
        state, what = entry
        if what == "options":
            self._status(state, True, state.registered, f"OPTIONS {response.status}")
            self._later(state, "options", state.trunk.keepalive)
            return
        t = state.trunk
        if response.status in (401, 407) and state.client is not None and state.auth_tries < 2:
            state.auth_tries += 1
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            try:
                challenge = select_challenge(response.headers.get_all(header))
            except (SipParseError, ValueError) as exc:
                self._status(state, True, False, f"bad challenge: {exc}")
                self._later(state, "register", RETRY_S)
                return
            creds = state.client.authorize(challenge, "REGISTER", f"sip:{t.host}:{t.port}")
            self._register(state, creds.to_header())
            return
        state.auth_tries = 0
        if response.is_success:
            granted = t.register_expires
            for contact in response.contacts:
                if contact.expires is not None:
                    granted = min(granted, contact.expires)
            if response.expires is not None and not response.contacts:
                granted = response.expires
            self._status(state, True, True, "registered")
            self._later(state, "register", max(10.0, 0.8 * granted))
        else:
            self._status(state, True, False, f"REGISTER {response.status}")
            self._later(state, "register", RETRY_S)

    def on_timeout(self, event: TransactionTimeout) -> None:
        """No answer: the trunk is down; try again later."""
        entry = self._pending.pop(event.key, None)
        if entry is None:
            return
        state, what = entry
        self._status(state, False, False if what == "register" else state.registered,
                     f"{what} timed out")
        if what == "options":
            self._later(state, "options", state.trunk.keepalive)
        else:
            self._later(state, "register", RETRY_S)
