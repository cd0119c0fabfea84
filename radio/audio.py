"""The seam between radio gateways and the media engine.

A talkgroup, a satphone call or a sound-card radio joins a conference as a
leg (DESIGN.md, "Calls and media").  The media engine owns mixing, jitter
buffers and codecs; a radio gateway only moves audio frames of one fixed
format across this seam:

* **format**: 8 kHz, mono, signed 16-bit little-endian linear PCM;
* **frame**: 20 ms = 160 samples = 320 bytes (:data:`FRAME_BYTES`);
* **transmit** (dispatcher -> radio): the media engine calls
  :meth:`RadioAudioLeg.transmit` with the mix for the radio every 20 ms.  A
  gateway puts frames on air only between ``RadioKeyed`` and ``RadioUnkeyed``
  (the floor was granted to a console and the radio confirmed it); frames
  outside that window are dropped, so a stray frame never keys a radio;
* **receive** (radio -> dispatchers): the gateway calls the ``on_frame``
  callback given to :meth:`RadioAudioLeg.attach` with what the radio hears,
  while ``TalkerChanged`` names someone other than ``"self"``.

Where the audio physically is: a TETRA terminal's PEI carries no audio, so
its audio is the terminal's analogue/USB audio interface (a sound card, via
``hardware`` and pyaudio); a satphone's is its handset audio port or its
docking gateway's SIP side; DMR's is AMBE+2 inside the ``DMRD`` payload and
needs a vocoder (hardware dongle or a licensed codec) before it is PCM.

Built so far: :class:`radio.soundcard.SoundcardGateway` implements this seam
for a radio on a sound card and :class:`radio.roip.RoipGateway` for a RoIP box
on a SIP call (both on :class:`radio.audio_gateway.AudioGateway`); the media
engine mixes such an object as a *local leg* (:mod:`telephony.media.local`,
duck-typed: ``telephony`` does not import ``radio``); :mod:`dispatch.radio_patch`
joins talkgroups to calls, conferences and each other.  TETRA terminals and
satphones with a sound card (:mod:`radio.terminal_audio`) offer the same seam,
gated by their PEI / AT reports; a satphone dock with a SIP side is an ordinary
SIP leg (:mod:`dispatch.satphone_legs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2


class RadioAudioLeg(Protocol):
    """What a radio gateway offers the media engine for one talkgroup or call."""

    def attach(self, on_frame: Callable[[bytes], None]) -> None:
        """Start delivering received 20 ms frames to ``on_frame``."""

    def detach(self) -> None:
        """Stop delivering received frames."""

    def transmit(self, frame: bytes) -> None:
        """One 20 ms frame to send on air (dropped unless the radio is keyed for a console)."""
