"""Sound cards of TETRA terminals and satphones, for the radio service.

A ``tetra`` or ``satphone`` gateway with an ``[radio.gateways.audio]`` table
gets a :class:`radio.terminal_audio.TetraAudio` or
:class:`radio.terminal_audio.SatphoneAudio` over its sound card (pyaudio, or
whatever :data:`AUDIO_CARDS` holds: the tests put a frame-fed card there).
:class:`TerminalAudio` owns them for :class:`~dispatch.radio_service.RadioService`:
it feeds them the gateways' reports, opens and closes the cards with the
service, and answers which audio leg a talkgroup or a satphone has.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from dispatch.config import RadioGatewaySettings, RadioSettings
from hardware.soundcard import AudioDevice, PyAudioDevice
from radio.satphone import SatphoneGateway
from radio.terminal_audio import SatphoneAudio, TetraAudio, TetraGroupLeg
from radio.tetra import GatewayFault, TetraGateway

__all__ = ["AUDIO_CARDS", "TerminalAudio", "terminal_sound_card"]

log = logging.getLogger(__name__)


def terminal_sound_card(gw: RadioGatewaySettings) -> AudioDevice:
    """The real sound card of a terminal's ``audio`` table (pyaudio, opened at start)."""
    assert gw.audio is not None
    return PyAudioDevice(rate=gw.audio.audio_rate, input_device=gw.audio.audio_input,
                         output_device=gw.audio.audio_output)


#: The terminal sound-card factory used (tests put a frame-fed card here).
AUDIO_CARDS: list[Any] = [terminal_sound_card]


class TerminalAudio:
    """Every TETRA terminal's and satphone's sound card (see the module docstring)."""

    def __init__(self, settings: RadioSettings, tetra: dict[str, TetraGateway],
                 satphones: dict[str, SatphoneGateway],
                 report: Callable[[str, object], None]) -> None:
        """Build a gated card for every gateway with ``audio``; ``report(gateway, event)``
        carries a card's fault to the radio service as a :class:`GatewayFault` alarm."""
        self.tetra: dict[str, TetraAudio] = {}
        self.satphones: dict[str, SatphoneAudio] = {}
        for gw in settings.gateways:
            if gw.audio is None:
                continue

            def fault(why: str, name: str = gw.name) -> None:
                report(name, GatewayFault(name, why))

            card = AUDIO_CARDS[0](gw)
            if gw.kind == "tetra":
                radio = tetra[gw.name]
                self.tetra[gw.name] = TetraAudio(gw.name, card, _granted(radio),
                                                 on_fault=fault, retry_s=gw.retry_s)
            elif gw.kind == "satphone":
                self.satphones[gw.name] = SatphoneAudio(gw.name, card,
                                                        _active(satphones[gw.name]),
                                                        on_fault=fault, retry_s=gw.retry_s)

    def on_event(self, gateway: str, event: object) -> None:
        """A gateway's report: moves its terminal's gates (before anyone else sees it)."""
        terminal = self.tetra.get(gateway)
        if terminal is not None:
            terminal.on_event(event)

    async def start(self) -> None:
        """Open every card (a failure is an alarm and retried, never fatal)."""
        for card in (*self.tetra.values(), *self.satphones.values()):
            await card.start()

    async def stop(self) -> None:
        """Close every card."""
        for card in (*self.tetra.values(), *self.satphones.values()):
            with contextlib.suppress(Exception):
                await card.stop()

    def group_leg(self, gateway: str, gssi: str) -> TetraGroupLeg | None:
        """The audio leg of ``gssi`` on a TETRA gateway with a sound card, else None."""
        terminal = self.tetra.get(gateway)
        return None if terminal is None else terminal.leg(gssi)

    def health(self, gateway: str) -> dict[str, Any]:
        """The card's part of a gateway's health (empty when it has none)."""
        card = self.tetra.get(gateway) or self.satphones.get(gateway)
        return {} if card is None else card.health()


def _granted(radio: TetraGateway) -> Callable[[str], bool]:
    """Does the terminal's floor core still grant the group (checked at every frame)?"""
    return lambda gssi: gssi in radio.floor.keyed()


def _active(phone: SatphoneGateway) -> Callable[[], bool]:
    """Does the phone report an active call on a live link (checked at every frame)?"""
    return lambda: phone.up and phone.call is not None and phone.call.state == "active"
