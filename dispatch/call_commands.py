"""SSH console commands for live calls: list them, force in (强插), force-release (强拆).

The same operations as ``/api/v1/calls`` and audited the same way, with the
operator's name: ``show calls``; ``call listen|whisper|barge CALL ACCOUNT``
rings the supervisor's phone (SIP account ACCOUNT) into the call in that mode,
or switches the mode if that phone is already in the call; ``call leave CALL
ACCOUNT`` hangs it up; ``call release CALL REASON`` ends the call on every leg.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatch.auth import Permission
from dispatch.commands import Command, CommandError, Commands, Invocation, _table
from telephony.b2bua.monitor import MODES, MonitorError

__all__ = ["add_call_commands"]


def add_call_commands(table: Commands, sip: Any) -> None:
    """Register ``show calls``, ``call listen|whisper|barge|leave`` and ``call release``
    (``sip`` is the daemon's SipService)."""

    async def show_calls(inv: Invocation) -> str:
        rows = []
        for c in sip.b2bua.live_calls():
            since = dt.datetime.fromtimestamp(c.offered_at, dt.UTC).strftime("%H:%M:%S")
            supervisors = ",".join(f"{m['supervisor']}:{m['mode']}"
                                   for m in sip.monitors(c.call_id))
            rows.append([c.call_id, c.state, c.caller, c.hotline, c.queue, c.agent_id,
                         since, supervisors])
        if not rows:
            return "no live calls"
        return _table(rows, ["CALL", "STATE", "CALLER", "HOTLINE", "QUEUE", "AGENT", "SINCE",
                             "SUPERVISORS"])

    def force_in(mode: str) -> Any:
        async def handler(inv: Invocation) -> str:
            if len(inv.args) != 2:
                raise CommandError(f"usage: call {mode} CALL ACCOUNT", 2)
            call_id, account = inv.args
            current = next((m for m in sip.monitors(call_id) if m["account"] == account), None)
            try:
                if current is not None:
                    sip.monitor_mode(call_id, current["leg"], mode, inv.principal.name)
                    return f"{account} now in {mode} mode on call {call_id}"
                leg = await sip.monitor(call_id, account, mode, inv.principal.name)
            except MonitorError as exc:
                raise CommandError(str(exc)) from None
            return f"ringing {account} into call {call_id} ({mode}); leg {leg}"
        return handler

    async def leave(inv: Invocation) -> str:
        if len(inv.args) != 2:
            raise CommandError("usage: call leave CALL ACCOUNT", 2)
        call_id, account = inv.args
        current = next((m for m in sip.monitors(call_id) if m["account"] == account), None)
        if current is None:
            raise CommandError(f"{account} is not in call {call_id}")
        try:
            sip.monitor_leave(call_id, current["leg"], inv.principal.name)
        except MonitorError as exc:
            raise CommandError(str(exc)) from None
        return f"{account} left call {call_id}"

    async def release(inv: Invocation) -> str:
        if len(inv.args) < 2:
            raise CommandError("usage: call release CALL REASON", 2)
        call_id, reason = inv.args[0], " ".join(inv.args[1:])
        if len(reason) > 200:
            raise CommandError("reason longer than 200 characters", 2)
        if not await sip.force_release(call_id, reason, inv.principal.name):
            raise CommandError(f"no live call {call_id}")
        return f"call {call_id} released: {reason}"

    table.add(Command(("show", "calls"), Permission.CALLS_READ,
                      "live calls: state, caller, hotline, call taker, supervisors", show_calls))
    for mode in MODES:
        table.add(Command(("call", mode), Permission.CALLS_SUPERVISE,
                          f"force in (强插) with your phone in {mode} mode, or switch to it",
                          force_in(mode), "CALL ACCOUNT"))
    table.add(Command(("call", "leave"), Permission.CALLS_SUPERVISE,
                      "hang up a supervisor's phone in a call", leave, "CALL ACCOUNT"))
    table.add(Command(("call", "release"), Permission.CALLS_SUPERVISE,
                      "force-release (强拆) a call on every leg, with a reason", release,
                      "CALL REASON"))
