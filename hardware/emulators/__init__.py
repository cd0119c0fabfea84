"""Emulators of the devices dispatchd talks to, speaking their real protocols over a pty.

* :class:`GsmModemEmulator` -- a GSM modem (TS 27.007 / 27.005, PDU mode).
* :class:`SatellitePhoneEmulator` -- an Iridium-like satellite phone (voice + SBD).
* :class:`TetraRadioEmulator` -- a TETRA terminal's PEI (EN 300 392-5).

``python -m hardware.emulators NAME --link PATH`` serves one until killed.

Over UDP rather than a pty: :class:`hardware.emulators.roip.RoipDevice`, a RoIP
box answering SIP calls (``python -m hardware.emulators.roip``), and the DMR
master in :mod:`hardware.emulators.dmr`.
"""

from hardware.emulators.base import AtEmulator, Faults, Reply
from hardware.emulators.gsm import GsmModemEmulator, SentSms
from hardware.emulators.satphone import SatellitePhoneEmulator
from hardware.emulators.tetra import (
    SentSds,
    TetraRadioEmulator,
    decode_simple_text_sds,
    simple_text_sds,
)

EMULATORS: dict[str, type[AtEmulator]] = {
    "gsm": GsmModemEmulator,
    "satphone": SatellitePhoneEmulator,
    "tetra": TetraRadioEmulator,
}

__all__ = [
    "EMULATORS", "AtEmulator", "Faults", "GsmModemEmulator", "Reply", "SatellitePhoneEmulator",
    "SentSds", "SentSms", "TetraRadioEmulator", "decode_simple_text_sds", "simple_text_sds",
]
