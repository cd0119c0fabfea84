"""SSH console commands for conferences: the same operations as ``/api/v1/conferences``.

``show conferences`` lists open conferences and connected calls with their legs;
``conference open NAME TARGET...`` opens one and dials the targets (users,
numbers, SIP URIs); ``conference add ID TARGET``; ``conference mute|unmute|deafen|
undeafen ID LEG``; ``conference lock|unlock ID``; ``conference drop ID LEG REASON``;
``conference end ID REASON``.  Audited with the operator's name, like the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dispatch.auth import Permission
from dispatch.commands import Command, CommandError, Commands, Invocation, _table
from telephony.b2bua.conference import ConferenceError

__all__ = ["add_conference_commands"]

Handler = Callable[[Invocation], Awaitable[str]]


def add_conference_commands(table: Commands, service: Any) -> None:
    """Register the conference commands (``service`` is the daemon's ConferenceService)."""
    conf = service.conf

    def guarded(usage: str, count: int, body: Callable[[Invocation], Awaitable[str]],
                at_least: bool = False) -> Handler:
        async def handler(inv: Invocation) -> str:
            if len(inv.args) < count or (not at_least and len(inv.args) != count):
                raise CommandError(f"usage: conference {usage}", 2)
            try:
                return await body(inv)
            except ConferenceError as exc:
                raise CommandError(str(exc)) from None
        return handler

    async def show(inv: Invocation) -> str:
        rows = []
        for c in service.listing():
            for leg in c["legs"] or [{"leg": "-", "target": "", "state": "", "muted": False,
                                      "deafened": False}]:
                flags = ",".join(f for f, on in (("muted", leg["muted"]),
                                                 ("deaf", leg["deafened"])) if on)
                rows.append([c["id"], c["name"], "locked" if c["locked"] else "",
                             leg["leg"], leg["target"], leg["state"], flags])
        if not rows:
            return "no conferences"
        return _table(rows, ["ID", "NAME", "LOCK", "LEG", "TARGET", "STATE", "FLAGS"])

    async def open_(inv: Invocation) -> str:
        name, targets = inv.args[0], inv.args[1:]
        parsed = [service.target(t) for t in targets]
        conf_id = await service.create(name, inv.principal.name)
        for target in parsed:
            await conf.add(conf_id, target, inv.principal.name, "console")
        return f"conference {conf_id} open; dialling {len(parsed)}"

    async def add(inv: Invocation) -> str:
        leg = await service.add(inv.args[0], inv.args[1], inv.principal.name, "console")
        return f"dialling {inv.args[1]} into {inv.args[0]}: leg {leg}"

    def flag(what: str, on: bool) -> Handler:
        async def body(inv: Invocation) -> str:
            conf_id, leg = inv.args
            (conf.mute if what == "mute" else conf.deafen)(conf_id, leg, on, inv.principal.name)
            return f"{leg}: {'' if on else 'un'}{'muted' if what == 'mute' else 'deafened'}"
        return guarded(f"{'' if on else 'un'}{what} ID LEG", 2, body)

    def lock(on: bool) -> Handler:
        async def body(inv: Invocation) -> str:
            conf.lock(inv.args[0], on, inv.principal.name)
            return f"{inv.args[0]} {'locked' if on else 'unlocked'}"
        return guarded(f"{'' if on else 'un'}lock ID", 1, body)

    async def drop(inv: Invocation) -> str:
        await service.remove(inv.args[0], inv.args[1], inv.principal.name,
                             " ".join(inv.args[2:])[:200])
        return f"{inv.args[1]} removed from {inv.args[0]}"

    async def end(inv: Invocation) -> str:
        conf.end(inv.args[0], inv.principal.name, " ".join(inv.args[1:])[:200])
        return f"conference {inv.args[0]} ended"

    manage = Permission.CONFERENCES
    table.add(Command(("show", "conferences"), Permission.CALLS_READ,
                      "open conferences and connected calls, leg by leg", show))
    table.add(Command(("conference", "open"), manage, "open a conference and dial targets",
                      guarded("open NAME TARGET...", 1, open_, at_least=True),
                      "NAME TARGET..."))
    table.add(Command(("conference", "add"), manage, "dial a user, number or SIP URI in",
                      guarded("add ID TARGET", 2, add), "ID TARGET"))
    for what in ("mute", "deafen"):
        for on in (True, False):
            table.add(Command(("conference", f"{'' if on else 'un'}{what}"), manage,
                              f"{'' if on else 'un'}{what} a leg", flag(what, on), "ID LEG"))
    table.add(Command(("conference", "lock"), manage, "refuse new legs", lock(True), "ID"))
    table.add(Command(("conference", "unlock"), manage, "accept new legs", lock(False), "ID"))
    table.add(Command(("conference", "drop"), manage, "hang a leg up with a reason",
                      guarded("drop ID LEG REASON", 3, drop, at_least=True), "ID LEG REASON"))
    table.add(Command(("conference", "end"), manage, "end a conference with a reason",
                      guarded("end ID REASON", 2, end, at_least=True), "ID REASON"))
