"""``dispatchd run --simulate``: emulated radios on 127.0.0.1 so a newcomer can try dispatchd.

:func:`start_simulation` starts the emulators on the daemon's loop and returns the settings
with their gateways and talkgroups added to whatever the configuration already has.  Today it
adds one RoIP box (:mod:`hardware.emulators.roip`, a real SIP/RTP endpoint) carrying
talkgroup ``sim-roip``: dispatchd calls it like a real box, keys it by DTMF, and hears a field
talker (a 700 Hz tone, COS by DTMF) every ``over_every_s`` seconds.  Patch it into a call or a
conference, or key it from the console, and watch ``radio.*`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from dispatch.config import (
    RadioGatewaySettings,
    RadioSettings,
    RoipRadioSettings,
    Settings,
    TalkgroupSettings,
)
from hardware.emulators.roip import RoipDevice

__all__ = ["Simulation", "start_simulation"]

log = logging.getLogger(__name__)

SIM_GATEWAY = "sim-roip"


@dataclass
class Simulation:
    """The running emulators; :meth:`close` stops them."""

    devices: list[RoipDevice] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def close(self) -> None:
        """Stop the field talkers and close the emulators' sockets."""
        for task in self.tasks:
            task.cancel()
        for device in self.devices:
            device.close()


async def _field_talker(device: RoipDevice, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        if device.in_call and not device.keyed:
            with contextlib.suppress(OSError):
                await device.receive_over(700.0, 100)


async def start_simulation(settings: Settings, over_every_s: float = 30.0
                           ) -> tuple[Settings, Simulation]:
    """Start the emulators; the settings with their gateways and talkgroups added."""
    if any(gw.name == SIM_GATEWAY for gw in settings.radio.gateways) or any(
            tg.name == SIM_GATEWAY for tg in settings.radio.talkgroups):
        raise ValueError(f"--simulate adds gateway and talkgroup {SIM_GATEWAY!r}: "
                         "the configuration already uses that name")
    device = RoipDevice(ptt="dtmf", cos="dtmf")
    await device.start()
    sim = Simulation([device], [asyncio.get_running_loop().create_task(
        _field_talker(device, over_every_s))])
    gateway = RadioGatewaySettings(name=SIM_GATEWAY, kind="roip", hang_time_s=1.0,
                                   retry_s=1.0, roip=RoipRadioSettings(
                                       uri=device.uri, ptt="dtmf", cos="dtmf",
                                       keepalive_s=5.0, retry_max_s=10.0))
    talkgroup = TalkgroupSettings(name=SIM_GATEWAY, gssi="1", gateway=SIM_GATEWAY,
                                  agency="sim")
    radio = settings.radio
    simulated = RadioSettings(gateways=(*radio.gateways, gateway),
                              talkgroups=(*radio.talkgroups, talkgroup),
                              dmr_bridges=radio.dmr_bridges,
                              position_max_age_s=radio.position_max_age_s)
    log.info("simulating a RoIP radio", extra={"device": device.uri, "talkgroup": SIM_GATEWAY})
    return settings.model_copy(update={"radio": simulated}), sim
