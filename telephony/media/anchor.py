"""The contract between the SIP B2BUA and the media engine that anchors its calls.

The B2BUA never touches RTP: it hands every leg's SDP to a :class:`MediaAnchor`
and gets SDP back, then puts legs into rooms (a two-party call is a room of
two legs).  What the engine notices on its own - a leg whose RTP stopped, a
DTMF key, a finished recording - comes back as :data:`MediaEvent` values to
the callbacks registered with ``subscribe``.

``answer`` raises ``ValueError`` (an :class:`~telephony.media.sdp.SdpError`)
when nothing in the offer is acceptable; the B2BUA answers 488.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

__all__ = [
    "DeadMedia",
    "DtmfReceived",
    "MediaAnchor",
    "MediaEvent",
    "PromptFinished",
    "RecordingFailed",
    "RecordingFinished",
]


class MediaAnchor(Protocol):
    """What the B2BUA needs of the media engine (one per node)."""

    async def answer(self, leg_id: str, remote_offer: str) -> str:
        """Our SDP answer to a leg's offer (new leg or re-INVITE); ValueError -> 488."""

    async def offer(self, leg_id: str) -> str:
        """Our SDP offer for a new outbound leg."""

    async def accept(self, leg_id: str, remote_answer: str) -> None:
        """The far end's answer to our offer; ValueError if it is unusable."""

    async def join(self, room: str, leg_id: str, mode: str = "talk") -> None:
        """Put a leg into a room (a leg not yet offered or answered is opened then):
        ``talk``, ``listen``, ``barge`` or ``whisper:<leg_id>``."""

    async def release(self, leg_id: str) -> None:
        """Stop the leg's media and free its ports (idempotent)."""


@dataclass(frozen=True, slots=True)
class DeadMedia:
    """No RTP from a leg for ``silent_s`` seconds: the B2BUA should release it."""

    topic: ClassVar[str] = "media.dead_media"

    leg_id: str
    silent_s: float


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """One key press on a leg, from RFC 4733 packets or detected in the audio."""

    topic: ClassVar[str] = "media.dtmf"

    leg_id: str
    digit: str
    source: Literal["rfc4733", "inband"]


@dataclass(frozen=True, slots=True)
class RecordingFinished:
    """A room's recording is closed; ``sha256`` is also written to ``path + '.sha256'``."""

    topic: ClassVar[str] = "media.recording_finished"

    room: str
    path: str
    sha256: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class RecordingFailed:
    """A room's recording could not be written (the call goes on): raise an alarm."""

    topic: ClassVar[str] = "media.recording_failed"

    room: str
    path: str
    error: str


@dataclass(frozen=True, slots=True)
class PromptFinished:
    """A prompt that did not loop has played to its end (or was stopped)."""

    topic: ClassVar[str] = "media.prompt_finished"

    target: str
    prompt: str
    stopped: bool


MediaEvent = DeadMedia | DtmfReceived | RecordingFinished | RecordingFailed | PromptFinished
MediaCallback = Callable[[MediaEvent], None]
