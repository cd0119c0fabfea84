"""SSH console commands for live calls: list them, force in (强插), force-release (强拆).

The same operations as ``/api/v1/calls`` and audited the same way, with the
operator's name: ``show calls``; ``call listen|whisper|barge CALL ACCOUNT``
rings the supervisor's phone (SIP account ACCOUNT) into the call in that mode,
or switches the mode if that phone is already in the call; ``call leave CALL
ACCOUNT`` hangs it up; ``call release CALL REASON`` ends the call on every leg.
``show queues``, ``show agents`` and ``show trunks`` mirror ``/api/v1/queues``,
``/api/v1/agents`` and the trunks in ``/health``; ``agent login|logout|ready|notready
AGENT`` sets a call taker's state (a call taker may only set their own).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatch.auth import Permission
from dispatch.commands import Command, CommandError, Commands, Invocation, _table
from telephony.acd.engine import AcdError
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

    async def show_queues(inv: Invocation) -> str:
        now = sip.b2bua.mono()
        rows = []
        for q in sip.acd._settings.queues:
            st = sip.acd.queue_stats(q.name, now)
            ready = sum(n for state, n in st.agents.items() if state.value == "ready")
            average = "-" if st.average_answer_time is None else f"{st.average_answer_time:.1f}"
            rows.append([st.queue, st.waiting, st.ringing, f"{st.longest_wait:.0f}", ready,
                         st.answered, st.abandoned, st.overflowed, average])
        if not rows:
            return "no queues"
        return _table(rows, ["QUEUE", "WAITING", "RINGING", "LONGEST_S", "READY", "ANSWERED",
                             "ABANDONED", "OVERFLOWED", "AVG_ANSWER_S"])

    async def show_agents(inv: Invocation) -> str:
        now = sip.b2bua.mono()
        rows = []
        for agent in sip.acd._settings.agents:
            st = sip.acd.agent_status(agent.agent_id)
            rows.append([st.agent_id, st.state.value, f"{max(0.0, now - st.since):.0f}",
                         st.call_id or "", ",".join(st.queues)])
        if not rows:
            return "no call takers configured"
        return _table(rows, ["AGENT", "STATE", "FOR_S", "CALL", "QUEUES"])

    async def show_trunks(inv: Invocation) -> str:
        rows = [[name, {True: "up", False: "down", None: "unknown"}[h["up"]],
                 "yes" if h["registered"] else "no", h["detail"]]
                for name, h in sip.trunks.health().items()]
        if not rows:
            return "no trunks configured"
        return _table(rows, ["TRUNK", "STATE", "REGISTERED", "DETAIL"])

    def set_agent(action: str) -> Any:
        async def handler(inv: Invocation) -> str:
            if len(inv.args) != 1:
                raise CommandError(f"usage: agent {action.replace('_', '')} AGENT", 2)
            agent_id = inv.args[0]
            if (agent_id != inv.principal.name
                    and not inv.principal.can(Permission.CALLS_SUPERVISE)):
                raise CommandError("a call taker may only change their own state")
            try:
                sip.b2bua.agent_action(agent_id, action, reason=f"ssh:{inv.principal.name}")
            except AcdError as exc:
                raise CommandError(str(exc)) from None
            return f"{agent_id}: {sip.acd.agent_status(agent_id).state.value}"
        return handler

    table.add(Command(("show", "queues"), Permission.CALLS_READ,
                      "queues: waiting, longest wait, ready call takers, answered, abandoned",
                      show_queues))
    table.add(Command(("show", "agents"), Permission.CALLS_READ,
                      "call takers: state, for how long, current call, queues", show_agents))
    table.add(Command(("show", "trunks"), Permission.CALLS_READ,
                      "SIP trunks: reachable (OPTIONS), registered", show_trunks))
    for action, word in (("login", "login"), ("logout", "logout"), ("ready", "ready"),
                         ("not_ready", "notready")):
        table.add(Command(("agent", word), Permission.AGENT_STATE,
                          f"set a call taker {word} (yourself, or anyone as a supervisor)",
                          set_agent(action), "AGENT"))
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
