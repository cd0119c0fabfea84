"""Queue announcements for the B2BUA's waiting callers (the adapter of the planner).

The B2BUA hands every ACD action to :meth:`QueueAnnouncer.on_acd`: a caller
queued (or back in line after ringing an agent, or re-queued after a
pre-emption) is announced at once and every ``announce_every`` seconds; a
connected, finished or rung call is not.  What to say comes from the sans-I/O
:class:`~telephony.media.announce.AnnouncementPlanner`; this class owns its
timer (the loop's ``call_at`` on the B2BUA's monotonic clock) and plays each
announcement, then the music on hold, through the media engine's
``play_sequence``.  Without a media engine (pass-through anchor) it does nothing.

Language: the hotline's ``language``, else the trunk's, else the queue's (zh).
A prompt that cannot be played is logged and the caller keeps hearing whatever
they heard: an announcement never stops a call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from telephony.acd.events import CallFinished, CallQueued, Connect, RingAgent
from telephony.b2bua.legs import Call
from telephony.media.announce import Announcement, AnnouncementPlanner

if TYPE_CHECKING:
    from telephony.b2bua.core import B2bua

__all__ = ["QueueAnnouncer", "SequencePlayback"]

log = logging.getLogger(__name__)


@runtime_checkable
class SequencePlayback(Protocol):
    """An anchor that can play prompts back to back, then loop one (the media engine)."""

    def play_sequence(self, leg_id: str, prompts: Sequence[str], then: str | None) -> None:
        """Play ``prompts`` to one leg, then loop ``then``."""
        ...


class QueueAnnouncer:
    """Announces position and expected wait to the B2BUA's queued callers."""

    def __init__(self, b2bua: B2bua, planner: AnnouncementPlanner | None = None) -> None:
        """Serve ``b2bua``'s calls; ``planner`` is replaceable for tests."""
        self.b2bua = b2bua
        self.planner = planner or AnnouncementPlanner()
        self._timer: asyncio.TimerHandle | None = None
        self._preempted: set[str] = set()
        self.played = 0
        self._player_of: object = None
        self._playback: SequencePlayback | None = None

    def _player(self) -> SequencePlayback | None:
        anchor = self.b2bua.anchor
        if anchor is not self._player_of:  # a Protocol isinstance is slow: once per anchor
            self._player_of = anchor
            self._playback = anchor if isinstance(anchor, SequencePlayback) else None
        return self._playback

    def language(self, call: Call) -> str:
        """The hotline's language, else the trunk's, else the queue's."""
        hotline = self.b2bua.router.settings.hotlines
        found = next((h.language for h in hotline if h.number == call.hotline and h.language),
                     None)
        if found:
            return found
        trunk = next((t.language for t in self.b2bua.trunks
                      if t.name == call.trunk and t.language is not None), None)
        if trunk is not None:
            return trunk
        return self.b2bua.acd.queue_settings(call.queue).language.value

    def preempted(self, call_id: str) -> None:
        """The next time ``call_id`` is queued it was re-queued by a pre-emption."""
        self._preempted.add(call_id)

    def on_acd(self, action: object) -> None:
        """Follow the ACD: queued callers are announced, others are not."""
        if isinstance(action, CallQueued):
            self._queued(action)
        elif isinstance(action, Connect):
            self.planner.answered(action.call_id, action.queue, action.wait)
            self._preempted.discard(action.call_id)
        elif isinstance(action, CallFinished):
            self.planner.leave(action.record.call_id)
            self._preempted.discard(action.record.call_id)
        elif isinstance(action, RingAgent):
            return  # the timer skips calls that are not in line (see position)
        else:
            return
        self._arm()

    def _queued(self, action: CallQueued) -> None:
        call = self.b2bua.calls.get(action.call_id)
        if call is None or self._player() is None:
            return
        settings = self.b2bua.acd.queue_settings(action.queue)
        if not settings.announce:
            self.planner.leave(action.call_id)
            return
        now = self.b2bua.mono()
        preempted = action.call_id in self._preempted
        self._preempted.discard(action.call_id)
        if self.planner.queue_of(action.call_id) == action.queue and not preempted:
            self.planner.requeued(action.call_id, now)  # back from ringing: keep the rhythm
            return
        call.queue = action.queue
        try:
            self.planner.enter(action.call_id, action.queue, self.language(call),
                               settings.announce_every, action.position, now,
                               preempted=preempted)
        except ValueError as exc:
            log.error("call %s: no announcements: %s", action.call_id, exc)

    def position(self, call_id: str) -> int | None:
        """Where ``call_id`` waits in its queue (1 = next), None if it is not waiting."""
        call = self.b2bua.calls.get(call_id)
        if call is None:
            return None
        waiting = self.b2bua.acd.waiting_calls(call.queue)
        return waiting.index(call_id) + 1 if call_id in waiting else None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.planner.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._due)

    def _due(self) -> None:
        self._timer = None
        for item in self.planner.handle_timer(self.b2bua.mono(), self.position):
            self._play(item)
        self._arm()

    def _play(self, item: Announcement) -> None:
        call = self.b2bua.calls.get(item.call_id)
        player = self._player()
        if call is None or call.caller_leg is None or player is None:
            self.planner.leave(item.call_id)
            return
        try:
            player.play_sequence(call.caller_leg.leg_id, item.clips, item.hold)
            self.played += 1
        except ValueError as exc:  # PromptError, or the leg has left the engine
            log.error("call %s: announcement not played: %s", item.call_id, exc)

    def stop(self) -> None:
        """Cancel the timer (the B2BUA is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
