"""``dispatchd run --simulate``: emulated radios on 127.0.0.1 so a newcomer can try dispatchd.

:func:`start_simulation` starts the emulators on the daemon's loop and returns the settings
with their gateways and talkgroups added to whatever the configuration already has:

* ``sim-roip``: a RoIP box (:mod:`hardware.emulators.roip`, a real SIP/RTP endpoint) carrying
  talkgroup ``sim-roip``: dispatchd calls it like a real box, keys it by DTMF, and hears a field
  talker (a 700 Hz tone, COS by DTMF) every ``over_every_s`` seconds.  Patch it into a call or
  a conference, or key it from the console, and watch ``radio.*`` events;
* ``sim-tetra``: a TETRA terminal speaking PEI on a pty (:mod:`hardware.emulators.tetra`),
  carrying talkgroup ``sim-tetra`` (GSSI 9001): key it, send it SDS;
* ``sim-sat``: a satellite phone on a pty (:mod:`hardware.emulators.satphone`): dial it,
  text it (Chinese in UCS2), watch its signal and registration on the satphone panel.
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
from hardware.emulators.base import AtEmulator
from hardware.emulators.roip import RoipDevice
from hardware.emulators.satphone import SatellitePhoneEmulator
from hardware.emulators.tetra import TetraRadioEmulator

__all__ = ["Simulation", "start_simulation"]

log = logging.getLogger(__name__)

SIM_GATEWAY = "sim-roip"
SIM_TETRA = "sim-tetra"
SIM_SAT = "sim-sat"
SIM_NAMES = (SIM_GATEWAY, SIM_TETRA, SIM_SAT)


@dataclass
class Simulation:
    """The running emulators; :meth:`close` stops them."""

    devices: list[RoipDevice] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    terminals: list[AtEmulator] = field(default_factory=list)

    def close(self) -> None:
        """Stop the field talkers and close the emulators' sockets."""
        for task in self.tasks:
            task.cancel()
        for device in self.devices:
            device.close()
        for terminal in self.terminals:
            terminal.close()


async def _field_talker(device: RoipDevice, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        if device.in_call and not device.keyed:
            with contextlib.suppress(OSError):
                await device.receive_over(700.0, 100)


async def start_simulation(settings: Settings, over_every_s: float = 30.0
                           ) -> tuple[Settings, Simulation]:
    """Start the emulators; the settings with their gateways and talkgroups added."""
    names = {gw.name for gw in settings.radio.gateways} | {
        tg.name for tg in settings.radio.talkgroups}
    taken = sorted(name for name in names if name in SIM_NAMES)
    if taken:
        raise ValueError(f"--simulate adds gateways and talkgroups {', '.join(SIM_NAMES)}: "
                         f"the configuration already uses {', '.join(map(repr, taken))}")
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
    tetra, sat = TetraRadioEmulator(), SatellitePhoneEmulator()
    sim.terminals += [tetra, sat]
    tetra_gw = RadioGatewaySettings(name=SIM_TETRA, kind="tetra", device=tetra.open(),
                                    retry_s=1.0, hang_time_s=1.0)
    sat_gw = RadioGatewaySettings(name=SIM_SAT, kind="satphone", device=sat.open(),
                                  retry_s=1.0, poll_s=10.0, number="+8617400000001")
    tetra_tg = TalkgroupSettings(name=SIM_TETRA, gssi="9001", gateway=SIM_TETRA, agency="sim")
    radio = settings.radio
    simulated = RadioSettings(gateways=(*radio.gateways, gateway, tetra_gw, sat_gw),
                              talkgroups=(*radio.talkgroups, talkgroup, tetra_tg),
                              dmr_bridges=radio.dmr_bridges,
                              position_max_age_s=radio.position_max_age_s)
    log.info("simulating radios", extra={"roip": device.uri, "tetra": tetra_gw.device,
                                         "satphone": sat_gw.device,
                                         "talkgroups": [SIM_GATEWAY, SIM_TETRA]})
    return settings.model_copy(update={"radio": simulated}), sim
