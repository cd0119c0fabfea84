"""Where a call's media is anchored: the :class:`MediaAnchor` Protocol and a pass-through.

The B2BUA never touches SDP itself; it asks the anchor, leg by leg, in a fixed
order (see :mod:`telephony.b2bua.core`):

1. a leg that brought an offer (the caller's INVITE) is ``join``-ed to the
   call's room and ``answer`` is started at once; the B2BUA awaits that
   answer only when it must send its 200 (a real anchor answers at once and
   a ``ValueError`` becomes 488 straight away);
2. a leg we call (an agent's softphone, a number through a trunk) is
   ``join``-ed and gets ``offer``; the far end's answer goes to ``accept``;
3. every leg is ``release``-d when it ends.

The media engine (:class:`telephony.media.engine.MediaEngine`, implementing
:class:`telephony.media.anchor.MediaAnchor`) terminates RTP
on our own ports and mixes the room.  Until it is injected,
:class:`PassThroughAnchor` lets calls work end to end by handing each side
the other's SDP unchanged: the offer of the leg that offered becomes the
offer sent to the leg we call, and that leg's answer becomes our answer to
the offerer.  Swapping anchors only changes which object the daemon injects.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# The one definition lives with the media engine that implements it.
from telephony.media.anchor import MediaAnchor

__all__ = ["MAX_SDP", "MediaAnchor", "MediaControl", "PassThroughAnchor", "check_sdp"]

MAX_SDP = 16384
"""Octets of SDP accepted from a peer."""


@runtime_checkable
class MediaControl(Protocol):
    """What an anchor that terminates media itself also offers (the media engine).

    With such an anchor the B2BUA answers the caller at once with early media
    (183 with our SDP) and plays the hold prompt until a call taker answers,
    answers re-INVITEs itself instead of relaying SDP, releases calls whose
    media died and lets supervisors force in (listen / whisper / barge).
    """

    def play_to_leg(self, leg_id: str, prompt: str, loop: bool = False) -> None:
        """Play a prompt to one leg (ValueError if the prompt cannot be played)."""
        ...

    def stop_prompt(self, target: str) -> None:
        """Stop the prompt a leg hears."""
        ...

    def set_mode(self, leg_id: str, mode: str) -> None:
        """Switch a joined leg's mode (ValueError if the leg or whisper target is gone)."""
        ...

    def expect_media(self, leg_id: str) -> None:
        """Restart the leg's dead-media timer (the call was just connected)."""
        ...

    def record(self, room: str) -> None:
        """Start recording the room (the call was answered; ValueError if no such room)."""
        ...

    async def drain(self) -> None:
        """Wait until recordings being sealed have published their events."""
        ...


def check_sdp(text: str) -> str:
    """A minimal sanity check of a peer's SDP; raises ValueError (answered 488)."""
    if len(text) > MAX_SDP:
        raise ValueError("SDP too large")
    if not text.lstrip().startswith("v=0") or "\nm=" not in text.replace("\r", ""):
        raise ValueError("not an SDP session description with a media line")
    return text


@dataclass
class _Room:
    offer: str | None = None
    offered: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Future[str] | None = None
    legs: set[str] = field(default_factory=set)


class PassThroughAnchor:
    """Relays SDP between the two sides of a room unchanged (no media of our own).

    ``answer`` stores the offerer's SDP and waits until another leg of the room
    ``accept``-s an answer, which it returns; ``offer`` returns the stored offer.
    """

    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}
        self._room_of: dict[str, str] = {}
        self.modes: dict[str, str] = {}

    def _room(self, leg_id: str) -> _Room:
        name = self._room_of.get(leg_id)
        if name is None:
            raise ValueError(f"leg {leg_id} is in no room")
        return self._rooms[name]

    async def join(self, room: str, leg_id: str, mode: str = "talk") -> None:
        """Remember which room the leg belongs to."""
        self._rooms.setdefault(room, _Room()).legs.add(leg_id)
        self._room_of[leg_id] = room
        self.modes[leg_id] = mode

    async def answer(self, leg_id: str, remote_offer: str) -> str:
        """Wait for the room's other side to answer, and return that answer."""
        room = self._room(leg_id)
        room.offer = check_sdp(remote_offer)
        room.answered = asyncio.get_running_loop().create_future()
        room.offered.set()
        return await room.answered

    async def offer(self, leg_id: str) -> str:
        """The offerer's SDP, unchanged."""
        room = self._room(leg_id)
        await room.offered.wait()
        assert room.offer is not None
        return room.offer

    async def accept(self, leg_id: str, remote_answer: str) -> None:
        """Hand the answer to the offerer's pending :meth:`answer`."""
        room = self._room(leg_id)
        check_sdp(remote_answer)
        if room.answered is not None and not room.answered.done():
            room.answered.set_result(remote_answer)

    async def release(self, leg_id: str) -> None:
        """Forget the leg; an empty room is dropped (and a pending answer cancelled)."""
        name = self._room_of.pop(leg_id, None)
        self.modes.pop(leg_id, None)
        if name is None:
            return
        room = self._rooms[name]
        room.legs.discard(leg_id)
        if not room.legs:
            if room.answered is not None and not room.answered.done():
                room.answered.cancel()
            del self._rooms[name]

    def __len__(self) -> int:
        return len(self._room_of)
