"""Glue between the radio service and dispatch: positions in, assignments out.

* Location reports from handsets (LIP over TETRA SDS) move the unit whose
  ``radio_id`` sent them (:meth:`UnitService.update_position`).
* A unit sent to an incident is told over radio SDS first when it has a radio
  id and a gateway is up; otherwise (or if the SDS cannot be sent) the
  notification service texts its phone.
* A RoIP device configured by ``account`` is called at the contact it
  registered with our registrar (:func:`registrar_resolver`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from dispatch.radio_service import RadioService
from dispatch.units import UnitContact, UnitNotifier, UnitService

log = logging.getLogger(__name__)


class RadioFirstNotifier:
    """A :class:`UnitNotifier`: radio SDS to the unit's ISSI, else the fallback (SMS)."""

    def __init__(self, radio: RadioService, fallback: UnitNotifier) -> None:
        self.radio, self.fallback = radio, fallback

    async def notify_unit(self, unit: UnitContact, incident_id: str, text: str) -> str:
        """Send ``text`` by SDS if the unit has a radio; returns ``sds:<ref>`` or the fallback's."""
        if unit.radio_id:
            try:
                ref = await self.radio.send_sds(text[:400], "dispatch", issi=unit.radio_id)
            except Exception as exc:  # no gateway, link down, refused: fall back
                log.warning("SDS to a unit failed; trying its phone",
                            extra={"unit": unit.unit_id, "error": str(exc)})
            else:
                return f"sds:{unit.radio_id}:{ref}"
        return await self.fallback.notify_unit(unit, incident_id, text)


class PositionFeed:
    """Feeds radio location reports to the unit service (the radio hook is synchronous)."""

    def __init__(self, units: UnitService) -> None:
        self.units = units
        self._tasks: set[asyncio.Task[Any]] = set()

    def __call__(self, radio_id: str, lat: float, lon: float, at: dt.datetime) -> None:
        """The radio service's position hook: record it without holding up the radio."""
        task = asyncio.get_running_loop().create_task(self._record(radio_id, lat, lon, at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, radio_id: str, lat: float, lon: float, at: dt.datetime) -> None:
        try:
            await self.units.update_position(radio_id=radio_id, lat=lat, lon=lon,
                                             source="radio", at=at)
        except Exception:  # a database outage: the next report will do
            log.exception("recording a radio position failed", extra={"radio_id": radio_id})


def registrar_resolver(registrar: Any, wall: Callable[[], float]
                       ) -> Callable[[str], Awaitable[tuple[str, str, int] | None]]:
    """A RoIP gateway's resolver: its account's freshest binding (URI, source host, port).

    The device is called where its REGISTER came from (it may sit behind NAT), with its
    Contact as the Request-URI; a binding over TCP/TLS is not usable by the UDP link.
    """
    async def resolve(account: str) -> tuple[str, str, int] | None:
        bindings = [b for b in await registrar.lookup(registrar.aor_for(account), wall())
                    if b.source_transport.upper() == "UDP"]
        if not bindings:
            return None
        best = max(bindings, key=lambda b: (b.q or 0.0, b.registered_at))
        return best.contact, best.source_host, best.source_port

    return resolve
