"""SSH console commands for talkgroups, PTT and SDS (the same operations as the HTTP API).

In a cluster a ``relay`` (dispatch/cluster_radio.py) sends them to the node that drives
the radio gateways when this one does not; it answers ``None`` when they run here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from dispatch.auth import Permission, Principal
from dispatch.commands import Command, CommandError, Commands, Invocation, _table
from dispatch.radio_patch import PatchService
from dispatch.radio_service import ROLE_PRIORITY, RadioService, RadioServiceError
from hardware.at import AtError
from radio.sds import SdsError
from radio.tetra import RadioError

#: ``relay(principal, method, path, body)``: the holder's JSON answer, or None (act here).
Relay = Callable[[Principal, str, str, dict[str, Any] | None], Awaitable[Any]]


async def _relayed(relay: Relay | None, inv: Invocation, method: str, path: str,
                   body: dict[str, Any] | None = None) -> Any:
    return None if relay is None else await relay(inv.principal, method, path, body)


def _tg(name: str) -> str:
    return quote(name, safe="")


def add_patch_commands(table: Commands, patches: PatchService,
                       relay: Relay | None = None) -> None:
    """Register ``patch TALKGROUP call|room|group TARGET`` and ``unpatch TALKGROUP``."""

    async def patch(inv: Invocation) -> str:
        if len(inv.args) != 3 or inv.args[1] not in ("call", "room", "group"):
            raise CommandError("usage: patch TALKGROUP call|room|group TARGET", 2)
        tg, kind, target = inv.args
        field = "talkgroup" if kind == "group" else kind
        try:
            done = await _relayed(relay, inv, "POST", f"/api/v1/talkgroups/{_tg(tg)}/patch",
                                  {field: target})
            if done is None:
                done = await patches.patch(tg, inv.principal.name, **{kind: target})
        except RadioServiceError as exc:
            raise CommandError(str(exc)) from None
        return f"{tg} patched into {done['target']} (room {done['room']})"

    async def unpatch(inv: Invocation) -> str:
        if len(inv.args) != 1:
            raise CommandError("usage: unpatch TALKGROUP", 2)
        try:
            done = await _relayed(relay, inv, "DELETE",
                                  f"/api/v1/talkgroups/{_tg(inv.args[0])}/patch")
            if done is None:
                done = await patches.unpatch(inv.args[0], inv.principal.name)
        except RadioServiceError as exc:
            raise CommandError(str(exc)) from None
        return f"{inv.args[0]} unpatched from {done['target']}"

    table.add(Command(("patch",), Permission.RADIO_PTT,
                      "patch a talkgroup into a call, a conference or another group", patch,
                      "TALKGROUP call|room|group TARGET"))
    table.add(Command(("unpatch",), Permission.RADIO_PTT, "end a talkgroup's patch", unpatch,
                      "TALKGROUP"))


def add_radio_commands(table: Commands, radio: RadioService,
                       relay: Relay | None = None) -> None:
    """Register ``show talkgroups``, ``show radios`` (``show gateways``), ``ptt press|release``
    (``key``/``unkey``), ``sds send``."""

    async def talkgroups(inv: Invocation) -> str:
        rows = []
        states = await _relayed(relay, inv, "GET", "/api/v1/radio/talkgroups")
        if states is None:
            states = [radio.talkgroup_state(name) for name in radio.talkgroups]
        for s in states:
            rows.append([s["name"], s["gssi"], s["gateway"], s["gateway_state"], s["floor"],
                         s["talker"] or "", ",".join(s["queue"]), s["on_air"] or "",
                         s["emergency"] or ""])
        return _table(rows, ["TALKGROUP", "GSSI", "GATEWAY", "LINK", "FLOOR", "TALKER",
                             "QUEUE", "ON AIR", "EMERGENCY"])

    async def radios(inv: Invocation) -> str:
        gateways = await _relayed(relay, inv, "GET", "/api/v1/radio/gateways")
        if gateways is None:
            gateways = radio.health()["gateways"]
        return json.dumps(gateways, indent=2, default=str, ensure_ascii=False)

    def floor_lines(events: list[dict[str, object]]) -> str:
        return "\n".join(f"{e['talkgroup']}: {e['event']} {e['who']}"
                         + (f" (position {e['position']})" if e["position"] else "")
                         + (f": {e['why']}" if e["why"] and e["why"] != e["event"] else "")
                         for e in events)

    def one_talkgroup(inv: Invocation) -> str:
        if len(inv.args) != 1:
            raise CommandError("usage: ptt press|release TALKGROUP", 2)
        return inv.args[0]

    async def press(inv: Invocation) -> str:
        tg = one_talkgroup(inv)
        remote = await _relayed(relay, inv, "POST", f"/api/v1/radio/talkgroups/{_tg(tg)}/ptt")
        if remote is not None:
            return floor_lines(remote["events"])
        try:
            events = radio.request_ptt(tg, inv.principal.name, ROLE_PRIORITY[inv.principal.role])
        except RadioServiceError as exc:
            raise CommandError(str(exc)) from None
        return floor_lines(events)

    async def release(inv: Invocation) -> str:
        tg = one_talkgroup(inv)
        remote = await _relayed(relay, inv, "DELETE",
                                f"/api/v1/radio/talkgroups/{_tg(tg)}/ptt")
        if remote is not None:
            return floor_lines(remote["events"]) or "nothing to release"
        try:
            events = radio.release_ptt(tg, inv.principal.name)
        except RadioServiceError as exc:
            raise CommandError(str(exc)) from None
        return floor_lines(events) or "nothing to release"

    async def sds(inv: Invocation) -> str:
        if len(inv.args) < 2:
            raise CommandError("usage: sds send TALKGROUP|ISSI TEXT", 2)
        target, text = inv.args[0], " ".join(inv.args[1:])
        issi = target if target.isascii() and target.isdigit() else None
        remote = await _relayed(relay, inv, "POST", "/api/v1/radio/sds", {
            "text": text, "talkgroup": None if issi else target, "issi": issi})
        if remote is not None:
            return f"SDS sent to {target} (reference {remote['reference']})"
        try:
            ref = await radio.send_sds(text, inv.principal.name,
                                       talkgroup=None if issi else target, issi=issi)
        except (RadioServiceError, SdsError, RadioError, AtError, TimeoutError) as exc:
            raise CommandError(f"SDS not sent: {exc}") from None
        return f"SDS sent to {target} (reference {ref})"

    for command in (
        Command(("show", "talkgroups"), Permission.RADIO_READ,
                "talkgroups: floor, talker, queue, who is on air", talkgroups),
        Command(("show", "radios"), Permission.RADIO_READ, "radio and satphone gateways", radios),
        Command(("ptt", "press"), Permission.RADIO_PTT, "key a talkgroup (your role's priority)",
                press, "TALKGROUP"),
        Command(("ptt", "release"), Permission.RADIO_PTT, "let go of a talkgroup", release,
                "TALKGROUP"),
        Command(("key",), Permission.RADIO_PTT, "key a talkgroup (same as ptt press)",
                press, "TALKGROUP"),
        Command(("unkey",), Permission.RADIO_PTT, "unkey a talkgroup (same as ptt release)",
                release, "TALKGROUP"),
        Command(("show", "gateways"), Permission.RADIO_READ,
                "radio and satphone gateways (same as show radios)", radios),
        Command(("sds", "send"), Permission.RADIO_SEND, "send an SDS text", sds,
                "TALKGROUP|ISSI TEXT"),
    ):
        table.add(command)
