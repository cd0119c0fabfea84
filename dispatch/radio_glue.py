"""Glue between the radio service and dispatch: positions in, assignments out.

* Location reports from handsets (LIP over TETRA SDS) move the unit whose
  ``radio_id`` sent them (:meth:`UnitService.update_position`).
* A unit sent to an incident is told over radio SDS first when it has a radio
  id and a gateway is up; otherwise (or if the SDS cannot be sent) the
  notification service texts its phone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
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
